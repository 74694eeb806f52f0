"""``fsr-benchmark``: bicubic and any list of trained networks on one face test set, with a stated protocol.

Examples::

    # a prepared dataset folder (hr.lmdb + lr_x4.lmdb, or hr/ + lr_x4/ image folders)
    fsr-benchmark --data datasets/demo/test --scale 4 --opt options/test_tanet_x4.yml \\
        --net "W-Net=experiments/WNet_demo_x4/models/net_g_latest.pth" --out results/benchmark_x4
    # a plain folder of HR faces: the LR faces are made here with BasicSR's MATLAB-style bicubic imresize
    fsr-benchmark --data my_faces/ --scale 8 --net "AMINet=net_g_latest.pth,options/test_aminet_x8.yml"

Networks:

* ``--opt FILE.yml`` (repeatable): a BasicSR test/train options file; the network is ``network_g``, the checkpoint
  ``path.pretrain_network_g`` (key ``path.param_key_g``, default ``params``), the label the option's ``name``.
* ``--net LABEL=CHECKPOINT[,OPTIONS.yml]`` (repeatable): without ``OPTIONS.yml``, the options file that BasicSR copied
  into the experiment folder (``experiments/<name>/*.yml``, next to ``models/``) gives ``network_g``; the weights are
  ``params_ema`` when the checkpoint has them, else ``params``.

Checkpoints are read with ``torch.load(weights_only=True)``; BasicSR's ``params_ema`` / ``params`` keys and a plain
state_dict work. Networks that need LR sizes divisible by ``size_multiple`` (SwinIR: its window) get a replicate
padding, cropped off after.

Protocol (written at the top of every table): ``--protocol NAME`` picks a named preset of
:mod:`fsr_metrics.protocols`, each a documented set of choices (channel, colour conversion, rounding, crop border,
SSIM window and implementation) with the code base it comes from: ``basicsr-y`` (the default: BasicSR's
``calculate_psnr`` / ``calculate_ssim`` on the Y channel, ITU-R BT.601 as BasicSR and MATLAB's ``rgb2ycbcr``, SSIM
with the 11x11 Gaussian window, sigma 1.5, of Wang et al., outputs rounded to 8 bits, ``crop_border`` = scale),
``rgb`` (MMagic: RGB, unrounded outputs, crop = scale), ``dic`` (DIC's evaluation code), ``skimage``
(scikit-image's defaults) and the protocol each seed paper states (``laat``, ``aminet``, ``tanet``, ``wnet``:
``basicsr-y``'s choices where the paper is silent, and said so). ``--rgb`` and ``--crop-border N`` override the
preset's channel and border, and the table names the override. VIF follows the same channel, colour conversion,
rounding and crop. LPIPS (AlexNet trunk) and MPS use RGB, the whole face (MPS with the protocol's SSIM). Identity
similarity and landmark distance use dlib (face box from the HR face) on the 8-bit outputs. FID is computed between
the set of outputs and the set of HR faces (it needs thousands of faces to mean anything).

A metric whose weights are missing is left out of the tables with a note saying which file to give; no number is ever
computed with random or non-finite weights.

Outputs in ``--out``: ``benchmark.md`` (protocol, mean table, notes, per-face table), ``benchmark_mean.csv``,
``benchmark_per_face.csv``, ``grid.png`` (LR | bicubic | each network | HR for ``--grid-faces`` faces spread evenly
over the set, first and last included; faces of different sizes each get a cell of their own size on a white
background), with ``--save-images`` every output image under ``images/<method>/<face>.png``, and ``benchmark.json``
(the files this tool wrote in the folder, with their SHA-256).

``--paper PAPER`` (laat, aminet, amigan, tanet, wnet) adds the figures that paper reports at this scale
(:mod:`fsr_metrics.paper_results`) as rows beside the measured ones, marked as the paper's, each row with its
protocol (the paper's preset; the measured rows: ``--protocol`` and its overrides), a table of the paper's choices
beside ours (stated, or not stated by the paper), and the differences.

Promises (docs/reliability.md; ``fsr_utils.safety``):

* Every number is checked when the options are read: ``--scale`` 2-16, ``--crop-border`` >= 0, ``--limit`` >= 1,
  ``--grid-faces`` 0-100, ``--device`` auto, cpu, cuda or cuda:N (N below the CUDA device count), ``--protocol`` one
  of the presets; one ``error:`` line naming the option and its range, exit status 2.
* Everything is checked before any face is scored, and a failed check is one ``error:`` line with exit status 2:
  the data folder; every network and checkpoint (options read, network built, ``network_g.upscale`` and the options'
  ``scale`` equal to ``--scale``, weights loaded strictly, and refused when a tensor holds NaN or Inf, naming the
  checkpoint and the tensor; so are the LPIPS trunk and the FID weights); every LR/HR pair of the set (LR size x
  scale == HR size, else an error naming the face, both LMDBs/folders, the sizes and the fix: an x8 LR set under
  ``--scale 4`` is named as such); the crop border (at least 11 pixels of the smallest face left); the output folder
  (not a file, no file on the way to it, not an input, not inside the data folder, not holding an input).
* One run per output folder: a lock file (``.fsr.lock``, ``fsr_utils.safety.FolderLock``); a second run names the
  holder and exits with status 2.
* Nothing that fsr-benchmark did not write is overwritten or deleted: a file of an earlier fsr-benchmark run in
  ``--out`` (listed in its ``benchmark.json`` with the same SHA-256, or the tables of a run made before
  ``benchmark.json``) is replaced; anything else at a path this run writes (a file of yours, a file changed since,
  a folder or a link) stops the run before any work. Files of an earlier run that this one does not write again
  (e.g. ``grid.png`` after ``--grid-faces 0``) are removed when unchanged, so the folder describes one run.
* A network output with NaN or Inf is never rounded into an image and scored: the run stops (exit status 1) with an
  error naming the network and the face. A metric that needs larger faces is left out with a note (VIF: 41x41 after
  the crop border; NIQE: see ``--niqe``), never computed on too few pixels.
* Every file is written atomically (temporary name, then rename): a failed write is an error (exit status 1) naming
  the file, never a truncated table.

A failure prints one line ``error: ...``; ``--debug`` or ``FSR_DEBUG=1`` shows the traceback.
"""
import argparse
import csv
import glob
import hashlib
import importlib
import io
import json
import math
import os
import sys


class _LazyModule:
    """A module imported on first attribute access, so that ``fsr-benchmark --help`` imports no torch/cv2/numpy."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


cv2 = _LazyModule('cv2')
np = _LazyModule('numpy')
torch = _LazyModule('torch')
yaml = _LazyModule('yaml')

# name, better ('higher'/'lower'), format
METRICS = {
    'PSNR': ('higher', '{:.2f}'),
    'SSIM': ('higher', '{:.4f}'),
    'VIF': ('higher', '{:.4f}'),
    'LPIPS': ('lower', '{:.4f}'),
    'MPS': ('higher', '{:.4f}'),
    'ID': ('higher', '{:.4f}'),
    'LMD': ('lower', '{:.2f}'),
    'FID': ('lower', '{:.2f}'),
    'NIQE': ('lower', '{:.3f}'),
    'NIQE-set': ('lower', '{:.3f}'),
    'Grid': ('lower', '{:.2f}'),
}
SET_METRICS = ('FID', 'NIQE-set')  # one value per method and test set, not per face
GRID_MIN_SIZE = 16  # fsr_metrics.grid_score: faces below 16x16 after the crop have no resolvable grid frequencies
VIF_MIN_SIZE = 41  # vifp_mscale: four scales of valid Gaussian filtering (face_metric.vifp_single)
SSIM_MIN_SIZE = 11  # BasicSR's SSIM: one 11x11 Gaussian window of valid filtering
NIQE_MIN_SIZE = 192  # BasicSR's NIQE fits its model to 96x96 blocks: a single block (e.g. a 128x128 face) is degenerate


def _load_plugin():
    from fsr_utils import plugin
    plugin.load()


# -------------------------------------------------------------------------------------------------------------- data
def read_lmdb(path):
    """All images of a BasicSR-format LMDB (``meta_info.txt`` + ``data.mdb``) as ``{key: BGR/gray uint8}``."""
    from fsr_data.lmdb_io import read_lmdb_images
    return read_lmdb_images(path)


def read_folder(path):
    """All images of a folder (non-recursive) as ``{file stem: BGR/gray uint8}``."""
    from fsr_data.lmdb_io import read_folder_images
    return read_folder_images(path)


def _to_bgr8(img, where='image'):
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img / 257.).round().astype(np.uint8)
        else:
            raise ValueError(f'{where}: unsupported image dtype {img.dtype} (8- or 16-bit images only).')
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _pair_error(name, lr_shape, hr_shape, scale, lr_path, hr_path):
    """The error for an LR face whose size times ``scale`` is not its HR face's size: sizes, both sets and the fix."""
    (lh, lw), (hh, hw) = lr_shape[:2], hr_shape[:2]
    ratio = hh // lh if lh and lw and hh % lh == 0 and hw % lw == 0 and hh // lh == hw // lw else None
    if ratio and ratio > 1:
        fix = (f'{lr_path} holds x{ratio} LR faces: run with --scale {ratio}, or make x{scale} LR faces from these HR '
               f'faces (fsr-prepare --scales {scale}, fsr-degrade --scale {scale})')
    else:
        fix = (f'{lr_path} does not belong to {hr_path}: make the LR faces again from these HR faces (fsr-prepare '
               f'--scales {scale}, fsr-degrade --scale {scale})')
    return ValueError(f'face {name}: LR {lh}x{lw} in {lr_path} times --scale {scale} is {lh * scale}x{lw * scale}, '
                      f'but its HR face in {hr_path} is {hh}x{hw} (height x width): {fix}.')


