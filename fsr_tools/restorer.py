"""``FaceRestorer``: load a face SR network once, then restore the faces of any number of photos (the library API of
``fsr-infer``, in the manner of GFPGAN's ``GFPGANer``)::

    from fsr_tools.restorer import FaceRestorer
    restorer = FaceRestorer.load(opt='options/demo/train_tanet_demo_x4.yml',
                                 weights='experiments/TANet_demo_x4/models/net_g_latest.pth')
    out, faces = restorer.restore(cv2.imread('photo.jpg'))   # out: restorer.upscale x the photo, BGR like the input

What ``restore`` takes and gives back: a photo as ``cv2.imread`` gives it (BGR order), gray / BGR / BGRA, uint8, uint16
or float in [0, 1]; or a PIL image (RGB order). The result has the same type, dtype, range and channels (a PIL image
for a PIL image). Anything else (None, lists, int32/bool arrays, 2 channels, channels-first, batches, empty arrays,
float images outside [0, 1] or with NaN) is refused with a ``TypeError``/``ValueError`` saying what is expected; a
photo without a face raises :class:`~fsr_tools.infer_io.SkipImage`. A face whose network output is not finite (NaN or
Inf) raises :class:`~fsr_tools.infer_io.InferError`: nothing is pasted. Settings out of their range
(``fsr_tools.infer_cli.RANGES``) raise :class:`~fsr_tools.infer_io.SettingError` (a ``ValueError``) when the restorer
is made, and weights with NaN or Inf values are refused when loaded.

Per photo: detect faces (5 landmarks, on a copy at most ``detect_max_side`` long), plan each face
(:func:`fsr_tools.face_geometry.plan_face`: ``cut`` = LR crop cut from the photo without resampling, ``resampled`` = one
warp to the LR template, ``kept`` = larger than the network's LR input, left as it is), run the network on batches of LR
crops, enlarge the photo ``upscale`` times (bicubic) and paste the SR crops with a feathered mask. Pixels outside the
masks are exactly the plain bicubic enlargement.

How face size, ``upscale`` and the network's scale ``s`` interact: the network takes LR faces of one size (its LR
template, HR size / s; e.g. 32x32 with the eyes about 7 px apart for a 128x128 x4 network) and returns them s times
larger. A face of that size in the photo is restored from the photo's own pixels and its SR crop lands 1:1 on an output
enlarged ``upscale = s`` times (the default). Smaller faces are enlarged once to the template; larger faces are kept
(restoring them would first shrink them and lose detail the photo has) unless ``restore_large=True``.
"""
import cv2
import numpy as np
import time

from fsr_tools.face_geometry import (blend_mask, cut_window, lr_template, make_lr, paste_warped, paste_window,
                                     pixel_scale, plan_face, warp_to_template)
from fsr_tools.infer_cli import BACKENDS
from fsr_tools.infer_io import InferError, SettingError, SkipImage, as_photo, max_value, to_rgb, to_uint8
from fsr_tools.infer_net import NonFiniteOutput, run_network
from fsr_utils.safety import UsageError, check_number

STAGES = ('detect', 'align', 'network', 'enlarge', 'paste')
LR_KERNELS = ('matlab', 'pil-bicubic')


def _setting(name, value, **limits):
    """``check_number`` with the range of ``fsr_tools.infer_cli.RANGES[name]`` (or ``limits``); :class:`SettingError`
    naming the argument."""
    from fsr_tools.infer_cli import RANGES
    try:
        return check_number(name, value, **(limits or RANGES[name]))
    except UsageError as e:
        raise SettingError(str(e))


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
        # pixel centres: x_full = (x_small + 0.5) * fx - 0.5
        face['box'] = face['box'] * np.array([fx, fy, fx, fy], np.float32)
        face['landmarks'] = (face['landmarks'] + 0.5) * np.array([fx, fy], np.float32) - 0.5
    return faces


def _size_text(size):
    return f'{size[0]}x{size[1]}'


