"""AMINet / AMIGAN: golden tests of the paper's modules, shapes, gradients, parameter budget, option files, perceptual
loss, GAN step, a tiny CPU training.

The golden tests compare each module (SA eq. 2-6, RDFE eq. 7-10, FRM eq. 11, SKAF eq. 12-15, LGFI, EDFF eq. 16-17, the
Table II / III Transformer block and FFN) with the paper's equation written out below in plain tensor code, on weights
copied from the module (float64, tiny inputs). Bugs planted once each to check that they fail (see the helper's report):
SKAF's two weights swapped (also a test here), mean and max pooling swapped, the sigmoid dropped, RDFE's attention unit
applied after the second depth-wise convs, the eq. 10 residual dropped, EDFF's encoder and decoder inputs swapped, the
FRM residual dropped, LGFI's branches swapped.
"""
import glob
import os
import pytest
import torch
import yaml
from helpers import (console_script, loss_fell, make_face_dataset, read_losses, run_command, save_small_vgg19,
                     subprocess_env, tiny_train_opt, write_opt)
from test_common_attention import reference_attention
from torch.nn import functional as F

from fsr_arch.amigan_discriminator_arch import TINY_CONFIG as D_TINY
from fsr_arch.amigan_discriminator_arch import AMIGANDiscriminator
from fsr_arch.aminet_arch import (ABLATION_CONFIGS, EDFF, FFN, FRM, LGFI, PAPER_CONFIGS, PAPER_PARAMS, RDFE, SKAF,
                                  TINY_CONFIG, AMINet, TransformerBlock, matlab_bicubic_upsample)
from fsr_arch.common import ConvSelfAttention
from fsr_losses.perceptual_loss import FSRPerceptualLoss, VGG19FeatureExtractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = sorted(
    glob.glob(os.path.join(REPO, 'options', '*aminet*.yml')) + glob.glob(os.path.join(REPO, 'options', '*amigan*.yml')))

pytestmark = pytest.mark.usefixtures('one_thread_module')  # tiny networks: see helpers.torch_threads


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


@pytest.mark.parametrize('input_upsample', ['matlab', 'torch'])
def test_global_residual_on_bicubic_input(input_upsample):
    """With the last conv zeroed, the output is the upsampled input (global residual, upsampling inside): BasicSR's
    MATLAB-style imresize by default (the data's bicubic), torch's bicubic as the option."""
    from basicsr.utils.matlab_functions import imresize
    net = tiny(8, input_upsample=input_upsample).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        y = net(x)
    if input_upsample == 'matlab':
        ref = imresize(x[0], 8)[None]
    else:
        ref = torch.nn.functional.interpolate(x, scale_factor=8, mode='bicubic', align_corners=False)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize('upscale', [4, 8])
def test_gradients_reach_every_parameter(upscale):
    net = tiny(upscale)
    x = torch.rand(2, 3, 16 // upscale * 2, 16 // upscale * 2)
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_untrained_network_outputs_bicubic_by_default():
    """conv_last_init='zero' (the default): the untrained network's output is the MATLAB bicubic enlargement (BasicSR's
    imresize, computed independently); PyTorch's initialisation adds a large residual (issue 24's grid)."""
    from basicsr.utils.matlab_functions import imresize
    x = torch.rand(1, 3, 8, 8)
    torch.manual_seed(0)
    net = AMINet(upscale=4, **{**TINY_CONFIG, 'conv_last_init': 'zero'}).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), imresize(x[0], 4)[None], rtol=0, atol=1e-5)
        other = tiny(4).eval()(x)  # TINY_CONFIG keeps PyTorch's initialisation for the comparison tests
    assert (other - imresize(x[0], 4)[None]).abs().mean() > 0.01
    assert AMINet(upscale=4, num_feat=8).conv_last.weight.abs().sum() == 0  # the constructor's default is 'zero'


