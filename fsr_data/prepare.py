"""``fsr-prepare``: photos -> aligned HR faces, LR images and parsing maps in BasicSR-format LMDBs.

Output folder (what ``FSRFaceDataset`` reads)::

    OUT/hr.lmdb  OUT/lr_x4.lmdb  OUT/lr_x8.lmdb  OUT/parsing.lmdb   (data.mdb + meta_info.txt each; keys have no dots)
                         HR/LR images are stored as BMP bytes by default (--image-format png for BasicSR's PNG):
                         BasicSR's readers decode both; BMP decodes ~100x faster (loader speed), PNG is ~1.5x smaller
    OUT/manifest.jsonl   one line per face: key, source file, face index, box, 5 landmarks, detection score, the 2x3
                         transform source -> HR crop (``crop = warpAffine(source, transform)``), sizes, options
    OUT/skipped.tsv      source, reason (unreadable | no_face | too_small | error), detail: skipped, never a crash
                         (unreadable includes truncated JPEGs, which OpenCV would half-decode with a grey band;
                         too_small includes photos under 12 px or under --min-face, and boxes under --min-box)

Steps per photo: read -> detect faces and their 5 landmarks (MTCNN from facenet-pytorch's shipped weights, or facexlib's
RetinaFace with ``--detector-weights``) -> similarity-align to the CelebA-frame template (``fsr_data.face_align``) at
``--hr-size`` -> LR = MATLAB-style bicubic (``basicsr.utils.matlab_functions.imresize``, as BasicSR's scripts) or PIL
bicubic (``--lr-kernel pil-bicubic``) for every ``--scales`` -> parsing map (``--parsing landmarks``: offline dlib
polygons, approximate; ``bisenet``: facexlib BiSeNet with ``--bisenet-weights``; ``none``).

Crops (``--crop``, recorded per face in the manifest as ``crop``; ``transform`` is always source -> crop):

- ``align5`` (default; what ``fsr-infer`` uses): 5-point similarity alignment to the CelebA-frame template.
- ``box`` (LAAT: "MTCNN to crop the face region. After excluding images with a resolution smaller than 128x128, the
  image is resized to 128x128"): the detector's box made square about its centre (``--box-margin``, default 0: OPEN),
  faces whose square is under ``--min-box`` pixels skipped as too_small, then resized (area when shrinking).
- ``landmarks68`` (W-Net: "OpenFace to detect 68 facial keypoints and crop the images based on these keypoints"):
  dlib's 68 landmarks (the HOG detection nearest the face, as OpenFace's ``AlignDlib``), then OpenFace's affine
  transform of landmarks 39, 42, 57 onto its template (``fsr_data.face_align.openface_crop``).
- ``center`` (``--aligned``; AMINet: "We center-crop the aligned face images and resize them"; TANet): no detection;
  the largest centred region with the HR aspect ratio, or exactly ``--center-size`` source pixels, resized to
  ``--hr-size`` (no resampling when the sizes are equal).

``--recipe NAME`` prepares a paper's train/val/test folders from the dataset's root folder in one command (crop, size,
scales, split rule, counts, seed): see :mod:`fsr_data.recipes`.

Workers (``--workers N``; default: the CPU cores this process may use; BasicSR's data scripts call it ``n_thread``):
N processes compute the faces (read, detect, crop, LR, parsing, image encoding), each with its models loaded once (the
pool's initializer) and one torch and one OpenCV thread. The main process keeps all the rest (the lock, the staging
folder, the transactions, the manifest and the skip report) and writes each photo's faces in photo order, so the LMDBs,
``meta_info.txt``, ``manifest.jsonl`` and ``skipped.tsv`` are byte for byte those of ``--workers 1`` (no pool: the
main process computes, with one thread too, since MTCNN's landmarks change in their last bits with the thread count).
At most 4 N photos are in flight. The workers are forked from a server process (multiprocessing's ``forkserver``) that
imported torch, OpenCV, dlib, facenet-pytorch and basicsr once (:data:`PRELOAD`), so they share those pages and
inherit neither the lock nor the open LMDBs. A worker ignores Ctrl-C (the main process stops the pool and prints its
one line) and ends with the main process, even a SIGKILLed one; a worker that dies (e.g. killed by the kernel for
memory) stops the run with one ``error:`` line naming the photo, and the same command resumes. A script that calls
:func:`prepare` with N > 1 needs multiprocessing's ``if __name__ == '__main__':`` guard.
Memory (``python scripts/bench_prepare.py --photos 300 50 120 --repeat 2``: default options, the largest value while
preparing 300 CelebA-like 178x218, 50 FFHQ-like 1024x1024 or 120 mixed photos, models loaded): each worker 0.62-0.86
GB resident (RSS), about half of it shared with the server (its proportional share, PSS, 0.29-0.52 GB); the server
0.77 GB (shared with the workers); the main process 0.06 GB. A run with 2 workers: 1.05-1.52 GB in all (PSS), against
0.60-1.00 GB (RSS 0.94-1.34 GB) for ``--workers 1``; each further worker adds its PSS, 0.3-0.5 GB (more with BiSeNet
or RetinaFace, of which each worker holds its own copy, on the GPU too with ``--device cuda``).

Resuming: everything is written into ``OUT/.staging/``; a face becomes "done" when its LMDB transactions are committed
*and* its manifest line is written (in that order, per batch). A rerun after an interruption reopens the staging LMDBs,
skips the photos the staging manifest (or skip report) lists and rewrites the others (same keys: LMDB overwrites, never
duplicates); ``meta_info.txt`` files are written from the manifest at the end, LMDB entries that no manifest line owns
(an interrupted batch) are dropped, then the LMDBs are moved into ``OUT/``. Keys are unique per photo across the runs
of a resume: the staged photos keep their keys and a photo added meanwhile never gets one of them (``p00 .png`` next
to a staged ``p00.png`` gets ``p00_1``, it does not replace that face). Ctrl-C prints one line saying that the same
command resumes (exit status 130). A run in which no photo gives a face writes ``OUT/skipped.tsv``, removes
``OUT/.staging`` and fails with one ``error:`` line: the folder is free for the next run (other photos or options, or
``--overwrite``).

A rerun on a finished folder checks it against its manifest (files, sizes and keys; images are not decoded). An intact
folder is not touched (no lock, no write): "complete, nothing to do". A damaged one (an LMDB folder, ``data.mdb`` or
``meta_info.txt`` missing, a truncated ``data.mdb``, a face of the manifest missing from an LMDB) is repaired by the
same command: the intact LMDBs go back into ``.staging`` and only the photos whose faces are missing are redone (an
unreadable LMDB is rebuilt with all its faces). With other options than the manifest's it stops with one line saying
which command repairs it. An image whose bytes are corrupt is not detected this way: ``--overwrite`` rebuilds.

What fsr-prepare promises about files (``shared/DESIGN.md``, "Files a tool writes"; :mod:`fsr_utils.safety`):

- Every option is checked at parse time (one ``error:`` line naming the option and its valid range, exit status 2):
  ``--hr-size`` sides in [8, 4096]; ``--scales`` integers >= 2, each dividing both HR sides, none twice (LAAT and W-Net
  take 2, 4, 8, TANet powers of 2, AMINet any); ``--template-zoom`` in [0.25, 4]; ``--min-face`` >= 12;
  ``--min-score`` in [0, 1]; ``--max-upscale`` > 0; ``--min-box`` >= 0; ``--box-margin`` in [0, 4]; ``--center-size``
  sides >= 1; ``--split-seed`` in [0, 2**32 - 1]; ``--train-count``/``--test-count`` >= 0; ``--limit``,
  ``--commit-every`` >= 1; ``--compress-level`` in [0, 9]; ``--recipe-scale`` in (0, 1].
- The output path is checked before any work against every input (``INPUT``, ``--split``, the weight files): not a
  file, not below a file, not an input, not holding an input. An output folder inside the photo folder is allowed: the
  photo listing skips it, and every folder a tool of the plugin made (``manifest.jsonl``, ``.staging``,
  ``recipe.json``, ``degradation.json``), so an output is never read back as photos.
- One run per output folder (``OUT/.fsr.lock``, :class:`fsr_utils.safety.FolderLock`; ``--recipe``: the output root,
  and its pool run ``OUT/pool``): a second run names the holder's PID and exits 2. The lock dies with its process (a
  killed run never blocks the resume) and is never inside an LMDB folder.
- ``--overwrite`` deletes nothing before every input, option and weight file has been checked and the models loaded;
  it deletes only what an fsr-prepare run wrote (the LMDBs, including those of scales its manifest names, the manifest,
  the skip report, ``.staging``) and only in a folder fsr-prepare made (``manifest.jsonl``, ``.staging`` or its skip
  report mark it); other files in the folder stay. A folder holding files of those names that fsr-prepare did not make
  is refused, with or without ``--overwrite``.

Splits (``--split FILE --split-rule RULE --subset train|test``), from the user's own copies of the datasets. The papers
do not publish their image lists; the rules below are deterministic so that everyone gets the same faces:

- ``list``: FILE lists image names (relative to INPUT), optionally with a second column ``0/1/2`` or
  ``train/val/test`` (CelebA's ``list_eval_partition.txt`` format); ``--subset`` keeps train (0) or test (2) rows.
- ``dic-celeba`` (DIC, CVPR 2020: 168,854 train / 1,000 test CelebA faces): FILE lists the CelebA images to use, in
  order (e.g. the ``img_celeba`` names that survive detection, or DIC's own list if you have it); test = the LAST 1,000
  names, train = the 168,854 before them. Needs at least 169,854 names.
- ``fsrnet-celeba`` (FSRNet, CVPR 2018, and RAAN / W-Net Training Mode II: 18,000 train / 100 test): FILE is
  CelebA's ``list_eval_partition.txt``; train = 18,000 names drawn with ``--split-seed`` (default 0) from partition 0,
  test = 100 drawn from partition 2 (change with ``--train-count/--test-count``; AMINet's "18,000 ... for training and
  1,000 for testing" is ``--test-count 1000``, which ``--recipe aminet`` sets).
- ``helen-test`` (DIC's 50 Helen test faces): FILE is Helen's ``testnames.txt`` (330 names); test = its first 50 names;
  ``--subset train`` takes the rest of FILE (use ``list`` with ``trainnames.txt`` for Helen's 2,000 training photos).
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import sys

from fsr_utils.safety import FolderLock, UsageError, check_output_path, exit_with_main, float_range, int_range

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
STAGING = '.staging'
LMDB_NAMES = ('hr', 'parsing')
CROPS = ('align5', 'box', 'landmarks68', 'center')
RECIPE_NAMES = ('laat', 'aminet', 'tanet-ffhq', 'tanet-celeba', 'wnet-mode1', 'wnet-mode2')
SPLIT_RULES = ('list', 'dic-celeba', 'fsrnet-celeba', 'helen-test')
SPLIT_DEFAULTS = {'dic-celeba': (168854, 1000), 'fsrnet-celeba': (18000, 100), 'helen-test': (None, 50)}
MIN_PHOTO_SIDE = 12  # MTCNN's smallest network input; smaller photos cannot hold a usable face in any mode
HR_SIDE_RANGE = (8, 4096)  # --hr-size: each side (the papers use 128..256; 8 is the smallest with an x8 LR pixel)
TEMPLATE_ZOOM_RANGE = (0.25, 4.0)  # 0.25: the face a quarter of CelebA's framing; 4: the eyes span ~86% of the crop
MAX_BOX_MARGIN = 4.0  # --box-margin: the square up to 5x the detector's box
MAX_SEED = 2**32 - 1  # NumPy's RandomState takes seeds in [0, 2**32)


# ------------------------------------------------------------------------------------------------------------- splits
def read_split_file(path):
    """Rows (name, partition or None) of a split/list file; blank lines and '#' comments are ignored."""
    rows = []
    names = {'train': 0, 'val': 1, 'valid': 1, 'validation': 1, 'test': 2}
    with open(path) as f:
        for ln in f:
            ln = ln.split('#', 1)[0].strip()
            if not ln:
                continue
            parts = ln.split()
            part = None
            if len(parts) > 1:
                tag = parts[1].lower()
                part = names[tag] if tag in names else int(tag) if tag.lstrip('-').isdigit() else None
            rows.append((parts[0], part))
    return rows


def select_split(rows, rule='list', subset='all', seed=0, train_count=None, test_count=None):
    """Names of ``subset`` ('train', 'test' or 'all') from split-file ``rows`` by ``rule`` (module docstring)."""
    import numpy as np
    if rule not in SPLIT_RULES:
        raise ValueError(f'unknown --split-rule {rule!r}; choose from {SPLIT_RULES}')
    if subset not in ('train', 'test', 'all'):
        raise ValueError(f"--subset must be train, test or all, got {subset!r}")
    d_train, d_test = SPLIT_DEFAULTS.get(rule, (None, None))
    n_train = d_train if train_count is None else train_count
    n_test = d_test if test_count is None else test_count
    names = [r[0] for r in rows]
    if len(set(names)) != len(names):
        raise ValueError('the split file lists some names twice')
    if rule == 'list':
        if subset == 'all' or all(r[1] is None for r in rows):
            return names
        want = 0 if subset == 'train' else 2
        return [n for n, p in rows if p == want]
    if rule == 'dic-celeba':
        need = n_train + n_test
        if len(names) < need:
            raise ValueError(f'dic-celeba needs at least {need} names ({n_train} train + {n_test} test), the split '
                             f'file has {len(names)}')
        names = names[:need]
        train, test = names[:n_train], names[n_train:]
    elif rule == 'fsrnet-celeba':
        if any(p is None for _, p in rows):
            raise ValueError('fsrnet-celeba needs a partition column (CelebA list_eval_partition.txt: name 0|1|2)')
        rng = np.random.RandomState(seed)
        pool_train = [n for n, p in rows if p == 0]
        pool_test = [n for n, p in rows if p == 2]
        if len(pool_train) < n_train or len(pool_test) < n_test:
            raise ValueError(f'fsrnet-celeba needs {n_train} partition-0 and {n_test} partition-2 names, the file has '
                             f'{len(pool_train)} and {len(pool_test)}')
        train = [pool_train[i] for i in sorted(rng.choice(len(pool_train), n_train, replace=False))]
        test = [pool_test[i] for i in sorted(rng.choice(len(pool_test), n_test, replace=False))]
    else:  # helen-test
        if len(names) < n_test:
            raise ValueError(f'helen-test needs at least {n_test} names, the split file has {len(names)}')
        test, train = names[:n_test], names[n_test:]
    return {'train': train, 'test': test, 'all': train + test}[subset]


# -------------------------------------------------------------------------------------------------------------- input
MANIFEST = 'manifest.jsonl'
SKIP_HEADER = 'source\treason\tdetail'


def _first_line(path, limit=1 << 16):
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.readline(limit).rstrip('\n')
    except OSError:
        return None


def made_by_prepare(folder):
    """True when ``folder`` holds the marks of an ``fsr-prepare`` run: a ``manifest.jsonl`` whose first line is a face
    entry (key, source), a ``.staging`` folder, or a ``skipped.tsv`` with fsr-prepare's header."""
    if osp.isdir(osp.join(folder, STAGING)):
        return True
    line = _first_line(osp.join(folder, MANIFEST))
    if line:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and 'key' in entry and 'source' in entry:
            return True
    return _first_line(osp.join(folder, 'skipped.tsv')) == SKIP_HEADER


