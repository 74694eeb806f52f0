"""Golden tests for LAAT's defining equations (Li et al., IJCAI 2023, doi:10.24963/ijcai.2023/115): FIM (Fig. 3, and
Table 3's variants), RSA eq. 7-12 (region scores, top-k, gather, region MHSA, scatter-add, both readings of eq. 12's
up-sampling, every reduction over heads, Table 2's CSA), WFM eq. 17-19 (and Table 4's variants).

Each reference is the paper's equation written out in plain tensor code, float64, with Python loops over images, heads
and regions; the module's weights are copied into it (``.weight`` / ``.bias`` tensors only, never a submodule's
forward). The wavelet inverse is eq. 16 written as a sum of per-band scatters with the eq. 14 kernels, the transposed
convs as scatters of kernel taps, the depth-wise convs as sums of shifted maps.
"""
import math
import pytest
import torch

from fsr_arch.laat_arch import FIM, RSA, WFM, LearnedPosition

pytestmark = pytest.mark.usefixtures('one_thread')


# ----------------------------------------------------------------------------------------------- plain building blocks
def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def conv1x1(x, layer):
    return torch.einsum('bihw,oi->bohw', x, layer.weight[:, :, 0, 0]) + layer.bias[:, None, None]


def conv1x1_loops(x, layer):
    """eq. 7 at lambda = 1, a 1x1 conv of stride 1: ``out[o, y, x] = b[o] + sum_i W[o, i] in[i, y, x]``, in loops."""
    b, c_in, h, w = x.shape
    weight, bias = layer.weight, layer.bias
    out = torch.zeros(b, weight.shape[0], h, w, dtype=x.dtype)
    for n in range(b):
        for o in range(weight.shape[0]):
            for yy in range(h):
                for xx in range(w):
                    out[n, o, yy, xx] = bias[o] + sum(weight[o, i, 0, 0] * x[n, i, yy, xx] for i in range(c_in))
    return out


def depthwise3x3(x, layer):
    """3x3 depth-wise conv, zero padding 1: sum over the 9 taps of the shifted map."""
    h, w = x.shape[-2:]
    pad = torch.zeros(*x.shape[:2], h + 2, w + 2, dtype=x.dtype)
    pad[..., 1:-1, 1:-1] = x
    out = layer.bias[None, :, None, None].expand_as(x).clone()
    for dy in range(3):
        for dx in range(3):
            out = out + layer.weight[None, :, 0, dy, dx, None, None] * pad[..., dy:dy + h, dx:dx + w]
    return out


def channel_attention(x, ca):
    """RCAN / Fig. 3 channel attention: x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)."""
    c1, c2 = ca.attention[1], ca.attention[3]
    s = torch.relu(x.mean(dim=(2, 3)) @ c1.weight[:, :, 0, 0].T + c1.bias)
    s = torch.sigmoid(s @ c2.weight[:, :, 0, 0].T + c2.bias)
    return x * s[:, :, None, None]


def fim_ref(x, fim):
    """Fig. 3: x + CA(DW(x)) + DW(CA(x)); Table 3's variants drop a branch or use x + DW(x) / x + P."""
    if isinstance(fim, LearnedPosition):
        return x + fim.pos
    out = x.clone()
    if fim.mode in ('full', 'branch1'):
        out = out + channel_attention(depthwise3x3(x, fim.branch1[0]), fim.branch1[1])
    if fim.mode in ('full', 'branch2'):
        out = out + depthwise3x3(channel_attention(x, fim.branch2[0]), fim.branch2[1])
    if fim.mode == 'dwconv':
        out = out + depthwise3x3(x, fim.dwconv)
    return out


def transposed_conv(x, weight, bias, stride, padding):
    """(C_in, h, w) -> (C_out, ...): every input position adds ``x[i, y, x] * W[i, o, ky, kx]`` at
    ``(y * stride + ky - padding, x * stride + kx - padding)``."""
    c_in, h, w = x.shape
    k = weight.shape[-1]
    full = torch.zeros(weight.shape[1], (h - 1) * stride + k, (w - 1) * stride + k, dtype=x.dtype)
    for ky in range(k):
        for kx in range(k):
            full[:, ky:ky + (h - 1) * stride + 1:stride,
                 kx:kx + (w - 1) * stride + 1:stride] += torch.einsum('iyx,io->oyx', x, weight[:, :, ky, kx])
    out = full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]
    return out + bias[:, None, None]


