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
   load, and says (on stderr) which newer ones it skipped and why; none usable is an error naming them.
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

Limitation: ``python basicsr/train.py`` and ``python -m basicsr.train`` run ``train.py`` as ``__main__``, whose own
copy of ``load_resume_state`` cannot be replaced from outside, so CPU resume needs ``fsr-train`` (GPU resume works
everywhere; the fallback of fix 4 works there too, as ``parse_options`` picks the state).
"""
import os
import sys
import types

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


class OptionsError(ValueError):
    """A problem in an options file that is found before anything runs (the message names the file, key and fix)."""


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
            torch.load(net_path, map_location='cpu', weights_only=True)
        except Exception as exc:  # a truncated or foreign file: any error means "cannot resume from it"
            raise ValueError(f'its network checkpoint {net_path} does not load ({type(exc).__name__}: {exc})') from exc
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


def save_network(self, net, net_label, current_iter, param_key='params'):
    """``BaseModel.save_network`` with an atomic write (same file name and content)."""
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
    _save_with_retry(save_dict, save_path, 'model')


def save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state`` with an atomic write (same file name and content)."""
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers]
    }
    _save_with_retry(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                     'training state')


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


def check_options(opt):
    """Check what a run needs before it starts; raise :class:`OptionsError` naming the file, key and fix."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    label = _opt_file_label(opt)
    for phase, dataset in (opt.get('datasets') or {}).items():
        for key, value in dataset.items():
            if key.startswith('dataroot') and isinstance(value, str) and not os.path.exists(value):
                raise OptionsError(f'{label}: datasets.{phase}.{key} = {value} does not exist: prepare the data '
                                   '(fsr-prepare) or fix the path in the options file.')
    _registry_check(opt, 'model_type', MODEL_REGISTRY, 'model')
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


def wrap_parse_options(parse_options):
    """``parse_options`` with fix 5: total batch, option checks, auto-resume with fallback, no site-packages root."""
    if getattr(parse_options, '_fsr_wrapped', False):
        return parse_options

    def wrapped(root_path, is_train=True):
        _STATE['resume_position'] = None
        if _installed_root(root_path):
            root_path = os.getcwd()
        opt, args = parse_options(root_path, is_train=is_train)
        opt['_opt_file'] = args.opt
        if is_train:
            resolve_total_batch(opt)
        check_options(opt)
        if is_train and opt.get('auto_resume'):
            # Pick the state here, so that BasicSR's own load_resume_state (python -m basicsr.train) gets it too.
            path = find_resume_state(opt, report=None if opt.get('rank', 0) == 0 else (lambda msg: None))
            if path is not None:
                opt['path']['resume_state'] = path
                opt['auto_resume'] = False
        _STATE['train_opt'] = opt if is_train else None
        return opt, args

    wrapped._fsr_wrapped = True
    wrapped.__wrapped__ = parse_options
    return wrapped


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
    """Apply fixes 2 to 5 to the imported basicsr modules (idempotent)."""
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
