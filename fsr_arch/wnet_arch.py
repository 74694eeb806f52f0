"""W-Net: a W-shaped face super-resolution network guided by an estimated face parsing map.

Paper: H. Liu, Y. Yang, Y. Liu, "W-Net: A Facial Feature-Guided Face Super-Resolution Network", arXiv:2406.00676.
Code-to-paper map:

- :class:`ParsingBlock` (Sec. 3.1, Fig. 2, eq. 2-8): ``f3x3,64`` shallow features (eq. 2), residual blocks + hourglass
  of depth 4 (eq. 3), the multi-scale feature attention unit y1..y7 with channel (CA) and spatial (SA) attention
  (eq. 4-7) and the ``f3x3,3`` parsing output (eq. 8). It runs on the LR image at LR size: the paper's parsing targets
  are the binarized BiSeNet maps bicubic-downsampled to 32x32 / 16x16 (Sec. 4.2), i.e. the LR size.
- :class:`LPF` (Sec. 3.2, Fig. 3, eq. 9-11): the three 3x3 convs, the CA + spatial-attention branch ``F_Att``, the
  pixel-attention weighted sum ``F_pixel``, the two fusions ``F_fuse1`` / ``F_fuse2`` and the skip sums of eq. 11.
- The W-shaped multi-scale path (Sec. 3.3, eq. 12-19) in :meth:`WNet.forward`: concat the image and its parsing map
  (eq. 12), enlarged parsing maps ``I_NN^k`` (eq. 13: nearest neighbour; bilinear by default, see "Grid"),
  up-sampling x2, x4, x8, each a 3x3 conv and the paper's conv-free ``Upsample`` (:class:`ShuffleBN`: pixel shuffle +
  BatchNorm) followed by an LPF (eq. 14-17), then down-sampling, each a 3x3 conv and the conv-free ``Downsample``
  (:class:`UnshuffleBN`: inverse pixel shuffle + BatchNorm) followed by an LPF, back to the start size (eq. 18-19).
  One :class:`WPathStage` = ``LPF(Up/Down(f3x3(F)), I_NN)``; the first stage's conv takes the 6-channel concatenation
  of eq. 12 directly (eq. 14: one conv, no extra ``conv_first``).
- :class:`SCAB` (Sec. 3.3, eq. 20-21): RCAB + convolutional self-attention with 4 heads, ``out = y + Att(y)``,
  ``y = RCAB(x)``; ``Q = f1x1(f_dconv3x3(F))`` (depth-wise first) and ``Softmax(Q K / sqrt(d)) V`` (see
  :class:`SCABAttention` for channel vs spatial maps). OPEN: the paper "incorporated a convolution-based
  self-attention module into the RCAB" and builds it "upon feature extraction within RCAB", without saying where in
  the block it sits or whether it has its own residual; we run it after the whole RCAB (its output is the
  attention's input, "building upon" it) with a residual ``y + Att(y)`` (as a Transformer block's attention).
- Encoder (eq. 22): 4 x (2 SCABs, LPF with the parsing map at the size of the features, then ``Downsample``):
  ``F_feature = LPF(SCAB x2 (F), I_NN)``, ``F_Encoder = (Downsample(F_feature)) x4``; for a 128x128 face the SCABs and
  LPFs run at 128, 64, 32, 16 and the encoder ends at 8x8. Decoder (eq. 23): 4 x (``Upsample``, 2 SCABs) back to the
  HR size, and a 3x3 conv to RGB. The text before eq. 22 lists the encoder's parsing maps as 64, 32, 16, 8, which
  fits the order down-sample -> SCABs -> LPF instead; eq. 22 and "the analytic graph corresponding to the size of the
  feature graph is fused" fix the order used here (``encoder_order='eq22'``); ``'down_first'`` (the maps 64..8, the
  order of earlier versions) is the option.

Reading of the sizes. The paper says the W path reaches 1024x1024 and comes back to 128x128 for a 128x128 face: so the
W path starts at the HR size. The network therefore bicubic-upsamples the LR face to the HR size inside forward (``I^d``
of eq. 1), predicts the parsing map at LR size and enlarges it to the HR size (``I_NN^1``) and to 2x, 4x, 8x
the HR size (``I_NN^2..8``). ``I^d`` is MATLAB's bicubic (``input_upsample='matlab'``,
:func:`fsr_arch.common.matlab_bicubic_upsample`: Keys a = -0.5, mirrored borders): the paper's LR faces are made "by
Bicubic interpolation" (MATLAB ``imresize`` in the code bases it compares with, and ``fsr-prepare``'s default), so the
global residual starts from the bicubic baseline that ``fsr-benchmark`` reports. ``'torch'`` (``F.interpolate``,
a = -0.75, edge pixels repeated) is the option; alone it scores +0.15 dB over that baseline on the held-out demo faces,
a gain a network gets without learning anything.

Outputs. ``forward(lq)`` returns the SR image (N, 3, h*s, w*s) so that BasicSR's ``SRModel.test`` works unchanged.
``forward(lq, return_parsing=True)`` (or the attribute ``net.return_parsing = True``) returns ``(sr, parsing)`` with the
parsing map at LR size (N, parsing_channels, h, w), which the W-Net model compares with the dataset's
``parsing_bin_lq``.

Parsing channels. Eq. 8 outputs 3 channels although the map is binary (skin = 1): the paper's maps were most likely
stored as 3-channel images of a binary mask. ``parsing_channels=3`` (default) keeps the paper's layer; the W-Net model
compares every channel with the 1-channel binary target (the target is broadcast, so the MSE equals the per-channel MSE
averaged). ``parsing_channels=1`` is the leaner equivalent.

Resamplers: which have a conv and why.

- W path (eq. 14-19), the paper (``w_resample='paper'``, default): ``Upsample`` / ``Downsample`` are "Pixel Shuffle
  layers and BatchNorm layers" / "invPixelShuffle layers and BatchNorm layers", conv-free (:class:`ShuffleBN`,
  :class:`UnshuffleBN`; their BatchNorm is left out by default, see "Grid"). The 3x3 conv that eq. 14-19 put before
  every resampler sets the width the (un)shuffle needs: 4C channels before a shuffle, C/4 before an inverse shuffle,
  so that every LPF sees C = 64 channels. DEVIATION
  (the label only): eq. 14-19 write that conv ``f3x3,64``, i.e. 64 output channels; read literally, the LPFs of the
  up-sampled scales would get 16 channels and those of the down-sampled scales 256, and the W path would end with 256
  channels that the 64-channel SCABs cannot take. ``'conv'`` (earlier versions): ``f3x3,64`` and a second 3x3 conv
  inside each resampler (:class:`UpBlock` / :class:`DownBlock`), +0.74 M parameters and +194 GFLOPs (x4).
- Encoder / decoder (eq. 22-23), DEVIATION (kept, needed): eq. 22-23 chain ``Downsample`` x4 and ``Upsample`` x4
  between fixed-width SCABs with no conv in between, and a pixel (un)shuffle divides (multiplies) the channels by 4,
  so there the width really changes and each resampler has one conv that restores it: :class:`DownBlock` one 3x3
  conv 4C -> C after the inverse shuffle; in the decoder, by default (``decoder_upsample='bilinear'``, a DEVIATION
  measured in "Grid") :class:`ResizeUpBlock`, a bilinear x2 enlargement and one 3x3 conv C -> C, and with
  ``'shuffle'`` :class:`UpBlock`, one 3x3 conv C -> 4C before the shuffle (ESPCN / EDSR / BasicSR's ``Upsample``).
- ICNR (``icnr_init=True``, default; OPEN, the paper names no initialisation): every conv that feeds a pixel shuffle
  (the W path's up-stage convs, and the decoder's :class:`UpBlock` convs with ``decoder_upsample='shuffle'``) starts
  with its four sub-pixel kernels and biases equal (Aitken et al. 2017, :func:`fsr_arch.common.icnr_`): at
  initialisation conv + shuffle is a conv of a nearest-neighbour enlargement, with no checkerboard to unlearn. See
  "Grid" below for the measurements.

Other layers the paper's module lists do not name:

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
  computed under its own checkpoint. Peak training memory of the paper configuration drops from 5.50 to 1.53 GiB
  per face (``scripts/bench_wnet.py``). BatchNorm running statistics are updated once per step, as without the saving.
- In eq. 10 ``F_fuse2 = f1x1(F_pixel + F_LR + F_parsing)`` adds the raw parsing map (3 channels) to 64-channel features;
  we use the 64-channel ``F'_parsing`` there (the only sum with matching shapes).
- DEVIATION (additions): the encoder-decoder skips (``enc_dec_skip``: each decoder scale adds the encoder's
  ``F_feature`` of the same scale) and the global residual (``global_residual``: the output is added to ``I^d``) are not
  in eq. 1, 22 or 23, which chain the stages without them. Both default to True (usual for encoder-decoder SR networks;
  without skips every detail would have to pass the 8x8 bottleneck); False gives the equations as written.

Size and cost of the paper configuration (:data:`PAPER_CONFIGS` with the defaults, 128x128 faces): 6.07 M parameters
(x4 and x8), 820.7 GFLOPs per x4 face (819.5 x8; ``FlopCounterMode``, 2 per multiply-add); peak training memory
5.50 GiB per face, 1.53 GiB with ``use_checkpoint`` (``scripts/bench_wnet.py``). Earlier versions
(``w_resample='conv'``, ``encoder_order='down_first'``, ``resample_norm='batch'``, ``decoder_upsample='shuffle'``):
7.25 M, 1014.4 GFLOPs.
The W path's conv-free resamplers save 0.74 M parameters and 194 GFLOPs; eq. 22's order costs 12.5 GFLOPs more (the
SCABs run at 128..16 instead of 64..8); the decoder's bilinear up-sampling saves 0.44 M parameters (its conv works at
the output size, so the FLOPs stay); the BatchNorms held 1792 parameters.

Grid (issue 24). The demo W-Net (``options/demo/train_wnet_demo_x4.yml``, 720 CPU iterations on 64x64 patches of 40
demo crops) drew a fine periodic pattern. Measured with :func:`fsr_metrics.grid_score.grid_score` (share of the output
residual's spectral energy at period-2/4 frequencies relative to the HR face's; natural detail about 1), median over
the 3 held-out demo faces / the same photos cropped by ``fsr-prepare --crop box``, and mean PSNR gain over bicubic
(Y, crop 4), one training per row, one change at a time from the earlier network (conv in every resampler, down-sampling
first, torch bicubic, no ICNR, BatchNorm):

    ======================================== ============== ==================
    change                                   grid (held-out / box)  dB vs bicubic
    ======================================== ============== ==================
    earlier network                          3.85 / 7.49    +0.24 / +0.14
    same checkpoint, BatchNorm batch stats   7.56 / 6.75    +0.32 / +0.12
    MATLAB bicubic I^d                       5.29 / 11.29   +0.21 / -0.01
    conv-free W-path resamplers              3.17 / 6.71    +0.40 / +0.10
    eq. 22's encoder order                   3.82 / 7.24    +0.13 / -0.17
    l2norm attention scaling                 4.27 / 8.37    +0.37 / +0.16
    ICNR                                     2.07 / 4.97    +0.43 / +0.27
    no BatchNorm in the resamplers           0.92 / 1.76    +0.61 / +0.55
    ======================================== ============== ==================

BatchNorm is the main cause (its running statistics are not: evaluating with batch statistics does not help), the
pixel shuffles' independent sub-pixel kernels the second (ICNR halves the score). Three seeds each (held-out grid;
box grid; dB held-out / box):

    ========================================================= ================== ================== ===============
    network                                                   held-out grid      box grid           dB vs bicubic
    ========================================================= ================== ================== ===============
    paper-fidelity changes (conv-free W path, eq. 22, MATLAB  2.98 / 1.34 / 3.70 6.08 / 2.92 / 6.06 +0.40..+0.60 /
    I^d, ICNR) with BatchNorm                                                                       +0.05..+0.54
    the same without BatchNorm                                0.48 / 1.68 / 0.91 0.75 / 5.39 / 2.55 +0.47..+0.60 /
                                                                                                    +0.14..+0.48
    and bilinear decoder up-sampling                          0.34 / 0.15 / 0.55 0.95 / 0.39 / 1.43 +0.54..+0.59 /
                                                                                                    +0.21..+0.56
    and bilinear parsing maps (the defaults)                  0.10 / 0.13 / 0.22 0.66 / 0.17 / 0.44 +0.62..+0.67 /
                                                                                                    +0.36..+0.56
    ========================================================= ================== ================== ===============

Without BatchNorm the decoder's learned sub-pixel kernels still drift apart on some seeds; what remained after the
bilinear decoder were stripes of period 4 (one LR pixel) where the nearest-neighbour parsing map steps between LR
pixels (eq. 13 enlarges it 4x to 32x as blocks). Hence the defaults: ``resample_norm='none'`` (DEVIATION: eq. 14 and
18 name BatchNorm; the paper trains at batch 4 as the demo does), ``decoder_upsample='bilinear'`` (DEVIATION: the
decoder's conv is ours anyway, see above; a resize-convolution has one kernel for every output pixel),
``parsing_upsample='bilinear'`` (DEVIATION from eq. 13's nearest neighbour) and ``icnr_init=True`` (OPEN) for the
pixel shuffles left in the W path. The paper's choices stay available (``resample_norm='batch'``,
``decoder_upsample='shuffle'``, ``parsing_upsample='nearest'``). Faces cropped by ``--crop landmarks68`` (two of the
three enlarged 1.3-1.6x from the photo, so their HR residual has little energy at those frequencies) score 3.71 /
1.17 / 0.76 and -0.04 to +0.45 dB.
"""
import contextlib
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from fsr_arch.common import (RCAB, ChannelAttention, ConvSelfAttention, ResidualBlockNoBN, SpatialAttention,
                             check_divisible, icnr_, matlab_bicubic_upsample, upsample_to)

