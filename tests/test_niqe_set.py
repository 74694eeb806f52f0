"""NIQE-set (fsr_metrics/niqe_set.py) against BasicSR's NIQE: the same 36 features for a one-block image, the same
score from the same block features, the central block, and the errors for too few or too small faces."""
import basicsr.metrics.niqe as bsr_niqe
import cv2
import numpy as np
import pytest
import warnings
from skimage import data

from fsr_metrics import niqe_set


def _bsr_block_features(monkeypatch, y):
    """BasicSR's own feature matrix of image ``y``: the argument of its ``np.cov`` call (captured) and its score."""
    seen = []
    real_cov = np.cov

    def spy(x, *args, **kwargs):
        seen.append(np.array(x))
        return real_cov(x, *args, **kwargs)

    monkeypatch.setattr(np, 'cov', spy)
    mu, cov, window = niqe_set.pristine_model()
    try:
        with np.errstate(all='ignore'), warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            score = bsr_niqe.niqe(y, mu, cov, window)
    except np.linalg.LinAlgError:  # one block: BasicSR's covariance is NaN
        score = None
    monkeypatch.setattr(np, 'cov', real_cov)
    return seen[0], score


def _y(img):
    from basicsr.metrics.metric_util import to_y_channel
    return np.squeeze(to_y_channel(img.astype(np.float32))).round()


def test_block_features_are_basicsrs(monkeypatch):
    img = data.astronaut()[100:196, 150:246, ::-1].copy()  # one 96x96 block
    feats, score = _bsr_block_features(monkeypatch, _y(img))
    assert feats.shape == (1, 36)
    assert score is None or np.isnan(score)  # BasicSR cannot score one block
    _, _, window = niqe_set.pristine_model()
    np.testing.assert_array_equal(niqe_set.block_features(_y(img), window), feats[0])


def test_score_from_block_features_is_basicsrs(monkeypatch):
    img = data.astronaut()[:192, 100:292, ::-1].copy()  # four blocks: BasicSR's per-image NIQE is defined
    feats, score = _bsr_block_features(monkeypatch, _y(img))
    assert feats.shape == (4, 36)
    mu, cov, _ = niqe_set.pristine_model()
    assert niqe_set.niqe_from_features(feats, mu, cov) == pytest.approx(score, rel=1e-12)
    # a NaN feature row is left out of the covariance and ignored by the mean, as BasicSR does
    with_nan = np.concatenate([feats, np.full((1, 36), np.nan)])
    assert niqe_set.niqe_from_features(with_nan, mu, cov) == pytest.approx(score, rel=1e-12)


def test_central_block_and_set_score():
    rng = np.random.default_rng(0)
    faces = [cv2.GaussianBlur(rng.integers(0, 256, (128, 120, 3), dtype=np.uint8), (0, 0), s) for s in (0.5, 1, 2)]
    block = niqe_set.central_block(faces[0], crop_border=4)
    np.testing.assert_array_equal(block, _y(faces[0])[16:112, 12:108])  # (128 - 96) / 2, (120 - 96) / 2
    mu, cov, window = niqe_set.pristine_model()
    expected = niqe_set.niqe_from_features(
        np.stack([niqe_set.block_features(niqe_set.central_block(f, 4), window) for f in faces]), mu, cov)
    assert niqe_set.calculate_niqe_set(faces, crop_border=4) == pytest.approx(expected)
    assert niqe_set.calculate_niqe_set(faces[:2], 4) != pytest.approx(expected)  # every face counts
    with pytest.raises(ValueError, match='at least 2 blocks'):
        niqe_set.calculate_niqe_set(faces[:1], 4)
    with pytest.raises(ValueError, match='at least 96x96'):
        niqe_set.calculate_niqe_set([f[:100, :100] for f in faces], 4)
