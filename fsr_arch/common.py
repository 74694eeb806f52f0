"""Building blocks shared by the plugin's networks.

Each piece lives here once so the per-paper ``*_arch.py`` files only hold what is specific to their paper:

- :class:`ChannelAttention` (RCAN / SE style squeeze-excitation), used by LAAT's FIM, W-Net's LPF and RCAB.
- :class:`SpatialAttention` (CBAM style: channel mean and max -> conv -> sigmoid), used by W-Net.
- :func:`haar_wt` / :func:`haar_iwt` and the module wrappers :class:`HaarWT` / :class:`HaarIWT`: the fixed-kernel Haar
  wavelet transform and its exact inverse (LAAT eq. 13-16).
- :class:`LayerNorm2d`: layer normalization over the channel dimension of an NCHW map.
- :class:`ConvSelfAttention`: multi-head self-attention whose q, k, v come from a 1x1 conv and a 3x3 depth-wise conv
  (AMINet eq. 2-6, W-Net's SCAB eq. 20-21); the conv order, channel- or position-wise maps and the scaling (the
  papers' 1/sqrt(d) or Restormer's L2-normalized q, k with a learned temperature) are arguments.
- :class:`RCAB`: residual channel attention block (conv-ReLU-conv-CA + identity).
- :func:`upsample_to`: the bicubic up-sampling that networks defined on a bicubic-upsampled input do internally.
- :func:`check_divisible`: the shared input-size check that gives a clear error instead of a shape mismatch deep inside.
- :func:`icnr_`: ICNR initialisation of a conv that feeds a pixel shuffle (Aitken et al. 2017).
- :func:`matlab_bicubic_upsample`: MATLAB ``imresize``'s bicubic up-sampling (the data's and the benchmark's bicubic).

The pixel-shuffle up-sampler and the plain residual block come from BasicSR (``basicsr.archs.arch_util.Upsample`` and
``ResidualBlockNoBN``) and are re-exported here so that every network imports its shared pieces from one place.
"""
import functools
import math
import torch
from basicsr.archs.arch_util import ResidualBlockNoBN, Upsample
from contextlib import nullcontext
from torch import nn
from torch.nn import functional as F

