"""Golden tests of TANet's defining equations against plain tensor code written from the paper.

Each reference below writes an equation of Wang et al. (AAAI 2022) out with explicit tensor operations (matrix
products, an explicit softmax, explicit LayerNorm/GELU, loops over patches and heads) and the module's weights copied
by name; it never calls the module's own submodules. The modules' weights are re-drawn at a scale where every term of
an equation changes the output (BasicSR's x0.1 residual init would make some terms tiny), so a dropped or sign-flipped
term, swapped inputs, a transposed token order or a softmax over the wrong axis fail the comparison.

- eq. 9-11: :class:`~fsr_arch.tanet_arch.TransformerBlock` (with the documented pre-LayerNorms) and
  :class:`~fsr_arch.tanet_arch.MHSA`.
- the paper's tokens (``token_mode='window'``): each 4x4 patch a length-16 sequence of C-dim pixel tokens, row-major,
  plus a 16 x C position encoding; attention within the patch; tokens put back at their pixels (GLAM's reshape).
- the ``'global'`` deviation: one token per patch (embedding of the flattened 4x4xC patch), attention over all patches.
- eq. 12-16: :class:`~fsr_arch.tanet_arch.SMFM`; eq. 17: :class:`~fsr_arch.tanet_arch.SMFN`.
- eq. 3-6: :class:`~fsr_arch.tanet_arch.GLAM`; eq. 1-8: the whole :class:`~fsr_arch.tanet_arch.TANet`.
"""
import math
import pytest
import torch

from fsr_arch.tanet_arch import GLAM, MHSA, SMFM, SMFN, GlobalPath, TANet, TransformerBlock

TOL = dict(rtol=1e-9, atol=1e-10)  # float64 throughout: any formula difference is far above rounding
D = torch.float64


def redraw(module, seed=0, scale=0.3):
    """Give every parameter fresh N(0, scale^2) values (LayerNorm gains around 1) so every term is material."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1 + noise if ('norm' in name and name.endswith('weight')) else noise)
    return module.double().eval()


def P(module):
    """Parameters by name (the copied weights)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ---------------------------------------------------------------------------------------------------- plain references
