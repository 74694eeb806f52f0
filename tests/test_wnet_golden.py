"""Golden tests of W-Net's defining equations against plain tensor code (weights copied from the modules).

SCAB (eq. 20-21 + RCAB), LPF (eq. 9-11), the Parsing Block's fusion (eq. 4-8) and the key-region loss (eq. 27-28, hand
computed). Each reference writes the paper's equation out with ``F.conv2d`` / matrix products on the copied weights; it
never calls the module under test or its submodules.
"""
import math
import pytest
import torch
from torch.nn import functional as F

from fsr_arch.wnet_arch import LPF, SCAB, ParsingBlock, SCABAttention
from fsr_losses.wnet_loss import WNetKeyRegionLoss

pytestmark = pytest.mark.usefixtures('one_thread')


def _randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def _conv(x, conv, groups=1):
    pad = conv.kernel_size[0] // 2
    return F.conv2d(x, conv.weight, conv.bias, padding=pad, groups=groups)


def _channel_attention(x, ca):
    """RCAN's CA written out: x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)."""
    w1, b1 = ca.attention[1].weight[:, :, 0, 0], ca.attention[1].bias
    w2, b2 = ca.attention[3].weight[:, :, 0, 0], ca.attention[3].bias
    s = x.mean(dim=(2, 3))  # (N, C)
    s = torch.sigmoid(torch.relu(s @ w1.T + b1) @ w2.T + b2)
    return x * s[:, :, None, None]


def _spatial_attention(x, sa):
    """CBAM's SA written out: x * sigmoid(conv7x7([mean_c(x), max_c(x)]))."""
    desc = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
    return x * torch.sigmoid(_conv(desc, sa.conv))


