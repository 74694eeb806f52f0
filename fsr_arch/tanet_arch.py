"""TANet: Transformer-CNN Aggregation Network for face super-resolution (Wang et al., AAAI 2022).

No public code exists (the authors' repository is empty); this is built from the paper. Code <-> paper:

- ``TANet.conv_shallow``: shallow feature extractor, one 3x3 conv (eq. 1).
- :class:`GlobalPath` ("resource-friendly Transformers", global representation path, eq. 2 and 9-11). The paper's
  reading, ``token_mode='window'`` (the default and the paper configuration): "each patch is flattened to a vector of
  length H_t x W_t (we set H_t = W_t = 4), in which each element has a C dimensional embedding. This vector is then
  considered as a length-16 sequence of C dimensional token, combined with a learnable position encoding". The shallow
  feature (N, C, H, W) is cut into 4x4 patches (``patch_size``); each patch is one sequence of 16 tokens, the C = 64
  feature vectors of its pixels in row-major order (no embedding layer: the token width is "aligned" with the local
  path's C); a learnable encoding of the 16 in-patch positions (16 x C) is added; ``num_blocks`` (N)
  :class:`TransformerBlock` s attend among each patch's 16 tokens (all patches in parallel, shared weights); the tokens
  are put back at their pixels, which is GLAM's "reshapes F_global into the tensor size of the input feature" (a pure
  reshape, no learned layer).
- :class:`TransformerBlock`: :class:`MHSA` (eq. 9-10, ``d = C / N_head``) and a two-layer MLP in the residual form of
  eq. 11: ``F_g^n = H_mlp(F_weighted + F_g^{n-1}) + F_weighted + F_g^{n-1}``, with ViT's pre-LayerNorms and output
  projection (DEVIATION, below).
- :class:`SMFN` (local representation path, eq. 17) of G = 10 :class:`SMFM` (Fig. 3, eq. 12-16), each with I = 10
  residual blocks (eq. 12), a calibration path (two 1x1 convs + sigmoid, eq. 13, times the input, eq. 14), a 1x1 fusion
  of ``[F_res, F_cal]`` (eq. 15) and the three-way sum ``F_res + F_fused + F_l^{g-1}`` (eq. 16).
- :class:`GLAM` (global-local aggregation module, eq. 3-6): 1x1 conv on the reshaped global feature (eq. 3), 3x3 conv on
  the local feature (eq. 4), concatenation ``[F_global^ft, F_local^ft]`` and a 1x1 conv (eq. 5).
- Shallow skip ``F_gl + F_shallow``, the upscale module (eq. 7) and the 3x3 reconstruction conv (eq. 8).

Which reading the paper configuration uses, and why: ``'window'``. Every concrete statement of the paper describes it
(a length-16 sequence of C-dimensional tokens per 4x4 patch, a learnable position encoding, C = 64 because the token
width equals the feature width, GLAM *reshaping* F_global back to the feature's size), and it needs no layer the paper
does not name. Its cost: attention reaches only the 16 pixels of a 4x4 LR patch (16x16 HR pixels at x4, 32x32 at x8),
less than the "global attention weights" and "long-distance visual relation modeling" the paper's text promises.
Because its position encoding covers the 16 in-patch positions, it does not depend on the input size: training crops
and whole test faces see the same encoding.

DEVIATION, offered as an option: ``token_mode='global'`` (the ``*_global.yml`` option files). Reason: it gives the path
the reach the paper claims for it (attention over the whole face, its Fig. 1 "global-attention based paradigm"), which
the literal reading cannot. What it changes: each 4x4 patch of C channels becomes ONE token, embedded by a learned
4x4-stride conv (4*4*C -> C values, a layer the paper does not have), attention runs over all patch tokens of the image,
and a learned 1x1 conv (C -> 4*4*C) + pixel shuffle maps tokens back to pixels (also not in the paper). Its learnable
position encoding is absolute, stored on a token grid ``pos_grid``: the ``*_global.yml`` files train on whole faces and
set ``pos_grid`` to the whole face's grid (FFHQ x4 16x16, x8 8x8; CelebA x4 14x11, x8 7x6, LR 27x22 padded to 28x24), so
no interpolation happens at the paper's sizes in training or testing. Another input size gets the encoding bicubically
interpolated to its grid (as ViT/DeiT at a new resolution), which the network never saw in training; a training run on
such a grid warns once.

DEVIATION, the Transformer block (as ViT): eq. 9-11 write ``Q, K, V = W_Q F, W_K F, W_V F`` on the block input,
``F_weighted = softmax(Q K^T / sqrt(d)) V`` and ``F_g^n = H_mlp(F_weighted + F_g^{n-1}) + F_weighted + F_g^{n-1}``:
no LayerNorm and no output projection. This build adds three parts of the ViT the paper says its Transformer follows
("Enlightened by (Dosovitskiy et al. 2021), the proposed Transformers contains N repeated Transformer blocks, each
[...] a multi-head self-attention module and a MLP block"): a LayerNorm before the MHSA and one before the MLP
(pre-LN), the output projection ``W_O`` after the concatenated heads (:class:`MHSA`), and a final LayerNorm on the last
block's tokens before they are reshaped (``global_norm=True``; ``False`` leaves it out). Reason: eq. 11's residual form
is ViT's, and ViT's multi-head attention and block are defined with them; without any normalization the residual
stream of the N blocks reaches GLAM's 1x1 conv at whatever scale the blocks leave. Only the final LayerNorm is an
option; eq. 9-11 literally (no pre-LN, no ``W_O``) is not offered.

Choices the paper leaves open (OPEN; a constructor argument where an alternative is offered, default first):

- N and heads (``num_blocks=4``, ``num_heads=4``): the paper ablates N in its appendix only (not available). N = 4 is
  a shallow stack in keeping with the "resource-friendly" claim; 4 heads give d = C / N_head = 16 (eq. 10).
- The MLP: "two fully connected layers" (eq. 11); hidden width ``mlp_ratio`` * C with GELU between them
  (``mlp_ratio=4``, ViT's). The position encoding starts from a truncated normal with std 0.02 (ViT).
- Sizes not divisible by 4 (e.g. CelebA x8: LR 27x22): the shallow feature is reflect-padded at the bottom/right to
  the next multiple of ``patch_size`` before tokenization and the global feature is cropped back, so every LR size
  works (in ``'window'`` mode the padded pixels are tokens of the border patches). The CelebA window files train on
  square crops whose padding differs from the test faces' (x4: 44x44 LR crops, none; 54x44 test faces, the last token
  row half padded); measured not to matter (``scripts/measure_tanet_padding.py``, demo-size networks on the demo
  faces, in the 8 HR rows of a half-padded token row): the global path given the real tokens instead of the padded
  ones scores +0.02 dB there (3 test faces, rows and columns) and -0.03 dB (40 training faces), and a network trained
  on crops padded like the test faces does no better there (-0.14 / -0.02 dB).
- Residual blocks (Fig. 3 B, not detailed in the text): conv3x3-ReLU-conv3x3 + identity without BN (EDSR / SISN's RB,
  which the paper follows for G and I), BasicSR's ``ResidualBlockNoBN``. Its initialisation (``rb_init``):
  ``'basicsr'`` (default): Kaiming-normal weights scaled by 0.1 and zero biases, so each of the 100 stacked blocks
  starts near the identity (BasicSR's convention for deep residual stacks, EDSR/RCAN); ``'pytorch'``: PyTorch's
  default conv initialisation. The paper says nothing about initialisation.
- The calibration path has no activation between its two 1x1 convs (eq. 13 has none).
- The upscale module of eq. 7 is not described: BasicSR's ``Upsample``, log2(s) stages of a 3x3 conv (C -> 4C) and a
  x2 pixel shuffle (EDSR/RCAN's module, the usual one in the CNN FSR methods the paper compares with); transposed
  convolutions or a single x s pixel shuffle would be equally consistent with the text (not offered as options).

MHSA uses ``F.scaled_dot_product_attention`` (fused kernels on GPU) when ``use_sdpa`` is True, and the explicit
``softmax(QK^T / sqrt(d)) V`` of eq. 10 otherwise; both give the same result (tested on CPU).
"""
import math
import torch
import warnings
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from fsr_arch.common import ResidualBlockNoBN, Upsample, upsample_to

