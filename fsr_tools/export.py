"""``fsr-export``: a trained network as an ONNX file, checked against PyTorch with onnxruntime (``docs/export.md``).

Usage::

    fsr-export --opt options/test_tanet_x4.yml --weights experiments/TANet_x4/models/net_g_latest.pth -o tanet_x4.onnx
    fsr-export --net TANet --scale 4 --weights CKPT -o tanet_x4.onnx --dynamic      # the paper configuration
    fsr-export --opt OPTIONS.yml --random-init -o test.onnx   # RANDOM weights: tests the export path only

In order:

1. Every option and path is checked before any work: numbers in range (``--opset`` within the range of the installed
   torch exporter), ``-o`` a new ``.onnx`` file (an existing one is replaced only with ``--force``) that is not an
   input, the weights readable (``torch.load(weights_only=True)``; ``--param-key``, else the options'
   ``param_key_g``, else ``params_ema``, else ``params``: ``fsr_tools.infer_net.read_checkpoint``, as ``fsr-infer``
   reads them), free of NaN and Inf, and fitting the network; the input size one the network (and, with
   ``--dynamic``, its exported graph) takes. One ``error:`` line naming the option and the fix; exit status 2.
2. The network is exported with torch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``): it exports
   all four face networks and BasicSR's EDSR/RCAN/SwinIR. The dynamo exporter (torch 2.14 + onnxscript) was tried and
   fails on AMINet, and takes 5-10x longer on LAAT and W-Net.
3. onnxruntime (CPU) runs the file on a seeded random input of the export size and the largest absolute difference to
   PyTorch's output is printed for every output; above ``--tolerance`` (1e-4, float32) the export fails (exit 1) and
   nothing is written. With ``--dynamic`` a second size (batch 2) is checked the same way.
4. The file is written to a temporary name in the output's folder and renamed (no partial file is ever left).

The file: input ``lq`` (N, 3, h, w) float32 RGB in [0, 1] at LR size; output ``sr`` (N, 3, h*s, w*s). W-Net's parsing
map is an output only with ``--with-parsing`` (``parsing``: (N, parsing_channels, h, w), the LR-size map of its Parsing
Block). Without ``--dynamic`` every dimension is fixed (batch 1, the export size); with it, batch, height and width are
free, within the sizes the graph takes (``size_multiple`` in the metadata). The metadata (``metadata_props``) holds the
network, scale, export size, size multiple, weights, opset and the measured differences; :class:`OnnxNetwork` reads it.

Sizes: the LR input is ``--hr-size`` / scale; default HR size: the options' dataset (``fsr-prepare``'s manifest or the
LMDB's ``meta_info.txt``, as ``fsr-infer`` reads it), else ``network_g.img_size``, else 128x128 (``fsr-prepare``'s
default). LAAT, AMINet and W-Net take LR sizes that are multiples of their ``size_multiple``, SwinIR multiples of its
window; TANet, EDSR and RCAN any size. With ``--dynamic``: TANet (window tokens) multiples of its patch size (its
padding to the patch size is a Python branch fixed at export); LAAT, SwinIR and TANet with ``token_mode: global`` are
refused (their graphs hold size-dependent constants: LAAT's number of refined regions, SwinIR's attention masks,
TANet's interpolated position encoding); export one file per size instead.

Exit status: 0 written, 1 export or check failed (nothing written), 2 bad usage or input found before any work.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

from fsr_utils.safety import UsageError, check_output_path, error_exit, float_range, int_range, size_range

DEFAULT_OPSET = 17  # LayerNormalization is a native op from 17; TensorRT 8.6+ and onnxruntime >= 1.14 read it
FALLBACK_OPSETS = (7, 20)  # the TorchScript exporter's range in torch 2.x, if torch does not say
DEFAULT_TOLERANCE = 1e-4
DEFAULT_HR_SIZE = (128, 128)  # fsr-prepare's default HR size (as fsr-infer)
HR_SIDE = (4, 8192)
CHECK_SEED = 0
INPUT_NAME = 'lq'
METADATA_TOOL = 'fsr-export'

# Networks whose traced graph is right at the export size only: the reason, said to the user when --dynamic is asked.
NOT_DYNAMIC = {
    'LAAT': 'the number of regions its RSA refines (eq. 10, k = floor(sqrt(HW) / lambda)) is computed in Python from '
    'the input size, so the graph would refine the export size\'s k regions at every size',
    'SwinIR': "BasicSR's SwinIR computes its shifted-window attention masks in Python for one input size",
}
TANET_GLOBAL = ("TANet with token_mode 'global' interpolates its position encoding to the token grid in a Python "
                'branch, fixed at the export size')
SIZE_REASONS = {
    'LAAT': 'its three 2x down-samplings and RSA regions',
    'AMINet': 'its 2x down-samplings',
    'WNet': 'its Parsing Block hourglass and encoder',
    'SwinIR': "its attention window (BasicSR's SwinIR does not pad)",
}


class ExportError(Exception):
    """The export or its check failed (exit status 1, nothing written)."""


# ------------------------------------------------------------------------------------------------------------ options
def opset_range():
    """``(lowest, highest)`` opset of the installed torch's TorchScript-based exporter."""
    try:
        from torch.onnx import _constants as c
        return int(c.ONNX_MIN_OPSET), int(getattr(c, 'ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET', c.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        return FALLBACK_OPSETS


parse_size = size_range(*HR_SIDE)  # '128' -> (128, 128); '216x176' -> (216, 176)


def _opset(text):
    lo, hi = opset_range()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer')
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f'must be an integer in [{lo}, {hi}] (the opsets of the installed torch '
                                         f"TorchScript exporter), not {value}")
    return value


_opset.__name__ = 'int'


def build_parser():
    """The ``fsr-export`` argument parser (``--help`` imports no torch)."""
    p = argparse.ArgumentParser(
        prog='fsr-export',
        description='Export a face SR network (LAAT, AMINet, TANet, W-Net, or BasicSR\'s EDSR/RCAN/SwinIR) to ONNX and '
        'check the file against PyTorch with onnxruntime (max abs difference <= --tolerance at the export size, and at '
        'a second size with --dynamic). Nothing is written when the check fails.')
    net = p.add_argument_group('network')
    net.add_argument('--opt', help='BasicSR options file (network_g, scale, path:param_key_g)')
    net.add_argument(
        '--net', help='registered network name with its paper configuration (PAPER_CONFIGS), instead of '
        '--opt')
    net.add_argument('--scale', type=int, choices=(2, 4, 8, 16), help='scale for --net (default 4); checked with --opt')
    weights = net.add_mutually_exclusive_group(required=True)
    weights.add_argument('--weights', help='checkpoint (BasicSR net_g_*.pth)')
    weights.add_argument(
        '--random-init',
        action='store_true',
        help='export RANDOM weights (seed 0) instead of a checkpoint: for testing the export path only, the file '
        'restores nothing (its metadata says so)')
    net.add_argument(
        '--param-key',
        help="key of the weights in the checkpoint (default: the options' param_key_g, else params_ema, else params)")
    out = p.add_argument_group('output')
    out.add_argument('-o', '--output', required=True, help='the ONNX file to write (a new *.onnx file)')
    out.add_argument('--force', action='store_true', help='replace an existing -o file')
    out.add_argument(
        '--opset',
        type=_opset,
        default=DEFAULT_OPSET,
        help=f'ONNX opset, within the installed torch exporter\'s range (7-20 in torch 2.14). Default {DEFAULT_OPSET}. '
        'The check catches opsets that export wrongly (e.g. AMINet below 16)')
    out.add_argument(
        '--dynamic',
        action='store_true',
        help='free batch, height and width (within the sizes the network takes); checked at a second size too. '
        'Not for LAAT, SwinIR or TANet with global tokens (their graphs hold size-dependent constants)')
    out.add_argument(
        '--hr-size',
        type=parse_size,
        help="HR face size, N or HxW; the ONNX input is HR size / scale (default: the options' dataset, else "
        'network_g.img_size, else 128)')
    out.add_argument(
        '--check-hr-size',
        type=parse_size,
        help='with --dynamic: HR size of the second check (default: one size multiple off the export size)')
    out.add_argument(
        '--with-parsing',
        action='store_true',
        help="W-Net only: also output the LR-size parsing map ('parsing') besides the SR image ('sr')")
    out.add_argument(
        '--tolerance',
        type=float_range(0., 1., min_open=True),
        default=DEFAULT_TOLERANCE,
        help=f'largest max abs difference onnxruntime vs PyTorch accepted, in (0, 1]. Default {DEFAULT_TOLERANCE:g} '
        '(float32, images in [0, 1])')
    out.add_argument(
        '--threads',
        type=int_range(1, 1024),
        help="CPU threads of PyTorch and onnxruntime for the check, 1-1024 (default: torch's)")
    return p


# -------------------------------------------------------------------------------------------------------------- sizes
def size_rules(net, name):
    """The LR sizes the network and its exported graph take.

    Returns:
        tuple: ``(multiple, dynamic_multiple, reason, not_dynamic)``: LR heights and widths must be multiples of
        ``multiple`` (``reason`` says why); with ``--dynamic`` multiples of ``dynamic_multiple``; ``not_dynamic`` is
        None or the reason a dynamic graph cannot be right.
    """
    multiple = int(getattr(net, 'size_multiple', 0) or 0)
    reason = SIZE_REASONS.get(name, 'its size_multiple')
    if not multiple:  # e.g. BasicSR's SwinIR: window partitions of every block, no padding
        windows = [m.window_size for m in net.modules() if isinstance(getattr(m, 'window_size', None), int)]
        multiple = math.lcm(*windows) if windows else 1
        reason = SIZE_REASONS.get(name, 'its attention windows')
    dynamic_multiple, not_dynamic = multiple, NOT_DYNAMIC.get(name)
    if name == 'TANet':
        path = net.global_path
        if path.token_mode == 'global':
            not_dynamic = TANET_GLOBAL
        else:
            dynamic_multiple = math.lcm(multiple, int(path.patch_size))
    return multiple, dynamic_multiple, reason, not_dynamic


def check_lr_size(hr, scale, multiple, name, reason, option='--hr-size', dynamic=False):
    """LR size of HR size ``hr`` or :class:`UsageError` naming the size the network needs."""
    if hr[0] % scale or hr[1] % scale:
        up = tuple(-(-v // scale) * scale for v in hr)
        raise UsageError(f'{option} {hr[0]}x{hr[1]} is not divisible by the scale {scale}: use {option} '
                         f'{up[0]}x{up[1]}.')
    lr = (hr[0] // scale, hr[1] // scale)
    if lr[0] % multiple or lr[1] % multiple:
        ok = tuple(max(multiple, -(-v // multiple) * multiple) for v in lr)
        what = (f'with --dynamic, the graph of {name} takes' if dynamic else f'{name} x{scale} takes')
        hint = ' (or export without --dynamic)' if dynamic else ''
        raise UsageError(f'{option} {hr[0]}x{hr[1]} gives LR {lr[0]}x{lr[1]}, but {what} LR sizes that are multiples '
                         f'of {multiple} ({reason}): use {option} {ok[0] * scale}x{ok[1] * scale} (LR {ok[0]}x{ok[1]})'
                         f'{hint}.')
    return lr


def second_lr_size(lr, multiple):
    """The LR size of the ``--dynamic`` check: one ``multiple`` smaller in height (larger if it cannot shrink) and one
    larger in width, so that both sides and the aspect ratio change."""
    h = lr[0] - multiple if lr[0] - multiple >= multiple else lr[0] + multiple
    return h, lr[1] + multiple


# ------------------------------------------------------------------------------------------------------------ network
def _import_runtime():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UsageError(f'fsr-export needs onnx and onnxruntime ({e}): pip install "basicsr-fsr[export]" (or pip '
                         'install onnx onnxruntime).')


def _hr_size(args, opt, spec):
    from fsr_tools.infer_net import prepare_options_from
    if args.hr_size:
        return tuple(args.hr_size), '--hr-size'
    prep, prep_file = prepare_options_from(opt)
    if prep.get('hr_size'):
        return tuple(int(v) for v in prep['hr_size']), f"the options' dataset ({prep_file})"
    img = spec['kwargs'].get('img_size')
    if img:
        img = (int(img), int(img)) if isinstance(img, (int, float)) else tuple(int(v) for v in img)
        if spec['name'] != 'SwinIR':  # SwinIR's img_size is its LR training patch
            return img, 'network_g.img_size'
    return DEFAULT_HR_SIZE, f"default {DEFAULT_HR_SIZE[0]}x{DEFAULT_HR_SIZE[1]} (fsr-prepare's)"


def fill_zero_parameters(net, std=0.02, seed=0):
    """Give every parameter tensor that is all zero small random values (normal, ``std``), in place; returns their
    names. With random weights an export check should see the whole network: AMINet's last conv starts at zero (its
    untrained output is bicubic), which would leave everything before it unchecked."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    filled = []
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.numel() and not torch.any(param != 0):
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) * std)
                filled.append(name)
    return filled


def load_network(args):
    """``(net in eval mode on the CPU, spec, options dict, weights description)``; every problem a UsageError."""
    import torch

    from fsr_tools.infer_io import InferError
    from fsr_tools.infer_net import build_network, load_options, load_weights, network_spec, read_checkpoint
    from fsr_utils import plugin
    plugin.load()
    try:
        opt = load_options(args.opt) if args.opt else None
        spec = network_spec(opt, args.net, args.scale)
        if args.random_init:
            torch.manual_seed(0)
            net = build_network(spec).float()
            fill_zero_parameters(net)  # e.g. AMINet's zero last conv: the check must see the whole network
            return net.eval(), spec, opt, 'RANDOM (--random-init, seed 0): for testing the export path only'
        key = args.param_key or spec['param_key']
        state, used = read_checkpoint(args.weights, key)  # refuses NaN/Inf weights (check_finite_state_dict)
        net = build_network(spec)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            load_weights(net, spec, args.weights, key)  # raises an InferError saying what the checkpoint is for
            raise UsageError(f'--weights {args.weights} does not load into {spec["name"]}: '
                             f'{" ".join(str(e).split())[:300]}')
    except InferError as e:
        raise UsageError(str(e))
    return net.float().eval(), spec, opt, f'{args.weights} ({used})'


def _exportable(net, with_parsing):
    """The module that is traced: the network, returning a tuple of its exported outputs."""
    from torch import nn

    class Exported(nn.Module):

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            if with_parsing:
                sr, parsing = self.net(x, return_parsing=True)
                return sr, parsing
            out = self.net(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, dict):
                out = next(out[k] for k in ('sr', 'out', 'output', *out) if k in out)
            return out

    return Exported().eval()


# ------------------------------------------------------------------------------------------------- export and check
def export_model(module, lr, opset, dynamic, output_names):
    """The ONNX bytes of ``module`` traced at LR size ``lr`` (batch 1)."""
    import io
    import torch
    import warnings
    axes = None
    if dynamic:
        axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
        for name in output_names:
            axes[name] = {0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
    buf = io.BytesIO()
    example = torch.rand(1, 3, *lr, generator=torch.Generator().manual_seed(CHECK_SEED))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings (Python branches on sizes) are expected: the check below is what decides
            warnings.simplefilter('ignore')
            torch.onnx.export(
                module, (example, ),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=True)
    except Exception as e:  # UnsupportedOperatorError, SymbolicValueError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        hint = (f' Try a higher --opset (up to {opset_range()[1]}).' if 'opset' in first.lower() else '')
        raise ExportError(f'torch.onnx.export failed at opset {opset}: {type(e).__name__}: {first[:400]}.{hint}')
    return buf.getvalue()


def add_metadata(data, props):
    """``data`` (ONNX bytes) with ``props`` (str -> str) added to ``metadata_props``, checked by onnx.checker."""
    import onnx
    model = onnx.load_from_string(data)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_session(data_or_path, threads=None):
    """An onnxruntime CPU session."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    return ort.InferenceSession(data_or_path, so, providers=['CPUExecutionProvider'])


def compare(session, module, x, output_names):
    """``{output: max abs difference}`` of onnxruntime vs PyTorch on ``x``; raises ExportError on a shape mismatch or
    a failed run."""
    import numpy as np
    import torch
    size = 'x'.join(map(str, x.shape))
    try:
        with torch.no_grad():
            ref = module(x)
    except Exception as e:
        raise ExportError(f'PyTorch fails on a {size} input: {type(e).__name__}: {" ".join(str(e).split())[:400]}')
    ref = ref if isinstance(ref, (tuple, list)) else (ref, )
    try:
        got = session.run(list(output_names), {INPUT_NAME: x.numpy()})
    except Exception as e:
        raise ExportError(f'onnxruntime fails on a {size} input: {type(e).__name__}: '
                          f'{" ".join(str(e).split())[:400]}')
    diffs = {}
    for name, r, g in zip(output_names, ref, got):
        r = r.float().numpy()
        if g.shape != r.shape:
            raise ExportError(f'on a {size} input, onnxruntime gives {name} of shape {g.shape}, PyTorch {r.shape}.')
        if not np.isfinite(r).all():
            raise ExportError(f'PyTorch gives non-finite {name} values on a {size} input: the weights are broken.')
        diffs[name] = float(np.abs(g.astype(np.float32) - r).max())
    return diffs


def _write_new(path, data, replace):
    """Write ``data`` to ``path`` through a temporary file in its folder, then rename it into place; without
    ``replace`` never onto a file that appeared meanwhile (a hard link, which fails on an existing name). The file gets
    the usual permissions (0666 minus the umask), not the temporary file's 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UsageError(f'-o {path} appeared while exporting: not replaced (pass --force to replace it).')
        except OSError:  # a file system without hard links
            if os.path.exists(path):
                raise UsageError(f'-o {path} appeared while exporting: not replaced (pass --force to replace it).')
            os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f'cannot write {path}: {e.strerror or e}') from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output(args):
    """The ``-o`` checks (before any work): a new ``.onnx`` file, not an input, in a writable folder; an existing file
    only with ``--force``."""
    from fsr_utils.safety import real
    out = args.output
    inputs = [(args.weights, '--weights'), (args.opt, '--opt')]
    if not str(out).lower().endswith('.onnx'):
        raise UsageError(f'-o {out}: give a file name ending in .onnx (fsr-export never writes onto other files).')
    if os.path.lexists(out) and not os.path.isdir(out):
        if not args.force:
            raise UsageError(f'-o {out} exists: choose another file name, or pass --force to replace it.')
        # check_output_path takes an existing file as a blocked path: check the replacement here
        for path, option in inputs:
            if path and real(path) == real(out):
                raise UsageError(f'-o {out} is the input given by {option}: choose another output path.')
        folder = os.path.dirname(os.path.abspath(out))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f'-o {out} cannot be replaced: {folder} is not writable for this user.')
        return
    check_output_path(out, '-o', inputs=inputs, kind='file')


# ---------------------------------------------------------------------------------------------------------- the tool
def run(args):
    """Export, check and write; returns the printed summary as a dict. Raises UsageError / ExportError."""
    import torch
    _import_runtime()
    if args.opt is None and args.net is None:
        raise UsageError('say which network to export: --opt OPTIONS.yml, or --net NAME --scale S.')
    if args.opt and args.net:
        raise UsageError('give --opt or --net, not both.')
    check_output(args)
    if args.check_hr_size and not args.dynamic:
        raise UsageError('--check-hr-size is the second size of the --dynamic check: add --dynamic or drop it.')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    net, spec, opt, weights = load_network(args)
    name, scale = spec['name'], spec['scale']
    if args.with_parsing and not hasattr(net, 'return_parsing'):
        raise UsageError(f'--with-parsing: {name} has no parsing output (W-Net has); drop the option.')
    multiple, dyn_multiple, reason, not_dynamic = size_rules(net, name)
    if args.dynamic and not_dynamic:
        raise UsageError(f'--dynamic: {name} cannot be exported with free sizes: {not_dynamic}. Export without '
                         '--dynamic, one file per input size (--hr-size).')
    graph_multiple = dyn_multiple if args.dynamic else multiple
    if args.dynamic and dyn_multiple != multiple:
        reason = f'its patch size {net.global_path.patch_size}: the padding to it is a Python branch fixed at export'
    hr, hr_source = _hr_size(args, opt, spec)
    lr = check_lr_size(hr, scale, graph_multiple, name, reason, dynamic=args.dynamic)
    sizes = [(1, lr)]
    if args.dynamic:
        if args.check_hr_size:
            lr2 = check_lr_size(args.check_hr_size, scale, graph_multiple, name, reason, '--check-hr-size', True)
            if lr2 == lr:
                raise UsageError(f'--check-hr-size {args.check_hr_size[0]}x{args.check_hr_size[1]} is the export size: '
                                 'give another size (or leave it out).')
        else:
            lr2 = second_lr_size(lr, graph_multiple)
        sizes.append((2, lr2))
    outputs = ['sr', 'parsing'] if args.with_parsing else ['sr']
    print(
        f'fsr-export: {name} x{scale} ({spec["source"]}{": " + args.opt if args.opt else ""}), weights {weights}',
        flush=True)
    if args.random_init:
        print(
            'WARNING: --random-init: the file holds RANDOM weights, for testing the export path only; it restores '
            'nothing.',
            file=sys.stderr,
            flush=True)
    print(
        f'input: LR {lr[0]}x{lr[1]} (HR {hr[0]}x{hr[1]}: {hr_source}); graph: ' +
        (f'dynamic batch/height/width, LR sides multiples of {graph_multiple}'
         if args.dynamic else f'fixed shape 1x3x{lr[0]}x{lr[1]}') + f'; outputs: {", ".join(outputs)}',
        flush=True)

    module = _exportable(net, args.with_parsing)
    t0 = time.perf_counter()
    data = export_model(module, lr, args.opset, args.dynamic, outputs)
    t_export = time.perf_counter() - t0
    print(
        f'export: torch {torch.__version__} TorchScript exporter, opset {args.opset}: {t_export:.1f} s, '
        f'{len(data) / 1e6:.1f} MB',
        flush=True)

    meta = dict(
        producer=METADATA_TOOL,
        network=name,
        network_g=json.dumps(dict(type=name, **spec['kwargs']), default=str),
        scale=str(scale),
        lr_size=f'{lr[0]}x{lr[1]}',
        hr_size=f'{hr[0]}x{hr[1]}',
        size_multiple=str(graph_multiple),
        dynamic=str(bool(args.dynamic)).lower(),
        outputs=','.join(outputs),
        weights=weights,
        opset=str(args.opset),
        torch=torch.__version__,
        tolerance=f'{args.tolerance:g}',
        input='lq: float32 RGB in [0, 1], NCHW, LR size')
    checks = []
    # the check runs on the bytes to be written, metadata included
    t0 = time.perf_counter()
    session = ort_session(add_metadata(data, meta), threads)
    worst = 0.
    for batch, size in sizes:
        x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(CHECK_SEED + len(checks)))
        diffs = compare(session, module, x, outputs)
        worst = max(worst, *diffs.values())
        text = ', '.join(f'{k} {v:.2e}' for k, v in diffs.items())
        ok = all(v <= args.tolerance for v in diffs.values())
        print(
            f'check {batch}x3x{size[0]}x{size[1]}: max |onnxruntime - PyTorch| = {text} (tolerance '
            f'{args.tolerance:g}) {"ok" if ok else "FAILED"}',
            flush=True)
        checks.append(dict(input=[batch, 3, *size], max_abs_diff=diffs))
        if not ok:
            hints = ([f'the default --opset {DEFAULT_OPSET}'] if args.opset != DEFAULT_OPSET else
                     []) + (['an export without --dynamic'] if len(checks) > 1 else [])
            raise ExportError(f'onnxruntime differs from PyTorch by {max(diffs.values()):.2e} > --tolerance '
                              f'{args.tolerance:g} on a {batch}x3x{size[0]}x{size[1]} input: nothing written.' +
                              (f' Try {" or ".join(hints)}.' if hints else ''))
    meta['checks'] = json.dumps(checks)
    meta['max_abs_diff'] = f'{worst:.3e}'
    final = add_metadata(data, meta)
    t_check = time.perf_counter() - t0
    _write_new(args.output, final, args.force)
    print(f'wrote {args.output} ({len(final) / 1e6:.1f} MB; check {t_check:.1f} s, {threads} threads)', flush=True)
    return dict(meta, output=args.output, export_s=t_export, check_s=t_check)


def main(argv=None):
    """Entry point of ``fsr-export``; returns the exit status (0 written, 1 export/check failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UsageError as e:
        return error_exit(e, 2)
    except ExportError as e:
        return error_exit(e, 1)
    except OSError as e:
        return error_exit(e, 1)
    return 0


# ------------------------------------------------------------------------------------------------ running the file
class OnnxNetwork:
    """An exported file run by onnxruntime, called like the torch network: ``net(x)`` with ``x`` a float (N, 3, h, w)
    tensor in [0, 1] returns the SR tensor (a tuple ``(sr, parsing)`` for a file exported ``--with-parsing``), on
    ``x``'s device and dtype.

    Drop-in for :func:`fsr_tools.infer_net.run_network` and :class:`~fsr_tools.restorer.FaceRestorer`: it has
    ``scale``, ``size_multiple`` (the LR multiple the graph takes; ``run_network`` pads to it), ``eval()`` and
    ``to()`` (no-ops: onnxruntime runs on the CPU). A fixed-shape file (exported without ``--dynamic``) takes batch 1
    at its export size only: larger batches are run face by face, other sizes raise ``ValueError`` naming the size.

    Args:
        path (str): the ``.onnx`` file (written by ``fsr-export``; files from elsewhere work when their metadata or
            shapes say the scale).
        threads (int | None): onnxruntime intra-op threads (None: onnxruntime's default, one per physical core).
        scale (int | None): the scale, for files without ``fsr-export`` metadata.
    """

    def __init__(self, path, threads=None, scale=None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f'ONNX file {path} does not exist.')
        try:
            self.session = ort_session(path, threads)
        except ImportError:
            raise ImportError('running an ONNX file needs onnxruntime: pip install "basicsr-fsr[export]"')
        self.path = path
        self.info = dict(self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.fixed_size = tuple(shape[2:]) if all(isinstance(v, int) for v in shape[2:]) else None
        meta_scale = self.info.get('scale')
        if meta_scale:
            self.scale = int(meta_scale)
        elif scale:
            self.scale = int(scale)
        else:
            out = self.session.get_outputs()[0].shape
            if not (self.fixed_size and isinstance(out[2], int)):
                raise ValueError(f'{path}: no scale in the metadata and dynamic shapes: give scale=.')
            self.scale = out[2] // self.fixed_size[0]
        self.size_multiple = int(self.info.get('size_multiple') or 1)
        self.lr_size = self.fixed_size
        self.dynamic = self.fixed_size is None

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def _run(self, x):
        outs = self.session.run(self.output_names, {self.input_name: x})
        return outs

    def __call__(self, x):
        import numpy as np
        import torch
        if self.fixed_size and tuple(x.shape[-2:]) != self.fixed_size:
            h, w = self.fixed_size
            raise ValueError(f'{self.path} was exported for LR {h}x{w} inputs only (fixed shape), got '
                             f'{x.shape[-2]}x{x.shape[-1]}: export it at this size (fsr-export --hr-size '
                             f'{x.shape[-2] * self.scale}x{x.shape[-1] * self.scale}) or with --dynamic.')
        arr = np.ascontiguousarray(x.detach().to('cpu', torch.float32).numpy())
        if self.fixed_batch and arr.shape[0] != self.fixed_batch:
            parts = [self._run(arr[i:i + 1]) for i in range(arr.shape[0])]
            outs = [np.concatenate(p, axis=0) for p in zip(*parts)]
        else:
            outs = self._run(arr)
        outs = [torch.from_numpy(o).to(device=x.device, dtype=x.dtype) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)


if __name__ == '__main__':
    sys.exit(main())
