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
