"""W-Net: a W-shaped face super-resolution network guided by an estimated face parsing map.

Paper: "W-Net: A Facial Feature-Guided Face Super-Resolution Network" (../shared/papers/wnet.txt). Code-to-paper map:

- :class:`ParsingBlock` (Sec. 3.1, Fig. 2, eq. 2-8): ``f3x3,64`` shallow features (eq. 2), residual blocks + hourglass
  of depth 4 (eq. 3), the multi-scale feature attention unit y1..y7 with channel (CA) and spatial (SA) attention
  (eq. 4-7) and the ``f3x3,3`` parsing output (eq. 8). It runs on the LR image at LR size: the paper's parsing targets
  are the binarized BiSeNet maps bicubic-downsampled to 32x32 / 16x16 (Sec. 4.2), i.e. the LR size.
- :class:`LPF` (Sec. 3.2, Fig. 3, eq. 9-11): the three 3x3 convs, the CA + spatial-attention branch ``F_Att``, the
  pixel-attention weighted sum ``F_pixel``, the two fusions ``F_fuse1`` / ``F_fuse2`` and the skip sums of eq. 11.
- The W-shaped multi-scale path (Sec. 3.3, eq. 12-19) in :meth:`WNet.forward`: concat the image and its parsing map
  (eq. 12), nearest-resized parsing maps ``I_NN^k`` (eq. 13), up-sampling x2, x4, x8 with ``f3x3,64`` + :class:`UpBlock`
  each followed by an LPF (eq. 14-17), then down-sampling with ``f3x3,64`` + :class:`DownBlock` each followed by an LPF
  back to the start size (eq. 18-19). One :class:`WPathStage` = ``LPF(Up/Down(f3x3,64(F)), I_NN)``; the first stage's
  ``f3x3,64`` takes the 6-channel concatenation of eq. 12 directly (eq. 14: one conv, no extra ``conv_first``).
- :class:`SCAB` (Sec. 3.3, eq. 20-21): RCAB + convolutional self-attention with 4 heads, ``out = y + Att(y)``,
  ``y = RCAB(x)``; ``Q = f1x1(f_dconv3x3(F))`` (depth-wise first) and ``Softmax(Q K / sqrt(d)) V`` (see
  :class:`SCABAttention` for channel vs spatial maps).
- Encoder / decoder (eq. 22-23): 4 x (down-sample, 2 SCABs, LPF with the nearest-down-sampled parsing map: 64, 32, 16, 8
  for a 128x128 face), then 4 x (up-sample, 2 SCABs) back to the HR size, and a 3x3 conv to RGB.

Reading of the sizes. The paper says the W path reaches 1024x1024 and comes back to 128x128 for a 128x128 face, and that
the encoder fuses parsing maps of 64..8: so the W path starts at the HR size. The network therefore bicubic-upsamples
the LR face to the HR size inside forward (``I^d`` of eq. 1, ``common.upsample_to``), predicts the parsing map at LR
size and nearest-upsamples it to the HR size (``I_NN^1``) and to 2x, 4x, 8x the HR size (``I_NN^2..8``).

Outputs. ``forward(lq)`` returns the SR image (N, 3, h*s, w*s) so that BasicSR's ``SRModel.test`` works unchanged.
``forward(lq, return_parsing=True)`` (or the attribute ``net.return_parsing = True``) returns ``(sr, parsing)`` with the
parsing map at LR size (N, parsing_channels, h, w), which the W-Net model compares with the dataset's
``parsing_bin_lq``.

Parsing channels. Eq. 8 outputs 3 channels although the map is binary (skin = 1): the paper's maps were most likely
stored as 3-channel images of a binary mask. ``parsing_channels=3`` (default) keeps the paper's layer; the W-Net model
compares every channel with the 1-channel binary target (the target is broadcast, so the MSE equals the per-channel MSE
averaged). ``parsing_channels=1`` is the leaner equivalent.

Layers kept although the paper's module lists do not name them (each with its reason):

- DEVIATION (kept, needed): ``Upsample`` / ``Downsample`` are "Pixel Shuffle layers and BatchNorm layers" /
  "invPixelShuffle layers and BatchNorm layers" (eq. 14, 18). A pixel (un)shuffle divides (multiplies) the channels by
  4, and eq. 22-23 chain ``Downsample`` x4 and ``Upsample`` x4 between fixed-width SCABs with no channel-adjusting conv,
  so each module must restore the width: :class:`UpBlock` has one 3x3 conv C -> 4C before the shuffle (ESPCN / EDSR /
  BasicSR's ``Upsample``), :class:`DownBlock` one 3x3 conv 4C -> C after the inverse shuffle. One conv is the minimum
  that keeps the width; no other conv is added.
- OPEN (eq. 4-5 give no widths): y2, y3 are 3x3 convs C -> C/2 ("to reduce the dimensionality"), y4 doubles the
  channels of its input (the concatenation, 2C -> 4C, "a convolution layer with doubled channels"), y5 halves those of
  its input (y3, C/2 -> C/4, "halved channels"). ``ParsingBlock.widths`` lists them.

Deviations and open choices (all constructor arguments):

- ``attn_mode`` (default ``'channel'``, see :class:`SCABAttention`), ``attn_scaling`` (default ``'sqrt_d'``, eq. 21) and
  ``attn_order`` (default ``'dw_first'``, eq. 20) of the SCAB self-attention.
- ``num_up_levels`` (default 3 = the paper: x2, x4, x8): fewer levels make the W shallower (2: up to 4x the HR size,
  512x512 for a 128 face; 0: a single LPF at the HR size). Anything below 3 is a DEVIATION from the paper for memory.
- ``use_checkpoint`` (default False) with ``checkpoint_tile_pixels``: the memory saving (not in the paper; same outputs
  and gradients). Encoder/decoder stages are checkpointed whole; every W-path stage is computed in row strips with
  halos (:meth:`WPathStage.forward_tiled`): the pre-BatchNorm features are kept whole, BatchNorm's batch statistics and
  the LPF channel attention's global mean are computed first (also strip by strip), then each strip of the LPF is
  computed under its own checkpoint. Peak training memory of the paper configuration drops from ~6 GiB to under 2 GiB
  per face (``scripts/bench_wnet.py``). BatchNorm running statistics are updated once per step, as without the saving.
- In eq. 10 ``F_fuse2 = f1x1(F_pixel + F_LR + F_parsing)`` adds the raw parsing map (3 channels) to 64-channel features;
  we use the 64-channel ``F'_parsing`` there (the only sum with matching shapes).
- The encoder-decoder skips (``enc_dec_skip``) and the global bicubic residual (``global_residual``) are not described
  in the text; both default to True (usual for encoder-decoder SR networks; without skips every detail would have to
  pass the 8x8 bottleneck).
"""
import contextlib
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from fsr_arch.common import (RCAB, ChannelAttention, ConvSelfAttention, ResidualBlockNoBN, SpatialAttention,
                             check_divisible, upsample_to)

