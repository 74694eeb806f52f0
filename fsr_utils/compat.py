"""Every fix that BasicSR 1.4.2 needs on current torch/torchvision and on CPU-only machines, in one place.

:func:`install_torchvision_shim` must run before ``basicsr`` is imported; :func:`patch_basicsr` after. Both are
idempotent and are applied by :mod:`fsr_basicsr_hook` (the import hook that BasicSR's own entry points go through) and
by :func:`fsr_utils.plugin.load`.

Fixes:

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17, and ``basicsr/data/degradations.py``
   imports ``rgb_to_grayscale`` from it. A module of that name re-exporting the function from
   ``torchvision.transforms.functional`` is put into ``sys.modules``.
2. Resume on CPU: ``basicsr.train.load_resume_state`` calls ``torch.cuda.current_device()``. The replacement maps the
   state to the CUDA device when the run uses GPUs and to the CPU otherwise, loads it with ``weights_only=True``, and
   finds the states under the experiment folder of the run (BasicSR looks in a CWD-relative ``experiments/`` folder).
3. Distributed training on CPU: ``init_dist`` hard-codes NCCL and ``torch.cuda.set_device``; the replacement uses gloo
   when CUDA is not available (NCCL stays the default with GPUs). ``BaseModel.model_to_device`` passes
   ``device_ids=[torch.cuda.current_device()]`` to DDP; the replacement passes device ids only for CUDA models.

4. Atomic checkpoints: ``BaseModel.save_network`` and ``save_training_state`` write to a temporary file in the same
   folder and rename it (``os.replace``), so a kill during a save never leaves a truncated ``.pth`` or ``.state`` under
   its final name. Resume (``--auto_resume``) takes the newest training state that loads and whose network checkpoints
   load, and says (on stderr) which newer ones it skipped and why; none usable is an error naming them. As BasicSR's
   ``@master_only`` methods they write on rank 0 only (under DDP every rank wrote every file). The training state
   also holds the fp16 gradient scaler (``grad_scaler``) of a ``train.amp: fp16`` run.
5. Options (``parse_options`` of ``basicsr.utils.options``, ``basicsr.train`` and ``basicsr.test``):

   * ``datasets.train.total_batch_size`` states the total batch of one optimizer step (the papers' "batch size");
     ``batch_size_per_gpu`` is derived from it: total / world size under DDP (one process per GPU), total / num_gpu
     under DataParallel (BasicSR multiplies the per-GPU batch by ``num_gpu`` there), with a clear error when it does
     not divide. An explicit ``batch_size_per_gpu`` (e.g. ``--force_yml`` on a small machine) wins, with a warning.
   * Epoch schedules: ``train.total_epochs``, ``train.scheduler.milestones_epochs`` (MultiStepLR) or
     ``periods_epochs`` (CosineAnnealingRestartLR), ``val.val_freq_epochs`` and ``logger.save_checkpoint_freq_epochs``
     are converted to iterations once the training set is built, with the iterations per epoch that BasicSR's loader
     really runs: ``floor(ceil(N * enlarge_ratio / world_size) / loader_batch)`` (drop_last), so a milestone of
     ``e`` epochs halves the lr after exactly ``e`` passes over the data, for any dataset size and GPU count. A key
     also given in iterations (``--force_yml train:total_iter=20``) wins, with a warning.
   * A missing ``dataroot_*``, an unregistered ``network_*`` or ``model_type``, and an output folder that is a file
     raise :class:`OptionsError` naming the options file, the key and the fix, before anything runs.
   * A resumed training continues the data order of the interrupted one (:func:`resumable_sampler_class`).
   * ``python -m basicsr.train`` / ``basicsr.test`` from a pip install would write ``experiments/`` and ``results/``
     under site-packages (BasicSR's root is the parent of the package): they (and ``tb_logger/``) go under the
     current directory instead.
   * Numbers (:func:`check_numbers`, from :func:`check_options`): every numeric key BasicSR or the plugin reads is
     checked before anything runs (``train:total_iter=-5`` trained nothing and saved an untrained network), each error
     naming the key and its valid range; ``scale`` must equal the ``upscale`` of the network (its default included).
   * ``--force_yml`` (:func:`check_force_yml`, before BasicSR applies it): a key the file does not have and that no
     part of BasicSR or the plugin reads in that section (``train:totl_iter=7``, which BasicSR adds silently), or a
     value of another kind than the file's (``train:total_iter=abc``), is an error naming the key; ``+key=value``
     adds a key anyway. Signed and exponent numbers (``-5``, ``1e-3``), which BasicSR keeps as text, are numbers.
   * ``--auto_resume`` in a folder that holds another network's run (same name, other ``network_g``): one line
     naming both networks and the fix, before anything is written there (:func:`check_resume_networks`).
   * The speed options of the plugin's models (``train.amp``, ``channels_last``, ``compile``, ``tf32``,
     ``grad_scaler``; ``val.amp``) are checked with the numbers (:func:`check_speed_options`) and known to
     ``--force_yml``.
   * ``num_gpu`` > 1 (``auto`` on a multi-GPU machine) without ``--launcher``: BasicSR uses DataParallel; a warning
     says so and gives the torchrun command (:func:`warn_data_parallel`).

6. Broken inputs are refused where they enter (DESIGN.md, "Files a tool writes"):

   * ``BaseModel.load_network`` (:func:`load_network`): a checkpoint with NaN or Inf weights (pretrained, resumed, or
     the network of ``fsr-test``), a missing file, or a checkpoint of another network raises :class:`OptionsError`
     naming the option, the file and the tensor; ``--auto_resume`` skips a state whose networks are not finite.
     ``save_network`` never writes non-finite weights.
   * Paired reads: ``PairedImageDataset`` checks LR size == floor(HR size / scale) when built (every pair of an LMDB
     from its ``meta_info.txt``, the first pair of a folder) and at every read (:func:`check_pair_size`), before the
     validation crop that scored an x8 set under an x4 network on the HR face's top-left corner
     (``FSRFaceDataset`` does the same; :class:`PairSizeError`).
   * A non-finite loss stops the training before the optimizer step applies it (``fsr_models.fsr_model``:
     ``FSRFiniteLossMixin``).

Limitation: ``python basicsr/train.py`` and ``python -m basicsr.train`` run ``train.py`` as ``__main__``, whose own
copy of ``load_resume_state`` cannot be replaced from outside, so CPU resume needs ``fsr-train`` (GPU resume works
everywhere; the fallback of fix 4 works there too, as ``parse_options`` picks the state).
"""
import os
import sys
import types

from fsr_utils.safety import UsageError, check_finite_state_dict, check_number

_STATE = {'shim': False, 'patched': False, 'train_opt': None, 'resume_position': None}


def install_torchvision_shim():
    """Provide ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17) for basicsr 1.4.2."""
    if _STATE['shim'] or 'torchvision.transforms.functional_tensor' in sys.modules:
        _STATE['shim'] = True
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        from torchvision.transforms import functional
        shim = types.ModuleType('torchvision.transforms.functional_tensor')
        shim.rgb_to_grayscale = functional.rgb_to_grayscale
        sys.modules['torchvision.transforms.functional_tensor'] = shim
    _STATE['shim'] = True


def _resume_map_location(opt):
    import torch
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


def load_training_state(path, map_location='cpu'):
    """Load a BasicSR ``.state`` file (optimizer and scheduler states) with ``weights_only`` loading.

    The only non-tensor class in such a file is the ``collections.Counter`` of the milestones of BasicSR's schedulers,
    which is allowed explicitly.
    """
    import collections
    import torch
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Training state {path} does not exist: check path.resume_state in the options file or '
                                'remove it to start a new training.')
    with torch.serialization.safe_globals([collections.Counter]):
        return torch.load(path, map_location=map_location, weights_only=True)


class OptionsError(UsageError):
    """A problem in an options file that is found before anything runs (the message names the file, key and fix).

    A :class:`fsr_utils.safety.UsageError` (a ``ValueError``): ``fsr-train`` / ``fsr-test`` exit with status 2.
    """