__all__ = ['TANet', 'GlobalPath', 'TransformerBlock', 'MHSA', 'SMFN', 'SMFM', 'GLAM', 'PAPER_CONFIGS', 'TINY_CONFIG']


class MHSA(nn.Module):
    """Multi-head self-attention over a token sequence (eq. 9-10).

    Args:
        dim (int): Token dimension C.
        num_heads (int): Number of heads N_head (d = C / N_head).
        use_sdpa (bool): Use ``F.scaled_dot_product_attention`` (fused on GPU); otherwise the explicit eq. 10.
    """

    def __init__(self, dim, num_heads, use_sdpa=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'TANet MHSA: embedding dim ({dim}) must be divisible by num_heads ({num_heads}).')
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, dim * 3)  # W_Q, W_K, W_V of eq. 9
        self.proj = nn.Linear(dim, dim)  # W_O: DEVIATION, not in eq. 10 (ViT's; see the module docstring)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, d)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Transformer block with the residual form of eq. 11 and ViT's pre-LayerNorms (DEVIATION: eq. 11 has none).

    ``F_w = MHSA(LN(x))``; ``y = x + F_w``; ``out = MLP(LN(y)) + y`` (eq. 11 without the two LNs:
    ``H_mlp(F_w + F_g^{n-1}) + F_w + F_g^{n-1}``).

    Args:
        dim (int): Token dimension C.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the two-layer MLP relative to C.
        use_sdpa (bool): See :class:`MHSA`.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, use_sdpa=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MHSA(dim, num_heads, use_sdpa)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GlobalPath(nn.Module):
    """Resource-friendly Transformers: the global representation path (eq. 2, 9-11).

    Args:
        num_feat (int): C, the token dimension (= width of the local path).
        num_blocks (int): N Transformer blocks.
        num_heads (int): Attention heads.
        patch_size (int): H_t = W_t.
        token_mode (str): ``'window'`` (the paper's reading: 16 pixel tokens per patch, attention inside each patch)
            or ``'global'`` (DEVIATION: one token per patch, attention over the whole image). See the module docstring.
        pos_grid (tuple[int]): Token grid (rows, cols) the learnable position encoding is stored at (``'global'`` mode
            only; ``'window'`` mode encodes the 16 in-patch positions and ignores it).
        mlp_ratio (float): MLP hidden width / C.
        use_sdpa (bool): See :class:`MHSA`.
        global_norm (bool): Final LayerNorm on the output tokens (DEVIATION, as ViT; see the module docstring).
    """

    def __init__(self,
                 num_feat=64,
                 num_blocks=4,
                 num_heads=4,
                 patch_size=4,
                 token_mode='window',
                 pos_grid=(16, 16),
                 mlp_ratio=4.0,
                 use_sdpa=True,
                 global_norm=True):
        super().__init__()
        if token_mode not in ('global', 'window'):
            raise ValueError(f"TANet: token_mode must be 'global' or 'window', got {token_mode!r}.")
        self.patch_size = patch_size
        self.token_mode = token_mode
        p2 = patch_size * patch_size
        self._warned_interpolation = False
        if token_mode == 'global':
            if pos_grid is None or len(pos_grid) != 2:
                raise ValueError(f"TANet: token_mode 'global' needs pos_grid [rows, cols] (the training token grid, "
                                 f'LR size / patch_size rounded up), got {pos_grid!r}.')
            # DEVIATION (see module docstring): patch embedding (4*4*C -> C) and its inverse (C -> 4*4*C), as
            # strided/1x1 convs on the map
            self.embed = nn.Conv2d(num_feat, num_feat, patch_size, stride=patch_size)
            self.unembed = nn.Sequential(nn.Conv2d(num_feat, num_feat * p2, 1), nn.PixelShuffle(patch_size))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_feat, *pos_grid))
        else:  # the paper: a learnable encoding of the 16 positions of a 4x4 patch, no embedding layer
            self.pos_embed = nn.Parameter(torch.zeros(1, p2, num_feat))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *[TransformerBlock(num_feat, num_heads, mlp_ratio, use_sdpa) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(num_feat) if global_norm else nn.Identity()

    def set_use_sdpa(self, flag):
        for m in self.modules():
            if isinstance(m, MHSA):
                m.use_sdpa = flag

    def _pos(self, gh, gw):
        pos = self.pos_embed
        if pos.shape[-2:] != (gh, gw):
            if self.training and not self._warned_interpolation:
                self._warned_interpolation = True
                warnings.warn(
                    f'TANet (token_mode global): training on a {gh}x{gw} token grid while pos_grid is '
                    f'{tuple(pos.shape[-2:])}: the position encoding is interpolated in training, so training and '
                    f'testing do not see the same encoding. Set network_g:pos_grid to [{gh}, {gw}] (LR size / '
                    f'patch_size, rounded up) or train on the size pos_grid was chosen for.',
                    stacklevel=2)
            pos = F.interpolate(pos, size=(gh, gw), mode='bicubic', align_corners=False)
        return pos

    def forward(self, x):
        n, c, h, w = x.shape
        p = self.patch_size
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:  # pad bottom/right to a multiple of the patch size; cropped back below
            x = F.pad(x, (0, pw, 0, ph), mode='reflect' if (ph < h and pw < w) else 'replicate')
        hp, wp = h + ph, w + pw
        gh, gw = hp // p, wp // p
        if self.token_mode == 'global':  # DEVIATION: one token per patch, attention over the whole image
            t = self.embed(x) + self._pos(gh, gw)  # (n, c, gh, gw)
            t = self.norm(self.blocks(t.flatten(2).transpose(1, 2)))  # (n, gh*gw, c)
            out = self.unembed(t.transpose(1, 2).reshape(n, c, gh, gw))
        else:  # the paper: each patch is a length-16 sequence of C-dim pixel tokens; tokens go back to their pixels
            t = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(n * gh * gw, p * p, c)
            t = self.norm(self.blocks(t + self.pos_embed))
            out = t.reshape(n, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
        return out[..., :h, :w]


class SMFM(nn.Module):
    """Self-calibrated multi-path fusion module (Fig. 3, eq. 12-16).

    Args:
        num_feat (int): Channels.
        num_rb (int): I residual blocks.
        rb_init (str): ``'basicsr'`` (Kaiming x 0.1, zero bias) or ``'pytorch'``; OPEN, see the module docstring.
    """

    def __init__(self, num_feat=64, num_rb=10, rb_init='basicsr'):
        super().__init__()
        if rb_init not in ('basicsr', 'pytorch'):
            raise ValueError(f"TANet: rb_init must be 'basicsr' or 'pytorch', got {rb_init!r}.")
        self.body = nn.Sequential(
            *[ResidualBlockNoBN(num_feat, pytorch_init=rb_init == 'pytorch') for _ in range(num_rb)])  # eq. 12
        self.calibration = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 1), nn.Conv2d(num_feat, num_feat, 1), nn.Sigmoid())  # eq. 13
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1)  # eq. 15

    def forward(self, x):
        res = self.body(x)
        cal = self.calibration(x) * x  # eq. 14
        fused = self.fusion(torch.cat([res, cal], dim=1))
        return res + fused + x  # eq. 16


