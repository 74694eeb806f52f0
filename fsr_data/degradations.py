"""Synthetic real-world degradations of HR faces (the LR face made on the fly) and fixed degraded test sets.

All four papers train on bicubic-downsampled faces. Real small faces are blurred, noisy and JPEG-compressed; GFPGAN
and Real-ESRGAN train on synthetic degradations of that kind. :func:`degrade` makes the LR face from the HR face with
BasicSR's own functions (``basicsr.data.degradations``), in the order of the classical (first-order) degradation model
of Real-ESRGAN (Wang et al., ICCV-W 2021, Sec. 3.1, eq. 1):

    LR = JPEG_q( down_r(HR (*) k) + n )

1. **Blur** (probability ``blur_prob``), at HR size: a kernel from ``random_mixed_kernels`` (isotropic/anisotropic
   Gaussian, isotropic/anisotropic generalized Gaussian, isotropic/anisotropic plateau, drawn with ``kernel_prob``;
   sigma in ``blur_sigma``, rotation in [-pi, pi], shape parameters in ``betag_range``/``betap_range``), or with
   probability ``sinc_prob`` a 2-D sinc (``circular_lowpass_kernel``, cut-off in [pi/3, pi] for kernels smaller than
   13, [pi/5, pi] otherwise: Real-ESRGAN's rule); the kernel size is an odd number drawn evenly in ``kernel_size``.
   Applied with ``cv2.filter2D`` (reflect-101 borders, as Real-ESRGAN's reflect padding).
2. **Down-sampling** to exactly ``1/scale`` of the HR size (the networks' fixed scale) with an interpolation drawn from
   ``resize_modes`` (``area``, ``bilinear``, ``bicubic``: OpenCV's INTER_AREA/LINEAR/CUBIC) with ``resize_prob``.
3. **Noise** (probability ``noise_prob``), at LR size: Gaussian (``random_add_gaussian_noise``, sigma in
   ``noise_range`` on the 0-255 scale) with probability ``gaussian_noise_prob``, else Poisson
   (``random_add_poisson_noise``, scale in ``poisson_scale_range``); gray (same on all channels) noise with
   probability ``gray_noise_prob``.
4. **JPEG** (probability ``jpeg_prob``): BasicSR's OpenCV JPEG (``add_jpg_compression``, written out in :func:`jpeg`
   with an explicit 8-bit rounding) at an integer quality drawn in ``jpeg_range``. (BasicSR's
   ``random_add_jpg_compression`` passes a float quality, which OpenCV >= 5 refuses, so the quality is drawn here;
   ``DiffJPEG`` is the GPU/differentiable route of Real-ESRGAN's model and not needed on the data side.)
5. The LR face is rounded to 8 bits (as Real-ESRGAN rounds its LR batch).

**Defaults** (:data:`DEFAULTS`) are Real-ESRGAN's *first* degradation stage (``options/train_realesrnet_x4plus.yml`` of
Real-ESRGAN: kernel list/probabilities, ``blur_sigma`` [0.2, 3], ``betag_range`` [0.5, 4], ``betap_range`` [1, 2],
``sinc_prob`` 0.1, kernel sizes 7..21, Gaussian noise probability 0.5 with sigma [1, 30], Poisson scale [0.05, 3], gray
noise 0.4, JPEG quality [30, 95], resize modes area/bilinear/bicubic evenly). DEVIATIONS from that recipe, both for a
network with a fixed scale: (a) Real-ESRGAN's first stage resizes by a random factor in [0.15, 1.5] and reaches the LR
size only in its second stage; here the single stage goes straight to the LR size (no second stage: a first-order
model, as GFPGAN's face recipe); (b) the blur and noise probabilities are options (Real-ESRGAN's first stage always
blurs and always adds noise: ``blur_prob`` = ``noise_prob`` = 1 by default).

**Levels** (:data:`LEVELS`, ``level: mild|medium|severe``): narrower ranges on top of the defaults, for fixed test sets
whose difficulty is named (``fsr-degrade``). Each is a dict of options of the same names.

**Determinism**: every draw happens inside :func:`seeded`, which seeds Python's ``random`` and NumPy's global generator
(BasicSR's functions use both) with the face's seed and restores their previous states afterwards, so a seed gives one
LR face and the caller's random streams are left as they were. ``FSRFaceDataset`` passes a fresh seed drawn from
``random`` in training and :func:`face_seed` (the option ``seed`` and the face's key) otherwise.

Console tool ``fsr-degrade`` (:func:`main`): a fixed, seeded degraded test set (``hr.lmdb`` + ``lr_x<scale>.lmdb`` +
``degradation.json``, what ``fsr-benchmark --data`` reads) from HR faces::

    fsr-degrade --data demo_data/test --scale 4 --level medium --out demo_data/test_medium_x4

What ``fsr-degrade`` promises about files and numbers (``shared/DESIGN.md``, "Files a tool writes"):

- Options are checked at parse time (one ``error:`` line naming the option and its range, exit status 2): ``--scale``
  an integer >= 2 (and, once the faces are read, at most the smaller side of every HR face), ``--draws`` >= 1,
  ``--seed`` in [0, 2**32 - 1], ``--level`` one of the levels; every ``--set`` value by :func:`degradation_options`
  (finite numbers, probabilities in [0, 1], ranges ordered and in their limits, JPEG quality in [0, 100]).
- The input, the output path (not a file, not below one, not the input, not holding it) and the output folder's state
  are checked and every HR face is read before anything is written or deleted; a damaged input LMDB is an error naming
  its file (:mod:`fsr_data.lmdb_io`).
- One run per output folder (``OUT/.fsr.lock``): a second run names the holder's PID and exits 2.
- The set is written inside OUT (``OUT/.fsr-degrade.partial``) and moved into place when complete; nothing is written
  next to OUT.
- ``--overwrite`` replaces only a set fsr-degrade made (``degradation.json`` marks it), once the new set is complete,
  and deletes only that set's own files; a non-empty folder without that marker is refused, with or without it.
"""
import argparse
import contextlib
import cv2
import json
import math
import numpy as np
import os
import os.path as osp
import random
import shutil
import sys
import zlib