def _network_files(opt, resume_iter):
    """The network checkpoints that BasicSR's ``check_resume`` will load for ``resume_iter``."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    models = opt['path'].get('models') or os.path.join('experiments', opt['name'], 'models')
    return [
        os.path.join(models, f'net_{key.replace("network_", "")}_{resume_iter}.pth') for key in opt
        if key.startswith('network_') and key not in ignored
    ]


def _check_state(opt, path, map_location='cpu'):
    """Load a training state and check its network checkpoints; returns the state or raises with the reason."""
    import torch
    state = load_training_state(path, map_location)
    if not isinstance(state, dict) or 'iter' not in state or 'epoch' not in state:
        raise ValueError('not a BasicSR training state (no iter/epoch)')
    for net_path in _network_files(opt, state['iter']):
        if not os.path.isfile(net_path):
            raise FileNotFoundError(f'its network checkpoint {net_path} is missing')
        try:
            net = torch.load(net_path, map_location='cpu', weights_only=True)
        except Exception as exc:  # a truncated or foreign file: any error means "cannot resume from it"
            raise ValueError(f'its network checkpoint {net_path} does not load ({type(exc).__name__}: {exc})') from exc
        check_finite_state_dict(net, f'its network checkpoint {net_path}')
    return state


def find_resume_state(opt, report=None):
    """The newest training state of the experiment that loads (with its network checkpoints), or None.

    Every newer state that does not load (e.g. truncated by a kill during a save with BasicSR's non-atomic writes) is
    skipped, and ``report`` (default: print to stderr) is called with a sentence naming it and the reason.

    Raises:
        OptionsError: States exist but none loads (the experiment cannot be resumed; the message lists them).
    """
    state_dir = opt['path'].get('training_states') or os.path.join('experiments', opt['name'], 'training_states')
    if not os.path.isdir(state_dir):
        return None
    iters = []
    for name in os.listdir(state_dir):
        stem = name[:-len('.state')] if name.endswith('.state') else None
        if stem is not None and stem.isdigit():
            iters.append(int(stem))
    if not iters:
        return None
    report = report or (lambda msg: print(msg, file=sys.stderr, flush=True))
    reasons = []
    for it in sorted(iters, reverse=True):
        path = os.path.join(state_dir, f'{it}.state')
        try:
            state = _check_state(opt, path)
        except Exception as exc:  # any failure to load: skip this state, say why
            plain = isinstance(exc, (ValueError, FileNotFoundError))
            reason = str(exc) if plain else f'{type(exc).__name__}: {exc}'
            reasons.append(f'{path} ({reason})')
            report(f'Resume: skipping training state {path}: it cannot be used ({reason}); trying an older one.')
            continue
        if reasons:
            report(f'Resume: resuming from {path} (newer states skipped: {len(reasons)}).')
        _STATE['resume_position'] = (state['epoch'], state['iter'])
        return path
    raise OptionsError(f'--auto_resume: none of the training states in {state_dir} can be used: ' + '; '.join(reasons) +
                       '. Remove them (or the experiment folder) to start a new training.')


def load_resume_state(opt):
    """CPU-safe replacement of ``basicsr.train.load_resume_state``: with ``--auto_resume``, the newest usable state."""
    from basicsr.utils import check_resume
    resume_state_path = None
    if opt['auto_resume']:
        resume_state_path = find_resume_state(opt)
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    try:
        resume_state = load_training_state(resume_state_path, _resume_map_location(opt))
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise OptionsError(f'training state {resume_state_path} (path.resume_state) cannot be loaded '
                           f'({type(exc).__name__}: {exc}): it is truncated or not a BasicSR state; give an older '
                           'one, or use --auto_resume to take the newest state that loads.') from exc
    check_resume(opt, resume_state['iter'])
    _STATE['resume_position'] = (resume_state['epoch'], resume_state['iter'])
    return resume_state


# ------------------------------------------------------------------------------------------------- atomic checkpoints
def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file in the folder of ``path``, flushed to disk, then renamed to ``path``.

    A reader (or a resume after a kill) sees either the previous file or the complete new one, never a truncated file.
    """
    import tempfile
    import torch
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _save_with_retry(obj, path, what):
    import time
    from basicsr.utils import get_root_logger
    for retry in (2, 1, 0):
        try:
            atomic_torch_save(obj, path)
            return
        except Exception as exc:  # BasicSR retries occasional write errors (network file systems)
            if retry == 0:
                raise
            get_root_logger().warning(f'Save {what} error: {exc}, remaining retry times: {retry}')
            time.sleep(1)


def _is_master():
    """True in the process that writes checkpoints: rank 0 under DDP, the only process otherwise (BasicSR's
    ``@master_only``, which the replacements below would otherwise lose)."""
    from basicsr.utils.dist_util import get_dist_info
    return get_dist_info()[0] == 0


def save_network(self, net, net_label, current_iter, param_key='params'):
    """``BaseModel.save_network`` with an atomic write (same file name and content); NaN/Inf weights are not saved.

    As BasicSR's ``@master_only`` method: under DDP only rank 0 writes (the networks are the same on every rank).
    """
    if not _is_master():
        return
    if current_iter == -1:
        current_iter = 'latest'
    save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(param_keys), 'The lengths of net and param_key should be the same.'
    save_dict = {}
    for net_, param_key_ in zip(nets, param_keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[param_key_] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state_dict.items()}
    try:  # a network that is no longer finite is never written over a good checkpoint
        check_finite_state_dict(save_dict, f'{net_label} at iteration {current_iter}')
    except ValueError as exc:
        raise FloatingPointError(f'not saving {save_path}: {exc}') from None
    _save_with_retry(save_dict, save_path, 'model')


def save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state`` with an atomic write (same file name and content; rank 0 only, as BasicSR's
    ``@master_only``), plus ``grad_scaler``: the state of the fp16 gradient scaler (``train.amp: fp16``), which the
    plugin's models restore on resume."""
    if current_iter == -1 or not _is_master():
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers]
    }
    scaler = getattr(self, 'grad_scaler', None)
    if scaler is not None and scaler.is_enabled():
        state['grad_scaler'] = scaler.state_dict()
    _save_with_retry(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                     'training state')


# ------------------------------------------------------------------------------------------- loading checkpoints
def _path_option(opt, load_path):
    """The option a checkpoint path came from (``path.pretrain_network_g``), as the user reads it."""
    for key, value in (opt.get('path') or {}).items():
        if value == load_path and key.startswith('pretrain_network'):
            resumed = opt['path'].get('resume_state')
            return f'path.{key}' + (f' (set by the resume from {resumed})' if resumed else '')
    return 'the checkpoint'


def state_dict_mismatch(net_state, load_state):
    """``(missing, unexpected, size_mismatches)`` between a network's state dict and a checkpoint's.

    ``size_mismatches`` lists ``(key, network shape, checkpoint shape)``.
    """
    missing = sorted(set(net_state) - set(load_state))
    unexpected = sorted(set(load_state) - set(net_state))
    sizes = [(k, tuple(net_state[k].shape), tuple(load_state[k].shape))
             for k in sorted(set(net_state) & set(load_state))
             if hasattr(load_state[k], 'shape') and tuple(net_state[k].shape) != tuple(load_state[k].shape)]
    return missing, unexpected, sizes


def mismatch_text(missing, unexpected, sizes):
    """A short description of :func:`state_dict_mismatch` (counts and the first names)."""
    parts = []
    if sizes:
        k, a, b = sizes[0]
        parts.append(f'{len(sizes)} tensors of another shape (e.g. {k}: {list(b)} in the file, {list(a)} in the '
                     'network)')
    if missing:
        parts.append(f'{len(missing)} tensors missing from the file (e.g. {missing[0]})')
    if unexpected:
        parts.append(f'{len(unexpected)} tensors the network does not have (e.g. {unexpected[0]})')
    return '; '.join(parts)


def load_network(self, net, load_path, strict=True, param_key='params'):
    """``BaseModel.load_network`` that refuses a broken checkpoint in one line before the network is touched.

    As BasicSR: ``param_key`` (``params_ema`` falls back to ``params``), ``module.`` prefixes removed, ``strict``
    loading, and BasicSR's warnings about differing keys. Added: a missing file, NaN or Inf weights (naming the
    tensor), and a checkpoint of another network (with ``strict``: keys or shapes that differ; without: no tensor that
    fits) raise :class:`OptionsError` naming the option, the file and the fix.
    """
    import torch
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    net = self.get_bare_model(net)
    option = _path_option(self.opt, load_path)
    if not os.path.isfile(load_path):
        raise OptionsError(f'{option}: {load_path} does not exist. Give the path of a trained network (.pth), or ~ '
                           'to start from random weights.')
    load_net = torch.load(load_path, map_location=lambda storage, loc: storage)
    if param_key is not None:
        if param_key not in load_net and 'params' in load_net:
            param_key = 'params'
            logger.info('Loading: params_ema does not exist, use params.')
        if param_key not in load_net:
            raise OptionsError(f'{option}: {load_path} holds no "{param_key}" weights (its keys: '
                               f'{", ".join(map(str, list(load_net)[:5]))}): it is not a BasicSR network checkpoint; '
                               'set path.param_key_g to the key that holds the weights.')
        load_net = load_net[param_key]
    try:
        check_finite_state_dict(load_net, f'{load_path} ({param_key})')
    except ValueError as exc:
        raise OptionsError(f'{option}: {exc}') from None
    logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    load_net = {(k[7:] if k.startswith('module.') else k): v for k, v in load_net.items()}
    missing, unexpected, sizes = state_dict_mismatch(net.state_dict(), load_net)
    fits = len(set(net.state_dict()) & set(load_net)) - len(sizes)
    if (strict and (missing or unexpected or sizes)) or (fits == 0 and net.state_dict()):
        raise OptionsError(
            f'{option}: {load_path} does not fit the network {net.__class__.__name__} of the options (network_*): '
            f'{mismatch_text(missing, unexpected, sizes)}. It holds another network (or another configuration of '
            'it): give the checkpoint this network was trained to, or the network options it was trained with.')
    self._print_different_keys_loading(net, load_net, strict)
    net.load_state_dict(load_net, strict=strict)


