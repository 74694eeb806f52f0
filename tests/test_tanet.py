"""TANet (fsr_arch/tanet_arch.py): shapes, gradients, SDPA vs explicit attention, option files, a tiny CPU training."""
import glob
import math
import os
import pytest
import torch
import yaml
from helpers import loss_fell, make_face_dataset, read_losses, run_fsr_train, tiny_train_opt

from fsr_arch.tanet_arch import PAPER_CONFIGS, TINY_CONFIG, TANet

OPTIONS = sorted(
    glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'options', '*tanet*.yml')))


def tiny(upscale, **kwargs):
    torch.manual_seed(0)
    return TANet(upscale=upscale, **{**TINY_CONFIG, **kwargs})


@pytest.mark.parametrize('upscale', [4, 8])
@pytest.mark.parametrize('hr,token_mode', [((128, 128), 'global'), ((216, 176), 'global'), ((256, 256), 'global'),
                                           ((216, 176), 'window'), ((128, 128), 'window')])
def test_shapes(upscale, hr, token_mode):
    net = tiny(upscale, token_mode=token_mode)
    x = torch.rand(2, 3, hr[0] // upscale, hr[1] // upscale)  # 216x176 at x8: LR 27x22, not a multiple of the 4x4 patch
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *hr)
    assert torch.isfinite(y).all()


def test_paper_config_sizes_and_forward():
    with torch.device('meta'):  # structure and shapes without the cost of initialising 8M weights
        net = TANet(**PAPER_CONFIGS['x8']).eval()
        assert net(torch.rand(1, 3, 27, 22)).shape == (1, 3, 216, 176)  # CelebA 216x176 at x8
    n_params = sum(p.numel() for p in net.parameters())
    assert 8.0e6 < n_params < 8.6e6, n_params  # 100 RBs of 2 x 37k weights dominate; the global path is ~0.35M
    assert 3.0e5 < sum(p.numel() for p in net.global_path.parameters()) < 4.0e5
    assert len(net.local_path.body) == 10 and all(len(m.body) == 10 for m in net.local_path.body)  # G = I = 10
    net = TANet(**PAPER_CONFIGS['x4']).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, 7, 6))  # real weights, a small input that needs padding
    assert y.shape == (1, 3, 28, 24) and torch.isfinite(y).all()


def test_padding_does_not_leak_between_images():
    """Batch items are independent and padding/cropping keeps the map aligned (an exact-size crop of a padded input)."""
    net = tiny(8).eval()
    x = torch.rand(2, 3, 27, 22)
    with torch.no_grad():
        both = net(x)
        one = net(x[1:])
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('token_mode', ['global', 'window'])
def test_gradients_reach_every_parameter(token_mode):
    net = tiny(4, token_mode=token_mode)
    x = torch.rand(2, 3, 10, 9)  # not a multiple of 4 and a grid other than pos_grid: pad + interpolated encoding
    net(x).abs().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize('token_mode', ['global', 'window'])
def test_sdpa_equals_explicit_attention(token_mode):
    net = tiny(8, token_mode=token_mode, num_heads=4).eval()
    x = torch.rand(2, 3, 27, 22)
    with torch.no_grad():
        net.set_use_sdpa(True)
        fused = net(x)
        net.set_use_sdpa(False)
        explicit = net(x)
    assert all(not m.use_sdpa for m in net.modules() if hasattr(m, 'use_sdpa'))
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)


def test_channels_last_and_bf16_autocast_on_cpu():
    net = tiny(8).eval()
    x = torch.rand(1, 3, 27, 22)
    with torch.no_grad():
        ref = net(x)
        cl = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf = net(x)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)
    assert bf.shape == ref.shape
    # bf16 keeps ~3 significant digits; through ~30 layers of a random-init net the relative L2 error is ~0.08 (a wrong
    # path, e.g. a dtype mix-up in the attention, gives ~1)
    assert bf.dtype == torch.bfloat16 and torch.isfinite(bf).all()
    assert (bf.float() - ref).norm() < 0.2 * ref.norm()


