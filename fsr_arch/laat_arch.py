"""LAAT: the self-refinement Transformer for face super-resolution (Li et al., IJCAI 2023, doi:10.24963/ijcai.2023/115).

Map from the paper to this module:

- Sec. 3.1, eq. 1: ``LAAT.conv_first`` (+ LeakyReLU) on ``I^L``, the LR face bicubic-enlarged to the HR size inside
  ``forward`` (OPEN, below).
- Sec. 3.1, eq. 2-3, feature extraction stage: ``LAAT.extraction`` (4 steps of ``num_blocks`` :class:`RSABlock`),
  ``LAAT.downs`` (4x4 stride-2 conv doubling the channels), Haar WT (``common.haar_wt``) whose LL / LH / HL go through
  ``LAAT.wt_convs`` (3x3 convs) to the matching recovery step.
- Sec. 3.1, eq. 4, feature transformation stage: ``LAAT.transformation`` and the concatenation with its input.
- Sec. 3.1, eq. 5, feature recovery stage: ``LAAT.recovery`` (RSA blocks) and ``LAAT.wfms`` (:class:`WFM`), then
  ``LAAT.conv_last`` (+ LeakyReLU) gives the residual ``I^R``; the output is ``I^L + I^R``.
- Sec. 3.2, eq. 6: :class:`RSABlock` (LN -> RSA -> residual, LN -> MLP -> residual).
- Sec. 3.2, eq. 7-12: :class:`RSA`: lambda x lambda stride-lambda down-sampling (eq. 7), :class:`FIM` on both maps
  (eq. 8), coarse MHSA (eq. 9, :class:`MHSA`), region scores = ``Sum(AM)``, the sum of each head's coarse attention map
  over its query rows (eq. 10), reduced over the heads as ``head_reduction`` says (OPEN, below), top-k with
  ``k = floor(sqrt(H'W') / lambda)`` (eq. 10), gather of the selected regions of the FIM output, MHSA over them and
  scatter-add into ``F_input`` (eq. 11), transposed-conv up-sampling of the coarse output and a 3x3 depth-wise conv
  (eq. 12). With ``lambda = 1`` (maps of at most 32x32 positions, Sec. 4.2) RSA is the coarse self-attention (CSA)
  alone: ``DWConv(F_input + MHSA(FIM(Conv1x1(F_input))))``, eq. 7's Downsample being a 1x1 conv (below).
- Sec. 3.2, Fig. 3: :class:`FIM` (two branches, depth-wise 3x3 conv and channel attention in opposite orders, plus the
  input).
- Sec. 3.3, eq. 13-16: ``common.haar_wt`` / ``common.haar_iwt`` (fixed kernels of eq. 14; the inverse is exact).
- Sec. 3.4, eq. 17-19: :class:`WFM` (split, WIT with the shallow LL / LH / HL and the first half as HH, 4x4 stride-2
  transposed-conv up-sampling of the second half, 1x1 conv to half the channels).
- Sec. 4.2 defaults (``PAPER_CONFIGS['x8']``): C = 32, extraction channels 32/64/128/256 with 1/2/4/8 heads,
  transformation at 256 channels with 16 heads, recovery channels 512/256/128/64 with 8/4/2/1 heads, lambda = 4, CSA
  only where the map is <= 32x32. The paper reports 8x only (16x16 -> 128x128); ``PAPER_CONFIGS['x4']`` (32x32 ->
  128x128) is an EXTENSION of this plugin with the same Sec. 4.2 settings, not a configuration of the paper.
- Sec. 4.4, the paper's ablations (Tables 2-4), as arguments (``ABLATIONS`` lists them by table row):
  ``region_selection=False`` is Table 2's "CSA" (coarse attention at lambda = 4, up-sampled and added to ``F_input``,
  no key-region branch); ``fim_mode`` is Table 3 ("learnable position parameters", "DW-Conv", "FIM only first / second
  branch", "FIM"); ``wfm_mode`` is Table 4 ("concatenation", "WFM w/o splitting", "WFM").

DEVIATION (eq. 12): the paper writes ``Upsample`` as "a 4x4 transposed convolution with stride 2", which doubles the
size of ``Output_c`` (H'/lambda x W'/lambda) and so cannot bring it back to H' x W' at lambda = 4: the paper contradicts
itself. Two readings restore the size, both offered as ``up_mode``: ``'single'`` (default), one lambda x lambda
transposed conv with stride lambda (the 4x4 kernel of the text, its stride set to lambda; no overlap); ``'stacked'``,
log2(lambda) stacked 4x4 stride-2 transposed convs with padding 1 (the text's layer, repeated until the size matches;
no non-linearity in between since the paper names a single linear operation). ``'single'`` stays the default: it keeps
the text's kernel size, has half the parameters of ``'stacked'`` and is the layer the demo results were trained with.

eq. 7 at lambda = 1 (the CSA blocks, 10 of the paper configuration's 18): ``Downsample`` "uses a convolutional layer
with kernel size of lambda x lambda and stride lambda", a 1x1 conv at lambda = 1, and it is kept
(``csa_downsample=True``, the default): it is not redundant, since FIM, which is non-linear, comes between it and the
attention's ``W_q, W_k, W_v``. It costs 0.95M parameters at x8 (14.61M in all; 13.66M without it).
``csa_downsample=False`` leaves it out (CSA attends over ``FIM(F_input)``): the network of this plugin's earlier
releases, whose checkpoints need it. No ``Upsample`` follows at lambda = 1: ``Output_c`` already has ``F_input``'s
size, and a 1x1 transposed conv (the ``'single'`` reading above at lambda = 1) would be a linear map applied right after
``W_o``, which ``W_o`` already spans: parameters without any added function.

OPEN (Sec. 3.1, the input): the paper calls ``I^L`` "an input low-resolution RGB image" of size H x W, yet every stage
keeps that size up to ``F_rs^4`` (2C x H x W) and the output is ``I^L + I^R``, with no up-sampling layer anywhere; its
LR faces are 16x16 and its outputs 128x128 (Sec. 4.1). So ``I^L`` is the LR face already enlarged to the HR size, and
the paper does not say how. Here ``forward`` enlarges it with bicubic interpolation (``common.upsample_to``, torch's
``F.interpolate``, a = -0.75), the usual input of FSR networks defined at the HR size, so that the network takes the LR
face at LR size like every network of this plugin.

OPEN (eq. 10): ``AM`` is M x n_c x n_c and ``Sum`` accumulates "along the penultimate dimension", which leaves one score
per head and coarse token (M x n_c); how Topk reduces over the heads is not said. ``head_reduction``: ``'sum'``
(default) adds the heads' scores and takes the top-k of the n_c sums (one set of regions shared by all heads of the
region MHSA, as eq. 11's single ``Index`` suggests); ``'max'`` takes the top-k over all heads' scores, a region scoring
with its best head (k distinct regions); ``'per_head'`` lets each head pick its own top-k regions, and head h of the
region MHSA attends over head h's regions only (its share of ``W_o`` and 1/M of the output bias are added back at those
positions, so with one head, or with heads that agree, it equals ``'sum'``).

Efficiency (DESIGN.md, performance notes): the region scores need the column sums of the softmax attention map, which
the fused ``scaled_dot_product_attention`` does not give, so they are computed block by block over the query rows
(memory linear in the number of coarse tokens, never the whole n_c x n_c map) and without autograd (they only feed the
top-k, which has no gradient). Gather and scatter-add are single batched ``gather`` / ``scatter_add`` calls on flat
position indices. ``use_sdpa=True`` runs every attention output through the fused kernel; ``use_sdpa=False`` is the
explicit (blocked) softmax path, which yields the output and the column sums from the same softmax blocks.
"""
import math
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from fsr_arch.common import ChannelAttention, LayerNorm2d, check_divisible, haar_iwt, haar_wt, upsample_to