def _experiment_network(opt):
    """``(type, options file)`` of network_g as the options copy in the experiment folder states (or None)."""
    import glob
    import yaml
    root = opt['path'].get('experiments_root') or os.path.join('experiments', opt['name'])
    for path in sorted(glob.glob(os.path.join(root, '*.yml')), key=os.path.getmtime, reverse=True):
        try:
            with open(path) as f:
                other = yaml.safe_load(f)
            return (other.get('network_g') or {}).get('type'), path
        except Exception:  # an unreadable copy names nothing
            continue
    return None, None


def _build_on_meta(net_opt):
    """The network of ``net_opt`` built without memory (on the meta device; on the CPU if the network needs it)."""
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY
    kwargs = dict(net_opt)
    cls = ARCH_REGISTRY.get(kwargs.pop('type'))
    try:
        with torch.device('meta'):
            return cls(**kwargs)
    except Exception:  # an __init__ that computes on values: build it for real
        return cls(**kwargs)


def check_resume_networks(opt, state_path):
    """Raise :class:`OptionsError` when the network checkpoints of a training state belong to another network.

    ``--auto_resume`` in a folder that holds another network's run (same experiment name, other ``network_g``) would
    otherwise die in ``load_state_dict`` with a dump of every key, after the run wrote into that folder.
    """
    import torch
    state = load_training_state(state_path)
    ignored = opt['path'].get('ignore_resume_networks') or []
    models = opt['path'].get('models') or os.path.join('experiments', opt['name'], 'models')
    for key in [k for k in opt if k.startswith('network_') and k not in ignored]:
        net_path = os.path.join(models, f'net_{key[len("network_"):]}_{state["iter"]}.pth')
        if not isinstance(opt.get(key), dict) or 'type' not in opt[key] or not os.path.isfile(net_path):
            continue
        saved = torch.load(net_path, map_location='cpu', weights_only=True)
        saved = saved.get('params', saved) if isinstance(saved, dict) else saved
        try:
            net = _build_on_meta(opt[key])
        except Exception:  # the options' network cannot be built: the model build will say why
            return
        saved = {(k[7:] if k.startswith('module.') else k): v for k, v in saved.items()}
        missing, unexpected, sizes = state_dict_mismatch(net.state_dict(), saved)
        strict = opt['path'].get(f'strict_load_{key[len("network_"):]}', True)
        if (strict and (missing or unexpected or sizes)) or not set(net.state_dict()) & set(saved):
            other, copy = _experiment_network(opt) if key == 'network_g' else (None, None)
            belongs = f'a {other} network (as {copy} states)' if other else 'another network'
            root = os.path.dirname(os.path.dirname(net_path))
            raise OptionsError(
                f'--auto_resume: {net_path} holds {belongs}, not the {opt[key]["type"]} of {_opt_file_label(opt)} '
                f'({key}; {mismatch_text(missing, unexpected, sizes)}): the experiment folder {root} belongs to '
                'another run with the same name. Give this run another name (option `name`, e.g. --force_yml '
                f'name={opt["name"]}_2), or move that folder away to start anew.')


# --------------------------------------------------------------------------------------------------- paired reads
class PairSizeError(UsageError):
    """An LR image that is not its HR image divided by ``scale``: an LR set of another scale or of other faces."""


def check_pair_size(lq_hw, gt_hw, scale, key, lq_source, gt_source):
    """Raise :class:`PairSizeError` unless the LR size is ``floor(HR size / scale)``.

    ``floor`` keeps BasicSR's mod-crop of HR sizes that are not a multiple of the scale (an HR of 130 pixels and an LR
    of 32 at x4); anything else (an x8 LR set under ``scale: 4``, which BasicSR's validation crops to the HR face's
    top-left quarter and scores) is refused, naming the key, both sets, the sizes and the fix.
    """
    (lq_h, lq_w), (gt_h, gt_w) = tuple(lq_hw[:2]), tuple(gt_hw[:2])
    if (lq_h, lq_w) == (gt_h // scale, gt_w // scale):
        return
    real_scale = None
    if lq_h and lq_w and gt_h % lq_h == 0 and gt_w % lq_w == 0 and gt_h // lq_h == gt_w // lq_w:
        real_scale = gt_h // lq_h
    pair = f' (an x{real_scale} pair)' if real_scale else ''
    other = ''
    if real_scale:
        other = f', or set scale: {real_scale} (and the network\'s upscale) if the run is x{real_scale}'
    raise PairSizeError(
        f'{key}: LR {lq_h}x{lq_w} in {lq_source} x scale {scale} != HR {gt_h}x{gt_w} in {gt_source}{pair}: the LR set '
        f'does not belong to these HR faces at scale {scale}. Point dataroot_lq at the lr_x{scale} set of the same '
        f'faces{other}.')


def lmdb_sizes(lmdb_path):
    """``{key: (h, w)}`` from the ``meta_info.txt`` of a BasicSR LMDB (lines ``key.png (h,w,c) level``)."""
    import re
    sizes = {}
    try:
        with open(os.path.join(lmdb_path, 'meta_info.txt')) as f:
            for line in f:
                match = re.match(r'\s*([^.\s]+)\.\S*\s+\((\d+),\s*(\d+)', line)
                if match:
                    sizes[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    except OSError:
        return {}
    return sizes


def check_set_sizes(paths, scale, lq_root, gt_root, lmdb_backend):
    """Check the pairs of a paired dataset when it is built, before any work.

    LMDB: every pair, from the sizes ``meta_info.txt`` lists (no image is decoded). Folders: the first pair (a wrong
    folder is wrong for every face; each read checks its own pair).
    """
    if not paths:
        return
    if lmdb_backend:
        lq_sizes, gt_sizes = lmdb_sizes(lq_root), lmdb_sizes(gt_root)
        for p in paths:
            lq, gt = lq_sizes.get(p['lq_path']), gt_sizes.get(p['gt_path'])
            if lq and gt:
                check_pair_size(lq, gt, scale, f'key {p["lq_path"]}', lq_root, gt_root)
        return
    import cv2
    lq, gt = (cv2.imread(paths[0][k], cv2.IMREAD_UNCHANGED) for k in ('lq_path', 'gt_path'))
    if lq is not None and gt is not None:
        check_pair_size(lq.shape, gt.shape, scale, os.path.basename(paths[0]['lq_path']), lq_root, gt_root)


def paired_dataset_init(init):
    """``PairedImageDataset.__init__`` followed by :func:`check_set_sizes`."""
    if getattr(init, '_fsr_wrapped', False):
        return init

    def wrapped(self, opt):
        init(self, opt)
        check_set_sizes(self.paths, self.opt['scale'], self.lq_folder, self.gt_folder,
                        self.io_backend_opt.get('type') == 'lmdb')

    wrapped._fsr_wrapped = True
    wrapped.__wrapped__ = init
    return wrapped


def paired_dataset_getitem(self, index):
    """``PairedImageDataset.__getitem__`` of BasicSR 1.4.2 that checks every pair (:func:`check_pair_size`) before the
    crop that hid a wrong-scale validation set (BasicSR crops the HR face to LR size x scale outside training)."""
    from basicsr.data.transforms import augment, paired_random_crop
    from basicsr.utils import FileClient, bgr2ycbcr, imfrombytes, img2tensor
    from torchvision.transforms.functional import normalize
    if self.file_client is None:
        self.file_client = FileClient(self.io_backend_opt.pop('type'), **self.io_backend_opt)
    scale = self.opt['scale']
    gt_path = self.paths[index]['gt_path']
    img_gt = imfrombytes(self.file_client.get(gt_path, 'gt'), float32=True)
    lq_path = self.paths[index]['lq_path']
    img_lq = imfrombytes(self.file_client.get(lq_path, 'lq'), float32=True)
    check_pair_size(img_lq.shape, img_gt.shape, scale, os.path.basename(str(lq_path)), self.lq_folder, self.gt_folder)
    if self.opt['phase'] == 'train':
        img_gt, img_lq = paired_random_crop(img_gt, img_lq, self.opt['gt_size'], scale, gt_path)
        img_gt, img_lq = augment([img_gt, img_lq], self.opt['use_hflip'], self.opt['use_rot'])
    if 'color' in self.opt and self.opt['color'] == 'y':
        img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
        img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]
    if self.opt['phase'] != 'train':  # BasicSR's mod-crop of HR sizes that are not a multiple of the scale
        img_gt = img_gt[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale, :]
    img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
    if self.mean is not None or self.std is not None:
        normalize(img_lq, self.mean, self.std, inplace=True)
        normalize(img_gt, self.mean, self.std, inplace=True)
    return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}


# ------------------------------------------------------------------------------------------ batch, epochs, checks
def _opt_file_label(opt):
    return opt.get('_opt_file') or 'the options file'


