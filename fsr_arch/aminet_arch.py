"""AMINet: Attention-Guided Multi-scale Interaction Network for face super-resolution (Wan et al., 2024).

No public code exists; this is built from Section III of the paper. Map from code to paper:

- :class:`AMINet` (Sec. III-A, Fig. 2): the LR face is bicubic-upsampled to HR size inside ``forward`` (the paper works
  on the upsampled face, ``I_LR in R^{3 x H x W}``); a 3x3 conv head; three encoders (``LGFI`` blocks + down-sampling:
  channels doubled, size halved, giving F1 (2C, H/2), F2 (4C, H/4), F3 (8C, H/8)); a bottleneck of two LGFIs (F4, 8C);
  three decoders (up-sampling that halves channels and doubles size, :class:`EDFF` with the encoder feature of the same
  scale, LGFI blocks: F5 (4C), F6 (2C), F7 (C)); a 3x3 conv to 3 channels plus the global residual (the upsampled
  input). Trained with the L1 loss of eq. 1.
- :class:`LGFI` (Sec. III-B, Fig. 2 / Fig. 4): self-attention (SA, eq. 2-6: :class:`fsr_arch.common.ConvSelfAttention`,
  1x1 conv + 3x3 depth-wise conv for q, k, v, multi-head, channel-wise map, 1x1 projection) and :class:`RDFE` in
  parallel on the layer-normalized input, fused by :class:`SKAF`, plus the block's residual.
- :class:`RDFE` (Sec. III-B-2, Fig. 3a, eq. 7-11): depth-wise 3x3 / 5x5 / 7x7 branches (eq. 7), attention unit on their
  concatenation (eq. 8), re-weighting (eq. 9), a second depth-wise 3x3 / 5x5 / 7x7, 1x1 fusion plus the input (eq. 10),
  then the :class:`FRM` feature refinement module (eq. 11: normalization, 3x3 convs, :class:`Hourglass`).
- :class:`SKAF` (Sec. III-B-3, eq. 12-15): a 5x5 conv of the first input and a 7x7 conv of the second (eq. 12),
  concatenation (eq. 13), average and max pooling over the channels, sigmoid (eq. 14), split into two weights (eq. 15).
- :class:`EDFF` (Sec. III-C, eq. 16-17): ``X', X'' = SKAF(Conv1x1(cat(X_E, X_D)))``, ``X_ED = X_E * X' + X_D * X''``.

Choices the paper leaves open (all constructor arguments):

- The attention scaling of eq. 5 (``/sqrt(d)``) is the learnable temperature over L2-normalized q, k of Restormer's
  MDTA, the block the paper compares LGFI with (Table II); shared with W-Net through ``common.ConvSelfAttention``.
- SKAF's 5x5 and 7x7 are full convs (C -> C each; the paper says "depth-wise" for RDFE's kernels but not for SKAF's), so
  the concatenation of eq. 13 has 2C channels. This also fits Table VI: EDFF (one 1x1 conv + one SKAF) added to SPARNet
  costs +1.5M; with EDFFs at three levels 32/64/128 wide, full convs (76 C^2 per level) give 1.6M, C -> C/2 convs 0.8M
  and depth-wise ones 0.05M. Pooling is over the channels (LSKNet, which the paper cites as the model for SKAF): the two
  halves after the split are then two spatial weight maps, one per branch, which is what eq. 15 needs. Eq. 14 has no
  conv between the pooling and the sigmoid and neither has this code (``squeeze_kernel=0``; LSKNet's 7x7 squeeze conv is
  an option).
- Down-/up-sampling: Restormer's conv3x3 + pixel-(un)shuffle (the paper's U-shape is Restormer's).
- Heads per level ``[1, 2, 4, 8]`` (Restormer's), one LGFI per encoder and per decoder and two in the bottleneck (Fig. 2
  and Sec. III-A: "each encoder comprises our LGFI and a downsampling operator"), an FRM hourglass of depth 2 (two
  halvings, convs on both paths). With these fixed, the width C (``num_feat``) is the one free number; it must be even
  (the pixel-unshuffle halves it) and C = 22 is the even value closest to the paper's 12.62M (Table II): 13.05M (+3.4%);
  C = 20 gives 10.79M (-14.5%) and C = 24 15.51M (+22.9%).
"""
import math
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from fsr_arch.common import ConvSelfAttention, LayerNorm2d, check_divisible, upsample_to

__all__ = ['AMINet', 'LGFI', 'RDFE', 'FRM', 'Hourglass', 'SKAF', 'EDFF', 'PAPER_CONFIGS', 'TINY_CONFIG']