__all__ = [
    'WNet', 'ParsingBlock', 'LPF', 'SCAB', 'SCABAttention', 'UpBlock', 'DownBlock', 'ShuffleBN', 'UnshuffleBN',
    'HourGlass', 'WPathStage', 'EncoderStage', 'DecoderStage', 'PAPER_CONFIGS', 'TINY_CONFIG'
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


def _norm(num_feat, batch_norm):
    return [nn.BatchNorm2d(num_feat)] if batch_norm else []


class UpBlock(nn.Sequential):
    """x2 ``Upsample`` with its own conv, for the decoder (eq. 23) and ``w_resample='conv'``: conv3x3 (C -> 4C, keeps
    the width: see the module docstring), pixel shuffle, BatchNorm (``batch_norm=False``: none). ``icnr``: ICNR
    initialisation of the conv."""

    def __init__(self, num_feat, icnr=False, batch_norm=True):
        conv = nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1)
        if icnr:
            icnr_(conv, 2)
        super().__init__(conv, nn.PixelShuffle(2), *_norm(num_feat, batch_norm))


class DownBlock(nn.Sequential):
    """/2 ``Downsample`` with its own conv, for the encoder (eq. 22) and ``w_resample='conv'``: inverse pixel shuffle,
    conv3x3 (4C -> C, keeps the width), BatchNorm (``batch_norm=False``: none)."""

    def __init__(self, num_feat, batch_norm=True):
        super().__init__(nn.PixelUnshuffle(2), nn.Conv2d(4 * num_feat, num_feat, 3, 1, 1), *_norm(num_feat, batch_norm))


