"""Image and file handling of ``fsr-infer``: reading photos in their native layout, checking what the library API is
given, listing inputs, naming outputs and writing them by the rules of the output folder.

Photos keep their layout end to end: gray, BGR or BGRA, 8 or 16 bit (a float file becomes 16-bit; a float array given to
:class:`~fsr_tools.restorer.FaceRestorer` stays float); the EXIF orientation is applied on reading.

What ``fsr-infer`` promises about files (``shared/DESIGN.md``, "Files a tool writes"):

- It writes only inside its output folder ``-o``, and only files it made: the folder must be new, empty, or a folder an
  earlier ``fsr-infer`` run made (its ``summary.json`` says ``"tool": "fsr-infer"`` and lists, under ``files``, every
  file the tool wrote there with the SHA-256 of its content). In such a folder a file is replaced only when an earlier
  run listed it and it still holds what that run wrote (a restored photo you edited since is yours: the run stops). The
  journal ``.fsr-infer.journal``, kept while a run is under way, names its files too, so an interrupted run's files
  stay the tool's. Anything else is refused before any work (:class:`OutputFolder`).
- Each input gets its own output: output names that clash (``x.png`` + ``x.PNG``; ``y.png`` + ``y.jpg`` + ``y_png.png``;
  a photo ``crops/a_face00_lr.png`` where the crops of ``a.png`` go), compared ignoring case as on case-insensitive
  file systems, stop the run before any work with one ``error:`` line naming them (:func:`output_names`).
- Folders an earlier run made (marked by their ``summary.json``) are skipped when the input folder is searched, and
  listed as skipped (:func:`find_inputs`); an output folder inside the input folder (``-i photos -o photos/restored``)
  is never read as input.
- Every file is written to a temporary name in its folder and renamed when complete (``fsr_utils.safety``), with the
  mode a plain write gives (0o666 less the umask): a failed write (disk full) leaves no truncated file under a final
  name and raises ``OSError`` naming the file; it is an error, never a skipped photo. Only an input that cannot be
  read is skipped (:class:`SkipImage`).
- An input photo is never written (:func:`write_image` refuses any protected path).
"""
import cv2
import hashlib
import json
import numpy as np
import os
import re

from fsr_utils.safety import LOCK_NAME, UsageError, atomic_write_bytes, real

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')
TOOL = 'fsr-infer'
SUMMARY_NAME = 'summary.json'
JOURNAL_NAME = '.fsr-infer.journal'
CROP_NAME = re.compile(r'^(.*)_face\d+_(lr|sr)\.png$', re.IGNORECASE)


class InferError(Exception):
    """A setup problem (options, network, weights, device, output folder): ``error: ...`` with exit status 2; raised
    during the work (a network output that is not finite), it stops the run."""


class SettingError(InferError, UsageError):
    """A setting out of its range (a ``ValueError`` too, for users of the library API)."""


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
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (cv2.error, MemoryError) as e:  # e.g. more pixels than OpenCV's decoders accept
        raise SkipImage(f'unreadable file ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else ""})')
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
    """The value of white: 255 (uint8), 65535 (uint16), 1 (float)."""
    if img.dtype == np.uint16:
        return 65535.
    return 1. if img.dtype.kind == 'f' else 255.