def test_zero_last_conv_trains_every_parameter_from_the_second_step():
    """With the last conv at zero, the first step's gradient reaches only that conv; after one step every parameter
    gets a gradient (no parameter stays dead)."""
    net = tiny(4, conv_last_init='zero')
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    (net(x) - y).abs().mean().backward()
    live = {n for n, p in net.named_parameters() if p.grad is not None and torch.any(p.grad != 0)}
    assert live == {'conv_last.weight', 'conv_last.bias'}
    opt.step()
    opt.zero_grad()
    (net(x) - y).abs().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_upsample_icnr_and_bilinear():
    """Upsample: with ICNR the untrained conv + shuffle gives equal 2x2 sub-pixel blocks (a nearest-neighbour
    enlargement of one conv's output); without it they differ; 'bilinear' is conv3x3(bilinear x2 (x)) written out."""
    from fsr_arch.aminet_arch import Upsample
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        torch.manual_seed(0)
        y = Upsample(8, 'shuffle', icnr=True)(x)
        assert y.shape == (1, 4, 12, 10)
        blocks = [y[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
        for b in blocks[1:]:
            torch.testing.assert_close(b, blocks[0], rtol=0, atol=1e-6)
        y = Upsample(8, 'shuffle', icnr=False)(x)
        assert (y[..., 0::2, 0::2] - y[..., 1::2, 1::2]).abs().max() > 0.01
        up = Upsample(8, 'bilinear')
        conv = up.body[1]
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False), conv.weight, padding=1)
        torch.testing.assert_close(up(x), ref)
    for icnr in (True, False):  # the network passes icnr_init on to every decoder's Upsample
        torch.manual_seed(0)
        net = AMINet(upscale=4, num_feat=8, num_heads=[1, 1, 2, 2], num_bottleneck=1, icnr_init=icnr)
        for up in net.ups:
            w = up.body[0].weight
            assert torch.equal(w[0::4], w[1::4]) == icnr and torch.equal(w[0::4], w[3::4]) == icnr
    with pytest.raises(ValueError, match='upsample'):
        AMINet(upscale=4, num_feat=8, upsample='nearest')
    with pytest.raises(ValueError, match='conv_last_init'):
        AMINet(upscale=4, num_feat=8, conv_last_init='small')


def test_skaf_weights_are_two_spatial_maps():
    skaf = SKAF(6)
    w1, w2 = skaf(torch.rand(2, 6, 5, 7), torch.rand(2, 6, 5, 7))
    assert w1.shape == w2.shape == (2, 1, 5, 7)
    assert torch.all((w1 > 0) & (w1 < 1)) and not torch.allclose(w1, w2)


# ---------------------------------------------------------------------------------------------------------------------
# The paper's equations in plain tensor code (weights copied from the module; convolutions with F.conv2d).


def conv(x, module):
    """A conv or a sequence of convs with the module's weights copied (groups and padding from the weight shape)."""
    layers = list(module) if isinstance(module, torch.nn.Sequential) else [module]
    for layer in layers:
        w = layer.weight.detach().clone()
        b = None if layer.bias is None else layer.bias.detach().clone()
        x = F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1] // w.shape[1])
    return x


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))


def layer_norm(x, norm):
    """Normalization over the channels at every position, then the per-channel affine transform."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean)**2).mean(dim=1, keepdim=True)
    w, b = norm.weight.detach().view(1, -1, 1, 1), norm.bias.detach().view(1, -1, 1, 1)
    return (x - mean) / torch.sqrt(var + norm.eps) * w + b


def ref_sa(x, sa):
    """Eq. 2-6 (the plain attention of tests/test_common_attention.py)."""
    weights = {
        k: getattr(sa, n).weight.detach().clone()
        for k, n in (('pw', 'qkv'), ('dw', 'qkv_dwconv'), ('out', 'project_out'))
    }
    temperature = sa.temperature.detach().flatten() if sa.scaling == 'l2norm' else None
    return reference_attention(x, weights, sa.num_heads, sa.order, sa.mode, sa.scaling, temperature)


def ref_skaf(x1, x2, skaf):
    """Eq. 12-15: X = cat(Conv5(X1), Conv7(X2)); [avg_c, max_c]; LSKNet's squeeze conv; sigmoid; split."""
    hybrid = torch.cat([conv(x1, skaf.conv5), conv(x2, skaf.conv7)], dim=1)  # eq. 12-13
    avg = hybrid.sum(dim=1, keepdim=True) / hybrid.shape[1]
    mx = hybrid.max(dim=1, keepdim=True).values
    pooled = torch.cat([avg, mx], dim=1)
    if isinstance(skaf.squeeze, torch.nn.Conv2d):
        pooled = conv(pooled, skaf.squeeze)
    weights = sigmoid(pooled)  # eq. 14
    return weights[:, 0:1], weights[:, 1:2]  # eq. 15