def check_pair(name, hr, lr, scale, lr_path='the LR set', hr_path='the HR set'):
    """Raise ``ValueError`` (naming the face, both sets, the sizes and the fix) unless LR size x scale == HR size."""
    if (lr.shape[0] * scale, lr.shape[1] * scale) != tuple(hr.shape[:2]):
        raise _pair_error(name, lr.shape, hr.shape, scale, lr_path, hr_path)


def matlab_bicubic(img, scale):
    """BasicSR's MATLAB-style bicubic ``imresize`` (antialiased when downscaling) of a BGR uint8 image, rounded.

    Args:
        img (ndarray): BGR uint8 image.
        scale (float): Resize factor (e.g. 1/4 to make LR faces, 4 for the bicubic baseline).
    """
    return np.clip(np.round(_matlab_bicubic_255(img, scale)), 0, 255).astype(np.uint8)


def matlab_bicubic_float(img, scale):
    """:func:`matlab_bicubic` before rounding: float64 in [0, 255] (for protocols that score unrounded outputs)."""
    return np.clip(_matlab_bicubic_255(img, scale), 0, 255).astype(np.float64)


def _matlab_bicubic_255(img, scale):
    from basicsr.utils.matlab_functions import imresize
    return imresize(img.astype(np.float32) / 255., scale) * 255.


def load_faces(data, scale):
    """Pairs (name, HR, LR) of BGR uint8 faces from a prepared dataset folder or a plain folder of HR faces.

    Every pair read from a dataset is checked: LR size x ``scale`` must be the HR size (:func:`check_pair`), else
    ``ValueError`` naming the face, both sets, the sizes and the fix (an x8 LR set under ``--scale 4`` is named as
    such).

    Returns:
        tuple: (list of (name, hr, lr), description of the source for the protocol text)
    """
    if not os.path.isdir(data):
        raise FileNotFoundError(f'--data {data} is not a folder.')
    lr = None
    layouts = [(ext, reader) for ext, reader in (('.lmdb', read_lmdb), ('', read_folder))
               if os.path.isdir(os.path.join(data, 'hr' + ext))]
    hr_path = lr_path = data
    if layouts:
        ext, reader = layouts[0]
        hr_path = os.path.join(data, 'hr' + ext)
        hr = reader(hr_path)
        hr_name, lr_name = f'hr{ext or "/"}', f'lr_x{scale}{ext or "/"}'
        lr_path = os.path.join(data, f'lr_x{scale}{ext}')
        if os.path.isdir(lr_path):
            lr, source = reader(lr_path), f'`{data}` ({hr_name}, {lr_name})'
        else:
            source = f'`{data}` ({hr_name}; no {lr_name}: LR made here)'
    else:
        hr = read_folder(data)
        source = f'`{data}` (HR faces; LR made here)'
    if not hr:
        raise ValueError(f'no HR faces found in {data} (expected hr.lmdb, hr/ or image files).')
    faces = []
    for name in sorted(hr):
        hr_img = _to_bgr8(hr[name], f'HR face {name} in {hr_path}')
        if lr is None:
            h, w = hr_img.shape[:2]
            if h < scale or w < scale:
                raise ValueError(f'HR face {name} in {hr_path} is {h}x{w}, smaller than --scale {scale}: it has no '
                                 'LR face. Remove it or use larger faces.')
            hr_img = hr_img[:h - h % scale, :w - w % scale]  # mod crop, as BasicSR's paired data
            lr_img = matlab_bicubic(hr_img, 1. / scale)
        else:
            if name not in lr:
                raise KeyError(f'HR face {name} in {hr_path} has no LR face in {lr_path}: make the LR set from '
                               f'the same HR faces (fsr-prepare --scales {scale}).')
            lr_img = _to_bgr8(lr[name], f'LR face {name} in {lr_path}')
            check_pair(name, hr_img, lr_img, scale, lr_path, hr_path)
        faces.append((name, hr_img, lr_img))
    if lr is None:
        source += ' with BasicSR\'s MATLAB-style bicubic imresize (antialiased)'
    return faces, source


def load_lr_faces(data, scale):
    """LR faces without ground truth (``--no-gt``): ``lr_x<scale>.lmdb`` or ``lr_x<scale>/`` of a dataset folder, else
    every image of the folder. Returns ``([(name, None, lr)], source)``."""
    if not os.path.isdir(data):
        raise FileNotFoundError(f'--data {data} is not a folder.')
    for ext, reader in (('.lmdb', read_lmdb), ('', read_folder)):
        path = os.path.join(data, f'lr_x{scale}{ext}')
        if os.path.isdir(path):
            lr, source = reader(path), f'`{data}` (lr_x{scale}{ext or "/"}; no ground truth)'
            break
    else:
        lr, source = read_folder(data), f'`{data}` (LR faces; no ground truth)'
    if not lr:
        raise ValueError(f'no LR faces found in {data} (expected lr_x{scale}.lmdb, lr_x{scale}/ or image files).')
    return [(name, None, _to_bgr8(lr[name], f'LR face {name} in {data}')) for name in sorted(lr)], source


# ---------------------------------------------------------------------------------------------------------- networks
def load_yaml(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'options file {path} does not exist.')
    with open(path) as f:
        return yaml.safe_load(f)


def find_experiment_yaml(checkpoint):
    """The options file BasicSR copied into ``experiments/<name>/``, for a checkpoint in ``<that folder>/models/``."""
    exp_dir = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
    found = sorted(glob.glob(os.path.join(exp_dir, '*.yml')))
    if len(found) != 1:
        raise FileNotFoundError(
            f'cannot tell the network of {checkpoint}: {len(found)} options files in {exp_dir}; give one as '
            '--net LABEL=CHECKPOINT,OPTIONS.yml')
    return found[0]