def _warn(opt, msg):
    """A warning before BasicSR's logger exists (rank 0 only): printed to stderr; later also in the log."""
    if opt.get('rank', 0) == 0:
        print(f'Warning: {msg}', file=sys.stderr, flush=True)
    opt.setdefault('_fsr_warnings', []).append(msg)


def resolve_total_batch(opt):
    """Derive ``datasets.train.batch_size_per_gpu`` from ``datasets.train.total_batch_size`` and the world size.

    Under DDP (``--launcher pytorch``/``slurm``) every process loads ``batch_size_per_gpu`` faces, so it is total /
    world_size. Without DDP, BasicSR's loader batch is ``batch_size_per_gpu * num_gpu`` (DataParallel splits it over the
    GPUs), so it is total / num_gpu (total on the CPU or one GPU). Returns the per-process loader batch, or None when
    the option file states no total batch.

    An explicit ``batch_size_per_gpu`` that disagrees (e.g. from ``--force_yml`` on a small machine) wins, with a
    warning that states the resulting total batch.

    Raises:
        OptionsError: The total does not divide among the devices.
    """
    train = (opt.get('datasets') or {}).get('train')
    if not train or train.get('total_batch_size') is None:
        return None
    total = train['total_batch_size']
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise OptionsError(f'{_opt_file_label(opt)}: datasets.train.total_batch_size must be a positive integer, '
                           f'not {total!r}.')
    world = int(opt.get('world_size', 1)) if opt.get('dist') else 1
    num_gpu = int(opt.get('num_gpu') or 0)
    per_loader = 1 if opt.get('dist') else max(num_gpu, 1)  # devices one loader batch is split over (DataParallel)
    divisor = world * per_loader
    if total % divisor:
        how = f'{world} DDP processes' if opt.get('dist') else f'{num_gpu} GPUs (DataParallel)'
        raise OptionsError(f'{_opt_file_label(opt)}: datasets.train.total_batch_size {total} does not divide among '
                           f'{how}: run on a number of GPUs that divides {total}, or change the total batch (this '
                           'changes the training the paper describes).')
    per_gpu = total // divisor
    given = train.get('batch_size_per_gpu')
    if given is not None and given != per_gpu:
        # An explicit per-GPU batch (e.g. --force_yml datasets:train:batch_size_per_gpu=1 on a small machine) wins.
        _warn(
            opt, f'{_opt_file_label(opt)}: datasets.train.batch_size_per_gpu {given} overrides total_batch_size '
            f'{total}: the total batch is {given * divisor} on {divisor} device(s), not the {total} the file states.')
        return given * per_loader
    train['batch_size_per_gpu'] = per_gpu
    return per_gpu * per_loader


def iters_per_epoch(opt, num_images):
    """Optimizer steps in one epoch of BasicSR's training loop over ``num_images`` faces.

    ``EnlargedSampler`` gives each process ``ceil(N * enlarge_ratio / world_size)`` indices and the train loader drops
    the last incomplete batch, so one epoch is ``floor(that / loader batch)`` steps.
    """
    import math
    train = opt['datasets']['train']
    world = int(opt.get('world_size', 1)) if opt.get('dist') else 1
    num_gpu = int(opt.get('num_gpu') or 0)
    loader_batch = train['batch_size_per_gpu'] * (1 if opt.get('dist') else max(num_gpu, 1))
    per_replica = math.ceil(num_images * train.get('dataset_enlarge_ratio', 1) / world)
    steps = per_replica // loader_batch
    if steps < 1:
        raise OptionsError(f'{_opt_file_label(opt)}: the training set has {num_images} faces, fewer than one batch '
                           f'({loader_batch} per process, {world} process(es)): use more faces or a smaller batch.')
    return steps


_EPOCH_KEYS = (('train', 'total_epochs', 'total_iter'), ('val', 'val_freq_epochs', 'val_freq'),
               ('logger', 'save_checkpoint_freq_epochs', 'save_checkpoint_freq'))


def needs_epoch_schedule(opt):
    """True when the options state a schedule in epochs (converted by :func:`resolve_epoch_schedule`)."""
    sched = (opt.get('train') or {}).get('scheduler') or {}
    return any(k in sched for k in ('milestones_epochs', 'periods_epochs')) or any(
        (opt.get(sec) or {}).get(key) is not None for sec, key, _ in _EPOCH_KEYS)


def resolve_epoch_schedule(opt, num_images):
    """Convert the epoch-based keys of the options into BasicSR's iteration-based ones, in place.

    ``train.total_epochs`` -> ``train.total_iter``; ``train.scheduler.milestones_epochs`` -> ``milestones``;
    ``train.scheduler.periods_epochs`` -> ``periods``; ``val.val_freq_epochs`` -> ``val_freq``;
    ``logger.save_checkpoint_freq_epochs`` -> ``save_checkpoint_freq``. An epoch is :func:`iters_per_epoch` steps.

    Returns:
        dict: ``{'iters_per_epoch': I, 'conversions': [(key, epochs, iterations), ...]}``.

    A key given in iterations too (e.g. ``--force_yml train:total_iter=20`` for a short run) wins over its epoch form,
    with a warning.
    """
    steps = iters_per_epoch(opt, num_images)
    done = []
    sched = (opt.get('train') or {}).get('scheduler') or {}
    for ep_key, key in (('milestones_epochs', 'milestones'), ('periods_epochs', 'periods')):
        if ep_key in sched:
            epochs = sched.pop(ep_key)
            if sched.get(key) is not None:
                _warn(
                    opt, f'{_opt_file_label(opt)}: train.scheduler.{key} {sched[key]} is used, {ep_key} {epochs} '
                    'ignored (both are given).')
                continue
            sched[key] = [int(round(e * steps)) for e in epochs]
            done.append((f'train.scheduler.{key}', list(epochs), sched[key]))
    for sec, ep_key, key in _EPOCH_KEYS:
        section = opt.get(sec) or {}
        if section.get(ep_key) is None:
            section.pop(ep_key, None)
            continue
        epochs = section.pop(ep_key)
        if section.get(key) is not None:
            _warn(
                opt, f'{_opt_file_label(opt)}: {sec}.{key} {section[key]} is used, {ep_key} {epochs} ignored (both '
                'are given).')
            continue
        section[key] = int(round(epochs * steps))
        done.append((f'{sec}.{key}', epochs, section[key]))
    return {'iters_per_epoch': steps, 'conversions': done}


def _registry_check(opt, key, registry, what):
    import difflib
    name = (opt.get(key) or {}).get('type') if key.startswith('network_') else opt.get(key)
    if name is None or name in registry:
        return
    known = sorted(registry.keys())
    close = difflib.get_close_matches(str(name), known, n=3)
    plugin = sorted(k for k, v in registry._obj_map.items() if getattr(v, '__module__', '').startswith('fsr_'))
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    where = f'{key}.type' if key.startswith('network_') else key
    raise OptionsError(f'{_opt_file_label(opt)}: {where} "{name}" is not a registered {what}: {hint}the plugin\'s are '
                       f'{", ".join(plugin)}.')


def _file_in_path(path):
    """The first existing non-folder on the way to ``path`` (or None)."""
    path = os.path.abspath(path)
    parts = []
    while True:
        parts.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for p in reversed(parts):
        if os.path.exists(p) and not os.path.isdir(p):
            return p
        if not os.path.exists(p):
            return None
    return None


