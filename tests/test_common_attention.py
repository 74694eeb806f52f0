"""``fsr_arch.common.ConvSelfAttention`` against the papers' attention written out in plain tensor code.

AMINet eq. 2-6: ``Q, K, V = F_dw3(F_conv1(X))``, ``X_w = Softmax(Q^ . K^ / sqrt(d)) . V^`` with Q^ (C x HW),
K^ (HW x C), ``X_sa = F_conv1(R(X_w))``; W-Net eq. 20-21: ``f_1x1(f_dconv3x3(F))`` and the same softmax. The reference
below copies the module's conv weights and computes every step by hand: the 1x1 convs as sums over input channels, the
3x3 depth-wise convs as sums of nine shifted copies of the zero-padded input, the heads as channel slices, the softmax
as ``exp(s - max) / sum exp(s - max)`` over the keys (for each query row), the scaling as stated (1/sqrt(d) with d the
length of the dot products; or L2-normalized q, k times the per-head temperature). Float64 throughout.

Bugs this file catches (each planted once in a copy of ``common.py``, see the helper's report): softmax over the query
axis instead of the keys; 1/sqrt of the other dimension (C/heads instead of H*W and back); no scaling; the temperature
dropped or the L2 norm taken along the wrong axis; the conv order swapped; q and k swapped; in ``dw_first``, each of
q, k, v mixing the depth-wise maps of only a third of the input channels (wrong grouping).
"""
import itertools
import math
import pytest
import torch

from fsr_arch.common import ConvSelfAttention

ORDERS = ('pw_first', 'dw_first')
MODES = ('channel', 'spatial')
SCALINGS = ('sqrt_d', 'l2norm')


def conv1x1(x, weight, groups=1):
    """Plain 1x1 conv: out[o] = sum_i w[o, i] x[g(o) * cin + i] with cin input channels per group."""
    n, c, h, w = x.shape
    cout = weight.shape[0]
    cin = c // groups
    per_group = cout // groups
    out = x.new_zeros(n, cout, h, w)
    for o in range(cout):
        g = o // per_group
        for i in range(cin):
            out[:, o] += weight[o, i, 0, 0] * x[:, g * cin + i]
    return out