def parse_net_specs(opts, nets, scale):
    """Network specs ``{label, network_g, checkpoint, param_key}`` from ``--opt`` and ``--net`` arguments."""
    specs = []
    for opt_path in opts or []:
        opt = load_yaml(opt_path)
        if 'network_g' not in (opt or {}):
            raise ValueError(f'{opt_path}: no network_g section (give a BasicSR train/test options file).')
        ckpt = (opt.get('path') or {}).get('pretrain_network_g')
        if not ckpt:
            raise ValueError(f'{opt_path}: path.pretrain_network_g is not set (the checkpoint to benchmark).')
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(f'{opt_path}: path.pretrain_network_g = {ckpt} does not exist (train the network '
                                    'first, or point the option at its checkpoint).')
        if opt.get('scale', scale) != scale:
            raise ValueError(f'{opt_path} is for x{opt.get("scale")}, the benchmark runs at x{scale}.')
        specs.append(
            dict(
                label=opt.get('name') or os.path.splitext(os.path.basename(opt_path))[0],
                network_g=opt['network_g'],
                checkpoint=ckpt,
                param_key=(opt.get('path') or {}).get('param_key_g', 'params'),
                source=opt_path,
                options=opt_path))
    for text in nets or []:
        if '=' not in text:
            raise ValueError(f'--net {text}: expected LABEL=CHECKPOINT[,OPTIONS.yml]')
        label, rest = text.split('=', 1)
        ckpt, _, opt_path = rest.partition(',')
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(f'--net {text}: checkpoint {ckpt} does not exist (check the path; BasicSR writes '
                                    'them as experiments/<name>/models/net_g_<iter>.pth).')
        opt_path = opt_path or find_experiment_yaml(ckpt)
        opt = load_yaml(opt_path)
        if 'network_g' not in (opt or {}):
            raise ValueError(f'--net {text}: {opt_path} has no network_g section.')
        if opt.get('scale', scale) != scale:
            raise ValueError(f'--net {text}: {opt_path} is for x{opt.get("scale")}, the benchmark runs at x{scale}.')
        specs.append(
            dict(
                label=label,
                network_g=opt['network_g'],
                checkpoint=ckpt,
                param_key=None,
                source=f'--net {text}',
                options=opt_path))
    labels = [s['label'] for s in specs]
    if len(set(labels)) != len(labels) or 'Bicubic' in labels:
        raise ValueError(f'network labels must be unique and not "Bicubic": {labels}')
    for spec in specs:
        label = spec['label']
        # the label names a folder of --save-images and a table row: no path, no hidden name, no Markdown cell break
        if (not label.strip() or label.startswith('.') or any(c in label for c in '/\\|\n\r\0')):
            raise ValueError(f'{spec["source"]}: network label {label!r} cannot name a table row and a folder: use '
                             'letters, digits, spaces, "-", "_" (no "/", "\\", "|", no leading ".").')
        upscale = (spec['network_g'] or {}).get('upscale')
        if upscale is not None and upscale != scale:
            raise ValueError(
                f'{spec["source"]}: network_g.upscale is {upscale}, the benchmark runs at --scale {scale}: '
                'give the network of this scale, or run with --scale ' + str(upscale) + '.')
    return specs


class BrokenWeights(ValueError):
    """A checkpoint whose weights hold NaN or Inf (the message names the checkpoint and the tensors)."""


class NonFiniteOutput(ValueError):
    """A network output that holds NaN or Inf: it is never rounded into an image and scored."""


