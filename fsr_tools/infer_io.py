"""Image and file handling of ``fsr-infer``: reading photos in their native layout, writing results, listing inputs.

Photos keep their layout end to end: gray, BGR or BGRA, 8 or 16 bit (float images become 16-bit); the EXIF orientation
is applied on reading. Results are never written over an input photo (:func:`list_inputs` refuses an output folder that
holds the inputs; :func:`write_image` refuses any protected path).
"""
import cv2
import numpy as np
import os

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')


class InferError(Exception):
    """A setup problem (options, network, weights, device, output folder): ``error: ...`` with exit status 2."""


class SkipImage(Exception):
    """A problem with one input file: the file is skipped and listed with the reason in the summary."""


_EXIF_OPS = {
    2: lambda im: cv2.flip(im, 1),
    3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0),
    5: lambda im: np.ascontiguousarray(np.swapaxes(im, 0, 1)),
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.rotate(np.ascontiguousarray(np.swapaxes(im, 0, 1)), cv2.ROTATE_180),
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _exif_orientation(path):
    try:
        from PIL import Image
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # not readable by PIL, no EXIF: keep the pixels as stored
        return 1


def _is_cmyk(path):
    """True when PIL reads the file as CMYK (TIFF, JPEG); False when it cannot tell."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return im.mode == 'CMYK'
    except Exception:  # noqa: BLE001  (any file PIL cannot open is simply not known to be CMYK)
        return False


def read_image(path):
    """Read a photo in its native layout and bit depth.

    Args:
        path (str): image file.

    Returns:
        tuple: ``img`` ndarray (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 or uint16 (float images are
        clipped to [0, 1] and stored as uint16), and ``notes`` (list of str) about conversions.

    Raises:
        SkipImage: unreadable file or unsupported layout.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths, unlike cv2.imread
    except OSError as e:
        raise SkipImage(f'unreadable file ({e.strerror or e})')
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise SkipImage('unreadable file (empty, corrupt or not an image format OpenCV can decode)')
    notes = []
    if img.ndim == 3 and img.shape[2] == 4 and _is_cmyk(path):
        # OpenCV returns the raw C, M, Y, K planes with IMREAD_UNCHANGED (they would pass for BGRA); its colour decode
        # converts CMYK to BGR.
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        notes.append('CMYK image: converted to RGB (written as RGB)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2BGR)
        notes.append('gray+alpha image: alpha dropped, restored as RGB')
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise SkipImage(f'unsupported image layout {img.shape} (expected gray, RGB or RGBA)')
    if img.dtype in (np.float32, np.float64, np.float16):
        img = (np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1) * 65535.).round().astype(np.uint16)
        notes.append('floating-point image: clipped to [0, 1] and written as 16-bit')
    elif img.dtype not in (np.uint8, np.uint16):
        raise SkipImage(f'unsupported pixel type {img.dtype} (expected 8 or 16 bit)')
    if img.ndim == 2:
        notes.append('grayscale: faces restored in RGB and converted back to gray')
    elif img.shape[2] == 4:
        notes.append('RGBA: the alpha channel is kept unchanged')
    if img.dtype == np.uint16:
        notes.append('16-bit: processed in floating point, written as 16-bit PNG')
    orientation = _exif_orientation(path)
    if orientation in _EXIF_OPS:
        img = _EXIF_OPS[orientation](img)
        notes.append(f'EXIF orientation {orientation} applied (output is upright)')
    return img, notes


def max_value(img):
    return 65535. if img.dtype == np.uint16 else 255.


def to_rgb(img):
    """RGB view (H, W, 3), native dtype, contiguous, of a gray / BGR / BGRA image."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def to_uint8(img):
    if img.dtype == np.uint8:
        return img
    return (img.astype(np.float32) * (255. / max_value(img))).round().clip(0, 255).astype(np.uint8)


def write_image(path, img, protected=()):
    """Write an image (PNG for ``.png``), creating folders; works with non-ASCII paths.

    Args:
        path (str): file to write.
        img (ndarray): image in OpenCV's layout.
        protected (set[str]): real paths that must never be written (the input photos).

    Raises:
        InferError: ``path`` is one of ``protected``.
    """
    if protected and os.path.realpath(path) in protected:
        raise InferError(f'refusing to write {path}: it is one of the input photos. Choose another output folder (-o).')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', np.ascontiguousarray(img))
    if not ok:
        raise OSError(f'cannot encode {path}')
    buf.tofile(path)


def rgb_float_to_uint8_bgr(rgb):
    return cv2.cvtColor((np.clip(rgb, 0, 1) * 255.).round().astype(np.uint8), cv2.COLOR_RGB2BGR)


def list_inputs(input_path, out_dir):
    """Images to process as ``[(path, relative name)]`` and the files ignored for their extension.

    A folder input is searched recursively, skipping the output folder (earlier results are never read as photos).

    Raises:
        InferError: the input does not exist, or the output folder is the folder that holds the input photos (the
            results would be written among, and possibly over, the user's photos: issue 17 item 1).
    """
    out_real = os.path.realpath(out_dir)
    if os.path.isfile(input_path):
        if os.path.dirname(os.path.realpath(input_path)) == out_real:
            raise InferError(
                f'-o {out_dir} is the folder of the input photo {input_path}: the results would be written '
                'beside (and could overwrite) your photos. Choose another output folder, e.g. -o '
                f'{os.path.join(out_dir, "restored")}.')
        return [(input_path, os.path.basename(input_path))], []
    if not os.path.isdir(input_path):
        raise InferError(f'input {input_path} does not exist (-i / --input: a photo or a folder of photos).')
    if os.path.realpath(input_path) == out_real:
        raise InferError(f'-o {out_dir} is the input folder: the results would be written over your photos. Choose '
                         f'another output folder, e.g. -o {os.path.join(out_dir, "restored")}.')
    found, ignored = [], []
    for root, dirs, files in os.walk(input_path):
        dirs.sort()
        if os.path.realpath(root) == out_real or os.path.realpath(root).startswith(out_real + os.sep):
            dirs[:] = []
            continue
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, input_path)
            (found if name.lower().endswith(IMG_EXTENSIONS) else ignored).append((path, rel))
    return found, [rel for _, rel in ignored]


def output_names(rels):
    """Map relative input names to unique output stems (``a/b.jpg`` -> ``a/b``; ``b.png`` too -> ``b_png``)."""
    stems = [os.path.splitext(r)[0] for r in rels]
    counts = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return {
        r: (s if counts[s] == 1 else f'{s}_{os.path.splitext(r)[1].lstrip(".").lower()}')
        for r, s in zip(rels, stems)
    }
