"""``FSRModel``: BasicSR's SRModel with any torch optimizer, input checks and test-time padding.

The plugin's single-output networks (LAAT, AMINet, TANet) train with it; W-Net's and AMIGAN's model classes build on
:class:`FSROptimizerMixin` too.
"""
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn import functional as F


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
        """Raise a ValueError naming the files when gt is not ``scale`` times lq (a wrong-scale LR set)."""
        if 'gt' not in data:
            return
        scale = self.opt['scale']
        lq_hw, gt_hw = tuple(data['lq'].shape[-2:]), tuple(data['gt'].shape[-2:])
        if (lq_hw[0] * scale, lq_hw[1] * scale) != gt_hw:
            paths = data.get('lq_path', ['?'])
            raise ValueError(
                f'LR size {lq_hw} x scale {scale} != HR size {gt_hw} (LR file {paths[0]}). The LR data does '
                f'not match "scale: {scale}" of the options: point dataroot_lq at the lr_x{scale} set or fix '
                f'the scale.')

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
class FSRModel(FSROptimizerMixin, FSRInputCheckMixin, SRModel):
    """SRModel for the plugin's networks: any ``torch.optim`` optimizer, a clear error for wrong-scale pairs and
    test-time padding for networks that only take multiples of ``size_multiple`` (as HAT's model does for windows)."""

    def feed_data(self, data):
        self.check_pair(data)
        super().feed_data(data)