from fsr_utils import compat
from fsr_utils.safety import LOCK_NAME, FolderLock, UsageError, check_number, check_output_path, int_range

compat.install_torchvision_shim()

from basicsr.data import degradations as bsr_deg  # noqa: E402

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
RESIZE_MODES = {'area': cv2.INTER_AREA, 'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC}

# Real-ESRGAN's first degradation stage (options/train_realesrnet_x4plus.yml); see the module docstring.
DEFAULTS = dict(
    blur_prob=1.0,
    kernel_list=list(KERNEL_TYPES),
    kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    kernel_size=[7, 21],
    blur_sigma=[0.2, 3.0],
    betag_range=[0.5, 4.0],
    betap_range=[1.0, 2.0],
    sinc_prob=0.1,
    resize_modes=['area', 'bilinear', 'bicubic'],
    resize_prob=[1 / 3, 1 / 3, 1 / 3],
    noise_prob=1.0,
    gaussian_noise_prob=0.5,
    noise_range=[1.0, 30.0],
    poisson_scale_range=[0.05, 3.0],
    gray_noise_prob=0.4,
    jpeg_prob=1.0,
    jpeg_range=[30, 95],
    seed=0,
)

# Named test levels: ranges inside the defaults' (blur sigma at HR size, noise sigma on 0-255 at LR size).
LEVELS = {
    'mild':
    dict(
        kernel_list=['iso', 'aniso'],
        kernel_prob=[0.5, 0.5],
        blur_sigma=[0.2, 1.5],
        sinc_prob=0.0,
        gaussian_noise_prob=1.0,
        noise_range=[1.0, 5.0],
        jpeg_range=[75, 95]),
    'medium':
    dict(
        blur_sigma=[1.0, 2.5],
        sinc_prob=0.1,
        gaussian_noise_prob=0.5,
        noise_range=[5.0, 15.0],
        poisson_scale_range=[0.5, 1.5],
        jpeg_range=[45, 75]),
    'severe':
    dict(
        blur_sigma=[2.0, 3.0],
        sinc_prob=0.2,
        gaussian_noise_prob=0.5,
        noise_range=[15.0, 30.0],
        poisson_scale_range=[1.5, 3.0],
        jpeg_range=[30, 50]),
}

_RANGES = ('kernel_size', 'blur_sigma', 'betag_range', 'betap_range', 'noise_range', 'poisson_scale_range',
           'jpeg_range')
_PROBS = ('blur_prob', 'sinc_prob', 'noise_prob', 'gaussian_noise_prob', 'gray_noise_prob', 'jpeg_prob')
# valid values of the range options' ends (finite numbers): kernel sizes odd integers >= 3; sigmas and shape
# parameters > 0; noise sigma (0-255 scale) and Poisson scale >= 0; JPEG quality an integer in [0, 100]
_RANGE_LIMITS = dict(
    kernel_size=(3, None),
    blur_sigma=(0, None),
    betag_range=(0, None),
    betap_range=(0, None),
    noise_range=(0, None),
    poisson_scale_range=(0, None),
    jpeg_range=(0, 100))
_POSITIVE = ('blur_sigma', 'betag_range', 'betap_range')
_INTS = ('kernel_size', 'jpeg_range')
SCALE_MIN = 2  # fsr-degrade --scale: an integer >= 2, at most the smaller side of every HR face (after mod-crop)
MAX_SEED = 2**32 - 1
MARKER = 'degradation.json'  # marks a folder fsr-degrade made: --overwrite replaces only such folders' sets
STAGING = '.fsr-degrade.partial'  # inside --out: the new set is written here, then moved into place


def degradation_options(opt=None):
    """Full, checked options: :data:`DEFAULTS`, then ``LEVELS[opt['level']]``, then the other keys of ``opt``.

    Args:
        opt (dict | str | bool | None): ``None``/``True``/``{}``: the defaults; a level name; or a dict of options
            (``level`` optional).

    Raises:
        ValueError: naming the option that is unknown or out of range.
    """
    if opt is None or opt is True:
        opt = {}
    elif isinstance(opt, str):
        opt = {'level': opt}
    elif not isinstance(opt, dict):
        raise ValueError(f'degradation must be a level name ({", ".join(LEVELS)}), true, or a dict of options; got '
                         f'{opt!r}.')
    out = dict(DEFAULTS)
    level = opt.get('level')
    if level is not None:
        if level not in LEVELS:
            raise ValueError(f'degradation level {level!r} is unknown: use one of {", ".join(LEVELS)}.')
        out.update(LEVELS[level])
    unknown = sorted(set(opt) - set(DEFAULTS) - {'level'})
    if unknown:
        raise ValueError(f'unknown degradation option(s) {unknown}: the options are {", ".join(DEFAULTS)} and level '
                         '(see fsr_data/degradations.py).')
    out.update({k: v for k, v in opt.items() if k != 'level'})
    out['level'] = level
    for key in _PROBS:
        check_number(f'degradation option {key} (a probability)', out[key], 0, 1)
    for key in _RANGES:
        r = out[key]
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ValueError(f'degradation option {key} must be a range [low, high], got {r!r}.')
        low, high = _RANGE_LIMITS[key]
        for v in r:
            check_number(f'degradation option {key}', v, low, high, min_open=key in _POSITIVE, integer=key in _INTS)
        if float(r[0]) > float(r[1]):
            raise ValueError(f'degradation option {key} must be a range [low, high] with low <= high, got {r}.')
    if any(int(s) % 2 == 0 for s in out['kernel_size']):
        raise ValueError(f'degradation option kernel_size {out["kernel_size"]}: odd sizes >= 3 only.')
    check_number('degradation option seed', out['seed'], integer=True)
    for names, probs, allowed in (('kernel_list', 'kernel_prob', KERNEL_TYPES), ('resize_modes', 'resize_prob',
                                                                                 tuple(RESIZE_MODES))):
        if not isinstance(out[names], (list, tuple)) or not isinstance(out[probs], (list, tuple)):
            raise ValueError(f'degradation options {names} and {probs} must be lists, got {out[names]!r} and '
                             f'{out[probs]!r}.')
        bad = [k for k in out[names] if k not in allowed]
        if bad or not out[names]:
            raise ValueError(f'degradation option {names}: {bad or "empty"}; allowed: {", ".join(allowed)}.')
        if len(out[probs]) != len(out[names]):
            raise ValueError(f'degradation option {probs} must give one non-negative weight per entry of {names}.')
        for v in out[probs]:
            check_number(f'degradation option {probs}', v, 0)
        if sum(out[probs]) <= 0:
            raise ValueError(f'degradation option {probs} must give one non-negative weight per entry of {names}, '
                             'not all zero.')
    return out


@contextlib.contextmanager
def seeded(seed):
    """Seed ``random`` and NumPy's global generator with ``seed``; restore both states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def face_seed(key, seed=0):
    """A fixed seed per face (CRC32 of the option ``seed`` and the face's key): the same LR face at every run."""
    return zlib.crc32(f'{int(seed)}/{key}'.encode('utf-8'))


def _range(r):
    # BasicSR's kernel samplers assert low < high: a fixed value [v, v] becomes a range of width 1e-9 around it
    lo, hi = float(r[0]), float(r[1])
    return (lo, hi) if lo < hi else (lo, lo + 1e-9)


def _uniform(r):
    lo, hi = float(r[0]), float(r[1])
    return lo if lo == hi else float(np.random.uniform(lo, hi))


def jpeg(img, quality):
    """BasicSR's ``add_jpg_compression`` (OpenCV JPEG, BGR float in [0, 1]) with an explicit 8-bit rounding.

    BasicSR's version hands OpenCV a float image, which OpenCV >= 5 converts to 8 bits itself with a warning at
    every call; the result is the same JPEG of the same 8-bit image.
    """
    img8 = np.clip(np.round(np.clip(img, 0, 1) * 255.), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode('.jpg', img8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f'OpenCV cannot JPEG-encode an image of shape {img.shape}')
    return np.float32(cv2.imdecode(buf, cv2.IMREAD_COLOR)) / 255.


def degrade(img_hr, scale, opt, seed, return_params=False):
    """The LR face of a BGR uint8 HR face (see the module docstring for the steps).

    Args:
        img_hr (ndarray): (H, W, 3) BGR uint8 (H and W multiples of ``scale``; the caller mod-crops).
        scale (int): down-sampling factor: the LR face is (H / scale, W / scale).
        opt (dict): options from :func:`degradation_options`.
        seed (int): every random draw comes from it.
        return_params (bool): also return the drawn parameters that are drawn here (not inside BasicSR's samplers).

    Returns:
        ndarray | tuple: LR BGR uint8 face (and a dict of parameters).
    """
    h, w = img_hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'degrade: HR size {h}x{w} is not a multiple of the scale {scale} (mod-crop it first).')
    params = {}
    img = img_hr.astype(np.float32) / 255.
    with seeded(seed):
        # 1. blur
        if np.random.uniform() < opt['blur_prob']:
            sizes = list(range(int(opt['kernel_size'][0]), int(opt['kernel_size'][1]) + 1, 2))
            ksize = sizes[np.random.randint(len(sizes))]
            if np.random.uniform() < opt['sinc_prob']:
                omega_c = np.random.uniform(np.pi / 3, np.pi) if ksize < 13 else np.random.uniform(np.pi / 5, np.pi)
                kernel = bsr_deg.circular_lowpass_kernel(omega_c, ksize)
                params['blur'] = f'sinc k{ksize} wc{omega_c:.3f}'
            else:
                sigma = _range(opt['blur_sigma'])
                kernel = bsr_deg.random_mixed_kernels(
                    list(opt['kernel_list']),
                    list(opt['kernel_prob']),
                    ksize,
                    sigma,
                    sigma, [-math.pi, math.pi],
                    _range(opt['betag_range']),
                    _range(opt['betap_range']),
                    noise_range=None)
                params['blur'] = f'mixed k{ksize}'
            img = cv2.filter2D(img, -1, kernel.astype(np.float32))
        # 2. down-sampling to the LR size
        modes = list(opt['resize_modes'])
        mode = random.choices(modes, list(opt['resize_prob']))[0]
        params['resize'] = mode
        img = cv2.resize(img, (w // scale, h // scale), interpolation=RESIZE_MODES[mode])
        img = np.clip(img, 0, 1)
        # 3. noise
        if np.random.uniform() < opt['noise_prob']:
            if np.random.uniform() < opt['gaussian_noise_prob']:
                params['noise'] = 'gaussian'
                img = bsr_deg.random_add_gaussian_noise(
                    img, _range(opt['noise_range']), gray_prob=opt['gray_noise_prob'], clip=True, rounds=False)
            else:
                params['noise'] = 'poisson'
                img = bsr_deg.random_add_poisson_noise(
                    img, _range(opt['poisson_scale_range']), gray_prob=opt['gray_noise_prob'], clip=True, rounds=False)
            img = img.astype(np.float32)
        # 4. JPEG
        if np.random.uniform() < opt['jpeg_prob']:
            quality = int(round(_uniform(opt['jpeg_range'])))
            params['jpeg'] = quality
            img = jpeg(img, quality)
    lr = np.clip(np.round(img * 255.), 0, 255).astype(np.uint8)
    return (lr, params) if return_params else lr


# ------------------------------------------------------------------------------------------------ degraded test set
def read_hr_faces(data):
    """HR faces ``{key: BGR uint8}`` of a dataset folder (``hr.lmdb`` or ``hr/``) or a plain folder of face images."""
    if not osp.isdir(data):
        raise FileNotFoundError(f'--data {data} is not a folder.')
    from fsr_data.lmdb_io import read_folder_images, read_lmdb_images
    if osp.isdir(osp.join(data, 'hr.lmdb')):
        faces = read_lmdb_images(osp.join(data, 'hr.lmdb'), cv2.IMREAD_COLOR)
    elif osp.isdir(osp.join(data, 'hr')):
        faces = read_folder_images(osp.join(data, 'hr'), cv2.IMREAD_COLOR)
    else:
        faces = read_folder_images(data, cv2.IMREAD_COLOR)
    if not faces:
        raise ValueError(f'no HR faces in {data} (expected hr.lmdb, hr/ or image files).')
    return faces


def made_by_degrade(folder):
    """True when ``folder`` holds the marker of an ``fsr-degrade`` set (``degradation.json`` written by
    :func:`make_degraded_set`)."""
    try:
        with open(osp.join(folder, MARKER)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get('made_by', '')).startswith('fsr_data.degradations')


def _set_files(folder):
    """Names of the files of the degraded set in ``folder`` (its LMDBs by its marker's scale, and the marker)."""
    names = ['hr.lmdb']
    try:
        with open(osp.join(folder, MARKER)) as f:
            names.append(f'lr_x{int(json.load(f)["scale"])}.lmdb')
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return names + [MARKER]


def _check_out_state(out, overwrite):
    """Refuse an output folder that holds anything but a lock file and an interrupted run's staging folder, unless it
    is a set fsr-degrade made and ``overwrite`` is given."""
    if not osp.isdir(out):
        return
    others = sorted(n for n in os.listdir(out) if n not in (LOCK_NAME, STAGING))
    if not others:
        return
    if not made_by_degrade(out):
        raise UsageError(f'--out {out} exists and was not made by fsr-degrade (no {MARKER} of it): fsr-degrade never '
                         'deletes or writes over files it did not make, with or without --overwrite. Choose a new or '
                         'empty folder.')
    if not overwrite:
        raise FileExistsError(f'--out {out} holds a degraded set: give another --out, or --overwrite to replace it.')


def make_degraded_set(data, out, scale, level='medium', seed=0, options=None, fmt='png', overwrite=False, draws=1):
    """Write a fixed, seeded degraded test set: ``out/hr.lmdb``, ``out/lr_x<scale>.lmdb``, ``out/degradation.json``.

    Face ``key`` gets the LR face ``degrade(hr, scale, opts, face_seed(key, seed))``: the same files at every run. With
    ``draws`` N > 1 each face is degraded N times, as faces ``<key>_d<i>`` (i = 0..N-1, seed ``face_seed('<key>_d<i>',
    seed)``, the HR face repeated): on a small test set the mean over several draws of the degradation is a steadier
    figure than one draw.

    What it writes and deletes (the promises): every number, the input and the output path are checked and every HR
    face is read before anything is written or deleted. The output folder is locked for the run
    (:class:`fsr_utils.safety.FolderLock`: a second run on it stops with the holder's PID). The new set is written
    inside ``out`` (``out/.fsr-degrade.partial``) and moved into place at the end, its marker ``degradation.json``
    first: an interrupted run leaves no half set under a name a reader takes. ``overwrite`` replaces only a set that
    fsr-degrade made (its ``degradation.json`` marks it): it deletes that set's own files, after the new set is
    complete, and never an input, a folder holding one, or a file it did not make.

    Args:
        data (str): dataset folder (``hr.lmdb`` or ``hr/``) or a folder of HR face images.
        out (str): output folder (new, empty, or a set made by fsr-degrade with ``overwrite``).
        scale (int): down-sampling factor, an integer >= 2 and at most the smaller side of every HR face.
        level (str | None): ``mild``, ``medium``, ``severe`` or None (the defaults).
        seed (int): base seed, in [0, 2**32 - 1].
        options (dict | None): further degradation options (override the level's).
        fmt (str): 'png' or 'bmp' for the LMDB images.
        overwrite (bool): replace a degraded set that fsr-degrade made at ``out``.
        draws (int): degradations drawn per face (>= 1).

    Returns:
        dict: the manifest written to ``degradation.json``.

    Raises:
        UsageError: a number out of range, an output path that cannot be used, an output folder fsr-degrade did not
            make, an HR face smaller than the scale, or a folder locked by another run.
        FileExistsError: ``out`` holds a degraded set and ``overwrite`` is False.
        FileNotFoundError, ValueError: the input is missing or broken (the message names the file).
    """
    from fsr_data.lmdb_io import write_lmdb
    scale = check_number('--scale', scale, minimum=SCALE_MIN, integer=True)
    draws = check_number('--draws', draws, minimum=1, integer=True)
    seed = check_number('--seed', seed, minimum=0, maximum=MAX_SEED, integer=True)
    if fmt not in ('png', 'bmp'):
        raise UsageError(f'--image-format must be png or bmp, not {fmt!r}.')
    opt = degradation_options(dict(options or {}, level=level, seed=seed))
    if not osp.isdir(data):
        raise FileNotFoundError(f'--data {data} is not a folder.')
    check_output_path(out, '--out', [(data, '--data')], allow_inside_inputs=True)
    _check_out_state(out, overwrite)
    faces = read_hr_faces(data)
    small = [(k, im.shape[:2]) for k, im in faces.items() if min(im.shape[:2]) < scale]
    if small:
        key, (h, w) = small[0]
        raise UsageError(f'--scale {scale} is larger than the HR face {key} ({h}x{w}) of {data}: the LR face would be '
                         'empty. Use a smaller --scale or larger faces.')
    created = not osp.exists(out)
    stage = osp.join(out, STAGING)
    done = False
    try:
        with FolderLock(out, 'fsr-degrade', '--out'):
            _check_out_state(out, overwrite)  # again under the lock: another run may have written it meanwhile
            if osp.isdir(stage):
                shutil.rmtree(stage)  # an interrupted run's (this name inside --out is fsr-degrade's own)
            os.makedirs(stage)
            hr, lr, per_face = {}, {}, {}
            for face_key, img in faces.items():
                h, w = img.shape[:2]
                img = np.ascontiguousarray(img[:h - h % scale, :w - w % scale])  # mod crop, as BasicSR's paired data
                for key in [face_key] if draws == 1 else [f'{face_key}_d{i}' for i in range(draws)]:
                    s = face_seed(key, seed)
                    hr[key] = img
                    lr[key], params = degrade(img, scale, opt, s, return_params=True)
                    per_face[key] = dict(params, seed=s)
            write_lmdb(osp.join(stage, 'hr.lmdb'), hr, fmt=fmt)
            write_lmdb(osp.join(stage, f'lr_x{scale}.lmdb'), lr, fmt=fmt)
            manifest = dict(
                source=osp.abspath(data),
                scale=scale,
                level=level,
                seed=seed,
                draws=int(draws),
                options=opt,
                faces=per_face,
                made_by='fsr_data.degradations.make_degraded_set (BasicSR degradations; see '
                'fsr_data/degradations.py)')
            with open(osp.join(stage, MARKER), 'w') as f:
                json.dump(manifest, f, indent=1)
            # the new set is complete: replace the old one (fsr-degrade's own files only), marker first
            if made_by_degrade(out):
                for name in _set_files(out)[:-1]:
                    path = osp.join(out, name)
                    if osp.isdir(path) and not osp.islink(path):
                        shutil.rmtree(path)
                    elif osp.lexists(path):
                        os.remove(path)
            for name in (MARKER, 'hr.lmdb', f'lr_x{scale}.lmdb'):
                os.replace(osp.join(stage, name), osp.join(out, name))
            os.rmdir(stage)
            done = True
    finally:
        if not done and osp.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
        if not done and created and osp.isdir(out) and not os.listdir(out):
            os.rmdir(out)
    return manifest


def main(argv=None):
    """``fsr-degrade``: a fixed, seeded degraded test set from HR faces (read by ``fsr-benchmark --data``).

    Exit status 0 on success; 2 with one ``error:`` line when an option, the input or the output folder is wrong (found
    before anything is written or deleted) or the output folder is in use by another run; 1 when writing fails.
    """
    p = argparse.ArgumentParser(
        prog='fsr-degrade',
        description='Make a fixed, seeded degraded face test set (hr.lmdb + lr_x<scale>.lmdb) from HR faces with '
        'BasicSR\'s degradations (blur, down-sampling, noise, JPEG); see fsr_data/degradations.py.')
    p.add_argument('--data', required=True, help='dataset folder (hr.lmdb or hr/) or a folder of HR face images')
    p.add_argument(
        '--out',
        required=True,
        help='output folder (fsr-benchmark --data OUT): new, empty, or a set '
        'fsr-degrade made (with --overwrite)')
    p.add_argument(
        '--scale',
        type=int_range(SCALE_MIN),
        required=True,
        help='down-sampling factor: an integer >= 2, at most the HR faces\' smaller side (the networks: 4 or 8; '
        'LAAT and W-Net also 2)')
    p.add_argument(
        '--level',
        default='medium',
        choices=list(LEVELS) + ['default'],
        help=f'degradation level: {", ".join(LEVELS)} or "default" '
        '(Real-ESRGAN first-order ranges)')
    p.add_argument(
        '--seed',
        type=int_range(0, MAX_SEED),
        default=0,
        help=f'base seed in [0, {MAX_SEED}] (each face: CRC32 of seed and key)')
    p.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='OPTION=JSON',
        help='override one degradation option, e.g. --set jpeg_range=[50,60] (repeatable)')
    p.add_argument(
        '--draws',
        type=int_range(1),
        default=1,
        help='degradations per face, >= 1 (faces <key>_d<i>): a steadier mean on a small test set (default 1)')
    p.add_argument('--image-format', default='png', choices=['png', 'bmp'])
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the degraded set at --out (only a set fsr-degrade made; deleted once the new one is complete)')
    args = p.parse_args(argv)
    options = {}
    for item in args.set:
        if '=' not in item:
            p.error(f'--set {item}: expected OPTION=VALUE (VALUE in JSON, e.g. [30,50] or 0.5)')
        key, value = item.split('=', 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            p.error(f'--set {item}: {value} is not JSON (e.g. [30,50], 0.5, ["iso","aniso"])')
    level = None if args.level == 'default' else args.level
    try:
        manifest = make_degraded_set(args.data, args.out, args.scale, level, args.seed, options, args.image_format,
                                     args.overwrite, args.draws)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else e
        print(f'fsr-degrade: error: {" ".join(str(text).split())}', file=sys.stderr)
        return 2
    except OSError as e:
        print(f'fsr-degrade: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 1
    draws = f', {args.draws} draws per face' if args.draws > 1 else ''
    print(f'{len(manifest["faces"])} faces degraded at level {args.level} (x{args.scale}, seed {args.seed}{draws}) -> '
          f'{args.out}/hr.lmdb, {args.out}/lr_x{args.scale}.lmdb, {args.out}/degradation.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
