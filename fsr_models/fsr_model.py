"""``FSRModel``: BasicSR's SRModel with any torch optimizer, input checks, a non-finite loss check and test-time
padding.

The plugin's single-output networks (LAAT, AMINet, TANet) train with it; W-Net's and AMIGAN's model classes build on
:class:`FSROptimizerMixin` too.
"""
import os.path as osp
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict
from torch.nn import functional as F

from fsr_utils.compat import PairSizeError


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
        raise NonFiniteLossError(
            f'iteration {current_iter}: non-finite loss {what} (found before {step}.step()). Nothing of this '
            'iteration was applied and no checkpoint of it was saved. The training diverged or a training face is '
            'broken: lower the learning rate (train:optim_g:lr, or add train:warmup_iter), check the data, and '
            'continue from the last good checkpoint with --auto_resume.')


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
        net.eval()
        with torch.no_grad():
            out = self.forward_test(net, lq)
        if not hasattr(self, 'net_g_ema'):
            net.train()
        scale = self.opt['scale']
        self.output = out[..., :h * scale, :w * scale]

    def forward_test(self, net, lq):
        """The network call used by :meth:`test` (subclasses with several outputs pick the image here)."""
        return net(lq)


@MODEL_REGISTRY.register()
class FSRModel(FSRFiniteLossMixin, FSROptimizerMixin, FSRInputCheckMixin, SRModel):
    """SRModel for the plugin's networks: any ``torch.optim`` optimizer, a clear error for wrong-scale pairs, a stop at
    the first non-finite loss and test-time padding for networks that only take multiples of ``size_multiple`` (as
    HAT's model does for windows)."""

    def feed_data(self, data):
        self.check_pair(data)
        super().feed_data(data)

    def optimize_parameters(self, current_iter):
        """``SRModel.optimize_parameters`` of BasicSR 1.4.2 with :meth:`check_finite_loss` before the step."""
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)

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

        l_total.backward()
        self.check_finite_loss(current_iter, l_total, loss_dict)
        self.optimizer_g.step()

        self.log_dict = self.reduce_loss_dict(loss_dict)

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