def to_rgb(img):
    """RGB view (H, W, 3), native dtype, contiguous, of a gray / BGR / BGRA image."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2RGB)


def to_uint8(img):
    if img.dtype == np.uint8:
        return img
    return (img.astype(np.float32) * (255. / max_value(img))).round().clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ what restore() takes
PHOTO_HELP = ('a photo as cv2.imread gives it: a numpy array (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, of uint8 '
              '(0-255), uint16 (0-65535) or float (0-1); or a PIL image (RGB order)')
_PIL_NATIVE = ('L', 'RGB', 'RGBA', 'I;16', 'I', 'F')


def _float_range_ok(arr):
    arr = np.asarray(arr)
    if not np.isfinite(arr).all():
        raise ValueError(f'the image holds NaN or Inf values: expected {PHOTO_HELP}.')
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f'a float image must be in [0, 1]; this one is in [{lo:.4g}, {hi:.4g}] (divide an 8-bit image '
                         'by 255, a 16-bit one by 65535, or pass it as uint8 / uint16).')


def _from_pil(img):
    """``(array in OpenCV's layout, function back to a PIL image)`` of a PIL image."""
    from PIL import Image
    mode = img.mode
    if mode not in _PIL_NATIVE:  # palette, 1-bit, CMYK, YCbCr, LA, ...: to RGB, or RGBA when it has transparency
        has_alpha = 'A' in mode or 'a' in mode or 'transparency' in img.info
        mode = 'L' if mode == '1' else ('RGBA' if has_alpha else 'RGB')
        img = img.convert(mode)
    arr = np.asarray(img)
    if mode == 'RGB':
        return np.ascontiguousarray(
            arr[..., ::-1]), lambda out: Image.fromarray(np.ascontiguousarray(out[..., ::-1]), 'RGB')
    if mode == 'RGBA':
        return np.ascontiguousarray(
            arr[..., [2, 1, 0, 3]]), lambda out: Image.fromarray(np.ascontiguousarray(out[..., [2, 1, 0, 3]]), 'RGBA')
    if mode == 'I':  # 32-bit integers: PIL's mode for many 16-bit files
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f'a PIL image of mode I must hold 16-bit values (0-65535); this one is in [{lo}, {hi}].')
        return arr.astype(np.uint16), lambda out: Image.fromarray(out.astype(np.int32), 'I')
    if mode == 'F':
        _float_range_ok(arr)
        return np.clip(arr.astype(np.float32), 0, 1), lambda out: Image.fromarray(out.astype(np.float32), 'F')
    return np.ascontiguousarray(arr), lambda out: Image.fromarray(np.ascontiguousarray(out), mode)  # L, I;16


def as_photo(img):
    """Check and convert what a user passes as a photo; returns ``(photo, back)``.

    ``photo`` is (H, W), (H, W, 3) BGR or (H, W, 4) BGRA, C-contiguous, uint8, uint16 or float32 in [0, 1];
    ``back(out)`` gives a result in the caller's type: the same dtype (float16/float64 too) and number of channels
    ((H, W, 1) stays (H, W, 1)), or a PIL image of the same mode (modes other than L, RGB, RGBA, I;16, I, F are
    converted to RGB, or RGBA when they have transparency).

    Raises:
        TypeError: not an image (None, a list, a bool/int32/int64/complex array, a tensor ...).
        ValueError: an array of another shape (2 channels, channels-first, a batch, empty) or a float image outside
            [0, 1] or with NaN/Inf.
    """
    if img is None:
        raise TypeError(f'the photo is None (cv2.imread returns None when it cannot read a file: check the path); '
                        f'expected {PHOTO_HELP}.')
    if type(img).__module__.split('.')[0] == 'PIL':
        return _from_pil(img)
    if not isinstance(img, np.ndarray):
        hint = ' (convert it with np.asarray)' if isinstance(img, (list, tuple)) else ''
        raise TypeError(f'the photo is a {type(img).__name__}{hint}; expected {PHOTO_HELP}.')
    dtype = img.dtype
    if dtype.kind == 'b' or (dtype not in (np.uint8, np.uint16) and dtype.kind != 'f'):
        raise TypeError(f'a photo of {dtype} pixels is not supported; expected {PHOTO_HELP} (e.g. '
                        'img.astype(np.uint8) when its values are 0-255).')
    shape = img.shape
    if img.size == 0:
        raise ValueError(f'the photo is empty (shape {shape}); expected {PHOTO_HELP}.')
    if img.ndim == 3 and shape[2] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        raise ValueError(f'the photo {shape} looks channels-first; expected channels last, {PHOTO_HELP} '
                         '(np.transpose(img, (1, 2, 0))).')
    if img.ndim == 4:
        raise ValueError(f'the photo {shape} is a batch: restore one photo at a time; expected {PHOTO_HELP}.')
    if not (img.ndim == 2 or (img.ndim == 3 and shape[2] in (1, 3, 4))):
        raise ValueError(f'a photo of shape {shape} is not supported; expected {PHOTO_HELP}.')
    if dtype.kind == 'f':
        _float_range_ok(img)
        photo = np.clip(img, 0, 1).astype(np.float32)
    else:
        photo = img
    if photo.ndim == 3 and shape[2] == 1:
        photo = photo[..., 0]
    photo = np.ascontiguousarray(photo)

    def back(out):
        if out.ndim == 2 and img.ndim == 3:
            out = out[..., None]
        return out.astype(dtype, copy=False)

    return photo, back