class SMFN(nn.Module):
    """Self-calibrated multi-path fusion network: G cascaded SMFMs (local representation path, eq. 17)."""

    def __init__(self, num_feat=64, num_smfm=10, num_rb=10, rb_init='basicsr'):
        super().__init__()
        self.body = nn.Sequential(*[SMFM(num_feat, num_rb, rb_init) for _ in range(num_smfm)])

    def forward(self, x):
        return self.body(x)


class GLAM(nn.Module):
    """Global-local aggregation module (eq. 3-6)."""

    def __init__(self, num_feat=64):
        super().__init__()
        self.conv_global = nn.Conv2d(num_feat, num_feat, 1)  # eq. 3
        self.conv_local = nn.Conv2d(num_feat, num_feat, 3, padding=1)  # eq. 4
        self.conv_fuse = nn.Conv2d(num_feat * 2, num_feat, 1)  # eq. 5

    def forward(self, f_global, f_local):
        return self.conv_fuse(torch.cat([self.conv_global(f_global), self.conv_local(f_local)], dim=1))


@ARCH_REGISTRY.register()
class TANet(nn.Module):
    """TANet (Wang et al., AAAI 2022): LR (N, 3, h, w) in [0, 1] -> HR (N, 3, h*s, w*s). Any LR size works.

    Args:
        upscale (int): 4 or 8 (any power of 2 works with the pixel-shuffle upscale module).
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): C, width of the local path and token dimension. Default: 64 (paper).
        num_smfm (int): G. Default: 10 (paper).
        num_rb (int): I. Default: 10 (paper).
        num_blocks (int): N Transformer blocks. Default: 4 (open in the paper; see module docstring).
        num_heads (int): Attention heads. Default: 4 (open in the paper; d = 16).
        patch_size (int): Token patch size H_t = W_t. Default: 4 (paper).
        token_mode (str): ``'window'`` (default, the paper's reading) or ``'global'`` (DEVIATION); see module
            docstring.
        pos_grid (tuple[int]): ``'global'`` mode only: the token grid the learned position encoding is stored at.
            Default: (16, 16), FFHQ x4 whole faces (LR 64x64 / 4). Ignored in ``'window'`` mode.
        mlp_ratio (float): MLP hidden width / C. Default: 4 (ViT).
        use_sdpa (bool): Fused ``scaled_dot_product_attention`` in MHSA. Default: True.
        global_norm (bool): Final LayerNorm of the global path. Default: True (DEVIATION: ViT's final norm, not in
            eq. 9-11; see the module docstring).
        rb_init (str): Residual-block initialisation, ``'basicsr'`` (default: Kaiming x 0.1) or ``'pytorch'`` (OPEN).
        img_residual (bool): Add the bicubic-upsampled input to the output. A DEVIATION from eq. 8 (the paper has no
            image-level skip), off by default; the CPU demo options turn it on so that a few minutes of training start
            from bicubic instead of from a blank image.
    """

    def __init__(self,
                 upscale=4,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=64,
                 num_smfm=10,
                 num_rb=10,
                 num_blocks=4,
                 num_heads=4,
                 patch_size=4,
                 token_mode='window',
                 pos_grid=(16, 16),
                 mlp_ratio=4.0,
                 use_sdpa=True,
                 global_norm=True,
                 rb_init='basicsr',
                 img_residual=False):
        super().__init__()
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f'TANet: upscale must be a power of 2 (4 or 8 in the paper), got {upscale}.')
        self.upscale = upscale
        self.img_residual = img_residual
        self.conv_shallow = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)  # eq. 1
        self.global_path = GlobalPath(num_feat, num_blocks, num_heads, patch_size, token_mode,
                                      None if pos_grid is None else tuple(pos_grid), mlp_ratio, use_sdpa, global_norm)
        self.local_path = SMFN(num_feat, num_smfm, num_rb, rb_init)
        self.glam = GLAM(num_feat)
        self.upsample = Upsample(upscale, num_feat)  # eq. 7 (OPEN: log2(s) x [conv3x3 C->4C, pixel shuffle x2])
        self.conv_recon = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)  # eq. 8

    def set_use_sdpa(self, flag):
        """Switch every MHSA between the fused SDPA kernel and the explicit formula."""
        self.global_path.set_use_sdpa(flag)

    def forward(self, x):
        f_shallow = self.conv_shallow(x)
        f_gl = self.glam(self.global_path(f_shallow), self.local_path(f_shallow))
        out = self.conv_recon(self.upsample(f_gl + f_shallow))
        return out + upsample_to(x, scale=self.upscale) if self.img_residual else out


# The paper's configuration: the literal token reading ('window'), whose encoding does not depend on the input size, so
# the same entries serve FFHQ (256x256) and CelebA (216x176). The DEVIATION 'global' adds token_mode='global' and
# pos_grid = the whole face's token grid (see options/*_global.yml).
PAPER_CONFIGS = {
    'x4':
    dict(upscale=4, num_feat=64, num_smfm=10, num_rb=10, num_blocks=4, num_heads=4, patch_size=4, token_mode='window'),
    'x8':
    dict(upscale=8, num_feat=64, num_smfm=10, num_rb=10, num_blocks=4, num_heads=4, patch_size=4, token_mode='window'),
}

TINY_CONFIG = dict(
    num_feat=16, num_smfm=2, num_rb=1, num_blocks=1, num_heads=2, patch_size=4, pos_grid=(4, 4), mlp_ratio=2.0)