class SKAF(nn.Module):
    """Selective Kernel Attention Fusion (eq. 12-15): returns the two weights ``X', X''`` (each (N, 1, H, W)).

    ``X1' = Conv5x5(X1)``, ``X2' = Conv7x7(X2)`` (X2 = X1 when one input is given, as in EDFF), ``X = cat(X1', X2')``,
    ``X', X'' = split(sigmoid(cat(mean_c(X), max_c(X))))``.

    Args:
        num_feat (int): Channels of each input.
        squeeze_kernel (int): Kernel of an optional conv between the pooled descriptor and the sigmoid (LSKNet has a
            7x7 one); 0 = none, as in eq. 14. Default: 0.
    """

    def __init__(self, num_feat, squeeze_kernel=0):
        super().__init__()
        self.conv5 = nn.Conv2d(num_feat, num_feat, 5, padding=2)
        self.conv7 = nn.Conv2d(num_feat, num_feat, 7, padding=3)
        self.squeeze = (
            nn.Conv2d(2, 2, squeeze_kernel, padding=squeeze_kernel // 2) if squeeze_kernel else nn.Identity())

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        hybrid = torch.cat([self.conv5(x1), self.conv7(x2)], dim=1)  # eq. 12-13
        pooled = torch.cat([hybrid.mean(dim=1, keepdim=True), hybrid.amax(dim=1, keepdim=True)], dim=1)
        weights = torch.sigmoid(self.squeeze(pooled))  # eq. 14
        return weights[:, :1], weights[:, 1:]  # eq. 15


class Hourglass(nn.Module):
    """Hourglass block of the FRM: ``depth`` times (avg-pool by 2, conv3x3, GELU) then back up with skip additions.

    Any input size works: the way back is interpolated to the size of the skip it is added to.

    Args:
        num_feat (int): Channels.
        depth (int): Number of down-sampling levels. Default: 2.
    """

    def __init__(self, num_feat, depth=2):
        super().__init__()
        self.down = nn.ModuleList([nn.Conv2d(num_feat, num_feat, 3, padding=1) for _ in range(depth)])
        self.up = nn.ModuleList([nn.Conv2d(num_feat, num_feat, 3, padding=1) for _ in range(depth)])

    def forward(self, x):
        skips = []
        for conv in self.down:
            skips.append(x)
            x = F.gelu(conv(F.avg_pool2d(x, 2, ceil_mode=True)))
        for conv, skip in zip(self.up, reversed(skips)):
            x = skip + conv(F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False))
        return x


class FRM(nn.Module):
    """Feature Refinement Module (eq. 11): ``x + Hourglass(Conv3x3(GELU(Conv3x3(LayerNorm(x)))))``."""

    def __init__(self, num_feat, hourglass_depth=2):
        super().__init__()
        self.norm = LayerNorm2d(num_feat)
        self.convs = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.GELU(), nn.Conv2d(num_feat, num_feat, 3, padding=1))
        self.hourglass = Hourglass(num_feat, hourglass_depth) if hourglass_depth > 0 else nn.Identity()

    def forward(self, x):
        return x + self.hourglass(self.convs(self.norm(x)))


