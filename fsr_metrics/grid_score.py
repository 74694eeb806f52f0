"""Grid score: how much more of a network's added detail sits at the frequencies of period-2 and period-4 patterns than
in real face detail (a measure of the fine periodic grid that pixel shuffles and stride-2 resamplers can draw).

Definition (``grid_score(sr, bicubic, hr)``; every step is a documented argument or constant):

1. Channel. Each image (H x W x 3, RGB by default, uint8 or float in [0, 1]; uint8 is divided by 255) is reduced to its
   luma ``Y = 0.256788 R + 0.504129 G + 0.097906 B`` (ITU-R BT.601, the weights of BasicSR's / MATLAB's ``rgb2ycbcr``
   without its constant offset, which cancels in a difference): the channel the PSNR protocol uses. ``channel='rgb'``
   uses the three channels instead and sums their spectral energies.
2. Crop. ``crop_border`` pixels are cut at each edge (the benchmark passes the scale, as for PSNR), then the last rows
   and columns are dropped so that the height and width are multiples of 4 (the periods measured).
3. Residuals. ``r_sr = Y(sr) - Y(bicubic)`` (what the network adds to the bicubic image) and ``r_hr = Y(hr) -
   Y(bicubic)`` (the real detail that bicubic misses).
4. Window and spectrum. Each residual is multiplied by a separable periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n /
   N)`` (rows and columns) and transformed with the 2-D DFT ``R[ky, kx] = sum_{y, x} r[y, x] w_H[y] w_W[x]
   exp(-2 pi i (ky y / H + kx x / W))``; the energy of a bin is ``|R[ky, kx]|^2``. The periodic Hann window's DFT has
   exactly three taps (1/2 at 0, -1/4 at +-1), so a pattern exactly at a bin spreads over that bin and its 8 neighbours
   and nowhere else, and the image borders do not leak broadband energy.
5. Grid bins. A pattern that repeats every 2 or every 4 pixels (in either direction or both: stripes, checkerboards,
   4x4 tiles) has all its energy at the 15 frequencies ``(ky, kx)`` with ``ky in {0, H/4, H/2, 3H/4}``, ``kx in {0,
   W/4, W/2, 3W/4}``, not both 0. The grid bins ``G`` are those 15 bins and their 8 cyclic neighbours (the window's
   spread): 15 x 9 = 135 bins.
6. Share. ``share(r) = sum_G |R|^2 / sum_{all bins but D} |R|^2``, where ``D`` is the DC bin and its 8 neighbours (the
   residual's mean, spread by the window: a uniform brightness offset is not detail).
7. Ratio. ``grid_score = share(r_sr) / max(share(r_hr), floor)`` with ``floor = 0.1 |G| / (H W - |D|)``, a tenth of
   the share of a spectrally flat (white) residual. Real faces' residuals have about the white share (0.0067-0.0155
   on the demo faces at 120x120, white: 0.0094), so the floor only acts where the HR residual is nearly empty there.
   Natural detail: a network whose added detail is spectrally like the real detail scores about 1 (``sr = hr`` scores
   exactly 1 whenever the HR share is above the floor); a planted grid scores far above 1; a network that adds smooth
   corrections only scores below 1 (bicubic itself adds nothing: 0).

Edge cases: when the HR residual has (almost) no energy at the grid bins (a face that bicubic already reproduces
there), the floor keeps the ratio finite: the score then compares the output's share with a tenth of white noise's.
When the output residual has no energy outside ``D`` (the output equals bicubic up to a constant; "no energy": less
than 1e-12 of the residual's whole energy, which leaves out float rounding), its share is 0 and so is the score. When
the HR residual has no energy outside ``D``, the floor is used. Faces smaller than 16x16 after the crop and trim are
refused (``ValueError``): below 16 every bin is within one bin of a multiple of a quarter of the size, so the share
would be 1 whatever the image.

Set summary: :func:`median_grid_score` (the median over faces; NaN entries, e.g. faces a caller could not score, are
ignored). The measure needs only numpy; ``fsr-benchmark`` reports it as a column (median over the faces).
"""
import math
import numpy as np

__all__ = ['grid_score', 'grid_share', 'grid_bins', 'median_grid_score', 'to_luma', 'FLOOR_FRACTION']

_LUMA = np.array([65.481, 128.553, 24.966]) / 255.  # BT.601 weights on [0, 1] RGB (BasicSR's rgb2ycbcr, y_only)
FLOOR_FRACTION = 0.1  # floor of the HR share: this fraction of a white residual's share (module docstring, step 7)
_MIN_SIZE = 16  # from 16 pixels on, some bins lie outside the grid bins and the DC neighbourhood (module docstring)


def _as_float(img, name):
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'grid_score: {name} must be an H x W x 3 image, got shape {arr.shape}.')
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'grid_score: {name} holds NaN or Inf values.')
    return arr


def to_luma(img, input_order='rgb'):
    """Y channel (BT.601 weights, no offset) of an H x W x 3 image in [0, 1] (``input_order`` 'rgb' or 'bgr')."""
    weights = _LUMA if input_order == 'rgb' else _LUMA[::-1]
    return np.asarray(img, dtype=np.float64) @ weights


