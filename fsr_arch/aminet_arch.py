"""AMINet: Attention-Guided Multi-scale Interaction Network for face super-resolution (Wan et al., 2024).

No public code exists; this is built from Section III of the paper. Map from code to paper:

- :class:`AMINet` (Sec. III-A, Fig. 2): the LR face is brought to HR size inside ``forward`` (the paper works on
  ``I_LR in R^{3 x H x W}``); a 3x3 conv head; three encoders (an LGFI + down-sampling: channels doubled, size halved,
  giving F1 (2C, H/2), F2 (4C, H/4), F3 (8C, H/8)); a bottleneck of two LGFIs (F4, 8C); three decoders (up-sampling that
  halves the channels and doubles the size, :class:`EDFF` with the encoder feature of the same scale, an LGFI: F5 (4C),
  F6 (2C), F7 (C)); a 3x3 conv to 3 channels plus the global residual (the upsampled input). L1 loss (eq. 1).
- SA (Sec. III-B-1, Fig. 3b, eq. 2-6): :class:`fsr_arch.common.ConvSelfAttention` with ``order='pw_first'``
  (``F_dw3(F_conv1(X))``, eq. 2-4), ``mode='channel'`` (Q reshaped to C x HW and K to HW x C before eq. 5, so the map
  is C x C per head and the dot products run over the H*W positions) and ``scaling='sqrt_d'`` (eq. 5:
  ``Softmax(Q.K / sqrt(d)) . V``, d = H*W, the length of each dot product, as d_k in Vaswani et al.), then a 1x1 conv
  (eq. 6). Multi-head as the text says ("the multi-head mechanism").
- :class:`RDFE` (Sec. III-B-2, Fig. 3a, eq. 7-11): depth-wise 3x3 / 5x5 / 7x7 branches (eq. 7), attention unit on their
  concatenation (eq. 8), the three branches times its weight (eq. 9), a second depth-wise 3x3 / 5x5 / 7x7, 1x1 fusion of
  the concatenation plus the input (eq. 10), then the :class:`FRM` (eq. 11: normalization, 3x3 convs, hourglass).
- :class:`SKAF` (Sec. III-B-3, eq. 12-15): a 5x5 conv of the first input and a 7x7 conv of the second (eq. 12, OPEN
  below), concatenation (eq. 13), average and max pooling over the channels, sigmoid (eq. 14), split into two weights
  (eq. 15).
- :class:`LGFI` (Sec. III-B, Fig. 2 / Fig. 4): SA and RDFE in parallel on the layer-normalized input,
  ``x + X1 * X' + X2 * X''`` with ``X', X'' = SKAF(X1 = SA, X2 = RDFE)`` (X' weighs the global branch; the LayerNorm and
  the outer residual are OPEN, below).
- :class:`EDFF` (Sec. III-C, eq. 16-17): ``X', X'' = SKAF(Conv1x1(cat(X_E, X_D)))``, ``X_ED = X_E * X' + X_D * X''``.
- Ablation variants as options of :class:`AMINet`: ``block='transformer'`` (Table II: every LGFI replaced by the
  "traditional Transformer in Restormer", :class:`TransformerBlock`: ``x + SA(LN(x))`` then ``x + FFN(LN(x))``) and
  ``local_branch='ffn'`` (Table III: RDFE replaced by an :class:`FFN`, Restormer's GDFN).

Parameter counts, and which of the paper's figures they match (x8, C = 46; ``tests/test_aminet.py::
test_paper_and_ablation_parameter_counts``). The paper gives three totals (Tables II and III) and, through them, two
differences that isolate the LGFI's parts (the Transformer and FFN being Restormer's, Sec. IV-C-2, with the same C):
over the eight blocks, LGFI - Transformer = (RDFE - FFN) + SKAF - LayerNorm, and Table III's RDFE - FFN.

  ======================================= ============ ============ =======
  figure (x8, C = 46)                      paper        this code    diff
  ======================================= ============ ============ =======
  AMINet (LGFI with RDFE)                 12.62M       12.61M       -0.05%
  Table II: LGFI -> Transformer           11.32M       11.20M       -1.1%
  Table III: RDFE -> FFN                  12.11M       12.02M       -0.7%
  LGFI - Transformer (Table II)           1.30M        1.42M        +9%
  RDFE - FFN (Table III)                  0.51M        0.59M        +16%
  ======================================= ============ ============ =======

The three totals match within 1.1% and LGFI - Transformer within 9%; RDFE - FFN does NOT match: the eight RDFEs cost
0.59M more than eight GDFNs here, 0.51M in the paper (+0.08M, +16%). No reading found fits all five: C = 44 brings the
differences to 1.31M (+1%) and 0.55M (+8%) but the totals to 11.56 / 10.25 / 11.01M (-8 to -10%); the FFN variant's
width would have to be 2.73 C instead of Restormer's 2.66 C (12.10M; the paper says the replacements keep "similar
parameters" but gives no width). The figures are met by these readings (each an argument):

- ``hourglass_convs=1``: the FRM's hourglass has one separable 3x3 conv per level, at the lower resolution (avg-pool,
  conv, GELU, bilinear back, skip); the text says only "the hourglass block further integrates multi-scale information".
  A second conv after each up-sampling (``hourglass_convs=2``, this plugin's network before this fit, whose checkpoints
  need it) gives 12.99M (+2.9%) and differences of 1.79M (+38%) and 0.97M (+90%).
- The separable convs of the FRM and of LGFI's SKAF, and full convs in EDFF's SKAF: DEVIATIONS, below.
- Breakdown of the 12.61M: up-sampling 3.20M, EDFFs 3.38M, eight LGFIs 5.83M (SA 1.48M, RDFE 3.53M of which FRM
  1.13M, SKAF 0.83M), down-sampling 0.20M. C = 48: 13.71 / 12.19 / 13.08M (+8 to +9%).

DEVIATIONS from what the paper states:

- SKAF's squeeze conv (``squeeze_kernel=7``): eq. 14 as printed has no layer between the pooling and the sigmoid. Then
  the two weights are ``sigmoid(mean_c(X))`` and ``sigmoid(max_c(X))``; since max >= mean at every pixel, the second
  input's weight (RDFE's in LGFI, the decoder's in EDFF) could never be below the first's, whatever the training does,
  and SKAF could not "adaptively select the important local and global information" as the text says (nor could
  Table V's "Avgpool only" / "Maxpool only" rows mean two weights). LSKNet, which the paper names as SKAF's model, maps
  the two pooled maps to the two weights with a 7x7 conv (2 -> 2 channels, 198 parameters); that is the default here.
  ``squeeze_kernel=0`` gives eq. 14 as printed. A test shows that both orders of the weights are reachable.
- LGFI's SKAF convs are separable (``skaf_conv='separable'``: a depth-wise 5x5 / 7x7, then a 1x1, LSKNet's depth-wise
  large kernels and 1x1 convs): eq. 12 writes ``F_conv5`` / ``F_conv7``, "a 5x5 convolution and a 7x7 convolution",
  i.e. full C -> C convs. Reason: the paper's own counts. Full convs make the eight LGFI SKAFs 26.6M (38.4M in all,
  three times the paper's 12.62M); the two ablation differences put them at about 1.30 - 0.51 = 0.79M, and separable
  ones cost 0.83M (depth-wise ones alone 0.11M). ``skaf_conv='full'`` is the text.
- SKAF in two forms: the paper has one SKAF, used in LGFI and again in EDFF ("we also utilize our proposed SKAF"); here
  EDFF's has full 5x5 / 7x7 convs (``edff_skaf_conv='full'``, as eq. 12 writes) and LGFI's separable ones. Reason: the
  paper's counts cannot be met by one form. Table VI: an EDFF added to SPARNet costs +1.5M (SFMNet: +2.1M), which a 1x1
  reduction and full convs give at SPARNet-like widths (three levels 32/64/128: 76 C^2 per level, 1.64M; separable:
  0.10M); Tables II / III need the cheap form in LGFI (above). Separable convs in EDFF too give 9.44M in all (-25%).
- The FRM's 3x3 convs are separable (``frm_conv='separable'``): the text says "multiple 3x3 convolutional layers",
  i.e. full convs. Reason: the counts again: full ones make the eight FRMs 9.72M (21.21M in all, +68%). The paper's
  conclusion speaks of "a multi-scale depth separable convolutional kernel ... to extract and refine local features"
  for the RDFE, whose refinement the FRM is. ``frm_conv='full'`` is the text.

Choices the paper leaves open (OPEN; each an argument where an alternative is offered) and how they were made:

- eq. 12's pairing: ``X1', X2' = F_conv5(X1, X2), F_conv7(X1, X2)`` gives both convs both inputs, while the text says
  "the local and global features extracted by a 5x5 convolution and a 7x7 convolution" without saying which conv sees
  which. Read here as one conv per input, in order: ``X1' = F_conv5(X1)`` (SA's output), ``X2' = F_conv7(X2)``
  (RDFE's), two C-channel maps concatenated by eq. 13 (so that eq. 15's split of the pooled 2-channel map gives one
  weight per input). In EDFF, SKAF has a single input (the 1x1-reduced concatenation, eq. 16), which both convs take.
- LGFI's LayerNorm and outer residual: the text names SA, RDFE and SKAF only (Fig. 2 and 4 are drawings this build
  cannot read exactly). Both are taken from the Restormer block that Table II replaces with LGFI (pre-norm, identity
  path), so that Table II compares the branch structure alone and the eight blocks keep an identity path.
- The attention unit F_au of eq. 8: a 1x1 conv of the 3C concatenation to C channels and a sigmoid (one weight per
  channel and position, shared by the three branches as eq. 9 writes ``f_i . f'``).
- Down-/up-sampling: Restormer's conv3x3 + pixel-(un)shuffle (the paper's U-shape and its Table II Transformer are
  Restormer's; the paper says "a downsampling operator" / "an upsampling operation"); ``upsample='bilinear'`` is the
  option. Initialisation (the paper names none): ICNR for the convs before the pixel shuffles and a zero last conv,
  see "Grid". Heads per level ``[1, 2, 4, 8]`` (Restormer's). One LGFI per encoder and per decoder, two in the
  bottleneck (Fig. 2; Sec. III-A: "each encoder comprises our LGFI and a downsampling operator").
- The decoder's skip (EDFF's X_E): the output of the encoder's LGFI at the same scale, before its down-sampling (U-Net /
  Restormer), e.g. the first decoder (4C, H/4) fuses the third encoder's LGFI output, not F2 (the same shape, one LGFI
  earlier). The paper names the features after each encoder but not the skip source.
- The input up-sampling (``input_upsample='matlab'``): the paper's LR faces are made by "bicubic interpolation" (MATLAB
  ``imresize`` in the FSR code bases it compares with, and ``fsr-prepare``'s default); the network brings them back to
  HR size with the same kernel (:func:`matlab_bicubic_upsample`: Keys a = -0.5, mirrored borders), so its global
  residual starts from exactly the bicubic baseline ``fsr-benchmark`` reports (up to its 8-bit rounding).
  ``'torch'`` is ``F.interpolate`` bicubic (a = -0.75, edge pixels repeated): on the demo's x4 faces the two differ by
  0.005 of the pixel range on average (0.06 at most), and torch's sharper kernel alone scores 0.15 dB above the
  benchmark's bicubic on the held-out faces (25.53 vs 25.38 dB), a gain a network would get without learning anything.
- Restormer's scaling (``attn_scaling='l2norm'``: L2-normalized q, k and a learned temperature) is an option, not the
  default: eq. 5 states 1/sqrt(d), and there is no measured reason to deviate: the demo network
  (``options/demo/train_aminet_demo_x4.yml``, 300 CPU iterations, with ``hourglass_convs=2``) reached 25.50 dB on the
  three held-out demo faces with 1/sqrt(d) and 25.46 dB with ``l2norm`` (bicubic: 25.38 dB; ``fsr-benchmark``, Y
  channel, crop 4).

Grid (issue 24). The demo AMINet (``options/demo/train_aminet_demo_x4.yml``, C = 12, 300 CPU iterations) drew a faint
periodic pattern on new faces, and on two of three seeds learned almost nothing. Measured with
:func:`fsr_metrics.grid_score.grid_score` (period-2/4 share of the added detail relative to the HR face's; natural
detail about 1), median over the 3 held-out demo faces / the same photos cropped by ``fsr-prepare --crop box`` (2 faces:
one photo is too small for that crop) / ``--crop landmarks68`` (1 face), and the mean PSNR gain over bicubic on the
held-out faces (Y, crop 4); one training per seed (0 / 1 / 2), one change at a time:

    ========================================= ====================================== ======================
    initialisation / up-sampling              grid held-out; box; landmarks68          dB vs bicubic
                                              (seeds 0 1 2 in each group)             (seeds 0 / 1 / 2)
    ========================================= ====================================== ======================
    PyTorch's (the earlier network)           1.13 2.19 9.49; 16.99 3.49 44.92;       +0.16 / +0.04 / +0.07
                                              1.62 0.99 17.84
    ICNR                                      0.20 9.15 16.97; 1.42 27.06 47.54;      +0.23 / +0.02 / +0.01
                                              0.13 8.97 25.58
    bilinear up-sampling (``'bilinear'``)     0.12 0.53 0.63; 0.37 1.70 1.88;         +0.06 / +0.01 / -0.01
                                              0.06 0.46 0.81
    zero last conv                            0.21 0.15 0.21; 1.64 0.60 1.27;         +1.10 / +1.16 / +1.24
                                              0.42 0.19 0.35
    zero last conv and ICNR (the defaults)    0.17 0.24 0.06; 0.52 0.38 0.76;         +0.80 / +0.99 / +0.73
                                              0.24 1.05 0.14
    ========================================= ====================================== ======================

The cause is the initial output: with PyTorch's initialisation the untrained network adds a residual of about 100 grey
levels (RMS, 0-255) to the bicubic face, whose pixel-shuffle structure makes it periodic (grid score 24-43 at
initialisation; 0.0-0.1 with ICNR or bilinear up-sampling); 300 iterations spent removing it leave the network close
to bicubic plus what is left of that pattern. A zero last conv (``conv_last_init='zero'``) starts the network at the
bicubic face (the global residual), so it learns the detail from the first step (+1.1 to +1.2 dB instead of +0.0 to
+0.2); ICNR (``icnr_init=True``) keeps the learned sub-pixel kernels of the shuffles together, which brings every set
and seed to 1.05 or below, for 0.2-0.5 dB less gain at 300 iterations. Both are initialisations, OPEN in the paper;
they change no parameter and load every earlier checkpoint. Commands: ``fsr-train`` on the demo file with
``network_g: conv_last_init / icnr_init / upsample`` and ``manual_seed`` set, then ``fsr-benchmark`` on each set.
"""
import math
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from fsr_arch.common import ConvSelfAttention, LayerNorm2d, check_divisible, icnr_, matlab_bicubic_upsample, upsample_to