class RDFE(nn.Module):
    """Residual Depth Feature Extraction module (Fig. 3a, eq. 7-11).

    Args:
        num_feat (int): Channels.
        hourglass_depth (int): Depth of the FRM's hourglass. Default: 2.
    """

    def __init__(self, num_feat, hourglass_depth=2):
        super().__init__()
        kernels = (3, 5, 7)
        self.branches1 = nn.ModuleList(
            [nn.Conv2d(num_feat, num_feat, k, padding=k // 2, groups=num_feat) for k in kernels])
        # Attention unit F_au (eq. 8): 1x1 conv of the concatenated branches to one weight per channel and position.
        self.attention_unit = nn.Sequential(nn.Conv2d(num_feat * 3, num_feat, 1), nn.Sigmoid())
        self.branches2 = nn.ModuleList(
            [nn.Conv2d(num_feat, num_feat, k, padding=k // 2, groups=num_feat) for k in kernels])
        self.fusion = nn.Conv2d(num_feat * 3, num_feat, 1)
        self.frm = FRM(num_feat, hourglass_depth)

    def forward(self, x):
        feats = [branch(x) for branch in self.branches1]  # eq. 7
        weight = self.attention_unit(torch.cat(feats, dim=1))  # eq. 8
        feats = [branch(f * weight) for branch, f in zip(self.branches2, feats)]  # eq. 9 + second dw convs
        y = self.fusion(torch.cat(feats, dim=1)) + x  # eq. 10
        return self.frm(y)  # eq. 11


class LGFI(nn.Module):
    """Local and Global Feature Interaction module: ``x + SKAF-fusion(SA(LN(x)), RDFE(LN(x)))`` (Sec. III-B).

    Args:
        num_feat (int): Channels.
        num_heads (int): Heads of the self-attention.
        hourglass_depth (int): Depth of the RDFE's hourglass.
        squeeze_kernel (int): See :class:`SKAF`.
    """

    def __init__(self, num_feat, num_heads, hourglass_depth=2, squeeze_kernel=0):
        super().__init__()
        self.norm = LayerNorm2d(num_feat)
        self.sa = ConvSelfAttention(num_feat, num_heads)
        self.rdfe = RDFE(num_feat, hourglass_depth)
        self.skaf = SKAF(num_feat, squeeze_kernel)

    def forward(self, x):
        y = self.norm(x)
        x_global = self.sa(y)
        x_local = self.rdfe(y)
        w_global, w_local = self.skaf(x_global, x_local)
        return x + x_global * w_global + x_local * w_local


class EDFF(nn.Module):
    """Encoder and Decoder Feature Fusion (eq. 16-17): ``X_E * X' + X_D * X''`` with ``X', X''`` from SKAF."""

    def __init__(self, num_feat, squeeze_kernel=0):
        super().__init__()
        self.reduce = nn.Conv2d(num_feat * 2, num_feat, 1)
        self.skaf = SKAF(num_feat, squeeze_kernel)

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
    """Channels halved, size doubled (Restormer): conv3x3 to 2C then pixel-shuffle by 2."""

    def __init__(self, num_feat):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(num_feat, num_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


@ARCH_REGISTRY.register()
class AMINet(nn.Module):
    """AMINet (Fig. 2). Input: LR face (N, 3, h, w) in [0, 1]; output: (N, 3, h*upscale, w*upscale).

    The U-shape works at the HR size with three 2x down-samplings, so the HR size must be a multiple of 8:
    ``size_multiple`` (at LR size) is 2 for x4 and 1 for x8.

    Args:
        upscale (int): 4 or 8 (any positive integer works). Default: 8.
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): C, the width of the first level (even). Default: 22 (13.05M parameters, the even C closest to
            the paper's 12.62M, see the module docstring).
        num_heads (list[int]): Heads of the SA at the four levels (C, 2C, 4C, 8C). Default: [1, 2, 4, 8] (Restormer).
        num_blocks (list[int]): LGFIs per encoder (levels 1-3; the decoders mirror them). Default: [1, 1, 1] (Fig. 2).
        num_bottleneck (int): LGFIs in the bottleneck. Default: 2 (Sec. III-A-2).
        hourglass_depth (int): Depth of the hourglass in each RDFE's FRM. Default: 2 (the bottleneck of a 128x128 face
            is 16x16; two halvings keep 4x4 at the bottom).
        squeeze_kernel (int): Conv in SKAF between pooling and sigmoid; 0 = none (eq. 14). Default: 0.
        img_range (float): Not used by the network's maths; kept for BasicSR option compatibility. Default: 1.
    """

    def __init__(self,
                 upscale=8,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=22,
                 num_heads=(1, 2, 4, 8),
                 num_blocks=(1, 1, 1),
                 num_bottleneck=2,
                 hourglass_depth=2,
                 squeeze_kernel=0,
                 img_range=1.):
        super().__init__()
        if len(num_heads) != 4 or len(num_blocks) != 3:
            raise ValueError('AMINet: num_heads needs 4 values (levels C, 2C, 4C, 8C) and num_blocks 3 (encoders).')
        self.upscale = upscale
        self.size_multiple = 8 // math.gcd(8, upscale)
        self.img_range = img_range
        c = num_feat
        kwargs = dict(hourglass_depth=hourglass_depth, squeeze_kernel=squeeze_kernel)
        self.conv_first = nn.Conv2d(num_in_ch, c, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level in range(3):
            ch = c * 2**level
            self.encoders.append(
                nn.Sequential(*[LGFI(ch, num_heads[level], **kwargs) for _ in range(num_blocks[level])]))
            self.downs.append(Downsample(ch))
        self.bottleneck = nn.Sequential(*[LGFI(c * 8, num_heads[3], **kwargs) for _ in range(num_bottleneck)])
        self.ups = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(3)):
            ch = c * 2**level
            self.ups.append(Upsample(ch * 2))
            self.fusions.append(EDFF(ch, squeeze_kernel))
            self.decoders.append(
                nn.Sequential(*[LGFI(ch, num_heads[level], **kwargs) for _ in range(num_blocks[level])]))
        self.conv_last = nn.Conv2d(c, num_out_ch, 3, padding=1)

    def forward(self, x):
        check_divisible(
            x, self.size_multiple, 'AMINet',
            f'At x{self.upscale} the HR size (LR size x {self.upscale}) must be a multiple of 8 (three 2x '
            f'down-samplings), so the LR size must be a multiple of {self.size_multiple}.')
        h, w = x.shape[-2:]
        x_up = upsample_to(x, size=(h * self.upscale, w * self.upscale))
        feat = self.conv_first(x_up)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)  # F1, F2, F3
        feat = self.bottleneck(feat)  # F4
        for up, fusion, decoder, skip in zip(self.ups, self.fusions, self.decoders, reversed(skips)):
            feat = decoder(fusion(skip, up(feat)))  # F5, F6, F7
        return self.conv_last(feat) + x_up


# The paper's configuration (one network definition for both scales: only the input upsampling differs).
PAPER_CONFIGS = {
    'x4': dict(upscale=4, num_feat=22, num_heads=[1, 2, 4, 8], num_blocks=[1, 1, 1], num_bottleneck=2),
    'x8': dict(upscale=8, num_feat=22, num_heads=[1, 2, 4, 8], num_blocks=[1, 1, 1], num_bottleneck=2),
}

# A tiny network that trains a few iterations on the CPU in seconds (upscale is given separately).
TINY_CONFIG = dict(num_feat=8, num_heads=[1, 1, 2, 2], num_blocks=[1, 1, 1], num_bottleneck=1, hourglass_depth=1)