# ------------------------------------------------------------------------------------------------------------- writing
def encode_image(path, img):
    """The bytes of ``img`` (OpenCV layout) encoded by the extension of ``path`` (PNG when none)."""
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', np.ascontiguousarray(img))
    if not ok:
        raise OSError(f'cannot encode {path}')
    return buf.tobytes()


_FILE_MODE = []


def write_bytes(path, data):
    """``fsr_utils.safety.atomic_write_bytes``, then the mode a plain ``open`` gives a new file (0o666 less the umask:
    the temporary file of ``tempfile.mkstemp`` is 0o600, readable by its owner only)."""
    atomic_write_bytes(path, data)
    if not _FILE_MODE:
        mask = os.umask(0o022)
        os.umask(mask)
        _FILE_MODE.append(0o666 & ~mask)
    try:
        os.chmod(path, _FILE_MODE[0])
    except OSError:  # e.g. a file system without modes: the file is written all the same
        pass


def write_image(path, img, protected=()):
    """Write an image (PNG for ``.png``) atomically (``fsr_utils.safety.atomic_write_bytes``), creating folders; works
    with non-ASCII paths. Returns the bytes written.

    Args:
        path (str): file to write.
        img (ndarray): image in OpenCV's layout.
        protected (set[str]): real paths that must never be written (the input photos).

    Raises:
        InferError: ``path`` is one of ``protected``.
        OSError: the file cannot be written (naming it); nothing is left under ``path`` then.
    """
    if protected and real(path) in protected:
        raise InferError(f'refusing to write {path}: it is one of the input photos. Choose another output folder (-o).')
    data = encode_image(path, img)
    write_bytes(path, data)
    return data


