"""AMINet / AMIGAN: shapes, gradients, paper size, option files, perceptual loss, GAN step, a tiny CPU training."""
import glob
import os
import pytest
import torch
import yaml
from helpers import (console_script, loss_fell, make_face_dataset, read_losses, run_command, save_small_vgg19,
                     subprocess_env, tiny_train_opt, write_opt)

from fsr_arch.amigan_discriminator_arch import TINY_CONFIG as D_TINY
from fsr_arch.amigan_discriminator_arch import AMIGANDiscriminator
from fsr_arch.aminet_arch import PAPER_CONFIGS, SKAF, TINY_CONFIG, AMINet
from fsr_losses.perceptual_loss import FSRPerceptualLoss, VGG19FeatureExtractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = sorted(
    glob.glob(os.path.join(REPO, 'options', '*aminet*.yml')) + glob.glob(os.path.join(REPO, 'options', '*amigan*.yml')))
PAPER_PARAMS = 12.62e6  # Table II


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread: the tiny networks run hundreds of small ops, for which a second thread brings nothing and
    thread hand-offs cost a lot on a busy 2-core machine. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(upscale, **kwargs):
    torch.manual_seed(0)
    return AMINet(upscale=upscale, **{**TINY_CONFIG, **kwargs})


@pytest.fixture(scope='module')
def vgg_file(tmp_path_factory):
    return save_small_vgg19(tmp_path_factory.mktemp('vgg') / 'vgg19-dcbb9e9d.pth')


@pytest.mark.parametrize('upscale,hr', [(4, (32, 32)), (8, (32, 32)), (4, (48, 40)), (8, (128, 128))])
def test_shapes(upscale, hr):
    net = tiny(upscale)
    x = torch.rand(2, 3, hr[0] // upscale, hr[1] // upscale)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *hr) and torch.isfinite(y).all()
    assert net.size_multiple == (2 if upscale == 4 else 1)


def test_bad_size_is_a_clear_error():
    with pytest.raises(ValueError, match='multiple of 2'):
        tiny(4)(torch.rand(1, 3, 5, 6))


def test_global_residual_on_bicubic_input():
    """With the last conv zeroed, the output is the bicubic-upsampled input (global residual, upsampling inside)."""
    net = tiny(8).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        y = net(x)
    ref = torch.nn.functional.interpolate(x, scale_factor=8, mode='bicubic', align_corners=False)
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize('upscale', [4, 8])
def test_gradients_reach_every_parameter(upscale):
    net = tiny(upscale)
    x = torch.rand(2, 3, 16 // upscale * 2, 16 // upscale * 2)
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_skaf_weights_are_two_spatial_maps():
    skaf = SKAF(6)
    w1, w2 = skaf(torch.rand(2, 6, 5, 7), torch.rand(2, 6, 5, 7))
    assert w1.shape == w2.shape == (2, 1, 5, 7)
    assert torch.all((w1 > 0) & (w1 < 1)) and not torch.allclose(w1, w2)


def test_paper_config_parameters_and_forward():
    net = AMINet(**PAPER_CONFIGS['x8']).eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - PAPER_PARAMS) / PAPER_PARAMS < 0.05, n_params
    # Structure of Fig. 2: one LGFI per encoder/decoder, two in the bottleneck, widths C, 2C, 4C, 8C.
    assert [len(e) for e in net.encoders] == [1, 1, 1] and len(net.bottleneck) == 2
    assert net.bottleneck[0].sa.qkv.in_channels == 8 * PAPER_CONFIGS['x8']['num_feat']
    with torch.no_grad():
        assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 128, 128)
    assert sum(p.numel() for p in AMINet(**PAPER_CONFIGS['x4']).parameters()) == n_params