# ------------------------------------------------------------------------------------------------- numbers
def _signature_default(net_opt, arg):
    """``net_opt[arg]``, else the default of ``arg`` in the registered network's ``__init__`` (None if it has none)."""
    import inspect
    if arg in net_opt:
        return net_opt[arg]
    try:
        from basicsr.utils.registry import ARCH_REGISTRY
        param = inspect.signature(ARCH_REGISTRY.get(net_opt.get('type'))).parameters.get(arg)
    except Exception:  # an unregistered type: the registry check names it
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def check_numbers(opt, is_train=None):
    """Check the numbers of an options dict; raise :class:`OptionsError` naming the file, the key and its valid range.

    Checked where present (``~`` is allowed where BasicSR allows it), and required where BasicSR's training loop reads
    them: ``scale`` (an integer >= 1, equal to the ``upscale``/``scale`` of every ``network_*`` that has one, its
    default included), ``num_gpu`` (``auto`` or >= 0), ``manual_seed`` ([0, 2**32 - 1]); per dataset ``gt_size``
    (>= 1, a multiple of ``scale``; ``[h, w]`` for FSRFaceDataset); for the training set ``batch_size_per_gpu`` /
    ``total_batch_size`` (>= 1), ``num_worker_per_gpu`` (>= 0), ``dataset_enlarge_ratio`` (> 0); under ``train``
    ``total_iter`` (>= 1) or ``total_epochs`` (> 0), ``warmup_iter`` (>= -1), ``ema_decay`` ([0, 1)),
    ``net_d_iters`` (>= 1), ``net_d_init_iters`` (>= 0), every optimizer's ``lr`` (> 0), ``weight_decay`` (>= 0),
    ``betas`` ([0, 1)), ``eps`` (> 0), the scheduler's ``milestones`` / ``periods`` (integers >= 1), ``gamma`` (> 0),
    ``eta_min`` and ``restart_weights`` (>= 0), every loss's ``loss_weight`` (>= 0); ``val.val_freq`` and
    ``logger.print_freq`` / ``save_checkpoint_freq`` (>= 1; the ``*_epochs`` forms > 0); metrics' ``crop_border``
    (>= 0). Integral floats (``!!float 1e5``) are accepted for integers, as BasicSR's ``int()`` does.
    """
    label = _opt_file_label(opt)
    is_train = opt.get('is_train', True) if is_train is None else is_train

    def num(key, value, hint='', **limits):
        try:
            return check_number(key, value, **limits)
        except UsageError as exc:
            raise OptionsError(f'{label}: {str(exc).rstrip(".")}{hint}.') from None

    def opt_num(section, sec_name, key, hint='', required=False, **limits):
        name = f'{sec_name}.{key}' if sec_name else key
        value = section.get(key) if isinstance(section, dict) else None
        if value is None:
            if required:
                raise OptionsError(f'{label}: {name} is missing{hint}.')
            return None
        section[key] = num(name, value, hint, **limits)
        return section[key]

    def num_list(section, sec_name, key, hint='', **limits):
        values = section.get(key)
        if values is None:
            return
        if not isinstance(values, (list, tuple)):
            raise OptionsError(f'{label}: {sec_name}.{key} must be a list (e.g. [100000, 200000]), not {values!r}.')
        for i, value in enumerate(values):
            num(f'{sec_name}.{key}[{i}]', value, hint, **limits)

    scale = opt_num(opt, '', 'scale', ' (the upscaling factor)', minimum=1, integer=True)
    if scale is not None:
        for key in [k for k in opt if k.startswith('network_') and isinstance(opt[k], dict)]:
            for arg in ('upscale', 'scale'):
                value = _signature_default(opt[key], arg)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value != scale:
                    given = 'sets' if arg in opt[key] else 'defaults to'
                    raise OptionsError(
                        f'{label}: scale {scale} differs from {key}.{arg} ({opt[key].get("type")} {given} {value}): '
                        f'the network upsamples x{value} while the data and metrics assume x{scale}. Set both to the '
                        'same value.')
    if opt.get('num_gpu') != 'auto':
        opt_num(opt, '', 'num_gpu', ' (or auto; 0 runs on the CPU)', minimum=0, integer=True)
    opt_num(opt, '', 'manual_seed', ' (or ~ for a random seed)', minimum=0, maximum=2**32 - 1, integer=True)

    for phase_key, dataset in (opt.get('datasets') or {}).items():
        name = f'datasets.{phase_key}'
        if not isinstance(dataset, dict):
            raise OptionsError(f'{label}: {name} must be a section of dataset options, not {dataset!r}.')
        gt_size = dataset.get('gt_size')
        if isinstance(gt_size, (list, tuple)) and dataset.get('type') == 'FSRFaceDataset':
            if len(gt_size) != 2:
                raise OptionsError(f'{label}: {name}.gt_size must be an integer or [h, w], not {gt_size!r}.')
            sizes = [num(f'{name}.gt_size[{i}]', v, minimum=1, integer=True) for i, v in enumerate(gt_size)]
        elif gt_size is not None:
            sizes = [opt_num(dataset, name, 'gt_size', ' (the HR patch size)', minimum=1, integer=True)]
        else:
            sizes = []
        if scale is not None and any(v % scale for v in sizes):
            raise OptionsError(f'{label}: {name}.gt_size {gt_size} is not a multiple of scale {scale}: the LR patch '
                               f'would be {[v / scale for v in sizes]} pixels. Use a multiple of {scale}.')
        if phase_key.split('_')[0] != 'train' or not is_train:
            continue
        if dataset.get('batch_size_per_gpu') is None and dataset.get('total_batch_size') is None:
            raise OptionsError(f'{label}: {name} needs batch_size_per_gpu (faces per GPU and step) or '
                               'total_batch_size (faces per optimizer step).')
        for key in ('batch_size_per_gpu', 'total_batch_size'):
            opt_num(dataset, name, key, minimum=1, integer=True)
        opt_num(
            dataset,
            name,
            'num_worker_per_gpu',
            ' (data loading processes per GPU; 0: in the main process)',
            required=True,
            minimum=0,
            integer=True)
        opt_num(dataset, name, 'dataset_enlarge_ratio', minimum=0, min_open=True)
        opt_num(dataset, name, 'num_prefetch_queue', minimum=1, integer=True)

    train = opt.get('train')
    if is_train:
        if not isinstance(train, dict):
            raise OptionsError(f'{label}: the section train (optimizers, losses, total_iter) is missing.')
        if train.get('total_iter') is None and train.get('total_epochs') is None:
            raise OptionsError(f'{label}: train.total_iter (the number of optimizer steps) or train.total_epochs is '
                               'missing.')
        opt_num(train, 'train', 'total_iter', ' (the number of optimizer steps)', minimum=1, integer=True)
        opt_num(train, 'train', 'total_epochs', minimum=0, min_open=True)
        opt_num(train, 'train', 'warmup_iter', ' (-1: no warm-up)', minimum=-1, integer=True)
        opt_num(train, 'train', 'ema_decay', ' (0: no EMA; 0.999 is usual)', minimum=0, maximum=1, max_open=True)
        opt_num(train, 'train', 'net_d_iters', minimum=1, integer=True)
        opt_num(train, 'train', 'net_d_init_iters', minimum=0, integer=True)
        for key, section in train.items():
            if not isinstance(section, dict):
                continue
            name = f'train.{key}'
            if key.startswith('optim_'):
                opt_num(section, name, 'lr', ' (the learning rate)', required=True, minimum=0, min_open=True)
                opt_num(section, name, 'weight_decay', minimum=0)
                opt_num(section, name, 'eps', minimum=0, min_open=True)
                opt_num(section, name, 'momentum', minimum=0)
                num_list(section, name, 'betas', minimum=0, maximum=1, max_open=True)
            elif key == 'scheduler':
                num_list(section, name, 'milestones', ' (iterations)', minimum=1, integer=True)
                num_list(section, name, 'periods', ' (iterations)', minimum=1, integer=True)
                num_list(section, name, 'restart_weights', minimum=0)
                num_list(section, name, 'milestones_epochs', minimum=0, min_open=True)
                num_list(section, name, 'periods_epochs', minimum=0, min_open=True)
                opt_num(section, name, 'gamma', minimum=0, min_open=True)
                opt_num(section, name, 'eta_min', minimum=0)
            elif key.endswith('_opt'):
                for weight in ('loss_weight', 'perceptual_weight', 'style_weight'):
                    opt_num(section, name, weight, minimum=0)
        check_speed_options(train, label)
        scaler = train.get('grad_scaler')
        if isinstance(scaler, dict):
            opt_num(scaler, 'train.grad_scaler', 'init_scale', minimum=0, min_open=True)
            opt_num(scaler, 'train.grad_scaler', 'growth_factor', ' (the scale grows by it)', minimum=1, min_open=True)
            opt_num(
                scaler,
                'train.grad_scaler',
                'backoff_factor',
                ' (the scale shrinks by it)',
                minimum=0,
                maximum=1,
                min_open=True,
                max_open=True)
            opt_num(scaler, 'train.grad_scaler', 'growth_interval', ' (steps)', minimum=1, integer=True)
    val = opt.get('val')
    if isinstance(val, dict) and val.get('amp') is not None and val['amp'] not in AMP_CHOICES:
        raise OptionsError(f'{label}: val.amp must be one of {", ".join(AMP_CHOICES)} (autocast for validation '
                           f'and fsr-test; none: fp32), not {val["amp"]!r}.')
    if isinstance(val, dict):
        if is_train and any(k.split('_')[0] == 'val' for k in (opt.get('datasets') or {})):
            if val.get('val_freq') is None and val.get('val_freq_epochs') is None:
                raise OptionsError(f'{label}: val.val_freq (validate every N iterations) is missing.')
            opt_num(val, 'val', 'val_freq', ' (validate every N iterations)', minimum=1, integer=True)
            opt_num(val, 'val', 'val_freq_epochs', minimum=0, min_open=True)
        for key, metric in (val.get('metrics') or {}).items():
            if isinstance(metric, dict):
                opt_num(metric, f'val.metrics.{key}', 'crop_border', minimum=0, integer=True)
    if is_train:
        logger = opt.get('logger')
        if not isinstance(logger, dict):
            raise OptionsError(f'{label}: the section logger (print_freq, save_checkpoint_freq) is missing.')
        opt_num(logger, 'logger', 'print_freq', ' (log every N iterations)', required=True, minimum=1, integer=True)
        if logger.get('save_checkpoint_freq_epochs') is None:
            opt_num(
                logger,
                'logger',
                'save_checkpoint_freq',
                ' (save every N iterations)',
                required=True,
                minimum=1,
                integer=True)
        opt_num(logger, 'logger', 'save_checkpoint_freq', ' (save every N iterations)', minimum=1, integer=True)
        opt_num(logger, 'logger', 'save_checkpoint_freq_epochs', minimum=0, min_open=True)


