"""``fsr-infer``: restore every face in your own photos with a trained FSR network.

Usage::

    fsr-infer -i PHOTO_OR_FOLDER -o OUT --opt options/test_tanet_x4.yml --weights experiments/.../net_g_latest.pth
    fsr-infer -i PHOTO_OR_FOLDER -o OUT --net TANet --scale 4 --weights CKPT      # the paper configuration
    fsr-infer -i FOLDER_OF_ALIGNED_CROPS -o OUT --opt ... --weights CKPT --aligned

Pipeline per photo (the same pre-processing as the training data made by ``fsr-prepare``):

1. read with ``cv2.IMREAD_UNCHANGED`` (grayscale, RGB, RGBA, 8 or 16 bit; the EXIF orientation is applied);
2. detect every face (:class:`fsr_data.face_align.FaceDetector`, 5 landmarks; on a copy at most ``--detect-max-side``
   pixels long, so detection memory stays bounded on large photos);
3. align each face to the HR size with :func:`fsr_data.face_align.align_face` (the function ``fsr-prepare`` uses),
   down-sample the HR-size crop to the LR size with BasicSR's MATLAB-style ``imresize`` (as the LR training data is
   made), quantized to 8 bits for 8-bit photos as in the LMDBs;
4. run the network on batches of ``--batch-size`` faces (never on the whole photo), padding to its ``size_multiple``;
5. paste each restored face back with the inverse similarity transform and a feathered (soft) mask; pixels outside the
   masks keep the input values exactly (``--upscale k`` first enlarges the photo bicubically, then pastes the faces at
   that resolution);
6. write ``OUT/<name>.png`` (same channels and bit depth as the input), the aligned LR and SR crops in ``OUT/crops/``,
   optionally the blend masks (``--save-masks``), and ``OUT/summary.json``.

Problems with one file (unreadable, no face, wrong size for ``--aligned``) skip that file with a reason in the summary;
problems with the network or the weights (missing file, checkpoint of another network or scale, unsafe pickle) stop
with a clear message before any photo is processed. Checkpoints are read with ``torch.load(weights_only=True)`` on the
CPU and moved to the chosen device afterwards.

Exit status: 0 when at least one image was restored, 1 when none was (everything skipped), 2 on a setup error.
"""
import argparse
import cv2
import json
import numpy as np
import os
import sys
import time

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')
DEFAULT_HR_SIZE = (128, 128)  # fsr-prepare's default HR size
FALLBACK_SCALES = (2, 4, 8, 16)  # scales tried to explain a checkpoint that does not fit the network


class InferError(Exception):
    """A setup problem (options, network, weights, device): reported as ``error: ...`` with exit status 2."""


class SkipImage(Exception):
    """A problem with one input file: the file is skipped and listed with the reason in the summary."""


# ----------------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------------
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