def made_by_tool(folder):
    """True when ``folder`` was written by a tool of the plugin: an ``fsr-prepare`` dataset folder
    (:func:`made_by_prepare`), an ``fsr-prepare --recipe`` root (``recipe.json``) or an ``fsr-degrade`` set
    (``degradation.json``). Such folders hold no photos: the photo listing skips them."""
    if made_by_prepare(folder):
        return True
    for name, field in (('recipe.json', 'recipe'), ('degradation.json', 'made_by')):
        path = osp.join(folder, name)
        if osp.isfile(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and field in data:
                return True
    return False


def skipped_folder(path, exclude=()):
    """True when the photo listing must not enter ``path``: it is (or lies in) one of ``exclude`` (the run's own
    output folder) or it was made by a tool of the plugin (:func:`made_by_tool`)."""
    from fsr_utils.safety import is_within
    return any(is_within(path, e) for e in exclude if e) or made_by_tool(path)


def list_sources(inp,
                 split=None,
                 split_rule='list',
                 subset='all',
                 seed=0,
                 train_count=None,
                 test_count=None,
                 exclude=()):
    """(root, [relative paths]) of the photos to prepare: a folder (recursive, sorted), a list file, or a folder
    filtered by a split file.

    The recursive listing skips the folders in ``exclude`` (the output folder, when it lies inside the input folder)
    and every folder a tool of the plugin made (:func:`made_by_tool`): an output is never read back as photos.
    """
    if osp.isdir(inp):
        root = inp
        if split:
            rel = select_split(read_split_file(split), split_rule, subset, seed, train_count, test_count)
        else:
            rel = []
            for d, dirs, files in os.walk(root):
                dirs[:] = [x for x in dirs if not skipped_folder(osp.join(d, x), exclude)]
                rel += [
                    osp.relpath(osp.join(d, f), root) for f in files
                    if f.lower().endswith(IMG_EXTS) and not f.startswith('.')
                ]
            rel.sort()
    elif osp.isfile(inp):
        root = osp.dirname(osp.abspath(inp))
        rel = select_split(read_split_file(inp), split_rule, subset, seed, train_count, test_count)
    else:
        raise FileNotFoundError(f'input {inp} is neither a folder of photos nor a list file')
    return root, rel


def make_keys(rel_paths, fixed=None):
    """Deterministic LMDB keys (ASCII, no dots) from relative paths; clashes get a numbered suffix.

    Args:
        rel_paths (list[str]): the photos, in order.
        fixed (dict | None): ``{relative path: key}`` already given (the faces staged by an interrupted run): those
            photos keep their keys and no other photo gets one of them, so a photo added before a resume (``p00 .png``
            next to a staged ``p00.png``) gets a key of its own instead of replacing a staged face.
    """
    fixed = dict(fixed or {})
    keys, used = [], set(fixed.values())
    for rel in rel_paths:
        if rel in fixed:
            keys.append(fixed[rel])
            continue
        base = re.sub(r'[^A-Za-z0-9_-]+', '_', osp.splitext(rel)[0]).strip('_') or 'img'
        key, n = base, 1
        while key in used:
            key, n = f'{base}_{n}', n + 1
        used.add(key)
        keys.append(key)
    return keys


def parse_size(text, option='--hr-size', minimum=1, maximum=None):
    """'128' -> (128, 128); '216x176' -> (216, 176) as (h, w); each side in [minimum, maximum]."""
    m = re.fullmatch(r'\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*', str(text))
    if not m:
        raise argparse.ArgumentTypeError(f'{option} must be N or HxW (positive integers), got {text!r}')
    h = int(m.group(1))
    hw = (h, int(m.group(2) or h))
    if min(hw) < minimum or (maximum is not None and max(hw) > maximum):
        span = f'[{minimum}, {maximum}]' if maximum is not None else f'>= {minimum}'
        raise argparse.ArgumentTypeError(f'{option} must be N or HxW with each side in {span}, got {text!r}')
    return hw


def size_type(option, minimum=1, maximum=None):
    """An argparse ``type`` for ``N`` or ``HxW`` sizes with each side in ``[minimum, maximum]``."""

    def parse(text):
        return parse_size(text, option, minimum, maximum)

    parse.__name__ = 'size'
    return parse


# ---------------------------------------------------------------------------------------------------------- LR making
def make_lr(hr_bgr, scale, kernel='matlab'):
    """LR uint8 BGR image of an HR uint8 BGR image: MATLAB-style bicubic (BasicSR) or PIL bicubic."""
    import numpy as np
    h, w = hr_bgr.shape[:2]
    if kernel == 'matlab':
        from basicsr.utils.matlab_functions import imresize
        lr = imresize(hr_bgr.astype(np.float32) / 255., 1 / scale)
        return np.clip(np.round(lr * 255), 0, 255).astype(np.uint8)
    if kernel == 'pil-bicubic':
        from PIL import Image
        img = Image.fromarray(np.ascontiguousarray(hr_bgr[..., ::-1]))
        return np.asarray(img.resize((w // scale, h // scale), Image.BICUBIC))[..., ::-1].copy()
    raise ValueError(f'unknown --lr-kernel {kernel!r}')


def _jpeg_is_complete(path):
    """False when a JPEG file has no end-of-image marker (FF D9) at its end and PIL reports it truncated.

    OpenCV decodes a truncated JPEG without an error (libjpeg only prints "Premature end of JPEG file" and fills the
    rest with grey), so the file's tail is checked: a complete JPEG ends with FF D9 (trailing zero padding allowed).
    Files with other data after the marker (some cameras append some) are confirmed by a full decode with PIL, which
    raises for a truncated scan.
    """
    with open(path, 'rb') as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read().rstrip(b'\x00')
    if tail.endswith(b'\xff\xd9'):
        return True
    from PIL import Image, ImageFile
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        return False
    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return False
    return True


def read_photo(path):
    """(BGR uint8 image, None), or (None, (reason, detail)) for a missing, undecodable or truncated file.

    Colour handling is OpenCV's ``IMREAD_COLOR``: gray is replicated, an alpha channel is dropped, CMYK (JPEG/TIFF) is
    converted to BGR, 16-bit images are scaled to 8 bits.
    """
    import cv2
    if not osp.isfile(path):
        return None, ('unreadable', 'missing file')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None, ('unreadable', 'OpenCV cannot decode it (corrupt, truncated or unsupported file)')
    if path.lower().endswith(('.jpg', '.jpeg')) and not _jpeg_is_complete(path):
        return None, ('unreadable', 'truncated JPEG: incomplete decode (no end-of-image marker), the rest would be '
                      'grey')
    return img, None


def center_crop_resize(img, hr_hw, region=None):
    """Centre-crop ``img`` and resize the crop to ``hr_hw``; returns (crop, 2x3 transform, scale).

    ``region`` (h, w): the size of the centre crop in source pixels (e.g. 216x176 out of CelebA's 218x178 aligned
    images: a crop with no resampling when ``hr_hw`` is the same); default: the largest centred region with the aspect
    ratio of ``hr_hw``. Returns (None, None, None) when the image is smaller than ``region``.
    """
    import cv2
    import numpy as np
    H, W = img.shape[:2]
    h, w = hr_hw
    if region is not None:
        ch, cw = region
        if ch > H or cw > W:
            return None, None, None
    elif H * w > W * h:  # too tall
        ch, cw = W * h / w, W
    else:
        ch, cw = H, H * w / h
    y0, x0 = (H - ch) / 2, (W - cw) / 2
    yi, xi = int(round(y0)), int(round(x0))
    crop = img[yi:yi + int(round(ch)), xi:xi + int(round(cw))]
    s, sx = h / crop.shape[0], w / crop.shape[1]  # the transform of the integer region actually cut
    M = np.array([[sx, 0, -xi * sx + 0.5 * sx - 0.5], [0, s, -yi * s + 0.5 * s - 0.5]], np.float64)
    if crop.shape[:2] == (h, w):
        return crop.copy(), M, 1.0
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(crop, (w, h), interpolation=interp), M, max(s, sx)


# ----------------------------------------------------------------------------------------------------------- the job
class PrepareError(RuntimeError):
    """A run that cannot produce a dataset (the message says why and what to do); ``fsr-prepare`` prints it as one
    ``error:`` line."""


class PrepareJob:
    """One ``fsr-prepare`` run (resumable). ``run()`` returns a summary dict."""

    OPTION_KEYS = ('hr_size', 'scales', 'lr_kernel', 'parsing', 'crop', 'aligned', 'detector', 'faces', 'max_upscale',
                   'min_score', 'compress_level', 'image_format', 'template_zoom', 'min_box', 'box_margin',
                   'center_size')

    def __init__(self, args, sources_root, rel_paths):
        self.args = args
        self.root = sources_root
        self.rel = rel_paths
        self.keys = None  # made in run(), after the staged keys are known (make_keys)
        self.out = args.output
        self.stage = osp.join(self.out, STAGING)
        self.hr_hw = tuple(args.hr_size)
        self.lmdb_names = ['hr'] + [f'lr_x{s}' for s in args.scales] + (['parsing'] if args.parsing != 'none' else [])
        for s in args.scales:
            if self.hr_hw[0] % s or self.hr_hw[1] % s:
                raise ValueError(f'--hr-size {self.hr_hw} is not divisible by scale {s}')
        self.detector = None
        self.parser = None
        self.landmarker = None
        self.announce = True  # print the summary line (--recipe prints its own: its pool folder goes away)

    def _fmt(self, lmdb_name):
        # label maps stay PNG: they compress 15x and decode fast (one channel, few runs)
        return 'png' if lmdb_name == 'parsing' else self.args.image_format

    # --- state ---------------------------------------------------------------------------------------------------
    def options(self):
        opts = {k: getattr(self.args, k) for k in self.OPTION_KEYS}
        opts['hr_size'] = list(self.hr_hw)
        opts['scales'] = list(self.args.scales)
        opts['center_size'] = None if opts['center_size'] is None else list(opts['center_size'])
        return opts

    def _finished(self):
        return osp.isfile(osp.join(self.out, MANIFEST)) and not osp.isdir(self.stage)

    @staticmethod
    def lmdb_names_of(options):
        """The LMDB names a run with ``options`` (a manifest's ``options``) writes."""
        return ['hr'] + [f'lr_x{s}' for s in options.get('scales', [])
                         ] + (['parsing'] if options.get('parsing', 'none') != 'none' else [])

    def _read_manifest(self):
        """Entries of ``OUT/manifest.jsonl``; :class:`PrepareError` when it cannot be read."""
        path = osp.join(self.out, MANIFEST)
        try:
            with open(path) as f:
                entries = [json.loads(ln) for ln in f if ln.strip()]
            if not all(isinstance(e, dict) and 'key' in e and 'source' in e for e in entries):
                raise ValueError('a line is not a face entry')
        except (OSError, ValueError) as e:
            raise PrepareError(f'{path} is damaged ({e}): the faces of {self.out} are unknown, so the folder cannot be '
                               'repaired; rerun with --overwrite to redo it.') from None
        return entries

    def check_finished(self):
        """Check a finished folder against its manifest (cheap: files, sizes and keys; images are not decoded).

        Returns:
            tuple: (problems: list of one-line descriptions, broken: LMDB names that cannot be read at all,
            missing: keys of manifest.jsonl absent from some LMDB, entries of manifest.jsonl).
        """
        from fsr_data.lmdb_io import lmdb_keys
        entries = self._read_manifest()
        opts = entries[0].get('options') if entries else None
        names = self.lmdb_names_of(opts) if isinstance(opts, dict) else self.lmdb_names
        want = {e['key'] for e in entries}
        problems, broken, missing = [], set(), set()
        for n in names:
            path = osp.join(self.out, f'{n}.lmdb')
            try:
                keys = lmdb_keys(path)
            except (OSError, ValueError) as e:
                problems.append(' '.join(str(e).split()))
                broken.add(n)
                continue
            lack = want - keys
            if lack:
                problems.append(f'{path} lacks {len(lack)} faces of {MANIFEST} (e.g. {sorted(lack)[0]})')
                missing |= lack
            meta = osp.join(path, 'meta_info.txt')
            listed = None
            if osp.isfile(meta):
                with open(meta) as f:
                    listed = sorted(ln.split('.', 1)[0] for ln in f if ln.strip())
            if listed != sorted(want):
                problems.append(f'{meta} is missing or does not list the faces of {MANIFEST}')
        return problems, broken, missing, entries

    def _reopen_damaged(self, problems, broken, missing, entries):
        """Turn a damaged finished folder back into an interrupted run: the intact LMDBs go back into ``.staging``
        (unreadable ones are removed), the staged manifest keeps the photos whose faces are all present, and the run
        then redoes only the others. Files are changed in an order that a new interruption cannot make inconsistent
        (the staged manifest is written last)."""
        old = entries[0].get('options') if entries else None
        if old is not None and old != json.loads(json.dumps(self.options())):
            raise PrepareError(f'{self.out} is damaged ({problems[0]}) and was made with other options ({old}): rerun '
                               'the command that made it (the options above) to repair it, or rerun with --overwrite '
                               'to redo it with these options.')
        names = self.lmdb_names_of(old) if isinstance(old, dict) else self.lmdb_names
        os.makedirs(self.stage, exist_ok=True)
        with open(osp.join(self.stage, 'options.json.tmp'), 'w') as f:
            json.dump(self.options(), f)
        os.replace(osp.join(self.stage, 'options.json.tmp'), osp.join(self.stage, 'options.json'))
        for n in names:
            src = osp.join(self.out, f'{n}.lmdb')
            if n in broken:
                if osp.islink(src) or osp.isfile(src):
                    os.remove(src)
                elif osp.isdir(src):
                    shutil.rmtree(src)
            elif osp.isdir(src):
                os.replace(src, osp.join(self.stage, f'{n}.lmdb'))
        lost = {e['source'] for e in entries if e['key'] in missing} if not broken else {e['source'] for e in entries}
        keep = [{k: v for k, v in e.items() if k != 'options'} for e in entries if e['source'] not in lost]
        skipped = osp.join(self.out, 'skipped.tsv')
        skips = open(skipped).read().split('\n')[1:] if osp.isfile(skipped) else []
        for name, lines in (('skipped.partial.tsv', [ln for ln in skips if ln]), ('manifest.partial.jsonl',
                                                                                  [json.dumps(e) for e in keep])):
            path = osp.join(self.stage, name)
            with open(path + '.tmp', 'w') as f:
                f.write(''.join(ln + '\n' for ln in lines))
            os.replace(path + '.tmp', path)
        if not self.args.quiet:
            more = f' and {len(problems) - 1} more problems' if len(problems) > 1 else ''
            print(f'fsr-prepare: {self.out} is damaged ({problems[0]}{more}): redoing the {len(lost)} photos whose '
                  'faces are missing.')

    def _clear_for_overwrite(self):
        """``--overwrite``: delete what an earlier fsr-prepare run wrote in OUT (its LMDBs, including those of other
        scales its manifest names, the manifest, the skip report, the staging folder), and nothing else. A folder
        without fsr-prepare's marks (:func:`made_by_prepare`) is refused; every model and weight file is loaded first,
        so that nothing is deleted by a run that cannot go on."""
        names = set(self.lmdb_names)
        line = _first_line(osp.join(self.out, MANIFEST))
        try:
            opts = json.loads(line).get('options') if line else None
        except (ValueError, AttributeError):
            opts = None
        if isinstance(opts, dict):
            names |= set(self.lmdb_names_of(opts))
        targets = [osp.join(self.out, f'{n}.lmdb') for n in sorted(names)]
        targets += [osp.join(self.out, n) for n in (MANIFEST, 'skipped.tsv', STAGING)]
        present = [t for t in targets if osp.lexists(t)]
        if not present:
            return
        if not made_by_prepare(self.out):
            raise UsageError(f'-o {self.out} holds {osp.basename(present[0])} but was not made by fsr-prepare (no '
                             f'{MANIFEST}, {STAGING} or skip report of fsr-prepare): --overwrite deletes only what '
                             'fsr-prepare made. Move those files away or choose another output folder.')
        self.load_models()
        for t in present:
            if osp.isdir(t) and not osp.islink(t):
                shutil.rmtree(t)
            else:
                os.remove(t)

    def _staged_keys(self, entries):
        """``{source: key}`` of the staged faces (the key of the photo, without ``--faces all``'s ``_f<i>``)."""
        fixed = {}
        for e in entries.values():
            key = e['key']
            suffix = f'_f{e.get("face_index", 0)}'
            if self.args.faces == 'all' and key.endswith(suffix):
                key = key[:-len(suffix)]
            fixed.setdefault(e['source'], key)
        return fixed

    def _load_stage(self):
        """Open/create the staging folder; return (done sources, manifest entries)."""
        os.makedirs(self.stage, exist_ok=True)
        opt_file = osp.join(self.stage, 'options.json')
        if osp.isfile(opt_file):
            with open(opt_file) as f:
                old = json.load(f)
            if old != self.options():
                raise RuntimeError(f'{self.stage} holds an interrupted run made with other options ({old}); rerun with '
                                   f'those options to finish it, or delete {self.stage} to start again.')
        else:
            with open(opt_file + '.tmp', 'w') as f:
                json.dump(self.options(), f)
            os.replace(opt_file + '.tmp', opt_file)
        entries, done = {}, set()
        for name in ('manifest.partial.jsonl', 'skipped.partial.tsv'):
            path = osp.join(self.stage, name)
            if not osp.isfile(path):
                continue
            with open(path) as f:
                lines = f.read().split('\n')
            # a line cut by the interruption has no newline after it: ignore it (that photo is redone)
            for ln in lines[:-1]:
                if name.endswith('jsonl'):
                    e = json.loads(ln)
                    entries[e['key']] = e
                    done.add(e['source'])
                else:
                    done.add(ln.split('\t', 1)[0])
            if lines[-1]:
                with open(path, 'w') as f:
                    f.write('\n'.join(lines[:-1]) + ('\n' if len(lines) > 1 else ''))
        return done, entries

    # --- models --------------------------------------------------------------------------------------------------
    def load_models(self):
        """Load the detector and parsing models (:meth:`_models`); a model that does not load (a damaged weights
        file, a missing package) is a :class:`PrepareError` naming the options involved."""
        try:
            self._models()
        except Exception as e:
            a = self.args
            raise PrepareError(
                f'cannot load the models of --detector {a.detector} / --crop {a.crop} / --parsing {a.parsing} '
                f'({type(e).__name__}: {e}); check --detector-weights, --bisenet-weights and that the packages '
                'are installed.') from e

    def _models(self):
        from fsr_utils import compat
        compat.install_torchvision_shim()  # (here: with --workers N > 1 the main process never imports torch)
        a = self.args
        if a.crop != 'center' and self.detector is None:
            from fsr_data.face_align import FaceDetector
            self.detector = FaceDetector(a.detector, weights=a.detector_weights, device=a.device, min_face=a.min_face)
        if self.parser is None and a.parsing != 'none':
            from fsr_data.parsing import BiSeNetParser, LandmarkParser
            self.parser = (LandmarkParser() if a.parsing == 'landmarks' else BiSeNetParser(a.bisenet_weights, a.device))
        if a.crop == 'landmarks68' and self.landmarker is None:
            from fsr_data.parsing import LandmarkParser
            self.landmarker = self.parser if isinstance(self.parser, LandmarkParser) else LandmarkParser()

    def _landmarks68(self, img, det):
        """dlib's 68 landmarks of a detected face, in photo coordinates: dlib's HOG detection nearest the face (the
        box OpenFace would use) in a region twice the detector's box, else the box implied by its 5 points."""
        import numpy as np
        x1, y1, x2, y2 = det['box']
        half = max(x2 - x1, y2 - y1)
        H, W = img.shape[:2]
        xa, ya = int(max(0, (x1 + x2) / 2 - half)), int(max(0, (y1 + y2) / 2 - half))
        xb, yb = int(min(W, (x1 + x2) / 2 + half)), int(min(H, (y1 + y2) / 2 + half))
        region = np.ascontiguousarray(img[ya:yb, xa:xb, ::-1])
        pts = self.landmarker.landmarks68(region, np.asarray(det['landmarks'], np.float64) - [xa, ya])
        return pts + [xa, ya]

    # --- one photo -----------------------------------------------------------------------------------------------
    def process(self, rel, key):
        """Faces of one photo: list of (entry, {lmdb name: image}) or a (reason, detail) skip tuple."""
        import numpy as np

        from fsr_data.face_align import (align_face, apply_affine, box_crop, openface_crop, template_5pts,
                                         transform_scale)
        a = self.args
        path = osp.join(self.root, rel)
        img, why = read_photo(path)
        if img is None:
            return why
        if min(img.shape[:2]) < MIN_PHOTO_SIDE:
            return ('too_small', f'{img.shape[1]}x{img.shape[0]} photo: too small (under {MIN_PHOTO_SIDE} px)')
        faces = []
        if a.crop == 'center':
            crop, M, s = center_crop_resize(img, self.hr_hw, a.center_size)
            if crop is None:
                return ('too_small', f'{img.shape[1]}x{img.shape[0]} is smaller than --center-size '
                        f'{a.center_size[0]}x{a.center_size[1]}')
            if s > a.max_upscale:
                return ('too_small', f'{img.shape[1]}x{img.shape[0]} needs upscaling x{s:.2f} > --max-upscale '
                        f'{a.max_upscale}')
            faces.append((crop, M, None, None, None))
        else:
            if min(img.shape[:2]) < a.min_face:
                return ('too_small', f'{img.shape[1]}x{img.shape[0]} photo: too small for a face of --min-face '
                        f'{a.min_face} px')
            rgb = np.ascontiguousarray(img[..., ::-1])
            dets = self.detector.detect(rgb)
            best = max([d['score'] for d in dets], default=None)
            dets = [d for d in dets if d['score'] >= a.min_score]
            if not dets:
                return ('no_face', f'no face of {a.min_face}+ px found'
                        if best is None else f'best detection score {best:.3f} < --min-score {a.min_score}')
            template = template_5pts(*self.hr_hw, zoom=a.template_zoom)
            small = []
            for det in (dets if a.faces == 'all' else dets[:1]):
                if a.crop == 'box':
                    crop, M, side = box_crop(img, det['box'], self.hr_hw, a.box_margin)
                    if side < a.min_box:
                        small.append(f'square box {side:.0f} px < --min-box {a.min_box}')
                        continue
                elif a.crop == 'landmarks68':
                    crop, M = openface_crop(img, self._landmarks68(img, det), self.hr_hw)
                else:
                    crop, M = align_face(img, det['landmarks'], self.hr_hw, template=template)
                up = transform_scale(M)  # > 1: the crop has more pixels than the face in the photo
                if up > a.max_upscale:
                    small.append(f'face needs upscaling x{up:.2f}')
                    continue
                faces.append((crop, M, det['box'], det['landmarks'], det['score']))
            if not faces:
                return ('too_small', '; '.join(s if 'box' in s else s + f' > --max-upscale {a.max_upscale}'
                                               for s in small))
        out = []
        for i, (crop, M, box, lm, score) in enumerate(faces):
            fkey = key if a.faces == 'largest' else f'{key}_f{i}'
            images = {'hr': crop}
            for s in a.scales:
                images[f'lr_x{s}'] = make_lr(crop, s, a.lr_kernel)
            if self.parser is not None:
                pts5 = apply_affine(M, lm) if lm is not None else None
                images['parsing'], _ = self.parser.parse(np.ascontiguousarray(crop[..., ::-1]), pts5)
            entry = dict(
                key=fkey,
                source=rel,
                face_index=i,
                crop=a.crop,
                box=None if box is None else [round(float(v), 2) for v in box],
                landmarks=None if lm is None else np.round(np.asarray(lm, float), 2).tolist(),
                score=None if score is None else round(float(score), 5),
                transform=np.round(M, 6).tolist(),
                hr_size=list(self.hr_hw),
                source_size=[img.shape[0], img.shape[1]])
            out.append((entry, images))
        return out

    def compute(self, rel, key):
        """What the main process writes for one photo (the work a worker does): a (reason, detail) skip tuple, or a
        list of (entry with its ``shapes``, {lmdb name: encoded image bytes}) per face. A photo never raises: an
        unexpected error is the skip reason ``error``."""
        from fsr_data.lmdb_io import encode_image, image_shape
        try:
            res = self.process(rel, key)
            if isinstance(res, tuple):
                return res
            faces = []
            for entry, images in res:
                bufs = {}
                for name, im in images.items():
                    bufs[name] = encode_image(im, self._fmt(name), self.args.compress_level)
                    entry.setdefault('shapes', {})[name] = list(image_shape(im))
                faces.append((entry, bufs))
            return faces
        except Exception as e:  # a photo must never stop the job
            return ('error', f'{type(e).__name__}: {e}'.replace('\t', ' ').replace('\n', ' '))

    def results(self, todo, workers=1):
        """(rel, key, :meth:`compute` result) of each photo of ``todo`` [(rel, key)], in the order of ``todo``.

        ``workers`` <= 1: computed in this process; otherwise by a pool of that many processes (module docstring,
        "Workers"), at most ``4 * workers`` photos ahead of the caller. Either way with one torch and one OpenCV
        thread per process (restored afterwards here), so that the results do not depend on ``workers``.
        """
        main_file = getattr(sys.modules.get('__main__'), '__file__', None)
        if main_file is not None and not osp.isfile(main_file):  # (``python - < script``: workers cannot start)
            workers = 1
        if workers <= 1:
            if not todo:
                return
            self.load_models()
            restore = _one_thread()
            try:
                for rel, key in todo:
                    yield rel, key, self.compute(rel, key)
            finally:
                restore()
            return
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool
        pool = ProcessPoolExecutor(
            workers, mp_context=_pool_context(), initializer=_worker_init, initargs=(self.args, self.root, os.getpid()))
        ahead, tasks, finished = deque(), iter(todo), False
        try:
            while True:
                while len(ahead) < 4 * workers:
                    task = next(tasks, None)
                    if task is None:
                        break
                    ahead.append((task, pool.submit(_worker_compute, *task)))
                if not ahead:
                    break
                (rel, key), future = ahead.popleft()
                try:
                    res = future.result()
                except BrokenProcessPool:
                    raise PrepareError(
                        f'a worker process died while preparing {osp.join(self.root, rel)} (killed from outside or out '
                        f'of memory: each worker holds its own models): the photos finished so far are kept in '
                        f'{self.stage}; run the same command again to resume, with fewer --workers if memory is '
                        'short.') from None
                yield rel, key, res
            finished = True
        finally:
            _stop_pool(pool, finished)

    # --- run -----------------------------------------------------------------------------------------------------
    def _complete(self, entries=None):
        """The answer of a rerun on an intact finished folder (the folder is not touched)."""
        line = _first_line(osp.join(self.out, MANIFEST)) if entries is None else None
        try:
            old = entries[0].get('options') if entries else (json.loads(line).get('options') if line else None)
        except (ValueError, AttributeError):
            old = None
        other = '' if old in (None, json.loads(json.dumps(
            self.options()))) else (f' It was made with other options ({old}): --overwrite redoes it with these.')
        if self.announce:
            print(f'{self.out} is complete ({MANIFEST} present); nothing to do (--overwrite to redo it).{other}')
        return {'status': 'complete'}

    def run(self, _fault=None):
        """Run (or resume, or repair) the job under a lock on the output folder; returns a summary dict.

        A rerun on a finished folder checks it (:meth:`check_finished`): intact, it is not touched (no lock, no write);
        damaged (a missing or truncated LMDB, a face of the manifest missing from an LMDB, a missing meta_info.txt),
        the faces it lacks are redone (:meth:`_reopen_damaged`).
        """
        if not self.args.overwrite and self._finished():
            problems = self.check_finished()[0]
            if not problems:
                return self._complete()
        with FolderLock(self.out, 'fsr-prepare', '-o'):
            return self._run_locked(_fault)

    def _run_locked(self, _fault=None):
        from tqdm import tqdm

        from fsr_data.lmdb_io import LmdbWriter
        a = self.args
        final = [osp.join(self.out, f'{n}.lmdb') for n in self.lmdb_names] + [osp.join(self.out, MANIFEST)]
        if a.overwrite:
            self._clear_for_overwrite()
        elif self._finished():  # (again under the lock: another run may have finished or repaired it meanwhile)
            problems, broken, missing, entries = self.check_finished()
            if not problems:
                return self._complete(entries)
            self._reopen_damaged(problems, broken, missing, entries)
        else:
            clash = [p for p in final if osp.exists(p)]
            report = osp.join(self.out, 'skipped.tsv')
            if osp.exists(report) and _first_line(report) != SKIP_HEADER:
                clash.append(report)
            if clash and not osp.isdir(self.stage):
                if made_by_prepare(self.out):
                    raise FileExistsError(f'{clash[0]} exists but {self.out} was not made by an unfinished fsr-prepare '
                                          'run: choose another output folder or pass --overwrite.')
                raise FileExistsError(f'{clash[0]} exists and {self.out} was not made by fsr-prepare, so --overwrite '
                                      'would not replace it either: choose another output folder or move it away.')
        if osp.isfile(osp.join(self.stage, 'FINALIZING')):
            return self._finalize(_fault)
        done, entries = self._load_stage()
        self.keys = make_keys(self.rel, self._staged_keys(entries))
        owner = {k: e['source'] for k, e in entries.items()}  # key -> photo: one photo per key, across resumes
        todo = [(r, k) for r, k in zip(self.rel, self.keys) if r not in done]
        results = self.results(todo, min(a.workers, len(todo)))  # (a generator: nothing starts before the loop)
        writers = {
            n: LmdbWriter(osp.join(self.stage, f'{n}.lmdb'), compress_level=a.compress_level, fmt=self._fmt(n))
            for n in self.lmdb_names
        }
        man = open(osp.join(self.stage, 'manifest.partial.jsonl'), 'a')
        rep = open(osp.join(self.stage, 'skipped.partial.tsv'), 'a')
        pending_entries, pending_skips, batches = [], [], 0
        bar = tqdm(
            total=len(self.rel), initial=len(self.rel) - len(todo), unit='photo', desc='fsr-prepare', disable=a.quiet)

        def flush():
            nonlocal batches
            for w in writers.values():
                w.commit()
            batches += 1
            if _fault:
                _fault('after_commit', batches)
            for e in pending_entries:
                man.write(json.dumps(e) + '\n')
            for s in pending_skips:
                rep.write('\t'.join(s) + '\n')
            for f in (man, rep):
                f.flush()
                os.fsync(f.fileno())
            for e in pending_entries:
                entries[e['key']] = e
            pending_entries.clear()
            pending_skips.clear()

        completed = False
        try:
            for n, (rel, key, res) in enumerate(results):
                if isinstance(res, tuple):
                    pending_skips.append((rel, res[0], res[1]))
                    bar.set_postfix_str(f'skipped {rel}: {res[0]}')
                else:
                    for entry, bufs in res:
                        if owner.setdefault(entry['key'], rel) != rel:
                            raise PrepareError(
                                f'{osp.join(self.root, rel)} and {osp.join(self.root, owner[entry["key"]])} '
                                f'both give the face key {entry["key"]}: rename one of the photos.')
                        for name, buf in bufs.items():
                            writers[name].put_bytes(entry['key'], buf)
                        pending_entries.append(entry)
                bar.update(1)
                if _fault:
                    _fault('after_photo', n + 1)
                if len(pending_entries) + len(pending_skips) >= a.commit_every:
                    flush()
            flush()
            completed = True
        finally:
            results.close()  # stops the worker pool (at once when interrupted)
            bar.close()
            man.close()
            rep.close()
            for w in writers.values():
                w.close(commit=completed)
        if not entries:
            self._fail_empty()
        with open(osp.join(self.stage, 'FINALIZING'), 'w') as f:
            f.write('all photos processed; moving the LMDBs into place\n')
        return self._finalize(_fault)

    def _fail_empty(self):
        """No photo gave a face: publish the skip report, remove the staging folder (so that the next run, with other
        photos, other options or ``--overwrite``, starts clean) and raise :class:`PrepareError` naming the way out."""
        skipped = osp.join(self.stage, 'skipped.partial.tsv')
        lines = [ln for ln in open(skipped).read().split('\n') if ln] if osp.isfile(skipped) else []
        report = osp.join(self.out, 'skipped.tsv')
        with open(report + '.tmp', 'w') as f:
            f.write('source\treason\tdetail\n' + ''.join(ln + '\n' for ln in lines))
        os.replace(report + '.tmp', report)
        shutil.rmtree(self.stage)
        reasons = {}
        for ln in lines:
            r = (ln.split('\t') + [''])[1]
            reasons[r] = reasons.get(r, 0) + 1
        counts = ', '.join(f'{n} {r}' for r, n in sorted(reasons.items())) or 'no photo'
        raise PrepareError(
            f'no face was prepared from {len(lines)} photos ({counts}); the reasons are in {report}. Nothing else was '
            f'written and {self.out} is free again: rerun with other photos or options (e.g. a lower --min-score or '
            '--min-face, a higher --max-upscale, or --crop center for photos that are already face crops).')

    def _finalize(self, _fault=None):
        a = self.args
        _, entries = self._load_stage()
        ordered = sorted(entries.values(), key=lambda e: e['key'])
        if not ordered:  # (a folder left by an older version in this state is cleaned up the same way)
            self._fail_empty()
        from fsr_data.lmdb_io import prune_lmdb, write_meta_info
        keep = {e['key'] for e in ordered}
        for n in self.lmdb_names:
            src = osp.join(self.stage, f'{n}.lmdb')
            if osp.isdir(src):
                prune_lmdb(src, keep)  # entries of an interrupted batch whose photo got another key on the resume
                write_meta_info(src, [(e['key'], e['shapes'][n]) for e in ordered], a.compress_level, self._fmt(n))
        for n in self.lmdb_names:
            src, dst = osp.join(self.stage, f'{n}.lmdb'), osp.join(self.out, f'{n}.lmdb')
            if osp.isdir(src):
                if osp.isdir(dst):
                    shutil.rmtree(dst)
                os.replace(src, dst)
                if _fault:
                    _fault('after_move', n)
        skipped = osp.join(self.stage, 'skipped.partial.tsv')
        n_skipped = 0
        with open(osp.join(self.out, 'skipped.tsv.tmp'), 'w') as f:
            f.write('source\treason\tdetail\n')
            if osp.isfile(skipped):
                lines = [ln for ln in open(skipped).read().split('\n') if ln]
                n_skipped = len(lines)
                f.write(''.join(ln + '\n' for ln in lines))
        os.replace(osp.join(self.out, 'skipped.tsv.tmp'), osp.join(self.out, 'skipped.tsv'))
        with open(osp.join(self.out, 'manifest.jsonl.tmp'), 'w') as f:
            for e in ordered:
                f.write(json.dumps(dict(e, options=self.options())) + '\n')
        os.replace(osp.join(self.out, 'manifest.jsonl.tmp'), osp.join(self.out, 'manifest.jsonl'))
        shutil.rmtree(self.stage)
        summary = {'status': 'done', 'faces': len(ordered), 'skipped': n_skipped, 'output': self.out}
        if not a.quiet and self.announce:
            print(f'fsr-prepare: {len(ordered)} faces in {self.out} ({", ".join(self.lmdb_names)}.lmdb); '
                  f'{n_skipped} photos skipped (see {osp.join(self.out, "skipped.tsv")}).')
        return summary


# ------------------------------------------------------------------------------------------------------------ workers
_WORKER = {}  # in a worker process: its PrepareJob ('job'), or why its models did not load ('error')
# imported once by the pool's server process, before it forks the workers: ``fsr_arch`` installs the torchvision shim
# that basicsr 1.4.2 needs, so that basicsr (MATLAB-style imresize) can follow it
PRELOAD = ('numpy', 'cv2', 'lmdb', 'torch', 'torchvision', 'fsr_arch', 'basicsr.utils.matlab_functions', 'dlib',
           'facenet_pytorch', 'fsr_data.face_align', 'fsr_data.parsing', 'fsr_data.lmdb_io')


def default_workers():
    """The number of CPU cores this process may use (``--workers``' default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _one_thread():
    """Set torch's and OpenCV's thread counts to 1; returns a function that restores them.

    MTCNN's landmarks differ in their last float32 bits between 1 and 2 torch threads (measured), which can move an
    aligned pixel: every process that computes faces (the one of ``--workers 1`` included) uses one thread, so the
    datasets do not depend on ``--workers``."""
    import cv2
    import torch
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    def restore():
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)

    return restore


def _pool_context():
    """The multiprocessing context of the worker pool: ``forkserver`` where it exists (the workers are forked from a
    clean server process that imported :data:`PRELOAD` once: they share those pages, start in a fraction of a second,
    and inherit neither the output folder's lock, nor open LMDBs, nor the caller's threads), else ``spawn``."""
    import multiprocessing as mp
    if 'forkserver' in mp.get_all_start_methods():
        ctx = mp.get_context('forkserver')
        ctx.set_forkserver_preload(list(PRELOAD))  # (only read when this process starts its server)
        return ctx
    return mp.get_context('spawn')


def _worker_init(args, root, main_pid):
    """Pool initializer: Ctrl-C is the main process's business, the worker ends with the main process, one thread,
    the models loaded once per worker."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_main(main_pid)
    try:
        from fsr_utils import compat
        compat.install_torchvision_shim()
        _one_thread()
        job = PrepareJob(args, root, [])
        job.load_models()
        _WORKER['job'] = job
    except Exception as e:  # reported by the first photo, as one line in the main process
        _WORKER['error'] = str(e) if isinstance(e, PrepareError) else f'{type(e).__name__}: {e}'


def _worker_compute(rel, key):
    """One photo in a worker: :meth:`PrepareJob.compute`."""
    if 'error' in _WORKER:
        raise PrepareError(f'a worker process: {_WORKER["error"]}')
    return _WORKER['job'].compute(rel, key)


def _stop_pool(pool, finished):
    """Shut the pool down: after the last photo, wait for the workers to exit; when interrupted (Ctrl-C, an error in
    the main process), drop the photos not started and end the workers at once."""
    if finished:
        pool.shutdown(wait=True)
        return
    procs = list((getattr(pool, '_processes', None) or {}).values())  # (shutdown forgets them)
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:  # a worker writes no file: ending it in the middle of a photo loses nothing
        try:
            proc.terminate()
        except (OSError, AttributeError, ValueError):
            pass
    for proc in procs:
        proc.join(10)


# ---------------------------------------------------------------------------------------------------------------- CLI
def check_scales(parser, hr_size, scales):
    """``parser.error`` unless every scale divides both sides of ``hr_size`` and none is given twice."""
    h, w = hr_size
    for s in scales:
        if h % s or w % s:
            parser.error(f'argument --scales: {s} does not divide --hr-size {h}x{w}: each scale must divide both sides '
                         '(e.g. --hr-size 128 with --scales 4 8)')
    if len(set(scales)) != len(scales):
        parser.error(f'argument --scales: {" ".join(map(str, scales))} names a scale twice')


def build_parser():
    p = argparse.ArgumentParser(
        prog='fsr-prepare',
        description='Detect, align and crop faces; make LR images and parsing maps; write BasicSR LMDBs. Resumable.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('input', help='folder of photos (recursive), or a list file of image paths (relative to its folder)')
    p.add_argument('-o', '--output', required=True, help='dataset folder to write (e.g. datasets/CelebA/train)')
    p.add_argument(
        '--recipe',
        choices=RECIPE_NAMES,
        help='a paper\'s data protocol (crop, size, scales, split, counts, '
        'seed; see fsr_data/recipes.py): INPUT is the dataset\'s root folder, OUTPUT gets train/ [val/] test/')
    p.add_argument(
        '--dataset',
        choices=['celeba', 'helen', 'ffhq'],
        help='with --recipe: which dataset INPUT is '
        '(default: the recipe\'s training set)')
    p.add_argument(
        '--recipe-scale',
        type=float_range(0, 1, min_open=True),
        default=1.0,
        help='with --recipe: multiply the paper\'s counts, in (0, 1] (tests, dry runs on a subset)')
    p.add_argument(
        '--keep-pool', action='store_true', help='with --recipe: keep OUTPUT/pool (all faces before the split)')
    p.add_argument(
        '--crop',
        choices=CROPS,
        default='align5',
        help='align5: 5-point similarity alignment (default; what fsr-infer uses); box: the detector box made square '
        '(LAAT; see --min-box); landmarks68: OpenFace crop from dlib\'s 68 landmarks (W-Net); center: centre crop of '
        'already aligned images, no detection (AMINet, TANet)')
    p.add_argument('--aligned', action='store_true', help='same as --crop center (inputs are aligned face crops)')
    p.add_argument(
        '--min-box',
        type=int_range(0),
        default=0,
        help='--crop box: skip faces whose square box is smaller, in pixels >= 0 (LAAT: 128)')
    p.add_argument(
        '--box-margin',
        type=float_range(0, MAX_BOX_MARGIN),
        default=0.0,
        help=f'--crop box: enlarge the square box by this fraction, in [0, {MAX_BOX_MARGIN}]')
    p.add_argument(
        '--center-size',
        type=size_type('--center-size', 1),
        help='--crop center: size HxW of the centre crop in source pixels '
        '(default: the largest region with the HR aspect ratio), then resized to --hr-size')
    p.add_argument(
        '--hr-size',
        type=size_type('--hr-size', *HR_SIDE_RANGE),
        default=(128, 128),
        help=f'HR size: N or HxW (e.g. 216x176), each side in [{HR_SIDE_RANGE[0]}, {HR_SIDE_RANGE[1]}]')
    p.add_argument(
        '--scales',
        type=int_range(2),
        nargs='+',
        default=[4, 8],
        help='LR scales: integers >= 2 that divide both sides of --hr-size (the networks: LAAT and W-Net 2, 4, 8; '
        'TANet powers of 2; AMINet any)')
    p.add_argument(
        '--lr-kernel',
        choices=['matlab', 'pil-bicubic'],
        default='matlab',
        help="LR downsampling: BasicSR's MATLAB-style bicubic imresize, or PIL bicubic")
    p.add_argument(
        '--parsing',
        choices=['landmarks', 'bisenet', 'none'],
        default='landmarks',
        help='parsing maps: dlib 68-landmark polygons (offline, approximate), facexlib BiSeNet, or none')
    p.add_argument('--bisenet-weights', help='parsing_bisenet.pth or its folder (for --parsing bisenet)')
    p.add_argument('--detector', choices=['mtcnn', 'retinaface'], default='mtcnn', help='face detector')
    p.add_argument('--detector-weights', help='RetinaFace weights file (detection_Resnet50_Final.pth)')
    p.add_argument('--device', default='cpu', help='torch device for the detector and BiSeNet')
    p.add_argument('--faces', choices=['largest', 'all'], default='largest', help='faces kept per photo')
    p.add_argument(
        '--min-face',
        type=int_range(MIN_PHOTO_SIDE),
        default=20,
        help=f'smallest face (box side, px) the detector looks for: >= {MIN_PHOTO_SIDE} (MTCNN\'s smallest window)')
    p.add_argument(
        '--min-score', type=float_range(0, 1), default=0.9, help='ignore detections with a lower confidence, in [0, 1]')
    p.add_argument(
        '--max-upscale',
        type=float_range(0, min_open=True),
        default=1.0,
        help='skip faces whose HR crop would need upscaling by more than this (too small faces); > 0')
    p.add_argument(
        '--template-zoom',
        type=float_range(*TEMPLATE_ZOOM_RANGE),
        default=1.0,
        help=f'>1 makes the face larger in the crop, <1 smaller; in [{TEMPLATE_ZOOM_RANGE[0]}, '
        f'{TEMPLATE_ZOOM_RANGE[1]}]')
    p.add_argument('--split', help='split/list file selecting photos of the input folder (see --split-rule)')
    p.add_argument('--split-rule', choices=SPLIT_RULES, default='list', help='how the split file selects photos')
    p.add_argument('--subset', choices=['train', 'test', 'all'], default='all', help='part of the split to prepare')
    p.add_argument(
        '--split-seed',
        type=int_range(0, MAX_SEED),
        default=0,
        help=f'seed of the random draws, in [0, {MAX_SEED}]: --split-rule fsrnet-celeba, and the recipes that draw: '
        'aminet (celeba), tanet-ffhq, tanet-celeba, wnet-mode2 (celeba) and laat --dataset helen (recorded in '
        'OUTPUT/recipe.json); the other rules and recipes take photos in name or list order and ignore it')
    p.add_argument('--train-count', type=int_range(0), help="override the rule's number of training faces (>= 0)")
    p.add_argument('--test-count', type=int_range(0), help="override the rule's number of test faces (>= 0)")
    p.add_argument('--limit', type=int_range(1), help='prepare only the first N photos (after the split), N >= 1')
    p.add_argument(
        '--workers',
        type=int_range(1),
        default=default_workers(),
        help='processes that compute the faces (detection, crop, LR, parsing, encoding; the models loaded once in '
        'each, one thread each), >= 1; the main process writes the LMDBs in photo order, so the output is the same '
        'for every N; 1: no pool (default: the CPU cores this process may use)')
    p.add_argument(
        '--commit-every', type=int_range(1), default=64, help='photos per LMDB transaction / manifest flush (>= 1)')
    p.add_argument(
        '--compress-level', type=int_range(0, 9), default=1, help='PNG compression level in [0, 9] (BasicSR uses 1)')
    p.add_argument(
        '--image-format',
        choices=['bmp', 'png'],
        default='bmp',
        help='encoding of the HR/LR images in the LMDBs (parsing maps are always PNG): bmp decodes ~100x faster than '
        "png (the loader reaches 800+ samples/s per worker) at ~1.5x the size; both are read by BasicSR's imfrombytes")
    p.add_argument('--overwrite', action='store_true', help='redo a finished output folder')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def parse_args(argv=None):
    """Parse ``fsr-prepare`` arguments; ``--recipe`` supplies defaults that explicit options override."""
    p = build_parser()
    pre, _ = p.parse_known_args(argv)
    if pre.recipe:
        from fsr_data.recipes import recipe_defaults
        p.set_defaults(**recipe_defaults(pre.recipe, pre.dataset))
    args = p.parse_args(argv)
    if args.aligned:
        args.crop = 'center'
    args.aligned = args.crop == 'center'
    if args.recipe and (args.split or args.limit):
        p.error('--split/--limit cannot be combined with --recipe (the recipe selects the photos; --recipe-scale '
                'shrinks its counts)')
    check_scales(p, args.hr_size, args.scales)
    return args


def prepare(argv=None, _fault=None):
    """Run ``fsr-prepare`` with command-line arguments ``argv``; returns a summary dict.

    Order (the promises of the module docstring): options (parse time), weight files, the output path against every
    input, the photo list, then the lock on the output folder, and only then any write or delete.
    """
    args = parse_args(argv)  # first: --help and option errors need no heavy import
    if args.parsing == 'bisenet':
        from fsr_data.parsing import resolve_bisenet_weights
        resolve_bisenet_weights(args.bisenet_weights)  # fail before any work
    if args.crop != 'center' and args.detector == 'retinaface':
        from fsr_data.face_align import check_detector_weights
        check_detector_weights(args.detector_weights, '--detector-weights')
    inputs = [(args.input, 'INPUT'), (args.split, '--split'), (args.bisenet_weights, '--bisenet-weights'),
              (args.detector_weights, '--detector-weights')]
    # an output inside the photo folder is allowed: the listing skips it (and every folder a tool of the plugin made)
    check_output_path(args.output, '-o', inputs, allow_inside_inputs=True)
    if args.recipe:
        from fsr_data.recipes import run_recipe
        return run_recipe(args, _fault=_fault)
    root, rel = list_sources(
        args.input,
        args.split,
        args.split_rule,
        args.subset,
        args.split_seed,
        args.train_count,
        args.test_count,
        exclude=[args.output])
    if args.limit:
        rel = rel[:args.limit]
    if not rel:
        raise SystemExit(f'fsr-prepare: no photos selected from {args.input}')
    return PrepareJob(args, root, rel).run(_fault=_fault)


def main(argv=None, _fault=None):
    """Console script ``fsr-prepare``: exit status 0 on success; 2 with a one-line ``error:`` when an option or path is
    wrong or the output folder is in use (found before any work); 1 with a one-line ``error:`` when no dataset can be
    made or an input or file is wrong (``FSR_DEBUG=1`` raises instead); 130 when interrupted (Ctrl-C: the finished
    photos are kept and the same command resumes)."""
    try:
        prepare(argv, _fault=_fault)
    except KeyboardInterrupt:
        out = getattr(build_parser().parse_known_args(argv)[0], 'output', None) or 'the output folder'
        print(
            f'\nfsr-prepare: interrupted. The photos finished so far are kept in {osp.join(out, STAGING)}: run the '
            'same command again to resume where it stopped.',
            file=sys.stderr)
        return 130
    except UsageError as e:
        if os.environ.get('FSR_DEBUG', '0') not in ('', '0'):
            raise
        print(f'fsr-prepare: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except (PrepareError, OSError, ValueError, RuntimeError) as e:
        # bad input, a missing file or layout, a folder in use: one line naming it (FSR_DEBUG=1: the traceback)
        if os.environ.get('FSR_DEBUG', '0') not in ('', '0'):
            raise
        hint = '' if isinstance(e, PrepareError) else ' (FSR_DEBUG=1 shows the traceback)'
        print(f'fsr-prepare: error: {" ".join(str(e).split())}{hint}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