AMP_CHOICES = ('bf16', 'fp16', 'none')
SPEED_KEYS = ('amp', 'channels_last', 'compile', 'tf32', 'grad_scaler')
GRAD_SCALER_KEYS = ('init_scale', 'growth_factor', 'backoff_factor', 'growth_interval')
COMPILE_KEYS = ('mode', 'backend', 'fullgraph', 'dynamic', 'options')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


def check_speed_options(train, label='the options file'):
    """Check the speed options of the ``train`` section (``fsr_models.fsr_model``); raise :class:`OptionsError`.

    ``amp``: bf16, fp16 or none; ``channels_last`` and ``tf32``: true or false; ``compile``: true, false or a
    section of ``torch.compile`` arguments (:data:`COMPILE_KEYS`; ``mode`` one of :data:`COMPILE_MODES`);
    ``grad_scaler``: a section of :data:`GRAD_SCALER_KEYS` (its numbers are checked by :func:`check_numbers`).
    ``~`` is the default everywhere.
    """
    amp = train.get('amp')
    if amp is not None and amp not in AMP_CHOICES:
        raise OptionsError(f'{label}: train.amp must be one of {", ".join(AMP_CHOICES)} (autocast for the forward '
                           f'pass and the losses; none: fp32), not {amp!r}.')
    for key in ('channels_last', 'tf32'):
        if train.get(key) is not None and not isinstance(train[key], bool):
            raise OptionsError(f'{label}: train.{key} must be true or false, not {train[key]!r}.')
    spec = train.get('compile')
    if spec is not None and not isinstance(spec, (bool, dict)):
        raise OptionsError(f'{label}: train.compile must be true, false or a section of torch.compile arguments '
                           f'({", ".join(COMPILE_KEYS)}), not {spec!r}.')
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(COMPILE_KEYS))
        if unknown:
            raise OptionsError(f'{label}: train.compile.{unknown[0]} is not an argument of torch.compile that the '
                               f'plugin passes on; use {", ".join(COMPILE_KEYS)}.')
        if spec.get('mode') is not None and spec['mode'] not in COMPILE_MODES:
            raise OptionsError(f'{label}: train.compile.mode must be one of {", ".join(COMPILE_MODES)}, not '
                               f'{spec["mode"]!r}.')
    scaler = train.get('grad_scaler')
    if scaler is not None:
        if not isinstance(scaler, dict):
            raise OptionsError(f'{label}: train.grad_scaler must be a section ({", ".join(GRAD_SCALER_KEYS)}: the '
                               f'arguments of torch.amp.GradScaler), not {scaler!r}.')
        unknown = sorted(set(scaler) - set(GRAD_SCALER_KEYS))
        if unknown:
            raise OptionsError(f'{label}: train.grad_scaler.{unknown[0]} is not a gradient scaler option; use '
                               f'{", ".join(GRAD_SCALER_KEYS)}.')


def check_options(opt):
    """Check what a run needs before it starts; raise :class:`OptionsError` naming the file, key and fix."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    label = _opt_file_label(opt)
    check_numbers(opt)
    for phase, dataset in (opt.get('datasets') or {}).items():
        for key, value in dataset.items():
            if key.startswith('dataroot') and isinstance(value, str) and not os.path.exists(value):
                raise OptionsError(f'{label}: datasets.{phase}.{key} = {value} does not exist: prepare the data '
                                   '(fsr-prepare) or fix the path in the options file.')
    _registry_check(opt, 'model_type', MODEL_REGISTRY, 'model')
    speed = [f'train.{k}' for k in SPEED_KEYS if (opt.get('train') or {}).get(k) not in (None, False, 'none')]
    speed += ['val.amp'] if (opt.get('val') or {}).get('amp') not in (None, 'none') else []
    model_cls = MODEL_REGISTRY.get(opt['model_type']) if opt.get('model_type') in MODEL_REGISTRY else None
    if speed and model_cls is not None and not hasattr(model_cls, 'setup_speed_options'):
        raise OptionsError(f'{label}: {speed[0]} is an option of the plugin\'s models (FSRModel, FSRGANModel, '
                           f'WNetModel); model_type {opt["model_type"]} would ignore it. Use model_type FSRModel (it '
                           'trains what SRModel trains), or remove the option.')
    for key in opt:
        if key.startswith('network_'):
            _registry_check(opt, key, ARCH_REGISTRY, 'network')
    for key in ('experiments_root', 'results_root', 'models', 'training_states', 'visualization', 'log'):
        value = opt['path'].get(key)
        blocker = _file_in_path(value) if isinstance(value, str) else None
        if blocker:
            raise OptionsError(f'{label}: the output folder {value} cannot be made: {blocker} is a file. Move that '
                               'file away or change the experiment name (option `name`).')


def _installed_root(root_path):
    """True when BasicSR's root path is the site-packages folder of a pip install (not a BasicSR checkout)."""
    root = os.path.abspath(root_path)
    return os.path.basename(root) in ('site-packages',
                                      'dist-packages') and not os.path.isfile(os.path.join(root, 'setup.py'))


def _site_tb_logger(path):
    """``path`` moved to the current directory when under ``<site-packages>/tb_logger`` (python -m basicsr.train)."""
    parent = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if os.path.basename(os.path.dirname(os.path.abspath(path))) == 'tb_logger' and _installed_root(parent):
        return os.path.join(os.getcwd(), 'tb_logger', os.path.basename(path))
    return path


def wrap_tb_paths(func):
    """``init_tb_logger`` / ``mkdir_and_rename`` that put a site-packages ``tb_logger/`` under the current directory."""
    if getattr(func, '_fsr_wrapped', False):
        return func

    def wrapped(*args, **kwargs):
        if args:
            args = (_site_tb_logger(args[0]), ) + args[1:]
        for key in ('log_dir', 'path'):  # train.py calls init_tb_logger(log_dir=...)
            if key in kwargs:
                kwargs[key] = _site_tb_logger(kwargs[key])
        return func(*args, **kwargs)

    wrapped._fsr_wrapped = True
    wrapped.__wrapped__ = func
    wrapped.__name__ = func.__name__
    return wrapped


# --------------------------------------------------------------------------------------------------- --force_yml
# Keys that --force_yml may add where the options file does not have them: the options BasicSR 1.4.2 and the plugin
# read in each section (section path -> names). Sections with a ``type`` that names a class or function (network_*,
# the losses ``train.*_opt``, ``train.optim_*``, ``train.scheduler``, ``val.metrics.*``) take that callable's
# arguments instead (see ``_known_new_keys``).
FORCE_NEW_KEYS = {
    (): {'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'find_unused_parameters'},
    ('path', ): {
        'pretrain_network_g', 'pretrain_network_d', 'strict_load_g', 'strict_load_d', 'param_key_g', 'param_key_d',
        'resume_state', 'ignore_resume_networks'
    },
    ('datasets', '*'): {
        'name', 'type', 'dataroot_gt', 'dataroot_lq', 'dataroot_parsing', 'meta_info_file', 'filename_tmpl',
        'io_backend', 'gt_size', 'use_hflip', 'use_rot', 'rot_mode', 'use_shuffle', 'num_worker_per_gpu',
        'batch_size_per_gpu', 'total_batch_size', 'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory',
        'persistent_workers', 'num_prefetch_queue', 'color', 'mean', 'std', 'return_parsing', 'return_parsing_lq',
        'return_binary_parsing', 'return_component_masks', 'degradation'
    },
    ('datasets', '*', 'io_backend'): {'type', 'db_paths', 'client_keys'},
    ('train', ): {
        'ema_decay', 'total_iter', 'total_epochs', 'warmup_iter', 'net_d_iters', 'net_d_init_iters', 'parsing_target',
        *SPEED_KEYS
    },
    ('train', 'scheduler'): {'milestones_epochs', 'periods_epochs'},
    ('train', 'grad_scaler'): set(GRAD_SCALER_KEYS),
    ('train', 'compile'): set(COMPILE_KEYS),
    ('val', ): {'val_freq', 'val_freq_epochs', 'save_img', 'suffix', 'pbar', 'metrics', 'amp'},
    ('logger', ): {'print_freq', 'save_checkpoint_freq', 'save_checkpoint_freq_epochs', 'use_tb_logger', 'wandb'},
    ('logger', 'wandb'): {'project', 'resume_id', 'entity'},
    ('dist_params', ): {'backend', 'port'},
}
# Keys whose value may change kind (BasicSR or the plugin read several forms).
_FORCE_KINDS = {
    'num_gpu': {'number', 'text'},
    'gt_size': {'number', 'list'},
    'degradation': {'bool', 'text', 'section'},
    'compile': {'bool', 'section'},
}


def _callable_args(obj):
    """The keyword arguments ``obj`` takes (None: any, it has ``**kwargs`` or cannot be inspected)."""
    import inspect
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != 'self'} | {'type'}