class ResizeUpBlock(nn.Sequential):
    """x2 up-sampling without a pixel shuffle, for the decoder with ``decoder_upsample='bilinear'`` (a DEVIATION from
    eq. 14's Upsample): bilinear x2 enlargement, conv3x3 (C -> C), BatchNorm (``batch_norm=False``: none). The same
    kernel at every output position, so it cannot draw a period-2 pattern of its own (Odena et al. 2016, "Deconvolution
    and checkerboard artifacts")."""

    def __init__(self, num_feat, batch_norm=True):
        super().__init__(
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False), nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            *_norm(num_feat, batch_norm))


class ShuffleBN(nn.Sequential):
    """The paper's conv-free ``Upsample`` (eq. 14): ``BN(PixelShuffle_2(x))``, (N, 4C, H, W) -> (N, C, 2H, 2W);
    ``batch_norm=False``: the shuffle alone."""

    def __init__(self, num_feat, batch_norm=True):
        super().__init__(nn.PixelShuffle(2), *_norm(num_feat, batch_norm))


class UnshuffleBN(nn.Sequential):
    """The paper's conv-free ``Downsample`` (eq. 18): ``BN(invPixelShuffle_2(x))``, (N, C/4, H, W) -> (N, C, H/2, W/2);
    ``batch_norm=False``: the inverse shuffle alone."""

    def __init__(self, num_feat, batch_norm=True):
        super().__init__(nn.PixelUnshuffle(2), *_norm(num_feat, batch_norm))


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
    """``(z - mean) * scale + shift`` with ``bn = WPathStage._bn_affine(...)`` (BatchNorm's formula); ``z`` if None."""
    if bn is None:
        return z
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
        resample (str): ``'paper'`` (conv-free :class:`ShuffleBN` / :class:`UnshuffleBN`; the f3x3 makes 4C / C/4
            channels) or ``'conv'`` (f3x3,64 then :class:`UpBlock` / :class:`DownBlock`). See the module docstring.
        icnr (bool): ICNR initialisation of the conv that feeds the pixel shuffle (up stages).
        batch_norm (bool): The resampler's BatchNorm (eq. 14, 18); False leaves it out (``resample_norm='none'``).
    """

    def __init__(self, in_ch, num_feat, parsing_channels, direction, resample='paper', icnr=True, batch_norm=True):
        super().__init__()
        if direction not in ('up', 'down'):
            raise ValueError(f"WPathStage: direction={direction!r} is not 'up' or 'down'.")
        if resample not in ('paper', 'conv'):
            raise ValueError(f"WPathStage: resample={resample!r} is not 'paper' or 'conv'.")
        self.direction = direction
        up = direction == 'up'
        if resample == 'paper':
            # the f3x3 of eq. 14-19 feeds the conv-free (un)shuffle the channels that give num_feat after it
            if not up and num_feat % 4:
                raise ValueError(f'WPathStage: num_feat ({num_feat}) must be a multiple of 4 for the conv-free '
                                 "down-sampling (w_resample='paper').")
            self.conv = nn.Conv2d(in_ch, 4 * num_feat if up else num_feat // 4, 3, 1, 1)
            self.resample = ShuffleBN(num_feat, batch_norm) if up else UnshuffleBN(num_feat, batch_norm)
            if up and icnr:
                icnr_(self.conv, 2)
        else:
            self.conv = nn.Conv2d(in_ch, num_feat, 3, 1, 1)  # f3x3,64
            self.resample = UpBlock(num_feat, icnr, batch_norm) if up else DownBlock(num_feat, batch_norm)
        self.lpf = LPF(num_feat, parsing_channels)
        self.has_bn = batch_norm

    def forward(self, feat, parsing):
        return self.lpf(self.resample(self.conv(feat)), parsing)

    def pre_bn(self, feat):
        """``f3x3,64`` and the resampling before its BatchNorm (local: radius 2 output pixels, see forward_tiled)."""
        x = self.conv(feat)
        for layer in list(self.resample)[:-1] if self.has_bn else self.resample:
            x = layer(x)
        return x

    def _bn_affine(self, z):
        """BatchNorm of ``z`` as per-channel ``(mean, scale, shift)`` stacked in a (3, 1, C, 1, 1) tensor, applied as
        ``(z - mean) * scale + shift`` (:func:`_bn_apply`); the same statistics and running-statistics update as
        ``nn.BatchNorm2d`` in the current mode. None without a BatchNorm (``_bn_apply`` then returns ``z``)."""
        if not self.has_bn:
            return None
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
    """One encoder scale. ``order='eq22'``: ``F = LPF(SCAB x num_scab (x), I_NN)``, then ``Downsample(F)`` (eq. 22: the
    SCABs and the LPF at the scale of the input, the down-sampling last); ``'down_first'``: down-sample, SCABs, LPF at
    the down-sampled scale (a DEVIATION, the order of earlier versions).

    :meth:`fuse` is the SCABs + LPF part, :attr:`down` the down-sampling (:class:`DownBlock`: a conv is needed here,
    the width is fixed on both sides).
    """

    def __init__(self, num_feat, parsing_channels, num_scab, num_heads, order='eq22', batch_norm=True, **attn):
        super().__init__()
        if order not in ('eq22', 'down_first'):
            raise ValueError(f"EncoderStage: order={order!r} is not 'eq22' or 'down_first'.")
        self.order = order
        self.down = DownBlock(num_feat, batch_norm)
        self.scabs = nn.Sequential(*[SCAB(num_feat, num_heads, **attn) for _ in range(num_scab)])
        self.lpf = LPF(num_feat, parsing_channels)

    def fuse(self, feat, parsing):
        """``LPF(SCAB x num_scab (feat), parsing)`` at the size of ``feat``."""
        return self.lpf(self.scabs(feat), parsing)

    def forward(self, feat, parsing):
        """eq22: ``Downsample(LPF(SCABs(feat), parsing))`` (``parsing`` at the size of ``feat``); down_first:
        ``LPF(SCABs(Downsample(feat)), parsing)`` (``parsing`` at half the size of ``feat``)."""
        if self.order == 'eq22':
            return self.down(self.fuse(feat, parsing))
        return self.fuse(self.down(feat), parsing)


class DecoderStage(nn.Sequential):
    """One decoder scale (eq. 23): up-sample (:class:`UpBlock`: a conv is needed, fixed width), ``num_scab`` SCABs."""

    def __init__(self, num_feat, num_scab, num_heads, icnr=True, batch_norm=True, upsample='shuffle', **attn):
        up = UpBlock(num_feat, icnr, batch_norm) if upsample == 'shuffle' else ResizeUpBlock(num_feat, batch_norm)
        super().__init__(up, *[SCAB(num_feat, num_heads, **attn) for _ in range(num_scab)])


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
        w_resample (str): The W path's resamplers: ``'paper'`` (default: conv-free (inverse) pixel shuffle after each
            3x3 conv, eq. 14-19) or ``'conv'`` (a second conv inside each, earlier versions). See the module docstring.
        encoder_order (str): ``'eq22'`` (default: SCABs and LPF, then the down-sampling) or ``'down_first'``.
        input_upsample (str): ``I^d`` and the global residual: ``'matlab'`` (default: MATLAB's bicubic, the data's) or
            ``'torch'`` (``F.interpolate`` bicubic).
        icnr_init (bool): ICNR initialisation of every conv that feeds a pixel shuffle. Default: True (OPEN in the
            paper; Aitken et al. 2017; measured in the module docstring's "Grid").
        resample_norm (str): ``'none'`` (default, a DEVIATION: no BatchNorm in the resamplers; measured in "Grid") or
            ``'batch'`` (the paper's BatchNorm after every (inverse) pixel shuffle, eq. 14 and 18).
        decoder_upsample (str): The decoder's x2 up-sampling (eq. 23): ``'bilinear'`` (default, a DEVIATION:
            :class:`ResizeUpBlock`, bilinear x2 + conv3x3; measured in "Grid") or ``'shuffle'`` (:class:`UpBlock`,
            conv3x3 C -> 4C + pixel shuffle, the paper's Upsample with the conv the width needs).
        parsing_upsample (str): How the LR-size parsing map is enlarged to ``I_NN^1..8`` (eq. 13): ``'bilinear'``
            (default, a DEVIATION measured in "Grid") or ``'nearest'`` (eq. 13's nearest neighbour). Its
            down-sampling in the encoder stays nearest neighbour (Sec. 3.3).
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
                 w_resample='paper',
                 encoder_order='eq22',
                 input_upsample='matlab',
                 icnr_init=True,
                 resample_norm='none',
                 decoder_upsample='bilinear',
                 parsing_upsample='bilinear',
                 use_checkpoint=False,
                 checkpoint_tile_pixels=65536,
                 return_parsing=False):
        super().__init__()
        if upscale not in (2, 4, 8):
            raise ValueError(f'WNet: upscale must be 2, 4 or 8, got {upscale}.')
        choices = dict(
            w_resample=('paper', 'conv'),
            encoder_order=('eq22', 'down_first'),
            input_upsample=('matlab', 'torch'),
            resample_norm=('batch', 'none'),
            decoder_upsample=('shuffle', 'bilinear'),
            parsing_upsample=('bilinear', 'nearest'))
        given = dict(
            w_resample=w_resample,
            encoder_order=encoder_order,
            input_upsample=input_upsample,
            resample_norm=resample_norm,
            decoder_upsample=decoder_upsample,
            parsing_upsample=parsing_upsample)
        for name, allowed in choices.items():
            value = given[name]
            if value not in allowed:
                raise ValueError(f'WNet: {name}={value!r} is not one of {allowed}.')
        self.encoder_order = encoder_order
        self.parsing_upsample = parsing_upsample
        self.input_upsample = input_upsample
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
        bn = resample_norm == 'batch'

        self.parsing_block = ParsingBlock(num_in_ch, num_feat, parsing_res_blocks, hg_depth, parsing_channels)
        cat_ch = num_in_ch + parsing_channels  # eq. 12
        # eq. 14-17: the first stage's f3x3,64 takes eq. 12's concatenation
        self.up_stages = nn.ModuleList([
            WPathStage(cat_ch if i == 0 else num_feat, num_feat, parsing_channels, 'up', w_resample, icnr_init, bn)
            for i in range(num_up_levels)
        ])
        self.down_stages = nn.ModuleList([
            WPathStage(num_feat, num_feat, parsing_channels, 'down', w_resample, icnr_init, bn)
            for _ in range(num_up_levels)
        ])  # eq. 18-19
        # With no W levels (a deviation), one f3x3,64 + one LPF at the HR size keep the fusion with I_NN^1.
        self.conv_first = nn.Conv2d(cat_ch, num_feat, 3, 1, 1) if num_up_levels == 0 else None
        self.lpf_start = LPF(num_feat, parsing_channels) if num_up_levels == 0 else None
        self.encoder = nn.ModuleList([
            EncoderStage(num_feat, parsing_channels, num_scab, num_heads, encoder_order, bn, **attn)
            for _ in range(num_enc_levels)
        ])
        self.decoder = nn.ModuleList([
            DecoderStage(num_feat, num_scab, num_heads, icnr_init, bn, decoder_upsample, **attn)
            for _ in range(num_enc_levels)
        ])
        self.conv_last = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)

    def _saving(self):
        return self.use_checkpoint and self.training and torch.is_grad_enabled()

    def _run(self, fn, *args, module=None):
        """``fn(*args)``, under an activation checkpoint when saving memory (``module``: the module whose BatchNorms
        ``fn`` runs, default ``fn`` itself)."""
        if self._saving():
            return _checkpoint(fn, *args, module=fn if module is None else module)
        return fn(*args)

    def _run_w(self, stage, feat, parsing):
        if self._saving() and self.checkpoint_tile_pixels > 0:
            return stage.forward_tiled(feat, parsing, self.checkpoint_tile_pixels)
        return self._run(stage, feat, parsing)

    def enlarge_parsing(self, parsing, size=None, scale=None):
        """Eq. 13's enlargement of the parsing map (``parsing_upsample``: nearest neighbour or bilinear)."""
        if self.parsing_upsample == 'nearest':
            return F.interpolate(parsing, size=size, scale_factor=scale, mode='nearest')
        return F.interpolate(parsing, size=size, scale_factor=scale, mode='bilinear', align_corners=False)

    def upsample_input(self, lq, size):
        """``I^d``: the LR face at HR size, the W path's input and the global residual (see ``input_upsample``)."""
        if self.input_upsample == 'matlab':
            return matlab_bicubic_upsample(lq, self.upscale)
        return upsample_to(lq, size=size)

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
        base = self.upsample_input(lq, hr_size)  # I^d: the W path starts at the HR size (see the module docstring)
        parsing = self.enlarge_parsing(parsing_lr, size=hr_size)  # I_NN^1

        # W path, eq. 12-19
        feat = torch.cat([base, parsing], dim=1)  # eq. 12
        for i, stage in enumerate(self.up_stages, 1):
            feat = self._run_w(stage, feat, self.enlarge_parsing(parsing, scale=2**i))
        for i, stage in zip(range(self.num_up_levels - 1, -1, -1), self.down_stages):
            feat = self._run_w(stage, feat, self.enlarge_parsing(parsing, scale=2**i) if i else parsing)
        if self.lpf_start is not None:
            feat = self._run(self.lpf_start, self.conv_first(feat), parsing)

        # encoder (eq. 22) and decoder (eq. 23)
        skips = []
        par = parsing
        for stage in self.encoder:
            if self.encoder_order == 'eq22':  # LPF(SCABs(F), I_NN at the size of F), then Downsample
                feat = self._run(stage.fuse, feat, par, module=stage)
                skips.append(feat)
                feat = self._run(stage.down, feat)
                par = F.interpolate(par, scale_factor=0.5, mode='nearest')
            else:
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
