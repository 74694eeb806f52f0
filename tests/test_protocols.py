"""fsr-benchmark --protocol NAME (fsr_metrics/protocols.py): every preset against its formula written out here.

The expected PSNR/SSIM come from an independent numpy implementation of each preset's choices (colour conversion,
rounding, crop, MSE, Gaussian or uniform-window SSIM), never from BasicSR, scikit-image or the code under test; they
are compared with what the real entry point (``benchmark.main``) writes, and with :meth:`Protocol.score` on a fixed
pair of images that are not a bicubic output.
"""
import csv
import cv2
import numpy as np
import pytest
from helpers import synthetic_face

from fsr_metrics import benchmark, paper_results, protocols

# ------------------------------------------------------------------------------------- the formulas, written out
# preset -> (channel, colour, rounded before scoring, crop ('scale' or pixels), SSIM)
EXPECTED_CHOICES = {
    'basicsr-y': ('Y', 'float', True, 'scale', 'gauss11'),
    'rgb': ('RGB', None, False, 'scale', 'gauss11'),  # MMagic DIC config: RGB, crop_border=scale, float outputs
    'dic': ('Y', 'round', True, 'scale', 'gauss11-wrap'),  # DIC's calc_metrics
    'skimage': ('RGB', None, True, 0, 'uniform7'),  # scikit-image defaults
    'laat': ('Y', 'float', True, 'scale', 'gauss11'),  # Y stated; the rest basicsr-y's
    'aminet': ('Y', 'float', True, 'scale', 'gauss11'),  # silent: basicsr-y
    'tanet': ('Y', 'float', True, 'scale', 'gauss11'),  # silent: basicsr-y
    'wnet': ('Y', 'float', True, 'scale', 'gauss11'),  # silent: basicsr-y
}


def _luma(bgr):
    """ITU-R BT.601 luma, 16-235, of a BGR image in [0, 255] (float64)."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    return 16. + (65.481 * r + 128.553 * g + 24.966 * b) / 255.


def _windows(x, k):
    """Every k x k window of a 2-D array fully inside it: (H-k+1, W-k+1, k, k)."""
    return np.lib.stride_tricks.sliding_window_view(x, (k, k))


def _ssim_map(x, y, weights):
    """Wang et al.'s SSIM at every fully-inside window with these weights (sum 1), K1 0.01, K2 0.03, L 255."""
    k = weights.shape[0]
    wx, wy = _windows(x, k), _windows(y, k)

    def mean(p):
        return (p * weights).sum(axis=(-2, -1))

    mx, my = mean(wx), mean(wy)
    vx, vy, cxy = mean(wx * wx) - mx**2, mean(wy * wy) - my**2, mean(wx * wy) - mx * my
    c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def _ssim_gauss11(x, y):
    """11x11 Gaussian window, sigma 1.5, valid region (Wang et al. 2004, their ssim_index.m)."""
    g = np.exp(-(np.arange(11) - 5.)**2 / (2 * 1.5**2))
    g /= g.sum()
    return _ssim_map(x, y, np.outer(g, g)).mean()


def _ssim_uniform7(x, y):
    """7x7 uniform window with sample (co)variances (N / (N - 1)), the 3-pixel margin left out."""
    n = 49
    wx, wy = _windows(x, 7), _windows(y, 7)
    mx, my = wx.mean(axis=(-2, -1)), wy.mean(axis=(-2, -1))
    f = n / (n - 1)
    vx = ((wx * wx).mean(axis=(-2, -1)) - mx**2) * f
    vy = ((wy * wy).mean(axis=(-2, -1)) - my**2) * f
    cxy = ((wx * wy).mean(axis=(-2, -1)) - mx * my) * f
    c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()


def expected_scores(preset, sr, hr, scale, crop=None):
    """PSNR and SSIM of ``sr`` (BGR, [0, 255], already rounded or not as the preset says) against ``hr``."""
    channel, colour, _, crop_rule, ssim = EXPECTED_CHOICES[preset]
    if crop is None:
        crop = scale if crop_rule == 'scale' else crop_rule
    sr, hr = sr.astype(np.float64), hr.astype(np.float64)
    if crop:
        sr, hr = sr[crop:-crop, crop:-crop], hr[crop:-crop, crop:-crop]
    if channel == 'Y':
        planes = [(_luma(sr), _luma(hr))]
        if colour == 'round':
            planes = [(np.round(a), np.round(b)) for a, b in planes]
    else:
        planes = [(sr[..., c], hr[..., c]) for c in range(3)]
    mse = np.mean([(a - b)**2 for a, b in planes])
    psnr = 10 * np.log10(255.**2 / mse)
    if ssim == 'gauss11':
        value = np.mean([_ssim_gauss11(a, b) for a, b in planes])
    elif ssim == 'gauss11-wrap':  # DIC multiplies its uint8 Y by 255 in uint8: 256 - Y
        value = np.mean([_ssim_gauss11(256. - a, 256. - b) for a, b in planes])
    else:
        value = np.mean([_ssim_uniform7(a, b) for a, b in planes])
    return psnr, value


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------------ the tests
def test_every_preset_is_tested_here():
    assert set(protocols.NAMES) == set(EXPECTED_CHOICES)
    for paper, preset in protocols.PAPER_PRESETS.items():
        assert paper_results.PROTOCOLS[paper]['preset'] == preset