__all__ = [
    'WNet', 'ParsingBlock', 'LPF', 'SCAB', 'SCABAttention', 'UpBlock', 'DownBlock', 'HourGlass', 'WPathStage',
    'PAPER_CONFIGS', 'TINY_CONFIG'
]


class HourGlass(nn.Module):
    """Recursive hourglass (Newell et al.; FSRNet's prior estimation network) built from residual blocks.

    ``out = res(x) + up(res(HG_{d-1}(res(maxpool(x)))))``, nearest up-sampling; depth ``d`` halves the size ``d`` times.

    Args:
        num_feat (int): Channels.
        depth (int): Number of poolings. Default: 4 (the paper).
    """

    def __init__(self, num_feat, depth=4):
        super().__init__()
        self.depth = depth
        self.up1 = ResidualBlockNoBN(num_feat)
        self.low1 = ResidualBlockNoBN(num_feat)
        self.low2 = HourGlass(num_feat, depth - 1) if depth > 1 else ResidualBlockNoBN(num_feat)
        self.low3 = ResidualBlockNoBN(num_feat)

    def forward(self, x):
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return up1 + F.interpolate(low, size=x.shape[-2:], mode='nearest')


class ParsingBlock(nn.Module):
    """Parsing Block (Sec. 3.1, Fig. 2, eq. 2-8): LR image -> parsing map at the same size.

    ``F_deep = HG(Res(f3x3,64(I_LR)))`` (eq. 2-3); ``y1 = act(f1x1(F_deep))``, ``y2 = act(f3x3(F_deep))``,
    ``y3 = act(f3x3(F_deep))`` (eq. 4); ``y4 = act(f3x3([y1, y2, y3]))``, ``y5 = act(f3x3(y3))`` (eq. 5);
    ``y6 = CA([y2, y4, y5]) + SA([y2, y4, y5])`` (eq. 6); ``out = f3x3,3(f1x1(y6) + F_deep)`` (eq. 7-8). ``act`` is ReLU
    (the activation of eq. 3's residual blocks; eq. 4-5 do not name theirs). Widths: see the module docstring (OPEN).

    Args:
        in_ch (int): Input channels (RGB). Default: 3.
        num_feat (int): Width. Default: 64 (eq. 2, ``f3x3,64``).
        num_res_blocks (int): Residual blocks before the hourglass (eq. 3); the paper does not give the number.
            Default: 3 (FSRNet's prior estimation network, which the paper cites for this residual + hourglass design).
        hg_depth (int): Hourglass depth. Default: 4 (the paper).
        parsing_channels (int): Output channels of eq. 8. Default: 3 (the paper).
    """

    def __init__(self, in_ch=3, num_feat=64, num_res_blocks=3, hg_depth=4, parsing_channels=3):
        super().__init__()
        c = num_feat
        if c % 4:
            raise ValueError(f'ParsingBlock: num_feat ({c}) must be a multiple of 4 (y2, y3 halve it, y5 halves y3).')
        self.conv_shallow = nn.Conv2d(in_ch, c, 3, 1, 1)  # eq. 2
        self.res_blocks = nn.Sequential(*[ResidualBlockNoBN(c) for _ in range(num_res_blocks)])  # eq. 3, F_Res
        self.hourglass = HourGlass(c, hg_depth)  # eq. 3, F_HG
        act = nn.ReLU(inplace=True)
        # eq. 4: y1 (1x1, adjusts channels), y2, y3 (3x3, "reduce the dimensionality": C/2). eq. 5: y4 doubles the
        # channels of the concatenation, y5 halves those of y3 (the paper gives no numbers: see the module docstring).
        self.widths = dict(y1=c, y2=c // 2, y3=c // 2, y4=2 * (c + c // 2 + c // 2), y5=c // 4)
        w = self.widths
        self.y1 = nn.Sequential(nn.Conv2d(c, w['y1'], 1), act)
        self.y2 = nn.Sequential(nn.Conv2d(c, w['y2'], 3, 1, 1), act)
        self.y3 = nn.Sequential(nn.Conv2d(c, w['y3'], 3, 1, 1), act)
        self.y4 = nn.Sequential(nn.Conv2d(w['y1'] + w['y2'] + w['y3'], w['y4'], 3, 1, 1), act)
        self.y5 = nn.Sequential(nn.Conv2d(w['y3'], w['y5'], 3, 1, 1), act)
        cat_ch = w['y2'] + w['y4'] + w['y5']
        self.ca = ChannelAttention(cat_ch, reduction=16)  # eq. 6
        self.sa = SpatialAttention()  # eq. 6
        self.y7 = nn.Conv2d(cat_ch, c, 1)  # eq. 7
        self.conv_out = nn.Conv2d(c, parsing_channels, 3, 1, 1)  # eq. 8

    def forward(self, x):
        deep = self.hourglass(self.res_blocks(self.conv_shallow(x)))
        y1, y2, y3 = self.y1(deep), self.y2(deep), self.y3(deep)
        y4 = self.y4(torch.cat([y1, y2, y3], dim=1))
        y5 = self.y5(y3)
        cat = torch.cat([y2, y4, y5], dim=1)
        y6 = self.ca(cat) + self.sa(cat)
        feat = self.y7(y6) + deep
        return self.conv_out(feat)


class PixelAttention(nn.Module):
    """Pixel attention (PAN): a per-pixel, per-channel weight ``sigmoid(conv1x1(x))`` (the ``PA`` of eq. 10)."""

    def __init__(self, num_feat):
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat, 1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class LPF(nn.Module):
    """LR-Parsing map Fusion module (Sec. 3.2, Fig. 3, eq. 9-11).

    ``F_LR^(1) = f3x3(F_LR)``, ``F_LR^(2) = f3x3(F_LR)``, ``F'_p = f3x3(F_parsing)`` (eq. 9);
    ``F_Att = f3x3(CA(F_LR^(1)) + SPA(F_LR^(1)))``, ``sigma = PA(F_LR^(2) + F'_p)``,
    ``F_pixel = sigma F_LR^(2) + (1 - sigma) F'_p``, ``F_fuse1 = f3x3([F_Att, F'_p])``,
    ``F_fuse2 = f1x1(F_pixel + F_LR + F'_p)`` (eq. 10, ``F'_p`` for ``F_parsing``: see the module docstring);
    ``F_fused = F_fuse1 + F_fuse2 + F_LR^(2) + F'_p`` (eq. 11).

    Args:
        num_feat (int): Channels of the image features ``F_LR``.
        parsing_channels (int): Channels of the parsing map.
    """

    # Receptive radius (pixels) of the output given the channel-attention weights: conv_lr1 (1) + SPA's 7x7 (3) +
    # conv_att (1) + conv_fuse1 (1). Used by the strip-wise computation of WPathStage.
    radius = 6

    def __init__(self, num_feat=64, parsing_channels=3):
        super().__init__()
        c = num_feat
        self.conv_lr1 = nn.Conv2d(c, c, 3, 1, 1)  # eq. 9, F_LR^(1)
        self.conv_lr2 = nn.Conv2d(c, c, 3, 1, 1)  # eq. 9, F_LR^(2)
        self.conv_par = nn.Conv2d(parsing_channels, c, 3, 1, 1)  # eq. 9, F'_parsing
        self.ca = ChannelAttention(c)
        self.spa = SpatialAttention()
        self.conv_att = nn.Conv2d(c, c, 3, 1, 1)  # eq. 10, F_Att
        self.pa = PixelAttention(c)  # eq. 10, sigma
        self.conv_fuse1 = nn.Conv2d(2 * c, c, 3, 1, 1)  # eq. 10, F_fuse1
        self.conv_fuse2 = nn.Conv2d(c, c, 1)  # eq. 10, F_fuse2

    def channel_weights(self, pooled):
        """CA's excitation ``sigmoid(W2 relu(W1 p))`` of the (N, C, 1, 1) spatial mean ``p`` of ``F_LR^(1)``."""
        return self.ca.attention[1:](pooled)

    def forward(self, feat, parsing, ca_weights=None):
        """Eq. 9-11. ``ca_weights`` (N, C, 1, 1): CA's weights computed beforehand (strip-wise computation)."""
        lr1 = self.conv_lr1(feat)
        lr2 = self.conv_lr2(feat)
        par = self.conv_par(parsing)
        ca = self.ca(lr1) if ca_weights is None else lr1 * ca_weights
        att = self.conv_att(ca + self.spa(lr1))
        sigma = self.pa(lr2 + par)
        pixel = sigma * lr2 + (1 - sigma) * par
        fuse1 = self.conv_fuse1(torch.cat([att, par], dim=1))
        fuse2 = self.conv_fuse2(pixel + feat + par)  # F_parsing of eq. 10 taken as F'_parsing (see module docstring)
        return fuse1 + fuse2 + lr2 + par  # eq. 11


class UpBlock(nn.Sequential):
    """x2 ``Upsample`` of eq. 14: conv3x3 (C -> 4C, keeps the width: see the module docstring), pixel shuffle, BN."""

    def __init__(self, num_feat):
        super().__init__(nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(num_feat))


class DownBlock(nn.Sequential):
    """/2 ``Downsample`` of eq. 18: inverse pixel shuffle, conv3x3 (4C -> C, keeps the width), BatchNorm."""

    def __init__(self, num_feat):
        super().__init__(nn.PixelUnshuffle(2), nn.Conv2d(4 * num_feat, num_feat, 3, 1, 1), nn.BatchNorm2d(num_feat))


class SCABAttention(ConvSelfAttention):
    """SCAB's self-attention (eq. 20-21): ``Q, K, V = f1x1(f_dconv3x3(F))``, ``Softmax(Q K / sqrt(d)) V``, 4 heads.

    It is :class:`fsr_arch.common.ConvSelfAttention` with W-Net's order (``'dw_first'``: the depth-wise 3x3 first,
    eq. 20) and the paper's ``1/sqrt(d)`` scaling (eq. 21); the 1x1 conv of each of Q, K and V sees the depth-wise
    outputs of every input channel (``f1x1`` mixes all C channels).

    Channel or spatial maps (the paper is ambiguous; ``mode``, default ``'channel'``). For ``'spatial'`` (HW x HW maps):
    it is the literal reading of "global attention weights from different positions". For ``'channel'`` (C/4 x C/4
    maps per head, the dot products run over all positions): (1) Sec. 3.3's description of Q, K, V is Restormer's MDTA
    almost word for word (1x1 convs mapping into subspaces, depth-wise convs "encoding channel-level context",
    ``Q, K, V in R^{C x H x W}`` split into heads), and MDTA's attention is the transposed, channel-wise one, whose dot
    products over all H*W positions are what makes its weights "global"; (2) "4 heads" fits C = 64 channels split
    4 ways (16 x 16 maps per head), whereas 16-dimensional keys over 16384 positions would be an unusually thin spatial
    attention; (3) cost: SCABs run at up to 128x128 (the decoder's last scale; larger faces give larger maps). Spatial
    maps there are 4 x 16384^2 = 1.07e9 entries (4 GiB in fp32) per SCAB if stored, and ~69 GFLOPs per SCAB even with
    the fused kernel that does not store them (``scaled_dot_product_attention``), growing with the square of the area;
    channel maps have 4 x 16^2 entries and cost ~0.07 GFLOPs, linear in the area. ``'spatial'`` stays available.
    ``d`` is the length of the vectors in each dot product (H*W in channel mode, C/heads in spatial mode).
    """

    def __init__(self, num_feat, num_heads=4, mode='channel', scaling='sqrt_d', order='dw_first'):
        super().__init__(num_feat, num_heads, order=order, mode=mode, scaling=scaling)


class SCAB(nn.Module):
    """Self-attention channel attention block (eq. 20-21): an RCAB followed by the self-attention, with a residual.

    ``y = RCAB(x); out = y + SCABAttention(y)``.

    Args:
        num_feat (int): Channels.
        num_heads (int): Attention heads. Default: 4 (the paper).
        reduction (int): RCAB's channel-attention reduction. Default: 16 (RCAN).
        attn_mode, attn_scaling, attn_order (str): See :class:`SCABAttention`.
    """

    def __init__(self,
                 num_feat=64,
                 num_heads=4,
                 reduction=16,
                 attn_mode='channel',
                 attn_scaling='sqrt_d',
                 attn_order='dw_first'):
        super().__init__()
        self.rcab = RCAB(num_feat, reduction)
        self.attn = SCABAttention(num_feat, num_heads, mode=attn_mode, scaling=attn_scaling, order=attn_order)

    def forward(self, x):
        x = self.rcab(x)
        return x + self.attn(x)


@contextlib.contextmanager
def _frozen_bn_stats(module):
    """During a checkpoint's recomputation: BatchNorm normalizes with the batch statistics as in the first forward but
    does not update its running statistics a second time (momentum 0; the batch counter restored)."""
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _bn_apply(z, bn):
    """``(z - mean) * scale + shift`` with ``bn = WPathStage._bn_affine(...)`` (BatchNorm's formula)."""
    return (z - bn[0]) * bn[1] + bn[2]


def _checkpoint(fn, *args, module=None):
    ctx = (lambda: (contextlib.nullcontext(), _frozen_bn_stats(module))) if module is not None else None
    if ctx is None:
        return checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=ctx)