def load_state_dict(checkpoint, param_key=None):
    """Weights of a BasicSR checkpoint or of a plain state_dict, refused when a tensor holds NaN or Inf.

    Args:
        checkpoint (str): ``.pth`` file.
        param_key (str | None): Key to read (``path.param_key_g`` of an options file); None: ``params_ema`` (the EMA
            weights BasicSR saves next to ``params`` when ``ema_decay`` > 0), else ``params``.

    Raises:
        BrokenWeights: a tensor of the weights read holds NaN or Inf (named, with the checkpoint).
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist.')
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    key = None
    if isinstance(state, dict):
        for key in (param_key, 'params_ema', 'params'):
            if key and isinstance(state.get(key), dict):
                state = state[key]
                break
        else:
            key = None
    if not isinstance(state, dict):
        raise ValueError(f'checkpoint {checkpoint} holds a {type(state).__name__}, not a state_dict.')
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    try:
        from fsr_utils.safety import check_finite_state_dict
        check_finite_state_dict(state, f'checkpoint {checkpoint}' + (f' ({key})' if key else ''))
    except ValueError as err:
        raise BrokenWeights(str(err)) from None
    return state


def build_network(spec, device):
    """The network of a spec, with its checkpoint loaded (strict), in eval mode on ``device``.

    Raises:
        ValueError: Unknown network type, wrong arguments, or weights that do not fit (naming source and checkpoint).
        BrokenWeights: NaN or Inf weights (naming source, checkpoint and tensor).
    """
    from basicsr.utils.registry import ARCH_REGISTRY
    opt = dict(spec['network_g'])
    name = opt.pop('type', None)
    source = spec.get('source', spec['label'])
    if name not in ARCH_REGISTRY:
        import difflib
        close = difflib.get_close_matches(str(name), list(ARCH_REGISTRY.keys()), n=3)
        raise ValueError(f'{source}: network_g.type "{name}" is not a registered network'
                         f'{" (did you mean " + ", ".join(close) + "?)" if close else ""}: fix network_g.type.')
    try:
        net = ARCH_REGISTRY.get(name)(**opt)
    except TypeError as err:
        raise ValueError(f'{source}: network_g does not build {name}: {err}') from err
    try:
        state = load_state_dict(spec['checkpoint'], spec['param_key'])
        net.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise
    except BrokenWeights as err:
        raise BrokenWeights(f'{source}: {err}') from None
    except Exception as err:  # truncated file, foreign pickle, wrong network: say which checkpoint and spec
        msg = ' '.join(str(err).split())
        raise ValueError(f'{source}: checkpoint {spec["checkpoint"]} does not load into {name} '
                         f'({type(err).__name__}: {msg[:300]}): give the checkpoint of this network and options.')
    if not getattr(net, 'size_multiple', None):
        from fsr_tools.baselines import size_multiple
        net.size_multiple = size_multiple(name, opt)  # e.g. SwinIR: LR sizes in whole windows (padded here)
    return net.eval().to(device)


def check_networks(specs):
    """Build every network on the CPU with its checkpoint (strict) before anything is evaluated; raise on the first
    that fails. Each one is freed before the next is built."""
    for spec in specs:
        net = build_network(spec, torch.device('cpu'))
        del net


def super_resolve(net, lr, scale, device, keep_float=False):
    """SR of a BGR uint8 LR face (padding to the network's ``size_multiple``); returns a BGR uint8 image.

    Args:
        keep_float (bool): Also return the output before rounding (float64 BGR in [0, 255]), for protocols that
            score unrounded outputs: ``(uint8 image, float image)``.

    Raises:
        NonFiniteOutput: the output holds NaN or Inf (never rounded into an image).
    """
    with torch.no_grad():
        out = _super_resolve(net, lr, scale, device)
    sr = np.round(out).astype(np.uint8)
    return (sr, out.astype(np.float64)) if keep_float else sr


def _super_resolve(net, lr, scale, device):
    x = torch.from_numpy(np.ascontiguousarray(lr[..., ::-1].transpose(2, 0, 1))).float().div(255.)[None].to(device)
    h, w = x.shape[-2:]
    m = getattr(net, 'size_multiple', 1) or 1
    ph, pw = (m - h % m) % m, (m - w % m) % m
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode='replicate')
    out = net(x)
    if isinstance(out, (tuple, list)):
        out = out[0]  # e.g. W-Net's (sr, parsing)
    out = out[..., :h * scale, :w * scale]
    bad = int((~torch.isfinite(out)).sum())
    if bad:  # clamp and rounding would turn NaN into black pixels and a PSNR
        raise NonFiniteOutput(f'the network output holds {bad} NaN or Inf values of {out.numel()}')
    out = out.clamp(0, 1)
    return out[0].float().cpu().numpy().transpose(1, 2, 0)[..., ::-1] * 255.  # float32 BGR in [0, 255]


# ----------------------------------------------------------------------------------------------------------- metrics
_WORKER = {}  # a --workers process: its dlib models ('dlib'), or the error that loading them raised ('error')
MAX_QUEUED_PER_WORKER = 8  # outputs waiting for ID/LMD per worker before the network waits (memory stays bounded)


def _face_worker_init(models_dir, main_pid):
    """Pool initializer: Ctrl-C is the main process's business, the worker ends with the main process, the dlib models
    loaded once per worker (an error is reported by the first job, as one line in the main process)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from fsr_utils.safety import exit_with_main
    exit_with_main(main_pid)
    try:
        from fsr_metrics import face_metric as fm
        _WORKER['dlib'] = fm.get_dlib(models_dir)
    except Exception as e:
        _WORKER['error'] = f'{type(e).__name__}: {e}'


def _worker_dlib():
    if 'error' in _WORKER:
        raise RuntimeError(f'a --workers process could not load the dlib models: {_WORKER["error"]}')
    return _WORKER['dlib']


def hr_side(dlib_face, hr):
    """The HR face's side of ID and LMD: (face box as (left, top, right, bottom), descriptor, 68 landmarks)."""
    rgb = dlib_face.to_rgb(hr)
    box = dlib_face.face_box(rgb)
    corners = (box.left(), box.top(), box.right(), box.bottom())
    return corners, dlib_face.descriptor(rgb, box), dlib_face.landmarks68(rgb, box)


def sr_side(dlib_face, sr, box, desc, marks):
    """ID (cosine of the descriptors) and LMD (mean landmark distance) of one output, on the HR face's box."""
    rgb = dlib_face.to_rgb(sr)
    rect = dlib_face._dlib.rectangle(*box)
    identity = float(np.dot(dlib_face.descriptor(rgb, rect), desc))
    return identity, float(np.linalg.norm(dlib_face.landmarks68(rgb, rect) - marks, axis=1).mean())


def _hr_side_job(hr):
    return hr_side(_worker_dlib(), hr)


def _sr_side_job(sr, box, desc, marks):
    return sr_side(_worker_dlib(), sr, box, desc, marks)


class MetricSuite:
    """The benchmark's metrics; the ones whose weights are missing are left out with a note."""

    def __init__(self,
                 scale,
                 crop_border,
                 y_channel,
                 device,
                 lpips_trunk=None,
                 lpips_net='alex',
                 face_metrics=True,
                 dlib_models=None,
                 fid_weights=None,
                 niqe=False,
                 min_face_size=None,
                 reference=True,
                 num_faces=0,
                 protocol=None,
                 workers=1):
        """``protocol`` (:class:`fsr_metrics.protocols.Protocol`) sets PSNR/SSIM/VIF's channel, colour conversion,
        rounding, crop and SSIM window; without it, ``basicsr-y`` with ``y_channel`` and ``crop_border``.

        ``workers`` > 1: ID and LMD (dlib's descriptor and landmarks, most of the metric time) run in that many
        processes (:meth:`start_workers`, :meth:`prefetch_hr`, ``per_face(defer=True)``, :meth:`finish`); the same
        computations as in one process, so the same numbers."""
        from fsr_metrics import face_metric as fm
        from fsr_metrics import protocols
        self.fm = fm
        if protocol is None:
            protocol = protocols.resolve(protocols.DEFAULT, scale, rgb=not y_channel, crop_border=crop_border)
        self.protocol = protocol
        crop_border, y_channel = protocol.crop, protocol.y_channel
        self.crop_border, self.y_channel = crop_border, y_channel
        self.notes = []
        self.names = ['PSNR', 'SSIM', 'VIF'] if reference else []
        self.lpips = self.dlib = self.fid = None
        inner = None if min_face_size is None else min_face_size - 2 * crop_border
        if reference and inner is not None and inner < VIF_MIN_SIZE:
            self.names.remove('VIF')
            self.notes.append(f'VIF left out: its four scales of valid filtering need faces of at least '
                              f'{VIF_MIN_SIZE}x{VIF_MIN_SIZE} after the crop border; the smallest face here is '
                              f'{min_face_size} pixels, crop border {crop_border}.')
        if reference and (inner is None or inner >= GRID_MIN_SIZE):
            self.names.append('Grid')
        if reference:
            self._reference_metrics(fm, device, lpips_trunk, lpips_net, face_metrics, dlib_models, fid_weights)
        else:
            self.notes.append('No ground truth (`--no-gt`): only no-reference scores (`--niqe`).')
        self.niqe = self.niqe_set = False
        if niqe and inner is not None and inner < NIQE_MIN_SIZE:
            from fsr_metrics.niqe_set import BLOCK
            text = (f'BasicSR\'s per-face NIQE needs faces of at least {NIQE_MIN_SIZE}x{NIQE_MIN_SIZE} after the crop '
                    f'border (two 96-pixel blocks each way); the smallest face here is {min_face_size} pixels, crop '
                    f'border {crop_border}')
            if inner >= BLOCK and num_faces >= 2:
                self.niqe_set = True
                self.names += ['NIQE-set']
                self.notes.append(f'{text}: NIQE-set instead, one value per method over all {num_faces} faces (the '
                                  'central 96x96 block of each, BasicSR\'s features and pristine model, '
                                  '`fsr_metrics/niqe_set.py`).')
            else:
                self.notes.append(f'NIQE left out: {text}; NIQE-set needs {BLOCK} pixels after the crop border and '
                                  f'2 faces or more.')
        elif niqe:
            self.niqe = True
            self.names += ['NIQE']
        self._hr_cache = {}
        self.workers, self._dlib_models, self.pool, self._pending = workers, dlib_models, None, []

    def start_workers(self):
        """Start the ID/LMD processes (nothing when ``workers`` is 1 or ID/LMD are left out)."""
        if self.workers > 1 and self.dlib is not None and self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            method = 'forkserver' if 'forkserver' in multiprocessing.get_all_start_methods() else 'spawn'
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_face_worker_init,
                initargs=(self._dlib_models, os.getpid()))
        elif self.workers > 1 and self.pool is None:
            self.notes.append(f'--workers {self.workers} unused: no identity/landmark metric to run in parallel.')

    def prefetch_hr(self, faces):
        """The HR side of ID/LMD for every ``(name, hr)`` at once, in the worker processes (if any)."""
        if self.pool is None:  # (a pool exists only when ID/LMD are computed)
            return
        todo = [(name, hr) for name, hr in faces if hr is not None and name not in self._hr_cache]
        for (name, _), result in zip(todo, self.pool.map(_hr_side_job, [hr for _, hr in todo], chunksize=8)):
            self._hr_cache[name] = result

    def finish(self, keep=0):
        """Fill in the ID/LMD of the deferred :meth:`per_face` results, oldest first, until ``keep`` are left (0: all;
        waits for the workers). A worker's error names the method and face."""
        while len(self._pending) > keep:
            res, future, where = self._pending.pop(0)
            try:
                res['ID'], res['LMD'] = future.result()
            except Exception as err:
                raise RuntimeError(f'identity/landmark metrics of {where}: {type(err).__name__}: {err}') from None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def _reference_metrics(self, fm, device, lpips_trunk, lpips_net, face_metrics, dlib_models, fid_weights):
        """LPIPS/MPS, ID/LMD and FID where their weights are found; a note for each one left out."""
        if lpips_trunk:
            try:
                self.lpips = fm.get_lpips(lpips_trunk, lpips_net, device)
                self.names += ['LPIPS', 'MPS']
            except fm.BrokenWeightsError as err:
                raise fm.BrokenWeightsError(f'--lpips-trunk: {err}') from None
            except (FileNotFoundError, ValueError) as err:
                self.notes.append(f'LPIPS and MPS left out: {err}')
        else:
            self.notes.append(f'LPIPS and MPS left out: no `--lpips-trunk` (torchvision\'s '
                              f'{fm.LPIPS_TRUNK_FILES[lpips_net]}).')
        if face_metrics:
            try:
                self.dlib = fm.get_dlib(dlib_models)
                self.names += ['ID', 'LMD']
            except (FileNotFoundError, ImportError) as err:
                self.notes.append(f'Identity similarity and landmark distance left out: {err}')
        else:
            self.notes.append('Identity similarity and landmark distance left out: `--no-face-metrics`.')
        if fid_weights:
            try:
                self.fid = fm.FIDCalculator(fid_weights, device=device)
                self.names += ['FID']
            except fm.BrokenWeightsError as err:
                raise fm.BrokenWeightsError(f'--fid-weights: {err}') from None
            except (FileNotFoundError, ImportError) as err:
                self.notes.append(f'FID left out: {err}')
        else:
            self.notes.append(f'FID left out: no `--fid-weights` (pytorch-fid\'s {fm.FID_WEIGHTS_FILE}).')

    def _hr_face(self, name, hr):
        if name not in self._hr_cache:
            self._hr_cache[name] = hr_side(self.dlib, hr)
        return self._hr_cache[name]

    def grid(self, sr, bicubic, hr):
        """The grid score of one output (:func:`fsr_metrics.grid_score.grid_score`; Y channel, the protocol's crop)."""
        from fsr_metrics.grid_score import grid_score
        return float(grid_score(sr, bicubic, hr, crop_border=self.crop_border, input_order='bgr'))

    def per_face(self, name, sr, hr, sr_float=None, defer=False, method=''):
        """The per-face metrics of one output (all but the set metrics); ``hr`` is None without ground truth.

        ``sr`` is the 8-bit output; ``sr_float`` the output before rounding, which a protocol that scores unrounded
        outputs (``rounding`` False) needs for PSNR, SSIM and VIF. ``defer`` (with worker processes): ID and LMD are
        computed in a worker and filled into the returned dict by :meth:`finish`.
        """
        res = {}
        if self.niqe:
            from basicsr.metrics.niqe import calculate_niqe
            res['NIQE'] = calculate_niqe(sr, self.crop_border, input_order='HWC', convert_to='y')
        if hr is None:
            return {k: float(v) for k, v in res.items()}
        scored = sr
        if not self.protocol.rounding:
            if sr_float is None:
                raise ValueError(f'protocol {self.protocol.name} scores unrounded outputs: give sr_float.')
            scored = sr_float
        res.update(self.protocol.score(scored, hr))
        if 'VIF' in self.names:
            res['VIF'] = self.fm.calculate_face_vif(self.protocol.planes(scored), self.protocol.planes(hr))
        if self.lpips is not None:
            res['LPIPS'] = self.lpips(sr, hr)
            res['MPS'] = self.fm.mps_from(res['SSIM'], res['LPIPS'])
        future = None
        if self.dlib is not None:
            box, desc, marks = self._hr_face(name, hr)
            if defer and self.pool is not None:
                future = self.pool.submit(_sr_side_job, np.ascontiguousarray(sr), box, desc, marks)
            else:
                res['ID'], res['LMD'] = sr_side(self.dlib, sr, box, desc, marks)
        res = {k: float(v) for k, v in res.items()}
        if future is not None:
            self._pending.append((res, future, f'{method} face {name}'.strip()))
            self.finish(keep=MAX_QUEUED_PER_WORKER * self.workers)  # bounded: the outputs wait in memory
        return res