def _softmax(s, dim):
    e = torch.exp(s - s.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


def _scab_reference(x, scab, mode):
    """RCAB then eq. 20-21 with 4 heads, and the residual ``y + F_att``."""
    rcab = scab.rcab.body
    y = x + _channel_attention(_conv(torch.relu(_conv(x, rcab[0])), rcab[2]), rcab[3])
    att = scab.attn
    n, c, h, w = y.shape
    heads = att.num_heads
    wd = att.qkv_dwconv.weight  # (3C, 1, 3, 3): input channel i's kernels for q, k, v at rows 3i, 3i+1, 3i+2
    wp = att.qkv.weight[:, :, 0, 0]  # (3C, C): rows 0..C-1 make Q, C..2C-1 make K, 2C..3C-1 make V
    qkv = []
    for j in range(3):  # eq. 20: f1x1(f_dconv3x3(F)), the 1x1 over all C depth-wise maps
        dw = F.conv2d(y, wd[j::3], padding=1, groups=c)  # (N, C, H, W)
        qkv.append(torch.einsum('oc,nchw->nohw', wp[j * c:(j + 1) * c], dw).reshape(n, c, h * w))
    q, k, v = qkv
    out = torch.zeros(n, c, h * w)
    d = c // heads
    for b in range(n):
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            qh, kh, vh = q[b, sl], k[b, sl], v[b, sl]  # (d, HW)
            if mode == 'channel':  # (d x d) map, dot products over the H*W positions, scale 1/sqrt(HW)
                a = _softmax(qh @ kh.T / math.sqrt(h * w), dim=1)
                out[b, sl] = a @ vh
            else:  # (HW x HW) map over positions, dot products over the d channels of the head, scale 1/sqrt(d)
                a = _softmax(qh.T @ kh / math.sqrt(d), dim=1)
                out[b, sl] = (a @ vh.T).T
    f_att = torch.einsum('oc,ncp->nop', att.project_out.weight[:, :, 0, 0], out).reshape(n, c, h, w)
    return y + f_att


@pytest.mark.parametrize('mode', ['channel', 'spatial'])
def test_scab_matches_eq20_21(mode):
    torch.manual_seed(0)
    scab = _randomize(SCAB(8, num_heads=4, reduction=4, attn_mode=mode), seed=1).eval()
    with torch.no_grad():
        scab.attn.qkv_dwconv.weight.mul_(0.5)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(scab(x), _scab_reference(x, scab, mode), rtol=1e-4, atol=1e-5)


def test_scab_paper_defaults_and_every_channel_reaches_q_k_v():
    att = SCABAttention(12, 4)
    assert (att.order, att.mode, att.scaling) == ('dw_first', 'channel', 'sqrt_d')
    x = torch.randn(1, 12, 4, 4, requires_grad=True)
    for t in att.qkv_maps(x):  # f1x1 mixes all channels: each of Q, K, V depends on every input channel
        g, = torch.autograd.grad(t.square().sum(), x, retain_graph=True)
        assert (g.abs().sum(dim=(0, 2, 3)) > 0).all()


def _lpf_reference(feat, parsing, lpf):
    """Eq. 9-11 with F'_parsing in F_fuse2 (the module docstring's reading)."""
    lr1 = _conv(feat, lpf.conv_lr1)
    lr2 = _conv(feat, lpf.conv_lr2)
    par = _conv(parsing, lpf.conv_par)
    f_att = _conv(_channel_attention(lr1, lpf.ca) + _spatial_attention(lr1, lpf.spa), lpf.conv_att)
    sigma = torch.sigmoid(_conv(lr2 + par, lpf.pa.conv))
    f_pixel = sigma * lr2 + (1 - sigma) * par
    fuse1 = _conv(torch.cat([f_att, par], dim=1), lpf.conv_fuse1)
    fuse2 = _conv(f_pixel + feat + par, lpf.conv_fuse2)
    return fuse1 + fuse2 + lr2 + par


def test_lpf_matches_eq9_11():
    lpf = _randomize(LPF(8, parsing_channels=3), seed=2)
    feat, parsing = torch.randn(2, 8, 7, 6), torch.rand(2, 3, 7, 6)
    with torch.no_grad():
        expected = _lpf_reference(feat, parsing, lpf)
        torch.testing.assert_close(lpf(feat, parsing), expected, rtol=1e-4, atol=1e-5)
        # the strip-wise path's entry: CA weights given from the global mean of F_LR^(1)
        weights = lpf.channel_weights(_conv(feat, lpf.conv_lr1).mean(dim=(2, 3), keepdim=True))
        torch.testing.assert_close(lpf(feat, parsing, ca_weights=weights), expected, rtol=1e-4, atol=1e-5)


def test_parsing_block_fusion_matches_eq4_8():
    block = _randomize(ParsingBlock(3, num_feat=8, num_res_blocks=1, hg_depth=1, parsing_channels=3), seed=3)
    assert (block.y2[0].out_channels, block.y3[0].out_channels) == (4, 4)  # eq. 4: y2, y3 reduce C
    deep = {}
    block.hourglass.register_forward_hook(lambda m, i, o: deep.setdefault('F_deep', o))
    x = torch.rand(2, 3, 6, 4)
    with torch.no_grad():
        out = block(x)
        d = deep['F_deep']
        y1 = torch.relu(_conv(d, block.y1[0]))
        y2 = torch.relu(_conv(d, block.y2[0]))
        y3 = torch.relu(_conv(d, block.y3[0]))
        y4 = torch.relu(_conv(torch.cat([y1, y2, y3], 1), block.y4[0]))
        y5 = torch.relu(_conv(y3, block.y5[0]))
        cat = torch.cat([y2, y4, y5], 1)
        y6 = _channel_attention(cat, block.ca) + _spatial_attention(cat, block.sa)
        expected = _conv(_conv(y6, block.y7) + d, block.conv_out)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def _masks_and_diff():
    """Two 1-channel 2x2 images; SR - HR = [[1, 2], [3, 4]] for the first and 1 everywhere for the second."""
    gt = torch.zeros(2, 1, 2, 2)
    sr = torch.tensor([[[[1., 2.], [3., 4.]]], [[[1., 1.], [1., 1.]]]])
    masks = torch.zeros(2, 4, 2, 2)
    masks[0, 0, 0, 0] = 1  # eyes: one pixel (error 1)
    masks[0, 1, :, 1] = 1  # brows: right column (errors 2, 4)
    masks[0, 3] = 1  # mouth: the whole image; nose empty
    masks[1, 0] = 1  # second image: eyes everywhere (errors 1)
    return sr, gt, masks


def test_key_region_loss_hand_computed():
    sr, gt, masks = _masks_and_diff()
    # per-region means: image 1: eyes 1/1, brows (4 + 16) / 2, nose 0, mouth (1 + 4 + 9 + 16) / 4 -> 18.5; image 2: 1
    region = WNetKeyRegionLoss(perceptual_weight=0, loss_weight=0.5)
    assert region.mse_normalize == 'region'  # the default
    assert region(sr, gt, masks).item() == pytest.approx(0.5 * (18.5 + 1) / 2)
    # divided by the whole image (4 pixels): image 1: 1/4 + 20/4 + 0 + 30/4 = 12.75; image 2: 4/4
    image = WNetKeyRegionLoss(perceptual_weight=0, loss_weight=0.5, mse_normalize='image')
    assert image(sr, gt, masks).item() == pytest.approx(0.5 * (12.75 + 1) / 2)
    # component weights (eyes, brows, nose, mouth): brows twice -> image 1: 1 + 20 + 0 + 7.5
    weighted = WNetKeyRegionLoss(perceptual_weight=0, loss_weight=1.0, component_weights=[1, 2, 1, 1])
    assert weighted(sr, gt, masks).item() == pytest.approx((28.5 + 1) / 2)
    # three channels: the mean runs over C as well (same error in every channel gives the same value)
    assert region(sr.expand(2, 3, 2, 2), gt.expand(2, 3, 2, 2), masks).item() == pytest.approx(0.5 * 19.5 / 2)


# ------------------------------------------------------------ the W path's resamplers (eq. 14-19), eq. 22's order
def _shuffle_reference(z):
    """PixelShuffle(2) written out: ``out[n, c, 2i + a, 2j + b] = z[n, 4c + 2a + b, i, j]``."""
    n, c4, h, w = z.shape
    out = torch.empty(n, c4 // 4, 2 * h, 2 * w)
    for a in range(2):
        for b in range(2):
            out[:, :, a::2, b::2] = z[:, 2 * a + b::4]
    return out


def _unshuffle_reference(z):
    """invPixelShuffle(2) written out: ``out[n, 4c + 2a + b, i, j] = z[n, c, 2i + a, 2j + b]``."""
    n, c, h, w = z.shape
    out = torch.empty(n, 4 * c, h // 2, w // 2)
    for ch in range(c):
        for a in range(2):
            for b in range(2):
                out[:, 4 * ch + 2 * a + b] = z[:, ch, a::2, b::2]
    return out


def _bn_reference(x, bn, training):
    """BatchNorm: batch mean and biased variance over (N, H, W) in training, the running statistics in eval."""
    if training:
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return ((x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps) * bn.weight[:, None, None] +
            bn.bias[:, None, None])


@pytest.mark.parametrize('direction', ['up', 'down'])
@pytest.mark.parametrize('training', [True, False])
def test_w_path_stage_is_conv_then_conv_free_resampler_then_lpf(direction, training):
    """Eq. 14 / 18 with ``w_resample='paper'``: ``LPF(BN(PixelShuffle(f3x3(F))), I_NN)`` (up; the f3x3 makes 4C
    channels) and ``LPF(BN(invPixelShuffle(f3x3(F))), I_NN)`` (down; the f3x3 makes C/4): no conv in the resampler."""
    from fsr_arch.wnet_arch import WPathStage
    stage = _randomize(WPathStage(6, 8, 3, direction, resample='paper'), seed=4)
    bn = stage.resample[-1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(8))
        bn.running_var.copy_(torch.rand(8) + 0.5)
    assert not [m for m in stage.resample.modules() if isinstance(m, torch.nn.Conv2d)]
    assert stage.conv.out_channels == (32 if direction == 'up' else 2)
    x = torch.randn(2, 6, 6, 10)
    size = (12, 20) if direction == 'up' else (3, 5)
    parsing = torch.rand(2, 3, *size)
    seen = {}
    stage.lpf.register_forward_hook(lambda m, args, out: seen.update(F=args[0]))  # returns None: output kept
    stage.train(training)
    with torch.no_grad():
        out = stage(x, parsing)
        z = _conv(x, stage.conv)
        z = _shuffle_reference(z) if direction == 'up' else _unshuffle_reference(z)
        expected = _bn_reference(z, bn, training)
        torch.testing.assert_close(seen['F'], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out, _lpf_reference(expected, parsing, stage.lpf), rtol=1e-4, atol=1e-4)


def test_icnr_makes_the_shuffled_conv_a_nearest_upsampled_conv():
    """ICNR (Aitken et al. 2017): at initialisation ``PixelShuffle(f3x3(F))`` equals the nearest-neighbour 2x
    enlargement of one conv (the kernel and bias of sub-pixel 0 of each channel), in the W path and the decoder."""
    from fsr_arch.wnet_arch import UpBlock, WPathStage
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    for conv in (WPathStage(6, 8, 3, 'up', resample='paper').conv, UpBlock(6, icnr=True)[0]):
        with torch.no_grad():
            shuffled = _shuffle_reference(_conv(x, conv))
            one = F.conv2d(x, conv.weight[::4], conv.bias[::4], padding=1)
            nearest = one.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(shuffled, nearest)
    plain = UpBlock(6, icnr=False)[0]  # without ICNR the four sub-pixel kernels differ
    assert not torch.equal(plain.weight[0], plain.weight[1])


def _nearest(t, factor):
    """Nearest-neighbour resize by an integer factor (or 1 / factor: every factor-th pixel from the first)."""
    if factor >= 1:
        return t.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    step = round(1 / factor)
    return t[..., ::step, ::step]


def _bilinear_reference(t, factor):
    """Bilinear enlargement by an integer factor with half-pixel centres (``align_corners=False``), as matrices:
    output pixel o samples the input at ``max((o + 0.5) / factor - 0.5, 0)`` between its two neighbours (the last
    one repeated at the border)."""

    def matrix(n):
        m = torch.zeros(n * factor, n)
        for o in range(n * factor):
            u = max((o + 0.5) / factor - 0.5, 0.0)
            i0 = min(int(math.floor(u)), n - 1)
            i1, w = min(i0 + 1, n - 1), u - math.floor(u)
            m[o, i0] += 1 - w
            m[o, i1] += w
        return m

    return matrix(t.shape[-2]) @ t @ matrix(t.shape[-1]).T


def _wnet_reference(net, lq):
    """W-Net's forward written out from its (separately tested) modules: MATLAB bicubic I^d (BasicSR's imresize on
    numpy), the parsing maps enlarged bilinearly (default) or by nearest neighbour (eq. 13), eq. 12-19, eq. 22 in its
    order (SCABs and LPF at the scale of F, then Downsample), eq. 23, the skips and the global residual."""
    from basicsr.utils.matlab_functions import imresize
    s = net.upscale
    base = torch.stack(
        [torch.from_numpy(imresize(img.permute(1, 2, 0).double().numpy(), s)).permute(2, 0, 1).float() for img in lq])
    enlarge = _bilinear_reference if net.parsing_upsample == 'bilinear' else _nearest
    parsing = enlarge(net.parsing_block(lq), s)  # I_NN^1
    feat = torch.cat([base, parsing], dim=1)  # eq. 12
    levels = len(net.up_stages)
    for i, st in enumerate(net.up_stages, 1):  # eq. 14-17
        feat = st.lpf(st.resample(st.conv(feat)), enlarge(parsing, 2**i))
    for i, st in zip(range(levels - 1, -1, -1), net.down_stages):  # eq. 18-19
        feat = st.lpf(st.resample(st.conv(feat)), enlarge(parsing, 2**i))
    skips, par = [], parsing
    for st in net.encoder:  # eq. 22: F_feature = LPF(SCAB x 2 (F), I_NN^Down); Downsample(F_feature)
        feat = st.lpf(st.scabs(feat), par)
        skips.append(feat)
        feat = st.down(feat)
        par = _nearest(par, 0.5)
    for st in net.decoder:  # eq. 23, plus the encoder-decoder skips (an addition)
        feat = st(feat) + skips.pop()
    return net.conv_last(feat) + base  # the global residual (an addition) on the MATLAB bicubic image


@pytest.mark.parametrize('training,parsing', [(True, 'bilinear'), (False, 'bilinear'), (True, 'nearest')])
def test_wnet_forward_follows_eq22_order_and_matlab_bicubic(training, parsing):
    from fsr_arch.wnet_arch import TINY_CONFIG, WNet
    torch.manual_seed(0)
    cfg = {**TINY_CONFIG, 'num_enc_levels': 2, 'num_up_levels': 2, 'parsing_upsample': parsing}
    net = WNet(upscale=4, **cfg).train(training)
    assert (net.encoder_order, net.input_upsample) == ('eq22', 'matlab')  # the defaults
    lq = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(lq), _wnet_reference(net, lq), rtol=1e-4, atol=1e-4)
    # the earlier order (down-sampling first) is a different network output: the reference would catch a swap
    legacy = WNet(upscale=4, **cfg, encoder_order='down_first').train(training)
    legacy.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert (legacy(lq) - net(lq)).abs().max() > 1e-3


def _bilinear2x_reference(x):
    """Bilinear x2 (half-pixel centres, edges clamped) written out per axis: output 2i takes 3/4 of input i and 1/4
    of input i - 1, output 2i + 1 takes 3/4 of input i and 1/4 of input i + 1."""

    def axis(t, dim):
        n = t.shape[dim]
        prev = t.index_select(dim, torch.tensor([max(i - 1, 0) for i in range(n)]))
        nxt = t.index_select(dim, torch.tensor([min(i + 1, n - 1) for i in range(n)]))
        even, odd = 0.75 * t + 0.25 * prev, 0.75 * t + 0.25 * nxt
        return torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)

    return axis(axis(x, 2), 3)


@pytest.mark.parametrize('training', [True, False])
def test_decoder_bilinear_upsampler_and_the_shuffle_option(training):
    """``decoder_upsample='bilinear'`` (default): ``conv3x3(bilinear x2 (F))``, C -> C, no BatchNorm by default;
    ``'shuffle'``: ``PixelShuffle(conv3x3 C -> 4C (F))`` (+ BatchNorm with ``resample_norm='batch'``)."""
    from fsr_arch.wnet_arch import TINY_CONFIG, WNet
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6)
    net = _randomize(WNet(upscale=4, **TINY_CONFIG)).train(training)
    up = net.decoder[0][0]
    assert not [m for m in up.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        torch.testing.assert_close(up(x), _conv(_bilinear2x_reference(x), up[1]), rtol=1e-4, atol=1e-5)
    shuffle = _randomize(WNet(upscale=4, **TINY_CONFIG, decoder_upsample='shuffle', resample_norm='batch'))
    up = shuffle.decoder[0][0].train(training)
    with torch.no_grad():
        expected = _bn_reference(_shuffle_reference(_conv(x, up[0])), up[2], training)
        torch.testing.assert_close(up(x), expected, rtol=1e-4, atol=1e-5)