def write_image(path, img):
    """Write an image (PNG for ``.png``), creating folders; works with non-ASCII paths."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', np.ascontiguousarray(img))
    if not ok:
        raise OSError(f'cannot encode {path}')
    buf.tofile(path)


def rgb_float_to_uint8_bgr(rgb):
    return cv2.cvtColor((np.clip(rgb, 0, 1) * 255.).round().astype(np.uint8), cv2.COLOR_RGB2BGR)


def list_inputs(input_path, out_dir):
    """Images to process as ``[(path, relative name)]`` and the files ignored for their extension."""
    if os.path.isfile(input_path):
        return [(input_path, os.path.basename(input_path))], []
    if not os.path.isdir(input_path):
        raise InferError(f'input {input_path} does not exist (-i / --input: a photo or a folder of photos).')
    out_real = os.path.realpath(out_dir)
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


# ----------------------------------------------------------------------------------------------------------------------
# network and weights
# ----------------------------------------------------------------------------------------------------------------------
def _parse_size(text):
    """'128' -> (128, 128); '216x176' / '216,176' -> (216, 176)."""
    parts = str(text).lower().replace(',', 'x').split('x')
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
    return size


def load_options(opt_path):
    import yaml
    if not os.path.isfile(opt_path):
        raise InferError(f'options file {opt_path} does not exist (--opt).')
    with open(opt_path) as f:
        try:
            opt = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise InferError(f'options file {opt_path} is not valid YAML: {e}')
    if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
        raise InferError(f'options file {opt_path} has no network_g: {{type: ...}} section (use a BasicSR options file '
                         'such as options/test_tanet_x4.yml).')
    return opt


def network_spec(opt=None, net_name=None, scale=None):
    """Network type, constructor kwargs, scale and option-file hints from ``--opt`` or ``--net`` + ``--scale``."""
    from basicsr.utils.registry import ARCH_REGISTRY
    if opt is not None:
        kwargs = dict(opt['network_g'])
        name = kwargs.pop('type')
        opt_scale = opt.get('scale', kwargs.get('upscale'))
        if scale is not None and opt_scale is not None and int(scale) != int(opt_scale):
            raise InferError(f'--scale {scale} contradicts the options file (scale: {opt_scale}); drop --scale or use '
                             f'the x{scale} options file.')
        scale = int(opt_scale if opt_scale is not None else (scale or 4))
        if 'upscale' in kwargs and int(kwargs['upscale']) != scale:
            raise InferError(f'options file: network_g.upscale ({kwargs["upscale"]}) != scale ({scale}).')
        path_opt = opt.get('path') or {}
        return dict(
            name=name,
            kwargs=kwargs,
            scale=scale,
            weights=path_opt.get('pretrain_network_g'),
            param_key=path_opt.get('param_key_g'),
            source='options file')
    if net_name is None:
        raise InferError('say which network to run: --opt options/test_X.yml, or --net NAME --scale S.')
    scale = int(scale or 4)
    if net_name not in ARCH_REGISTRY:
        plugin = sorted(n for n, c in ARCH_REGISTRY._obj_map.items() if c.__module__.startswith('fsr_arch'))
        raise InferError(f'unknown network {net_name!r} (--net); the plugin has {", ".join(plugin)}.')
    cls = ARCH_REGISTRY.get(net_name)
    configs = getattr(sys.modules[cls.__module__], 'PAPER_CONFIGS', None)
    if not configs or f'x{scale}' not in configs:
        raise InferError(f'network {net_name} has no paper configuration for x{scale} (PAPER_CONFIGS in '
                         f'{cls.__module__}); use --opt with a network_g section instead.')
    kwargs = dict(configs[f'x{scale}'])
    kwargs['upscale'] = scale
    return dict(name=net_name, kwargs=kwargs, scale=scale, weights=None, param_key=None, source='paper config')


def build_network(spec, scale=None):
    """Instantiate the network of ``spec`` (with ``upscale`` replaced by ``scale`` if given)."""
    from basicsr.utils.registry import ARCH_REGISTRY
    kwargs = dict(spec['kwargs'])
    if scale is not None:
        kwargs['upscale'] = scale
    try:
        cls = ARCH_REGISTRY.get(spec['name'])
    except KeyError:
        raise InferError(f'network type {spec["name"]!r} is not registered (network_g.type).')
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InferError(f'cannot build {spec["name"]} with {kwargs}: {e}')


def _state_dict_diff(net, state):
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def read_checkpoint(path, param_key=None):
    """Read a BasicSR checkpoint safely and return ``(state_dict, key_used)``.

    ``torch.load(weights_only=True)`` on the CPU (no code from the file runs). ``param_key`` (e.g. 'params_ema') is
    used when present; otherwise 'params_ema', then 'params', then a bare state dict.
    """
    import torch
    if not path:
        raise InferError('no weights given: pass --weights CKPT (a net_g_*.pth of BasicSR training), or set '
                         'path: pretrain_network_g in the options file.')
    if not os.path.isfile(path):
        raise InferError(f'weights file {path} does not exist (--weights / path:pretrain_network_g). Train the network '
                         'first (fsr-train) or pass the path of its experiments/<name>/models/net_g_*.pth.')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe pickles, RuntimeError / EOFError for corrupt files
        raise InferError(f'cannot load weights file {path} safely (torch.load weights_only=True): '
                         f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}. Expected a BasicSR '
                         "checkpoint {'params': state_dict} (experiments/<name>/models/net_g_*.pth).")
    if not isinstance(ckpt, dict):
        raise InferError(f'weights file {path} holds a {type(ckpt).__name__}, not a state dict.')
    keys = [param_key] if param_key else []
    keys += [k for k in ('params_ema', 'params') if k not in keys]
    used = next((k for k in keys if isinstance(ckpt.get(k), dict)), None)
    state = ckpt[used] if used else ckpt
    if 'optimizers' in state or 'schedulers' in state:
        raise InferError(f'weights file {path} is a training state (training_states/*.state), not network weights: '
                         'pass experiments/<name>/models/net_g_*.pth.')
    if not state or not all(hasattr(v, 'shape') for v in state.values()):
        raise InferError(f'weights file {path} has no network weights under {keys} (keys: {sorted(ckpt)[:8]}).')
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    return state, used or '(bare state dict)'


def load_weights(net, spec, path, param_key=None):
    """Load ``path`` into ``net`` (strict) or raise an :class:`InferError` saying what the checkpoint is for."""
    state, used = read_checkpoint(path, param_key)
    missing, unexpected, shapes = _state_dict_diff(net, state)
    if not (missing or unexpected or shapes):
        net.load_state_dict(state, strict=True)
        return used
    desc = f'{spec["name"]} x{spec["scale"]}'
    for other in FALLBACK_SCALES:  # is it the same network trained for another scale?
        if other == spec['scale'] or 'upscale' not in spec['kwargs']:
            continue
        try:
            alt = build_network(spec, scale=other)
        except InferError:
            continue
        if not any(_state_dict_diff(alt, state)):
            raise InferError(f'weights file {path} is a checkpoint of {spec["name"]} for scale x{other}, but the '
                             f'network is {desc}: use the x{other} options file (or --scale {other}) or the x'
                             f'{spec["scale"]} checkpoint.')
    details = []
    if shapes:
        k, s_ckpt, s_net = shapes[0]
        details.append(f'{len(shapes)} tensors of another shape (e.g. {k}: {list(s_ckpt)} in the file, '
                       f'{list(s_net)} in the network)')
    if missing:
        details.append(f'{len(missing)} missing (e.g. {missing[0]})')
    if unexpected:
        details.append(f'{len(unexpected)} unexpected (e.g. {unexpected[0]})')
    raise InferError(f'weights file {path} does not fit {desc} ({spec["source"]}): {"; ".join(details)}. It is a '
                     'checkpoint of another network, another configuration (width/depth) or another scale: use the '
                     'options file it was trained with.')


def pick_output(out):
    """The SR image of a network output (a tensor, or the first tensor of a tuple/list/dict, e.g. W-Net's)."""
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        for key in ('sr', 'out', 'output'):
            if key in out:
                return out[key]
        return next(iter(out.values()))
    return out


def run_network(net, lr, scale, device):
    """SR of a batch of LR crops (N, h, w, 3) float32 [0, 1] RGB -> (N, h*s, w*s, 3) float32, padded to the
    network's ``size_multiple`` as FSRModel does at test time."""
    import torch
    from torch.nn import functional as F
    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(0, 3, 1, 2))).float().to(device)
    h, w = x.shape[-2:]
    multiple = int(getattr(net, 'size_multiple', 1) or 1)
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if pad_h < h and pad_w < w else 'replicate')
    with torch.no_grad():
        out = pick_output(net(x))
    expected = (x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale)
    if not torch.is_tensor(out) or tuple(out.shape) != expected:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise InferError(
            f'the network returned {got} for an input of {tuple(x.shape)}; expected {expected} (x{scale}). '
            'The network and the scale of the options do not match.')
    out = out[..., :h * scale, :w * scale].float().clamp_(0, 1)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def resolve_device(name):
    import torch
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise InferError(f'--device {name}: no CUDA GPU is available here (use --device cpu or auto).')
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InferError(f'--device {name}: {e}')