def _load_onnx(opt, path, net, scale, device, param_key, hr_size, prep, prep_file, threads):
    """``(OnnxNetwork, spec, device, hr_size, hr_size_source)`` of ``FaceRestorer.load(backend='onnxruntime')``; every
    problem an :class:`InferError`."""
    import torch

    from fsr_tools.infer_net import DEFAULT_HR_SIZE, load_onnx, network_spec
    if device not in ('auto', 'cpu'):
        raise InferError(f'--device {device}: --backend onnxruntime runs on the CPU (onnxruntime\'s CPU execution '
                         'provider): use --device cpu or auto, or --backend torch for the GPU.')
    if param_key:
        raise InferError(f'--param-key {param_key}: an ONNX file holds the weights it was exported with; drop '
                         '--param-key (choose the weights when exporting: fsr-export --param-key).')
    if threads is not None:
        threads = _setting('onnx_threads', threads)
    model = load_onnx(path, threads)
    name = model.info.get('network') or 'unknown network (no fsr-export metadata)'
    what = f'{path} holds {name} x{model.scale}'
    if opt is not None:
        spec = network_spec(opt, None, scale)
        if (model.info.get('network') and spec['name'] != model.info['network']) or spec['scale'] != model.scale:
            raise InferError(f'--opt is {spec["name"]} x{spec["scale"]}, but the ONNX file {what}: give the options '
                             'file it was exported from (or leave --opt out).')
    if net is not None and model.info.get('network') and net != model.info['network']:
        raise InferError(f'--net {net}, but the ONNX file {what}: drop --net or give the file of {net}.')
    if scale is not None and int(scale) != model.scale:
        raise InferError(f'--scale {scale}, but the ONNX file {what}: drop --scale or export the x{scale} network.')
    spec = dict(name=name, scale=model.scale, source=f'ONNX file {path}')
    s = model.scale
    if model.lr_size:  # fixed shape: the export size only
        lr = tuple(model.lr_size)
        fixed = (lr[0] * s, lr[1] * s)
        asked, where = None, None
        if hr_size:
            asked, where = tuple(hr_size), '--hr-size'
        elif prep.get('hr_size'):
            asked, where = tuple(int(v) for v in prep['hr_size']), f"the options' dataset ({prep_file})"
        if asked is not None and asked != fixed:
            raise InferError(f'{where} gives HR faces of {_size_text(asked)}, but the ONNX file {path} was exported '
                             f'for HR {_size_text(fixed)} only (fixed shape, LR {_size_text(lr)}): re-export it at '
                             f'that size (fsr-export ... --hr-size {_size_text(asked)}) or with --dynamic' +
                             (', or drop --hr-size.' if hr_size else '.'))
        hr, hr_source = fixed, f'the ONNX file (fixed shape, LR {_size_text(lr)})'
    elif hr_size:
        hr, hr_source = tuple(hr_size), '--hr-size'
    elif prep.get('hr_size'):
        hr, hr_source = tuple(int(v) for v in prep['hr_size']), f"the options' dataset ({prep_file})"
    else:
        try:
            hr = tuple(int(v) for v in model.info['hr_size'].split('x'))
            assert len(hr) == 2
            hr_source = "the ONNX file's export size (dynamic shape)"
        except (KeyError, ValueError, AssertionError):
            hr, hr_source = DEFAULT_HR_SIZE, f"default {_size_text(DEFAULT_HR_SIZE)} (fsr-prepare's)"
    return model, spec, torch.device('cpu'), hr, hr_source