def _known_new_keys(parent, section):
    """The keys --force_yml may add under ``section`` (reached by the key path ``parent``); None: any key."""
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY
    parent = tuple(parent)
    kind = section.get('type')

    def registered(registry):
        try:
            return _callable_args(registry.get(kind))
        except Exception:  # an unknown type: the registry check names it
            return None

    if len(parent) == 1 and parent[0].startswith('network_'):
        return registered(ARCH_REGISTRY)
    if len(parent) == 2 and parent[0] == 'train' and parent[1].startswith('optim_'):
        optim = getattr(torch.optim, str(kind), None)
        return _callable_args(optim) if isinstance(optim, type) else None
    if parent == ('train', 'scheduler'):
        from basicsr.models import lr_scheduler
        cls = {
            'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR
        }.get(kind, lr_scheduler.MultiStepRestartLR)
        return (_callable_args(cls) or set()) | FORCE_NEW_KEYS[parent]
    if len(parent) == 2 and parent[0] == 'train' and parent[1].endswith('_opt'):
        return registered(LOSS_REGISTRY)
    if len(parent) == 3 and parent[:2] == ('val', 'metrics'):
        return registered(METRIC_REGISTRY)
    if len(parent) == 3 and parent[0] == 'datasets' and parent[2] == 'degradation':
        from fsr_data.degradations import DEFAULTS
        return set(DEFAULTS) | {'level'}
    generic = tuple('*' if i == 1 and parent[0] == 'datasets' else p for i, p in enumerate(parent))
    known = set(FORCE_NEW_KEYS.get(generic, ()))
    if parent == ('path', ):
        known |= {k for k in section if k.startswith(('pretrain_network_', 'strict_load_', 'param_key_'))}
    return known


def _kind(value):
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    if isinstance(value, str):
        return 'text'
    if isinstance(value, (list, tuple)):
        return 'list'
    if isinstance(value, dict):
        return 'section'
    return type(value).__name__


def force_value(text):
    """The value of a ``--force_yml`` entry: BasicSR's reading, except that numbers BasicSR leaves as text (``-5``,
    ``1e-3``, ``+2``: it only knows unsigned digits) are numbers, as YAML reads them."""
    import re
    from basicsr.utils.options import _postprocess_yml_value
    value = _postprocess_yml_value(text)
    if isinstance(value, str):
        if re.fullmatch(r'[-+]?\d+', value):
            return int(value)
        if re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?', value):
            return float(value)
    return value


def check_force_yml(file_opt, entries, label='the options file'):
    """Check BasicSR's ``--force_yml`` entries against the options file; return the entries BasicSR should apply.

    BasicSR 1.4.2 applies ``a:b:c=value`` with ``exec`` and silently adds a key that the file does not have
    (``train:totl_iter=7`` trains with the file's ``total_iter``). The rule here:

    * ``key=value`` with one ``=``; keys of letters, digits, ``_``, ``-`` and ``.``.
    * Every section on the way exists in the file (``datasets:val:...`` needs a ``datasets: val:`` section).
    * The last key exists in the file, or is an option that BasicSR or the plugin reads in that section
      (:data:`FORCE_NEW_KEYS`; under ``network_*``, a loss, an optimizer, the scheduler or a metric: an argument of
      the class or function its ``type`` names), e.g. ``datasets:train:batch_size_per_gpu=1`` next to a
      ``total_batch_size``, or ``train:total_iter=2`` next to ``total_epochs``.
    * A key the file has keeps its kind: a number stays a number (``train:total_iter=abc`` is an error), a flag
      a flag, text text, a list a list; ``~`` may replace anything and anything may replace ``~``
      (``num_gpu`` takes ``auto`` or a number, ``gt_size`` a number or ``[h, w]``).
    * Escape: ``+key=value`` (as Hydra writes it) sets the key as given, skipping both checks, for options of your own
      plugin that the rule cannot know.
    * Values are read as BasicSR reads them, except signed and exponent numbers (``-5``, ``1e-3``), which BasicSR
      leaves as text: they are numbers (:func:`force_value`; :func:`wrap_parse_options` sets them after BasicSR).

    Raises:
        OptionsError: naming the entry, the key and the fix.
    """
    import copy
    import difflib
    import re
    opt = copy.deepcopy(file_opt)
    applied = []
    for entry in entries:
        if entry.count('=') != 1:
            raise OptionsError(f'--force_yml {entry}: write key=value with exactly one "=" (e.g. train:total_iter=20; '
                               'BasicSR splits the entry at "=").')
        keys_text, value_text = (part.strip() for part in entry.split('='))
        free = keys_text.startswith('+')
        keys_text = keys_text[1:] if free else keys_text
        keys = keys_text.split(':')
        if not all(re.fullmatch(r'[A-Za-z0-9_.\-]+', k) for k in keys):
            raise OptionsError(f'--force_yml {entry}: "{keys_text}" is not a key path (section:key, e.g. '
                               'train:total_iter).')
        try:
            value = force_value(value_text)
        except Exception as exc:  # BasicSR evaluates lists with eval()
            raise OptionsError(f'--force_yml {entry}: the value {value_text!r} of {keys_text} cannot be read '
                               f'({type(exc).__name__}: {exc}); write lists as [1, 2].') from None
        node = opt
        for i, key in enumerate(keys[:-1]):
            where = ':'.join(keys[:i + 1])
            if not isinstance(node, dict) or key not in node:
                raise OptionsError(f'{label}: --force_yml {entry}: the file has no section {where}, so {keys_text} '
                                   'cannot be set. Check the key path against the options file.')
            node = node[key]
            if not isinstance(node, dict):
                raise OptionsError(f'{label}: --force_yml {entry}: {where} is {node!r} in the file, not a section. '
                                   'Check the key path against the options file.')
        last = keys[-1]
        if not free:
            if last in node:
                old, new = _kind(node[last]), _kind(value)
                allowed = _FORCE_KINDS.get(last, set())
                if 'null' not in (old, new) and old != new and not {old, new} <= allowed:
                    raise OptionsError(
                        f'{label}: --force_yml {entry}: {keys_text} is {old} in the file ({node[last]!r}), and '
                        f'{value_text!r} reads as {new}. Give a {old} value' +
                        (' (numbers as 100000 or !!float 1e5)' if old == 'number' else '') + '.')
            else:
                known = _known_new_keys(keys[:-1], node)
                if known is not None and last not in known:
                    close = difflib.get_close_matches(last, sorted(set(node) | known), n=1)
                    hint = f' (did you mean {":".join(keys[:-1] + [close[0]])}?)' if close else ''
                    raise OptionsError(
                        f'{label}: --force_yml {entry}: the file has no key {keys_text}{hint}, and it is not an '
                        'option BasicSR or the plugin reads there: BasicSR would add it and nothing would use it. '
                        f'Fix the key, or write +{keys_text}={value_text} to add it anyway.')
        node[last] = value
        applied.append(f'{keys_text}={value_text}')
    return applied


def _pre_parse():
    """Check what BasicSR's ``parse_options`` would use unchecked, before it runs.

    Returns:
        tuple: the argv for BasicSR's parser and the checked ``--force_yml`` entries (``key=value``; not the ``+``
        ones), whose numbers :func:`wrap_parse_options` sets after BasicSR.

    The ``--force_yml`` entries of ``sys.argv`` (:func:`check_force_yml`; the argv returned has their ``+`` removed)
    and ``manual_seed`` (BasicSR seeds NumPy with it inside ``parse_options``, which fails on a negative seed without
    naming the key). A file that cannot be read is left to BasicSR's parser, which reports it.
    """
    import argparse
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    parser.add_argument('--force_yml', nargs='+', default=None)
    try:
        args, _ = parser.parse_known_args(sys.argv[1:])
    except SystemExit:
        return list(sys.argv), []
    if not args.opt or not os.path.isfile(args.opt):
        return list(sys.argv), []
    import yaml
    from basicsr.utils.options import ordered_yaml
    try:
        with open(args.opt) as f:
            file_opt = yaml.load(f, Loader=ordered_yaml()[0])
    except Exception:  # BasicSR's parser reports an unreadable file
        return list(sys.argv), []
    if not isinstance(file_opt, dict):
        return list(sys.argv), []
    forced = list(args.force_yml or [])
    applied = check_force_yml(file_opt, forced, args.opt)
    final = dict(file_opt)
    for entry in applied:  # only the top-level seed and num_gpu are needed here
        key, value = entry.split('=')
        if key in ('manual_seed', 'num_gpu'):
            final[key] = force_value(value)
    _STATE['num_gpu_option'] = final.get('num_gpu')
    if final.get('manual_seed') is not None:
        try:
            check_number('manual_seed', final['manual_seed'], minimum=0, maximum=2**32 - 1, integer=True)
        except UsageError as exc:
            raise OptionsError(f'{args.opt}: {str(exc).rstrip(".")} (or ~ for a random seed).') from None
    checked = [a for a, given in zip(applied, forced) if not given.strip().startswith('+')]
    argv = [sys.argv[0]]
    for arg in sys.argv[1:]:
        if forced and arg == forced[0]:
            argv.append(applied[len(applied) - len(forced)])
            forced.pop(0)
        else:
            argv.append(arg)
    return argv, checked


