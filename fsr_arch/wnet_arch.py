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
  (pixel shuffle + BatchNorm) each followed by an LPF (eq. 14-17), then down-sampling with ``f3x3,64`` +
  :class:`DownBlock` (inverse pixel shuffle + BatchNorm) each followed by an LPF back to the start size (eq. 18-19).
- :class:`SCAB` (Sec. 3.3, eq. 20-21): RCAB + convolutional self-attention with 4 heads (``common.ConvSelfAttention``).
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

Deviations and open choices (all constructor arguments):

- ``num_up_levels`` (default 3 = the paper: x2, x4, x8): fewer levels make the W shallower (2: up to 4x the HR size,
  512x512 for a 128 face; 0: a single LPF at the HR size). Anything below 3 is a DEVIATION from the paper for memory.
- ``use_checkpoint`` (default False): activation checkpointing of every W-path stage and LPF while training. Same
  outputs and gradients, less activation memory, about one extra forward of compute. Not in the paper (an implementation
  option).
- In eq. 10 ``F_fuse2 = f1x1(F_pixel + F_LR + F_parsing)`` adds the raw parsing map (3 channels) to 64-channel features;
  we use the 64-channel ``F'_parsing`` there (the only sum with matching shapes).
- The encoder-decoder skips (``enc_dec_skip``) and the global bicubic residual (``global_residual``) are not described
  in the text; both default to True (usual for encoder-decoder SR networks; without skips every detail would have to
  pass the 8x8 bottleneck).
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from fsr_arch.common import (RCAB, ChannelAttention, ConvSelfAttention, ResidualBlockNoBN, SpatialAttention,
                             check_divisible, upsample_to)