class FaceRestorer:
    """A loaded face SR network and the settings to restore the faces of photos.

    Every number is checked against its range (``fsr_tools.infer_cli.RANGES``, the ranges of ``fsr-infer``'s options,
    given below in brackets): a value outside it raises :class:`~fsr_tools.infer_io.SettingError` (a ``ValueError``).

    Args:
        net (nn.Module): the network, in eval mode on ``device``: LR (N, 3, h, w) [0, 1] RGB -> (N, 3, h*s, w*s).
        scale (int): the network's scale s [1, 64].
        hr_size (tuple[int]): HR face size (h, w) of the training data (``fsr-prepare --hr-size``), each side in
            [4, 8192] and divisible by ``scale``. Default 128x128.
        device (torch.device | str): where the network runs. Default 'cpu'.
        upscale (int | None): output size / input size (bicubic enlargement of the whole photo) [1, 16].
            Default: ``scale``.
        zoom (float): alignment template zoom of the training data (``fsr-prepare --template-zoom``) [0.25, 4].
            Default 1.
        lr_kernel (str): LR down-sampling of the training data, used for ``--aligned`` HR crops: 'matlab' or
            'pil-bicubic'. Default 'matlab'.
        batch_size (int): faces per network call [1, 4096]. Default 8.
        feather (float): soft-mask ramp width, fraction of the crop [0, 0.5]. Default 0.1.
        min_score (float): ignore detections with a lower confidence [0, 1]. Default 0.9 (as fsr-prepare).
        scale_tol (float): a face is cut without resampling when its scale is within ``1 + scale_tol`` of the LR
            template (either way) [0, 10]. Default 0.25 (see ``--scale-tol``).
        roll_tol (float): ... and its roll within ``roll_tol`` degrees [0, 180]. Default 30 (see ``--roll-tol``).
        restore_large (bool): also restore faces larger than the LR template (down-sampled to it first: they can come
            out softer than the input). Default False.
        detector (object | str): a detector with ``detect(rgb_uint8) -> [{'box', 'landmarks', 'score'}]``, or a
            backend name for :class:`fsr_data.face_align.FaceDetector` (built on first use). Default 'mtcnn'.
        detector_weights (str | None): weights of the detector backend.
        min_face (int): smallest face box side searched for, px [4, 100000]. Default 20.
        detect_max_side (int): detect on a copy at most this long, 0 (full size) or [32, 1000000]. Default 2048.
    """

    def __init__(self,
                 net,
                 scale,
                 hr_size=(128, 128),
                 device='cpu',
                 upscale=None,
                 zoom=1.0,
                 lr_kernel='matlab',
                 batch_size=8,
                 feather=0.1,
                 min_score=0.9,
                 scale_tol=0.25,
                 roll_tol=30.,
                 restore_large=False,
                 detector='mtcnn',
                 detector_weights=None,
                 min_face=20,
                 detect_max_side=2048):
        import torch
        self.net, self.device = net, torch.device(device)
        self.scale = _setting('scale', scale, minimum=1, maximum=64, integer=True)
        if isinstance(hr_size, (str, bytes)) or not hasattr(hr_size, '__len__') or len(hr_size) != 2:
            raise SettingError(f'hr_size must be (height, width), not {hr_size!r}.')
        self.hr_size = tuple(_setting('hr_size', v) for v in hr_size)
        if self.hr_size[0] % self.scale or self.hr_size[1] % self.scale:
            raise SettingError(f'HR size {self.hr_size[0]}x{self.hr_size[1]} is not divisible by the scale '
                               f'{self.scale} (--hr-size).')
        self.lr_size = (self.hr_size[0] // self.scale, self.hr_size[1] // self.scale)
        self.upscale = self.scale if upscale is None else _setting('upscale', upscale)
        if lr_kernel not in LR_KERNELS:
            raise SettingError(f'lr_kernel must be one of {", ".join(LR_KERNELS)}, not {lr_kernel!r}.')
        self.zoom, self.lr_kernel = float(_setting('zoom', zoom)), lr_kernel
        self.batch_size = _setting('batch_size', batch_size)
        self.feather, self.min_score = float(_setting('feather', feather)), float(_setting('min_score', min_score))
        self.scale_tol, self.roll_tol = float(_setting('scale_tol', scale_tol)), float(_setting('roll_tol', roll_tol))
        self.restore_large = bool(restore_large)
        self.detector, self.detector_weights = detector, detector_weights
        self.min_face = _setting('min_face', min_face)
        self.detect_max_side = 0 if detect_max_side == 0 else _setting('detect_max_side', detect_max_side)
        self.template_lr = lr_template(self.hr_size, self.scale, self.zoom)
        self._mask_hr = blend_mask(*self.hr_size, feather=feather)
        self.timings = dict.fromkeys(STAGES, 0.)

    # --- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls,
             opt=None,
             weights=None,
             net=None,
             scale=None,
             device='auto',
             param_key=None,
             hr_size=None,
             zoom=None,
             lr_kernel=None,
             check=True,
             backend='torch',
             onnx_threads=None,
             **settings):
        """Build the network from an options file (``opt``, a path) or a registered name + its paper configuration
        (``net``, ``scale``), load ``weights`` safely, and read the training data's HR size, template zoom and LR kernel
        from the options' dataset manifest unless given. Other keyword arguments go to :class:`FaceRestorer`.

        With ``backend='onnxruntime'``, ``weights`` is an ONNX file written by ``fsr-export``, run by onnxruntime on the
        CPU (``onnx_threads`` intra-op threads [1, 1024], default onnxruntime's): the file gives the network and its
        scale (``opt`` and ``net`` are optional; given, they must name the same network and scale, and ``opt`` still
        gives the training data's HR size, zoom and LR kernel). A fixed-shape file takes its export size only: a
        different ``hr_size`` is refused (re-export at that size, or with ``--dynamic``); a dynamic file takes any
        size, by default the options' dataset's, else its export size.

        Returns:
            FaceRestorer: with ``info`` (dict) describing the network, weights, backend and where each setting came
            from.

        Raises:
            InferError: any problem with the options, the network, the weights, the ONNX file or the device.
        """
        from fsr_tools.infer_net import (DEFAULT_HR_SIZE, build_network, load_options, load_weights, network_spec,
                                         prepare_options_from, resolve_device)
        from fsr_utils import plugin
        if backend not in BACKENDS:
            raise InferError(f'backend must be one of {", ".join(BACKENDS)}, not {backend!r} (--backend).')
        plugin.load()
        opt_dict = load_options(opt) if opt else None
        prep, prep_file = prepare_options_from(opt_dict)
        onnx_file = None
        if backend == 'onnxruntime':
            model, spec, dev, hr, hr_source = _load_onnx(opt_dict, weights, net, scale, device, param_key, hr_size,
                                                         prep, prep_file, onnx_threads)
            onnx_file, key_used = weights, None
        else:
            if onnx_threads is not None:
                raise InferError('onnx_threads (--onnx-threads) sets the threads of backend onnxruntime: drop it, or '
                                 'run an ONNX file with --backend onnxruntime.')
            spec = network_spec(opt_dict, net, scale)
            weights = weights or spec['weights']
            if weights and str(weights).lower().endswith('.onnx'):
                raise InferError(f'--weights {weights} is an ONNX file: run it with --backend onnxruntime '
                                 "(FaceRestorer.load(backend='onnxruntime')), or give the PyTorch checkpoint.")
            dev = resolve_device(device)
            model = build_network(spec)
            key_used = load_weights(model, spec, weights, param_key or spec['param_key'])
            model = model.to(dev).eval()
            if hr_size:
                hr, hr_source = tuple(hr_size), '--hr-size'
            elif prep.get('hr_size'):
                hr, hr_source = tuple(int(v) for v in prep['hr_size']), f"the options' dataset ({prep_file})"
            else:
                hr, hr_source = DEFAULT_HR_SIZE, f"default {DEFAULT_HR_SIZE[0]}x{DEFAULT_HR_SIZE[1]} (fsr-prepare's)"
        zoom = zoom if zoom is not None else float(prep.get('template_zoom') or 1.0)
        lr_kernel = lr_kernel or prep.get('lr_kernel') or 'matlab'
        restorer = cls(model, spec['scale'], hr, dev, zoom=zoom, lr_kernel=lr_kernel, **settings)
        if check:
            restorer.check()
        restorer.info = dict(
            network=spec['name'],
            network_source=spec['source'],
            backend=backend,
            scale=restorer.scale,
            weights=weights,
            param_key=key_used,
            device=str(dev),
            hr_size=list(hr),
            hr_size_source=hr_source,
            lr_size=list(restorer.lr_size),
            upscale=restorer.upscale,
            template_zoom=zoom,
            lr_kernel=lr_kernel,
            scale_tol=restorer.scale_tol,
            roll_tol=restorer.roll_tol,
            restore_large_faces=restorer.restore_large)
        if onnx_file:
            restorer.info.update(
                onnx_file=onnx_file,
                onnx_shape='dynamic' if model.dynamic else 'fixed',
                onnx_threads=onnx_threads,
                exported_from=model.info.get('weights'))
        return restorer

    def check(self):
        """One forward pass on a blank LR crop: a network/scale mismatch (or a network that returns NaN or Inf) fails
        here, before any photo is read."""
        try:
            run_network(self.net, np.zeros((1, *self.lr_size, 3), np.float32), self.scale, self.device)
        except NonFiniteOutput:
            raise InferError(f'the network returns NaN or Inf values on a blank {self.lr_size[0]}x{self.lr_size[1]} LR '
                             'face: its weights or its arithmetic are broken (e.g. activations that overflow).')
        except InferError:
            raise
        except Exception as e:
            raise InferError(f'the network fails on a {self.lr_size[0]}x{self.lr_size[1]} LR face '
                             f'(HR {self.hr_size[0]}x{self.hr_size[1]} / x{self.scale}): {type(e).__name__}: {e}. '
                             'If the network does not take that size, choose another --hr-size.')

    def get_detector(self):
        """The face detector (built from the backend name on first use)."""
        if isinstance(self.detector, str):
            from fsr_data.face_align import FaceDetector
            try:
                self.detector = FaceDetector(
                    backend=self.detector,
                    weights=self.detector_weights,
                    device=str(self.device),
                    min_face=self.min_face)
            except (ValueError, FileNotFoundError, ImportError) as e:
                raise InferError(f'face detector: {e}')
        return self.detector

    # --- the work ----------------------------------------------------------------------------------------------------
    def _sr(self, lr_list, face_indices=None):
        """SR crops of LR crops, in batches; ``face_indices`` (the faces' indices in the photo) name the faces whose
        output is not finite in the :class:`InferError` raised then."""
        t0 = time.perf_counter()
        out = []
        for start in range(0, len(lr_list), self.batch_size):
            try:
                out += list(
                    run_network(self.net, np.stack(lr_list[start:start + self.batch_size]), self.scale, self.device))
            except NonFiniteOutput as e:
                bad = [face_indices[start + i] if face_indices else start + i for i in e.indices]
                raise InferError(f'the network returned NaN or Inf values for face {", ".join(map(str, bad))}: nothing '
                                 'was pasted. Its activations overflow on this face, or the network is broken.')
        self.timings['network'] += time.perf_counter() - t0
        return out

    def enlarge(self, img):
        """The plain enlargement of a photo (``upscale`` times, bicubic): what every pixel outside a face becomes
        (float photos are clipped to [0, 1], as 8 and 16-bit ones saturate)."""
        if self.upscale == 1:
            return img.copy()
        h, w = img.shape[:2]
        out = cv2.resize(img, (w * self.upscale, h * self.upscale), interpolation=cv2.INTER_CUBIC)
        if out.dtype.kind == 'f':
            np.clip(out, 0, 1, out=out)
        return out

    def restore(self, img, faces=None, union=False):
        """Restore every face of a photo.

        Args:
            img (ndarray | PIL.Image.Image): (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA (BGR order, as
                ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` gives), uint8 (0-255), uint16 (0-65535) or float (in [0, 1]);
                (H, W, 1) is taken as gray. Or a PIL image (RGB order; modes other than L, RGB, RGBA, I;16, I and F
                are converted to RGB, or RGBA when they have transparency).
            faces (list[dict] | None): detections (``landmarks`` (5, 2) in photo pixels, optional ``box`` and
                ``score``) to use instead of running the detector.
            union (bool): also return the union of the paste masks (uint8, ``ceil(255 * mask)``).

        Returns:
            tuple: the restored photo (``upscale`` times the input size, same type, layout, dtype and range; a PIL
            image of the same mode for a PIL image) and one dict per face:
            ``index``, ``box``, ``score``, ``landmarks``, ``plan`` (cut | resampled | kept), ``lr_scale``, ``roll``,
            ``pasted_region`` (x0, y0, x1, y1 in the output, None when kept), ``notes``, ``lr`` and ``sr`` (float32
            RGB crops, None when kept); with ``union=True`` a third item, the mask.

        Raises:
            SkipImage: no face (above ``min_score``) was found.
            TypeError: ``img`` is not an image of a supported type (None, a list, an int32 or bool array, ...).
            ValueError: an array of an unsupported shape (2 channels, channels-first, a batch, empty), or a float image
                outside [0, 1] or with NaN/Inf values.
            InferError: the network's output for a face is not finite (NaN or Inf): nothing is pasted.
        """
        t0 = time.perf_counter()
        img, back = as_photo(img)
        rgb = to_rgb(img)
        if faces is None:
            faces = detect_faces(self.get_detector(), rgb, self.detect_max_side)
        if not faces:
            raise SkipImage('no face found')
        faces = [dict(f) for f in faces]
        for f in faces:
            f.setdefault('score', 1.)
        best = max(f['score'] for f in faces) if faces else None
        faces = [f for f in faces if f['score'] >= self.min_score]
        if not faces:
            raise SkipImage(f'no face found (best detection score {best:.3f} < --min-score {self.min_score})')
        t1 = time.perf_counter()
        self.timings['detect'] += t1 - t0
        maxv = max_value(img)
        records, lrs = [], []
        for idx, face in enumerate(faces):
            lm = np.asarray(face['landmarks'], np.float64).reshape(5, 2)
            plan = plan_face(lm, self.template_lr, self.scale_tol, self.roll_tol, self.restore_large)
            lr = None
            if plan['plan'] == 'cut':
                x0, y0 = plan['offset']
                lr = cut_window(rgb, x0, y0, self.lr_size[1], self.lr_size[0]).astype(np.float32) / maxv
            elif plan['plan'] == 'resampled':  # (a float photo's cubic warp can overshoot [0, 1])
                lr = np.clip(warp_to_template(rgb, lm, self.lr_size, self.template_lr).astype(np.float32) / maxv, 0, 1)
            box = face.get('box')
            rec = dict(
                index=idx,
                box=None if box is None else [round(float(v), 1) for v in box],
                score=round(float(face['score']), 4),
                landmarks=np.round(lm, 1).tolist(),
                plan=plan['plan'],
                lr_scale=round(plan['lr_scale'], 4),
                roll=round(plan['roll'], 2),
                pasted_region=None,
                notes=self.face_notes(plan),
                lr=lr,
                sr=None,
                _plan=plan)
            records.append(rec)
            if lr is not None:
                lrs.append(lr)
        t2 = time.perf_counter()
        self.timings['align'] += t2 - t1
        srs = self._sr(lrs, [r['index'] for r in records if r['lr'] is not None]) if lrs else []
        t3 = time.perf_counter()
        out = self.enlarge(img)
        t4 = time.perf_counter()
        self.timings['enlarge'] += t4 - t3
        mask_union = np.zeros(out.shape[:2], np.uint8) if union else None
        it = iter(srs)
        u, s = self.upscale, self.scale
        for rec in records:
            plan = rec.pop('_plan')
            if rec['lr'] is None:
                continue
            sr = rec['sr'] = next(it)
            if plan['plan'] == 'cut':
                x0, y0 = plan['offset']
                lh, lw = self.lr_size
                if u == s:
                    face_img, mask = sr, self._mask_hr
                else:  # one resampling of the SR crop to the output's pixel grid
                    interp = cv2.INTER_AREA if u < s else cv2.INTER_CUBIC
                    face_img = cv2.resize(sr, (lw * u, lh * u), interpolation=interp)
                    mask = blend_mask(lh * u, lw * u, self.feather)
                region = paste_window(out, face_img, x0 * u, y0 * u, mask, mask_union)
            else:
                M = (pixel_scale(s) @ np.vstack([plan['M_lr'], [0, 0, 1]]) @ pixel_scale(1. / u))[:2]
                region = paste_warped(out, sr, M, self._mask_hr, mask_union)
            rec['pasted_region'] = region
        self.timings['paste'] += time.perf_counter() - t4
        return (back(out), records, mask_union) if union else (back(out), records)

    def face_notes(self, plan):
        """Human-readable notes on how one face was fed to the network."""
        rho, roll, (lh, lw) = plan['lr_scale'], plan['roll'], self.lr_size
        notes = []
        if plan['plan'] == 'kept':
            rolled = f', rolled {roll:.1f} deg (beyond --roll-tol {self.roll_tol})' if abs(roll) > self.roll_tol else ''
            notes.append(f'larger than the network\'s {lh}x{lw} LR input (x{1 / rho:.2f}{rolled}): left as it is, '
                         'enlarged like the background (restoring it would first shrink it); shrink the photo by about '
                         f'{1 / rho:.2f} to restore it, or force it with --restore-large-faces')
            return notes
        if plan['plan'] == 'cut':
            notes.append('LR crop cut from the photo without resampling')
        elif rho < 1:
            notes.append(f'down-sampled x{1 / rho:.2f} to the {lh}x{lw} LR template (--restore-large-faces): it can '
                         'come out softer than the input')
        else:
            why = []
            if not 1 / (1 + self.scale_tol) <= rho <= 1 + self.scale_tol:
                why.append(f'its scale is x{rho:.2f} the LR template, beyond --scale-tol {self.scale_tol}')
            if abs(roll) > self.roll_tol:
                why.append(f'its roll {roll:.1f} deg is beyond --roll-tol {self.roll_tol}')
            notes.append('resampled once to the LR template (' + '; '.join(why) + ')')
            if rho > self.scale:
                notes.append(f'smaller than the network\'s LR input ({lh}x{lw}): the network sees less detail than in '
                             'training')
        magnify = self.upscale / (self.scale * rho)  # output pixels per SR-crop pixel
        if magnify > 1.01:
            notes.append(f'the restored face is magnified x{magnify:.2f} when pasted (--upscale {self.upscale} > the '
                         'scale at which it was restored)')
        elif magnify < 0.99:
            notes.append(f'the restored face is shrunk x{1 / magnify:.2f} when pasted (--upscale {self.upscale})')
        return notes

    def restore_aligned(self, img):
        """Restore an already aligned face crop of LR size (fed as is) or HR size (down-sampled as the training data).

        Args:
            img (ndarray | PIL.Image.Image): the crop, as :meth:`restore` takes a photo.

        Returns:
            tuple: the SR crop (same type, layout, dtype and range as ``img``) and its record (``input_kind`` LR | HR,
            ``lr``, ``sr``).

        Raises:
            SkipImage: the crop has neither the LR nor the HR size.
            TypeError, ValueError: as :meth:`restore`.
            InferError: the network's output is not finite.
        """
        img, back = as_photo(img)
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
        out = cv2.cvtColor(sr, cv2.COLOR_RGB2GRAY) if img.ndim == 2 else sr[..., ::-1]
        out = np.clip(out * maxv if img.dtype.kind == 'f' else (out * maxv).round(), 0, maxv).astype(img.dtype)
        if img.ndim == 3 and img.shape[2] == 4:
            alpha = cv2.resize(img[..., 3], (W, H), interpolation=cv2.INTER_CUBIC) if (h, w) != (H, W) else img[..., 3]
            out = np.dstack([out, np.clip(alpha, 0, maxv).astype(img.dtype)])
        return back(out), dict(index=0, input_kind=kind, notes=[], lr=lr, sr=sr)
