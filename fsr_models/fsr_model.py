"""``FSRModel``: BasicSR's SRModel with any torch optimizer, input checks, a non-finite loss check, test-time
padding, and mixed precision, channels_last, torch.compile and TF32 as options.

The plugin's single-output networks (LAAT, AMINet, TANet) train with it; W-Net's and AMIGAN's model classes build on
:class:`FSROptimizerMixin` and :class:`FSRSpeedMixin` too.

Speed options (``train:`` section; every one off by default, so a file without them trains as BasicSR does):

* ``amp: bf16 | fp16 | none``: ``torch.autocast`` around the network's forward pass and the losses (weights, gradients
  and optimizer stay fp32). ``fp16`` adds a ``torch.amp.GradScaler`` (``grad_scaler:`` takes its ``init_scale``,
  ``growth_factor``, ``backoff_factor``, ``growth_interval``), whose state is saved in the training state and restored
  on resume. A precision the device cannot run falls back to fp32 with a warning: fp16 on the CPU (torch 2.14 runs it,
  emulated: 5-10x slower than fp32 for these networks, measured), bf16 on a GPU without bf16 arithmetic.
* ``channels_last: true``: the networks (net_g, net_g_ema, net_d) and the input faces in ``torch.channels_last``.
* ``compile: true`` (or a section of ``torch.compile`` arguments: ``mode``, ``backend``, ``fullgraph``, ``dynamic``):
  the training forward pass of net_g goes through ``torch.compile`` (validation and checkpoints use the plain
  network). Compilation happens at the first step; a network that cannot be compiled gives one warning naming the
  error, and the training continues uncompiled (same results, the usual speed).
* ``tf32: true`` (the default on CUDA; ``false`` for strict fp32): fp32 matrix products and convolutions on CUDA use
  TF32 (``torch.set_float32_matmul_precision('high')``; PyTorch already does so for convolutions).

``val: amp: bf16 | fp16 | none`` runs validation and ``fsr-test`` under autocast; the default is fp32, and the metrics
are always computed on fp32 images. The log states which options are on.
"""
import contextlib
import os.path as osp
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict
from torch.nn import functional as F

from fsr_utils.compat import AMP_CHOICES, PairSizeError


class NonFiniteLossError(FloatingPointError):
    """A loss that is NaN or Inf: the training stops before the optimizer step that would apply it."""


class FSRFiniteLossMixin:
    """Stop a training at the first non-finite loss, before the optimizer step applies it.

    BasicSR logs ``l_pix: nan`` for every later step, saves checkpoints of NaN weights and exits with status 0. Each
    model of the plugin calls :meth:`check_finite_loss` between ``backward()`` and ``optimizer.step()``; the error
    names the iteration and the losses that are not finite, and nothing of that iteration is applied or saved.
    """

    def check_finite_loss(self, current_iter, total, loss_dict, step='optimizer_g'):
        """Raise :class:`NonFiniteLossError` when ``total`` (the sum the step applies) is NaN or Inf.

        Cost: one host synchronisation (under DDP one all-reduce of a flag, so that every process stops, not only the
        one whose batch diverged); the losses are looked at one by one only when the total is not finite.
        """
        if not torch.is_tensor(total):
            return
        bad = (~torch.isfinite(total.detach())).any().to(torch.float32)
        if self.opt.get('dist') and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(bad)
        if not bad.item():
            return
        culprits = [
            f'{name} = {v.detach().float().mean().item()}' for name, v in loss_dict.items()
            if torch.is_tensor(v) and not torch.isfinite(v.detach()).all()
        ]
        if len(culprits) > 1:  # name the losses, not also their sum (W-Net logs l_total)
            culprits = [c for c in culprits if not c.startswith('l_total ')]
        local = bool(culprits) or not bool(torch.isfinite(total.detach()).all())
        if not local:
            what = 'on another DDP process'
        elif not culprits:
            what = f'total {total.detach().float().mean().item()}'
        else:
            what = ', '.join(culprits)
        fp16 = ''
        if getattr(self, 'amp_dtype', None) is torch.float16:
            fp16 = (' Under train.amp fp16 this can also be the forward pass leaving fp16\'s range (largest value '
                    '65504), which the gradient scaler cannot fix: try amp bf16 (fp32\'s range) or none.')
        raise NonFiniteLossError(
            f'iteration {current_iter}: non-finite loss {what} (found before {step}.step()). Nothing of this '
            'iteration was applied and no checkpoint of it was saved. The training diverged or a training face is '
            'broken: lower the learning rate (train:optim_g:lr, or add train:warmup_iter), check the data, and '
            f'continue from the last good checkpoint with --auto_resume.{fp16}')