__all__ = [
    'ChannelAttention', 'SpatialAttention', 'HaarWT', 'HaarIWT', 'haar_wt', 'haar_iwt', 'LayerNorm2d',
    'ConvSelfAttention', 'RCAB', 'Upsample', 'ResidualBlockNoBN', 'upsample_to', 'check_divisible', 'icnr_',
    'matlab_bicubic_upsample'
]


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (RCAN): ``x * sigmoid(W2 relu(W1 avgpool(x))))``.

    Args:
        num_feat (int): Channels of the input.
        reduction (int): Channel reduction of the bottleneck. Default: 16 (RCAN's value).
    """

    def __init__(self, num_feat, reduction=16):
        super().__init__()
        hidden = max(1, num_feat // reduction)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_feat, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``x * sigmoid(conv_k([mean_c(x), max_c(x)]))``.

    Args:
        kernel_size (int): Kernel of the conv over the 2-channel descriptor. Default: 7 (CBAM's value).
        return_map (bool): Return the attention map (N, 1, H, W) instead of the re-weighted input. Default: False.
    """

    def __init__(self, kernel_size=7, return_map=False):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.return_map = return_map

    def forward(self, x):
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        attn = torch.sigmoid(self.conv(desc))
        return attn if self.return_map else x * attn


def haar_wt(x):
    """Haar wavelet transform with fixed 2x2 kernels, stride 2 (LAAT eq. 13-15).

    The kernels are LAAT's eq. 14 (outer products of eq. 13's ``L = [1, 1]^T / sqrt(2)``, ``H = [-1, 1]^T / sqrt(2)``)
    applied as a stride-2 cross-correlation. With the 2x2 block ``[[a, b], [c, d]]`` of every position:
    ``LL = (a + b + c + d) / 2``, ``LH = (-a + b - c + d) / 2`` (kernel ``[[-1, 1], [-1, 1]] / 2``: low-pass down the
    rows, high-pass along them), ``HL = (-a - b + c + d) / 2`` (kernel ``[[-1, -1], [1, 1]] / 2``),
    ``HH = (a - b - c + d) / 2``. The transform is orthonormal, so :func:`haar_iwt` inverts it exactly.

    Args:
        x (Tensor): (N, C, H, W) with even H and W.

    Returns:
        tuple[Tensor]: LL, LH, HL, HH, each (N, C, H/2, W/2).
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f'haar_wt needs an even height and width, got {tuple(x.shape[-2:])}.')
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (-a + b - c + d) * 0.5
    hl = (-a - b + c + d) * 0.5
    hh = (a - b - c + d) * 0.5
    return ll, lh, hl, hh


def haar_iwt(ll, lh, hl, hh):
    """Inverse of :func:`haar_wt` (LAAT eq. 16, transposed convs with the eq. 14 kernels): the (N, C, 2H, 2W) map."""
    a = (ll - lh - hl + hh) * 0.5
    b = (ll + lh - hl - hh) * 0.5
    c = (ll - lh + hl - hh) * 0.5
    d = (ll + lh + hl + hh) * 0.5
    n, ch, h, w = ll.shape
    out = ll.new_empty(n, ch, h * 2, w * 2)
    out[..., 0::2, 0::2] = a
    out[..., 0::2, 1::2] = b
    out[..., 1::2, 0::2] = c
    out[..., 1::2, 1::2] = d
    return out


class HaarWT(nn.Module):
    """Module form of :func:`haar_wt` (no parameters)."""

    def forward(self, x):
        return haar_wt(x)


class HaarIWT(nn.Module):
    """Module form of :func:`haar_iwt` (no parameters)."""

    def forward(self, ll, lh, hl, hh):
        return haar_iwt(ll, lh, hl, hh)


class LayerNorm2d(nn.Module):
    """Layer normalization over the channels of an (N, C, H, W) map, with a per-channel affine transform."""

    def __init__(self, num_feat, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_feat))
        self.bias = nn.Parameter(torch.zeros(num_feat))
        self.eps = eps

    def forward(self, x):
        # normalized_shape from the weight (plain ints), not from x.shape: a traced size there breaks the ONNX export
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvSelfAttention(nn.Module):
    """Multi-head self-attention with convolutional q, k, v (AMINet eq. 2-6, W-Net's SCAB eq. 20-21).

    ``q, k, v`` each come from a 1x1 point-wise conv and a 3x3 depth-wise conv, in the order given by ``order``, and are
    split into ``num_heads`` groups of channels; ``out = Conv1x1(Softmax(q k^T / sqrt(d)) v)`` (eq. 5 / eq. 21).

    Three choices, each an argument (the networks' docstrings say which one their paper states):

    - ``order``: ``'pw_first'`` = ``F_dw3(F_conv1(X))`` (AMINet eq. 2-4, Restormer); ``'dw_first'`` =
      ``f_1x1(f_dconv3x3(F))`` (W-Net eq. 20). Both hold the same number of weights.
    - ``mode``: ``'channel'`` = the map is (C/h x C/h) per head, the dot products run over the H*W positions (AMINet's
      reshape of Q to C x HW and K to HW x C before eq. 5; cost linear in H*W); ``'spatial'`` = the map is (HW x HW) per
      head over positions, the dot products run over the C/h channels of a head (computed with
      ``scaled_dot_product_attention``, whose CPU and GPU kernels do not store the map).
    - ``scaling``: ``'sqrt_d'`` = the papers' ``1/sqrt(d)`` with d the length of the vectors in each dot product (H*W in
      channel mode, C/h in spatial mode, as in Vaswani et al. where d is the key length); ``'l2norm'`` = Restormer's
      MDTA: q and k L2-normalized along the dot product, times a learnable per-head temperature (initialised to 1).

    Args:
        num_feat (int): Channels (must be divisible by ``num_heads``).
        num_heads (int): Number of heads.
        bias (bool): Bias in the convs. Default: False (as in Restormer).
        order (str): ``'pw_first'`` or ``'dw_first'``. Default: ``'pw_first'``.
        mode (str): ``'channel'`` or ``'spatial'``. Default: ``'channel'``.
        scaling (str): ``'sqrt_d'`` or ``'l2norm'``. Default: ``'sqrt_d'``.
    """

    def __init__(self, num_feat, num_heads, bias=False, order='pw_first', mode='channel', scaling='sqrt_d'):
        super().__init__()
        if num_feat % num_heads:
            raise ValueError(f'ConvSelfAttention: num_feat ({num_feat}) must be divisible by num_heads ({num_heads}).')
        for name, value, allowed in (('order', order, ('pw_first', 'dw_first')), ('mode', mode, ('channel', 'spatial')),
                                     ('scaling', scaling, ('sqrt_d', 'l2norm'))):
            if value not in allowed:
                raise ValueError(f'ConvSelfAttention: {name}={value!r} is not one of {allowed}.')
        self.num_heads, self.order, self.mode, self.scaling = num_heads, order, mode, scaling
        if scaling == 'l2norm':
            self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        pw = nn.Conv2d(num_feat, num_feat * 3, 1, bias=bias)
        if order == 'pw_first':
            dw = nn.Conv2d(num_feat * 3, num_feat * 3, 3, padding=1, groups=num_feat * 3, bias=bias)
            self.qkv, self.qkv_dwconv = pw, dw
        else:
            # f_dconv3x3 on the input (one depth-wise conv per input channel, for each of q, k and v), then f_1x1.
            self.qkv_dwconv = nn.Conv2d(num_feat, num_feat * 3, 3, padding=1, groups=num_feat, bias=bias)
            self.qkv = nn.Conv2d(num_feat * 3, num_feat * 3, 1, groups=3, bias=bias)
        self.project_out = nn.Conv2d(num_feat, num_feat, 1, bias=bias)

    def qkv_maps(self, x):
        """Return q, k, v as (N, heads, C/heads, H*W) tensors (eq. 2-4 / eq. 20)."""
        n, c, h, w = x.shape
        if self.order == 'pw_first':
            qkv = self.qkv_dwconv(self.qkv(x))
        else:
            dw = self.qkv_dwconv(x)  # (N, 3C, H, W): channel 3i + j is input channel i's depth-wise kernel for q/k/v j
            # group j = every input channel's kernel j, so that each of the three 1x1 convs (groups=3) mixes all C maps
            qkv = self.qkv(dw.reshape(n, c, 3, h, w).transpose(1, 2).reshape(n, 3 * c, h, w))
        return [t.reshape(n, self.num_heads, c // self.num_heads, h * w) for t in qkv.chunk(3, dim=1)]

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv_maps(x)
        if self.mode == 'spatial':
            q, k, v = (t.transpose(-2, -1) for t in (q, k, v))  # (N, heads, HW, C/heads): tokens are positions
        if self.scaling == 'l2norm':
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = self.temperature
        else:
            scale = q.shape[-1]**-0.5
        if self.mode == 'spatial':
            if self.scaling == 'l2norm':
                q = q * self.temperature
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0 if self.scaling == 'l2norm' else scale)
            out = out.transpose(-2, -1)
        else:
            out = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v
        return self.project_out(out.reshape(n, c, h, w))


class RCAB(nn.Module):
    """Residual channel attention block (RCAN): ``x + res_scale * CA(conv(relu(conv(x))))``."""

    def __init__(self, num_feat, reduction=16, res_scale=1.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, padding=1), ChannelAttention(num_feat, reduction))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


def upsample_to(x, size=None, scale=None):
    """Bicubic up-sampling (align_corners=False) used by networks defined on a bicubic-upsampled LR input."""
    return F.interpolate(
        x, size=size, scale_factor=None if size is not None else scale, mode='bicubic', align_corners=False)


def check_divisible(x, multiple, network, hint=''):
    """Raise a clear ValueError when the spatial size of ``x`` is not a multiple of ``multiple``.

    Args:
        x (Tensor): (N, C, H, W) input.
        multiple (int | tuple[int]): Required divisor of (H, W).
        network (str): Name used in the message.
        hint (str): Extra sentence saying which sizes work.
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    if h % mh or w % mw:
        raise ValueError(
            f'{network}: input size {h}x{w} is not supported: height must be a multiple of {mh} and width a '
            f'multiple of {mw}. {hint}'.strip())


def icnr_(conv, upscale, init=None):
    """ICNR initialisation (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution") of a conv followed
    by ``PixelShuffle(upscale)``, in place.

    The conv's ``C * upscale**2`` output channels feed the ``upscale**2`` sub-pixel positions of the shuffle's ``C``
    channels (output channel ``c * upscale**2 + i`` goes to position ``i`` of channel ``c``). ICNR draws one kernel per
    shuffled channel (``init`` on a ``C``-output weight) and copies it, and the channel's bias, to its ``upscale**2``
    sub-pixel positions, so at initialisation conv + shuffle equals the conv of nearest-neighbour up-sampling: no
    checkerboard to unlearn.

    Args:
        conv (nn.Conv2d): The conv, with ``C * upscale**2`` output channels.
        upscale (int): The shuffle's factor.
        init (callable): Initialiser of the (C, C_in, k, k) sub-kernel. Default: ``nn.Conv2d``'s own
            (``kaiming_uniform_`` with ``a = sqrt(5)``; the fan-in, and so the scale, is that of the whole weight).

    Returns:
        nn.Conv2d: ``conv``.
    """
    weight, bias, r2 = conv.weight, conv.bias, upscale**2
    if weight.shape[0] % r2:
        raise ValueError(f'icnr_: {weight.shape[0]} output channels are not a multiple of upscale**2 = {r2}.')
    if init is None:
        init = functools.partial(nn.init.kaiming_uniform_, a=math.sqrt(5))
    sub = init(torch.empty((weight.shape[0] // r2, ) + tuple(weight.shape[1:]), dtype=weight.dtype))
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(r2, dim=0))
        if bias is not None:
            bias.copy_(bias[::r2].clone().repeat_interleave(r2))
    return conv


_MATLAB_MATRICES = {}


def _matlab_cubic(x):
    """MATLAB's ``cubic`` kernel (Keys, a = -0.5)."""
    ax = x.abs()
    return torch.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1,
                       torch.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, torch.zeros_like(ax)))


def _matlab_matrix(in_len, scale):
    """(in_len * scale, in_len) matrix of MATLAB ``imresize``'s bicubic up-sampling along one axis (float64, CPU).

    Output pixel i (1-based) sits at ``u = i / scale + 0.5 * (1 - 1 / scale)`` in input coordinates; the six input
    pixels from ``floor(u - 2)`` on are weighted by the cubic kernel of their distance to u, the weights normalized to
    sum 1, and indices outside the image are mirrored (``[1..n, n..1]`` repeated), as MATLAB does.
    """
    key = (in_len, scale)
    if key not in _MATLAB_MATRICES:
        # built on the CPU whatever the default device (a ``torch.device('meta')`` context would cache meta tensors)
        cpu = torch.device('cpu')
        out_len = in_len * scale
        u = torch.arange(1, out_len + 1, dtype=torch.float64, device=cpu) / scale + 0.5 * (1 - 1 / scale)
        taps = torch.floor(u - 2)[:, None] + torch.arange(6, dtype=torch.float64, device=cpu)[None]
        weights = _matlab_cubic(u[:, None] - taps)
        weights = weights / weights.sum(dim=1, keepdim=True)
        mirror = torch.cat([torch.arange(in_len, device=cpu), torch.arange(in_len - 1, -1, -1, device=cpu)])
        index = mirror[(taps.long() - 1) % (2 * in_len)]
        matrix = torch.zeros(out_len, in_len, dtype=torch.float64, device=cpu)
        matrix.scatter_add_(1, index, weights)
        _MATLAB_MATRICES[key] = matrix
    return _MATLAB_MATRICES[key]


_MATRICES_ON = {}


def _matrix_on(in_len, scale, device, dtype):
    """:func:`_matlab_matrix` on ``device`` in ``dtype``, cached (a copy to the GPU per forward would cost a sync)."""
    key = (in_len, scale, str(device), dtype)
    if key not in _MATRICES_ON:
        _MATRICES_ON[key] = _matlab_matrix(in_len, scale).to(device=device, dtype=dtype)
    return _MATRICES_ON[key]


def matlab_bicubic_upsample(x, scale):
    """Bicubic up-sampling by an integer ``scale`` as MATLAB's ``imresize`` (and BasicSR's ``imresize``) computes it.

    This is the interpolation that made the LR training faces (``fsr-prepare``'s default) and the bicubic baseline of
    ``fsr-benchmark``. It differs from ``F.interpolate(mode='bicubic')`` (:func:`upsample_to`) in its kernel (a = -0.5,
    torch uses -0.75) and at the border (mirrored indices; torch repeats the edge pixel). Separable:
    ``A_h @ x @ A_w^T``. Used by AMINet and W-Net.

    Args:
        x (Tensor): (N, C, h, w).
        scale (int): Integer up-sampling factor.

    Returns:
        Tensor: (N, C, h * scale, w * scale) on the device of ``x``: float64 for float64 input, float32 otherwise
        (also under autocast).
    """
    h, w = x.shape[-2:]
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    # fp32 under autocast too: the base image of a global residual is not worth bf16's 3 significant digits
    off = torch.autocast(
        x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type) else nullcontext()
    with off:
        a_h, a_w = _matrix_on(h, scale, x.device, dtype), _matrix_on(w, scale, x.device, dtype)
        return (a_h @ x.to(dtype) @ a_w.transpose(0, 1)).to(x.dtype if x.dtype == torch.float64 else torch.float32)
