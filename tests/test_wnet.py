"""W-Net: network outputs and gradients, the key-region loss, option files and a tiny fsr-train run."""
import glob
import os
import pytest
import torch
import yaml
from helpers import (REPO_ROOT, console_script, loss_fell, make_face_dataset, read_losses, run_command,
                     save_small_vgg19, subprocess_env, tiny_train_opt, write_opt)
from torch.nn import functional as F

from fsr_arch.wnet_arch import PAPER_CONFIGS, TINY_CONFIG, WNet
from fsr_losses.wnet_loss import WNetKeyRegionLoss

pytestmark = pytest.mark.usefixtures('one_thread_module')  # tiny networks: see helpers.torch_threads


@pytest.fixture(scope='module')
def vgg_file(tmp_path_factory):
    return save_small_vgg19(tmp_path_factory.mktemp('vgg') / 'vgg19-dcbb9e9d.pth')


@pytest.mark.parametrize('scale', [4, 8])
def test_outputs_shapes(scale):
    torch.manual_seed(0)
    net = WNet(upscale=scale, **TINY_CONFIG)
    lq = torch.rand(2, 3, 8, 12)
    sr = net(lq)
    assert isinstance(sr, torch.Tensor) and sr.shape == (2, 3, 8 * scale, 12 * scale)
    sr2, parsing = net(lq, return_parsing=True)
    assert sr2.shape == sr.shape and parsing.shape == (2, 3, 8, 12)
    net.return_parsing = True
    assert isinstance(net(lq), tuple)
    one = WNet(upscale=scale, **{**TINY_CONFIG, 'parsing_channels': 1})
    assert one(lq, return_parsing=True)[1].shape == (2, 1, 8, 12)
    with pytest.raises(ValueError, match='multiples of 4'):
        net(torch.rand(1, 3, 6, 8))