def ref_hourglass(x, hourglass):
    """Per level: avg-pool, 3x3 conv, GELU; back up: bilinear x2, (a second 3x3 conv when it has one), + the skip."""
    skips = []
    for c in hourglass.down:
        skips.append(x)
        x = gelu(conv(F.avg_pool2d(x, 2), c))
    for c, skip in zip(hourglass.up, reversed(skips)):
        x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
        x = skip + (x if isinstance(c, torch.nn.Identity) else conv(x, c))
    return x


def ref_frm(x, frm):
    """Eq. 11: normalization, 3x3 convs, hourglass, plus the input."""
    y = conv(gelu(conv(layer_norm(x, frm.norm), frm.conv1)), frm.conv2)
    return x + ref_hourglass(y, frm.hourglass)


def ref_rdfe(x, rdfe):
    f = [conv(x, b) for b in rdfe.branches1]  # eq. 7
    weight = sigmoid(conv(torch.cat(f, dim=1), rdfe.attention_unit[0]))  # eq. 8
    f = [fi * weight for fi in f]  # eq. 9
    f = [conv(fi, b) for fi, b in zip(f, rdfe.branches2)]  # second depth-wise 3x3 / 5x5 / 7x7
    y = conv(torch.cat(f, dim=1), rdfe.fusion) + x  # eq. 10
    return ref_frm(y, rdfe.frm)  # eq. 11


def ref_ffn(x, ffn):
    h = conv(conv(x, ffn.project_in), ffn.dwconv)
    a, b = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
    return conv(gelu(a) * b, ffn.project_out)


def ref_lgfi(x, lgfi):
    """Sec. III-B: X1 = SA(LN(x)), X2 = RDFE(LN(x)), X', X'' = SKAF(X1, X2), x + X1 X' + X2 X''."""
    y = layer_norm(x, lgfi.norm)
    x1 = ref_sa(y, lgfi.sa)
    x2 = ref_rdfe(y, lgfi.rdfe) if isinstance(lgfi.rdfe, RDFE) else ref_ffn(y, lgfi.rdfe)
    w1, w2 = ref_skaf(x1, x2, lgfi.skaf)
    return x + x1 * w1 + x2 * w2


def ref_edff(x_enc, x_dec, edff):
    """Eq. 16-17."""
    hybrid = conv(torch.cat([x_enc, x_dec], dim=1), edff.reduce)
    w1, w2 = ref_skaf(hybrid, hybrid, edff.skaf)
    return x_enc * w1 + x_dec * w2