__all__ = ['WNet', 'ParsingBlock', 'LPF', 'SCAB', 'UpBlock', 'DownBlock', 'HourGlass', 'PAPER_CONFIGS', 'TINY_CONFIG']


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
        self.conv_shallow = nn.Conv2d(in_ch, c, 3, 1, 1)  # eq. 2
        self.res_blocks = nn.Sequential(*[ResidualBlockNoBN(c) for _ in range(num_res_blocks)])  # eq. 3, F_Res
        self.hourglass = HourGlass(c, hg_depth)  # eq. 3, F_HG
        act = nn.ReLU(inplace=True)
        # eq. 4: y1 (1x1, adjusts channels), y2, y3 (3x3). eq. 5: y4 from the concatenation with doubled channels, y5
        # from y3 with halved channels. The paper gives no widths; these follow its words (c, c, c; 2c; c/2).
        self.y1 = nn.Sequential(nn.Conv2d(c, c, 1), act)
        self.y2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), act)
        self.y3 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), act)
        self.y4 = nn.Sequential(nn.Conv2d(3 * c, 2 * c, 3, 1, 1), act)
        self.y5 = nn.Sequential(nn.Conv2d(c, c // 2, 3, 1, 1), act)
        cat_ch = c + 2 * c + c // 2
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

    Args:
        num_feat (int): Channels of the image features ``F_LR``.
        parsing_channels (int): Channels of the parsing map.
    """

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

    def forward(self, feat, parsing):
        lr1 = self.conv_lr1(feat)
        lr2 = self.conv_lr2(feat)
        par = self.conv_par(parsing)
        att = self.conv_att(self.ca(lr1) + self.spa(lr1))
        sigma = self.pa(lr2 + par)
        pixel = sigma * lr2 + (1 - sigma) * par
        fuse1 = self.conv_fuse1(torch.cat([att, par], dim=1))
        fuse2 = self.conv_fuse2(pixel + feat + par)  # F_parsing of eq. 10 taken as F'_parsing (see module docstring)
        return fuse1 + fuse2 + lr2 + par  # eq. 11


class UpBlock(nn.Sequential):
    """x2 up-sampling: conv3x3 (C -> 4C), pixel shuffle, BatchNorm (the ``Upsample`` of eq. 14)."""

    def __init__(self, num_feat):
        super().__init__(nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(num_feat))


class DownBlock(nn.Sequential):
    """/2 down-sampling: inverse pixel shuffle, conv3x3 (4C -> C), BatchNorm (the ``Downsample`` of eq. 18)."""

    def __init__(self, num_feat):
        super().__init__(nn.PixelUnshuffle(2), nn.Conv2d(4 * num_feat, num_feat, 3, 1, 1), nn.BatchNorm2d(num_feat))


class SCAB(nn.Module):
    """Self-attention channel attention block (eq. 20-21): an RCAB followed by convolutional self-attention.

    ``y = RCAB(x); out = y + ConvSelfAttention(y)`` with q, k, v from 1x1 + 3x3 depth-wise convs and ``num_heads``
    heads.
    """

    def __init__(self, num_feat=64, num_heads=4, reduction=16):
        super().__init__()
        self.rcab = RCAB(num_feat, reduction)
        self.attn = ConvSelfAttention(num_feat, num_heads)

    def forward(self, x):
        x = self.rcab(x)
        return x + self.attn(x)


class WPathStage(nn.Module):
    """One stage of the W path: ``LPF(Up/Down(f3x3,64(F)), I_NN)`` (eq. 14-19)."""

    def __init__(self, num_feat, parsing_channels, direction):
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.resample = UpBlock(num_feat) if direction == 'up' else DownBlock(num_feat)
        self.lpf = LPF(num_feat, parsing_channels)

    def forward(self, feat, parsing):
        return self.lpf(self.resample(self.conv(feat)), parsing)


class EncoderStage(nn.Module):
    """One encoder scale (eq. 22): down-sample, ``num_scab`` SCABs, LPF with the parsing map at that scale."""

    def __init__(self, num_feat, parsing_channels, num_scab, num_heads):
        super().__init__()
        self.down = DownBlock(num_feat)
        self.scabs = nn.Sequential(*[SCAB(num_feat, num_heads) for _ in range(num_scab)])
        self.lpf = LPF(num_feat, parsing_channels)

    def forward(self, feat, parsing):
        return self.lpf(self.scabs(self.down(feat)), parsing)


class DecoderStage(nn.Sequential):
    """One decoder scale (eq. 23): up-sample, ``num_scab`` SCABs."""

    def __init__(self, num_feat, num_scab, num_heads):
        super().__init__(UpBlock(num_feat), *[SCAB(num_feat, num_heads) for _ in range(num_scab)])


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
        use_checkpoint (bool): Activation checkpointing of the W-path stages, encoder/decoder stages and the final LPF
            while training (same results, less memory, more compute). Default: False.
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
                 use_checkpoint=False,
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
        self.return_parsing = return_parsing
        self.parsing_channels = parsing_channels
        # LR size must survive the hourglass's poolings; HR size (= LR * upscale) the encoder's down-samplings.
        self.size_multiple = max(2**hg_depth, 2**num_enc_levels // upscale, 1)

        self.parsing_block = ParsingBlock(num_in_ch, num_feat, parsing_res_blocks, hg_depth, parsing_channels)
        self.conv_first = nn.Conv2d(num_in_ch + parsing_channels, num_feat, 3, 1, 1)  # f3x3,64 of eq. 14 on eq. 12
        self.up_stages = nn.ModuleList([WPathStage(num_feat, parsing_channels, 'up')
                                        for _ in range(num_up_levels)])  # eq. 14-17
        self.down_stages = nn.ModuleList([WPathStage(num_feat, parsing_channels, 'down')
                                          for _ in range(num_up_levels)])  # eq. 18-19
        # With no W levels, one LPF at the HR size keeps the fusion with I_NN^1 (deviation num_up_levels=0 only).
        self.lpf_start = LPF(num_feat, parsing_channels) if num_up_levels == 0 else None
        self.encoder = nn.ModuleList(
            [EncoderStage(num_feat, parsing_channels, num_scab, num_heads) for _ in range(num_enc_levels)])
        self.decoder = nn.ModuleList([DecoderStage(num_feat, num_scab, num_heads) for _ in range(num_enc_levels)])
        self.conv_last = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)

    def _run(self, module, *args):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

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
        feat = self.conv_first(torch.cat([base, parsing], dim=1))
        for i, stage in enumerate(self.up_stages, 1):
            feat = self._run(stage, feat, F.interpolate(parsing, scale_factor=2**i, mode='nearest'))
        for i, stage in zip(range(self.num_up_levels - 1, -1, -1), self.down_stages):
            feat = self._run(stage, feat, F.interpolate(parsing, scale_factor=2**i, mode='nearest') if i else parsing)
        if self.lpf_start is not None:
            feat = self._run(self.lpf_start, feat, parsing)

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


# The paper's configuration (Sec. 3, 4.2): 64 channels, 3 W levels (8x the HR size), 4 encoder scales, 2 SCABs, 4 heads.
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