def sha256_of(path):
    """SHA-256 (hex) of a file's content."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def rgb_float_to_uint8_bgr(rgb):
    return cv2.cvtColor((np.clip(rgb, 0, 1) * 255.).round().astype(np.uint8), cv2.COLOR_RGB2BGR)


# ------------------------------------------------------------------------------------------- folders fsr-infer made
def read_summary(folder):
    """The ``summary.json`` of a folder an ``fsr-infer`` run made (``"tool": "fsr-infer"``, or the keys of the summaries
    of earlier versions), else None."""
    path = os.path.join(folder, SUMMARY_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    if summary.get('tool') == TOOL:
        return summary
    legacy = {'settings', 'counts', 'photos', 'skipped'} <= set(summary)
    return summary if legacy and isinstance(summary.get('counts'), dict) and 'restored_images' in summary['counts'] \
        else None


def _rel(path, folder):
    rel = os.path.relpath(real(path), real(folder))
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel.replace(os.sep, '/')


def _norm(rel):
    return os.path.normpath(rel).replace(os.sep, '/')


def owned_files(folder):
    """``{path relative to folder ('/'-separated): SHA-256 of the content written, or None when unknown}`` of the files
    ``fsr-infer`` wrote in ``folder``: its summary's ``files``, the photos, masks and crops a summary of an earlier
    version lists, and its journal (``"name"`` before a file is written, ``["name", "sha256"]`` once it is)."""
    summary = read_summary(folder) or {}
    owned = {}
    files = summary.get('files')
    if isinstance(files, dict):
        owned.update((_norm(r), h if isinstance(h, str) else None) for r, h in files.items() if isinstance(r, str))
    elif files is None:  # summaries of earlier versions list the files of their photos (paths as given then)
        for photo in summary.get('photos', []):
            paths = [photo.get('output'), photo.get('mask')]
            paths += [f.get(k) for f in photo.get('faces', []) for k in ('lr_crop', 'sr_crop')]
            owned.update((r, None) for r in (_rel(p, folder) for p in paths if isinstance(p, str)) if r)
    journal = os.path.join(folder, JOURNAL_NAME)
    if os.path.isfile(journal):
        with open(journal, encoding='utf-8', errors='replace') as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:  # the last line of an interrupted run may be cut
                    continue
                if isinstance(entry, str):
                    owned.setdefault(_norm(entry), None)
                elif isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry):
                    owned[_norm(entry[0])] = entry[1]
    return owned


# ------------------------------------------------------------------------------------------------------------ inputs
def find_inputs(input_path, out_dir):
    """The inputs of a run: ``dict(photos=[(path, relative name)], ignored=[relative names without an image
    extension], skipped_folders=[dict(folder, reason)])``.

    A folder input is searched recursively (in sorted order), skipping the output folder and every folder an earlier
    ``fsr-infer`` run made (its ``summary.json`` marks it; when the input folder itself is one, its ``crops/`` and
    ``masks/``): earlier results are never read as photos.

    Raises:
        InferError: the input does not exist, or the output folder is the folder that holds the input photos (the
            results would be written among, and possibly over, the user's photos).
    """
    out_real = real(out_dir)
    if os.path.isfile(input_path):
        if os.path.dirname(real(input_path)) == out_real:
            raise InferError(
                f'-o {out_dir} is the folder of the input photo {input_path}: the results would be written '
                'beside (and could overwrite) your photos. Choose another output folder, e.g. -o '
                f'{os.path.join(out_dir, "restored")}.')
        return dict(photos=[(input_path, os.path.basename(input_path))], ignored=[], skipped_folders=[])
    if not os.path.isdir(input_path):
        raise InferError(f'input {input_path} does not exist (-i / --input: a photo or a folder of photos).')
    if real(input_path) == out_real:
        raise InferError(f'-o {out_dir} is the input folder: the results would be written over your photos. Choose '
                         f'another output folder, e.g. -o {os.path.join(out_dir, "restored")}.')
    found, ignored, skipped = [], [], []
    for root, dirs, files in os.walk(input_path):
        dirs.sort()
        root_real = real(root)
        if root_real == out_real or root_real.startswith(out_real + os.sep):
            dirs[:] = []
            continue
        keep = []
        for d in dirs:
            sub = os.path.join(root, d)
            if real(sub) == out_real:
                continue  # the output folder: written, never read
            if read_summary(sub) is not None:
                skipped.append(
                    dict(
                        folder=sub,
                        reason='made by an earlier fsr-infer run (its summary.json): its photos are '
                        'results, not inputs'))
            elif root == input_path and d.lower() in ('crops', 'masks') and read_summary(root) is not None:
                skipped.append(dict(folder=sub, reason=f'the {d.lower()} of the fsr-infer run that made {root}'))
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, input_path)
            (found if name.lower().endswith(IMG_EXTENSIONS) else ignored).append((path, rel))
    return dict(photos=found, ignored=[rel for _, rel in ignored], skipped_folders=skipped)


def list_inputs(input_path, out_dir):
    """Images to process as ``[(path, relative name)]`` and the files ignored for their extension
    (:func:`find_inputs`)."""
    inputs = find_inputs(input_path, out_dir)
    return inputs['photos'], inputs['ignored']


def output_names(rels, crops=False, masks=False):
    """Map relative input names to unique output stems (``a/b.jpg`` -> ``a/b``; ``b.png`` too -> ``b_jpg``,
    ``b_png``), compared ignoring case (case-insensitive file systems).

    Args:
        rels (list[str]): relative input names.
        crops (bool): the run writes ``crops/<stem>_faceNN_{lr,sr}.png``: a photo written there is a clash.
        masks (bool): the run writes ``masks/<stem>.png``: likewise.

    Raises:
        UsageError: two inputs would get one output file, or an output would land where another input's crops or
            mask go, or on the way to another output (a folder named like an output file). The message names them.
    """
    stems = [os.path.splitext(r)[0].replace(os.sep, '/') for r in rels]
    counts = {}
    for s in stems:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    names = {
        r: (s if counts[s.casefold()] == 1 else f'{s}_{os.path.splitext(r)[1].lstrip(".").lower()}')
        for r, s in zip(rels, stems)
    }
    owner = {}
    for r, stem in names.items():
        key = f'{stem}.png'.casefold()
        if key in owner:
            raise UsageError(f'the inputs {owner[key]} and {r} would both be written as {stem}.png (output names '
                             'are compared ignoring case, as on case-insensitive file systems): rename one of them.')
        owner[key] = r
    stem_owner = {stem.casefold(): r for r, stem in names.items()}
    for r, stem in names.items():
        parts = stem.casefold().split('/')
        for i in range(1, len(parts)):
            on_way = '/'.join(parts[:i])
            if on_way in owner:
                raise UsageError(f'the input {r} would be written inside a folder {on_way}, the output file of the '
                                 f'input {owner[on_way]}: rename one of them.')
        if crops and parts[0] == 'crops' and len(parts) > 1:
            m = CROP_NAME.match('/'.join(stem.split('/')[1:]) + '.png')
            if m and m.group(1).casefold() in stem_owner:
                raise UsageError(f'the input {r} would be written as {stem}.png, where the face crops of the input '
                                 f'{stem_owner[m.group(1).casefold()]} go: rename it, or pass --no-crops.')
        if masks and parts[0] == 'masks' and len(parts) > 1 and '/'.join(parts[1:]) in stem_owner:
            raise UsageError(f'the input {r} would be written as {stem}.png, where the mask of the input '
                             f'{stem_owner["/".join(parts[1:])]} goes (--save-masks): rename it.')
    return names


# ------------------------------------------------------------------------------------------------------------- outputs
class OutputFolder:
    """The output folder of one ``fsr-infer`` run and its rule: write only files the tool made (module docstring).

    Use: :meth:`check` before any work (and again once the folder is locked), :meth:`begin` (marks the folder with a
    ``summary.json`` of status ``running``), :meth:`write_image` for every file, :meth:`finish` with the summary.

    Args:
        path (str): the folder (``-o``).
        protected (iterable[str]): real paths never written (the input photos).
    """

    def __init__(self, path, protected=()):
        self.path = path
        self.protected = set(protected)
        self.owned = {}  # files earlier runs made here (relative, '/'-separated) -> SHA-256 or None
        self.written = {}  # files this run made -> SHA-256
        self._verified = {}  # files found to hold what fsr-infer wrote -> (size, mtime) then: not read twice
        self._journal = None

    def _foreign(self, rel):
        """True when ``rel`` exists and is not what fsr-infer wrote there."""
        path = os.path.join(self.path, rel)
        if rel in self.written or not os.path.lexists(path):
            return False
        if rel not in self.owned or not os.path.isfile(path):
            return True
        if self.owned[rel] is None:  # listed by a summary of an earlier version, or a journal cut short
            return False
        st = os.stat(path)
        if self._verified.get(rel) == (st.st_size, st.st_mtime_ns):
            return False
        if sha256_of(path) != self.owned[rel]:
            return True
        self._verified[rel] = (st.st_size, st.st_mtime_ns)
        return False

    def check(self, planned=(), crop_stems=()):
        """Refuse (:class:`~fsr_utils.safety.UsageError`) a folder where this run could replace a file the tool did not
        make.

        Args:
            planned (iterable[str]): the files the run will write, relative to the folder ('/'-separated).
            crop_stems (iterable[str]): stems whose ``crops/<stem>_faceNN_{lr,sr}.png`` the run may write.
        """
        if not os.path.exists(self.path):
            return self
        entries = sorted(e for e in os.listdir(self.path) if e != LOCK_NAME)
        if not entries:
            return self
        if read_summary(self.path) is None:
            shown = ', '.join(entries[:3]) + (f' and {len(entries) - 3} more' if len(entries) > 3 else '')
            raise UsageError(f'-o {self.path} already holds files that fsr-infer did not make ({shown}): it never '
                             'writes into such a folder (it could replace them). Choose a new or empty output folder, '
                             'or one an earlier fsr-infer run made.')
        self.owned = owned_files(self.path)
        foreign = [rel for rel in planned if self._foreign(rel)]
        stems = set(crop_stems)
        crops_dir = os.path.join(self.path, 'crops')
        if stems and os.path.isdir(crops_dir):
            for root, _, files in os.walk(crops_dir):
                for name in files:
                    rel = os.path.relpath(os.path.join(root, name), self.path).replace(os.sep, '/')
                    m = CROP_NAME.match(rel[len('crops/'):])
                    if m and m.group(1) in stems and self._foreign(rel):
                        foreign.append(rel)
        if foreign:
            raise UsageError(f'-o {self.path}: {os.path.join(self.path, foreign[0])}'
                             f'{f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""} would be replaced, but '
                             f'it is not a file fsr-infer wrote (its {SUMMARY_NAME} does not list it with this '
                             'content). Move it away, or choose a new output folder.')
        return self

    def begin(self, summary):
        """Mark the folder as fsr-infer's (``summary`` written with ``tool``, ``status: running`` and the files of
        earlier runs) and open the journal of this run's files."""
        self.write_summary(dict(summary, status='running'))
        self._journal = open(os.path.join(self.path, JOURNAL_NAME), 'a', encoding='utf-8')
        return self

    def write_image(self, rel, img):
        """Write ``img`` to ``<folder>/<rel>`` atomically; returns its path.

        Raises:
            InferError: the file is an input, or exists and the tool did not make it.
            OSError: the write failed (naming the file).
        """
        rel = _norm(rel)
        path = os.path.join(self.path, rel)
        if self._foreign(rel):
            raise InferError(f'refusing to replace {path}: it is not a file fsr-infer wrote. Move it away, or choose '
                             'a new output folder (-o).')
        if real(path) in self.protected:
            raise InferError(f'refusing to write {path}: it is one of the input photos. Choose another output '
                             'folder (-o).')
        if self._journal is not None:  # named before it exists: an interrupted run's files stay the tool's
            self._journal.write(json.dumps(rel) + '\n')
            self._journal.flush()
        data = encode_image(path, img)
        write_bytes(path, data)
        self.written[rel] = digest = hashlib.sha256(data).hexdigest()
        if self._journal is not None:
            self._journal.write(json.dumps([rel, digest]) + '\n')
            self._journal.flush()
        return path

    def files(self):
        """``{name: SHA-256}`` of every file the tool made in this folder that is still there (earlier runs' and this
        run's)."""
        merged = dict(self.owned, **self.written)
        return {r: merged[r] for r in sorted(merged) if os.path.isfile(os.path.join(self.path, r))}

    def write_summary(self, summary):
        summary = dict(tool=TOOL, **{k: v for k, v in summary.items() if k != 'tool'})
        summary['files'] = self.files()
        write_bytes(os.path.join(self.path, SUMMARY_NAME), json.dumps(summary, indent=2).encode('utf-8'))

    def finish(self, summary):
        """Write the final ``summary.json`` (listing every file the tool made here) and drop the journal."""
        self.write_summary(summary)
        self.close()
        try:
            os.remove(os.path.join(self.path, JOURNAL_NAME))
        except FileNotFoundError:
            pass

    def close(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None