def randomized(module, seed=0, std=0.3):
    """The module in float64 with every parameter drawn at random (norms included), and SKAF squeeze biases of
    opposite signs so that the two weights clearly differ."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
        for m in module.modules():
            if isinstance(m, SKAF) and isinstance(m.squeeze, torch.nn.Conv2d):
                m.squeeze.bias.copy_(torch.tensor([1.0, -1.0]))
    return module.eval()


def rand(*shape, seed=1):
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize('kind', ['full', 'depthwise', 'separable'])
@pytest.mark.parametrize('squeeze_kernel', [7, 0])
def test_skaf_golden(kind, squeeze_kernel):
    skaf = randomized(SKAF(4, kind, squeeze_kernel))
    x1, x2 = rand(2, 4, 6, 5), rand(2, 4, 6, 5, seed=2)
    with torch.no_grad():
        got = skaf(x1, x2)
        ref = ref_skaf(x1, x2, skaf)
        torch.testing.assert_close(got[0], ref[0])
        torch.testing.assert_close(got[1], ref[1])
        torch.testing.assert_close(skaf(x1)[1], ref_skaf(x1, x1, skaf)[1])  # one input: X2 = X1 (EDFF)


@pytest.mark.parametrize('hourglass_convs', [1, 2])
@pytest.mark.parametrize('frm_conv', ['separable', 'full'])
def test_rdfe_and_frm_golden(frm_conv, hourglass_convs):
    rdfe = randomized(RDFE(4, hourglass_depth=1, frm_conv=frm_conv, hourglass_convs=hourglass_convs))
    # one 3x3 conv per hourglass level (at the lower resolution), or a second one after the up-sampling
    n_convs = sum(not isinstance(m, torch.nn.Identity) for m in [*rdfe.frm.hourglass.down, *rdfe.frm.hourglass.up])
    assert n_convs == hourglass_convs
    x = rand(2, 4, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(rdfe.frm(x), ref_frm(x, rdfe.frm))
        torch.testing.assert_close(rdfe(x), ref_rdfe(x, rdfe))
    frm2, x = randomized(FRM(4, hourglass_depth=2, hourglass_convs=hourglass_convs)), rand(2, 4, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(frm2(x), ref_frm(x, frm2))
    with pytest.raises(ValueError, match='hourglass_convs must be 1 or 2'):
        FRM(4, hourglass_convs=3)


@pytest.mark.parametrize('attn_scaling', ['sqrt_d', 'l2norm'])
@pytest.mark.parametrize('local_branch', ['rdfe', 'ffn'])
def test_lgfi_golden(attn_scaling, local_branch):
    """LGFI with both attention scalings (eq. 5's 1/sqrt(d) and Restormer's) and both local branches (Table III)."""
    lgfi = randomized(LGFI(4, 2, attn_scaling=attn_scaling, local_branch=local_branch))
    assert (lgfi.sa.order, lgfi.sa.mode, lgfi.sa.scaling) == ('pw_first', 'channel', attn_scaling)
    x = rand(2, 4, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(lgfi.sa(x), ref_sa(x, lgfi.sa))
        torch.testing.assert_close(lgfi(x), ref_lgfi(x, lgfi))


def test_edff_golden():
    edff = randomized(EDFF(4))
    x_enc, x_dec = rand(2, 4, 6, 8), rand(2, 4, 6, 8, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(edff(x_enc, x_dec), ref_edff(x_enc, x_dec, edff))


def test_transformer_block_golden():
    """Table II's block: x + SA(LN1(x)), then + FFN(LN2(.)) (Restormer's GDFN: gelu(a) * b of the split dw conv)."""
    block = randomized(TransformerBlock(4, 2))
    x = rand(2, 4, 6, 6)
    with torch.no_grad():
        y = x + ref_sa(layer_norm(x, block.norm1), block.sa)
        ref = y + ref_ffn(layer_norm(y, block.norm2), block.ffn)
        torch.testing.assert_close(block(x), ref)
    assert isinstance(block.ffn, FFN) and block.ffn.project_out.in_channels == int(4 * 2.66)


def _swapped(skaf):
    forward = skaf.forward

    def swapped(*args):
        w1, w2 = forward(*args)
        return w2, w1

    return swapped


def test_swapping_skaf_weights_fails_the_golden_tests(monkeypatch):
    """The bug of issue 19 (SKAF's two weights swapped) makes the LGFI and EDFF golden comparisons fail."""
    lgfi = randomized(LGFI(4, 2))
    edff = randomized(EDFF(4))
    x, x2 = rand(2, 4, 8, 6), rand(2, 4, 8, 6, seed=2)
    monkeypatch.setattr(lgfi.skaf, 'forward', _swapped(lgfi.skaf))
    monkeypatch.setattr(edff.skaf, 'forward', _swapped(edff.skaf))
    with torch.no_grad():
        with pytest.raises(AssertionError):
            torch.testing.assert_close(lgfi(x), ref_lgfi(x, lgfi))
        with pytest.raises(AssertionError):
            torch.testing.assert_close(edff(x, x2), ref_edff(x, x2, edff))


@pytest.mark.parametrize('favour', ['first', 'second'])
def test_skaf_can_favour_either_input(favour):
    """Issue 12 item 1: with LSKNet's squeeze conv, training can make either weight the larger one at every pixel."""
    torch.manual_seed(0)
    skaf = SKAF(6, 'separable', squeeze_kernel=7)
    x1, x2 = torch.rand(2, 6, 8, 8), torch.rand(2, 6, 8, 8)
    opt = torch.optim.Adam(skaf.parameters(), lr=0.05)
    sign = 1 if favour == 'first' else -1
    for _ in range(60):
        w1, w2 = skaf(x1, x2)
        loss = -sign * (w1 - w2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        w1, w2 = skaf(x1, x2)
    assert torch.all(sign * (w1 - w2) > 0.1), (w1 - w2).abs().min()


def test_skaf_without_squeeze_cannot_favour_the_first_input():
    """Eq. 14 as printed (no squeeze conv): the weights are sigmoid(mean) and sigmoid(max), so X'' >= X' everywhere,
    whatever the convs (the reason for the DEVIATION). A training that pushes X' above X'' does not get there."""
    torch.manual_seed(0)
    skaf = SKAF(6, 'full', squeeze_kernel=0)
    x1, x2 = torch.rand(2, 6, 8, 8), torch.rand(2, 6, 8, 8)
    opt = torch.optim.Adam(skaf.parameters(), lr=0.05)
    for _ in range(30):
        w1, w2 = skaf(x1, x2)
        loss = -(w1 - w2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        w1, w2 = skaf(x1, x2)
    assert torch.all(w2 >= w1)


def test_decoder_skips_are_the_encoder_lgfi_outputs_before_down_sampling():
    """Item 4: EDFF's X_E at each decoder is the output of the same-scale encoder's LGFI (before its down-sampling), and
    X_D is the up-sampled decoder feature."""
    net = AMINet(upscale=4, **TINY_CONFIG).eval()
    seen = {}
    hooks = [
        e.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(('enc', k), o))
        for k, e in enumerate(net.encoders)
    ]
    hooks += [
        u.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(('up', k), o)) for k, u in enumerate(net.ups)
    ]
    hooks += [
        f.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(('fusion', k), i))
        for k, f in enumerate(net.fusions)
    ]
    with torch.no_grad():
        net(torch.rand(1, 3, 8, 8))
    for h in hooks:
        h.remove()
    for k in range(3):
        x_enc, x_dec = seen[('fusion', k)]
        assert x_enc is seen[('enc', 2 - k)] and x_dec is seen[('up', k)]
    assert [seen[('enc', k)].shape[1:] for k in range(3)] == [(8, 32, 32), (16, 16, 16), (32, 8, 8)]


