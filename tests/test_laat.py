"""LAAT (fsr_arch/laat_arch.py): Haar WT/WIT, shapes and size errors, gradients, region selection against a naive
reference, fused vs explicit attention, a tiny fsr-train run and the options files."""
import glob
import math
import os
import pytest
import torch
import yaml
from helpers import loss_fell, make_face_dataset, read_losses, run_fsr_train, tiny_train_opt
from torch.nn import functional as F

from fsr_arch.common import haar_iwt, haar_wt
from fsr_arch.laat_arch import ABLATIONS, LAAT, PAPER_CONFIGS, RSA, TINY_CONFIG

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread(one_thread, monkeypatch):
    # one torch thread (conftest), and one OpenMP thread for the fsr-train subprocess (helpers.subprocess_env keeps it)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    yield


def tiny(upscale, **kwargs):
    torch.manual_seed(0)
    return LAAT(upscale=upscale, **{**TINY_CONFIG, **kwargs})


def test_haar_wt_is_eq14_and_wit_inverts_it_exactly():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    bands = haar_wt(x)
    # eq. 14 kernels as a stride-2 group convolution (eq. 15), in the order LL, LH, HL, HH.
    kernels = torch.tensor([[[1, 1], [1, 1]], [[-1, 1], [-1, 1]], [[-1, -1], [1, 1]], [[1, -1], [-1, 1]]],
                           dtype=torch.float64) / 2
    weight = kernels[:, None].repeat(3, 1, 1, 1)  # (12, 1, 2, 2): channel c gets the 4 kernels
    conv = F.conv2d(x, weight, stride=2, groups=3).view(2, 3, 4, 4, 3)
    for i, band in enumerate(bands):
        torch.testing.assert_close(band, conv[:, :, i], rtol=0, atol=1e-12)
    # eq. 16: transposed convs with the same kernels invert it.
    torch.testing.assert_close(F.conv_transpose2d(conv.view(2, 12, 4, 3), weight, stride=2, groups=3), x)
    torch.testing.assert_close(haar_iwt(*bands), x, rtol=0, atol=1e-12)
    x32 = torch.rand(1, 4, 16, 16)
    torch.testing.assert_close(haar_iwt(*haar_wt(x32)), x32, rtol=0, atol=1e-6)