def test_position_encoding_is_interpolated_only_off_grid():
    net = tiny(4)
    gp = net.global_path
    assert gp._pos(*gp.pos_embed.shape[-2:]) is gp.pos_embed
    assert gp._pos(7, 6).shape == (1, gp.pos_embed.shape[1], 7, 6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='token_mode'):
        TANet(upscale=4, **{**TINY_CONFIG, 'token_mode': 'tokens'})
    with pytest.raises(ValueError, match='num_heads'):
        TANet(upscale=4, **{**TINY_CONFIG, 'num_heads': 3})
    with pytest.raises(ValueError, match='power of 2'):
        TANet(upscale=3, **TINY_CONFIG)


@pytest.mark.parametrize('path', OPTIONS, ids=os.path.basename)
def test_option_files_build_network(path):
    from basicsr.archs import build_network

    from fsr_utils import plugin
    plugin.load()
    with open(path) as f:
        opt = yaml.safe_load(f)
    assert opt['model_type'] == 'FSRModel'
    assert opt['network_g']['upscale'] == opt['scale']
    for ds in opt['datasets'].values():
        assert ds['type'] == 'FSRFaceDataset' and ds['io_backend']['type'] == 'lmdb'
        assert ds['dataroot_lq'].endswith(f'lr_x{opt["scale"]}.lmdb')
    with torch.device('meta'):  # structure and shapes at the data's size, without initialising 8M weights
        net = build_network(dict(opt['network_g'])).eval()
        assert isinstance(net, TANet)
        s = opt['scale']
        assert net(torch.rand(1, 3, 216 // s, 176 // s)).shape == (1, 3, 216, 176)
    if 'train' in opt:
        optim, sched, ds = opt['train']['optim_g'], opt['train']['scheduler'], opt['datasets']['train']
        assert optim['type'] == 'Adam' and optim['lr'] == 2e-4 and optim['betas'] == [0.9, 0.999
                                                                                      ] and optim['eps'] == 1e-8
        assert opt['train']['pixel_opt']['type'] == 'L1Loss'
        assert ds['use_rot'] and ds['use_hflip'] and ds['rot_mode'] == 'rot90'
        # halved every 60 epochs of the 3800 training faces
        epoch = math.ceil(3800 / ds['batch_size_per_gpu'])
        assert sched['gamma'] == 0.5 and sched['milestones'] == [60 * epoch * k for k in range(1, 5)]
        # the position encoding is stored at the training crop's token grid
        lq = ds['gt_size'] // opt['scale']
        assert opt['network_g']['pos_grid'] == [math.ceil(lq / 4)] * 2
    else:
        assert opt['val']['suffix'] is None


@pytest.mark.slow
def test_tiny_training_loss_falls(tmp_path):
    data = make_face_dataset(tmp_path / 'data', num=8, hr_size=(32, 32), scales=(4, ))
    net = {'type': 'TANet', 'upscale': 4, **TINY_CONFIG}
    net['pos_grid'] = list(net['pos_grid'])
    extra = {'gt_size': 32, 'use_rot': True, 'rot_mode': 'rot90'}  # whole faces, the paper's rotations + flips
    opt = tiny_train_opt(
        'tiny_tanet', net, data, 4, total_iter=20, lr=2e-3, dataset_type='FSRFaceDataset', dataset_extra=extra)
    run_fsr_train(opt, tmp_path)
    losses = read_losses(tmp_path, 'tiny_tanet')['l_pix']
    assert loss_fell(losses), losses
    assert os.path.isfile(tmp_path / 'experiments' / 'tiny_tanet' / 'models' / 'net_g_20.pth')


def test_img_residual_option_starts_from_bicubic():
    from fsr_arch.common import upsample_to
    net = TANet(upscale=4, img_residual=True, **{k: v for k, v in TINY_CONFIG.items()})
    torch.nn.init.zeros_(net.conv_recon.weight)
    torch.nn.init.zeros_(net.conv_recon.bias)
    x = torch.rand(1, 3, 8, 12)
    assert torch.allclose(net(x), upsample_to(x, scale=4), atol=1e-6)
    net.img_residual = False
    assert net(x).abs().max() == 0