def mhsa_maps(tokens, attn, heads):
    """eq. 9 on (n, C) tokens: per-head softmax(Q_h K_h^T / sqrt(D_h)) (written as exp / row sum), SA_h = AM_h V_h."""
    n, c = tokens.shape
    d = c // heads
    qkv = linear(tokens, attn.qkv)
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    maps, sas = [], []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        logits = q[:, sl] @ k[:, sl].T / math.sqrt(d)
        e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        am = e / e.sum(dim=1, keepdim=True)
        maps.append(am)
        sas.append(am @ v[:, sl])
    return maps, sas


def rsa_ref(rsa, x, head_reduction='sum', up_mode='single', region_selection=True):
    """RSA eq. 7-12 on (B, C, H, W), image by image; returns the output and the refined positions per image."""
    b, c, h, w = x.shape
    lam, heads = rsa.lam, rsa.coarse_attn.num_heads
    d = c // heads
    out = torch.empty_like(x)
    if lam == 1:  # CSA (Sec. 4.2): eq. 7's 1x1 conv, FIM, MHSA over the whole map, added to F_input, then DWConv.
        x_hat = fim_ref(x if rsa.down is None else conv1x1_loops(x, rsa.down), rsa.fim)
        for i in range(b):
            _, sas = mhsa_maps(x_hat[i].reshape(c, -1).T, rsa.coarse_attn, heads)
            out_c = linear(torch.cat(sas, dim=1), rsa.coarse_attn.proj)
            out[i] = x[i] + out_c.T.reshape(c, h, w)
        return depthwise3x3(out, rsa.dwconv), None
    # eq. 7: lambda x lambda conv with stride lambda, written as a sum over the patch taps.
    coarse = torch.zeros(b, c, h // lam, w // lam, dtype=x.dtype) + rsa.down.bias[:, None, None]
    for dy in range(lam):
        for dx in range(lam):
            coarse += torch.einsum('bihw,oi->bohw', x[..., dy::lam, dx::lam], rsa.down.weight[:, :, dy, dx])
    coarse = fim_ref(coarse, rsa.fim_coarse)  # eq. 8
    x_hat = fim_ref(x, rsa.fim) if region_selection else None
    hc, wc = coarse.shape[-2:]
    k = int(math.floor(math.sqrt(h * w) / lam))  # eq. 10
    indices = []
    for i in range(b):
        maps, sas = mhsa_maps(coarse[i].reshape(c, -1).T, rsa.coarse_attn, heads)  # eq. 9
        out_c = linear(torch.cat(sas, dim=1), rsa.coarse_attn.proj)
        # eq. 12's Upsample of Output_c.
        up = out_c.T.reshape(c, hc, wc)
        if up_mode == 'single':
            up = transposed_conv(up, rsa.up.weight, rsa.up.bias, stride=lam, padding=0)
        else:
            for layer in rsa.up:
                up = transposed_conv(up, layer.weight, layer.bias, stride=2, padding=1)
        out_f = x[i].clone()
        if region_selection:
            # eq. 10: Sum(AM) along the penultimate (query) dimension, per head: M x n_c scores.
            col = [[sum(maps[hd][qi, j].item() for qi in range(hc * wc)) for j in range(hc * wc)]
                   for hd in range(heads)]
            if head_reduction == 'sum':
                groups = [[sum(col[hd][j] for hd in range(heads)) for j in range(hc * wc)]]
            elif head_reduction == 'max':
                groups = [[max(col[hd][j] for hd in range(heads)) for j in range(hc * wc)]]
            else:
                groups = col
            positions = []
            for score in groups:  # Topk, then GetIndex: coarse token j -> its lambda x lambda footprint in F_input
                chosen = sorted(range(hc * wc), key=lambda j: -score[j])[:k]
                positions.append([(j // wc * lam + dy, j % wc * lam + dx) for j in chosen for dy in range(lam)
                                  for dx in range(lam)])
            indices.append([[py * w + px for py, px in pos] for pos in positions])
            # eq. 11: SelectByIndex on \hat F_input, MHSA, AddByIndex into F_input.
            if head_reduction != 'per_head':
                tokens = torch.stack([x_hat[i, :, py, px] for py, px in positions[0]])
                _, sas = mhsa_maps(tokens, rsa.region_attn, heads)
                refined = linear(torch.cat(sas, dim=1), rsa.region_attn.proj)
                for t, (py, px) in enumerate(positions[0]):
                    out_f[:, py, px] += refined[t]
            else:  # head h attends over its own regions; its share of W_o and 1/M of the bias go back there
                for hd in range(heads):
                    tokens = torch.stack([x_hat[i, :, py, px] for py, px in positions[hd]])
                    _, sas = mhsa_maps(tokens, rsa.region_attn, heads)
                    w_o = rsa.region_attn.proj.weight[:, hd * d:(hd + 1) * d]
                    refined = sas[hd] @ w_o.T + rsa.region_attn.proj.bias / heads
                    for t, (py, px) in enumerate(positions[hd]):
                        out_f[:, py, px] += refined[t]
        out[i] = out_f + up
    out = depthwise3x3(out, rsa.dwconv)  # eq. 12
    if not indices:
        return out, None
    index = torch.tensor(indices)
    return out, (index if head_reduction == 'per_head' else index[:, 0])


def haar_iwt_ref(ll, lh, hl, hh):
    """eq. 16: sum of the four bands' stride-2 transposed convs with the eq. 14 kernels (scatter of 2x2 blocks)."""
    kernels = {
        'll': [[1, 1], [1, 1]],
        'lh': [[-1, 1], [-1, 1]],
        'hl': [[-1, -1], [1, 1]],
        'hh': [[1, -1], [-1, 1]],
    }
    n, c, h, w = ll.shape
    out = torch.zeros(n, c, 2 * h, 2 * w, dtype=ll.dtype)
    for band, name in ((ll, 'll'), (lh, 'lh'), (hl, 'hl'), (hh, 'hh')):
        for a in range(2):
            for bb in range(2):
                out[..., a::2, bb::2] += band * kernels[name][a][bb] / 2
    return out


def wfm_ref(wfm, x, ll, lh, hl):
    """eq. 17-19: F_L, F_R = Split(F) (first / second half); WIT(LL, LH, HL, HH = F_L); 4x4 s2 transposed conv of F_R;
    1x1 conv of their concatenation. Table 4: 'nosplit' (all of F is HH, no up-sampling branch), 'concat'."""
    if wfm.mode == 'nosplit':
        return conv1x1(haar_iwt_ref(ll, lh, hl, x), wfm.fuse)
    half = x.shape[1] // 2
    f_l, f_r = x[:, :half], x[:, half:]
    up = torch.stack([transposed_conv(f, wfm.up.weight, wfm.up.bias, stride=2, padding=1) for f in f_r])
    if wfm.mode == 'split':
        left = haar_iwt_ref(ll, lh, hl, f_l)
    else:
        left = torch.cat([f_l, ll, lh, hl], dim=1).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return conv1x1(torch.cat([left, up], dim=1), wfm.fuse)


def _randomize(module, seed):
    """Weights away from their initial values (e.g. non-zero biases) so that every term of an equation shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize('mode', ['full', 'branch1', 'branch2', 'dwconv'])
def test_fim_is_fig3(mode):
    fim = _randomize(FIM(8, reduction=2, mode=mode).double(), 0)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fim(x), fim_ref(x, fim), rtol=1e-12, atol=1e-12)


def test_learned_position_adds_p_and_interpolates_elsewhere():
    pos = _randomize(LearnedPosition(4, (6, 8)).double(), 1)
    x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pos(x), x + pos.pos, rtol=0, atol=0)
        assert pos(torch.zeros(1, 4, 12, 16, dtype=torch.float64)).shape == (1, 4, 12, 16)


@pytest.mark.parametrize('mode', ['split', 'nosplit', 'concat'])
def test_wfm_is_eq17_to_19(mode):
    dim = 8
    wfm = _randomize(WFM(dim, mode).double(), 2)
    band = dim if mode == 'nosplit' else dim // 2
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, dim, 3, 4, generator=gen, dtype=torch.float64)
    ll, lh, hl = (torch.randn(2, band, 3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        out = wfm(x, ll, lh, hl)
    assert out.shape == (2, dim // 2, 6, 8)
    torch.testing.assert_close(out, wfm_ref(wfm, x, ll, lh, hl), rtol=1e-12, atol=1e-12)


def _rsa(seed, **kwargs):
    torch.manual_seed(seed)
    rsa = RSA(8, 2, lam=2, fim_reduction=2, **kwargs).double()
    _randomize(rsa, seed)
    rsa.record_index = True
    return rsa


@pytest.mark.parametrize('head_reduction', ['sum', 'max', 'per_head'])
@pytest.mark.parametrize('up_mode', ['single', 'stacked'])
@pytest.mark.parametrize('use_sdpa', [False, True])
def test_rsa_is_eq7_to_12(head_reduction, up_mode, use_sdpa):
    rsa = _rsa(4, head_reduction=head_reduction, up_mode=up_mode, use_sdpa=use_sdpa, block_elems=40)
    x = torch.randn(3, 8, 8, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        out = rsa(x)
        ref, index = rsa_ref(rsa, x, head_reduction, up_mode)
    k = int(math.sqrt(8 * 12) // 2)  # eq. 10: 4 regions of 2x2 positions
    assert rsa.last_index.shape == ((3, 2, k * 4) if head_reduction == 'per_head' else (3, k * 4))
    assert torch.equal(rsa.last_index, index)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    if head_reduction == 'per_head':  # the heads disagree somewhere: the per-head reading is not 'sum' in disguise
        assert not torch.equal(index[:, 0], index[:, 1])


def test_head_reductions_choose_different_regions():
    """The three readings of eq. 10 are different networks: on one input they do not all pick the same regions."""
    x = torch.randn(4, 8, 8, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    picks = {}
    for mode in ('sum', 'max', 'per_head'):
        rsa = _rsa(7, head_reduction=mode)
        with torch.no_grad():
            rsa(x)
        picks[mode] = rsa.last_index.sort(dim=-1).values
    assert not torch.equal(picks['sum'], picks['max'])
    assert not all(torch.equal(picks['sum'], picks['per_head'][:, h]) for h in range(2))


def test_table2_csa_is_coarse_attention_without_regions():
    rsa = _rsa(8, region_selection=False)
    assert rsa.fim is None and not hasattr(rsa, 'region_attn')
    x = torch.randn(2, 8, 8, 12, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rsa(x), rsa_ref(rsa, x, region_selection=False)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('csa_downsample', [True, False])
def test_csa_level_is_mhsa_on_the_fim_output(csa_downsample):
    torch.manual_seed(10)
    rsa = _randomize(RSA(8, 2, lam=1, fim_reduction=2, csa_downsample=csa_downsample).double(), 10)
    # eq. 7 at lambda = 1: a 1x1 conv of stride 1 (C' x C' weights and C' biases), or none when left out
    assert (rsa.down is not None) == csa_downsample
    if csa_downsample:
        assert rsa.down.weight.shape == (8, 8, 1, 1) and rsa.down.stride == (1, 1)
    x = torch.randn(2, 8, 4, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rsa(x), rsa_ref(rsa, x)[0], rtol=1e-10, atol=1e-10)


def test_csa_eq7_at_lambda_1_on_a_tiny_input():
    """CSA = DWConv(F + W_o MHSA(FIM(W F + b))) written out on 2 channels x 2x3 positions, one head, by hand."""
    rsa = _randomize(RSA(2, 1, lam=1, fim_reduction=1).double(), 16)
    x = torch.randn(1, 2, 2, 3, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    w, bias = rsa.down.weight[:, :, 0, 0], rsa.down.bias
    coarse = torch.stack([bias[o] + w[o, 0] * x[0, 0] + w[o, 1] * x[0, 1] for o in range(2)])[None]  # eq. 7
    tokens = fim_ref(coarse, rsa.fim)[0].reshape(2, 6).T  # eq. 8, (6 positions, 2 channels)
    q, k, v = (
        tokens @ rsa.coarse_attn.qkv.weight[2 * j:2 * j + 2].T + rsa.coarse_attn.qkv.bias[2 * j:2 * j + 2]
        for j in range(3))
    logits = q @ k.T / math.sqrt(2)  # eq. 9, D_h = 2
    out_c = (torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)) @ v
    out_c = out_c @ rsa.coarse_attn.proj.weight.T + rsa.coarse_attn.proj.bias
    ref = depthwise3x3(x + out_c.T.reshape(1, 2, 2, 3), rsa.dwconv)  # eq. 12: Output_f = F_input, no Upsample
    with torch.no_grad():
        torch.testing.assert_close(rsa(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('region_selection', [True, False])
def test_table3_position_parameters_in_rsa(region_selection):
    torch.manual_seed(12)
    rsa = _randomize(RSA(8, 2, lam=2, fim_mode='position', pos_size=(8, 12), region_selection=region_selection), 12)
    rsa = rsa.double()
    assert rsa.fim_coarse.pos.shape == (1, 8, 4, 6)
    x = torch.randn(2, 8, 8, 12, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    with torch.no_grad():
        out = rsa(x)
        ref = rsa_ref(rsa, x, region_selection=region_selection)[0]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_per_head_with_one_head_is_the_sum_reading():
    x = torch.randn(2, 8, 8, 12, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    outs = []
    for mode in ('sum', 'per_head'):
        torch.manual_seed(15)
        rsa = _randomize(RSA(8, 1, lam=2, fim_reduction=2, head_reduction=mode).double(), 15)
        with torch.no_grad():
            outs.append(rsa(x))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