@pytest.mark.parametrize('scale', [2, 4, 8])
def test_matlab_bicubic_upsample_matches_basicsr_imresize(scale):
    """Item 4: the network's input up-sampling is BasicSR's MATLAB-style imresize (independent implementation), the
    interpolation that made the LR data; torch's bicubic differs from it by far more than the tolerance."""
    from basicsr.utils.matlab_functions import imresize
    x = rand(2, 3, 5, 7)
    got = matlab_bicubic_upsample(x, scale)
    ref = torch.stack([imresize(img, scale) for img in x]).double()  # BasicSR computes in float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert (F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False) - ref).abs().max() > 1e-2
    assert matlab_bicubic_upsample(x.float(), scale).dtype == torch.float32


@pytest.mark.parametrize('hourglass_convs', [1, 2])
def test_paper_and_ablation_parameter_counts(hourglass_convs):
    """The paper configuration and the Table II / III variants (same C, every other choice the same) against the
    paper's 12.62M / 11.32M / 12.11M and the two differences they give, 1.30M (LGFI - Transformer) and 0.51M (RDFE -
    FFN), as the module docstring states them: default (one conv per hourglass level) 12.61M -0.05%, 11.20M -1.1%,
    12.02M -0.7%, differences +9% and +16% (the one figure that does not match); two convs per level (the earlier
    network) 12.99M +2.9%, differences +38% and +90%."""
    with torch.device('meta'):
        counts = {
            k: sum(p.numel() for p in AMINet(**cfg, hourglass_convs=hourglass_convs).parameters())
            for k, cfg in (('aminet', PAPER_CONFIGS['x8']), ('transformer', ABLATION_CONFIGS['transformer']),
                           ('ffn', ABLATION_CONFIGS['ffn']))
        }
    rel = {k: counts[k] / PAPER_PARAMS[k] - 1 for k in counts}
    diffs = {
        'lgfi-transformer': (counts['aminet'] - counts['transformer']) / 1.30e6 - 1,  # Table II: 12.62 - 11.32
        'rdfe-ffn': (counts['aminet'] - counts['ffn']) / 0.51e6 - 1,  # Table III: 12.62 - 12.11
    }
    print({k: f'{counts[k] / 1e6:.2f}M ({100 * rel[k]:+.1f}%)' for k in counts}, diffs)
    # the order of the paper's three networks: Transformer < FFN variant < AMINet
    assert counts['transformer'] < counts['ffn'] < counts['aminet']
    if hourglass_convs == 1:
        assert all(abs(r) < 0.012 for r in rel.values()), rel
        assert 0.08 < diffs['lgfi-transformer'] < 0.10 and 0.15 < diffs['rdfe-ffn'] < 0.17, diffs
        assert (counts['aminet'], counts['transformer'], counts['ffn']) == (12614047, 11195871, 12021775)
    else:
        assert 0.028 < rel['aminet'] < 0.03 and 0.37 < diffs['lgfi-transformer'] < 0.39, (rel, diffs)
        assert (counts['aminet'], counts['transformer'], counts['ffn']) == (12988947, 11195871, 12021775)