__all__ = [
    'LAAT', 'RSA', 'RSABlock', 'FIM', 'LearnedPosition', 'WFM', 'MHSA', 'PatchUpsample', 'PAPER_CONFIGS', 'ABLATIONS',
    'TINY_CONFIG', 'UP_MODES', 'HEAD_REDUCTIONS', 'FIM_MODES', 'WFM_MODES'
]

PAPER_CONFIGS = {
    # EXTENSION: the paper reports 8x only (16x16 -> 128x128). x4 (32x32 -> 128x128) keeps the Sec. 4.2 settings.
    'x4': dict(upscale=4, num_feat=32, num_blocks=2, lam=4, img_size=128),
    'x8': dict(upscale=8, num_feat=32, num_blocks=2, lam=4, img_size=128),
}
# Sec. 4.4: the ablation variants, by table row, as LAAT arguments on top of a PAPER_CONFIGS entry.
ABLATIONS = {
    'csa': dict(region_selection=False),  # Table 2, "CSA"
    'fim_position': dict(fim_mode='position'),  # Table 3, "learnable position parameters"
    'fim_dwconv': dict(fim_mode='dwconv'),  # Table 3, "DW-Conv"
    'fim_branch1': dict(fim_mode='branch1'),  # Table 3, "FIM only first branch"
    'fim_branch2': dict(fim_mode='branch2'),  # Table 3, "FIM only second branch"
    'wfm_concat': dict(wfm_mode='concat'),  # Table 4, "concatenation"
    'wfm_nosplit': dict(wfm_mode='nosplit'),  # Table 4, "WFM w/o splitting"
}
UP_MODES = ('single', 'stacked')
HEAD_REDUCTIONS = ('sum', 'max', 'per_head')
FIM_MODES = ('full', 'branch1', 'branch2', 'dwconv', 'position')
WFM_MODES = ('split', 'concat', 'nosplit')
# CSA only below 8x8 positions so that a 32x32 HR crop still runs the full RSA (region selection) at two levels.
TINY_CONFIG = dict(
    num_feat=8,
    num_blocks=1,
    extraction_heads=(1, 1, 2, 2),
    transformation_heads=2,
    recovery_heads=(2, 2, 1, 1),
    fim_reduction=2,
    img_size=32,
    csa_max_tokens=64,
    mlp_ratio=1.)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'LAAT: {name} must be one of {", ".join(map(repr, choices))}, got {value!r} '
                         f'(network_g:{name} in the options file).')