# ---------------------------------------------------------------------------------------------------- speed options
_AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def amp_unsupported(device, amp):
    """Why ``amp`` (``bf16`` / ``fp16``) does not run usefully on ``device`` (a ``torch.device``); None if it does.

    fp16: CUDA only. torch 2.14 accepts fp16 autocast on the CPU, but emulates it: a training step of the tiny
    networks took 5-10x as long as in fp32 (0.23 vs 0.02 s TANet, 1.9 vs 0.22 s AMINet; one thread, a CPU with
    AVX512-FP16), so fp16 on the CPU is a mistake to report, not a mode to run. bf16: the CPU (autocast works there;
    the tests and docs/amp.md run it) and GPUs with bf16 arithmetic (``torch.cuda.is_bf16_supported``, compute
    capability 8.0 and newer).
    """
    kind = device.type
    if amp == 'fp16':
        if kind == 'cuda':
            return None
        return (f'fp16 autocast on the {kind.upper()} is emulated by torch (5-10x slower than fp32 for these '
                'networks, measured on the CPU)')
    if amp == 'bf16':
        if kind == 'cpu':
            return None
        if kind == 'cuda':
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return None
            return 'this GPU has no bf16 arithmetic (compute capability below 8.0)'
        if torch.amp.autocast_mode.is_autocast_available(kind):
            return None
        return f'torch has no autocast for the device {kind}'
    return None


def resolve_amp(device, amp, key):
    """``(dtype or None, warning or None)`` for the option ``key`` = ``amp`` (``bf16``, ``fp16``, ``none`` or None)."""
    if amp is None or amp == 'none':
        return None, None
    if amp not in _AMP_DTYPES:
        raise ValueError(f'{key} must be one of {", ".join(AMP_CHOICES)}, not {amp!r}.')
    reason = amp_unsupported(device, amp)
    if reason is None:
        return _AMP_DTYPES[amp], None
    other = 'bf16' if amp == 'fp16' else 'fp16'
    return None, (f'{key} {amp}: {reason}: running in fp32 instead. Use {other} (bf16 on the CPU and on recent GPUs, '
                  'fp16 on older GPUs) or none.')


