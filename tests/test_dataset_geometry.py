"""FSRFaceDataset geometry against independent computations (issue 19; rot90 on non-square crops: issue 13 item 3).

* Every flip/rotation the dataset can draw (``use_rot`` on, both ``rot_mode`` values, with and without ``use_hflip``,
  square and non-square faces) is identified from the output image itself (a face drawn with an asymmetric mark, so
  the 8 flips/rotations of it are all different), and the label map must be that transform of the input map, with the
  left/right labels swapped exactly when the transform mirrors the face. The meaning is checked too: in the face's own
  frame (down = from the eyes to the mouth), the ``l_*`` eye, brow and ear lie on the left of the ``r_*`` ones, as
  they do in the untransformed face (the convention of ``fsr_data/parsing.py``: ``l_*`` on the image's left).
* The distribution of the drawn transforms (non-square: 0 or 180 degrees evenly, and the flip).
* The LR parsing targets against PIL: ``parsing_lq`` = PIL's nearest resize (LR pixel centres) of the label map,
  ``parsing_bin_lq`` = PIL's antialiased bicubic resize of the skin map (PIL's ``BICUBIC`` uses the same a = -0.5
  kernel widened by the scale as torch's ``antialias=True``), clamped to [0, 1], at 1e-4.
"""
import cv2
import numpy as np
import os
import pytest
import random
from basicsr.utils import tensor2img
from PIL import Image

from fsr_data.face_dataset import FSRFaceDataset

SCALE = 4
# written out here (not imported): the left/right pairs of CelebAMask-HQ's 19 classes
SWAP = {2: 3, 3: 2, 4: 5, 5: 4, 7: 8, 8: 7}
PAIRS = {'brows': (2, 3), 'eyes': (4, 5), 'ears': (7, 8)}
MOUTH = 11


def _swap(labels):
    out = labels.copy()
    for a, b in SWAP.items():
        out[labels == a] = b
    return out


def _transform(img, k, flip):
    """The dihedral element 'horizontal flip if ``flip``, then rotate by k x 90 degrees counter-clockwise'."""
    return np.rot90(img[:, ::-1] if flip else img, k)


def _face(h, w):
    """A schematic face (labels with ``l_*`` on the image's left) and a BGR picture of it with an asymmetric mark."""
    p = np.zeros((h, w), np.uint8)
    fx = lambda x: int(round(x * w / 32))  # noqa: E731  (layout drawn for 32 columns)
    p[2:h - 2, fx(3):w - fx(3)] = 1  # skin
    p[12:18, 0:fx(3)] = 7  # l_ear (image left)
    p[12:18, w - fx(3):w] = 8  # r_ear
    p[8:10, fx(6):fx(13)] = 2  # l_brow
    p[8:10, w - fx(13):w - fx(6)] = 3  # r_brow
    p[11:14, fx(7):fx(12)] = 4  # l_eye
    p[11:14, w - fx(12):w - fx(7)] = 5  # r_eye
    p[15:20, fx(14):w - fx(14)] = 10  # nose
    p[22:25, fx(10):w - fx(10)] = MOUTH
    # the picture shows the components but cannot tell left from right (both eyes look alike) ...
    canon = np.minimum(p, _swap(p))
    img = np.stack([canon * 13, 90 + canon * 5, 200 - canon * 9], axis=-1).astype(np.uint8)
    # ... except for a mark near the top-left corner, which makes every flip/rotation of the picture distinct
    img[3:5, fx(4):fx(4) + 3] = (255, 255, 255)
    return p, img