@pytest.mark.parametrize('levels', [0, 2])
def test_up_levels_and_checkpoint_match(levels):
    """Every W depth runs; activation checkpointing gives the same outputs and gradients."""
    torch.manual_seed(0)
    cfg = {**TINY_CONFIG, 'num_up_levels': levels}
    net = WNet(upscale=4, **cfg)
    ckpt = WNet(upscale=4, **cfg, use_checkpoint=True)
    ckpt.load_state_dict(net.state_dict())
    lq = torch.rand(2, 3, 8, 8)
    outs, grads = [], []
    for model in (net, ckpt):
        sr, par = model(lq, return_parsing=True)
        (sr.square().mean() + par.square().mean()).backward()
        outs.append(sr.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert outs[0].shape == (2, 3, 32, 32)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = WNet(upscale=8, **{**TINY_CONFIG, 'num_feat': 16})
    sr, parsing = net(torch.rand(2, 3, 4, 4), return_parsing=True)
    (F.mse_loss(sr, torch.rand_like(sr)) + F.mse_loss(parsing, torch.rand_like(parsing))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # an SR-only loss reaches the Parsing Block through the W path as well
    net.zero_grad(set_to_none=True)
    net(torch.rand(2, 3, 4, 4)).mean().backward()
    assert net.parsing_block.conv_out.weight.grad.abs().sum() > 0


def _count(net):
    return sum(p.numel() for p in net.parameters())


def test_paper_configs_parameters_and_flops():
    """The paper configuration's size and cost (the figures of the module docstring), and what each option changes,
    counted by hand from the layer shapes."""
    from torch.utils.flop_counter import FlopCounterMode
    counts = {k: _count(WNet(**cfg)) for k, cfg in PAPER_CONFIGS.items()}
    assert counts['x4'] == counts['x8'] == 6_068_754  # the scale only changes the sizes, not the layers
    conv3 = lambda cin, cout: (9 * cin + 1) * cout  # noqa: E731 (3x3 conv with bias)
    # decoder: bilinear x2 + conv 64 -> 64 instead of conv 64 -> 256 + pixel shuffle, 4 scales
    shuffle = WNet(**PAPER_CONFIGS['x4'], decoder_upsample='shuffle')
    assert _count(shuffle) - counts['x4'] == 4 * (conv3(64, 256) - conv3(64, 64))
    # BatchNorm (weight and bias of 64 channels) after each of the 6 W-path and 8 encoder/decoder resamplers
    with_bn = WNet(**PAPER_CONFIGS['x4'], decoder_upsample='shuffle', resample_norm='batch')
    assert _count(with_bn) - _count(shuffle) == 14 * 2 * 64
    # W path 'conv': f3x3,64 then a 3x3 conv 64 -> 256 (up) / 256 -> 64 (down); 'paper': one f3x3 to 256 / 16
    legacy = WNet(
        **PAPER_CONFIGS['x4'],
        decoder_upsample='shuffle',
        resample_norm='batch',
        w_resample='conv',
        encoder_order='down_first')
    up_saved = [conv3(cin, 64) + conv3(64, 256) - conv3(cin, 256) for cin in (6, 64, 64)]
    down_saved = [conv3(64, 64) + conv3(256, 64) - conv3(64, 16)] * 3
    assert _count(legacy) - _count(with_bn) == sum(up_saved) + sum(down_saved) == 736_656
    assert _count(legacy) == 7_250_338  # the figure of earlier versions (docs/speed.md)
    net = WNet(**PAPER_CONFIGS['x4'])
    assert len(net.up_stages) == 3 and len(net.down_stages) == 3 and len(net.encoder) == 4
    assert net.encoder[0].scabs[0].attn.num_heads == 4
    for stage in list(net.up_stages) + list(net.down_stages):  # eq. 14-19: (un)shuffle, no conv
        assert [type(m) for m in stage.resample] in ([torch.nn.PixelShuffle], [torch.nn.PixelUnshuffle])
    flops = {}
    for label, kwargs in (('paper', {}), ('legacy', dict(w_resample='conv', encoder_order='down_first'))):
        with torch.device('meta'):  # shapes only: exact counts without the 1e12 multiply-adds
            model = WNet(**PAPER_CONFIGS['x4'], **kwargs).eval()
            x = torch.empty(1, 3, 32, 32)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
        flops[label] = counter.get_total_flops() / 1e9
    assert flops['paper'] == pytest.approx(820.67, abs=0.01)
    assert flops['legacy'] == pytest.approx(1014.42, abs=0.01)  # docs/speed.md's figure before the change


def test_key_region_loss(vgg_file, tmp_path):
    torch.manual_seed(0)
    loss = WNetKeyRegionLoss(vgg_weights_path=vgg_file, loss_weight=0.5)
    gt = torch.rand(2, 3, 32, 32)
    masks = torch.zeros(2, 4, 32, 32)
    masks[:, 0, 8:12, 6:14] = 1  # eyes
    masks[:, 3, 22:26, 10:22] = 1  # mouth
    inside = masks.amax(1, keepdim=True).expand_as(gt) > 0

    assert loss(gt.clone(), gt, masks).item() == 0
    noisy = (gt + 0.3 * torch.randn_like(gt)).clamp(0, 1)
    # empty masks: zero whatever the error
    assert loss(noisy, gt, torch.zeros_like(masks)).item() == 0
    # errors outside the masks change nothing
    outside_err = torch.where(inside, gt, noisy)
    assert loss(outside_err, gt, masks).item() == 0
    # grows with the error inside
    values = [loss(gt + a * (noisy - gt) * inside, gt, masks).item() for a in (0.25, 0.5, 1.0)]
    assert 0 < values[0] < values[1] < values[2]
    # the perceptual term contributes and gradients flow to the SR image only
    mse_only = WNetKeyRegionLoss(perceptual_weight=0, loss_weight=0.5)
    assert mse_only(noisy, gt, masks).item() < values[2]
    sr = noisy.clone().requires_grad_(True)
    loss(sr, gt, masks).backward()
    assert sr.grad[~inside].abs().max() == 0 and sr.grad[inside].abs().sum() > 0
    with pytest.raises(FileNotFoundError, match='vgg_weights_path.*vgg19-dcbb9e9d'):
        WNetKeyRegionLoss(vgg_weights_path=str(tmp_path / 'missing.pth'))


def test_option_files_build():
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
    files = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '*wnet*.yml')))
    names = {os.path.basename(f) for f in files}
    assert {
        'train_wnet_x4.yml', 'train_wnet_x8.yml', 'train_wnet_x4_mode2.yml', 'test_wnet_x4.yml', 'test_wnet_x8.yml'
    } <= names
    for path in files:
        with open(path) as f:
            opt = yaml.safe_load(f)
        assert MODEL_REGISTRY.get(opt['model_type']).__name__ == 'WNetModel'
        net_opt = dict(opt['network_g'])
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
        assert net.upscale == opt['scale']
        # SCAB attention as eq. 20-21 (depth-wise first, 1/sqrt(d)), channel maps (fsr_arch/wnet_arch.py)
        attn = net.encoder[0].scabs[0].attn
        assert (attn.order, attn.scaling, attn.mode) == ('dw_first', 'sqrt_d', 'channel')
        # eq. 14-19's conv-free resamplers, eq. 22's order, MATLAB's bicubic for I^d (fsr_arch/wnet_arch.py)
        assert (net.encoder_order, net.input_upsample) == ('eq22', 'matlab'), path
        assert all(
            type(st.resample).__name__ in ('ShuffleBN', 'UnshuffleBN')
            for st in list(net.up_stages) + list(net.down_stages)), path
        # the grid fix (fsr_arch/wnet_arch.py "Grid"): no BatchNorm in the resamplers, bilinear decoder and parsing maps
        assert not [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)], path
        assert type(net.decoder[0][0]).__name__ == 'ResizeUpBlock' and net.parsing_upsample == 'bilinear', path
        if os.path.basename(path).startswith('train'):
            train = opt['train']
            assert train['optim_g'] == {
                'type': 'Adam',
                'lr': 1e-4,
                'betas': [0.9, 0.999],
                'eps': 1e-8,
                'weight_decay': 0
            }
            ds = opt['datasets']['train']
            assert ds['total_batch_size'] == 4 and 'batch_size_per_gpu' not in ds  # the paper's batch, on any GPUs
            assert opt['datasets']['train']['return_binary_parsing'] and opt['datasets']['train'][
                'return_component_masks']
            weights = [train[k]['loss_weight'] for k in ('pixel_opt', 'parsing_opt', 'key_region_opt')]
            assert weights == [1.0, 1.0, 0.5]
            assert LOSS_REGISTRY.get(train['key_region_opt']['type']) is WNetKeyRegionLoss
            assert train['key_region_opt']['mse_normalize'] == 'region'  # per-region mean (fsr_losses/wnet_loss.py)
            assert net.use_checkpoint and net.checkpoint_tile_pixels > 0  # the memory saving (issue 16): on
        else:
            assert opt['val']['suffix'] is None