def autocast_context(device, dtype):
    """``torch.autocast`` for ``dtype`` on the device type of ``device``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def apply_tf32(device, enabled):
    """TF32 for fp32 matrix products and convolutions on CUDA (process-wide); returns the setting, or None on the
    CPU (where nothing is changed).

    ``enabled``: ``torch.set_float32_matmul_precision('high')`` and ``cudnn.allow_tf32`` (PyTorch's default for
    convolutions); False: ``'highest'`` and no TF32 convolutions (strict fp32).
    """
    if device.type != 'cuda':
        return None
    enabled = True if enabled is None else bool(enabled)
    torch.set_float32_matmul_precision('high' if enabled else 'highest')
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


class FSRSpeedMixin:
    """The speed options of the training (module docstring): mixed precision, channels_last, torch.compile, TF32.

    The model classes call :meth:`forward_g` for the training forward pass, :meth:`train_autocast` around it and the
    losses, :meth:`backward_step` for each optimizer and :meth:`end_step` once per iteration. With every option off
    these are BasicSR's plain calls (the gradient scaler is disabled: ``scale`` returns the loss, ``step`` calls
    ``optimizer.step()``).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.setup_speed_options()

    def setup_speed_options(self):
        """Read the options, prepare the networks and log which options are on (after BasicSR built the model)."""
        logger = get_root_logger()
        train_opt = (self.opt.get('train') or {}) if self.is_train else {}
        warnings = []
        self.amp_dtype, warn = resolve_amp(self.device, train_opt.get('amp'), 'train.amp')
        warnings.append(warn)
        self.val_amp_dtype, warn = resolve_amp(self.device, (self.opt.get('val') or {}).get('amp'), 'val.amp')
        warnings.append(warn)
        for msg in filter(None, warnings):
            logger.warning(msg)
        self.grad_scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype is torch.float16, **dict(train_opt.get('grad_scaler') or {}))
        self.channels_last = bool(train_opt.get('channels_last'))
        if self.channels_last:
            for name in ('net_g', 'net_g_ema', 'net_d'):
                if getattr(self, name, None) is not None:
                    getattr(self, name).to(memory_format=torch.channels_last)
        self.tf32 = apply_tf32(self.device, train_opt.get('tf32')) if self.is_train else None
        self.net_g_compiled = None
        spec = train_opt.get('compile')
        if spec:
            kwargs = {} if spec is True else dict(spec)
            try:
                self.net_g_compiled = torch.compile(self.net_g, **kwargs)
            except Exception as exc:  # e.g. a Python that torch.compile does not support
                self._compile_failed(exc)
        logger.info(self.speed_summary())

    def speed_summary(self):
        """One line for the log: which speed options are on."""
        names = {None: 'fp32', torch.bfloat16: 'bf16 autocast', torch.float16: 'fp16 autocast'}
        if not self.is_train:
            return f'Speed options: inference {names[self.val_amp_dtype]}.'
        scaler = ''
        if self.grad_scaler.is_enabled():
            scaler = f' with a gradient scaler (initial scale {self.grad_scaler.get_scale():g})'
        spec = self.opt['train'].get('compile')
        compiled = 'off' if not spec else 'on'
        if isinstance(spec, dict) and spec:
            compiled = f'on ({", ".join(f"{k}: {v}" for k, v in spec.items())})'
        if spec and self.net_g_compiled is None:
            compiled = 'off (failed, see the warning)'
        tf32 = 'not used (CPU)' if self.tf32 is None else 'on' if self.tf32 else 'off (strict fp32)'
        return (f'Speed options: training {names[self.amp_dtype]}{scaler} (train.amp), channels_last '
                f'{"on" if self.channels_last else "off"}, compile {compiled}, TF32 {tf32}; validation '
                f'{names[self.val_amp_dtype]} (val.amp), metrics on fp32 images.')

    def _compile_failed(self, exc):
        first = (str(exc).strip().splitlines() or [''])[0][:300]
        net = self.get_bare_model(self.net_g).__class__.__name__
        get_root_logger().warning(
            f'train.compile: torch.compile cannot compile {net} ({type(exc).__name__}: {first}); the training '
            'continues without compile (same results, uncompiled speed). Set train.compile: false to skip the try, '
            'or FSR_DEBUG=1 TORCH_LOGS=dynamo for the details.')
        self.net_g_compiled = None

    def forward_g(self, *args, **kwargs):
        """The training forward pass of net_g: compiled when ``train.compile`` is on and the compile works.

        A failure of the compiled call is retried with the plain network: if that works, the compile was at fault
        (one warning, and the plain network from then on); if not, the error is the network's and is raised.
        """
        compiled = getattr(self, 'net_g_compiled', None)
        if compiled is None:
            return self.net_g(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # a compile failure, or the network's own error (raised again below)
            out = self.net_g(*args, **kwargs)
            self._compile_failed(exc)
            return out

    def train_autocast(self):
        """The autocast context of the training forward pass and losses (``train.amp``)."""
        return autocast_context(self.device, getattr(self, 'amp_dtype', None))

    def feed_data(self, data):
        super().feed_data(data)
        if getattr(self, 'channels_last', False):
            for key in ('lq', 'gt'):
                value = getattr(self, key, None)
                if torch.is_tensor(value) and value.dim() == 4:
                    setattr(self, key, value.contiguous(memory_format=torch.channels_last))

    def backward_step(self, loss, optimizer, current_iter, loss_dict, step='optimizer_g', total=None):
        """Backward of ``loss`` (scaled under fp16), the finite-loss check on the unscaled ``total`` (default
        ``loss``), then the optimizer step (skipped by the scaler when a scaled gradient overflowed).

        The check looks at the loss value, never at the scaled gradients: an fp16 gradient overflow, which the scaler
        handles (it skips that step and halves its scale), does not stop the run; a non-finite loss value does (under
        fp16 that is the forward pass leaving fp16's range, which no scale can fix).
        """
        self.grad_scaler.scale(loss).backward()
        self.check_finite_loss(current_iter, loss if total is None else total, loss_dict, step)
        self.grad_scaler.step(optimizer)

    def end_step(self):
        """Once per iteration, after every optimizer step: the scaler's update, and its scale in the log (fp16)."""
        self.grad_scaler.update()
        if self.grad_scaler.is_enabled() and isinstance(getattr(self, 'log_dict', None), dict):
            self.log_dict['grad_scale'] = self.grad_scaler.get_scale()

    def resume_training(self, resume_state):
        """BasicSR's resume (optimizers, schedulers) and the gradient scaler's state under fp16."""
        super().resume_training(resume_state)
        saved = resume_state.get('grad_scaler')
        logger = get_root_logger()
        if self.grad_scaler.is_enabled():
            if saved:
                self.grad_scaler.load_state_dict(saved)
                logger.info(f'Resume: gradient scaler restored (scale {self.grad_scaler.get_scale():g}).')
            else:
                logger.warning('Resume: the training state holds no gradient scaler (it was not saved under amp '
                               f'fp16): the scaler starts anew at scale {self.grad_scaler.get_scale():g}.')
        elif saved:
            logger.info('Resume: the training state holds a gradient scaler (amp fp16); this run does not use one.')


class FSROptimizerMixin:
    """Two fixes of BasicSR 1.4.2's training step shared by every model of the plugin.

    - Accept every optimizer of ``torch.optim`` by its class name (BasicSR 1.4.2 only knows ``Adam``):
      ``optim_g: {type: AdamW, lr: 4e-4, betas: [0.9, 0.99], weight_decay: 0.02}`` builds ``torch.optim.AdamW``.
    - ``ema_decay``: BasicSR's ``model_ema`` averages the parameters only, so the buffers of ``net_g_ema`` (BatchNorm's
      running mean and variance: W-Net's resamplers) stay at their initial values and the EMA network, which
      ``fsr-benchmark`` and ``fsr-infer`` prefer (``params_ema``), is broken. Here the buffers follow ``net_g`` (copied
      each step, as timm's ``ModelEmaV2`` does for non-float buffers and torch's ``AveragedModel`` with
      ``use_buffers=False``).
    """

    def model_ema(self, decay=0.999):
        super().model_ema(decay)
        net_g = self.get_bare_model(self.net_g)
        with torch.no_grad():
            for buf_ema, buf in zip(self.net_g_ema.buffers(), net_g.buffers()):
                buf_ema.copy_(buf)

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        optim_cls = getattr(torch.optim, optim_type, None)
        if not (isinstance(optim_cls, type) and issubclass(optim_cls, torch.optim.Optimizer)):
            known = sorted(
                n for n, c in vars(torch.optim).items()
                if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
            raise ValueError(f'Unknown optimizer type "{optim_type}" in the options (train:optim_*:type); '
                             f'use one of torch.optim: {", ".join(known)}.')
        return optim_cls(params, lr, **kwargs)


class FSRInputCheckMixin:
    """Shape checks with clear messages and HAT-style test-time padding to the network's ``size_multiple``."""

    def check_pair(self, data):
        """Raise :class:`~fsr_utils.compat.PairSizeError` when gt is not ``scale`` times lq (a wrong-scale LR set).

        The last line of defence, for datasets that do not check their pairs: a dataset that crops the HR face to the
        LR size x scale (BasicSR's ``PairedImageDataset`` outside training) hides a wrong scale from this check, so
        the plugin checks every pair where it is read (``FSRFaceDataset`` and, patched by
        :func:`fsr_utils.compat.patch_basicsr`, ``PairedImageDataset``; both also check a whole LMDB set when built).
        """
        if 'gt' not in data:
            return
        scale = self.opt['scale']
        lq_hw, gt_hw = tuple(data['lq'].shape[-2:]), tuple(data['gt'].shape[-2:])
        if (lq_hw[0] * scale, lq_hw[1] * scale) != gt_hw:

            def first(key):
                value = data.get(key, '?')
                return str(value[0] if isinstance(value, (list, tuple)) and value else value)

            raise PairSizeError(
                f'LR size {lq_hw} x scale {scale} != HR size {gt_hw} (LR {first("lq_path")}, HR {first("gt_path")}). '
                f'The LR data does not match "scale: {scale}" of the options: point dataroot_lq at the lr_x{scale} '
                f'set of the same faces ({osp.basename(first("lq_path"))} is not one), or fix the scale.')

    def _size_multiple(self):
        net = self.get_bare_model(self.net_g)
        return int(getattr(net, 'size_multiple', 1) or 1)

    def test(self):
        """Run the network on ``self.lq``, reflect-padding it to ``size_multiple`` and cropping the output back."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        multiple = self._size_multiple()
        h, w = self.lq.shape[-2:]
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        lq = self.lq
        if pad_h or pad_w:
            mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
            lq = F.pad(lq, (0, pad_w, 0, pad_h), mode=mode)
        if getattr(self, 'channels_last', False):
            lq = lq.contiguous(memory_format=torch.channels_last)
        net.eval()
        with torch.no_grad(), autocast_context(lq.device, getattr(self, 'val_amp_dtype', None)):
            out = self.forward_test(net, lq)
        out = out.float()  # metrics and images on fp32 values (val.amp)
        if not hasattr(self, 'net_g_ema'):
            net.train()
        scale = self.opt['scale']
        self.output = out[..., :h * scale, :w * scale]

    def forward_test(self, net, lq):
        """The network call used by :meth:`test` (subclasses with several outputs pick the image here)."""
        return net(lq)


@MODEL_REGISTRY.register()
class FSRModel(FSRSpeedMixin, FSRFiniteLossMixin, FSROptimizerMixin, FSRInputCheckMixin, SRModel):
    """SRModel for the plugin's networks: any ``torch.optim`` optimizer, a clear error for wrong-scale pairs, a stop at
    the first non-finite loss, test-time padding for networks that only take multiples of ``size_multiple`` (as
    HAT's model does for windows), and the speed options of :class:`FSRSpeedMixin` (module docstring)."""

    def feed_data(self, data):
        self.check_pair(data)
        super().feed_data(data)

    def optimize_parameters(self, current_iter):
        """``SRModel.optimize_parameters`` of BasicSR 1.4.2 with :meth:`check_finite_loss` before the step and the
        speed options (autocast, gradient scaler, compiled forward)."""
        self.optimizer_g.zero_grad()
        with self.train_autocast():
            self.output = self.forward_g(self.lq)

            l_total = 0
            loss_dict = OrderedDict()
            if self.cri_pix:
                l_pix = self.cri_pix(self.output, self.gt)
                l_total += l_pix
                loss_dict['l_pix'] = l_pix
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, self.gt)
                if l_percep is not None:
                    l_total += l_percep
                    loss_dict['l_percep'] = l_percep
                if l_style is not None:
                    l_total += l_style
                    loss_dict['l_style'] = l_style

        self.backward_step(l_total, self.optimizer_g, current_iter, loss_dict)

        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.end_step()

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