def grid_bins(height, width):
    """Boolean masks ``(grid, dc)`` of shape (height, width) over the DFT bins: the grid bins ``G`` (the 15 period-2 /
    period-4 frequencies and their 8 cyclic neighbours) and the DC neighbourhood ``D`` (see the module docstring).
    ``height`` and ``width`` must be multiples of 4 and at least 16."""
    if height % 4 or width % 4 or height < _MIN_SIZE or width < _MIN_SIZE:
        raise ValueError(f'grid_bins: the size must be multiples of 4 and at least {_MIN_SIZE}, got {height}x{width}.')
    grid = np.zeros((height, width), dtype=bool)
    dc = np.zeros((height, width), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            dc[dy % height, dx % width] = True
            for ky in range(0, height, height // 4):
                for kx in range(0, width, width // 4):
                    if ky or kx:
                        grid[(ky + dy) % height, (kx + dx) % width] = True
    return grid, dc


def _hann(n):
    return 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(n) / n)


def _energies(residual):
    """(energy at the grid bins, energy outside the DC neighbourhood) of an (H, W) or (H, W, C) residual."""
    r = residual if residual.ndim == 3 else residual[..., None]
    h, w = r.shape[:2]
    windowed = r * (_hann(h)[:, None, None] * _hann(w)[None, :, None])
    power = np.abs(np.fft.fft2(windowed, axes=(0, 1)))**2
    power = power.sum(axis=2)
    grid, dc = grid_bins(h, w)
    return float(power[grid].sum()), float(power[~dc].sum()), float(power.sum())


def grid_share(residual):
    """Share of a residual's spectral energy at the grid bins (steps 4-6 of the module docstring); 0 when the residual
    has no energy outside the DC neighbourhood (less than ``1e-12`` of its whole energy: a constant residual leaves
    only rounding noise there). ``residual``: (H, W) or (H, W, C), H and W multiples of 4, >= 16."""
    grid_e, total, whole = _energies(np.asarray(residual, dtype=np.float64))
    return grid_e / total if total > 1e-12 * whole else 0.0


def _prepare(img, name, crop_border, channel, input_order):
    arr = _as_float(img, name)
    if crop_border:
        arr = arr[crop_border:-crop_border, crop_border:-crop_border]
    h, w = arr.shape[:2]
    arr = arr[:h - h % 4, :w - w % 4]
    return to_luma(arr, input_order) if channel == 'y' else arr


def grid_score(sr, bicubic, hr, crop_border=0, channel='y', input_order='rgb'):
    """Grid score of one face (module docstring): ``share(sr - bicubic) / max(share(hr - bicubic), floor)``.

    Args:
        sr (ndarray): Network output, H x W x 3 (uint8, or float in [0, 1]).
        bicubic (ndarray): The bicubic enlargement of the same LR face, same shape.
        hr (ndarray): The ground-truth face, same shape.
        crop_border (int): Pixels cut at each edge first. Default: 0 (``fsr-benchmark`` passes the scale).
        channel (str): ``'y'`` (default, the PSNR protocol's channel) or ``'rgb'`` (energies of R, G, B summed).
        input_order (str): ``'rgb'`` (default) or ``'bgr'`` (OpenCV images); only matters for ``channel='y'``.

    Returns:
        float: About 1 for natural detail, far above 1 for an output with a period-2 / period-4 grid, 0 for bicubic.
    """
    if channel not in ('y', 'rgb'):
        raise ValueError(f"grid_score: channel={channel!r} is not 'y' or 'rgb'.")
    if input_order not in ('rgb', 'bgr'):
        raise ValueError(f"grid_score: input_order={input_order!r} is not 'rgb' or 'bgr'.")
    shapes = {np.shape(sr), np.shape(bicubic), np.shape(hr)}
    if len(shapes) != 1:
        raise ValueError(f'grid_score: sr, bicubic and hr must have the same shape, got {sorted(shapes)}.')
    if crop_border < 0 or int(crop_border) != crop_border:
        raise ValueError(f'grid_score: crop_border must be a non-negative integer, got {crop_border}.')
    crop_border = int(crop_border)
    sr, bic, hr = (_prepare(img, name, crop_border, channel, input_order)
                   for img, name in ((sr, 'sr'), (bicubic, 'bicubic'), (hr, 'hr')))
    h, w = bic.shape[:2]
    if h < _MIN_SIZE or w < _MIN_SIZE:
        raise ValueError(f'grid_score: the faces are {h}x{w} after a crop of {crop_border} pixels and trimming to '
                         f'multiples of 4; at least {_MIN_SIZE}x{_MIN_SIZE} is needed.')
    grid, dc = grid_bins(h, w)
    floor = FLOOR_FRACTION * grid.sum() / float(h * w - dc.sum())
    return grid_share(sr - bic) / max(grid_share(hr - bic), floor)


def median_grid_score(scores):
    """Median of per-face grid scores over a set, NaN entries ignored; NaN when no face has a score."""
    values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else float('nan')
