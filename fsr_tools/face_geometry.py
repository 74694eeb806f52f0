"""Where a face goes in and out of the network: the LR crop of a face in a photo, and the paste-back of its SR crop.

A face SR network gains less than one interpolation at LR resolution costs (issue 14: on real photos at the network's
scale, an LR crop cut from the photo without resampling gave +1.1 dB over bicubic, the same crop warped once to the
template -1.3 dB, warped twice -4.5 dB; ``scripts/measure_infer_tolerances.py --held-out`` with the demo TANet on its
held-out faces: a cut beat one resampling by 0.65 to 3.7 dB at every scale from 0.8 to 1.25 times the template and
every roll up to 30 degrees, hence the defaults ``scale_tol=0.25``, ``roll_tol=30``). So each face gets a *plan*
(:func:`plan_face`):

- ``'cut'``: the face's scale in the photo is within ``scale_tol`` of the network's LR template and its roll within
  ``roll_tol``: the LR crop is an axis-aligned window of the photo at integer offsets (no resampling at all), placed so
  that the landmarks' centroid falls on the template's; the SR crop is pasted at ``upscale`` times those offsets
  (exactly on the enlarged photo's pixel grid: no resampling either when ``upscale`` equals the network's scale).
- ``'resampled'``: any other face that is not larger than the template: one cubic warp of the photo directly to the LR
  template (``fsr_data.face_align.align_face`` with the LR-size template), and one warp of the SR crop back into the
  enlarged photo.
- ``'kept'``: a face that cannot be cut and has more pixels than the network's LR input (its LR crop would have to be
  down-sampled, losing detail the photo has): it is left as it is (enlarged like the background), unless
  ``restore_large`` forces a ``'resampled'`` plan. (A face cut at ``lr_scale`` < 1 is not down-sampled: the network
  sees the photo's own pixels, the face slightly larger than its template.)

Coordinates: pixel centres, as OpenCV's ``resize``/``warpAffine`` and MATLAB's ``imresize``: a pixel ``x`` of an image
resized by ``f`` is at ``(x + 0.5) f - 0.5`` (:func:`pixel_scale`). The SR crop of an LR window at ``(x0, y0)`` of the
photo therefore lies at ``(x0 * upscale, y0 * upscale)`` in a photo enlarged ``upscale`` times.
"""
import cv2
import math
import numpy as np

PLANS = ('cut', 'resampled', 'kept')


def pixel_scale(f):
    """3x3 transform of pixel-centre coordinates from an image to the same image resized by ``f``."""
    return np.array([[f, 0., 0.5 * f - 0.5], [0., f, 0.5 * f - 0.5], [0., 0., 1.]], np.float64)


def lr_template(hr_size, scale, zoom=1.0):
    """The 5 template points (5, 2) float64 in LR-crop pixels: ``fsr-prepare``'s HR template seen through the x``scale``
    down-sampling (``(p + 0.5) / scale - 0.5``)."""
    from fsr_data.face_align import template_5pts
    t = template_5pts(*hr_size, zoom=zoom).astype(np.float64)
    return (t + 0.5) / scale - 0.5


def plan_face(landmarks, template_lr, scale_tol=0.25, roll_tol=30., restore_large=False):
    """Decide how one face is fed to the network (module docstring).

    Args:
        landmarks (ndarray): (5, 2) landmarks in photo pixels.
        template_lr (ndarray): (5, 2) template in LR-crop pixels (:func:`lr_template`).
        scale_tol (float): ``'cut'`` when ``1 / (1 + scale_tol) <= lr_scale <= 1 + scale_tol``.
        roll_tol (float): and ``|roll| <= roll_tol`` degrees.
        restore_large (bool): resample (down-sample) faces larger than the template instead of keeping them.

    Returns:
        dict: ``plan`` (one of :data:`PLANS`), ``lr_scale`` (LR-crop pixels per photo pixel of the similarity that maps
        the landmarks onto the template: > 1 the face is smaller than the template, < 1 larger), ``roll`` (degrees, the
        face's in-plane rotation in the photo), ``M_lr`` (2x3 photo -> LR crop, used by ``'resampled'``) and
        ``offset`` ((x0, y0) ints of the LR window in the photo, used by ``'cut'``).
    """
    from fsr_data.face_align import estimate_similarity, transform_scale
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    M = estimate_similarity(lm, template_lr)
    rho = transform_scale(M)
    roll = math.degrees(math.atan2(-M[1, 0], M[0, 0]))
    offset = np.round((lm - template_lr).mean(0)).astype(int)
    fits = 1. / (1. + scale_tol) <= rho <= 1. + scale_tol
    if fits and abs(roll) <= roll_tol:
        plan = 'cut'
    elif rho < 1. and not restore_large:
        plan = 'kept'
    else:
        plan = 'resampled'
    return dict(plan=plan, lr_scale=rho, roll=roll, M_lr=M, offset=(int(offset[0]), int(offset[1])))