def wrap_parse_options(parse_options):
    """``parse_options`` with fix 5: ``--force_yml`` and number checks, total batch, option checks, auto-resume with
    fallback (and refusal of another network's folder), no site-packages root."""
    if getattr(parse_options, '_fsr_wrapped', False):
        return parse_options

    def wrapped(root_path, is_train=True):
        _STATE['resume_position'] = None
        _STATE['num_gpu_option'] = None
        if _installed_root(root_path):
            root_path = os.getcwd()
        argv = sys.argv
        sys.argv, forced = _pre_parse()
        try:
            opt, args = parse_options(root_path, is_train=is_train)
        finally:
            sys.argv = argv
        for entry in forced:  # the numbers BasicSR left as text (-5, 1e-3)
            keys, text = entry.split('=')
            value, node, keys = force_value(text.strip()), opt, keys.strip().split(':')
            for key in keys[:-1]:
                node = node[key]
            if isinstance(value, (int, float)) and isinstance(node.get(keys[-1]), str):
                node[keys[-1]] = value
        opt['_opt_file'] = args.opt
        if is_train:
            resolve_total_batch(opt)
        check_options(opt)
        if is_train:
            warn_data_parallel(opt)
        if is_train and opt.get('auto_resume'):
            # Pick the state here, so that BasicSR's own load_resume_state (python -m basicsr.train) gets it too.
            path = find_resume_state(opt, report=None if opt.get('rank', 0) == 0 else (lambda msg: None))
            if path is not None:
                check_resume_networks(opt, path)
                opt['path']['resume_state'] = path
                opt['auto_resume'] = False
        _STATE['train_opt'] = opt if is_train else None
        return opt, args

    wrapped._fsr_wrapped = True
    wrapped.__wrapped__ = parse_options
    return wrapped


def warn_data_parallel(opt):
    """Warn when a training will use DataParallel: ``num_gpu`` > 1 (``auto`` on a multi-GPU machine) without a launcher.

    BasicSR then wraps the network in ``DataParallel``: one process drives every GPU (it scatters each batch and
    gathers every output on the first GPU, and BatchNorm sees each GPU's share of the batch), which is slower than one
    DDP process per GPU. Returns the warning (or None); it is printed on stderr and written to the log.
    """
    num_gpu = int(opt.get('num_gpu') or 0) if not isinstance(opt.get('num_gpu'), str) else 0
    if opt.get('dist') or num_gpu < 2:
        return None
    how = f'num_gpu: auto found {num_gpu} GPUs' if _STATE.get('num_gpu_option') == 'auto' else f'num_gpu {num_gpu}'
    label = _opt_file_label(opt)
    msg = (f'{label}: {how} and fsr-train runs without --launcher: BasicSR trains with DataParallel, one process '
           'for all GPUs (slower than one process per GPU; BatchNorm sees each GPU\'s share of the batch). For DDP '
           f'run: torchrun --nproc_per_node={num_gpu} $(which fsr-train) -opt {label} --launcher pytorch '
           '(docs/REPRODUCE.md); for one GPU set num_gpu: 1.')
    _warn(opt, msg)
    return msg


def resumable_sampler_class(base):
    """A subclass of BasicSR's ``EnlargedSampler`` that continues the data order of an interrupted training.

    BasicSR's sampler draws the order of epoch ``e`` from ``torch.manual_seed(e)``, and a resumed training restarts
    the epoch it was in from its first batch (those faces are seen twice, the rest of the epoch's order is shifted).
    In the epoch a resume starts in, this sampler skips the ``k = iter - epoch * L`` batches (``L`` steps per epoch)
    that the interrupted run had done, so the resumed run sees the same faces in the same batches as an uninterrupted
    one. The random augmentations (crop position, flips) are not part of a training state and are drawn anew.
    """

    class FSRResumableSampler(base):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.skip_epoch, self.skip_samples = None, 0
            opt, position = _STATE.get('train_opt'), _STATE.get('resume_position')
            if opt is None or position is None:
                return
            from basicsr.utils import get_root_logger
            train = opt['datasets']['train']
            loader_batch = train['batch_size_per_gpu'] * (1 if opt.get('dist') else max(
                int(opt.get('num_gpu') or 0), 1))
            epoch, it = position
            steps = self.num_samples // loader_batch
            done = it - epoch * steps
            logger = get_root_logger()
            if steps and 0 <= done < steps:
                self.skip_epoch, self.skip_samples = epoch, done * loader_batch
                logger.info(f'Resume: data order restored: epoch {epoch} continues at batch {done + 1} of {steps} '
                            f'(its first {done} batches were done before the state was saved); random augmentations '
                            'are drawn anew.')
            else:
                logger.warning(f'Resume: cannot restore the data order (iteration {it}, epoch {epoch} and {steps} '
                               'iterations per epoch disagree: the dataset or batch changed): epoch '
                               f'{epoch} restarts from its first batch.')

        def __iter__(self):
            indices = super().__iter__()
            if self.skip_epoch is not None and self.epoch == self.skip_epoch:
                self.skip_epoch = None
                return iter(list(indices)[self.skip_samples:])
            return indices

    FSRResumableSampler.__name__ = FSRResumableSampler.__qualname__ = 'FSRResumableSampler'
    return FSRResumableSampler


def wrap_build_dataset(build_dataset):
    """``build_dataset`` that converts the epoch schedule of the training run once its training set is built."""
    if getattr(build_dataset, '_fsr_wrapped', False):
        return build_dataset

    def wrapped(dataset_opt):
        dataset = build_dataset(dataset_opt)
        opt = _STATE.get('train_opt')
        is_train_set = opt is not None and (opt.get('datasets') or {}).get('train') is dataset_opt
        if not is_train_set:
            return dataset
        from basicsr.utils import get_root_logger
        if needs_epoch_schedule(opt):
            info = resolve_epoch_schedule(opt, len(dataset))
            train = opt['datasets']['train']
            conv = '; '.join(f'{k}: {e} epochs = {i} iterations' for k, e, i in info['conversions'])
            get_root_logger().info(
                f'Epoch schedule: {len(dataset)} training faces x enlarge ratio '
                f'{train.get("dataset_enlarge_ratio", 1)}, batch {train["batch_size_per_gpu"]} per GPU x world size '
                f'{opt.get("world_size", 1)}: {info["iters_per_epoch"]} iterations per epoch; {conv}.')
        for msg in opt.get('_fsr_warnings', []):
            get_root_logger().warning(msg)
        return dataset

    wrapped._fsr_wrapped = True
    wrapped.__wrapped__ = build_dataset
    return wrapped


def init_dist(launcher, backend=None, **kwargs):
    """``basicsr.utils.dist_util.init_dist`` with the backend chosen by the hardware (NCCL on GPUs, gloo on CPUs)."""
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if backend is None:
        backend = 'nccl' if cuda else 'gloo'
    if launcher == 'pytorch':
        if cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        if not cuda:
            raise RuntimeError(
                'The slurm launcher of BasicSR needs GPUs; use torchrun with --launcher pytorch on CPUs.')
        from basicsr.utils import dist_util
        dist_util._init_dist_slurm(backend, **kwargs)
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')


def model_to_device(self, net):
    """``BaseModel.model_to_device`` that wraps CPU models in DDP without CUDA device ids."""
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def patch_basicsr():
    """Apply fixes 2 to 6 to the imported basicsr modules (idempotent)."""
    if _STATE['patched']:
        return
    install_torchvision_shim()
    import basicsr.data
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    BaseModel.model_to_device = model_to_device
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    BaseModel.load_network = load_network
    from basicsr.data.paired_image_dataset import PairedImageDataset
    PairedImageDataset.__init__ = paired_dataset_init(PairedImageDataset.__init__)
    PairedImageDataset.__getitem__ = paired_dataset_getitem
    parse = wrap_parse_options(basicsr.utils.options.parse_options)
    build = wrap_build_dataset(basicsr.data.build_dataset)
    import basicsr.utils
    for name in ('init_tb_logger', 'mkdir_and_rename'):  # bound by python -m basicsr.train when it runs
        setattr(basicsr.utils, name, wrap_tb_paths(getattr(basicsr.utils, name)))
    import basicsr.data.data_sampler
    sampler = resumable_sampler_class(basicsr.data.data_sampler.EnlargedSampler)
    basicsr.data.data_sampler.EnlargedSampler = sampler
    basicsr.train.EnlargedSampler = sampler
    # basicsr.test is patched when already imported; otherwise it (or python -m basicsr.test) binds the patched names.
    for module in (basicsr.utils.options, basicsr.train, sys.modules.get('basicsr.test')):
        if module is not None:
            module.parse_options = parse
    for module in (basicsr.data, basicsr.train, sys.modules.get('basicsr.test')):
        if module is not None:
            module.build_dataset = build
    _STATE['patched'] = True
