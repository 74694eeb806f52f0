"""TANet: Transformer-CNN Aggregation Network for face super-resolution (Wang et al., AAAI 2022).

No public code exists (the authors' repository is empty); this is built from the paper. Code <-> paper:

- ``TANet.conv_shallow``: shallow feature extractor, one 3x3 conv (eq. 1).
- :class:`GlobalPath` ("resource-friendly Transformers", global representation path, eq. 2 and 9-11): the shallow
  feature is cut into 4x4 patches (``patch_size``, H_t = W_t = 4), each patch becomes a token of C = 64 dimensions (the
  width of the local path, no projection to a larger width), a learnable position encoding is added, then ``num_blocks``
  (N) :class:`TransformerBlock` s, each an :class:`MHSA` (eq. 9-10) and a two-layer MLP with the residual form of eq.
  11: ``F_g^n = MLP(F_w + F_g^{n-1}) + F_w + F_g^{n-1}`` where ``F_w = MHSA(F_g^{n-1})``.
- :class:`SMFN` (local representation path, eq. 17) of G = 10 :class:`SMFM` (Fig. 3, eq. 12-16), each with I = 10
  residual blocks (eq. 12), a calibration path (two 1x1 convs + sigmoid, eq. 13, times the input, eq. 14), a 1x1 fusion
  of ``[F_res, F_cal]`` (eq. 15) and the three-way sum ``F_res + F_fused + F_l^{g-1}`` (eq. 16).
- :class:`GLAM` (global-local aggregation module, eq. 3-6): 1x1 conv on the reshaped global feature (eq. 3), 3x3 conv on
  the local feature (eq. 4), concatenation and a 1x1 conv (eq. 5).
- Shallow skip ``F_gl + F_shallow`` and the pixel-shuffle upscale module (eq. 7), 3x3 reconstruction conv (eq. 8).

Choices the paper leaves open (each one is a constructor argument):

- Token coverage (``token_mode``). The text says a 4x4 patch "is flattened to a vector of length H_t x W_t, in which
  each element has a C dimensional embedding ... considered as a length-16 sequence of C dimensional token", and
  contrasts its C = 64 with IPT's 576 (= 3 x 3 x 64, IPT's flattened 3x3 patch). Two readings exist:
  ``'global'`` (default): every 4x4 patch of the whole feature map is one token (its 4*4*C values linearly embedded to
  C), and attention runs over ALL patch tokens of the image, so the path is global as the paper's purpose (long-range
  facial structure, Fig. 1 "global-attention based paradigm") requires; the tokens are mapped back to 4x4 patches by a
  linear C -> 4*4*C layer and a pixel shuffle ("reshapes F_global into the tensor size of the input feature", eq. 3).
  ``'window'``: the literal "length-16 sequence": attention over the 16 pixel tokens (C each) inside each 4x4 patch.
  It is cheaper but only local, which contradicts the path's role, hence not the default.
- Position encoding: learned on a reference token grid ``pos_grid`` (default 16x16 = the FFHQ x4 LR 64x64 / 4) and
  bicubically interpolated to the actual grid when the input differs (as ViT/DeiT do at a new resolution), so any input
  size works; the training files set ``pos_grid`` to their data's grid so that no interpolation happens at the paper's
  sizes. In ``'window'`` mode the encoding is over the 16 positions of a patch and needs no interpolation.
- Sizes not divisible by 4 (e.g. CelebA x8: LR 27x22): the shallow feature is reflect-padded at the bottom/right to the
  next multiple of ``patch_size`` before tokenization and the global feature is cropped back, so every LR size works.
- N and heads (``num_blocks``, ``num_heads``): the paper ablates N in its appendix only (not available). Defaults: N = 4
  blocks (a shallow stack, in keeping with the "resource-friendly" claim; the whole global path is about 4% of the 8.2M
  parameters) and 4 heads (d = C / N_head = 16, eq. 10).
- Transformer details not spelled out: pre-LayerNorm before MHSA and MLP and an output projection after the heads, as in
  the ViT the paper follows ("Enlightened by (Dosovitskiy et al. 2021)"); MLP hidden width ``mlp_ratio`` * C with GELU
  (ViT's 4).
- Residual blocks (Fig. 3 B, not detailed in the text): conv3x3-ReLU-conv3x3 + identity without BN (EDSR / SISN's RB,
  which the paper follows for G and I). The calibration path has no activation between its two 1x1 convs (eq. 13 has
  none).

MHSA uses ``F.scaled_dot_product_attention`` (fused kernels on GPU) when ``use_sdpa`` is True, and the explicit
``softmax(QK^T / sqrt(d)) V`` of eq. 10 otherwise; both give the same result (tested on CPU).
"""
import math
import torch
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
        self.proj = nn.Linear(dim, dim)

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
    """Transformer block with the residual form of eq. 11.

    ``F_w = MHSA(LN(x))``; ``y = x + F_w``; ``out = MLP(LN(y)) + y`` (= ``H_mlp(F_w + F_g^{n-1}) + F_w + F_g^{n-1}``).

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
        token_mode (str): ``'global'`` (one token per patch, attention over the whole image) or ``'window'`` (16 pixel
            tokens per patch, attention inside each patch). See the module docstring.
        pos_grid (tuple[int]): Token grid (rows, cols) the learnable position encoding is stored at (``'global'`` mode).
        mlp_ratio (float): MLP hidden width / C.
        use_sdpa (bool): See :class:`MHSA`.
    """

    def __init__(self,
                 num_feat=64,
                 num_blocks=4,
                 num_heads=4,
                 patch_size=4,
                 token_mode='global',
                 pos_grid=(16, 16),
                 mlp_ratio=4.0,
                 use_sdpa=True):
        super().__init__()
        if token_mode not in ('global', 'window'):
            raise ValueError(f"TANet: token_mode must be 'global' or 'window', got {token_mode!r}.")
        self.patch_size = patch_size
        self.token_mode = token_mode
        p2 = patch_size * patch_size
        if token_mode == 'global':
            # patch embedding (4*4*C -> C) and its inverse (C -> 4*4*C), as strided/1x1 convs on the map
            self.embed = nn.Conv2d(num_feat, num_feat, patch_size, stride=patch_size)
            self.unembed = nn.Sequential(nn.Conv2d(num_feat, num_feat * p2, 1), nn.PixelShuffle(patch_size))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_feat, *pos_grid))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, p2, num_feat))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *[TransformerBlock(num_feat, num_heads, mlp_ratio, use_sdpa) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(num_feat)

    def set_use_sdpa(self, flag):
        for m in self.modules():
            if isinstance(m, MHSA):
                m.use_sdpa = flag

    def _pos(self, gh, gw):
        pos = self.pos_embed
        if pos.shape[-2:] != (gh, gw):
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
        if self.token_mode == 'global':
            t = self.embed(x) + self._pos(gh, gw)  # (n, c, gh, gw)
            t = self.norm(self.blocks(t.flatten(2).transpose(1, 2)))  # (n, gh*gw, c)
            out = self.unembed(t.transpose(1, 2).reshape(n, c, gh, gw))
        else:
            t = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(n * gh * gw, p * p, c)
            t = self.norm(self.blocks(t + self.pos_embed))
            out = t.reshape(n, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
        return out[..., :h, :w]


class SMFM(nn.Module):
    """Self-calibrated multi-path fusion module (Fig. 3, eq. 12-16).

    Args:
        num_feat (int): Channels.
        num_rb (int): I residual blocks.
    """

    def __init__(self, num_feat=64, num_rb=10):
        super().__init__()
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_rb)])  # eq. 12
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

    def __init__(self, num_feat=64, num_smfm=10, num_rb=10):
        super().__init__()
        self.body = nn.Sequential(*[SMFM(num_feat, num_rb) for _ in range(num_smfm)])

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
        token_mode (str): ``'global'`` (default) or ``'window'``; see module docstring.
        pos_grid (tuple[int]): Grid the learned position encoding is stored at. Default: (16, 16), FFHQ x4 (LR 64x64).
        mlp_ratio (float): MLP hidden width / C. Default: 4 (ViT).
        use_sdpa (bool): Fused ``scaled_dot_product_attention`` in MHSA. Default: True.
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
                 token_mode='global',
                 pos_grid=(16, 16),
                 mlp_ratio=4.0,
                 use_sdpa=True,
                 img_residual=False):
        super().__init__()
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f'TANet: upscale must be a power of 2 (4 or 8 in the paper), got {upscale}.')
        self.upscale = upscale
        self.img_residual = img_residual
        self.conv_shallow = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)  # eq. 1
        self.global_path = GlobalPath(num_feat, num_blocks, num_heads, patch_size, token_mode, tuple(pos_grid),
                                      mlp_ratio, use_sdpa)
        self.local_path = SMFN(num_feat, num_smfm, num_rb)
        self.glam = GLAM(num_feat)
        self.upsample = Upsample(upscale, num_feat)  # eq. 7
        self.conv_recon = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)  # eq. 8

    def set_use_sdpa(self, flag):
        """Switch every MHSA between the fused SDPA kernel and the explicit formula."""
        self.global_path.set_use_sdpa(flag)

    def forward(self, x):
        f_shallow = self.conv_shallow(x)
        f_gl = self.glam(self.global_path(f_shallow), self.local_path(f_shallow))
        out = self.conv_recon(self.upsample(f_gl + f_shallow))
        return out + upsample_to(x, scale=self.upscale) if self.img_residual else out


# The paper's configuration. pos_grid = the FFHQ LR token grid (x4: 64x64 / 4, x8: 32x32 / 4); the CelebA option files
# override it with their grid (x4: 54x44 -> 14x11, x8: 27x22 -> padded 28x24 -> 7x6).
PAPER_CONFIGS = {
    'x4':
    dict(upscale=4, num_feat=64, num_smfm=10, num_rb=10, num_blocks=4, num_heads=4, patch_size=4, pos_grid=(16, 16)),
    'x8':
    dict(upscale=8, num_feat=64, num_smfm=10, num_rb=10, num_blocks=4, num_heads=4, patch_size=4, pos_grid=(8, 8)),
}

TINY_CONFIG = dict(
    num_feat=16, num_smfm=2, num_rb=1, num_blocks=1, num_heads=2, patch_size=4, pos_grid=(4, 4), mlp_ratio=2.0)