def prepare_options_from(opt):
    """How the options' training/test data was prepared: ``fsr-prepare``'s options (hr_size, template_zoom,
    lr_kernel, min_score) from ``<dataset>/manifest.jsonl`` beside ``dataroot_gt``, else the HR size from the first line
    of ``dataroot_gt/meta_info.txt``. Returns ``(dict, source file)`` or ``({}, None)``."""
    import re
    for ds in (opt or {}).get('datasets', {}).values():
        root = isinstance(ds, dict) and ds.get('dataroot_gt')
        if not root:
            continue
        manifest = os.path.join(os.path.dirname(os.path.normpath(str(root))), 'manifest.jsonl')
        if os.path.isfile(manifest):
            try:
                with open(manifest) as f:
                    prep = json.loads(f.readline()).get('options') or {}
                if prep.get('hr_size'):
                    return prep, manifest
            except (ValueError, AttributeError):
                pass
        meta = os.path.join(str(root), 'meta_info.txt')
        if os.path.isfile(meta):
            with open(meta) as f:
                m = re.search(r'\((\d+),\s*(\d+)', f.readline())
            if m:
                return dict(hr_size=[int(m.group(1)), int(m.group(2))]), meta
    return {}, None


# ----------------------------------------------------------------------------------------------------------------------
# faces: detection, LR making, paste-back
# ----------------------------------------------------------------------------------------------------------------------
def detect_faces(detector, rgb, max_side):
    """Detect faces on a copy of ``rgb`` whose longer side is at most ``max_side``; coordinates in ``rgb``'s frame."""
    img = to_uint8(rgb)
    h, w = img.shape[:2]
    f = min(1., max_side / max(h, w)) if max_side else 1.
    if f < 1:
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    try:
        faces = detector.detect(img)
    except Exception as e:  # e.g. MTCNN on images smaller than its 12 px window
        raise SkipImage(f'face detection failed on this image ({type(e).__name__}: {e})')
    fx, fy = w / img.shape[1], h / img.shape[0]
    for face in faces:
        face['box'] = face['box'] * np.array([fx, fy, fx, fy], np.float32)
        face['landmarks'] = face['landmarks'] * np.array([fx, fy], np.float32)
    return faces