def protocol_text(args, source, num_faces, suite):
    lines = [f'- Data: {source}; {num_faces} faces; scale x{args.scale}.']
    if 'PSNR' in suite.names:
        lines += suite.protocol.lines()
        if 'VIF' in suite.names:
            lines.append(
                '- VIF: pixel-domain VIF (Sheikh & Bovik 2006, `vifp_mscale`), same channel, colour conversion, '
                'rounding and crop.')
    lines.append('- Bicubic: BasicSR\'s MATLAB-style `imresize` of the LR face.')
    if 'Grid' in suite.names:
        lines.append('- Grid (median over faces; per face in the per-face table): the share of the output\'s added '
                     'detail (output - bicubic, Y channel, same crop) at the frequencies of period-2 and period-4 '
                     'patterns, relative to the same share in the real detail (HR - bicubic) '
                     '(`fsr_metrics/grid_score.py`). Natural detail gives about 1, bicubic 0; far above 1 is a '
                     'periodic grid (checkerboard) drawn by the network.')
    if 'LPIPS' in suite.names:
        lines.append(f'- LPIPS: `lpips` v0.1, {args.lpips_net} trunk from `{args.lpips_trunk}`, RGB, whole face; '
                     'MPS = 0.5 * (SSIM + 1 - LPIPS) (TANet eq. 18).')
    if 'ID' in suite.names:
        lines.append('- ID: cosine of dlib\'s 128-d face descriptors of output and HR; LMD: mean distance (HR pixels) '
                     'of dlib\'s 68 landmarks; both from the face box dlib finds on the HR face (whole image if none).')
    if 'NIQE' in suite.names:
        lines.append('- NIQE: BasicSR\'s `calculate_niqe` (no reference: the output alone; Y channel, same crop); '
                     'lower is more natural.')
    if 'NIQE-set' in suite.names:
        lines.append(f'- NIQE-set: NIQE with the central 96x96 block of every output (Y channel, crop_border = '
                     f'{args.crop_border}) pooled over the {num_faces} faces (`fsr_metrics/niqe_set.py`; faces too '
                     'small for per-face NIQE); no reference; lower is more natural.')
    if 'FID' in suite.names:
        lines.append(f'- FID: pytorch-fid Inception (`{args.fid_weights}`), outputs vs HR faces, {num_faces} faces '
                     '(unreliable below a few thousand).')
    return lines