def linear(x, w, b):
    return x @ w.t() + b


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu)**2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def softmax_rows(s):
    e = torch.exp(s - s.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def conv1x1(x, w, b):
    """1x1 convolution as a matrix product over channels: (n, ci, h, w) -> (n, co, h, w)."""
    return torch.einsum('oi,nihw->nohw', w[:, :, 0, 0], x) + b[None, :, None, None]


def conv3x3(x, w, b):
    """3x3 'same' convolution (zero padding) as a sum of 9 shifted 1x1 products."""
    n, c, h, wd = x.shape
    xp = torch.zeros(n, c, h + 2, wd + 2, dtype=x.dtype)
    xp[:, :, 1:-1, 1:-1] = x
    out = b[None, :, None, None].expand(n, -1, h, wd).clone()
    for dy in range(3):
        for dx in range(3):
            out = out + torch.einsum('oi,nihw->nohw', w[:, :, dy, dx], xp[:, :, dy:dy + h, dx:dx + wd])
    return out


def pixel_shuffle(x, r):
    """(n, c*r*r, h, w) -> (n, c, h*r, w*r): channel c*r*r + a*r + b goes to pixel (h*r + a, w*r + b)."""
    n, crr, h, w = x.shape
    c = crr // (r * r)
    out = torch.zeros(n, c, h * r, w * r, dtype=x.dtype)
    for a in range(r):
        for b in range(r):
            out[:, :, a::r, b::r] = x[:, [ci * r * r + a * r + b for ci in range(c)]]
    return out


def ref_mhsa(x, p, heads, pre=''):
    """Eq. 9-10: Q, K, V = W_Q F, W_K F, W_V F; per head softmax(Q K^T / sqrt(d)) V; heads concatenated, projected."""
    n, t, c = x.shape
    d = c // heads
    w, b = p[pre + 'qkv.weight'], p[pre + 'qkv.bias']  # rows: [W_Q; W_K; W_V], each split into heads of d rows
    outs = []
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        q = linear(x, w[:c][rows], b[:c][rows])
        k = linear(x, w[c:2 * c][rows], b[c:2 * c][rows])
        v = linear(x, w[2 * c:][rows], b[2 * c:][rows])
        attn = softmax_rows(q @ k.transpose(1, 2) / math.sqrt(d))  # (n, queries, keys): normalized over keys
        outs.append(attn @ v)
    return linear(torch.cat(outs, -1), p[pre + 'proj.weight'], p[pre + 'proj.bias'])


def ref_block(x, p, heads, pre=''):
    """Eq. 11 with the pre-LayerNorms: F_w = MHSA(LN1(F)); F^n = H_mlp(LN2(F_w + F)) + F_w + F."""
    f_w = ref_mhsa(layer_norm(x, p[pre + 'norm1.weight'], p[pre + 'norm1.bias']), p, heads, pre + 'attn.')
    s = f_w + x
    z = layer_norm(s, p[pre + 'norm2.weight'], p[pre + 'norm2.bias'])
    mlp = linear(
        gelu(linear(z, p[pre + 'mlp.0.weight'], p[pre + 'mlp.0.bias'])), p[pre + 'mlp.2.weight'], p[pre + 'mlp.2.bias'])
    return mlp + f_w + x


def ref_blocks_and_norm(t, p, heads, num_blocks, pre=''):
    for i in range(num_blocks):
        t = ref_block(t, p, heads, f'{pre}blocks.{i}.')
    if pre + 'norm.weight' in p:
        t = layer_norm(t, p[pre + 'norm.weight'], p[pre + 'norm.bias'])
    return t


def reflect_index(i, n):
    return 2 * (n - 1) - i if i >= n else i


def pad_bottom_right(x, ps):
    """Reflect-pad (n, c, h, w) at the bottom/right to multiples of ps by explicit index mirroring."""
    h, w = x.shape[-2:]
    hp, wp = -(-h // ps) * ps, -(-w // ps) * ps
    rows = [reflect_index(i, h) for i in range(hp)]
    cols = [reflect_index(j, w) for j in range(wp)]
    return x[:, :, rows][:, :, :, cols]


def ref_global_path_window(x, p, heads, num_blocks, ps=4, pre=''):
    """The paper's tokens: every ps x ps patch is a sequence of ps*ps C-dim pixel tokens in row-major order plus the
    learnable encoding of the ps*ps positions; blocks; tokens written back to their pixels."""
    n, c, h, w = x.shape
    xp = pad_bottom_right(x, ps)
    out = torch.zeros_like(xp)
    for i in range(xp.shape[-2] // ps):
        for j in range(xp.shape[-1] // ps):
            seq = torch.stack([xp[:, :, i * ps + a, j * ps + b] for a in range(ps) for b in range(ps)], 1)  # (n,16,c)
            seq = ref_blocks_and_norm(seq + p[pre + 'pos_embed'], p, heads, num_blocks, pre)
            for k in range(ps * ps):
                out[:, :, i * ps + k // ps, j * ps + k % ps] = seq[:, k]
    return out[:, :, :h, :w]


def ref_global_path_global(x, p, heads, num_blocks, ps=4, pre=''):
    """The 'global' deviation: token (i, j) = W_e vec(patch (i, j)) + b_e + pos[i, j] (vec in (c, row, col) order);
    attention over all tokens in row-major patch order; W_u t + b_u pixel-shuffled back to the patch."""
    n, c, h, w = x.shape
    xp = pad_bottom_right(x, ps)
    gh, gw = xp.shape[-2] // ps, xp.shape[-1] // ps
    w_e = p[pre + 'embed.weight'].reshape(c, -1)
    toks = []
    for i in range(gh):
        for j in range(gw):
            vec = xp[:, :, i * ps:(i + 1) * ps, j * ps:(j + 1) * ps].reshape(n, -1)
            toks.append(linear(vec, w_e, p[pre + 'embed.bias']) + p[pre + 'pos_embed'][0, :, i, j])
    t = ref_blocks_and_norm(torch.stack(toks, 1), p, heads, num_blocks, pre)
    un = linear(t, p[pre + 'unembed.0.weight'][:, :, 0, 0], p[pre + 'unembed.0.bias'])  # (n, gh*gw, c*ps*ps)
    grid = un.transpose(1, 2).reshape(n, c * ps * ps, gh, gw)
    return pixel_shuffle(grid, ps)[:, :, :h, :w]


def ref_smfm(x, p, num_rb, pre=''):
    """Eq. 12-16: F_res = RB_I(...RB_1(F)); w_cal = sigmoid(W2 W1 F) (1x1 convs, eq. 13); F_cal = w_cal * F (eq. 14);
    F_fused = W_f [F_res, F_cal] (eq. 15); F^g = F_res + F_fused + F (eq. 16)."""
    res = x
    for i in range(num_rb):  # RB (Fig. 3 B): conv3x3 - ReLU - conv3x3 + identity
        q = f'{pre}body.{i}.'
        res = res + conv3x3(
            torch.relu(conv3x3(res, p[q + 'conv1.weight'], p[q + 'conv1.bias'])), p[q + 'conv2.weight'],
            p[q + 'conv2.bias'])
    z = conv1x1(x, p[pre + 'calibration.0.weight'], p[pre + 'calibration.0.bias'])
    w_cal = torch.sigmoid(conv1x1(z, p[pre + 'calibration.1.weight'], p[pre + 'calibration.1.bias']))
    f_cal = w_cal * x
    fused = conv1x1(torch.cat([res, f_cal], 1), p[pre + 'fusion.weight'], p[pre + 'fusion.bias'])
    return res + fused + x


def ref_glam(f_global, f_local, p, pre=''):
    """Eq. 3-6: F_gl = W_5 [W_3 F_global + b_3, conv3x3(F_local)] + b_5."""
    g = conv1x1(f_global, p[pre + 'conv_global.weight'], p[pre + 'conv_global.bias'])
    loc = conv3x3(f_local, p[pre + 'conv_local.weight'], p[pre + 'conv_local.bias'])
    return conv1x1(torch.cat([g, loc], 1), p[pre + 'conv_fuse.weight'], p[pre + 'conv_fuse.bias'])


# ------------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize('use_sdpa', [False, True])
def test_mhsa_eq9_10(use_sdpa):
    torch.manual_seed(0)
    m = redraw(MHSA(8, 2, use_sdpa=use_sdpa))
    x = torch.randn(3, 5, 8, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_mhsa(x, P(m), heads=2), **TOL)


def test_transformer_block_eq11():
    torch.manual_seed(0)
    m = redraw(TransformerBlock(8, 2, mlp_ratio=2.0, use_sdpa=False))
    x = torch.randn(2, 6, 8, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_block(x, P(m), heads=2), **TOL)


@pytest.mark.parametrize('hw', [(8, 12), (7, 6)])  # (7, 6): reflect-padded to 8x8, cropped back
def test_global_path_window_tokens(hw):
    """The paper's reading: length-16 pixel-token sequences per 4x4 patch, put back at their pixels."""
    gp = redraw(GlobalPath(8, num_blocks=2, num_heads=2, token_mode='window', mlp_ratio=2.0, use_sdpa=False), seed=1)
    x = torch.randn(2, 8, *hw, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(gp(x), ref_global_path_window(x, P(gp), heads=2, num_blocks=2), **TOL)


def test_global_path_window_attends_only_within_a_patch():
    gp = redraw(GlobalPath(8, num_blocks=1, num_heads=2, token_mode='window', mlp_ratio=2.0), seed=2)
    x = torch.randn(1, 8, 8, 8, dtype=D)
    y = x.clone()
    y[:, :, 4:, 4:] += torch.randn(1, 8, 4, 4, dtype=D)  # change only the bottom-right patch
    with torch.no_grad():
        a, b = gp(x), gp(y)
    torch.testing.assert_close(a[:, :, :4], b[:, :, :4])
    torch.testing.assert_close(a[:, :, :, :4], b[:, :, :, :4])
    assert (a[:, :, 4:, 4:] - b[:, :, 4:, 4:]).abs().max() > 1e-2


@pytest.mark.parametrize('hw', [(8, 12), (7, 6)])
def test_global_path_global_tokens(hw):
    """The 'global' deviation: one embedded token per patch, attention over all of them."""
    grid = (-(-hw[0] // 4), -(-hw[1] // 4))
    gp = redraw(
        GlobalPath(8, num_blocks=2, num_heads=2, token_mode='global', pos_grid=grid, mlp_ratio=2.0, use_sdpa=False),
        seed=3)
    x = torch.randn(2, 8, *hw, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(gp(x), ref_global_path_global(x, P(gp), heads=2, num_blocks=2), **TOL)


def test_global_path_without_final_norm():
    gp = redraw(GlobalPath(8, num_blocks=1, num_heads=2, mlp_ratio=2.0, use_sdpa=False, global_norm=False), seed=4)
    assert not any(k.startswith('norm.') for k in P(gp))
    x = torch.randn(1, 8, 4, 8, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(gp(x), ref_global_path_window(x, P(gp), heads=2, num_blocks=1), **TOL)


def test_smfm_eq12_16():
    m = redraw(SMFM(6, num_rb=2), seed=5)
    x = torch.randn(2, 6, 5, 7, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_smfm(x, P(m), num_rb=2), **TOL)


def test_smfn_eq17_cascade():
    m = redraw(SMFN(4, num_smfm=3, num_rb=1), seed=6, scale=0.2)
    x = torch.randn(1, 4, 5, 6, dtype=D)
    p = P(m)
    ref = x
    for g in range(3):
        ref = ref_smfm(ref, p, num_rb=1, pre=f'body.{g}.')
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, **TOL)


def test_glam_eq3_6():
    m = redraw(GLAM(6), seed=7)
    f_global, f_local = torch.randn(2, 6, 5, 7, dtype=D), torch.randn(2, 6, 5, 7, dtype=D)
    ref = ref_glam(f_global, f_local, P(m))
    with torch.no_grad():
        torch.testing.assert_close(m(f_global, f_local), ref, **TOL)
        assert (m(f_local, f_global) - ref).abs().max() > 1e-2  # the two inputs are not interchangeable


@pytest.mark.parametrize('token_mode,upscale,hw', [('window', 4, (8, 8)), ('window', 8, (7, 6)),
                                                   ('global', 4, (8, 12))])
def test_tanet_eq1_8(token_mode, upscale, hw):
    """The whole network: F_sh = conv3x3(I_LR) (eq. 1); F_gl = GLAM(H_global(F_sh), H_local(F_sh)) (eq. 2-6);
    I_SR = conv3x3(H_up(F_gl + F_sh)) (eq. 7-8), H_up = log2(s) x [conv3x3 C->4C, pixel shuffle x2]."""
    grid = (-(-hw[0] // 4), -(-hw[1] // 4))
    net = TANet(
        upscale=upscale,
        num_feat=8,
        num_smfm=2,
        num_rb=1,
        num_blocks=1,
        num_heads=2,
        token_mode=token_mode,
        pos_grid=grid,
        mlp_ratio=2.0,
        use_sdpa=False)
    redraw(net, seed=8, scale=0.2)
    p = P(net)
    x = torch.rand(1, 3, *hw, dtype=D)
    f_sh = conv3x3(x, p['conv_shallow.weight'], p['conv_shallow.bias'])
    gp = {k[len('global_path.'):]: v for k, v in p.items() if k.startswith('global_path.')}
    ref_gp = ref_global_path_window if token_mode == 'window' else ref_global_path_global
    f_global = ref_gp(f_sh, gp, heads=2, num_blocks=1)
    f_local = f_sh
    for g in range(2):
        f_local = ref_smfm(f_local, p, num_rb=1, pre=f'local_path.body.{g}.')
    f = ref_glam(f_global, f_local, p, pre='glam.') + f_sh
    for i in range(int(math.log2(upscale))):
        f = pixel_shuffle(conv3x3(f, p[f'upsample.{2 * i}.weight'], p[f'upsample.{2 * i}.bias']), 2)
    ref = conv3x3(f, p['conv_recon.weight'], p['conv_recon.bias'])
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, **TOL)
