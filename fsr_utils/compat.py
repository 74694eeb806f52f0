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

Limitation: ``python basicsr/train.py`` and ``python -m basicsr.train`` run ``train.py`` as ``__main__``, whose own
copy of ``load_resume_state`` cannot be replaced from outside, so CPU resume needs ``fsr-train`` (GPU resume works
everywhere).
"""
import os
import sys
import types

_STATE = {'shim': False, 'patched': False}


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


def load_resume_state(opt):
    """CPU-safe replacement of ``basicsr.train.load_resume_state`` (same behaviour otherwise)."""
    from basicsr.utils import check_resume, scandir
    resume_state_path = None
    if opt['auto_resume']:
        state_path = opt['path'].get('training_states') or os.path.join('experiments', opt['name'], 'training_states')
        if os.path.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if states:
                latest = max(int(float(v.split('.state')[0])) for v in states)
                resume_state_path = os.path.join(state_path, f'{latest}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    resume_state = load_training_state(resume_state_path, _resume_map_location(opt))
    check_resume(opt, resume_state['iter'])
    return resume_state


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
    """Apply fixes 2 and 3 to the imported basicsr modules (idempotent)."""
    if _STATE['patched']:
        return
    install_torchvision_shim()
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    BaseModel.model_to_device = model_to_device
    _STATE['patched'] = True
