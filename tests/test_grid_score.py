"""The grid score (fsr_metrics/grid_score.py): an independent DFT on tiny images, planted grids on a real face, a
pixel-shuffle network with and without ICNR, and the edge cases the docstring promises."""
import cv2
import math
import numpy as np
import pytest
import torch
from basicsr.utils.color_util import rgb2ycbcr
from basicsr.utils.matlab_functions import imresize
from torch import nn

from fsr_metrics.grid_score import grid_score, median_grid_score


@pytest.fixture(scope='module')
def face():
    """(hr, bicubic) RGB float64 128x128: a real face (scikit-image's astronaut), its x4 MATLAB bicubic round trip."""
    skimage_data = pytest.importorskip('skimage.data')
    crop = skimage_data.astronaut()[20:220, 150:350]
    hr = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.
    lr = imresize(hr, 0.25)
    bic = imresize(lr, 4)
    return hr, bic


def _naive_share(res):
    """Share of the energy at the period-2/4 bins, from the DFT written out as a double sum (no FFT, no masks)."""
    h, w = res.shape
    wy = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / h) for n in range(h)])
    wx = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / w) for n in range(w)])
    energy = {}
    for ky in range(h):
        for kx in range(w):
            acc = 0j
            for y in range(h):
                for x in range(w):
                    acc += res[y, x] * wy[y] * wx[x] * complex(
                        math.cos(2 * math.pi * (ky * y / h + kx * x / w)), -math.sin(2 * math.pi *
                                                                                     (ky * y / h + kx * x / w)))
            energy[ky, kx] = abs(acc)**2

    def near(k, n):  # the multiple of n/4 within one bin of k (cyclically), or None
        for m in range(4):
            c = m * n // 4
            if min((k - c) % n, (c - k) % n) <= 1:
                return c
        return None

    grid = total = 0.
    for (ky, kx), e in energy.items():
        cy, cx = near(ky, h), near(kx, w)
        if cy == 0 and cx == 0:
            continue  # DC neighbourhood: in neither sum
        total += e
        if cy is not None and cx is not None:
            grid += e
    return grid / total, 135 / (h * w - 9)


@pytest.mark.parametrize('size,crop', [((16, 16), 0), ((22, 19), 1)])
def test_matches_a_dft_written_out(size, crop):
    """Y from BasicSR's rgb2ycbcr, crop, trim to multiples of 4, Hann window, DFT as a double sum, the ratio."""
    rng = np.random.default_rng(3)
    sr, bic, hr = (rng.random(size + (3, )) for _ in range(3))

    def y(img):  # BasicSR's Y (its +16/255 offset cancels in the residuals), cropped and trimmed
        img = img[crop:img.shape[0] - crop, crop:img.shape[1] - crop]
        h, w = img.shape[:2]
        return rgb2ycbcr(img.astype(np.float32), y_only=True).astype(np.float64)[:h - h % 4, :w - w % 4]

    share_sr, white = _naive_share(y(sr) - y(bic))
    share_hr, _ = _naive_share(y(hr) - y(bic))
    expected = share_sr / max(share_hr, 0.1 * white)
    assert grid_score(sr, bic, hr, crop_border=crop) == pytest.approx(expected, rel=1e-4)
    # a residual with no grid energy at all: its HR share replaced by the floor (a tenth of a white residual's share)
    assert grid_score(sr, bic, bic + 1e-3, crop_border=crop) == pytest.approx(share_sr / (0.1 * white), rel=1e-4)


def test_planted_grids_score_high_and_true_detail_scores_one(face):
    hr, bic = face
    yy, xx = np.mgrid[:128, :128]
    checker = ((yy + xx) % 2 * 2 - 1)[..., None] * np.ones(3)  # period 2
    tile = np.cos(np.pi * xx / 2)[..., None] * np.cos(np.pi * yy / 2)[..., None] * np.ones(3)  # period 4
    assert grid_score(hr, bic, hr, crop_border=4) == pytest.approx(1.0)  # bicubic + the true detail
    assert grid_score(bic + 0.5 * (hr - bic), bic, hr, crop_border=4) == pytest.approx(1.0)  # less of the same detail
    assert grid_score(bic, bic, hr, crop_border=4) == 0  # bicubic adds nothing
    for pattern in (checker, tile):
        assert grid_score(hr + 0.02 * pattern, bic, hr, crop_border=4) > 5
    # a smooth correction only (blurred true detail) puts less of its energy there: below 1
    smooth = bic + cv2.GaussianBlur(hr - bic, (0, 0), 2)
    assert grid_score(smooth, bic, hr, crop_border=4) < 0.5
    # uint8 BGR images give the same score with input_order='bgr'
    to8 = (lambda a: np.clip(np.round(a * 255), 0, 255).astype(np.uint8)[..., ::-1])
    planted = hr + 0.02 * checker
    assert grid_score(
        to8(planted), to8(bic), to8(hr), 4, input_order='bgr') == pytest.approx(
            grid_score(np.round(planted * 255) / 255,
                       np.round(bic * 255) / 255,
                       np.round(hr * 255) / 255, 4), rel=0.05)


def test_pixel_shuffle_network_draws_a_grid_that_icnr_removes(face):
    """A conv -> PixelShuffle(2) head added to bicubic: independent sub-pixel kernels (default init) draw a strong
    period-2 grid; ICNR (every sub-pixel kernel equal, Aitken et al. 2017) leaves only the 2x2 blocks of nearest
    up-sampling, a far weaker one."""
    from fsr_arch.common import icnr_
    hr, bic = face
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 12, 3, padding=1)
    x = torch.from_numpy(imresize(bic, 0.5).transpose(2, 0, 1)).float()[None]  # the head works at half the HR size

    def output():
        with torch.no_grad():
            detail = nn.functional.pixel_shuffle(conv(x), 2)[0].numpy().transpose(1, 2, 0)
        return bic + 0.05 * detail / np.abs(detail).max()

    plain = grid_score(output(), bic, hr, crop_border=4)
    icnr_(conv, 2)
    icnr = grid_score(output(), bic, hr, crop_border=4)
    assert plain > 50 and icnr < plain / 5


def test_edge_cases_and_the_set_median(face):
    hr, bic = face
    # the HR residual is empty (the face equals its bicubic image): finite, from the floor
    assert np.isfinite(grid_score(hr, bic, bic, crop_border=4))
    with pytest.raises(ValueError, match='same shape'):
        grid_score(hr, bic, hr[:64])
    with pytest.raises(ValueError, match='at least 16x16'):
        grid_score(hr[:16, :16], bic[:16, :16], hr[:16, :16], crop_border=4)
    with pytest.raises(ValueError, match='NaN'):
        grid_score(np.full_like(hr, np.nan), bic, hr)
    with pytest.raises(ValueError, match="channel='lab'"):
        grid_score(hr, bic, hr, channel='lab')
    assert grid_score(hr, bic, hr, crop_border=4, channel='rgb') == pytest.approx(1.0)
    assert median_grid_score([3.0, float('nan'), 1.0, None, 2.0]) == 2.0
    assert np.isnan(median_grid_score([float('nan')]))
