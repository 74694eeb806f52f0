"""The network side of ``fsr-infer``: options, network construction, safe checkpoint loading, batched forward pass.

- :func:`network_spec` reads the network from a BasicSR options file (``network_g``, ``scale``,
  ``path:pretrain_network_g``) or from a registered name + its paper configuration (``PAPER_CONFIGS``).
- :func:`load_weights` reads checkpoints with ``torch.load(weights_only=True)`` on the CPU (no code from the file runs),
  refuses one with NaN or Inf weights (naming the file and the tensor: ``fsr_utils.safety.check_finite_state_dict``)
  and says what a checkpoint that does not fit is for (another network, configuration or scale).
- :func:`run_network` runs a batch of LR crops, padded to the network's ``size_multiple`` as ``FSRModel`` does; an
  output with NaN or Inf values (activations that overflow) raises :class:`NonFiniteOutput`, never a clamped image.
- :func:`load_onnx` opens a file written by ``fsr-export`` with onnxruntime (``--backend onnxruntime``): an
  :class:`fsr_tools.export.OnnxNetwork`, called like the network by :func:`run_network`.
- :func:`prepare_options_from` finds how the training data was made (``fsr-prepare``'s manifest beside the options'
  ``dataroot_gt``): HR size, template zoom, LR kernel.
"""
import json
import numpy as np
import os
import sys

from fsr_tools.infer_io import InferError
from fsr_utils.safety import check_finite_state_dict

DEFAULT_HR_SIZE = (128, 128)  # fsr-prepare's default HR size
FALLBACK_SCALES = (2, 4, 8, 16)  # scales tried to explain a checkpoint that does not fit the network


class NonFiniteOutput(InferError):
    """The network's output holds NaN or Inf values for the batch items ``indices``."""

    def __init__(self, indices):
        self.indices = list(indices)
        super().__init__(f'the network returned NaN or Inf values for batch item(s) {self.indices}')


def load_options(opt_path):
    """The options file as a dict (checked for a ``network_g: {type: ...}`` section)."""
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

    ``torch.load(weights_only=True)`` on the CPU (no code from the file runs); NaN or Inf weights are refused (the
    message names the file and the tensor). ``param_key`` (e.g. 'params_ema') is
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
    try:
        check_finite_state_dict(state, f'weights file {path}' + (f' ({used})' if used else ''))
    except ValueError as e:
        raise InferError(str(e))
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
    """SR of a batch of LR crops (N, h, w, 3) float32 [0, 1] RGB -> (N, h*s, w*s, 3) float32 [0, 1], padded to the
    network's ``size_multiple`` as FSRModel does at test time.

    Raises:
        NonFiniteOutput: the output of some batch items holds NaN or Inf (``indices`` names them).
        InferError: the output has another shape than the scale says.
    """
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
    out = out[..., :h * scale, :w * scale].float()
    finite = torch.isfinite(out).flatten(1).all(1)
    if not bool(finite.all()):
        raise NonFiniteOutput(torch.nonzero(~finite).flatten().tolist())
    return out.clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def load_onnx(path, threads=None):
    """The ONNX file ``path`` (written by ``fsr-export``) as an :class:`fsr_tools.export.OnnxNetwork` run by
    onnxruntime on the CPU with ``threads`` intra-op threads (None: onnxruntime's default).

    Raises:
        InferError: no file, not a ``.onnx`` file, onnxruntime missing, or a file onnxruntime cannot load.
    """
    if not path:
        raise InferError('--backend onnxruntime: pass --weights FILE.onnx (a file written by fsr-export).')
    if not str(path).lower().endswith('.onnx'):
        raise InferError(f'--weights {path}: --backend onnxruntime runs an ONNX file written by fsr-export (a name '
                         'ending in .onnx); export the checkpoint first (fsr-export ... -o FILE.onnx), or run it with '
                         '--backend torch.')
    if not os.path.isfile(path):
        raise InferError(f'ONNX file {path} does not exist (--weights). Export one first: fsr-export --opt OPTIONS.yml '
                         f'--weights CKPT -o {path}.')
    from fsr_tools.export import OnnxNetwork
    try:
        return OnnxNetwork(path, threads=threads)
    except ImportError:
        raise InferError('--backend onnxruntime needs onnxruntime, which cannot be imported here: pip install '
                         '"basicsr-fsr[export]" (or pip install onnxruntime), or use --backend torch.')
    except Exception as e:  # onnxruntime's InvalidProtobuf / Fail for a broken file, ValueError for a missing scale
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise InferError(f'cannot load ONNX file {path} (--weights) with onnxruntime: {type(e).__name__}: '
                         f'{first[:300]}. Expected a file written by fsr-export.')


def resolve_device(name):
    """torch device of ``--device`` (``auto``: CUDA when available)."""
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