@pytest.fixture(scope='module')
def pair():
    """A fixed HR face and a distorted copy (blurred, noisy, shifted colours), as floats and rounded."""
    rng = np.random.default_rng(7)
    hr = synthetic_face(48, 48, rng)[0]
    blur = cv2.GaussianBlur(hr.astype(np.float64), (5, 5), 1.2)
    sr = np.clip(blur + rng.normal(0, 4, hr.shape) + [3., -2., 1.], 0, 255)
    return hr, sr, np.round(sr).astype(np.uint8)


@pytest.mark.parametrize('name', protocols.NAMES)
def test_preset_score_matches_its_formula(name, pair):
    hr, sr_float, sr8 = pair
    proto = protocols.resolve(name, 4)
    sr = sr8 if EXPECTED_CHOICES[name][2] else sr_float
    assert proto.rounding == EXPECTED_CHOICES[name][2]
    got = proto.score(sr, hr)
    psnr, ssim = expected_scores(name, sr, hr, 4)
    assert got['PSNR'] == pytest.approx(psnr, abs=1e-5)
    assert got['SSIM'] == pytest.approx(ssim, abs=1e-6)


def test_the_choices_move_the_figures(pair):
    """Y vs RGB, crop, Y rounding and the SSIM window each change the figures beyond the tolerance above."""
    hr, _, sr8 = pair
    score = {n: protocols.resolve(n, 4).score(sr8, hr) for n in ('basicsr-y', 'dic', 'skimage')}
    rgb = protocols.resolve('basicsr-y', 4, rgb=True).score(sr8, hr)
    crop0 = protocols.resolve('basicsr-y', 4, crop_border=0).score(sr8, hr)
    assert abs(score['basicsr-y']['PSNR'] - rgb['PSNR']) > 0.1
    assert abs(score['basicsr-y']['PSNR'] - crop0['PSNR']) > 0.01
    assert abs(score['basicsr-y']['PSNR'] - score['dic']['PSNR']) > 1e-3
    assert abs(score['basicsr-y']['SSIM'] - score['dic']['SSIM']) > 1e-5
    skimage_gauss = protocols.resolve('skimage', 4)
    skimage_gauss.ssim = 'gaussian11'
    assert abs(score['skimage']['SSIM'] - skimage_gauss.score(sr8, hr)['SSIM']) > 1e-3


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp('protocol_faces')
    rng = np.random.default_rng(11)
    for i in range(2):
        cv2.imwrite(str(folder / f'f{i}.png'), synthetic_face(48, 48, rng)[0])
    return folder


@pytest.mark.parametrize('name', protocols.NAMES)
def test_fsr_benchmark_reports_each_preset_by_its_formula(name, faces, tmp_path):
    """The real entry point: the per-face PSNR/SSIM of bicubic equal the formula on the bicubic output (the saved
    8-bit image, or the unrounded bicubic for a preset that scores unrounded outputs); benchmark.md names the preset
    and its choices."""
    out = tmp_path / 'out'
    benchmark.main([
        '--data',
        str(faces), '--scale', '4', '--out',
        str(out), '--protocol', name, '--save-images', '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu'
    ])
    md = (out / 'benchmark.md').read_text()
    preset = protocols.PRESETS[name]
    assert f'- Protocol `{name}` (`--protocol {name}`)' in md and preset.source.split(':')[0] in md
    for words in protocols.CHOICE_NAMES.values():
        assert f'  - {words}: ' in md
    rows = {r['face']: r for r in _read_csv(out / 'benchmark_per_face.csv') if r['method'] == 'Bicubic'}
    for face in ('f0', 'f1'):
        hr = cv2.imread(str(faces / f'{face}.png'))
        sr = cv2.imread(str(out / 'images' / 'Bicubic' / f'{face}.png'))
        if not EXPECTED_CHOICES[name][2]:  # scored before rounding: the unrounded bicubic
            from basicsr.utils.matlab_functions import imresize
            lr = benchmark.matlab_bicubic(hr, 0.25)
            sr = np.clip(imresize(lr.astype(np.float32) / 255., 4) * 255., 0, 255)
            assert np.abs(sr - cv2.imread(str(out / 'images' / 'Bicubic' / f'{face}.png'))).max() <= 0.5
        psnr, ssim = expected_scores(name, sr, hr, 4)
        assert float(rows[face]['PSNR']) == pytest.approx(psnr, abs=1e-5), face
        assert float(rows[face]['SSIM']) == pytest.approx(ssim, abs=1e-6), face