def test_discriminator():
    d = AMIGANDiscriminator()
    from basicsr.archs.discriminator_arch import VGGStyleDiscriminator

    # at 128x128 with batch norm it is ESRGAN's VGG-style discriminator, layer for layer
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in VGGStyleDiscriminator(3, 64).parameters())
    assert d(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    assert AMIGANDiscriminator(**D_TINY, norm='sn')(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(ValueError, match='input must be 128x128'):
        d(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match='input_size'):
        AMIGANDiscriminator(input_size=100)


def test_perceptual_loss_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'vgg_weights_path.*vgg19-dcbb9e9d\.pth'):
        FSRPerceptualLoss(vgg_weights_path=str(tmp_path / 'nope.pth'), layer_weights={'conv5_4': 1.0})
    with pytest.raises(FileNotFoundError, match='vgg_weights_path'):
        FSRPerceptualLoss(layer_weights={'conv5_4': 1.0})


def test_perceptual_loss_and_features(vgg_file):
    from torch.nn.functional import conv2d, relu
    loss = FSRPerceptualLoss(vgg_file, {'conv1_2': 1.0, 'relu2_1': 0.5}, perceptual_weight=0.01)
    x, gt = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    percep, style = loss(x, gt)
    assert style is None and percep > 0
    percep.backward()
    assert x.grad is not None and not any(p.requires_grad for p in loss.parameters())
    assert loss(gt, gt)[0].item() == 0
    # features() = the file's VGG19 convs on the ImageNet-normalized input, computed here by hand
    w = torch.load(vgg_file, weights_only=True)
    norm = (gt - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)

    def conv(x, i):
        return conv2d(x, w[f'features.{i}.weight'], w[f'features.{i}.bias'], padding=1)

    with torch.no_grad():
        feats = loss.features(gt)
        conv1_2 = conv(relu(conv(norm, 0)), 2)
        torch.testing.assert_close(feats['conv1_2'], conv1_2)
        torch.testing.assert_close(feats['relu2_1'], relu(conv(torch.nn.functional.max_pool2d(relu(conv1_2), 2), 5)))
    with pytest.raises(KeyError, match='features.10.weight'):
        FSRPerceptualLoss(vgg_file, {'conv3_1': 1.0})
    loss.train()
    assert not loss.vgg.training
    assert isinstance(loss.vgg, VGG19FeatureExtractor)


def gan_opt(vgg_path, scale=4):
    return {
        'name': 'tiny_amigan',
        'model_type': 'FSRGANModel',
        'scale': scale,
        'num_gpu': 0,
        'is_train': True,
        'dist': False,
        'rank': 0,
        'world_size': 1,
        'network_g': {
            'type': 'AMINet',
            'upscale': scale,
            **TINY_CONFIG
        },
        'network_d': {
            'type': 'AMIGANDiscriminator',
            **D_TINY
        },
        'path': {
            'pretrain_network_g': None,
            'pretrain_network_d': None,
            'strict_load_g': True,
            'resume_state': None
        },
        'train': {
            'optim_g': {
                'type': 'Adam',
                'lr': 1e-4,
                'betas': [0.9, 0.99]
            },
            'optim_d': {
                'type': 'Adam',
                'lr': 4e-4,
                'betas': [0.9, 0.99]
            },
            'scheduler': {
                'type': 'MultiStepLR',
                'milestones': [100],
                'gamma': 0.5
            },
            'pixel_opt': {
                'type': 'L1Loss',
                'loss_weight': 1.0
            },
            'perceptual_opt': {
                'type': 'FSRPerceptualLoss',
                'vgg_weights_path': vgg_path,
                'layer_weights': {
                    'conv1_2': 1.0,
                    'conv2_2': 1.0
                },
                'perceptual_weight': 0.01
            },
            'gan_opt': {
                'type': 'GANLoss',
                'gan_type': 'vanilla',
                'loss_weight': 0.01
            },
        },
    }


def test_gan_step_on_cpu_updates_generator_and_discriminator(vgg_file):
    from basicsr.models import build_model

    from fsr_utils import plugin
    plugin.load()
    torch.manual_seed(0)
    model = build_model(gan_opt(vgg_file))
    assert type(model).__name__ == 'FSRGANModel' and model.device.type == 'cpu'
    assert model.optimizer_g.param_groups[0]['lr'] == 1e-4 and model.optimizer_d.param_groups[0]['lr'] == 4e-4
    g0 = [p.detach().clone() for p in model.net_g.parameters()]
    d0 = [p.detach().clone() for p in model.net_d.parameters()]
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)})
    model.optimize_parameters(1)
    logs = model.get_current_log()
    assert {'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    g_changed = sum(not torch.equal(a, b) for a, b in zip(g0, model.net_g.parameters()))
    d_changed = sum(not torch.equal(a, b) for a, b in zip(d0, model.net_d.parameters()))
    assert g_changed == len(g0) and d_changed == len(d0), (g_changed, len(g0), d_changed, len(d0))
    with pytest.raises(ValueError, match='LR size'):
        model.feed_data({'lq': torch.rand(1, 3, 8, 8), 'gt': torch.rand(1, 3, 64, 64)})


@pytest.mark.parametrize('path', OPTIONS, ids=os.path.basename)
def test_option_files_build_network(path):
    from basicsr.archs import build_network

    from fsr_utils import plugin
    plugin.load()
    with open(path) as f:
        opt = yaml.safe_load(f)
    gan = 'amigan' in os.path.basename(path) and 'train' in opt
    assert opt['model_type'] == ('FSRGANModel' if gan else 'FSRModel')
    assert opt['network_g']['upscale'] == opt['scale']
    for ds in opt['datasets'].values():
        assert ds['type'] == 'FSRFaceDataset' and ds['io_backend']['type'] == 'lmdb'
        assert ds['dataroot_lq'] == f'datasets/CelebA/{ds["dataroot_gt"].split("/")[2]}/lr_x{opt["scale"]}.lmdb'
    with torch.device('meta'):
        net = build_network(dict(opt['network_g'])).eval()
        assert isinstance(net, AMINet)
        assert net(torch.rand(1, 3, 128 // opt['scale'], 128 // opt['scale'])).shape == (1, 3, 128, 128)
        paper = AMINet(**PAPER_CONFIGS['x8'])  # the files use the paper configuration
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in paper.parameters())
    if 'train' in opt:
        train = opt['train']
        betas = [0.9, 0.99]
        assert train['optim_g']['type'] == 'Adam' and train['optim_g']['betas'] == betas
        assert train['pixel_opt']['type'] == 'L1Loss' and train['pixel_opt']['loss_weight'] == 1.0
        assert opt['datasets']['train']['gt_size'] == 128
        if gan:
            assert train['optim_g']['lr'] == 1e-4 and train['optim_d']['lr'] == 4e-4
            assert train['optim_d']['betas'] == betas
            assert train['perceptual_opt']['type'] == 'FSRPerceptualLoss'
            assert train['perceptual_opt']['perceptual_weight'] == 0.01
            assert train['perceptual_opt']['vgg_weights_path'].endswith('vgg19-dcbb9e9d.pth')
            assert train['gan_opt']['gan_type'] == 'vanilla' and train['gan_opt']['loss_weight'] == 0.01
            with torch.device('meta'):
                d = build_network(dict(opt['network_d']))
                assert d(torch.rand(1, 3, 128, 128)).shape == (1, 1)
        else:
            assert train['optim_g']['lr'] == 2e-4 and 'network_d' not in opt
    else:
        assert opt['val']['suffix'] is None


@pytest.mark.slow
def test_tiny_training_loss_falls(tmp_path):
    data = make_face_dataset(tmp_path / 'data', num=8, hr_size=(32, 32), scales=(4, ))
    opt = tiny_train_opt(
        'tiny_aminet', {
            'type': 'AMINet',
            'upscale': 4,
            **TINY_CONFIG
        },
        data,
        scale=4,
        total_iter=12,
        batch_size=4,
        lr=2e-3,
        dataset_type='FSRFaceDataset',
        dataset_extra={'gt_size': 32})
    opt_path = write_opt(opt, tmp_path / 'tiny_aminet.yml')
    run_command([console_script('fsr-train'), '-opt', opt_path], tmp_path, env=subprocess_env(OMP_NUM_THREADS='1'))
    losses = read_losses(tmp_path, 'tiny_aminet')['l_pix']
    assert loss_fell(losses), losses
    assert os.path.isfile(tmp_path / 'experiments' / 'tiny_aminet' / 'models' / 'net_g_12.pth')