def test_paper_config_structure_and_forward():
    net = AMINet(**PAPER_CONFIGS['x8']).eval()
    # Structure of Fig. 2: one LGFI per encoder/decoder, two in the bottleneck, widths C, 2C, 4C, 8C.
    assert [len(e) for e in net.encoders] == [1, 1, 1] and len(net.bottleneck) == 2
    assert net.bottleneck[0].sa.qkv.in_channels == 8 * PAPER_CONFIGS['x8']['num_feat']
    # SA as eq. 2-5 state it; every SKAF can select (LSKNet's squeeze conv); the data's bicubic at the input
    attns = [m for m in net.modules() if isinstance(m, ConvSelfAttention)]
    assert len(attns) == 8 and all((a.order, a.mode, a.scaling) == ('pw_first', 'channel', 'sqrt_d') for a in attns)
    skafs = [m for m in net.modules() if isinstance(m, SKAF)]
    assert len(skafs) == 11 and all(isinstance(m.squeeze, torch.nn.Conv2d) for m in skafs)
    assert net.input_upsample == 'matlab'
    # one separable 3x3 conv per hourglass level (the reading that meets the paper's counts), none after up-sampling
    frms = [m.rdfe.frm for m in net.modules() if isinstance(m, LGFI)]
    assert len(frms) == 8 and all(
        len(f.hourglass.down) == 1 and isinstance(f.hourglass.up[0], torch.nn.Identity) for f in frms)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 128, 128)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 12614047
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