# ----------------------------------------------------------------------------------------------------------- outputs
def _fmt(metric, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    if math.isinf(value):
        return 'inf'
    return METRICS[metric][1].format(value)


def _csv_text(rows):
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def write_tables(out_dir, methods, names, per_face, means, protocol, notes, scale, extra=()):
    """Write ``benchmark_mean.csv``, ``benchmark_per_face.csv`` and ``benchmark.md``, each atomically (a reader sees
    the old file or the whole new one; a failed write raises ``OSError`` naming the file).

    Returns:
        list[str]: the Markdown lines.
    """
    from fsr_utils.safety import atomic_write_text
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(
        os.path.join(out_dir, 'benchmark_mean.csv'),
        _csv_text([['method'] + names] +
                  [[m] + [repr(means[m].get(n)) if means[m].get(n) is not None else '' for n in names]
                   for m in methods]))
    face_names = [n for n in names if n not in SET_METRICS]
    atomic_write_text(
        os.path.join(out_dir, 'benchmark_per_face.csv'),
        _csv_text([['face', 'method'] + face_names] + [[face, m] + [repr(rows[m][n]) for n in face_names]
                                                       for face, rows in per_face.items() for m in methods]))
    arrows = {n: '↑' if METRICS[n][0] == 'higher' else '↓' for n in names}
    md = [f'# Face super-resolution benchmark, x{scale}', '', '## Protocol', ''] + protocol + ['', '## Mean', '']
    md.append('| Method | ' + ' | '.join(f'{n} {arrows[n]}' for n in names) + ' |')
    md.append('|---|' + '---:|' * len(names))
    for m in methods:
        md.append(f'| {m} | ' + ' | '.join(_fmt(n, means[m].get(n)) for n in names) + ' |')
    if notes:
        md += ['', 'Notes:', ''] + [f'- {n}' for n in notes]
    md += list(extra)
    md += ['', '## Per face', '']
    md.append('| Face | Method | ' + ' | '.join(f'{n} {arrows[n]}' for n in face_names) + ' |')
    md.append('|---|---|' + '---:|' * len(face_names))
    for face, rows in per_face.items():
        for m in methods:
            md.append(f'| {face} | {m} | ' + ' | '.join(_fmt(n, rows[m][n]) for n in face_names) + ' |')
    atomic_write_text(os.path.join(out_dir, 'benchmark.md'), '\n'.join(md) + '\n')
    return md


def make_grid(rows, labels, path):
    """A PNG grid: one row per face (list of BGR images), a header with the column labels.

    Faces of different sizes are fine: each column is as wide as its widest image and each row as tall as its tallest,
    and every image sits at the top left of its cell on a white background (no resampling).
    """
    widths = [max(row[j].shape[1] for row in rows) for j in range(len(labels))]
    heights = [max(img.shape[0] for img in row) for row in rows]
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    w = min(widths)
    scale = max(0.3, min(0.5, w / 256))
    while scale > 0.25 and max(cv2.getTextSize(t, font, scale, thick)[0][0] for t in labels) > w - 4:
        scale -= 0.05
    header_h = int(cv2.getTextSize('Ag', font, scale, thick)[0][1] * 2.2) + 4
    gap = 2
    xs = [sum(widths[:j]) + j * gap for j in range(len(labels))]
    ys = [header_h + sum(heights[:i]) + i * gap for i in range(len(rows))]
    grid = np.full((ys[-1] + heights[-1] + gap, xs[-1] + widths[-1], 3), 255, np.uint8)
    for j, label in enumerate(labels):
        tw, th = cv2.getTextSize(label, font, scale, thick)[0]
        cv2.putText(grid, label, (xs[j] + max(0, (widths[j] - tw) // 2), (header_h + th) // 2), font, scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            h, w = img.shape[:2]
            grid[ys[i]:ys[i] + h, xs[j]:xs[j] + w] = img
    from fsr_utils.safety import atomic_imwrite
    atomic_imwrite(path, grid)
    return grid


def paper_test_sets(paper, scale):
    """The test sets ``paper`` reports at ``scale``, in its order."""
    from fsr_metrics import paper_results
    return list(dict.fromkeys(r[2] for r in paper_results.paper_rows(paper, scale=scale)))


def paper_table(paper, scale, measured_methods, means, names, y_channel, crop_border, dataset=None, protocol=None):
    """Markdown lines: the paper's rows at this scale (marked "paper"; only test set ``dataset`` if given) beside the
    measured rows, each with its protocol, then the paper's protocol beside ours choice by choice, and the
    differences. Empty when the paper reports nothing at this scale (a line says so).

    Args:
        protocol (Protocol | None): The measured rows' protocol (:func:`fsr_metrics.protocols.resolve`); None:
            ``basicsr-y`` with ``y_channel`` and ``crop_border``.
    """
    from fsr_metrics import paper_results, protocols
    if protocol is None:
        protocol = protocols.resolve(protocols.DEFAULT, scale, rgb=not y_channel, crop_border=crop_border)
    rows = paper_results.paper_rows(paper, scale=scale, dataset=dataset)
    lines = ['', f'## Beside the paper ({paper})', '']
    if not rows:
        return lines + [f'{paper} reports no figures at x{scale}.']
    cols = list(names)
    for r in rows:
        cols += [k for k in r[5] if k not in cols]
    lines.append('| Source | Table | Test set | Method | ' + ' | '.join(cols) + ' | Protocol |')
    lines.append('|---|---|---|---|' + '---:|' * len(cols) + '---|')
    paper_cell = paper_results.paper_protocol_cell(paper)
    for _, table, dataset, _, method, values in rows:
        cells = [(METRICS[c][1].format(values[c]) if c in METRICS else f'{values[c]}') if c in values else '-'
                 for c in cols]
        lines.append(f'| paper | {table} | {dataset} | {method} | ' + ' | '.join(cells) + f' | {paper_cell} |')
    ours = f'`{protocol.label()}`: {protocol.summary()}'
    for m in measured_methods:
        cells = [_fmt(c, means[m].get(c)) if c in METRICS else '-' for c in cols]
        lines.append(f'| measured here | - | this data | {m} | ' + ' | '.join(cells) + f' | {ours} |')
    lines += [''] + paper_results.protocol_comparison(paper, protocol)
    lines += [''] + [
        f'- {t}' for t in paper_results.protocol_differences(paper, y_channel, crop_border, scale, protocol=protocol)
    ]
    return lines


# ------------------------------------------------------------------------------------------------ the output folder
MANIFEST = 'benchmark.json'  # the files fsr-benchmark wrote in the folder, with their SHA-256
TABLE_FILES = ('benchmark.md', 'benchmark_mean.csv', 'benchmark_per_face.csv')
LEGACY_FILES = TABLE_FILES + ('grid.png', )  # what a run before benchmark.json wrote, recognised by benchmark.md


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def planned_outputs(methods, face_names, grid, save_images):
    """Paths (relative to ``--out``) of the files a run writes, ``benchmark.json`` aside."""
    files = list(TABLE_FILES) + (['grid.png'] if grid else [])
    if save_images:
        files += [f'images/{m}/{name}.png' for m in methods for name in face_names]
    return files


def earlier_outputs(out):
    """``{relative path: SHA-256 or None}`` of the files earlier fsr-benchmark runs wrote in ``out``.

    From ``benchmark.json``; a folder of a run made before it existed is recognised by its ``benchmark.md`` (the
    table files and ``grid.png``, no hash). None when ``benchmark.json`` is there but not fsr-benchmark's.
    """
    path = os.path.join(out, MANIFEST)
    if os.path.lexists(path):
        try:
            with open(path, encoding='utf-8') as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        files = record.get('files') if isinstance(record, dict) and record.get('tool') == 'fsr-benchmark' else None
        return dict(files) if isinstance(files, dict) else None
    md = os.path.join(out, 'benchmark.md')
    if os.path.isfile(md) and not os.path.islink(md):
        with open(md, encoding='utf-8', errors='replace') as f:
            if f.readline().startswith('# Face super-resolution benchmark, x'):
                return {name: None for name in LEGACY_FILES}
    return {}


def foreign_outputs(out, planned, owned):
    """The paths among ``planned`` (and on the way to them) that hold something fsr-benchmark did not write, or that
    changed since it wrote them (another SHA-256), or a link: they are never written over."""
    foreign = [] if owned is not None else [MANIFEST]
    owned = owned or {}
    seen = set()
    for rel in planned:
        parent = os.path.dirname(rel)
        while parent and parent not in seen:  # a file or a link where a folder of ours goes
            seen.add(parent)
            path = os.path.join(out, parent)
            if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
                foreign.append(parent)
            parent = os.path.dirname(parent)
        path = os.path.join(out, rel)
        if not os.path.lexists(path):
            continue
        if (os.path.islink(path) or not os.path.isfile(path) or rel not in owned
                or (owned[rel] is not None and _sha256(path) != owned[rel])):
            foreign.append(rel)
    return foreign


def write_manifest(out, files, argv=None):
    """``benchmark.json``: the files of ``out`` this tool wrote (``None``: being written), written atomically."""
    from fsr_utils.safety import atomic_write_text
    record = dict(tool='fsr-benchmark', command=['fsr-benchmark'] + list(argv or []), files=dict(sorted(files.items())))
    atomic_write_text(os.path.join(out, MANIFEST), json.dumps(record, indent=1) + '\n')


def finish_outputs(out, planned, owned, argv=None):
    """After a run: hash what it wrote, remove the unchanged files of an earlier run that this one did not write again
    (they would describe another run), and write ``benchmark.json``."""
    files = {rel: _sha256(os.path.join(out, rel)) for rel in planned}
    for rel, digest in (owned or {}).items():
        path = os.path.join(out, rel)
        if rel in files or not os.path.isfile(path) or os.path.islink(path):
            continue
        if digest is None:
            files[rel] = None  # an earlier run's file without a hash (written before benchmark.json): kept, still ours
        elif _sha256(path) == digest:
            os.remove(path)
            folder = os.path.dirname(path)
            while _strictly_inside(folder, out) and not os.listdir(folder):
                os.rmdir(folder)  # an images/<method>/ folder left empty by the removal
                folder = os.path.dirname(folder)
        # a changed file is the user's now: kept, and no longer listed
    write_manifest(out, files, argv)
    return files


def _strictly_inside(path, folder):
    from fsr_utils.safety import is_within, real
    return is_within(path, folder) and real(path) != real(folder)


# -------------------------------------------------------------------------------------------------------------- main
def _device_arg(text):
    if text in ('auto', 'cpu', 'cuda') or (text.startswith('cuda:') and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f'must be auto, cpu, cuda or cuda:N, not {text!r}')


def parse_args(argv=None):
    """The options; every number is checked here (one ``error:`` line naming the option and its range, exit 2)."""
    from fsr_metrics import protocols
    from fsr_utils.safety import int_range
    p = argparse.ArgumentParser(
        prog='fsr-benchmark',
        description='Evaluate bicubic and trained networks on a face test set; write Markdown/CSV tables and an image '
        'grid that state the protocol.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        '--data',
        required=True,
        help='prepared dataset folder (hr.lmdb + lr_xS.lmdb, or hr/ + lr_xS/) '
        'or a folder of HR faces')
    p.add_argument('--scale', type=int_range(2, 16), required=True, help='upscaling factor, 2-16 (networks: 4 or 8)')
    p.add_argument('--opt', action='append', default=[], help='BasicSR options file of a network (repeatable)')
    p.add_argument('--net', action='append', default=[], help='LABEL=CHECKPOINT[,OPTIONS.yml] (repeatable)')
    p.add_argument('--out', default=None, help='output folder (default: results/benchmark_x<scale>)')
    p.add_argument(
        '--protocol',
        default=protocols.DEFAULT,
        choices=protocols.NAMES,
        help='PSNR/SSIM protocol preset (channel, colour conversion, rounding, crop border, SSIM window; '
        'fsr_metrics/protocols.py, docs/evaluation.md): basicsr-y (BasicSR, Y, crop = scale), rgb (MMagic), dic '
        '(DIC\'s code), skimage (scikit-image defaults), or what a paper states: laat, aminet, tanet, wnet')
    p.add_argument('--rgb', action='store_true', help='override: PSNR/SSIM/VIF on RGB instead of the preset\'s channel')
    p.add_argument(
        '--crop-border',
        type=int_range(0),
        default=None,
        help='override: pixels cropped at each edge, >= 0 (default: the preset\'s, the scale for most); '
        f'at least {SSIM_MIN_SIZE} pixels of the smallest face must remain')
    p.add_argument('--lpips-trunk', default=None, help='torchvision trunk weights for LPIPS (alexnet-owt-7be5be79.pth)')
    p.add_argument('--lpips-net', default='alex', choices=['alex', 'vgg'])
    p.add_argument('--fid-weights', default=None, help='pytorch-fid pt_inception-2015-12-05-6726825d.pth')
    p.add_argument('--dlib-models', default=None, help='folder of dlib .dat files (default: face_recognition_models)')
    p.add_argument('--no-face-metrics', action='store_true', help='skip identity similarity and landmark distance')
    p.add_argument(
        '--workers',
        type=int_range(1, 256),
        default=1,
        help='processes for identity similarity and landmark distance (dlib: most of the metric time on 1,000 faces), '
        '1-256; the scores are the same for any value')
    niqe_help = (f'add NIQE, a no-reference score of the output alone (faces of {NIQE_MIN_SIZE} px + 2 crop borders; '
                 'smaller faces: NIQE-set, one value over the set, see fsr_metrics/niqe_set.py)')
    p.add_argument('--niqe', action='store_true', help=niqe_help)
    p.add_argument(
        '--no-gt',
        action='store_true',
        help='faces without ground truth: --data holds LR faces (lr_xS.lmdb, lr_xS/ or '
        'image files); only no-reference scores (--niqe) and the grid')
    p.add_argument(
        '--grid-faces', type=int_range(0, 100), default=4, help='faces shown in grid.png, 0-100 (0: no grid)')
    p.add_argument('--save-images', action='store_true', help='save every output under <out>/images/<method>/')
    p.add_argument('--device', type=_device_arg, default='auto', help='auto, cpu, cuda or cuda:N')
    p.add_argument('--limit', type=int_range(1), default=None, help='evaluate the first N faces only (N >= 1)')
    p.add_argument(
        '--paper',
        default=None,
        choices=['laat', 'aminet', 'amigan', 'tanet', 'wnet'],
        help='print the figures this paper reports at this scale beside the measured rows')
    p.add_argument('--paper-set', help='with --paper: only the rows of this test set (e.g. CelebA, Helen, FFHQ)')
    p.add_argument('--debug', action='store_true', help='show the traceback of an error (also: FSR_DEBUG=1)')
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # the preset with the old flags as overrides; args.crop_border is the border used from here on
    args.proto = protocols.resolve(args.protocol, args.scale, rgb=args.rgb, crop_border=args.crop_border)
    args.crop_border = args.proto.crop
    if args.out is None:
        args.out = os.path.join('results', f'benchmark_x{args.scale}')
    return args


def _device(text):
    """The torch device of ``--device``, refused (UsageError) when it is not there."""
    from fsr_utils.safety import UsageError
    if text == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if text.startswith('cuda'):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text[5:]) if ':' in text else 0
        if index >= count:
            raise UsageError(
                f'--device {text}: this machine has {count} CUDA device(s)'
                f'{" (cuda:0 to cuda:" + str(count - 1) + ")" if count else ""}: use --device cpu or auto.')
    return torch.device(text)


def _inputs(args, specs):
    """``(path, option)`` of every input, for the output checks."""
    inputs = [(args.data, '--data')]
    for spec in specs:
        inputs += [(spec['checkpoint'], spec['source']), (spec.get('options'), spec['source'])]
    inputs += [(args.lpips_trunk, '--lpips-trunk'), (args.fid_weights, '--fid-weights'),
               (args.dlib_models, '--dlib-models')]
    return [(path, option) for path, option in inputs if path]


def _check_crop_border(faces, args):
    """The crop border must leave at least an SSIM window of the smallest face."""
    from fsr_utils.safety import UsageError
    name, h, w = min(((n, lr.shape[0] * args.scale, lr.shape[1] * args.scale) for n, _, lr in faces),
                     key=lambda t: min(t[1:]))
    left = min(h, w) - 2 * args.crop_border
    if left < SSIM_MIN_SIZE:
        raise UsageError(f'--crop-border {args.crop_border} leaves {max(left, 0)} pixels of face {name} ({h}x{w} '
                         f'at HR size); the metrics need at least {SSIM_MIN_SIZE}: give --crop-border '
                         f'{max(0, (min(h, w) - SSIM_MIN_SIZE) // 2)} or less.')


def prepare(args):
    """Every check, before any face is scored: device, data, networks and checkpoints (built, weights loaded strictly,
    finite), every LR/HR pair, crop border, output folder and the files in it. Takes the output folder's lock.

    Returns:
        dict: the plan for :func:`execute` (its ``lock`` is held: release it, as :func:`run` does).
    """
    from fsr_utils import safety
    device = _device(args.device)
    if not os.path.isdir(args.data):
        raise FileNotFoundError(f'--data {args.data} is not a folder: give a prepared dataset folder (hr.lmdb + '
                                f'lr_x{args.scale}.lmdb) or a folder of HR faces.')
    if args.no_gt and args.paper:
        raise ValueError('--paper compares reference metrics (PSNR, SSIM): it needs ground truth, not --no-gt.')
    _load_plugin()
    if args.paper_set:
        sets = paper_test_sets(args.paper, args.scale) if args.paper else None
        if sets is None:
            raise ValueError('--paper-set chooses the test set of --paper: give --paper too.')
        if args.paper_set.lower() not in [t.lower() for t in sets]:
            raise ValueError(f'--paper-set {args.paper_set}: {args.paper} reports at x{args.scale} on '
                             f'{", ".join(sets) or "no test set"}.')
    specs = parse_net_specs(args.opt, args.net, args.scale)
    safety.check_output_path(args.out, '--out', _inputs(args, specs))
    check_networks(specs)  # every network and checkpoint, before any face is evaluated
    faces, source = (load_lr_faces if args.no_gt else load_faces)(args.data, args.scale)
    if args.limit:
        faces = faces[:args.limit]
    _check_crop_border(faces, args)
    methods = ['Bicubic'] + [s['label'] for s in specs]
    # grid faces spread evenly over the set (first and last included): e.g. one draw per face of fsr-degrade --draws
    n_grid = min(args.grid_faces, len(faces))
    grid_names = [faces[i][0] for i in sorted(set(np.linspace(0, len(faces) - 1, n_grid).round().astype(int)))]
    planned = planned_outputs(methods, [n for n, _, _ in faces], bool(grid_names), args.save_images)
    suite = MetricSuite(
        args.scale,
        args.crop_border,
        args.proto.y_channel,
        device,
        args.lpips_trunk,
        args.lpips_net,
        not args.no_face_metrics,
        args.dlib_models,
        args.fid_weights,
        args.niqe,
        min(min(lr.shape[:2]) * args.scale for _, _, lr in faces),
        reference=not args.no_gt,
        num_faces=len(faces),
        protocol=args.proto,
        workers=args.workers)
    lock = safety.FolderLock(args.out, 'fsr-benchmark', '--out').acquire()
    try:
        owned = earlier_outputs(args.out)
        foreign = foreign_outputs(args.out, planned, owned)
        if foreign:
            more = f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''
            raise safety.UsageError(
                f'--out {args.out}: {", ".join(foreign[:3])}{more} {"is" if len(foreign) == 1 else "are"} not '
                'fsr-benchmark\'s (not written by it, or changed since): fsr-benchmark never writes over what it did '
                'not write. Move it away, or choose another --out.')
    except BaseException:
        lock.release()
        raise
    return dict(
        device=device,
        specs=specs,
        faces=faces,
        source=source,
        methods=methods,
        grid_names=grid_names,
        planned=planned,
        owned=owned,
        suite=suite,
        lock=lock)


def execute(args, plan):
    """Score every face with bicubic and each network and write the outputs (the plan of :func:`prepare`).

    Returns:
        tuple: ``(methods, means, per_face, notes, markdown lines)``.
    """
    faces, methods, suite = (plan[k] for k in ('faces', 'methods', 'suite'))
    # the files about to be written are listed first, so that a run killed half-way leaves them recognisable as ours
    write_manifest(args.out, {**(plan['owned'] or {}), **{rel: None for rel in plan['planned']}}, args.argv)
    per_face = {name: {} for name, _, _ in faces}
    outputs = {m: {} for m in methods}
    suite.start_workers()
    try:
        suite.prefetch_hr([(name, hr) for name, hr, _ in faces])
        score_methods(args, plan, suite, per_face, outputs)
        suite.finish()
    finally:
        suite.close()
    return summarise(args, plan, suite, per_face, outputs)


def score_methods(args, plan, suite, per_face, outputs):
    """Run bicubic and each network on every face and score the outputs (ID/LMD deferred with ``--workers``)."""
    from tqdm import tqdm

    from fsr_utils.safety import atomic_imwrite
    faces, methods, device, grid_names = (plan[k] for k in ('faces', 'methods', 'device', 'grid_names'))
    bicubic_out = {}  # the grid score compares each output's added detail with bicubic's (methods[0])
    for method, spec in zip(methods, [None] + plan['specs']):
        net = build_network(spec, device) if spec else None
        for name, hr, lr in tqdm(faces, desc=method, unit='face', file=sys.stdout):
            sr_float = None  # the output before rounding, for a protocol that scores it unrounded
            if net is None:
                sr = matlab_bicubic(lr, args.scale)
                if not suite.protocol.rounding:
                    sr_float = matlab_bicubic_float(lr, args.scale)
            else:
                try:
                    sr = super_resolve(net, lr, args.scale, device, keep_float=not suite.protocol.rounding)
                    if isinstance(sr, tuple):
                        sr, sr_float = sr
                except NonFiniteOutput as err:
                    raise NonFiniteOutput(f'{method} ({spec["source"]}, checkpoint {spec["checkpoint"]}): {err} for '
                                          f'face {name}; no score is computed from it. The checkpoint or the network '
                                          'is broken for this input (e.g. trained into a divergence).') from None
            if hr is not None and sr.shape != hr.shape:
                raise ValueError(f'{method} gives {sr.shape} for face {name}, the HR face is {hr.shape}.')
            per_face[name][method] = suite.per_face(name, sr, hr, sr_float, defer=True, method=method)
            if 'Grid' in suite.names:
                if net is None:
                    bicubic_out[name] = sr
                per_face[name][method]['Grid'] = suite.grid(sr, bicubic_out[name], hr)
            if suite.fid is not None or suite.niqe_set or name in grid_names:
                outputs[method][name] = sr
            if args.save_images:
                atomic_imwrite(os.path.join(args.out, 'images', method, f'{name}.png'), sr)
        del net


def summarise(args, plan, suite, per_face, outputs):
    """Means, set metrics, tables and pictures of the scored faces (see :func:`run`)."""
    faces, methods, grid_names = (plan[k] for k in ('faces', 'methods', 'grid_names'))
    face_names = [n for n in suite.names if n not in SET_METRICS]
    means = {m: {n: float(np.mean([per_face[f][m][n] for f in per_face])) for n in face_names} for m in methods}
    if 'Grid' in suite.names:  # a median: one face with a strong grid should not hide the others, nor dominate
        from fsr_metrics.grid_score import median_grid_score
        for m in methods:
            means[m]['Grid'] = float(median_grid_score([per_face[f][m]['Grid'] for f in per_face]))
    if suite.fid is not None:
        hr_feats = suite.fid.features([hr for _, hr, _ in faces])
        for m in methods:
            means[m]['FID'] = suite.fid.frechet(suite.fid.features([outputs[m][n] for n, _, _ in faces]), hr_feats)
    if suite.niqe_set:
        from fsr_metrics.niqe_set import calculate_niqe_set
        for m in methods:
            means[m]['NIQE-set'] = calculate_niqe_set([outputs[m][n] for n, _, _ in faces], args.crop_border)
    protocol = protocol_text(args, plan['source'], len(faces), suite)
    extra = paper_table(
        args.paper,
        args.scale,
        methods,
        means,
        suite.names,
        args.proto.y_channel,
        args.crop_border,
        args.paper_set,
        protocol=args.proto) if args.paper else []
    md = write_tables(args.out, methods, suite.names, per_face, means, protocol, suite.notes, args.scale, extra)
    if grid_names:
        lookup = {name: (hr, lr) for name, hr, lr in faces}
        rows = []
        for name in grid_names:
            hr, lr = lookup[name]
            lr_up = cv2.resize(
                lr, (lr.shape[1] * args.scale, lr.shape[0] * args.scale), interpolation=cv2.INTER_NEAREST)
            rows.append([lr_up] + [outputs[m][name] for m in methods] + ([hr] if hr is not None else []))
        make_grid(rows, ['LR'] + methods + ([] if args.no_gt else ['HR']), os.path.join(args.out, 'grid.png'))
    finish_outputs(args.out, plan['planned'], plan['owned'], args.argv)
    return methods, means, per_face, suite.notes, md


def run(args):
    """Run the benchmark (:func:`prepare`, then :func:`execute` under the output folder's lock); returns
    ``(methods, means, per_face, notes)``."""
    plan = prepare(args)
    try:
        return execute(args, plan)[:4]
    finally:
        plan['lock'].release()


def _fail(args, exc, status):
    """Print one ``error:`` line for ``exc`` and exit with ``status`` (the traceback behind --debug / FSR_DEBUG)."""
    from fsr_utils.safety import UsageError, error_exit
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    plain = isinstance(exc, (UsageError, FileNotFoundError, FileExistsError, ValueError, KeyError))
    msg = str(text if plain else f'{type(exc).__name__}: {exc}')
    hint = '' if isinstance(exc, UsageError) else ' (--debug shows the traceback)'
    sys.exit(error_exit(msg + hint, status))


def main(argv=None):
    """Entry point of ``fsr-benchmark``: exit status 0; 2 when a check before any face is scored fails (options,
    data, networks, output folder); 1 when the work itself fails (a non-finite output, a failed write)."""
    args = parse_args(argv)
    debug = args.debug or os.environ.get('FSR_DEBUG', '0') not in ('', '0')
    try:
        plan = prepare(args)
    except Exception as exc:  # one line for the user; the traceback behind --debug / FSR_DEBUG
        if debug:
            raise
        _fail(args, exc, 2)
    try:
        md = execute(args, plan)[4]
    except Exception as exc:
        if debug:
            raise
        _fail(args, exc, 1)
    finally:
        plan['lock'].release()
    text = '\n'.join(md)
    print(text.split('## Per face')[0].rstrip())
    wrote = ', '.join(
        list(TABLE_FILES[1:]) + (['grid.png'] if plan['grid_names'] else []) +
        (['images/'] if args.save_images else []) + [MANIFEST])
    print(f'\nWrote {args.out}/{TABLE_FILES[0]}, {wrote}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
