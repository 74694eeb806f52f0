"""NIQE of a set of small faces: one 96x96 block per face, the blocks' features pooled over the set.

NIQE (Mittal et al., "Making a 'Completely Blind' Image Quality Analyzer", 2013) fits a multivariate Gaussian (MVG) to
the natural-scene features of an image's 96x96 blocks and reports its distance to the MVG of pristine images:

    NIQE = sqrt( (mu_p - mu_d)^T pinv((Sigma_p + Sigma_d) / 2) (mu_p - mu_d) )

BasicSR's ``calculate_niqe`` (a port of the authors' MATLAB code, with their pristine model) takes ``mu_d``/``Sigma_d``
over the blocks of one image, so it needs at least two 96x96 blocks per image: a 128x128 face (minus the crop border)
has one, and the covariance of one block is undefined (BasicSR returns NaN). For such faces, **NIQE-set** fits the MVG
to the blocks of a whole set of outputs instead, one block per face: the central 96x96 block of each face's Y channel
(after the crop border), its 36 features computed exactly as BasicSR computes them for an image of one block (local
mean/contrast normalisation with the 7x7 Gaussian window, 18 AGGD features, then the same at half size after MATLAB
bicubic down-scaling; the block is rounded to integers first, as BasicSR does). The pristine model is BasicSR's
``niqe_pris_params.npz`` (the authors'). Like FID it is one number per method and test set (lower: closer to natural
image statistics), not per face, and it needs at least two faces. DEVIATION from per-image NIQE, for faces smaller than
two blocks: the set's blocks replace one image's blocks; on a set of large images the two differ (a face contributes its
central block only), so NIQE-set is not comparable to per-image NIQE figures in papers.
"""
import numpy as np
import os

BLOCK = 96  # the pristine model's block size (the authors' and BasicSR's)


def pristine_model():
    """BasicSR's pristine MVG (``mu_pris_param``, ``cov_pris_param``) and the 7x7 ``gaussian_window``."""
    import basicsr.metrics.niqe as bsr_niqe
    params = np.load(os.path.join(os.path.dirname(os.path.abspath(bsr_niqe.__file__)), 'niqe_pris_params.npz'))
    return params['mu_pris_param'], params['cov_pris_param'], params['gaussian_window']


def block_features(block, gaussian_window):
    """The 36 NIQE features of one ``BLOCK`` x ``BLOCK`` Y block (float, 0-255, already rounded): what BasicSR's
    ``niqe`` computes for an image that is exactly one block."""
    from basicsr.metrics.niqe import compute_feature, convolve
    from basicsr.utils.matlab_functions import imresize
    if block.shape != (BLOCK, BLOCK):
        raise ValueError(f'NIQE block must be {BLOCK}x{BLOCK}, got {block.shape}.')
    img = block  # float32 from central_block, as BasicSR's calculate_niqe passes it
    feats = []
    for scale in (1, 2):
        mu = convolve(img, gaussian_window, mode='nearest')
        sigma = np.sqrt(np.abs(convolve(np.square(img), gaussian_window, mode='nearest') - np.square(mu)))
        feats.extend(compute_feature((img - mu) / (sigma + 1)))
        if scale == 1:
            img = imresize(img / 255., scale=0.5, antialiasing=True) * 255.
    return np.array(feats)


def niqe_from_features(feats, mu_pris, cov_pris):
    """NIQE of the MVG fitted to ``feats`` (N blocks x 36 features, N >= 2): the module docstring's formula, with
    BasicSR's handling of NaN features (NaN-mean; rows with a NaN left out of the covariance)."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f'NIQE-set needs the features of at least 2 blocks, got {feats.shape[0]}.')
    mu = np.nanmean(feats, axis=0)
    cov = np.cov(feats[~np.isnan(feats).any(axis=1)], rowvar=False)
    diff = np.ravel(mu_pris) - mu
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff))


def central_block(img, crop_border=0):
    """The rounded Y channel (BasicSR's ``to_y_channel``) of a BGR uint8 image's central ``BLOCK`` x ``BLOCK`` block
    after ``crop_border`` pixels are cut from each side."""
    from basicsr.metrics.metric_util import to_y_channel
    y = np.squeeze(to_y_channel(img.astype(np.float32)))
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    h, w = y.shape
    if h < BLOCK or w < BLOCK:
        raise ValueError(f'NIQE-set needs faces of at least {BLOCK}x{BLOCK} after the crop border, got {h}x{w}.')
    top, left = (h - BLOCK) // 2, (w - BLOCK) // 2
    return y[top:top + BLOCK, left:left + BLOCK].round()


def calculate_niqe_set(imgs, crop_border=0):
    """NIQE-set of a list of BGR uint8 faces (module docstring): lower is more natural."""
    mu_pris, cov_pris, window = pristine_model()
    feats = [block_features(central_block(img, crop_border), window) for img in imgs]
    return niqe_from_features(np.stack(feats), mu_pris, cov_pris)