def test_old_flags_override_the_preset_and_are_reported(faces, tmp_path, capsys):
    out = tmp_path / 'dic0'
    benchmark.main([
        '--data',
        str(faces), '--scale', '4', '--out',
        str(out), '--protocol', 'dic', '--crop-border', '0', '--save-images', '--no-face-metrics', '--grid-faces', '0',
        '--device', 'cpu'
    ])
    md = (out / 'benchmark.md').read_text()
    assert '- override `--crop-border 0`: crop_border = 0 (the preset\'s: crop_border = scale = 4)' in md
    row = _read_csv(out / 'benchmark_per_face.csv')[0]
    sr = cv2.imread(str(out / 'images' / 'Bicubic' / f'{row["face"]}.png'))
    psnr, ssim = expected_scores('dic', sr, cv2.imread(str(faces / f'{row["face"]}.png')), 4, crop=0)
    assert float(row['PSNR']) == pytest.approx(psnr, abs=1e-5) and float(row['SSIM']) == pytest.approx(ssim, abs=1e-6)
    # --rgb on an RGB preset: reported as the preset's own choice; on a Y preset: an override
    out2 = tmp_path / 'rgb'
    benchmark.main([
        '--data',
        str(faces), '--scale', '4', '--out',
        str(out2), '--protocol', 'rgb', '--rgb', '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu'
    ])
    assert '- override `--rgb`: the preset\'s channel RGB too' in (out2 / 'benchmark.md').read_text()
    assert protocols.resolve('laat', 8, rgb=True).label() == 'laat + --rgb'
    # an unknown preset is refused when the options are read, with the list
    with pytest.raises(SystemExit) as exc:
        benchmark.main(['--data', str(faces), '--scale', '4', '--protocol', 'matlab'])
    assert exc.value.code == 2 and "invalid choice: 'matlab'" in capsys.readouterr().err
    with pytest.raises(ValueError, match='unknown protocol; use one of basicsr-y, rgb'):
        protocols.resolve('matlab')


def test_metric_suite_without_a_protocol_is_basicsr_y():
    """scripts/bench_scale.py builds MetricSuite(scale, crop, y_channel, device) positionally."""
    import torch
    suite = benchmark.MetricSuite(4, 4, True, torch.device('cpu'), face_metrics=False)
    assert suite.protocol.label() == 'basicsr-y' and suite.protocol.crop == 4
    suite = benchmark.MetricSuite(4, 0, False, torch.device('cpu'), face_metrics=False)
    assert suite.protocol.label() == 'basicsr-y + --rgb + --crop-border 0' and not suite.y_channel


def test_paper_rows_print_the_papers_protocol_beside_ours(faces, tmp_path, capsys):
    out = tmp_path / 'laat'
    # LAAT reports x8 only; 48x48 faces at x8 leave 32 pixels after the border
    benchmark.main([
        '--data',
        str(faces), '--scale', '8', '--out',
        str(out), '--paper', 'laat', '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu'
    ])
    stdout = capsys.readouterr().out
    paper_rows = [line for line in stdout.splitlines() if line.startswith('| paper |')]
    assert paper_rows and all(
        line.endswith('| `laat` (the paper states channel of '
                      'channel/colour/rounding/crop/ssim) |') for line in paper_rows)
    measured = [line for line in stdout.splitlines() if line.startswith('| measured here |')]
    assert measured and measured[0].endswith('| `basicsr-y`: Y (BT.601), crop 8, rounded, SSIM 11x11 Gaussian |')
    assert '| Choice | The paper (`--protocol laat`) | Measured here (`basicsr-y`) |' in stdout
    assert '| channel | stated: Y: "PSNR, SSIM [Wang et al., 2004] computed on the Y channel' in stdout
    assert '| crop border | not stated; the preset: crop_border = scale = 8 | crop_border = 8 |' in stdout
    assert '`--protocol laat` (no --rgb, no --crop-border) scores as the paper states' in stdout
    assert 'laat.txt' not in stdout and 'IJCAI 2023' in stdout