def dwconv3x3(x, weight):
    """Plain 3x3 depth-wise conv, zero padding 1; output channel o reads input channel o // (Cout / Cin)."""
    n, c, h, w = x.shape
    cout = weight.shape[0]
    mult = cout // c
    xp = x.new_zeros(n, c, h + 2, w + 2)
    xp[:, :, 1:-1, 1:-1] = x
    out = x.new_zeros(n, cout, h, w)
    for o in range(cout):
        for dy, dx in itertools.product(range(3), range(3)):
            out[:, o] += weight[o, 0, dy, dx] * xp[:, o // mult, dy:dy + h, dx:dx + w]
    return out


def softmax_rows(s):
    """Softmax of each row (over the last axis), written out."""
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def reference_attention(x, weights, num_heads, order='pw_first', mode='channel', scaling='sqrt_d', temperature=None):
    """The papers' attention in plain tensor code.

    Args:
        x (Tensor): (N, C, H, W).
        weights (dict): ``pw`` (the 1x1 conv producing or mixing q, k, v), ``dw`` (the 3x3 depth-wise conv),
            ``out`` (the 1x1 output projection) weights, as in the module.
        num_heads (int): Heads (contiguous channel slices of q, k, v).
        order (str): ``pw_first``: dw3(pw1(x)) (AMINet eq. 2-4); ``dw_first``: pw1(dw3(x)) (W-Net eq. 20, the 1x1
            mixes the channels of each of q, k, v separately).
        mode (str): ``channel``: per head, Q^ is (C/h x HW), the map (C/h x C/h); ``spatial``: the map is (HW x HW).
        scaling (str): ``sqrt_d``: scores / sqrt(length of the dot products); ``l2norm``: q and k rows normalized to
            unit length along the dot product, scores times ``temperature[head]``.
        temperature (Tensor): (heads,) for ``l2norm``.
    """
    n, c, h, w = x.shape
    if order == 'pw_first':
        qkv = dwconv3x3(conv1x1(x, weights['pw']), weights['dw'])
    else:
        # eq. 20, for each of Q, K, V (j = 0, 1, 2): its own depth-wise 3x3 kernel on every input channel (the module's
        # depth-wise output 3i + j is input channel i's kernel j), then its own 1x1 conv over all C of those maps.
        dw = dwconv3x3(x, weights['dw'])
        qkv = torch.cat([conv1x1(dw[:, j::3], weights['pw'][j * c:(j + 1) * c]) for j in range(3)], dim=1)
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    dh = c // num_heads
    out = x.new_zeros(n, c, h * w)
    for b in range(n):
        for head in range(num_heads):
            sl = slice(head * dh, (head + 1) * dh)
            qh, kh, vh = (t[b, sl].reshape(dh, h * w) for t in (q, k, v))  # (C/h, HW)
            if mode == 'spatial':
                qh, kh, vh = qh.T, kh.T, vh.T  # (HW, C/h): one row per position
            if scaling == 'l2norm':
                qh = qh / qh.norm(dim=1, keepdim=True)
                kh = kh / kh.norm(dim=1, keepdim=True)
                scores = (qh @ kh.T) * temperature[head]
            else:
                scores = (qh @ kh.T) / math.sqrt(qh.shape[1])
            res = softmax_rows(scores) @ vh
            out[b, sl] = res if mode == 'channel' else res.T
    return conv1x1(out.reshape(n, c, h, w), weights['out'])


def module_weights(attn):
    """The module's conv weights, copied (the reference does its own arithmetic with them)."""
    return {
        k: getattr(attn, name).weight.detach().clone()
        for k, name in (('pw', 'qkv'), ('dw', 'qkv_dwconv'), ('out', 'project_out'))
    }


def make_attention(order, mode, scaling, num_feat=6, num_heads=2, seed=0):
    torch.manual_seed(seed)
    attn = ConvSelfAttention(num_feat, num_heads, order=order, mode=mode, scaling=scaling).double()
    with torch.no_grad():
        for p in attn.parameters():  # weights large enough that the softmax is far from uniform
            p.normal_(0, 0.4)
        if scaling == 'l2norm':
            attn.temperature.copy_(torch.tensor([0.7, 3.0], dtype=torch.float64).view(2, 1, 1))
    return attn


@pytest.mark.parametrize('order,mode,scaling', list(itertools.product(ORDERS, MODES, SCALINGS)))
def test_matches_plain_reference(order, mode, scaling):
    """H*W (20) differs from C/heads (3) and H from W, so a wrong d, a transposition or a wrong softmax axis shows."""
    attn = make_attention(order, mode, scaling)
    torch.manual_seed(1)
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    temperature = attn.temperature.flatten() if scaling == 'l2norm' else None
    with torch.no_grad():
        got = attn(x)
        ref = reference_attention(x, module_weights(attn), 2, order, mode, scaling, temperature)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('mode', MODES)
def test_softmax_axis_and_scaling_matter_on_this_input(mode):
    """Self-check of the test input: the softmax over the query axis, a scaling by the other dimension and no scaling
    each move the attention map by far more than the golden test's tolerance, so that test can see those bugs."""
    attn = make_attention('pw_first', mode, 'sqrt_d')
    torch.manual_seed(1)
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        qkv = attn.qkv_dwconv(attn.qkv(x))
    q, k = qkv[:, :3].reshape(2, 3, 20), qkv[:, 6:9].reshape(2, 3, 20)
    if mode == 'spatial':
        q, k = q.transpose(-2, -1), k.transpose(-2, -1)
    d, d_other = q.shape[-1], q.shape[-2]
    scores = q @ k.transpose(-2, -1)
    right = (scores / math.sqrt(d)).softmax(-1)
    assert (right - (scores / math.sqrt(d)).softmax(-2)).abs().max() > 0.1
    assert (right - (scores / math.sqrt(d_other)).softmax(-1)).abs().max() > 0.1
    assert (right - scores.softmax(-1)).abs().max() > 0.1


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match='divisible'):
        ConvSelfAttention(6, 4)
    with pytest.raises(ValueError, match="scaling='temp'"):
        ConvSelfAttention(6, 2, scaling='temp')