def _reflect101(idx, n):
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def cut_window(img, x0, y0, w, h):
    """The ``h x w`` window of ``img`` at integer offsets ``(x0, y0)``, no resampling; parts outside the photo are
    reflected (BORDER_REFLECT_101, as ``align_face``)."""
    H, W = img.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + w <= W and y0 + h <= H:
        return img[y0:y0 + h, x0:x0 + w].copy()
    ys = _reflect101(np.arange(y0, y0 + h), H)
    xs = _reflect101(np.arange(x0, x0 + w), W)
    return img[ys[:, None], xs[None, :]]


def warp_to_template(rgb, landmarks, lr_size, template_lr):
    """The LR crop by one resampling of the photo directly to the LR template (``fsr_data.face_align.align_face``: a
    cubic warp; faces much larger than the crop are first shrunk with area interpolation against aliasing)."""
    from fsr_data.face_align import align_face
    crop, _ = align_face(rgb, landmarks, out_size=lr_size, template=template_lr.astype(np.float32))
    return crop


def make_lr(hr_crop, scale, kernel='matlab'):
    """LR crop (float32 [0, 1] RGB) of an aligned HR-size crop, made as ``fsr-prepare`` makes the LR training data
    (``--aligned`` HR crops).

    8-bit crops go through ``fsr_data.prepare.make_lr`` itself (BasicSR's MATLAB-style bicubic ``imresize`` rounded to
    8 bits, or PIL bicubic); 16-bit and float ([0, 1]) crops use the same ``imresize`` in floating point without
    rounding.
    """
    if hr_crop.dtype == np.uint8:
        from fsr_data.prepare import make_lr as prepare_make_lr
        return prepare_make_lr(np.ascontiguousarray(hr_crop), scale, kernel).astype(np.float32) / 255.
    from basicsr.utils.matlab_functions import imresize
    hr = np.ascontiguousarray(hr_crop, dtype=np.float32) / (1. if hr_crop.dtype.kind == 'f' else 65535.)
    if kernel == 'matlab':
        lr = imresize(hr, 1. / scale)
    else:
        h, w = hr.shape[:2]
        lr = cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    return np.clip(lr, 0, 1).astype(np.float32)


