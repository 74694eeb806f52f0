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

Resuming: everything is written into ``OUT/.staging/``; a face becomes "done" when its LMDB transactions are committed
*and* its manifest line is written (in that order, per batch). A rerun after an interruption reopens the staging LMDBs,
skips the photos the staging manifest (or skip report) lists and rewrites the others (same keys: LMDB overwrites, never
duplicates); ``meta_info.txt`` files are written from the manifest at the end, then the LMDBs are moved into ``OUT/``.
A finished folder is never touched again unless ``--overwrite``. Ctrl-C prints one line saying that the same command
resumes (exit status 130). A run in which no photo gives a face writes ``OUT/skipped.tsv``, removes ``OUT/.staging``
and fails with one ``error:`` line: the folder is free for the next run (other photos or options, or ``--overwrite``).

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

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
STAGING = '.staging'
LMDB_NAMES = ('hr', 'parsing')
CROPS = ('align5', 'box', 'landmarks68', 'center')
RECIPE_NAMES = ('laat', 'aminet', 'tanet-ffhq', 'tanet-celeba', 'wnet-mode1', 'wnet-mode2')
SPLIT_RULES = ('list', 'dic-celeba', 'fsrnet-celeba', 'helen-test')
SPLIT_DEFAULTS = {'dic-celeba': (168854, 1000), 'fsrnet-celeba': (18000, 100), 'helen-test': (None, 50)}
MIN_PHOTO_SIDE = 12  # MTCNN's smallest network input; smaller photos cannot hold a usable face in any mode


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
def list_sources(inp, split=None, split_rule='list', subset='all', seed=0, train_count=None, test_count=None):
    """(root, [relative paths]) of the photos to prepare: a folder (recursive, sorted), a list file, or a folder
    filtered by a split file."""
    if osp.isdir(inp):
        root = inp
        if split:
            rel = select_split(read_split_file(split), split_rule, subset, seed, train_count, test_count)
        else:
            rel = sorted(
                osp.relpath(osp.join(d, f), root) for d, _, files in os.walk(root) for f in files
                if f.lower().endswith(IMG_EXTS) and not f.startswith('.'))
    elif osp.isfile(inp):
        root = osp.dirname(osp.abspath(inp))
        rel = select_split(read_split_file(inp), split_rule, subset, seed, train_count, test_count)
    else:
        raise FileNotFoundError(f'input {inp} is neither a folder of photos nor a list file')
    return root, rel


def make_keys(rel_paths):
    """Deterministic LMDB keys (ASCII, no dots) from relative paths; clashes get a numbered suffix."""
    keys, used = [], set()
    for rel in rel_paths:
        base = re.sub(r'[^A-Za-z0-9_-]+', '_', osp.splitext(rel)[0]).strip('_') or 'img'
        key, n = base, 1
        while key in used:
            key, n = f'{base}_{n}', n + 1
        used.add(key)
        keys.append(key)
    return keys


def parse_size(text):
    """'128' -> (128, 128); '216x176' -> (216, 176) as (h, w)."""
    m = re.fullmatch(r'\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*', str(text))
    if not m:
        raise argparse.ArgumentTypeError(f'--hr-size must be N or HxW, got {text!r}')
    h = int(m.group(1))
    return h, int(m.group(2) or h)


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
        self.keys = make_keys(rel_paths)
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
        return osp.isfile(osp.join(self.out, 'manifest.jsonl')) and not osp.isdir(self.stage)

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
    def _models(self):
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

    # --- run -----------------------------------------------------------------------------------------------------
    def run(self, _fault=None):
        from tqdm import tqdm

        from fsr_data.lmdb_io import LmdbWriter
        a = self.args
        final = [osp.join(self.out, f'{n}.lmdb') for n in self.lmdb_names] + [osp.join(self.out, 'manifest.jsonl')]
        if self._finished() and not osp.isfile(osp.join(self.stage, 'FINALIZING')):
            if not a.overwrite:
                print(f'{self.out} is complete (manifest.jsonl present); nothing to do (--overwrite to redo it).')
                return {'status': 'complete'}
        if a.overwrite:
            for p in final + [self.stage, osp.join(self.out, 'skipped.tsv')]:
                if osp.isdir(p):
                    shutil.rmtree(p)
                elif osp.isfile(p):
                    os.remove(p)
        else:
            clash = [p for p in final if osp.exists(p)]
            if clash and not osp.isdir(self.stage):
                raise FileExistsError(f'{clash[0]} exists but {self.out} was not made by an unfinished fsr-prepare '
                                      'run: choose another output folder or pass --overwrite.')
        os.makedirs(self.out, exist_ok=True)
        if osp.isfile(osp.join(self.stage, 'FINALIZING')):
            return self._finalize(_fault)
        done, entries = self._load_stage()
        todo = [(r, k) for r, k in zip(self.rel, self.keys) if r not in done]
        if todo:
            self._models()
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
            for n, (rel, key) in enumerate(todo):
                try:
                    res = self.process(rel, key)
                except Exception as e:  # a photo must never stop the job
                    res = ('error', f'{type(e).__name__}: {e}'.replace('\t', ' ').replace('\n', ' '))
                if isinstance(res, tuple):
                    pending_skips.append((rel, res[0], res[1]))
                    bar.set_postfix_str(f'skipped {rel}: {res[0]}')
                else:
                    for entry, images in res:
                        for name, im in images.items():
                            entry.setdefault('shapes', {})[name] = list(writers[name].put_image(entry['key'], im))
                        pending_entries.append(entry)
                bar.update(1)
                if _fault:
                    _fault('after_photo', n + 1)
                if len(pending_entries) + len(pending_skips) >= a.commit_every:
                    flush()
            flush()
            completed = True
        finally:
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
        from fsr_data.lmdb_io import write_meta_info
        for n in self.lmdb_names:
            src = osp.join(self.stage, f'{n}.lmdb')
            if osp.isdir(src):
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
        if not a.quiet:
            print(f'fsr-prepare: {len(ordered)} faces in {self.out} ({", ".join(self.lmdb_names)}.lmdb); '
                  f'{n_skipped} photos skipped (see {osp.join(self.out, "skipped.tsv")}).')
        return summary


