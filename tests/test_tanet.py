"""TANet (fsr_arch/tanet_arch.py): shapes, gradients, SDPA vs explicit attention, open choices, a tiny CPU training.

The equations are pinned in ``test_tanet_golden.py``; the option files of both token readings in
``test_tanet_options.py``.
"""
import os
import pytest
import torch
import warnings
from helpers import load_script, loss_fell, make_face_dataset, read_losses, run_fsr_train, tiny_train_opt

from fsr_arch.tanet_arch import PAPER_CONFIGS, TINY_CONFIG, TANet


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
    assert PAPER_CONFIGS['x4']['token_mode'] == PAPER_CONFIGS['x8']['token_mode'] == 'window'  # the paper's reading
    with torch.device('meta'):  # structure and shapes without the cost of initialising 8M weights
        net = TANet(**PAPER_CONFIGS['x8']).eval()
        assert net(torch.rand(1, 3, 27, 22)).shape == (1, 3, 216, 176)  # CelebA 216x176 at x8
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 3, 256, 256)  # FFHQ 256x256 at x8
    n_params = sum(p.numel() for p in net.parameters())
    assert 8.1e6 < n_params < 8.4e6, n_params  # 100 RBs of 2 x 37k weights dominate
    # the paper's global path: a 16 x 64 position encoding, 4 blocks (2 LayerNorms, qkv, projection, MLP 64-256-64)
    # and the final LayerNorm; no embedding layer
    block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert sum(p.numel() for p in net.global_path.parameters()) == 16 * 64 + 4 * block + 128
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
    net = tiny(4, token_mode='global')
    gp = net.global_path.eval()
    assert gp._pos(*gp.pos_embed.shape[-2:]) is gp.pos_embed
    assert gp._pos(7, 6).shape == (1, gp.pos_embed.shape[1], 7, 6)


def test_training_off_the_position_grid_warns_once():
    """'global' mode: a training grid other than pos_grid means train/test see different encodings: say so."""
    net = tiny(4, token_mode='global', pos_grid=(4, 4))  # LR 16x16 -> 4x4 tokens
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        net.train()(torch.rand(1, 3, 16, 16))  # on the grid: silent
        net.eval()(torch.rand(1, 3, 12, 16))  # testing off the grid: silent (interpolated)
    with pytest.warns(UserWarning, match=r'pos_grid to \[3, 4\]'):
        net.train()(torch.rand(1, 3, 12, 16))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        net(torch.rand(1, 3, 12, 16))  # once only
        tiny(4, token_mode='window').train()(torch.rand(1, 3, 12, 16))  # no grid in the paper's reading


def test_window_mode_does_not_depend_on_the_input_size():
    """The paper's reading: a patch's output depends on that patch only, wherever the patch sits in the image."""
    net = tiny(4, token_mode='window').eval()
    gp = net.global_path
    x = torch.randn(1, TINY_CONFIG['num_feat'], 16, 24)
    with torch.no_grad():
        whole = gp(x)
        crop = gp(x[:, :, 4:12, 8:20])  # a crop aligned with the 4x4 patch grid
    torch.testing.assert_close(whole[:, :, 4:12, 8:20], crop, rtol=1e-5, atol=1e-6)
    assert tuple(gp.pos_embed.shape) == (1, 16, TINY_CONFIG['num_feat'])


def test_open_choices_final_norm_and_rb_init():
    plain = tiny(4, global_norm=False)
    assert isinstance(plain.global_path.norm, torch.nn.Identity)
    assert isinstance(tiny(4).global_path.norm, torch.nn.LayerNorm)
    conv = tiny(4, num_feat=32).local_path.body[0].body[0].conv1.weight
    torch_init = tiny(4, num_feat=32, rb_init='pytorch').local_path.body[0].body[0].conv1.weight
    # BasicSR: Kaiming normal (std sqrt(2 / 288) = 0.083) x 0.1; PyTorch: uniform(+-1/sqrt(288)), std 0.034
    assert 0.006 < conv.std() < 0.011 and 0.028 < torch_init.std() < 0.04, (conv.std(), torch_init.std())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='token_mode'):
        TANet(upscale=4, **{**TINY_CONFIG, 'token_mode': 'tokens'})
    with pytest.raises(ValueError, match='num_heads'):
        TANet(upscale=4, **{**TINY_CONFIG, 'num_heads': 3})
    with pytest.raises(ValueError, match='power of 2'):
        TANet(upscale=3, **TINY_CONFIG)
    with pytest.raises(ValueError, match='rb_init'):
        TANet(upscale=4, **{**TINY_CONFIG, 'rb_init': 'xavier'})
    with pytest.raises(ValueError, match='pos_grid'):
        TANet(upscale=4, **{**TINY_CONFIG, 'token_mode': 'global', 'pos_grid': None})
    TANet(upscale=4, **{**TINY_CONFIG, 'pos_grid': None})  # the paper's reading needs no grid


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


def _padding_script():
    return load_script('measure_tanet_padding')


def test_padding_measurement_changes_only_the_padded_rows(tmp_path, capsys):
    """scripts/measure_tanet_padding.py: its forward is TANet's, and giving the global path the real rows in place of
    the padded ones changes the output only near the half-padded last token row (LR rows 28-29 of 30)."""
    import yaml
    script = _padding_script()
    torch.manual_seed(0)
    net = TANet(upscale=4, **TINY_CONFIG, img_residual=True).eval()
    full = torch.rand(1, 3, 32, 32)
    lr = full[:, :, :30]
    with torch.no_grad():
        out = net(lr)
    torch.testing.assert_close(script.forward(net, lr), out)
    per_row = (script.forward(net, lr, full) - out).abs().amax(dim=(0, 1, 3))  # (120,) HR rows
    # LR rows 28-29 reach HR rows >= 105 through the upscale module's 3x3 convs (1 LR row, 1 half-size row, 1 HR row)
    assert per_row[:100].max() < 1e-6 and per_row[112:].min() > 0
    # the whole script on a tiny network and dataset: one line per split, 2 faces x (rows, columns)
    opt = tmp_path / 'net.yml'
    opt.write_text(yaml.safe_dump({'network_g': {'type': 'TANet', 'upscale': 4, **TINY_CONFIG, 'img_residual': True}}))
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    for split in ('train', 'test'):
        make_face_dataset(tmp_path / 'data' / split, num=2, hr_size=(128, 128), scales=(4, ))
    assert script.main([str(tmp_path / 'net.pth'), '--options', str(opt), '--data', str(tmp_path / 'data')]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all('(4 crops): band' in line for line in lines), lines