__all__ = [
    'AMINet', 'LGFI', 'TransformerBlock', 'RDFE', 'FFN', 'FRM', 'Hourglass', 'SKAF', 'EDFF', 'matlab_bicubic_upsample',
    'PAPER_CONFIGS', 'ABLATION_CONFIGS', 'PAPER_PARAMS', 'TINY_CONFIG'
]

CONV_KINDS = ('full', 'depthwise', 'separable')


def make_conv(num_feat, kernel_size, kind):
    """A C -> C conv with 'same' padding: ``full``, ``depthwise`` (groups=C) or ``separable`` (depth-wise then 1x1)."""
    if kind not in CONV_KINDS:
        raise ValueError(f'AMINet: conv kind {kind!r} is not one of {CONV_KINDS}.')
    pad = kernel_size // 2
    if kind == 'full':
        return nn.Conv2d(num_feat, num_feat, kernel_size, padding=pad)
    dw = nn.Conv2d(num_feat, num_feat, kernel_size, padding=pad, groups=num_feat)
    return dw if kind == 'depthwise' else nn.Sequential(dw, nn.Conv2d(num_feat, num_feat, 1))


class SKAF(nn.Module):
    """Selective Kernel Attention Fusion (eq. 12-15): returns the two weights ``X', X''`` (each (N, 1, H, W)).

    ``X1' = Conv5x5(X1)``, ``X2' = Conv7x7(X2)`` (X2 = X1 when one input is given, as in EDFF; eq. 12),
    ``X = cat(X1', X2')`` (eq. 13), ``X = sigmoid(Squeeze(cat(mean_c(X), max_c(X))))`` (eq. 14),
    ``X', X'' = split_c(X)`` (eq. 15).

    Args:
        num_feat (int): Channels of each input.
        conv (str): Kind of the 5x5 and 7x7 convs: ``'full'`` (C -> C), ``'depthwise'`` or ``'separable'``
            (depth-wise then 1x1). Default: ``'full'``.
        squeeze_kernel (int): Kernel of LSKNet's squeeze conv (2 -> 2 channels) between the pooled maps and the
            sigmoid; 0 = none (eq. 14 as printed, which cannot select: see the module docstring). Default: 7 (LSKNet).
    """

    def __init__(self, num_feat, conv='full', squeeze_kernel=7):
        super().__init__()
        self.conv5 = make_conv(num_feat, 5, conv)
        self.conv7 = make_conv(num_feat, 7, conv)
        self.squeeze = (
            nn.Conv2d(2, 2, squeeze_kernel, padding=squeeze_kernel // 2) if squeeze_kernel else nn.Identity())

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        hybrid = torch.cat([self.conv5(x1), self.conv7(x2)], dim=1)  # eq. 12-13
        pooled = torch.cat([hybrid.mean(dim=1, keepdim=True), hybrid.amax(dim=1, keepdim=True)], dim=1)
        weights = torch.sigmoid(self.squeeze(pooled))  # eq. 14
        return weights[:, :1], weights[:, 1:]  # eq. 15


class Hourglass(nn.Module):
    """Hourglass block of the FRM: ``depth`` times (avg-pool by 2, conv3x3, GELU), then back up with skip additions.

    Any input size works: the way back is interpolated to the size of the skip it is added to.

    Args:
        num_feat (int): Channels.
        depth (int): Number of down-sampling levels. Default: 1.
        conv (str): Kind of the 3x3 convs (see :class:`SKAF`). Default: ``'separable'``.
        convs (int): 3x3 convs per level: 1 (default), one at the lower resolution only, the way back being the
            bilinear up-sampling and the skip addition; 2 adds a conv after each up-sampling (this plugin's network
            before the parameter fit of the module docstring; its checkpoints need it).
    """

    def __init__(self, num_feat, depth=1, conv='separable', convs=1):
        super().__init__()
        if convs not in (1, 2):
            raise ValueError(f'AMINet: hourglass_convs must be 1 or 2, got {convs!r}.')
        self.down = nn.ModuleList([make_conv(num_feat, 3, conv) for _ in range(depth)])
        self.up = nn.ModuleList([make_conv(num_feat, 3, conv) if convs == 2 else nn.Identity() for _ in range(depth)])

    def forward(self, x):
        skips = []
        for conv in self.down:
            skips.append(x)
            x = F.gelu(conv(F.avg_pool2d(x, 2, ceil_mode=True)))
        for conv, skip in zip(self.up, reversed(skips)):
            x = skip + conv(F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False))
        return x


class FRM(nn.Module):
    """Feature Refinement Module (eq. 11): ``x + Hourglass(Conv3x3(GELU(Conv3x3(LayerNorm(x)))))``.

    Args:
        num_feat (int): Channels.
        hourglass_depth (int): Depth of the hourglass (0 = no hourglass). Default: 1.
        conv (str): Kind of every 3x3 conv (see :class:`SKAF`). Default: ``'separable'``.
        hourglass_convs (int): 3x3 convs per hourglass level (see :class:`Hourglass`). Default: 1.
    """

    def __init__(self, num_feat, hourglass_depth=1, conv='separable', hourglass_convs=1):
        super().__init__()
        self.norm = LayerNorm2d(num_feat)
        self.conv1 = make_conv(num_feat, 3, conv)
        self.conv2 = make_conv(num_feat, 3, conv)
        self.hourglass = (
            Hourglass(num_feat, hourglass_depth, conv, hourglass_convs) if hourglass_depth > 0 else nn.Identity())

    def forward(self, x):
        return x + self.hourglass(self.conv2(F.gelu(self.conv1(self.norm(x)))))


class RDFE(nn.Module):
    """Residual Depth Feature Extraction module (Fig. 3a, eq. 7-11).

    Args:
        num_feat (int): Channels.
        hourglass_depth (int): Depth of the FRM's hourglass. Default: 1.
        frm_conv (str): Kind of the FRM's 3x3 convs. Default: ``'separable'``.
        hourglass_convs (int): 3x3 convs per level of the FRM's hourglass (see :class:`Hourglass`). Default: 1.
    """

    def __init__(self, num_feat, hourglass_depth=1, frm_conv='separable', hourglass_convs=1):
        super().__init__()
        kernels = (3, 5, 7)
        self.branches1 = nn.ModuleList([make_conv(num_feat, k, 'depthwise') for k in kernels])
        # Attention unit F_au (eq. 8): 1x1 conv of the concatenated branches to one weight per channel and position.
        self.attention_unit = nn.Sequential(nn.Conv2d(num_feat * 3, num_feat, 1), nn.Sigmoid())
        self.branches2 = nn.ModuleList([make_conv(num_feat, k, 'depthwise') for k in kernels])
        self.fusion = nn.Conv2d(num_feat * 3, num_feat, 1)
        self.frm = FRM(num_feat, hourglass_depth, frm_conv, hourglass_convs)

    def forward(self, x):
        feats = [branch(x) for branch in self.branches1]  # eq. 7
        weight = self.attention_unit(torch.cat(feats, dim=1))  # eq. 8
        feats = [branch(f * weight) for branch, f in zip(self.branches2, feats)]  # eq. 9, then the second dw convs
        y = self.fusion(torch.cat(feats, dim=1)) + x  # eq. 10
        return self.frm(y)  # eq. 11


class FFN(nn.Module):
    """Restormer's gated-Dconv feed-forward network (GDFN), the FFN of Table III and of the Transformer of Table II.

    ``Conv1x1(GELU(a) * b)`` with ``a, b = split(DWConv3x3(Conv1x1(x)))``, hidden width ``int(C * expansion)``, no bias
    (Restormer's defaults).

    Args:
        num_feat (int): Channels.
        expansion (float): Hidden width / C. Default: 2.66 (Restormer).
    """

    def __init__(self, num_feat, expansion=2.66):
        super().__init__()
        hidden = int(num_feat * expansion)
        self.project_in = nn.Conv2d(num_feat, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, num_feat, 1, bias=False)

    def forward(self, x):
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


def make_attention(num_feat, num_heads, scaling):
    """AMINet's SA (eq. 2-6): 1x1 then 3x3 depth-wise conv (eq. 2-4), C x C maps (the reshape before eq. 5)."""
    return ConvSelfAttention(num_feat, num_heads, order='pw_first', mode='channel', scaling=scaling)


class LGFI(nn.Module):
    """Local and Global Feature Interaction module (Sec. III-B, Fig. 4 right).

    ``y = LN(x)``, ``X1 = SA(y)`` (global), ``X2 = RDFE(y)`` (local), ``X', X'' = SKAF(X1, X2)``,
    ``out = x + X1 * X' + X2 * X''``.

    Args:
        num_feat (int): Channels.
        num_heads (int): Heads of the self-attention.
        hourglass_depth (int): Depth of the RDFE's hourglass. Default: 1.
        frm_conv (str): Kind of the FRM's 3x3 convs. Default: ``'separable'``.
        skaf_conv (str): Kind of SKAF's 5x5 / 7x7 convs. Default: ``'separable'``.
        squeeze_kernel (int): See :class:`SKAF`. Default: 7.
        attn_scaling (str): ``'sqrt_d'`` (eq. 5) or ``'l2norm'`` (Restormer). Default: ``'sqrt_d'``.
        local_branch (str): ``'rdfe'`` or ``'ffn'`` (Table III's variant: RDFE replaced by :class:`FFN`).
            Default: ``'rdfe'``.
        ffn_expansion (float): Hidden width / C of the FFN variant. Default: 2.66.
        hourglass_convs (int): 3x3 convs per level of the FRM's hourglass (see :class:`Hourglass`). Default: 1.
    """

    def __init__(self,
                 num_feat,
                 num_heads,
                 hourglass_depth=1,
                 frm_conv='separable',
                 skaf_conv='separable',
                 squeeze_kernel=7,
                 attn_scaling='sqrt_d',
                 local_branch='rdfe',
                 ffn_expansion=2.66,
                 hourglass_convs=1):
        super().__init__()
        self.norm = LayerNorm2d(num_feat)
        self.sa = make_attention(num_feat, num_heads, attn_scaling)
        if local_branch == 'rdfe':
            self.rdfe = RDFE(num_feat, hourglass_depth, frm_conv, hourglass_convs)
        elif local_branch == 'ffn':
            self.rdfe = FFN(num_feat, ffn_expansion)
        else:
            raise ValueError(f"AMINet: local_branch={local_branch!r} is not one of ('rdfe', 'ffn').")
        self.skaf = SKAF(num_feat, skaf_conv, squeeze_kernel)

    def forward(self, x):
        y = self.norm(x)
        x_global = self.sa(y)
        x_local = self.rdfe(y)
        w_global, w_local = self.skaf(x_global, x_local)
        return x + x_global * w_global + x_local * w_local


class TransformerBlock(nn.Module):
    """Restormer's Transformer block (Fig. 4 left, Table II): ``x = x + SA(LN(x))``, then ``x + FFN(LN(x))``.

    Args:
        num_feat (int): Channels.
        num_heads (int): Heads of the self-attention.
        attn_scaling (str): See :class:`LGFI`. Default: ``'sqrt_d'``.
        ffn_expansion (float): Hidden width / C of the FFN. Default: 2.66 (Restormer).
    """

    def __init__(self, num_feat, num_heads, attn_scaling='sqrt_d', ffn_expansion=2.66):
        super().__init__()
        self.norm1 = LayerNorm2d(num_feat)
        self.sa = make_attention(num_feat, num_heads, attn_scaling)
        self.norm2 = LayerNorm2d(num_feat)
        self.ffn = FFN(num_feat, ffn_expansion)

    def forward(self, x):
        x = x + self.sa(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class EDFF(nn.Module):
    """Encoder and Decoder Feature Fusion (eq. 16-17).

    ``X', X'' = SKAF(Conv1x1(cat(X_E, X_D)))`` (eq. 16; the 1x1 conv reduces 2C to C), ``X_ED = X_E * X' + X_D * X''``
    (eq. 17).

    Args:
        num_feat (int): Channels of each input.
        skaf_conv (str): Kind of SKAF's 5x5 / 7x7 convs. Default: ``'full'``.
        squeeze_kernel (int): See :class:`SKAF`. Default: 7.
    """

    def __init__(self, num_feat, skaf_conv='full', squeeze_kernel=7):
        super().__init__()
        self.reduce = nn.Conv2d(num_feat * 2, num_feat, 1)
        self.skaf = SKAF(num_feat, skaf_conv, squeeze_kernel)

    def forward(self, x_enc, x_dec):
        w_enc, w_dec = self.skaf(self.reduce(torch.cat([x_enc, x_dec], dim=1)))  # eq. 16
        return x_enc * w_enc + x_dec * w_dec  # eq. 17


class Downsample(nn.Module):
    """Channels doubled, size halved (Restormer): conv3x3 to C/2 then pixel-unshuffle by 2."""

    def __init__(self, num_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(num_feat, num_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """Channels halved, size doubled (Restormer): conv3x3 to 2C then pixel-shuffle by 2.

    Args:
        num_feat (int): Input channels C.
        mode (str): ``'shuffle'`` (Restormer's conv + pixel shuffle, default) or ``'bilinear'`` (bilinear x2, then a
            conv3x3 C -> C/2: one kernel for every output pixel; 4x fewer parameters).
        icnr (bool): With ``'shuffle'``, start the conv with its four sub-pixel kernels equal (ICNR,
            :func:`fsr_arch.common.icnr_`). Default: False.
    """

    def __init__(self, num_feat, mode='shuffle', icnr=False):
        super().__init__()
        if mode == 'shuffle':
            conv = nn.Conv2d(num_feat, num_feat * 2, 3, padding=1, bias=False)
            if icnr:
                icnr_(conv, 2)
            self.body = nn.Sequential(conv, nn.PixelShuffle(2))
        elif mode == 'bilinear':
            self.body = nn.Sequential(
                nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
                nn.Conv2d(num_feat, num_feat // 2, 3, padding=1, bias=False))
        else:
            raise ValueError(f"AMINet: upsample={mode!r} is not one of ('shuffle', 'bilinear').")

    def forward(self, x):
        return self.body(x)


@ARCH_REGISTRY.register()
class AMINet(nn.Module):
    """AMINet (Fig. 2). Input: LR face (N, 3, h, w) in [0, 1]; output: (N, 3, h*upscale, w*upscale).

    The U-shape works at the HR size with three 2x down-samplings, so the HR size must be a multiple of 8:
    ``size_multiple`` (at LR size) is 2 for x4 and 1 for x8. Parameter counts: see the module docstring.

    Args:
        upscale (int): Integer up-sampling factor, 4 or 8 in the paper. Default: 8.
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): C, the width of the first level (even: the down-sampling halves it). Default: 46 (see the
            module docstring).
        num_heads (list[int]): Heads of the SA at the four levels (C, 2C, 4C, 8C). Default: [1, 2, 4, 8] (Restormer).
        num_blocks (list[int]): LGFIs per encoder (levels 1-3; the decoders mirror them). Default: [1, 1, 1] (Fig. 2).
        num_bottleneck (int): LGFIs in the bottleneck. Default: 2 (Sec. III-A-2).
        hourglass_depth (int): Depth of the hourglass in each RDFE's FRM. Default: 1.
        hourglass_convs (int): 3x3 convs per hourglass level: 1 (default) or 2 (the earlier network; see the module
            docstring, parameter budget).
        frm_conv (str): Kind of the FRM's 3x3 convs (``'full'``, ``'depthwise'``, ``'separable'``).
            Default: ``'separable'``.
        skaf_conv (str): Kind of the 5x5 / 7x7 convs of the SKAF inside each LGFI. Default: ``'separable'``.
        edff_skaf_conv (str): Kind of the 5x5 / 7x7 convs of the SKAF inside each EDFF. Default: ``'full'``.
        squeeze_kernel (int): LSKNet's squeeze conv in every SKAF; 0 = none (cannot select). Default: 7.
        attn_scaling (str): ``'sqrt_d'`` (eq. 5) or ``'l2norm'`` (Restormer's MDTA). Default: ``'sqrt_d'``.
        block (str): ``'lgfi'`` or ``'transformer'`` (Table II's variant: every LGFI replaced by
            :class:`TransformerBlock`). Default: ``'lgfi'``.
        local_branch (str): ``'rdfe'`` or ``'ffn'`` (Table III's variant: RDFE replaced by :class:`FFN` in every LGFI).
            Default: ``'rdfe'``.
        ffn_expansion (float): Hidden width / C of the FFN of both variants. Default: 2.66 (Restormer).
        input_upsample (str): How the LR face is brought to HR size: ``'matlab'`` (MATLAB-style bicubic, the
            interpolation of the data and of the benchmark's bicubic baseline) or ``'torch'`` (``F.interpolate``
            bicubic, a = -0.75). Default: ``'matlab'``.
        img_range (float): Not used by the network's maths; kept for BasicSR option compatibility. Default: 1.
        upsample (str): The decoders' up-sampling: ``'shuffle'`` (Restormer's conv3x3 + pixel shuffle, default) or
            ``'bilinear'`` (bilinear x2 + conv3x3 C -> C/2; 10.21 M parameters instead of 12.61 M). See "Grid".
        icnr_init (bool): ICNR initialisation of the convs before the pixel shuffles. Default: True (see "Grid").
        conv_last_init (str): ``'zero'`` (default: the last conv starts at zero, so the untrained network outputs the
            bicubic enlargement) or ``'default'`` (PyTorch's initialisation). See "Grid".
    """

    def __init__(self,
                 upscale=8,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=46,
                 num_heads=(1, 2, 4, 8),
                 num_blocks=(1, 1, 1),
                 num_bottleneck=2,
                 hourglass_depth=1,
                 frm_conv='separable',
                 skaf_conv='separable',
                 edff_skaf_conv='full',
                 squeeze_kernel=7,
                 attn_scaling='sqrt_d',
                 block='lgfi',
                 local_branch='rdfe',
                 ffn_expansion=2.66,
                 input_upsample='matlab',
                 img_range=1.,
                 hourglass_convs=1,
                 upsample='shuffle',
                 icnr_init=True,
                 conv_last_init='zero'):
        super().__init__()
        if len(num_heads) != 4 or len(num_blocks) != 3:
            raise ValueError('AMINet: num_heads needs 4 values (levels C, 2C, 4C, 8C) and num_blocks 3 (encoders).')
        if num_feat % 2:
            raise ValueError(f'AMINet: num_feat ({num_feat}) must be even (the down-sampling conv halves it).')
        if block not in ('lgfi', 'transformer'):
            raise ValueError(f"AMINet: block={block!r} is not one of ('lgfi', 'transformer').")
        if input_upsample not in ('matlab', 'torch'):
            raise ValueError(f"AMINet: input_upsample={input_upsample!r} is not one of ('matlab', 'torch').")
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f'AMINet: upscale must be a positive integer, got {upscale}.')
        self.upscale = int(upscale)
        self.size_multiple = 8 // math.gcd(8, self.upscale)
        self.input_upsample = input_upsample
        self.img_range = img_range
        c = num_feat

        def make_block(ch, heads):
            if block == 'transformer':
                return TransformerBlock(ch, heads, attn_scaling, ffn_expansion)
            return LGFI(ch, heads, hourglass_depth, frm_conv, skaf_conv, squeeze_kernel, attn_scaling, local_branch,
                        ffn_expansion, hourglass_convs)

        self.conv_first = nn.Conv2d(num_in_ch, c, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level in range(3):
            ch = c * 2**level
            self.encoders.append(nn.Sequential(*[make_block(ch, num_heads[level]) for _ in range(num_blocks[level])]))
            self.downs.append(Downsample(ch))
        self.bottleneck = nn.Sequential(*[make_block(c * 8, num_heads[3]) for _ in range(num_bottleneck)])
        self.ups = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(3)):
            ch = c * 2**level
            self.ups.append(Upsample(ch * 2, upsample, icnr_init))
            self.fusions.append(EDFF(ch, edff_skaf_conv, squeeze_kernel))
            self.decoders.append(nn.Sequential(*[make_block(ch, num_heads[level]) for _ in range(num_blocks[level])]))
        self.conv_last = nn.Conv2d(c, num_out_ch, 3, padding=1)
        if conv_last_init == 'zero':
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)
        elif conv_last_init != 'default':
            raise ValueError(f"AMINet: conv_last_init={conv_last_init!r} is not one of ('default', 'zero').")

    def upsample_input(self, x):
        """The LR face at HR size, the network's input and global residual (see ``input_upsample``)."""
        if self.input_upsample == 'matlab':
            return matlab_bicubic_upsample(x, self.upscale)
        h, w = x.shape[-2:]
        return upsample_to(x, size=(h * self.upscale, w * self.upscale))

    def forward(self, x):
        check_divisible(
            x, self.size_multiple, 'AMINet',
            f'At x{self.upscale} the HR size (LR size x {self.upscale}) must be a multiple of 8 (three 2x '
            f'down-samplings), so the LR size must be a multiple of {self.size_multiple}.')
        x_up = self.upsample_input(x)
        feat = self.conv_first(x_up)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)  # the skip is the encoder's LGFI output, before its down-sampling (Restormer)
            feat = down(feat)  # F1, F2, F3
        feat = self.bottleneck(feat)  # F4
        for up, fusion, decoder, skip in zip(self.ups, self.fusions, self.decoders, reversed(skips)):
            feat = decoder(fusion(skip, up(feat)))  # F5, F6, F7
        return self.conv_last(feat) + x_up


# The paper's parameter counts: Table II / III (AMINet, LGFI with RDFE), Table II (Transformer), Table III (FFN).
PAPER_PARAMS = {'aminet': 12.62e6, 'transformer': 11.32e6, 'ffn': 12.11e6}

_PAPER = dict(num_feat=46, num_heads=[1, 2, 4, 8], num_blocks=[1, 1, 1], num_bottleneck=2)

# The paper's configuration (one network definition for both scales: only the input upsampling differs).
PAPER_CONFIGS = {'x4': dict(upscale=4, **_PAPER), 'x8': dict(upscale=8, **_PAPER)}

# The ablation variants of Tables II and III at x8 (same C, every other choice the same).
ABLATION_CONFIGS = {
    'transformer': dict(upscale=8, block='transformer', **_PAPER),
    'ffn': dict(upscale=8, local_branch='ffn', **_PAPER),
}

# A tiny network that trains a few iterations on the CPU in seconds (upscale is given separately).
# Tests compare random-initialised networks (CPU vs GPU, PyTorch vs ONNX, fp32 vs bf16): the last conv keeps PyTorch's
# initialisation there, so that the whole network, not only the bicubic residual, reaches the output, and no ICNR, so
# that the four sub-pixel kernels of each shuffle differ (a wrong sub-pixel order would change the output).
TINY_CONFIG = dict(
    num_feat=8,
    num_heads=[1, 1, 2, 2],
    num_blocks=[1, 1, 1],
    num_bottleneck=1,
    hourglass_depth=1,
    conv_last_init='default',
    icnr_init=False)