@pytest.mark.slow
def test_tiny_training(tmp_path, vgg_file):
    data = make_face_dataset(tmp_path / 'data', num=8, hr_size=(32, 32), scales=(4, ), parsing=True)
    # a separate validation set of other faces
    val_data = make_face_dataset(tmp_path / 'val', num=2, hr_size=(32, 32), scales=(4, ), parsing=True, seed=1)
    dataset_extra = {
        'dataroot_parsing': data['parsing'],
        'return_binary_parsing': True,
        'return_component_masks': True,
        'gt_size': 32,
        'scale': 4
    }
    val = {
        'name': 'tiny_val',
        'type': 'FSRFaceDataset',
        'dataroot_gt': val_data['hr'],
        'dataroot_lq': val_data['lr_x4'],
        'dataroot_parsing': val_data['parsing'],
        'return_binary_parsing': True,
        'io_backend': {
            'type': 'lmdb'
        },
        'scale': 4
    }
    train = {
        'pixel_opt': {
            'type': 'MSELoss',
            'loss_weight': 1.0
        },
        'parsing_opt': {
            'type': 'MSELoss',
            'loss_weight': 1.0
        },
        'key_region_opt': {
            'type': 'WNetKeyRegionLoss',
            'loss_weight': 0.5,
            'vgg_weights_path': vgg_file
        },
        'total_iter': 20,
    }
    val_opt = {
        'val_freq': 20,
        'save_img': False,
        'metrics': {
            'psnr': {
                'type': 'calculate_psnr',
                'crop_border': 4
            },
            'parsing_mse': {
                'type': 'parsing_mse'
            }
        }
    }
    opt = tiny_train_opt(
        'tiny_wnet', {
            'type': 'WNet',
            **TINY_CONFIG, 'upscale': 4
        },
        data,
        scale=4,
        total_iter=20,
        lr=2e-3,
        dataset_type='FSRFaceDataset',
        model_type='WNetModel',
        dataset_extra=dataset_extra,
        extra={
            'train': train,
            'val': val_opt
        })
    opt['datasets']['val'] = val
    opt['logger']['save_checkpoint_freq'] = 20
    opt_path = write_opt(opt, tmp_path / 'tiny_wnet.yml')
    run_command([console_script('fsr-train'), '-opt', opt_path], tmp_path, env=subprocess_env(OMP_NUM_THREADS='1'))
    losses = read_losses(tmp_path, 'tiny_wnet')
    assert {'l_pix', 'l_par', 'l_key', 'l_total'} <= set(losses)
    assert loss_fell(losses['l_total'], window=5) and loss_fell(losses['l_par'], window=5)
    exp = tmp_path / 'experiments' / 'tiny_wnet'
    assert (exp / 'models' / 'net_g_20.pth').is_file()
    log = open(sorted(exp.glob('train_*.log'))[-1]).read()
    assert '# parsing_mse:' in log and '# psnr:' in log