# ---------------------------------------------------------------------------------------------------------------- CLI
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
        type=float,
        default=1.0,
        help='with --recipe: multiply the paper\'s counts (tests, '
        'dry runs on a subset)')
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
        '--min-box', type=int, default=0, help='--crop box: skip faces whose square box is smaller (LAAT: 128)')
    p.add_argument('--box-margin', type=float, default=0.0, help='--crop box: enlarge the square box by this fraction')
    p.add_argument(
        '--center-size',
        type=parse_size,
        help='--crop center: size HxW of the centre crop in source pixels '
        '(default: the largest region with the HR aspect ratio), then resized to --hr-size')
    p.add_argument('--hr-size', type=parse_size, default=(128, 128), help='HR size: N or HxW (e.g. 216x176)')
    p.add_argument('--scales', type=int, nargs='+', default=[4, 8], help='LR scales')
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
    p.add_argument('--min-face', type=int, default=20, help='smallest face (box side, px) the detector looks for')
    p.add_argument('--min-score', type=float, default=0.9, help='ignore detections with a lower confidence')
    p.add_argument(
        '--max-upscale',
        type=float,
        default=1.0,
        help='skip faces whose HR crop would need upscaling by more than this (too small faces)')
    p.add_argument('--template-zoom', type=float, default=1.0, help='>1 makes the face larger in the crop')
    p.add_argument('--split', help='split/list file selecting photos of the input folder (see --split-rule)')
    p.add_argument('--split-rule', choices=SPLIT_RULES, default='list', help='how the split file selects photos')
    p.add_argument('--subset', choices=['train', 'test', 'all'], default='all', help='part of the split to prepare')
    p.add_argument('--split-seed', type=int, default=0, help='seed of the random draws of fsrnet-celeba')
    p.add_argument('--train-count', type=int, help="override the rule's number of training faces")
    p.add_argument('--test-count', type=int, help="override the rule's number of test faces")
    p.add_argument('--limit', type=int, help='prepare only the first N photos (after the split)')
    p.add_argument('--commit-every', type=int, default=64, help='photos per LMDB transaction / manifest flush')
    p.add_argument('--compress-level', type=int, default=1, help='PNG compression level (BasicSR uses 1)')
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
    return args


def prepare(argv=None, _fault=None):
    """Run ``fsr-prepare`` with command-line arguments ``argv``; returns a summary dict."""
    args = parse_args(argv)  # first: --help and option errors need no heavy import
    from fsr_utils import compat
    compat.install_torchvision_shim()
    if args.parsing == 'bisenet':
        from fsr_data.parsing import resolve_bisenet_weights
        resolve_bisenet_weights(args.bisenet_weights)  # fail before any work
    if args.recipe:
        from fsr_data.recipes import run_recipe
        return run_recipe(args, _fault=_fault)
    root, rel = list_sources(args.input, args.split, args.split_rule, args.subset, args.split_seed, args.train_count,
                             args.test_count)
    if args.limit:
        rel = rel[:args.limit]
    if not rel:
        raise SystemExit(f'fsr-prepare: no photos selected from {args.input}')
    return PrepareJob(args, root, rel).run(_fault=_fault)


def main(argv=None, _fault=None):
    """Console script ``fsr-prepare``: exit status 0 on success, 1 with a one-line ``error:`` when no dataset can be
    made or an input, file or option is wrong (``FSR_DEBUG=1`` raises instead), 130 when interrupted (Ctrl-C: the
    finished photos are kept and the same command resumes)."""
    try:
        prepare(argv, _fault=_fault)
    except KeyboardInterrupt:
        out = getattr(build_parser().parse_known_args(argv)[0], 'output', None) or 'the output folder'
        print(
            f'\nfsr-prepare: interrupted. The photos finished so far are kept in {osp.join(out, STAGING)}: run the '
            'same command again to resume where it stopped.',
            file=sys.stderr)
        return 130
    except (PrepareError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        # bad input, a missing file or layout, a folder in use: one line naming it (FSR_DEBUG=1: the traceback)
        if os.environ.get('FSR_DEBUG', '0') not in ('', '0'):
            raise
        hint = '' if isinstance(e, PrepareError) else ' (FSR_DEBUG=1 shows the traceback)'
        print(f'fsr-prepare: error: {" ".join(str(e).split())}{hint}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
