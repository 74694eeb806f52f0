"""Does ``fsr-infer`` keep a network's gain on the faces of real photos? The measurement of issue 14, shared by
``tests/test_infer_quality.py`` and ``scripts/make_infer_example.py``.

Protocol (:func:`face_test_photos`, :func:`face_gains`): each face of a real photo is cut out with its surroundings
(2.5x its detected box) and resized so that it fills the network's HR crop (as ``fsr-prepare`` would align it, times
``rel`` to try scales around the template); that is the reference. It is shrunk ``scale`` times with the training
degradation (MATLAB bicubic, ``fsr_data.prepare.make_lr``, rounded to 8 bits) and restored by ``fsr-infer --upscale
scale``; the restored face box is compared with the reference (Y-PSNR, BT.601 as BasicSR's ``calculate_psnr(...,
test_y_channel=True)``) against the tool's plain bicubic enlargement of the same small photo.

:func:`fit_linear_sr` fits a reference network in closed form: the least-squares linear x``scale`` up-sampler of a
``k x k`` LR neighbourhood (one grouped convolution + pixel shuffle, :class:`LinearSR`), on images that contain no face
(scikit-image's cat, coffee, rocket, bricks). It beats bicubic on most natural images by about half a dB and knows
nothing of faces, so a test photo's faces are held out by construction; it checks the tool's geometry and resampling,
not a face prior. A face network (the demo TANet) is measured the same way by ``make_infer_example.py``.
"""
import cv2
import numpy as np
import torch
from torch import nn

NON_FACE_IMAGES = ('chelsea', 'coffee', 'rocket', 'brick')


class LinearSR(nn.Module):
    """A linear x``scale`` up-sampler: each LR pixel's ``k x k`` neighbourhood (per channel, replicate-padded) gives the
    ``scale x scale`` HR pixels it covers (grouped convolution + pixel shuffle).

    Args:
        scale (int): up-sampling factor. Default 4.
        k (int): LR neighbourhood size (odd). Default 7.
    """

    def __init__(self, scale=4, k=7):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 3 * scale * scale, k, padding=k // 2, padding_mode='replicate', groups=3)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.conv(x))


def _lr_hr_pairs(images, scale):
    from basicsr.utils.matlab_functions import imresize
    for im in images:
        h, w = im.shape[:2]
        hr = im[:h // scale * scale, :w // scale * scale].astype(np.float32) / 255.
        lr = np.clip(np.round(imresize(hr, 1. / scale) * 255), 0, 255).astype(np.float32) / 255.
        yield lr, hr


def non_face_images(size=256):
    """Central ``size x size`` RGB crops of scikit-image pictures without faces (:data:`NON_FACE_IMAGES`)."""
    from skimage import data
    out = []
    for name in NON_FACE_IMAGES:
        im = getattr(data, name)()
        im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
        h, w = im.shape[:2]
        y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append(np.ascontiguousarray(im[y0:y0 + size, x0:x0 + size]))
    return out


def fit_linear_sr(images=None, scale=4, k=7, samples=6000, seed=0):
    """:class:`LinearSR` fitted by least squares (one shared filter bank for the three channels) on LR/HR pairs made
    with the training degradation (MATLAB bicubic x1/scale, 8-bit rounding) from ``images`` (RGB uint8; default
    :func:`non_face_images`)."""
    from numpy.lib.stride_tricks import sliding_window_view
    images = non_face_images() if images is None else images
    rng = np.random.default_rng(seed)
    r, feats, targets = k // 2, [], []
    for lr, hr in _lr_hr_pairs(images, scale):
        h, w = lr.shape[:2]
        lp = np.pad(lr, ((r, r), (r, r), (0, 0)), mode='edge')
        for c in range(3):
            patches = sliding_window_view(lp[..., c], (k, k)).reshape(h * w, k * k)
            blocks = hr[..., c].reshape(h, scale, w, scale).transpose(0, 2, 1, 3).reshape(h * w, scale * scale)
            idx = rng.choice(h * w, min(samples, h * w), replace=False)
            feats.append(patches[idx])
            targets.append(blocks[idx])
    A = np.concatenate(feats).astype(np.float64)
    A = np.concatenate([A, np.ones((len(A), 1))], 1)
    W, *_ = np.linalg.lstsq(A, np.concatenate(targets).astype(np.float64), rcond=None)
    net = LinearSR(scale, k)
    with torch.no_grad():
        net.conv.weight.copy_(torch.from_numpy(W[:-1].T.reshape(scale * scale, 1, k, k)).float().repeat(3, 1, 1, 1))
        net.conv.bias.copy_(torch.from_numpy(W[-1]).float().repeat(3))
    return net.eval()


def y_psnr(img, ref):
    """Y-channel PSNR (BT.601, BasicSR's ``calculate_psnr(test_y_channel=True)``) of two BGR uint8 images."""
    from basicsr.metrics.psnr_ssim import calculate_psnr
    return float(calculate_psnr(img, ref, crop_border=0, input_order='HWC', test_y_channel=True))


def cut_around(img, box, factor=2.5):
    """The region of ``img`` around a face box (``factor`` times its larger side), and its top-left corner."""
    x1, y1, x2, y2 = [float(v) for v in box]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * factor / 2
    h, w = img.shape[:2]
    xa, ya = int(max(0, cx - half)), int(max(0, cy - half))
    xb, yb = int(min(w, cx + half)), int(min(h, cy + half))
    return img[ya:yb, xa:xb].copy(), (xa, ya)


def face_test_photos(img, faces, hr_size=(128, 128), scale=4, zoom=1.0, rels=(1.0, ), flips=(False, )):
    """Reference photos (BGR uint8, sides multiples of ``scale``), one per face x ``rels`` x ``flips``: the face's
    surroundings resized so that the face fills the HR crop times ``rel``."""
    from fsr_data.face_align import estimate_similarity, template_5pts, transform_scale
    template = template_5pts(*hr_size, zoom=zoom)
    out = []
    for i, face in enumerate(faces):
        region, (xa, ya) = cut_around(img, face['box'])
        f0 = transform_scale(estimate_similarity(np.asarray(face['landmarks']) - (xa, ya), template))
        for rel in rels:
            f = f0 * rel
            interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
            ref = cv2.resize(region, (round(region.shape[1] * f), round(region.shape[0] * f)), interpolation=interp)
            ref = ref[:ref.shape[0] // scale * scale, :ref.shape[1] // scale * scale]
            for flip in flips:
                out.append(dict(face=i, rel=rel, flip=flip, ref=np.ascontiguousarray(ref[:, ::-1] if flip else ref)))
    return out


def degrade(ref, scale):
    """The small photo: MATLAB-bicubic x1/scale rounded to 8 bits (``fsr-prepare``'s LR degradation)."""
    from fsr_data.prepare import make_lr
    return make_lr(ref, scale, 'matlab')


def face_gains(restored, plain, ref, boxes, scale):
    """Y-PSNR of each face box (small-photo coordinates, scaled to the reference) in the restored and the plainly
    enlarged photo against the reference: ``[{'box', 'psnr', 'psnr_bicubic', 'gain'}]``."""
    H, W = ref.shape[:2]
    rows = []
    for box in boxes:
        x0, y0, x1, y1 = [int(round((v + 0.5) * scale - 0.5)) for v in box]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        s = np.s_[y0:y1, x0:x1]
        p, b = y_psnr(restored[s], ref[s]), y_psnr(plain[s], ref[s])
        rows.append(dict(box=[x0, y0, x1, y1], psnr=round(p, 3), psnr_bicubic=round(b, 3), gain=round(p - b, 3)))
    return rows