def assert_paper_mechanisms(net):
    """Every SKAF can select (squeeze conv), every SA is eq. 2-5's, the input is enlarged with the data's bicubic."""
    assert all(isinstance(m.squeeze, torch.nn.Conv2d) for m in net.modules() if isinstance(m, SKAF))
    assert all((m.order, m.mode, m.scaling) == ('pw_first', 'channel', 'sqrt_d') for m in net.modules()
               if isinstance(m, ConvSelfAttention))
    assert net.input_upsample == 'matlab'


def test_demo_option_file_uses_the_paper_mechanisms():
    from basicsr.archs import build_network

    from fsr_utils import plugin
    plugin.load()
    with open(os.path.join(REPO, 'options', 'demo', 'train_aminet_demo_x4.yml')) as f:
        opt = yaml.safe_load(f)
    net = build_network(dict(opt['network_g']))
    assert isinstance(net, AMINet) and isinstance(net.fusions[0].skaf.conv5, torch.nn.Conv2d)  # full convs in EDFF
    assert isinstance(net.encoders[0][0].skaf.conv5, torch.nn.Sequential)  # separable convs in LGFI
    assert_paper_mechanisms(net)


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
        if 'degradation' not in ds:  # the *_real_* files make their LR faces on the fly
            assert ds['dataroot_gt'].split('/')[1] in ('CelebA', 'Helen')
            assert ds['dataroot_lq'] == ds['dataroot_gt'].replace('hr.lmdb', f'lr_x{opt["scale"]}.lmdb')
    if not os.path.basename(path).startswith('train'):  # the test files evaluate on CelebA and Helen (Tables VII/VIII)
        assert {ds['name'] for ds in opt['datasets'].values()} == {'CelebA_test', 'Helen_test'} or opt['scale'] == 4
    with torch.device('meta'):
        net = build_network(dict(opt['network_g'])).eval()
        assert isinstance(net, AMINet)
        assert net(torch.rand(1, 3, 128 // opt['scale'], 128 // opt['scale'])).shape == (1, 3, 128, 128)
        paper = AMINet(**PAPER_CONFIGS['x8'])  # the files use the paper configuration
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in paper.parameters())
    assert_paper_mechanisms(net)
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
            # eq. 19: every layer of VGG19 (its 16 conv layers: 2 + 2 + 4 + 4 + 4), unweighted
            convs = [f'conv{b}_{i}' for b, n in enumerate((2, 2, 4, 4, 4), 1) for i in range(1, n + 1)]
            assert train['perceptual_opt']['layer_weights'] == {name: 1.0 for name in convs} and len(convs) == 16
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


def test_matlab_matrices_built_under_a_meta_context_serve_real_tensors_later():
    """The cached interpolation matrices are built on the CPU even inside ``torch.device('meta')`` (the option-file
    tests build networks there); a later real forward must not find meta tensors in the cache."""
    from fsr_arch import common
    common._MATLAB_MATRICES.pop((5, 3), None)
    for key in [k for k in common._MATRICES_ON if k[:2] == (5, 3)]:
        common._MATRICES_ON.pop(key)
    with torch.device('meta'):
        matlab_bicubic_upsample(torch.rand(1, 1, 5, 5), 3)
    out = matlab_bicubic_upsample(torch.ones(1, 1, 5, 5), 3)
    torch.testing.assert_close(out, torch.ones(1, 1, 15, 15))  # the weights of each output pixel sum to 1


def test_matlab_bicubic_upsample_is_fp32_under_autocast_and_cached_per_device():
    """Issue 25: the base image of AMINet's (and W-Net's) global residual stays fp32 under bf16 autocast, and the
    interpolation matrices are not copied to the device at every forward."""
    from fsr_arch import common
    x = rand(1, 3, 6, 5).float()
    ref = matlab_bicubic_upsample(x.double(), 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = matlab_bicubic_upsample(x, 4)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)  # bf16 matmuls would be off by ~1e-2
    first = common._matrix_on(6, 4, x.device, torch.float32)
    matlab_bicubic_upsample(x, 4)
    assert common._matrix_on(6, 4, x.device, torch.float32) is first