def blend_mask(out_h, out_w, feather=0.1):
    """Soft mask (out_h, out_w) float32 of a crop: 1 inside, a smoothstep ramp to 0 over ``feather`` of the crop size at
    the borders (0 on the outermost pixel), so the pasted face has no visible seam."""
    f = max(2., feather * min(out_h, out_w))
    y = np.minimum(np.arange(out_h), np.arange(out_h)[::-1]).astype(np.float32)
    x = np.minimum(np.arange(out_w), np.arange(out_w)[::-1]).astype(np.float32)
    d = np.minimum(y[:, None], x[None, :])
    t = np.clip(d / f, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _blend(photo, box, face_rgb, mask, union):
    """Blend ``face_rgb`` (float32 [0, 1] RGB, the size of ``box``) into ``photo[box]`` with ``mask``; pixels whose
    mask is 0 keep their values exactly. Alpha is left unchanged; gray photos get the face's gray. Integer photos are
    rounded, float photos (in [0, 1]) are not."""
    x0, y0, x1, y1 = box
    region = photo[y0:y1, x0:x1]
    is_float = photo.dtype.kind == 'f'
    maxv = 1. if is_float else (65535. if photo.dtype == np.uint16 else 255.)
    face = np.clip(face_rgb, 0, 1)
    mask = np.clip(mask, 0, 1)
    if photo.ndim == 2:
        face, orig, m = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), region, mask
    else:
        face, orig, m = face[..., ::-1], region[..., :3], mask[..., None]
    blended = orig.astype(np.float32) * (1 - m) + face * maxv * m
    blended = np.clip(blended if is_float else blended.round(), 0, maxv).astype(photo.dtype)
    keep = mask <= 0
    blended[keep] = orig[keep]
    if photo.ndim == 2:
        photo[y0:y1, x0:x1] = blended
    else:
        photo[y0:y1, x0:x1, :3] = blended
    if union is not None:
        u = union[y0:y1, x0:x1]
        np.maximum(u, np.ceil(mask * 255).astype(np.uint8), out=u)
    return int(x0), int(y0), int(x1), int(y1)


def paste_window(photo, sr_rgb, x0, y0, mask, union=None):
    """Paste an SR crop into ``photo`` (in place) at integer offsets, no resampling.

    Args:
        photo (ndarray): (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, uint8, uint16 or float32 in [0, 1].
        sr_rgb (ndarray): (h, w, 3) float32 [0, 1] RGB, already at the photo's resolution.
        x0 (int): column of the crop's top-left pixel in ``photo`` (may be outside: the crop is clipped).
        y0 (int): row of the crop's top-left pixel.
        mask (ndarray): (h, w) float32 soft mask (:func:`blend_mask`).
        union (ndarray | None): (H, W) uint8 updated with ``ceil(255 * mask)`` (max over faces).

    Returns:
        tuple | None: the photo region (x0, y0, x1, y1) touched.
    """
    H, W = photo.shape[:2]
    h, w = sr_rgb.shape[:2]
    bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if bx1 <= bx0 or by1 <= by0:
        return None
    sl = np.s_[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
    return _blend(photo, (bx0, by0, bx1, by1), sr_rgb[sl], mask[sl], union)


def paste_warped(photo, sr_rgb, M, mask_crop, union=None):
    """Paste an SR crop back into ``photo`` (in place) with the inverse of ``M`` and a soft mask (one cubic warp).

    Args:
        photo (ndarray): (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, uint8, uint16 or float32 in [0, 1]. Alpha is
            left unchanged.
        sr_rgb (ndarray): (h, w, 3) float32 [0, 1] RGB crop.
        M (ndarray): 2x3 transform ``photo`` -> crop pixels.
        mask_crop (ndarray): (h, w) float32 soft mask in crop coordinates (:func:`blend_mask`).
        union (ndarray | None): (H, W) uint8 updated with ``ceil(255 * mask)`` (max over faces).

    Returns:
        tuple | None: the photo region (x0, y0, x1, y1) touched; pixels whose mask is 0 keep their values exactly.
    """
    from fsr_data.face_align import inverse_affine, transform_scale
    H, W = photo.shape[:2]
    h, w = sr_rgb.shape[:2]
    Minv = inverse_affine(M)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ Minv.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if x1 <= x0 or y1 <= y0:
        return None
    src, src_mask = sr_rgb, mask_crop
    s = transform_scale(M)  # crop pixels per photo pixel
    if s > 2:  # the face is small in the photo: shrink with area interpolation first (no aliasing)
        f = 1.25 / s
        src = cv2.resize(sr_rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        src_mask = cv2.resize(mask_crop, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / w, src.shape[0] / h
        shrink = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)
        Minv = inverse_affine((shrink @ np.vstack([M, [0, 0, 1]]))[:2])
    A = Minv.copy()
    A[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(src, A, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(src_mask, A, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return _blend(photo, (x0, y0, x1, y1), face, mask, union)