class WPathStage(nn.Module):
    """One stage of the W path: ``LPF(Up/Down(f3x3,64(F)), I_NN)`` (eq. 14-19).

    Args:
        in_ch (int): Input channels (the first up stage takes eq. 12's concatenation, the others ``num_feat``).
        num_feat (int): Width.
        parsing_channels (int): Channels of the parsing map.
        direction (str): ``'up'`` (x2, eq. 14-17) or ``'down'`` (/2, eq. 18-19).
    """

    def __init__(self, in_ch, num_feat, parsing_channels, direction):
        super().__init__()
        self.direction = direction
        self.conv = nn.Conv2d(in_ch, num_feat, 3, 1, 1)  # f3x3,64
        self.resample = UpBlock(num_feat) if direction == 'up' else DownBlock(num_feat)
        self.lpf = LPF(num_feat, parsing_channels)

    def forward(self, feat, parsing):
        return self.lpf(self.resample(self.conv(feat)), parsing)

    def pre_bn(self, feat):
        """``f3x3,64`` and the resampling before its BatchNorm (local: radius 2 output pixels, see forward_tiled)."""
        x = self.conv(feat)
        for layer in list(self.resample)[:-1]:
            x = layer(x)
        return x

    def _bn_affine(self, z):
        """BatchNorm of ``z`` as per-channel ``(mean, scale, shift)`` stacked in a (3, 1, C, 1, 1) tensor, applied as
        ``(z - mean) * scale + shift`` (:func:`_bn_apply`); the same statistics and running-statistics update as
        ``nn.BatchNorm2d`` in the current mode."""
        bn = self.resample[-1]
        if self.training or bn.running_mean is None:
            mean = z.mean(dim=(0, 2, 3))
            var = (z - mean.view(1, -1, 1, 1)).square().mean(dim=(0, 2, 3))
            if self.training and bn.running_mean is not None:
                with torch.no_grad():
                    bn.num_batches_tracked.add_(1)
                    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                    count = z.numel() // z.shape[1]
                    bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                    bn.running_var.mul_(1 - factor).add_(var.detach() * count / max(count - 1, 1), alpha=factor)
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        return torch.stack([mean, scale, shift]).view(3, 1, -1, 1, 1)

    def forward_tiled(self, feat, parsing, tile_pixels):
        """Same result as :meth:`forward`, computed in row strips of about ``tile_pixels`` output pixels per image.

        Three passes over the strips, each strip under its own activation checkpoint (``use_reentrant=False``):
        (1) ``z = pre_bn(feat)`` strip by strip (halo 4 output rows), concatenated and kept whole (the only full-size
        map the stage keeps besides its input); BatchNorm's statistics from ``z``; (2) the spatial sums of
        ``F_LR^(1) = conv_lr1(BN(z))`` (halo 2) for the LPF's channel attention; (3) the LPF on ``BN(z)`` strip by
        strip (halo ``LPF.radius``, rounded up to even) with those channel weights. The halos cover every conv's
        reach, so the strips' centres equal the whole-map computation; strips at the image border are padded like it.
        """
        scale = 2 if self.direction == 'up' else 0.5  # output size / input size
        out_h, out_w = int(feat.shape[-2] * scale), int(feat.shape[-1] * scale)
        rows = max(2, (max(1, tile_pixels // out_w) // 2) * 2)
        strips = [(a, min(a + rows, out_h)) for a in range(0, out_h, rows)]

        def slab(t, lo, hi, ratio):
            return t[..., int(lo * ratio):int(hi * ratio), :]

        def bounds(a, b, halo):
            return max(0, a - halo), min(out_h, b + halo)

        # pass 1: pre-BatchNorm features, kept whole
        def pre_bn_strip(f, a, lo, b):
            return self.pre_bn(f)[..., a - lo:b - lo, :]

        z_parts = []
        for a, b in strips:
            lo, hi = bounds(a, b, 4)
            z_parts.append(
                _checkpoint(lambda f, a=a, b=b, lo=lo: pre_bn_strip(f, a, lo, b), slab(feat, lo, hi, 1 / scale)))
        z = torch.cat(z_parts, dim=2) if len(z_parts) > 1 else z_parts[0]
        del z_parts
        bn = self._bn_affine(z)

        # pass 2: the global mean of F_LR^(1) for the LPF's channel attention
        lpf = self.lpf

        def lr1_sum(zs, bn, a, lo, b):
            return lpf.conv_lr1(_bn_apply(zs, bn))[..., a - lo:b - lo, :].sum(dim=(2, 3), keepdim=True)

        total = 0
        for a, b in strips:
            lo, hi = bounds(a, b, 2)
            total = total + _checkpoint(
                lambda zs, bn, a=a, b=b, lo=lo: lr1_sum(zs, bn, a, lo, b), slab(z, lo, hi, 1), bn)
        ca_weights = lpf.channel_weights(total / (out_h * out_w))

        # pass 3: the LPF, strip by strip
        def lpf_strip(zs, ps, bn, w, a, lo, b):
            return lpf(_bn_apply(zs, bn), ps, ca_weights=w)[..., a - lo:b - lo, :]

        halo = lpf.radius + lpf.radius % 2
        out = []
        for a, b in strips:
            lo, hi = bounds(a, b, halo)
            out.append(
                _checkpoint(
                    lambda zs, ps, bn, w, a=a, b=b, lo=lo: lpf_strip(zs, ps, bn, w, a, lo, b),
                    slab(z, lo, hi, 1),
                    slab(parsing, lo, hi, 1),
                    bn,
                    ca_weights))
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]


class EncoderStage(nn.Module):
    """One encoder scale (eq. 22): down-sample, ``num_scab`` SCABs, LPF with the parsing map at that scale."""

    def __init__(self, num_feat, parsing_channels, num_scab, num_heads, **attn):
        super().__init__()
        self.down = DownBlock(num_feat)
        self.scabs = nn.Sequential(*[SCAB(num_feat, num_heads, **attn) for _ in range(num_scab)])
        self.lpf = LPF(num_feat, parsing_channels)

    def forward(self, feat, parsing):
        return self.lpf(self.scabs(self.down(feat)), parsing)


class DecoderStage(nn.Sequential):
    """One decoder scale (eq. 23): up-sample, ``num_scab`` SCABs."""

    def __init__(self, num_feat, num_scab, num_heads, **attn):
        super().__init__(UpBlock(num_feat), *[SCAB(num_feat, num_heads, **attn) for _ in range(num_scab)])


@ARCH_REGISTRY.register()
class WNet(nn.Module):
    """W-Net (Sec. 3): parsing estimation + W-shaped multi-scale LPF fusion + SCAB encoder-decoder.

    Args:
        upscale (int): 4 or 8.
        num_in_ch (int): Image channels. Default: 3.
        num_feat (int): Width of every stage. Default: 64 (the paper's ``f3x3,64``).
        parsing_channels (int): Channels of the predicted parsing map. Default: 3 (eq. 8; see the module docstring).
        num_up_levels (int): Up-sampling levels of the W path (x2 per level). Default: 3 (the paper, 8x the HR size);
            fewer is a documented deviation that saves memory.
        num_enc_levels (int): Encoder/decoder scales. Default: 4 (the paper: 128 -> 64, 32, 16, 8).
        num_scab (int): SCABs per encoder/decoder scale. Default: 2 (the paper).
        num_heads (int): Heads of the self-attention. Default: 4 (the paper).
        parsing_res_blocks (int): Residual blocks of the Parsing Block. Default: 3 (not given; FSRNet's value).
        hg_depth (int): Hourglass depth of the Parsing Block. Default: 4 (the paper).
        enc_dec_skip (bool): Add each encoder scale's features to the decoder at the same scale. Default: True (not in
            the text; usual for encoder-decoders so detail need not pass the 8x8 bottleneck).
        global_residual (bool): Add the bicubic-upsampled LR to the output. Default: True (not in the text; standard for
            networks whose input is the bicubic-upsampled image).
        attn_mode (str): SCAB attention maps, ``'channel'`` (default) or ``'spatial'`` (see :class:`SCABAttention`).
        attn_scaling (str): ``'sqrt_d'`` (eq. 21, default) or ``'l2norm'`` (Restormer's; a deviation).
        attn_order (str): ``'dw_first'`` (eq. 20, default) or ``'pw_first'`` (Restormer's; a deviation).
        use_checkpoint (bool): The memory saving while training (same outputs and gradients, more compute): encoder /
            decoder stages checkpointed, W-path stages computed strip by strip (see the module docstring).
            Default: False.
        checkpoint_tile_pixels (int): Output pixels per image in one W-path strip when ``use_checkpoint``; 0 checkpoints
            each W-path stage whole instead (less saving). Default: 65536 (64 rows of a 1024-wide map).
        return_parsing (bool): Default of ``forward``'s ``return_parsing``. Default: False (return the SR image only).
    """

    def __init__(self,
                 upscale=4,
                 num_in_ch=3,
                 num_feat=64,
                 parsing_channels=3,
                 num_up_levels=3,
                 num_enc_levels=4,
                 num_scab=2,
                 num_heads=4,
                 parsing_res_blocks=3,
                 hg_depth=4,
                 enc_dec_skip=True,
                 global_residual=True,
                 attn_mode='channel',
                 attn_scaling='sqrt_d',
                 attn_order='dw_first',
                 use_checkpoint=False,
                 checkpoint_tile_pixels=65536,
                 return_parsing=False):
        super().__init__()
        if upscale not in (2, 4, 8):
            raise ValueError(f'WNet: upscale must be 2, 4 or 8, got {upscale}.')
        self.upscale = upscale
        self.num_up_levels = num_up_levels
        self.num_enc_levels = num_enc_levels
        self.enc_dec_skip = enc_dec_skip
        self.global_residual = global_residual
        self.use_checkpoint = use_checkpoint
        self.checkpoint_tile_pixels = checkpoint_tile_pixels
        self.return_parsing = return_parsing
        self.parsing_channels = parsing_channels
        # LR size must survive the hourglass's poolings; HR size (= LR * upscale) the encoder's down-samplings.
        self.size_multiple = max(2**hg_depth, 2**num_enc_levels // upscale, 1)
        attn = dict(attn_mode=attn_mode, attn_scaling=attn_scaling, attn_order=attn_order)

        self.parsing_block = ParsingBlock(num_in_ch, num_feat, parsing_res_blocks, hg_depth, parsing_channels)
        cat_ch = num_in_ch + parsing_channels  # eq. 12
        # eq. 14-17: the first stage's f3x3,64 takes eq. 12's concatenation
        self.up_stages = nn.ModuleList([
            WPathStage(cat_ch if i == 0 else num_feat, num_feat, parsing_channels, 'up') for i in range(num_up_levels)
        ])
        self.down_stages = nn.ModuleList(
            [WPathStage(num_feat, num_feat, parsing_channels, 'down') for _ in range(num_up_levels)])  # eq. 18-19
        # With no W levels (a deviation), one f3x3,64 + one LPF at the HR size keep the fusion with I_NN^1.
        self.conv_first = nn.Conv2d(cat_ch, num_feat, 3, 1, 1) if num_up_levels == 0 else None
        self.lpf_start = LPF(num_feat, parsing_channels) if num_up_levels == 0 else None
        self.encoder = nn.ModuleList(
            [EncoderStage(num_feat, parsing_channels, num_scab, num_heads, **attn) for _ in range(num_enc_levels)])
        self.decoder = nn.ModuleList(
            [DecoderStage(num_feat, num_scab, num_heads, **attn) for _ in range(num_enc_levels)])
        self.conv_last = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)

    def _saving(self):
        return self.use_checkpoint and self.training and torch.is_grad_enabled()

    def _run(self, module, *args):
        if self._saving():
            return _checkpoint(module, *args, module=module)
        return module(*args)

    def _run_w(self, stage, feat, parsing):
        if self._saving() and self.checkpoint_tile_pixels > 0:
            return stage.forward_tiled(feat, parsing, self.checkpoint_tile_pixels)
        return self._run(stage, feat, parsing)

    def forward(self, lq, return_parsing=None):
        """Super-resolve ``lq`` (N, 3, h, w) in [0, 1].

        Args:
            lq (Tensor): LR faces at LR size.
            return_parsing (bool | None): Also return the LR-size parsing map. None: use ``self.return_parsing``.

        Returns:
            Tensor | tuple[Tensor]: SR (N, 3, h*s, w*s), or ``(sr, parsing)`` with parsing (N, parsing_channels, h, w).
        """
        check_divisible(
            lq, self.size_multiple, 'WNet',
            f'The Parsing Block hourglass and the {self.num_enc_levels}-level encoder need LR sizes that are multiples '
            f'of {self.size_multiple} (e.g. 16x16 or 32x32 LR for 128x128 faces); FSRModel pads test inputs to it.')
        hr_size = (lq.shape[-2] * self.upscale, lq.shape[-1] * self.upscale)
        parsing_lr = self._run(self.parsing_block, lq)  # eq. 2-8
        base = upsample_to(lq, size=hr_size)  # I^d: the W path starts at the HR size (see the module docstring)
        parsing = F.interpolate(parsing_lr, size=hr_size, mode='nearest')  # I_NN^1

        # W path, eq. 12-19
        feat = torch.cat([base, parsing], dim=1)  # eq. 12
        for i, stage in enumerate(self.up_stages, 1):
            feat = self._run_w(stage, feat, F.interpolate(parsing, scale_factor=2**i, mode='nearest'))
        for i, stage in zip(range(self.num_up_levels - 1, -1, -1), self.down_stages):
            feat = self._run_w(stage, feat, F.interpolate(parsing, scale_factor=2**i, mode='nearest') if i else parsing)
        if self.lpf_start is not None:
            feat = self._run(self.lpf_start, self.conv_first(feat), parsing)

        # encoder (eq. 22) and decoder (eq. 23)
        skips = []
        par = parsing
        for stage in self.encoder:
            skips.append(feat)
            par = F.interpolate(par, scale_factor=0.5, mode='nearest')
            feat = self._run(stage, feat, par)
        for stage in self.decoder:
            feat = self._run(stage, feat)
            skip = skips.pop()
            if self.enc_dec_skip:
                feat = feat + skip
        sr = self.conv_last(feat)
        if self.global_residual:
            sr = sr + base
        if self.return_parsing if return_parsing is None else return_parsing:
            return sr, parsing_lr
        return sr


# The paper's configuration (Sec. 3, 4.2): 64 channels, 3 W levels (8x the HR size), 4 encoder scales, 2 SCABs, 4 heads,
# SCAB attention as eq. 20-21 (depth-wise first, 1/sqrt(d), channel maps: see SCABAttention).
PAPER_CONFIGS = {
    'x4': dict(upscale=4, num_feat=64, parsing_channels=3, num_up_levels=3, num_enc_levels=4, num_scab=2, num_heads=4),
    'x8': dict(upscale=8, num_feat=64, parsing_channels=3, num_up_levels=3, num_enc_levels=4, num_scab=2, num_heads=4),
}
# The lighter option benchmarked by scripts/bench_wnet.py (a DEVIATION): W path up to 2x the HR size + checkpointing.
LIGHT_CONFIG = dict(num_up_levels=1, use_checkpoint=True)
# A tiny configuration that trains a few iterations on the CPU (give upscale separately). Keeps every module type.
TINY_CONFIG = dict(
    num_feat=8,
    parsing_channels=3,
    num_up_levels=1,
    num_enc_levels=2,
    num_scab=1,
    num_heads=4,
    parsing_res_blocks=1,
    hg_depth=2)