def make_lr(hr_crop, scale, kernel='matlab'):
    """LR crop (float32 [0, 1] RGB) of an aligned HR-size crop, made as ``fsr-prepare`` makes the LR training data.

    8-bit crops go through ``fsr_data.prepare.make_lr`` itself (BasicSR's MATLAB-style bicubic ``imresize`` rounded to
    8 bits, or PIL bicubic); 16-bit crops use the same ``imresize`` in floating point without rounding.
    """
    if hr_crop.dtype == np.uint8:
        from fsr_data.prepare import make_lr as prepare_make_lr
        return prepare_make_lr(np.ascontiguousarray(hr_crop), scale, kernel).astype(np.float32) / 255.
    from basicsr.utils.matlab_functions import imresize
    hr = np.ascontiguousarray(hr_crop, dtype=np.float32) / max_value(hr_crop)
    if kernel == 'matlab':
        lr = imresize(hr, 1. / scale)
    else:
        h, w = hr.shape[:2]
        lr = cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    return np.clip(lr, 0, 1).astype(np.float32)


def blend_mask(out_h, out_w, feather=0.1):
    """Soft mask (out_h, out_w) float32 of an aligned crop: 1 inside, a smooth ramp to 0 over ``feather`` of the crop
    size at the borders (0 on the outermost pixel), so the pasted face has no visible seam."""
    f = max(2., feather * min(out_h, out_w))
    y = np.minimum(np.arange(out_h), np.arange(out_h)[::-1]).astype(np.float32)
    x = np.minimum(np.arange(out_w), np.arange(out_w)[::-1]).astype(np.float32)
    d = np.minimum(y[:, None], x[None, :])
    t = np.clip(d / f, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep


def paste_face(photo, sr_rgb, M, mask_crop, union=None):
    """Paste an SR crop back into ``photo`` (modified in place) with the inverse of ``M`` and a soft mask.

    Args:
        photo (ndarray): (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 or uint16. Alpha is left unchanged.
        sr_rgb (ndarray): (h, w, 3) float32 [0, 1] RGB aligned crop.
        M (ndarray): 2x3 transform photo -> crop (as returned by ``align_face``, scaled to the photo's resolution).
        mask_crop (ndarray): (h, w) float32 soft mask in crop coordinates (:func:`blend_mask`).
        union (ndarray | None): (H, W) uint8 updated with ``ceil(255 * mask)`` (max over faces).

    Returns:
        tuple: the photo region (x0, y0, x1, y1) that was touched; pixels whose mask is 0 keep their values exactly.
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
        Minv = np.diag([src.shape[1] / w, src.shape[0] / h, 1.]) @ np.vstack([M, [0, 0, 1]])
        Minv = inverse_affine(Minv[:2])
    A = Minv.copy()
    A[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(src, A, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(src_mask, A, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = np.clip(mask, 0, 1)
    face = np.clip(face, 0, 1)
    region = photo[y0:y1, x0:x1]
    maxv = max_value(photo)
    if photo.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        orig = region
        m = mask
    else:
        face = face[..., ::-1]
        orig = region[..., :3]
        m = mask[..., None]
    blended = orig.astype(np.float32) * (1 - m) + face * maxv * m
    blended = np.clip(blended.round(), 0, maxv).astype(photo.dtype)
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


def face_notes(crop_scale, upscale, scale, lr_size, hr_size):
    """Human-readable notes for one face, from ``crop_scale`` = crop pixels per (input) photo pixel."""
    notes = []
    if crop_scale > 1:
        notes.append(f'upsampled from a small face: the face region is about {hr_size[1] / crop_scale:.0f} px wide in '
                     f'the photo, magnified x{crop_scale:.2f} to the {hr_size[0]}x{hr_size[1]} HR crop before the '
                     f'down-sampling to {lr_size[0]}x{lr_size[1]}')
        if crop_scale > scale:
            notes.append(f'the face is smaller than the network\'s LR size ({lr_size[0]}x{lr_size[1]}): the network '
                         'sees less detail than in training')
    out_scale = crop_scale / upscale  # crop pixels per output pixel
    if out_scale < 1:
        notes.append(f'the face is larger than the {hr_size[0]}x{hr_size[1]} HR crop: the restored face is magnified '
                     f'x{1 / out_scale:.2f} when pasted back and can look softer than the original')
    return notes


# ----------------------------------------------------------------------------------------------------------------------
# per-image processing
# ----------------------------------------------------------------------------------------------------------------------
class Restorer:
    """The loaded network plus the pre-processing settings; :meth:`photo` and :meth:`aligned` process one image."""

    def __init__(self,
                 net,
                 scale,
                 hr_size,
                 device,
                 batch_size=8,
                 zoom=1.0,
                 upscale=1,
                 feather=0.1,
                 lr_kernel='matlab',
                 min_score=0.9):
        self.net, self.scale, self.device = net, scale, device
        self.hr_size = tuple(hr_size)
        self.lr_size = (hr_size[0] // scale, hr_size[1] // scale)
        self.batch_size = max(1, int(batch_size))
        self.zoom, self.upscale, self.feather = zoom, int(upscale), feather
        self.lr_kernel, self.min_score = lr_kernel, min_score
        self._mask = blend_mask(*self.hr_size, feather=feather)

    def check(self):
        """One forward pass on a blank LR crop: a network/scale mismatch fails here, before any photo is read."""
        try:
            run_network(self.net, np.zeros((1, *self.lr_size, 3), np.float32), self.scale, self.device)
        except InferError:
            raise
        except Exception as e:
            raise InferError(f'the network fails on a {self.lr_size[0]}x{self.lr_size[1]} LR face '
                             f'(HR {self.hr_size[0]}x{self.hr_size[1]} / x{self.scale}): {type(e).__name__}: {e}. '
                             'If the network does not take that size, choose another --hr-size.')

    def _sr(self, lr_list):
        return run_network(self.net, np.stack(lr_list), self.scale, self.device)

    def photo(self, img, detector, detect_max_side=2048, crops_stem=None, union=False):
        """Restore every face of a photo (native layout from :func:`read_image`).

        Returns:
            tuple: the restored photo (``upscale`` times the input size), the list of face records, and the union
            mask (uint8, ``ceil(255 * mask)``) or None.
        """
        from fsr_data.face_align import align_face, template_5pts, transform_scale
        rgb = to_rgb(img)
        faces = detect_faces(detector, rgb, detect_max_side)
        if not faces:
            raise SkipImage('no face found')
        best = max([f['score'] for f in faces], default=None)
        faces = [f for f in faces if f['score'] >= self.min_score]
        if not faces:
            raise SkipImage(f'no face found (best detection score {best:.3f} < --min-score {self.min_score})')
        out = img
        if self.upscale > 1:
            h, w = img.shape[:2]
            out = cv2.resize(img, (w * self.upscale, h * self.upscale), interpolation=cv2.INTER_CUBIC)
        out = out.copy() if out is img else out
        union_mask = np.zeros(out.shape[:2], np.uint8) if union else None
        template = template_5pts(*self.hr_size, zoom=self.zoom)
        S = np.diag([1. / self.upscale, 1. / self.upscale, 1.])  # output -> input photo coordinates
        records = []
        for start in range(0, len(faces), self.batch_size):
            batch = faces[start:start + self.batch_size]
            lrs, Ms = [], []
            for face in batch:
                crop, M = align_face(rgb, face['landmarks'], out_size=self.hr_size, template=template)
                lrs.append(make_lr(crop, self.scale, self.lr_kernel))
                Ms.append(M)
            srs = self._sr(lrs)
            for k, (face, lr, sr, M) in enumerate(zip(batch, lrs, srs, Ms)):
                idx = start + k
                region = paste_face(out, sr, M @ S, self._mask, union_mask)
                crop_scale = transform_scale(M)
                rec = dict(
                    index=idx,
                    box=[round(float(v), 1) for v in face['box']],
                    score=round(float(face['score']), 4),
                    landmarks=np.round(face['landmarks'].astype(np.float64), 1).tolist(),
                    crop_scale=round(crop_scale, 4),
                    pasted_region=region,
                    notes=face_notes(crop_scale, self.upscale, self.scale, self.lr_size, self.hr_size))
                if crops_stem:
                    rec['lr_crop'] = f'{crops_stem}_face{idx:02d}_lr.png'
                    rec['sr_crop'] = f'{crops_stem}_face{idx:02d}_sr.png'
                    write_image(rec['lr_crop'], rgb_float_to_uint8_bgr(lr))
                    write_image(rec['sr_crop'], rgb_float_to_uint8_bgr(sr))
                records.append(rec)
        return out, records, union_mask

    def aligned(self, img, crops_stem=None):
        """Restore an already aligned face crop of LR size (fed as is) or HR size (down-sampled first)."""
        h, w = img.shape[:2]
        maxv = max_value(img)
        rgb = to_rgb(img)
        if (h, w) == self.lr_size:
            lr, kind = rgb.astype(np.float32) / maxv, 'LR'
        elif (h, w) == self.hr_size:
            lr, kind = make_lr(rgb, self.scale, self.lr_kernel), 'HR'
        else:
            raise SkipImage(
                f'--aligned: the crop is {h}x{w}, but this x{self.scale} network takes aligned LR crops of '
                f'{self.lr_size[0]}x{self.lr_size[1]} or HR crops of {self.hr_size[0]}x{self.hr_size[1]} (set '
                f'--hr-size to the HR size your crops were made with)')
        sr = self._sr([lr])[0]
        H, W = sr.shape[:2]
        if img.ndim == 2:
            out = cv2.cvtColor(sr, cv2.COLOR_RGB2GRAY)
        else:
            out = sr[..., ::-1]
        out = np.clip((out * maxv).round(), 0, maxv).astype(img.dtype)
        if img.ndim == 3 and img.shape[2] == 4:
            alpha = cv2.resize(img[..., 3], (W, H), interpolation=cv2.INTER_CUBIC) if (h, w) != (H, W) else img[..., 3]
            out = np.dstack([out, alpha])
        rec = dict(index=0, input_kind=kind, notes=[])
        if crops_stem:
            rec['lr_crop'] = f'{crops_stem}_face00_lr.png'
            rec['sr_crop'] = f'{crops_stem}_face00_sr.png'
            write_image(rec['lr_crop'], rgb_float_to_uint8_bgr(lr))
            write_image(rec['sr_crop'], rgb_float_to_uint8_bgr(sr))
        return out, [rec], None


# ----------------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(
        prog='fsr-infer',
        description='Restore every face in photos with a trained face SR network: detect, align as fsr-prepare does, '
        'down-sample to the LR size, super-resolve, paste back with a soft mask.')
    p.add_argument('-i', '--input', required=True, help='a photo or a folder of photos (searched recursively)')
    p.add_argument('-o', '--output', required=True, help='output folder (restored photos, crops/, summary.json)')
    net = p.add_argument_group('network')
    net.add_argument('--opt', help='BasicSR options file (network_g, scale, path:pretrain_network_g, param_key_g)')
    net.add_argument('--net', help='registered network name with its paper configuration (PAPER_CONFIGS)')
    net.add_argument('--scale', type=int, choices=(2, 4, 8, 16), help='scale for --net (default 4); checked with --opt')
    net.add_argument('--weights', help='checkpoint (BasicSR net_g_*.pth); default: path:pretrain_network_g of --opt')
    net.add_argument(
        '--param-key',
        help="key of the weights in the checkpoint (default: the options' param_key_g, "
        "else params_ema, else params)")
    net.add_argument('--device', default='auto', help='auto (GPU when available), cpu, cuda or cuda:N')
    net.add_argument('--batch-size', type=int, default=8, help='faces per network call (bounds memory). Default 8')
    pre = p.add_argument_group('pre-processing (must match the training data)')
    pre.add_argument(
        '--hr-size',
        type=_parse_size,
        help='HR face size, N or HxW (default: the size of the options\' '
        'dataroot_gt LMDB if it exists, else 128, fsr-prepare\'s default)')
    pre.add_argument(
        '--template-zoom',
        '--zoom',
        dest='zoom',
        type=float,
        help='alignment template zoom as given to '
        "fsr-prepare (default: the options' dataset manifest, else 1)")
    pre.add_argument(
        '--lr-kernel',
        choices=('matlab', 'pil-bicubic'),
        help="LR down-sampling as fsr-prepare's "
        "(default: the options' dataset manifest, else matlab = BasicSR's MATLAB-style imresize)")
    pre.add_argument(
        '--min-score',
        type=float,
        default=0.9,
        help='ignore detections with a lower confidence (0.9, as '
        'fsr-prepare)')
    pre.add_argument('--aligned', action='store_true', help='inputs are aligned face crops of LR or HR size')
    pre.add_argument(
        '--detector', default='mtcnn', help="face detector backend: mtcnn (default, offline) or retinaface")
    pre.add_argument('--detector-weights', help='RetinaFace weights file (or an MTCNN weights folder)')
    pre.add_argument('--min-face', type=int, default=20, help='smallest face box side searched for, in px (20)')
    pre.add_argument(
        '--detect-max-side',
        type=int,
        default=2048,
        help='detect on a copy at most this long (bounds detector memory on large photos; 0: full size)')
    post = p.add_argument_group('output')
    post.add_argument(
        '--upscale',
        type=int,
        default=1,
        help='enlarge the whole photo by this factor (bicubic) and '
        'paste the restored faces at that resolution. Default 1 (output has the input\'s size)')
    post.add_argument('--feather', type=float, default=0.1, help='soft mask ramp width, fraction of the crop (0.1)')
    post.add_argument('--save-masks', action='store_true', help='also write OUT/masks/<name>.png (ceil(255 * mask))')
    post.add_argument('--no-crops', action='store_true', help='do not write the aligned LR/SR crops')
    post.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def setup(args):
    """Network, weights, device and sizes from the arguments; raises :class:`InferError` on any problem."""
    from fsr_utils import plugin
    plugin.load()
    opt = load_options(args.opt) if args.opt else None
    spec = network_spec(opt, args.net, args.scale)
    if args.upscale < 1:
        raise InferError('--upscale must be >= 1.')
    weights = args.weights or spec['weights']
    device = resolve_device(args.device)
    net = build_network(spec)
    key_used = load_weights(net, spec, weights, args.param_key or spec['param_key'])
    net = net.to(device).eval()
    scale = spec['scale']
    prep, prep_file = prepare_options_from(opt)
    hr_source = f"the options' dataset ({prep_file})"
    if args.hr_size:
        hr_size, hr_source = tuple(args.hr_size), '--hr-size'
    elif prep.get('hr_size'):
        hr_size = tuple(int(v) for v in prep['hr_size'])
    else:
        hr_size, hr_source = DEFAULT_HR_SIZE, f"default {DEFAULT_HR_SIZE[0]}x{DEFAULT_HR_SIZE[1]} (fsr-prepare's)"
    zoom = args.zoom if args.zoom is not None else float(prep.get('template_zoom') or 1.0)
    lr_kernel = args.lr_kernel or prep.get('lr_kernel') or 'matlab'
    if hr_size[0] % scale or hr_size[1] % scale:
        raise InferError(f'HR size {hr_size[0]}x{hr_size[1]} is not divisible by the scale {scale} (--hr-size).')
    restorer = Restorer(net, scale, hr_size, device, args.batch_size, zoom, args.upscale, args.feather, lr_kernel,
                        args.min_score)
    restorer.check()
    info = dict(
        network=spec['name'],
        network_source=spec['source'],
        scale=scale,
        weights=weights,
        param_key=key_used,
        device=str(device),
        hr_size=list(hr_size),
        hr_size_source=hr_source,
        lr_size=list(restorer.lr_size),
        aligned=bool(args.aligned),
        upscale=args.upscale,
        template_zoom=zoom,
        lr_kernel=lr_kernel,
        detector=None if args.aligned else args.detector)
    return restorer, info


def main(argv=None):
    """Entry point of ``fsr-infer``; returns the exit status (0 ok, 1 nothing restored, 2 setup error)."""
    args = build_parser().parse_args(argv)
    t0 = time.time()
    try:
        restorer, info = setup(args)
        inputs, ignored = list_inputs(args.input, args.output)
        detector = None
        if not args.aligned and inputs:
            from fsr_data.face_align import FaceDetector
            try:
                detector = FaceDetector(
                    backend=args.detector, weights=args.detector_weights, device=info['device'], min_face=args.min_face)
            except (ValueError, FileNotFoundError, ImportError) as e:
                raise InferError(f'face detector: {e}')
    except InferError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    from tqdm import tqdm
    os.makedirs(args.output, exist_ok=True)
    names = output_names([rel for _, rel in inputs])
    photos, skipped = [], []
    for path, rel in tqdm(inputs, desc='fsr-infer', unit='img', disable=args.quiet):
        stem = names[rel]
        crops_stem = None if args.no_crops else os.path.join(args.output, 'crops', stem)
        try:
            img, notes = read_image(path)
            if args.aligned:
                out, faces, union = restorer.aligned(img, crops_stem)
            else:
                out, faces, union = restorer.photo(img, detector, args.detect_max_side, crops_stem, args.save_masks)
            out_path = os.path.join(args.output, stem + '.png')
            write_image(out_path, out)
            rec = dict(
                input=path,
                output=out_path,
                size=list(img.shape[:2]),
                output_size=list(out.shape[:2]),
                notes=notes,
                faces=faces)
            if union is not None:
                rec['mask'] = os.path.join(args.output, 'masks', stem + '.png')
                write_image(rec['mask'], union)
            photos.append(rec)
        except SkipImage as e:
            skipped.append(dict(input=path, reason=str(e)))
        except InferError as e:  # the network itself fails: stop, the other files would fail the same way
            print(f'error: {path}: {e}', file=sys.stderr)
            return 2
        except (MemoryError, OSError, cv2.error) as e:
            skipped.append(dict(input=path, reason=f'{type(e).__name__}: {e}'))
    num_faces = sum(len(p['faces']) for p in photos)
    small = sum(any('small face' in n for n in f['notes']) for p in photos for f in p['faces'])
    summary = dict(
        settings=info,
        counts=dict(
            inputs=len(inputs),
            restored_images=len(photos),
            faces=num_faces,
            faces_from_small=small,
            skipped=len(skipped),
            ignored=len(ignored)),
        photos=photos,
        skipped=skipped,
        ignored_files=ignored,
        seconds=round(time.time() - t0, 2))
    with open(os.path.join(args.output, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print_summary(summary, args.output)
    return 0 if photos else 1


def print_summary(summary, out_dir):
    c = summary['counts']
    what = 'aligned crops' if summary['settings']['aligned'] else f'faces in {c["restored_images"]} image(s)'
    lines = [f'fsr-infer: restored {c["faces"]} {what} -> {out_dir} ({summary["seconds"]} s)']
    if c['faces_from_small']:
        lines.append(f'  {c["faces_from_small"]} face(s) were upsampled from a small face (smaller in the photo than '
                     'the HR crop); see summary.json')
    large = sum(any('larger than' in n for n in f['notes']) for p in summary['photos'] for f in p['faces'])
    if large:
        lines.append(f'  {large} face(s) are larger than the HR crop: magnified when pasted back, they can look softer '
                     'than the original (the network adds no detail beyond its HR size)')
    for p in summary['photos']:
        for note in p['notes']:
            lines.append(f'  {os.path.basename(p["input"])}: {note}')
    if summary['skipped']:
        lines.append(f'  skipped {len(summary["skipped"])} file(s):')
        lines += [f'    {s["input"]}: {s["reason"]}' for s in summary['skipped']]
    if summary['ignored_files']:
        lines.append(f'  ignored {len(summary["ignored_files"])} file(s) without an image extension')
    if not summary['photos']:
        lines.append('  nothing was restored.')
    lines.append(f'  summary: {os.path.join(out_dir, "summary.json")}')
    print('\n'.join(lines))


if __name__ == '__main__':
    sys.exit(main())