def _write(root, hr_img, parsing):
    paths = {}
    for name, img in (('hr', hr_img), (f'lr_x{SCALE}', hr_img[SCALE // 2::SCALE,
                                                              SCALE // 2::SCALE]), ('parsing', parsing)):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        cv2.imwrite(os.path.join(folder, 'face000.png'), img)
        paths[name] = folder
    return paths


def _dataset(paths, **kw):
    opt = dict(
        dataroot_gt=paths['hr'],
        dataroot_lq=paths[f'lr_x{SCALE}'],
        dataroot_parsing=paths['parsing'],
        io_backend={'type': 'disk'},
        scale=SCALE,
        phase='train',
        gt_size=None,
        return_parsing=True)
    opt.update(kw)
    return FSRFaceDataset(opt)


def _identify(img, hr_img):
    """The (k, flip) with ``_transform(hr_img, k, flip) == img`` (exactly one must match)."""
    found = [(k, f) for k in range(4) for f in (False, True)
             if _transform(hr_img, k, f).shape == img.shape and np.array_equal(_transform(hr_img, k, f), img)]
    assert len(found) == 1, found
    return found[0]


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    assert len(xs), 'component missing'
    return np.array([xs.mean(), ys.mean()])


def _basicsr_draws(use_hflip, square):
    """The transforms of basicsr.data.transforms.augment (hflip, then vflip, then transpose), written out."""
    out = set()
    probe = np.arange(12).reshape(3, 4) if not square else np.arange(16).reshape(4, 4)
    for h in ([False, True] if use_hflip else [False]):
        for v in (False, True):
            for t in ([False, True] if square else [False]):
                img = probe[:, ::-1] if h else probe
                img = img[::-1] if v else img
                img = img.T if t else img
                out.add(_identify(img, probe))
    return out


def _expected_draws(rot_mode, use_hflip, square):
    if rot_mode == 'basicsr':
        return _basicsr_draws(use_hflip, square)
    ks = range(4) if square else (0, 2)
    return {(k, f) for k in ks for f in ([False, True] if use_hflip else [False])}


@pytest.mark.parametrize('hw', [(32, 32), (32, 24)], ids=['square', 'non_square'])
@pytest.mark.parametrize('use_hflip', [True, False])
@pytest.mark.parametrize('rot_mode', ['basicsr', 'rot90'])
def test_every_drawn_transform_keeps_left_labels_on_the_faces_left(tmp_path, rot_mode, use_hflip, hw):
    parsing, hr_img = _face(*hw)
    paths = _write(str(tmp_path), hr_img, parsing)
    ds = _dataset(paths, use_hflip=use_hflip, use_rot=True, rot_mode=rot_mode)
    seen = set()
    for seed in range(48):
        random.seed(seed)
        out = ds[0]
        img = tensor2img(out['gt'])  # BGR uint8
        k, flip = _identify(img, hr_img)
        seen.add((k, flip))
        labels = out['parsing_gt'].numpy()
        expected = _transform(parsing, k, flip)
        expected = _swap(expected) if flip else expected  # swapped exactly when the transform mirrors the face
        assert np.array_equal(labels, expected), (rot_mode, k, flip)
        # the LR face is the same transform of the LR input
        assert np.array_equal(tensor2img(out['lq']), _transform(hr_img[SCALE // 2::SCALE, SCALE // 2::SCALE], k, flip))
        # meaning: in the face's frame (x to the face's image-right, y down to the mouth), l_* is left of r_*
        eyes = _centroid(np.isin(labels, (4, 5)))
        down = _centroid(labels == MOUTH) - eyes
        for name, (left, right) in PAIRS.items():
            across = _centroid(labels == right) - _centroid(labels == left)
            cross = across[0] * down[1] - across[1] * down[0]  # > 0: 'right' is on the face's right side
            assert cross > 0, (name, rot_mode, k, flip)
    assert seen == _expected_draws(rot_mode, use_hflip, hw[0] == hw[1])


@pytest.mark.parametrize('rot_mode', ['basicsr', 'rot90'])
@pytest.mark.parametrize('hw', [(32, 32), (32, 24)], ids=['square', 'non_square'])
def test_drawn_transforms_are_uniform(tmp_path, rot_mode, hw):
    """Each transform the dataset can draw comes with the same probability (non-square: rotation 0 or 180 evenly)."""
    parsing, hr_img = _face(*hw)
    paths = _write(str(tmp_path), hr_img, parsing)
    ds = _dataset(paths, use_hflip=True, use_rot=True, rot_mode=rot_mode, return_parsing=False)
    expected = _expected_draws(rot_mode, True, hw[0] == hw[1])
    counts = dict.fromkeys(expected, 0)
    n = 100 * len(expected)
    random.seed(0)
    for _ in range(n):
        counts[_identify(tensor2img(ds[0]['gt']), hr_img)] += 1
    # 100 expected per transform (binomial sd < 10): a 3:1 bias, as 90/270 -> 180 gave, is far outside
    assert all(70 <= c <= 130 for c in counts.values()), counts


def _pil_nearest(labels, h, w):
    return np.asarray(Image.fromarray(labels, mode='L').resize((w, h), Image.NEAREST))


def _pil_bicubic_aa(x, h, w):
    return np.clip(np.asarray(Image.fromarray(x.astype(np.float32), mode='F').resize((w, h), Image.BICUBIC)), 0, 1)


@pytest.mark.parametrize('hw', [(32, 32), (32, 24), (40, 24)])
def test_lr_parsing_targets_match_pil(tmp_path, hw):
    rng = np.random.RandomState(1)
    h, w = hw
    # blobs of labels (skin about half of the face), not symmetric: a transposition or a scale cannot pass
    labels = np.kron(rng.randint(0, 19, (h // 2, w // 2)), np.ones((2, 2), np.int64)).astype(np.uint8)
    labels[rng.rand(h, w) < 0.45] = 1
    hr_img = (rng.rand(h, w, 3) * 255).astype(np.uint8)
    paths = _write(str(tmp_path), hr_img, labels)
    ds = _dataset(paths, phase='val', return_parsing_lq=True, return_binary_parsing=True)
    out = ds[0]
    lh, lw = h // SCALE, w // SCALE
    assert np.array_equal(out['parsing_lq'].numpy(), _pil_nearest(labels, lh, lw))
    assert np.array_equal(out['parsing_bin_gt'][0].numpy(), (labels == 1).astype(np.float32))
    ref = _pil_bicubic_aa(labels == 1, lh, lw)
    assert out['parsing_bin_lq'].shape == (1, lh, lw)
    np.testing.assert_allclose(out['parsing_bin_lq'][0].numpy(), ref, atol=1e-4)
    # training: the targets follow the augmented label map
    ds = _dataset(
        paths, use_hflip=True, use_rot=True, rot_mode='rot90', return_parsing_lq=True, return_binary_parsing=True)
    for seed in range(8):
        random.seed(seed)
        out = ds[0]
        gt_labels = out['parsing_gt'].numpy().astype(np.uint8)
        oh, ow = out['lq'].shape[-2:]
        assert np.array_equal(out['parsing_lq'].numpy(), _pil_nearest(gt_labels, oh, ow))
        np.testing.assert_allclose(out['parsing_bin_lq'][0].numpy(), _pil_bicubic_aa(gt_labels == 1, oh, ow), atol=1e-4)