def _score_dtype(t):
    """Region scores are accumulated in float32 at least (bf16 / fp16 sums would make the top-k unstable)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _attention_column_sums(q, k, block_rows):
    """Column sums of each head's ``softmax(q k^T / sqrt(d))``, computed over blocks of query rows.

    Args:
        q, k (Tensor): (B, M, N, d).
        block_rows (int): Query rows per block.

    Returns:
        Tensor: (B, M, N) float32 (float64 for float64 inputs), ``sum_i AM[h, i, j]`` (eq. 10's ``Sum(AM)``).
    """
    # autocast would re-cast the matmuls below to bf16/fp16 and undo the float32 promise: it is off here
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        dtype = _score_dtype(q)
        q = q.to(dtype) * q.shape[-1]**-0.5
        k_t = k.to(dtype).transpose(-2, -1)
        cols = q.new_zeros(q.shape[0], q.shape[1], 1, q.shape[-2])
        for start in range(0, q.shape[-2], block_rows):
            # exp(S - rowmax) in place; sum_i softmax_ij = sum_i E_ij / Z_i is the vector-matrix product (1/Z)^T E.
            attn = q[:, :, start:start + block_rows] @ k_t
            attn.sub_(attn.amax(dim=-1, keepdim=True)).exp_()
            cols.add_(attn.sum(dim=-1).reciprocal_().unsqueeze(-2) @ attn)
    return cols.squeeze(2)


def _blocked_attention(q, k, v, block_rows, need_scores):
    """Explicit softmax attention over blocks of query rows, returning the output and (optionally) the column sums.

    Args:
        q, k, v (Tensor): (B, M, N, d).
        block_rows (int): Query rows per block.
        need_scores (bool): Also return the column sums of the attention map (see :func:`_attention_column_sums`).

    Returns:
        tuple[Tensor, Tensor | None]: Output (B, M, N, d) and the (B, M, N) float32 column sums or None.
    """
    q = q * q.shape[-1]**-0.5
    k_t = k.transpose(-2, -1)
    outs, cols = [], None
    if need_scores:
        cols = q.new_zeros(q.shape[:3], dtype=_score_dtype(q))
    for start in range(0, q.shape[-2], block_rows):
        attn = torch.softmax(q[:, :, start:start + block_rows] @ k_t, dim=-1)
        if need_scores:
            cols += attn.detach().to(cols.dtype).sum(dim=2)
        outs.append(attn.to(v.dtype) @ v)
    return torch.cat(outs, dim=-2), cols


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _to_tokens(x):
    """(B, C, H, W) -> (B, H*W, C), a view for both NCHW and channels_last inputs."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c) if _is_channels_last(x) else x.flatten(2).transpose(1, 2)


def _to_map(tokens, h, w, channels_last):
    """(B, H*W, C) -> (B, C, H, W) in the requested memory format."""
    b, _, c = tokens.shape
    if channels_last:
        return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return tokens.transpose(1, 2).reshape(b, c, h, w)


class MHSA(nn.Module):
    """Multi-head self-attention over tokens (eq. 9): ``Concat(softmax(Q K^T / sqrt(D_h)) V) W_o``.

    Args:
        dim (int): Token channels C'.
        num_heads (int): Heads M (``dim`` must be divisible by it).
        use_sdpa (bool): Compute the output with the fused ``F.scaled_dot_product_attention``.
        block_elems (int): Size budget (elements) of one block of the attention map on the explicit / score path.
    """

    def __init__(self, dim, num_heads, use_sdpa=True, block_elems=2**20):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'LAAT MHSA: channels ({dim}) must be divisible by the number of heads ({num_heads}).')
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.block_elems = block_elems
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _attend(self, q, k, v, need_scores):
        b, m, n, _ = q.shape
        block_rows = max(1, self.block_elems // max(1, b * m * n))
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
            return out, (_attention_column_sums(q, k, block_rows) if need_scores else None)
        return _blocked_attention(q, k, v, block_rows, need_scores)

    def forward(self, x, need_scores=False):
        """Args: x (Tensor): (B, N, C) tokens; need_scores (bool): also return the (B, M, N) column sums per head."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out, scores = self._attend(q, k, v, need_scores)
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), scores

    def forward_per_head(self, x):
        """Head h attends over its own tokens ``x[:, h]`` (``head_reduction='per_head'`` of :class:`RSA`).

        Args:
            x (Tensor): (B, M, P, C): for each head, the P tokens it selected.

        Returns:
            Tensor: (B, M, P, C), head h's output through its rows of ``W_o`` plus 1/M of the output bias, to be added
            at head h's positions (the M contributions of a position chosen by every head sum to the usual output).
        """
        b, m, p, c = x.shape
        d = c // m
        w_qkv = self.qkv.weight.view(3, m, d, c)  # rows of W_q, W_k, W_v that make head h's q, k, v
        q, k, v = (torch.einsum('bhpc,thdc->tbhpd', x, w_qkv.to(x.dtype)) +
                   self.qkv.bias.view(3, 1, m, 1, d).to(x.dtype)).unbind(0)
        out, _ = self._attend(q, k, v, False)  # (B, M, P, d)
        w_o = self.proj.weight.view(c, m, d).to(out.dtype)
        return torch.einsum('bhpd,chd->bhpc', out, w_o) + self.proj.bias.to(out.dtype) / m


class FIM(nn.Module):
    """Feature Integration Module (Sec. 3.2, Fig. 3): ``x + CA(DW(x)) + DW(CA(x))``, and Table 3's variants.

    Args:
        num_feat (int): Channels.
        reduction (int): Channel-attention reduction. The paper does not give it; 16 is RCAN's value, which the channel
            attention of Fig. 3 (adaptive average pooling, two 1x1 convs, sigmoid) follows.
        mode (str): ``'full'`` (the paper's FIM); Table 3's ablations: ``'branch1'`` (``x + CA(DW(x))``, "FIM only
            first branch"), ``'branch2'`` (``x + DW(CA(x))``), ``'dwconv'`` (``x + DW(x)``, "DW-Conv"). The ablations
            keep FIM's identity path (OPEN: the paper does not say whether the replacement keeps it; keeping it changes
            only what the table compares, the branch content). ``'position'`` is :class:`LearnedPosition`.
    """

    def __init__(self, num_feat, reduction=16, mode='full'):
        super().__init__()
        _check_choice('fim_mode', mode, FIM_MODES[:4])
        self.mode = mode
        if mode in ('full', 'branch1'):
            self.branch1 = nn.Sequential(
                nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=num_feat), ChannelAttention(num_feat, reduction))
        if mode in ('full', 'branch2'):
            self.branch2 = nn.Sequential(
                ChannelAttention(num_feat, reduction), nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=num_feat))
        if mode == 'dwconv':
            self.dwconv = nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=num_feat)

    def forward(self, x):
        if self.mode == 'full':
            return x + self.branch1(x) + self.branch2(x)
        if self.mode == 'branch1':
            return x + self.branch1(x)
        if self.mode == 'branch2':
            return x + self.branch2(x)
        return x + self.dwconv(x)


class LearnedPosition(nn.Module):
    """Table 3's "learnable position parameters" in place of FIM: ``x + P``, one learned value per channel and position.

    Args:
        num_feat (int): Channels.
        size (tuple[int]): (H, W) of the map at the HR size the network is built for (``LAAT.img_size``). At other
            sizes P is bicubic-interpolated (the usual treatment of learned position encodings, e.g. ViT / SwinIR).
    """

    def __init__(self, num_feat, size):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, num_feat, *size))
        nn.init.trunc_normal_(self.pos, std=.02)  # ViT's / SwinIR's initialisation of learned position embeddings

    def forward(self, x):
        pos = self.pos
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode='bicubic', align_corners=False)
        return x + pos.to(x.dtype)


class PatchUpsample(nn.ConvTranspose2d):
    """Transposed conv whose kernel equals its stride (no overlap), computed as a 1x1 conv + pixel shuffle.

    Same parameters and result as ``nn.ConvTranspose2d(dim, dim, factor, stride=factor)``, several times faster on CPUs
    (the transposed-conv kernels of oneDNN are slow for this shape).
    """

    def __init__(self, dim, factor):
        super().__init__(dim, dim, factor, stride=factor)
        self.factor = factor

    def forward(self, x):
        f = self.factor
        weight = self.weight.permute(1, 2, 3, 0).reshape(-1, self.in_channels, 1, 1)  # (C_out * f * f, C_in, 1, 1)
        return F.pixel_shuffle(F.conv2d(x, weight.to(x.dtype), self.bias.repeat_interleave(f * f).to(x.dtype)), f)


class RSA(nn.Module):
    """Region Selection Attention (Sec. 3.2, eq. 7-12, Fig. 2); with ``lam == 1`` the coarse self-attention (CSA) alone.

    Args:
        dim (int): Channels C'.
        num_heads (int): Heads M of both MHSAs.
        lam (int): Down-sampling factor lambda (eq. 7). 1 gives CSA only: global MHSA over the FIM output, no region
            branch, no re-sampling (Sec. 4.2).
        region_size (int | None): Side of one region in full-resolution positions. None: ``lam``, i.e. the lambda x
            lambda footprint of one coarse token, as eq. 10's ``GetIndex`` maps a coarse index to ``F_input``. A
            multiple of ``lam`` pools the coarse scores over regions of that size, and k is scaled so that the same
            number of positions (``k * lam**2``) is refined.
        fim_reduction (int): Channel-attention reduction in :class:`FIM`.
        share_fim (bool): One FIM for ``F_input`` and ``F_coarse``. Default True: eq. 8 applies the same ``H_FIM`` to
            both maps.
        share_attention (bool): One MHSA (same W_q, W_k, W_v, W_o) for the coarse and the region attention. Default
            False: eq. 11 writes a second MHSA, and the two act on maps of different scales.
        use_sdpa (bool): Fused attention for the outputs (the region scores always come from the blocked path).
        block_elems (int): Size budget of one block of the attention map when computing the region scores.
        up_mode (str): eq. 12's ``Upsample`` (DEVIATION, module docstring): ``'single'`` one lambda x lambda
            stride-lambda transposed conv; ``'stacked'`` log2(lambda) 4x4 stride-2 transposed convs.
        head_reduction (str): How eq. 10's per-head scores choose the regions (OPEN, module docstring): ``'sum'``,
            ``'max'`` or ``'per_head'``.
        region_selection (bool): False is Table 2's "CSA" ablation at lambda > 1: ``DWConv(F_input +
            Upsample(Output_c))``, no key-region branch (so no FIM on ``F_input``).
        fim_mode (str): :class:`FIM` mode, or ``'position'`` (:class:`LearnedPosition`, Table 3).
        pos_size (tuple[int] | None): (H', W') at the built HR size; needed by ``fim_mode='position'``.
        csa_downsample (bool): At ``lam == 1``, eq. 7's ``Downsample`` as the paper defines it, a 1x1 conv (kernel
            and stride lambda = 1) before FIM. Default True. False leaves it out: CSA attends over ``FIM(F_input)``
            (the plugin's network before this option existed; see the module docstring). No effect when lam > 1.
    """

    def __init__(self,
                 dim,
                 num_heads,
                 lam=4,
                 region_size=None,
                 fim_reduction=16,
                 share_fim=True,
                 share_attention=False,
                 use_sdpa=True,
                 block_elems=2**20,
                 up_mode='single',
                 head_reduction='sum',
                 region_selection=True,
                 fim_mode='full',
                 pos_size=None,
                 csa_downsample=True):
        super().__init__()
        _check_choice('up_mode', up_mode, UP_MODES)
        _check_choice('head_reduction', head_reduction, HEAD_REDUCTIONS)
        _check_choice('fim_mode', fim_mode, FIM_MODES)
        self.lam = lam
        self.region_size = lam if region_size is None else region_size
        if self.region_size % lam:
            raise ValueError(f'LAAT RSA: region_size ({region_size}) must be a multiple of lambda ({lam}).')
        self.head_reduction = head_reduction
        self.region_selection = region_selection or lam == 1
        if fim_mode == 'position' and pos_size is None:
            raise ValueError('LAAT RSA: fim_mode "position" needs pos_size (the map size at the built HR size).')

        def make_fim(size):
            return LearnedPosition(dim, size) if fim_mode == 'position' else FIM(dim, fim_reduction, fim_mode)

        self.fim = make_fim(pos_size) if self.region_selection else None
        self.coarse_attn = MHSA(dim, num_heads, use_sdpa, block_elems)
        if lam > 1 or csa_downsample:
            # eq. 7: lambda x lambda conv, stride lambda (at lambda = 1 a 1x1 conv, unless csa_downsample is False).
            self.down = nn.Conv2d(dim, dim, lam, stride=lam)
        else:
            self.down = None
        if lam > 1:
            coarse_size = None if pos_size is None else (max(1, pos_size[0] // lam), max(1, pos_size[1] // lam))
            shared = share_fim and fim_mode != 'position' and self.fim is not None  # P depends on the map size
            self.fim_coarse = self.fim if shared else make_fim(coarse_size)
            if self.region_selection:
                self.region_attn = self.coarse_attn if share_attention else MHSA(dim, num_heads, use_sdpa, block_elems)
            # eq. 12, DEVIATION (module docstring): the text's 4x4 stride-2 transposed conv cannot undo a stride-lambda
            # down-sampling; 'single': lambda x lambda with stride lambda; 'stacked': log2(lambda) 4x4 stride-2 ones.
            if up_mode == 'single':
                self.up = PatchUpsample(dim, lam)
            else:
                steps = int(round(math.log2(lam)))
                if 2**steps != lam:
                    raise ValueError(f'LAAT RSA: up_mode "stacked" needs a power-of-2 lambda, got {lam}.')
                self.up = nn.Sequential(*[nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1) for _ in range(steps)])
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.last_index = None  # flat positions refined in the last forward, kept when record_index is True
        self.record_index = False

    def num_regions(self, h, w):
        """k of eq. 10 for an H' x W' input: ``floor(sqrt(H'W') / lambda)`` (rescaled for a larger region_size)."""
        k = int(math.floor(math.sqrt(h * w) / self.lam))
        if self.region_size != self.lam:
            k = k * self.lam**2 // self.region_size**2
        return max(1, min(k, (h // self.region_size) * (w // self.region_size)))

    def reduce_heads(self, scores):
        """eq. 10's per-head ``Sum(AM)`` (B, M, n_c) -> the scores Topk ranks: (B, n_c), or (B, M, n_c) per head."""
        if self.head_reduction == 'sum':
            return scores.sum(dim=1)
        if self.head_reduction == 'max':
            return scores.amax(dim=1)
        return scores

    def select(self, scores, h, w):
        """Top-k regions from the coarse scores (eq. 10) as flat indices into the H' x W' positions.

        Args:
            scores (Tensor): (..., n_c) region scores on the coarse grid H'/lam x W'/lam (row-major).
            h, w (int): H', W' of the full-resolution map.

        Returns:
            Tensor: (..., k * region_size**2) long, the positions of the selected regions, region by region (row-major
            inside a region), best region first.
        """
        lead = scores.shape[:-1]
        scores = scores.reshape(-1, scores.shape[-1])
        b = scores.shape[0]
        rs, f = self.region_size, self.region_size // self.lam
        hr, wr = h // rs, w // rs
        if f > 1:
            scores = F.avg_pool2d(scores.view(b, 1, h // self.lam, w // self.lam), f).view(b, hr * wr)
        top = scores.topk(self.num_regions(h, w), dim=1).indices  # (B, k)
        offs = torch.arange(rs, device=scores.device)
        rows = (top // wr * rs)[:, :, None, None] + offs[:, None]  # (B, k, rs, 1)
        cols = (top % wr * rs)[:, :, None, None] + offs[None, :]  # (B, k, 1, rs)
        return (rows * w + cols).reshape(*lead, -1)

    def forward(self, x):
        """Args: x (Tensor): (B, C', H', W') = F_input (the layer-normalized block input). Returns (B, C', H', W')."""
        b, c, h, w = x.shape
        channels_last = _is_channels_last(x)
        if self.lam == 1:  # CSA: eq. 7-9 with lambda = 1 (a 1x1 conv, FIM, MHSA), Output_f = F_input, no re-sampling.
            coarse = x if self.down is None else self.down(x)
            out_c, _ = self.coarse_attn(_to_tokens(self.fim(coarse)))
            return self.dwconv(x + _to_map(out_c, h, w, channels_last).to(x.dtype))
        coarse = self.fim_coarse(self.down(x))  # eq. 7-8
        hc, wc = coarse.shape[-2:]
        out_c, scores = self.coarse_attn(_to_tokens(coarse), need_scores=self.region_selection)  # eq. 9
        up = self.up(_to_map(out_c, hc, wc, channels_last))
        if not self.region_selection:  # Table 2's CSA: Output_f is F_input itself
            return self.dwconv(x + up.to(x.dtype))
        x_hat = self.fim(x)  # eq. 8
        index = self.select(self.reduce_heads(scores), h, w)  # eq. 10
        if self.record_index:
            self.last_index = index
        # eq. 11: SelectByIndex on the FIM output, MHSA, AddByIndex into F_input. Gather through a (B, N, C) token view.
        flat = index.reshape(b, -1)
        regions = _to_tokens(x_hat).gather(1, flat[:, :, None].expand(-1, -1, c))
        if self.head_reduction == 'per_head':
            refined = self.region_attn.forward_per_head(regions.view(b, *index.shape[1:], c)).reshape(b, -1, c)
        else:
            refined, _ = self.region_attn(regions)
        refined = refined.to(x.dtype)
        if channels_last:
            out_f = x.permute(0, 2, 3, 1).reshape(b, h * w, c).scatter_add(1, flat[:, :, None].expand(-1, -1, c),
                                                                           refined)
            out_f = out_f.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out_f = x.reshape(b, c, h * w).scatter_add(2, flat[:, None, :].expand(-1, c, -1), refined.transpose(1, 2))
            out_f = out_f.view(b, c, h, w)
        return self.dwconv(out_f + up.to(out_f.dtype))  # eq. 12


class RSABlock(nn.Module):
    """RSA block (eq. 6): ``F' = RSA(LN(F)) + F``, ``out = MLP(LN(F')) + F'``.

    Args:
        dim (int): Channels.
        num_heads (int): Heads.
        mlp_ratio (float): Hidden width of the MLP relative to ``dim``. The paper does not give it; 2 is SwinIR's value
            (the Transformer the paper compares with and whose block layout eq. 6 follows).
        **rsa_kwargs: Passed to :class:`RSA` (lam, region_size, fim_reduction, share_fim, share_attention, ...).
    """

    def __init__(self, dim, num_heads, mlp_ratio=2., **rsa_kwargs):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = LayerNorm2d(dim)
        self.attn = RSA(dim, num_heads, **rsa_kwargs)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WFM(nn.Module):
    """Wavelet Fusion Module (Sec. 3.4, eq. 17-19), and Table 4's variants.

    ``'split'`` (the paper's): ``F_L, F_R = Split(F)`` (first and second half of the channels, eq. 17);
    ``WIT(LL, LH, HL, HH=F_L)`` and a 4x4 stride-2 transposed conv of ``F_R`` (eq. 18); concatenation and a 1x1 conv to
    half the input channels (eq. 19).

    Args:
        dim (int): Channels of the deep feature ``F_rs``. The shallow LL, LH, HL have ``dim // 2`` channels (``dim`` for
            ``'nosplit'``).
        mode (str): ``'split'``; Table 4's ablations: ``'nosplit'`` ("WFM w/o splitting": the whole ``F_rs`` is the HH
            band of the WIT, then the 1x1 conv; no up-sampling branch) and ``'concat'`` ("concatenation": the WIT is
            replaced by a concatenation, ``Conv1x1(Concat[Near2x(Concat[F_L, LL, LH, HL]), Upsample(F_R)])`` with
            parameter-free nearest-neighbour 2x re-sampling, as the WIT has no parameters either. OPEN: the paper says
            only "replaced WFM with a concatenation operation"; this keeps every other part of WFM).
    """

    def __init__(self, dim, mode='split'):
        super().__init__()
        _check_choice('wfm_mode', mode, WFM_MODES)
        self.mode = mode
        half = dim // 2
        if mode != 'nosplit':
            self.up = nn.ConvTranspose2d(half, half, 4, stride=2, padding=1)
        self.fuse = nn.Conv2d({'split': dim, 'concat': 5 * half, 'nosplit': dim}[mode], half, 1)

    def forward(self, x, ll, lh, hl):
        if self.mode == 'nosplit':
            return self.fuse(haar_iwt(ll, lh, hl, x))
        x_l, x_r = x.chunk(2, dim=1)  # eq. 17
        if self.mode == 'split':
            x_l = haar_iwt(ll, lh, hl, x_l)  # eq. 18
        else:
            x_l = F.interpolate(torch.cat([x_l, ll, lh, hl], dim=1), scale_factor=2, mode='nearest')
        return self.fuse(torch.cat([x_l, self.up(x_r)], dim=1))  # eq. 19


@ARCH_REGISTRY.register()
class LAAT(nn.Module):
    """LAAT face super-resolution network (Sec. 3, Fig. 1). Input: LR (N, 3, h, w) in [0, 1]; output: (N, 3, h*s, w*s).

    Args:
        upscale (int): Scale factor s. The paper reports 8 only; 4 (and 2) are extensions. The LR face is
            bicubic-upsampled to h*s x w*s inside (eq. 1's ``I^L``).
        num_feat (int): C, the channels after eq. 1 (32, Sec. 4.2). Step i of the extraction stage has ``C * 2**(i-1)``
            channels; the transformation stage works on ``8C`` (= 256) channels, which is exactly F_es^4's width, so no
            projection is needed to reach the paper's 256; recovery step j has ``C * 2**(5-j)`` channels.
        num_blocks (int): RSA blocks per step (2, Sec. 3.1).
        extraction_heads (tuple[int]): Heads of the 4 extraction steps (2^(i-1), Sec. 4.2).
        transformation_heads (int): Heads of the transformation stage (16, Sec. 4.2).
        recovery_heads (tuple[int]): Heads of the 4 recovery steps (2^(4-j), Sec. 4.2).
        lam (int): lambda of the full RSA (4, Sec. 4.2).
        csa_max_tokens (int): Maps with at most this many positions use CSA only (lambda = 1): 32*32 (Sec. 4.2).
        img_size (int | tuple[int]): HR size used to apply the rule above when the network is built (the per-level
            choice of RSA or CSA fixes which weights exist). Default 128, the paper's training size. Other HR sizes run
            with the same per-level choice as long as they are multiples of the level factors (see ``size_multiple``).
        region_size (int | None): Region side (see :class:`RSA`); None = lambda, the paper's coarse-token footprint.
        mlp_ratio (float): MLP width ratio (see :class:`RSABlock`). Not given by the paper; it sets most of the model
            size (x8: 14.61M parameters at 2, 18.62M at 4).
        fim_reduction (int): Channel-attention reduction in FIM (see :class:`FIM`).
        share_fim (bool): One FIM for the full and the coarse map in RSA (eq. 8 uses one ``H_FIM``).
        share_attention (bool): One MHSA for the coarse and the region attention (see :class:`RSA`).
        negative_slope (float): LeakyReLU slope of eq. 1 and of the final conv. The paper does not give it; 0.2 is the
            usual value in BasicSR's networks.
        final_act (bool): The LeakyReLU after the last 3x3 conv (Sec. 3.1: "a 3x3 convolution and a LeakyReLU activation
            to obtain the residual image"). Default True, as written in the paper.
        use_sdpa (bool): Fused ``F.scaled_dot_product_attention`` for every attention output (same result as the
            explicit path; the region scores are always computed by the blocked explicit softmax).
        channels_last (bool): Keep the feature maps in ``torch.channels_last`` memory format (faster convs on GPUs).
        block_elems (int): Size budget (elements) of one block of an attention map on the blocked path.
        up_mode (str): eq. 12's up-sampling, ``'single'`` (default) or ``'stacked'`` (DEVIATION, module docstring).
        head_reduction (str): eq. 10's reduction over heads, ``'sum'`` (default), ``'max'`` or ``'per_head'`` (OPEN,
            module docstring).
        region_selection (bool): False: Table 2's "CSA" ablation (no key-region branch where lambda = 4).
        fim_mode (str): ``'full'`` (the paper's FIM) or a Table 3 ablation: ``'position'``, ``'dwconv'``,
            ``'branch1'``, ``'branch2'`` (see :class:`FIM`, :class:`LearnedPosition`).
        wfm_mode (str): ``'split'`` (the paper's WFM) or a Table 4 ablation: ``'concat'``, ``'nosplit'`` (see
            :class:`WFM`).
        csa_downsample (bool): eq. 7's ``Downsample`` in the CSA blocks (lambda = 1), a 1x1 conv, as the paper
            defines it (default True). False leaves it out, CSA attending over ``FIM(F_input)`` (module docstring).
    """

    def __init__(self,
                 upscale=8,
                 num_feat=32,
                 num_blocks=2,
                 extraction_heads=(1, 2, 4, 8),
                 transformation_heads=16,
                 recovery_heads=(8, 4, 2, 1),
                 lam=4,
                 csa_max_tokens=32 * 32,
                 img_size=128,
                 region_size=None,
                 mlp_ratio=2.,
                 fim_reduction=16,
                 share_fim=True,
                 share_attention=False,
                 negative_slope=0.2,
                 final_act=True,
                 use_sdpa=True,
                 channels_last=False,
                 block_elems=2**20,
                 up_mode='single',
                 head_reduction='sum',
                 region_selection=True,
                 fim_mode='full',
                 wfm_mode='split',
                 csa_downsample=True):
        super().__init__()
        if upscale not in (2, 4, 8):
            raise ValueError(f'LAAT: upscale must be 4 or 8 (2 also works), got {upscale}.')
        _check_choice('wfm_mode', wfm_mode, WFM_MODES)
        self.upscale = upscale
        self.channels_last = channels_last
        img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if img_h % 8 or img_w % 8:
            raise ValueError(f'LAAT: img_size {img_h}x{img_w} must be a multiple of 8 (three 2x down-samplings).')
        # lambda per pyramid level (level l works on HR size / 2**l): CSA where the map has <= csa_max_tokens positions.
        self.level_lams = [1 if (img_h >> lvl) * (img_w >> lvl) <= csa_max_tokens else lam for lvl in range(4)]
        rs = region_size or lam
        hr_multiple = 8
        for lvl, lvl_lam in enumerate(self.level_lams):
            if lvl_lam > 1:
                hr_multiple = hr_multiple * (2**lvl * rs) // math.gcd(hr_multiple, 2**lvl * rs)
        self.hr_multiple = hr_multiple
        self.size_multiple = hr_multiple // math.gcd(hr_multiple, upscale)  # at LR size

        def stage(dim, heads, lvl):
            return nn.Sequential(*[
                RSABlock(
                    dim,
                    heads,
                    mlp_ratio,
                    lam=self.level_lams[lvl],
                    region_size=region_size if self.level_lams[lvl] > 1 else None,
                    fim_reduction=fim_reduction,
                    share_fim=share_fim,
                    share_attention=share_attention,
                    use_sdpa=use_sdpa,
                    block_elems=block_elems,
                    up_mode=up_mode,
                    head_reduction=head_reduction,
                    region_selection=region_selection,
                    fim_mode=fim_mode,
                    pos_size=(img_h >> lvl, img_w >> lvl),
                    csa_downsample=csa_downsample) for _ in range(num_blocks)
            ])

        c = num_feat
        self.conv_first = nn.Conv2d(3, c, 3, padding=1)  # eq. 1
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.extraction = nn.ModuleList([stage(c * 2**i, extraction_heads[i], i) for i in range(4)])  # eq. 2
        self.downs = nn.ModuleList([nn.Conv2d(c * 2**i, c * 2**(i + 1), 4, stride=2, padding=1) for i in range(3)])
        # eq. 3: 3x3 convs on LL / LH / HL of step i, to the width of the deep half they meet in WFM (2x step i's); the
        # whole deep feature's width (4x step i's) for Table 4's WFM w/o splitting.
        band = 4 if wfm_mode == 'nosplit' else 2
        self.wt_convs = nn.ModuleList(
            [nn.ModuleList([nn.Conv2d(c * 2**i, c * 2**i * band, 3, padding=1) for _ in range(3)]) for i in range(3)])
        self.transformation = stage(c * 8, transformation_heads, 3)  # eq. 4
        self.recovery = nn.ModuleList([stage(c * 2**(4 - j), recovery_heads[j], 3 - j) for j in range(4)])  # eq. 5
        self.wfms = nn.ModuleList([WFM(c * 2**(4 - j), wfm_mode) for j in range(3)])
        self.conv_last = nn.Conv2d(2 * c, 3, 3, padding=1)
        self.act_last = nn.LeakyReLU(negative_slope) if final_act else nn.Identity()

    def forward(self, x):
        check_divisible(
            x, self.size_multiple, 'LAAT',
            f'This LAAT (x{self.upscale}, lambda per pyramid level {self.level_lams}) takes HR sizes that are '
            f'multiples of {self.hr_multiple}, i.e. LR heights and widths that are multiples of {self.size_multiple}.')
        h, w = x.shape[-2:]
        img_l = upsample_to(x, size=(h * self.upscale, w * self.upscale))  # I^L
        feat = self.conv_first(img_l)
        if self.channels_last:
            feat = feat.contiguous(memory_format=torch.channels_last)
        feat = self.act(feat)  # F_es^0
        skips = []
        for i in range(4):
            feat = self.extraction[i](feat)  # \hat F_es^i
            if i < 3:
                ll, lh, hl, _ = haar_wt(feat)
                skips.append([conv(band) for conv, band in zip(self.wt_convs[i], (ll, lh, hl))])
                feat = self.downs[i](feat)  # F_es^i
        feat = torch.cat([self.transformation(feat), feat], dim=1)  # F_ts
        feat = self.recovery[0](feat)  # F_rs^1
        for j in range(1, 4):
            feat = self.recovery[j](self.wfms[j - 1](feat, *skips[3 - j]))  # F_rs^(j+1), step i = 5 - (j + 1)
        return img_l + self.act_last(self.conv_last(feat))