@pytest.mark.parametrize('upscale,lr_hw', [(4, (8, 8)), (8, (4, 4)), (4, (8, 12)), (8, (6, 3))])
def test_tiny_shapes_and_range(upscale, lr_hw):
    net = tiny(upscale).eval()
    lr = torch.rand(2, 3, *lr_hw)
    with torch.no_grad():
        out = net(lr)
    assert out.shape == (2, 3, lr_hw[0] * upscale, lr_hw[1] * upscale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('key', ['x4', 'x8'])
def test_paper_config_levels_and_forward(key):
    torch.manual_seed(0)
    net = LAAT(**PAPER_CONFIGS[key]).eval()
    # Sec. 4.2: full RSA (lambda 4) at 128x128 and 64x64, CSA at 32x32 and 16x16.
    assert net.level_lams == [4, 4, 1, 1]
    assert net.size_multiple == {'x4': 2, 'x8': 1}[key]
    s = net.upscale
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32 // s, 48 // s))  # HR 32x48: a small size the network supports
    assert out.shape == (1, 3, 32, 48)


def test_paper_config_has_eq7_1x1_conv_in_its_10_csa_blocks():
    """Sec. 4.2 at x8: CSA (lambda = 1) at 32x32 and 16x16, i.e. 2 blocks each of the extraction steps at 128 and 256
    channels, the transformation (256) and the recovery steps at 512 and 256: eq. 7's 1x1 conv there costs C'^2 + C'
    each, and ``csa_downsample=False`` removes exactly those."""
    torch.manual_seed(0)
    paper = LAAT(**PAPER_CONFIGS['x8'])
    without = LAAT(**PAPER_CONFIGS['x8'], csa_downsample=False)
    csa = [m for m in paper.modules() if isinstance(m, RSA) and m.lam == 1]
    assert sorted(m.down.in_channels for m in csa) == [128, 128, 256, 256, 256, 256, 256, 256, 512, 512]
    assert all(m.down.kernel_size == (1, 1) and m.down.stride == (1, 1) for m in csa)
    assert all(m.down is None for m in without.modules() if isinstance(m, RSA) and m.lam == 1)
    widths = [128] * 2 + [256] * 2 + [256] * 2 + [512] * 2 + [256] * 2
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(paper) - count(without) == sum(c * c + c for c in widths) == 953088
    assert count(paper) == 14611115


def test_unsupported_size_is_a_clear_error():
    net = tiny(4)
    assert net.size_multiple == 2
    with pytest.raises(ValueError, match=r'LAAT: input size 7x8 is not supported.*multiples of 2'):
        net(torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match='upscale'):
        LAAT(upscale=3)


VARIANT_KWARGS = [{},
                  dict(up_mode='stacked'),
                  dict(head_reduction='max'),
                  dict(head_reduction='per_head'), *ABLATIONS.values()]


@pytest.mark.parametrize(
    'kwargs', VARIANT_KWARGS, ids=lambda kw: '-'.join(f'{k}={v}' for k, v in kw.items()) or 'paper')
def test_every_parameter_gets_a_gradient(kwargs):
    net = tiny(4, **kwargs)
    lr = torch.rand(2, 3, 8, 8)
    F.l1_loss(net(lr), torch.rand(2, 3, 32, 32)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero
    rsa = [m for m in net.modules() if isinstance(m, RSA)]
    assert any(m.lam == 4 for m in rsa) and any(m.lam == 1 for m in rsa)  # both RSA and CSA were trained


def test_bad_variant_arguments_are_clear_errors():
    for arg, value in (('up_mode', 'bilinear'), ('head_reduction', 'mean'), ('fim_mode', 'none'), ('wfm_mode', 'add')):
        with pytest.raises(ValueError, match=f'{arg} must be one of .*network_g:{arg}'):
            tiny(4, **{arg: value})
    with pytest.raises(ValueError, match='stacked.*power-of-2 lambda'):
        RSA(8, 1, lam=3, up_mode='stacked')
    with pytest.raises(ValueError, match='pos_size'):
        RSA(8, 1, lam=2, fim_mode='position')


@pytest.mark.parametrize('kwargs', VARIANT_KWARGS[1:], ids=lambda kw: '-'.join(f'{k}={v}' for k, v in kw.items()))
def test_variants_run_at_other_sizes_and_on_the_fused_path(kwargs):
    explicit = tiny(4, use_sdpa=False, **kwargs).eval()
    fused = tiny(4, use_sdpa=True, channels_last=True, **kwargs).eval()
    fused.load_state_dict(explicit.state_dict())
    lr = torch.rand(2, 3, 8, 12)  # HR 32x48, not the built 32x32 (position parameters are interpolated)
    with torch.no_grad():
        torch.testing.assert_close(fused(lr), explicit(lr), rtol=1e-5, atol=1e-5)


def naive_rsa(rsa, x):
    """eq. 7-12 with a materialized attention map and Python loops (float64 reference)."""
    b, c, h, w = x.shape
    lam, heads = rsa.lam, rsa.coarse_attn.num_heads
    d = c // heads

    def mhsa(attn, tokens):  # tokens (n, c) -> output (n, c) and the map (heads, n, n)
        q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
        maps, outs = [], []
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            am = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
            maps.append(am)
            outs.append(am @ v[:, sl])
        return attn.proj(torch.cat(outs, dim=-1)), torch.stack(maps)

    x_hat = rsa.fim(x)
    coarse = rsa.fim_coarse(rsa.down(x))
    hc, wc = coarse.shape[-2:]
    out = torch.empty_like(x)
    indices = []
    for i in range(b):
        out_c, am = mhsa(rsa.coarse_attn, coarse[i].reshape(c, -1).T)
        n_c = am.shape[-1]
        score = [sum(am[hd, qi, j].item() for hd in range(heads) for qi in range(n_c)) for j in range(n_c)]
        k = int(math.sqrt(h * w) // lam)
        chosen = sorted(range(n_c), key=lambda j: -score[j])[:k]
        positions = []
        for j in chosen:
            ry, rx = divmod(j, wc)
            for dy in range(lam):
                for dx in range(lam):
                    positions.append(((ry * lam + dy), (rx * lam + dx)))
        indices.append([py * w + px for py, px in positions])
        regions = torch.stack([x_hat[i, :, py, px] for py, px in positions])
        refined, _ = mhsa(rsa.region_attn, regions)
        out_f = x[i].clone()
        for t, (py, px) in enumerate(positions):
            out_f[:, py, px] += refined[t]
        up = F.conv_transpose2d(out_c.T.reshape(1, c, hc, wc), rsa.up.weight, rsa.up.bias, stride=lam)[0]  # eq. 12
        out[i] = rsa.dwconv((out_f + up)[None])[0]
    return out, torch.tensor(indices)


@pytest.mark.parametrize('use_sdpa', [False, True])
def test_region_selection_matches_naive_reference(use_sdpa):
    torch.manual_seed(1)
    rsa = RSA(8, 2, lam=2, use_sdpa=use_sdpa, block_elems=40).double()  # tiny blocks: several query-row blocks
    rsa.record_index = True
    x = torch.randn(3, 8, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        out = rsa(x)
        ref_out, ref_index = naive_rsa(rsa, x)
    k = int(math.sqrt(8 * 12) // 2)
    assert rsa.last_index.shape == (3, k * 4)
    assert torch.equal(rsa.last_index, ref_index)
    assert not all(torch.equal(ref_index[0], r) for r in ref_index[1:])  # per-image selections differ (batched)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)


def test_larger_regions_pool_the_coarse_scores():
    torch.manual_seed(2)
    rsa = RSA(8, 2, lam=2, region_size=4).double().eval()
    rsa.record_index = True
    x = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        rsa(x)
        coarse = rsa.fim_coarse(rsa.down(x)).flatten(2).transpose(1, 2)  # (B, 8*8, C)
        q, k, _ = rsa.coarse_attn.qkv(coarse).chunk(3, dim=-1)
        q, k = (t.reshape(2, 64, 2, 4).transpose(1, 2) for t in (q, k))
        cols = torch.softmax(q @ k.transpose(-2, -1) / 2, dim=-1).sum(dim=(1, 2)).view(2, 8, 8)  # materialized map
    region_scores = cols.view(2, 4, 2, 4, 2).sum(dim=(2, 4)).flatten(1)  # 2x2 coarse tokens per 4x4 region
    k = int(math.sqrt(16 * 16) // 2) * 2**2 // 4**2  # same number of refined positions as with lambda-sized regions
    assert k == 2 and rsa.last_index.shape == (2, k * 16)
    for i in range(2):
        best = region_scores[i].topk(k).indices.tolist()
        expected = [(r // 4 * 4 + dy) * 16 + r % 4 * 4 + dx for r in best for dy in range(4) for dx in range(4)]
        assert rsa.last_index[i].tolist() == expected


def test_sdpa_path_channels_last_and_bf16_match_explicit_path():
    explicit = tiny(4, use_sdpa=False).eval()
    fused = tiny(4, use_sdpa=True).eval()
    fused.load_state_dict(explicit.state_dict())
    blocked = tiny(4, use_sdpa=False, block_elems=64, channels_last=True).eval()
    blocked.load_state_dict(explicit.state_dict())
    lr = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        ref = explicit(lr)
        torch.testing.assert_close(fused(lr), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(blocked(lr), ref, rtol=1e-5, atol=1e-5)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out_bf16 = fused(lr)
    assert torch.isfinite(out_bf16).all() and (out_bf16.float() - ref).abs().mean() < 0.05


@pytest.mark.slow
def test_tiny_laat_trains_with_fsr_train(tmp_path):
    data = make_face_dataset(tmp_path / 'data', num=8, hr_size=(32, 32), scales=(4, ))
    opt = tiny_train_opt(
        'tiny_laat', {
            'type': 'LAAT',
            **TINY_CONFIG, 'upscale': 4
        },
        data,
        scale=4,
        total_iter=16,
        batch_size=4,
        dataset_extra={'gt_size': 32},
        extra={'train': {
            'optim_g': {
                'type': 'AdamW',
                'lr': 2e-3,
                'betas': [0.9, 0.99],
                'weight_decay': 0.02
            }
        }})
    run_fsr_train(opt, tmp_path)
    losses = read_losses(tmp_path, 'tiny_laat')['l_pix']
    assert len(losses) == 16 and loss_fell(losses, window=4), losses
    assert os.path.isfile(tmp_path / 'experiments' / 'tiny_laat' / 'models' / 'net_g_16.pth')


# The paper configuration's files (readings and ablations: tests/test_laat_options.py).
LAAT_OPTIONS = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '*_laat_x[48].yml')))


def test_laat_options_exist():
    names = {os.path.basename(p) for p in LAAT_OPTIONS}
    assert {'train_laat_x4.yml', 'train_laat_x8.yml', 'test_laat_x4.yml', 'test_laat_x8.yml'} == names


@pytest.mark.parametrize('path', LAAT_OPTIONS, ids=os.path.basename)
def test_laat_options_build_the_paper_network(path):
    from basicsr.archs import build_network
    with open(path) as f:
        opt = yaml.safe_load(f)
    assert opt['model_type'] == 'FSRModel' and opt['network_g']['upscale'] == opt['scale']
    for dataset in opt['datasets'].values():
        assert dataset['type'] == 'FSRFaceDataset' and dataset['io_backend']['type'] == 'lmdb'
        assert dataset['dataroot_lq'].endswith(f'lr_x{opt["scale"]}.lmdb')
    net = build_network(dict(opt['network_g']))
    reference = LAAT(**PAPER_CONFIGS[f'x{opt["scale"]}'])
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in reference.parameters())
    assert net.level_lams == reference.level_lams
    if os.path.basename(path).startswith('train'):
        train = opt['train']
        assert train['optim_g'] == {'type': 'AdamW', 'lr': 4e-4, 'betas': [0.9, 0.99], 'weight_decay': 0.02}
        ds = opt['datasets']['train']
        assert ds['total_batch_size'] == 32 and 'batch_size_per_gpu' not in ds
        assert train['scheduler']['milestones_epochs'] == [20, 40, 60, 80]
        assert train['scheduler']['gamma'] == 0.5 and train['total_epochs'] == 100
        assert train['pixel_opt']['type'] == 'L1Loss'
    else:
        assert opt['val']['suffix'] is None
