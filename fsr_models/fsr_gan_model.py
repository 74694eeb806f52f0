"""``FSRGANModel``: BasicSR's SRGANModel with the plugin's optimizer choice, input checks and test-time padding.

Used by AMIGAN (AMINet paper, Sec. III-D): ``L = l_pix * L1 + l_pcp * VGG19 perceptual + l_adv * adversarial``
(eq. 18-22) with ``pixel_opt`` (``L1Loss``), ``perceptual_opt`` (``FSRPerceptualLoss``, local VGG19 weights) and
``gan_opt`` (``GANLoss`` type ``vanilla``: the binary cross-entropy of eq. 20-21). The generator and discriminator steps
are SRGANModel's (one D step per G step by default, ``net_d_iters`` / ``net_d_init_iters`` as in BasicSR); both run on
the CPU (``num_gpu: 0``) and the GPU.
"""
import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict

from fsr_models.fsr_model import FSRFiniteLossMixin, FSRInputCheckMixin, FSROptimizerMixin, FSRSpeedMixin


@MODEL_REGISTRY.register()
class FSRGANModel(FSRSpeedMixin, FSRFiniteLossMixin, FSROptimizerMixin, FSRInputCheckMixin, SRGANModel):
    """SRGANModel for the plugin's networks: any ``torch.optim`` optimizer for ``optim_g`` / ``optim_d``, a clear error
    for wrong-scale pairs, a stop at the first non-finite loss (generator or discriminator), test-time padding to
    the generator's ``size_multiple`` and the speed options of :class:`~fsr_models.fsr_model.FSRSpeedMixin`
    (``train: amp / channels_last / compile / tf32``; both networks under autocast and channels_last, one gradient
    scaler for both optimizers, updated once per iteration; only the generator is compiled)."""

    def init_training_settings(self):
        if not self.opt.get('network_d'):
            raise ValueError('FSRGANModel needs a discriminator: add a `network_d` section to the options '
                             '(e.g. {type: AMIGANDiscriminator, num_in_ch: 3, num_feat: 64, input_size: 128}).')
        if not self.opt['train'].get('gan_opt'):
            raise ValueError('FSRGANModel needs `train: gan_opt` (e.g. {type: GANLoss, gan_type: vanilla, '
                             'loss_weight: 0.01}).')
        super().init_training_settings()

    def feed_data(self, data):
        self.check_pair(data)
        super().feed_data(data)

    def optimize_parameters(self, current_iter):
        """``SRGANModel.optimize_parameters`` of BasicSR 1.4.2 with :meth:`check_finite_loss` before each step and
        the speed options (autocast, gradient scaler, compiled generator)."""
        for p in self.net_d.parameters():
            p.requires_grad = False

        self.optimizer_g.zero_grad()
        with self.train_autocast():
            self.output = self.forward_g(self.lq)

        l_g_total = 0
        loss_dict = OrderedDict()
        if (current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters):
            with self.train_autocast():
                if self.cri_pix:
                    l_g_pix = self.cri_pix(self.output, self.gt)
                    l_g_total += l_g_pix
                    loss_dict['l_g_pix'] = l_g_pix
                if self.cri_perceptual:
                    l_g_percep, l_g_style = self.cri_perceptual(self.output, self.gt)
                    if l_g_percep is not None:
                        l_g_total += l_g_percep
                        loss_dict['l_g_percep'] = l_g_percep
                    if l_g_style is not None:
                        l_g_total += l_g_style
                        loss_dict['l_g_style'] = l_g_style
                fake_g_pred = self.net_d(self.output)
                l_g_gan = self.cri_gan(fake_g_pred, True, is_disc=False)
                l_g_total += l_g_gan
                loss_dict['l_g_gan'] = l_g_gan

            self.backward_step(l_g_total, self.optimizer_g, current_iter, loss_dict, 'optimizer_g')

        for p in self.net_d.parameters():
            p.requires_grad = True

        self.optimizer_d.zero_grad()
        with self.train_autocast():
            real_d_pred = self.net_d(self.gt)
            l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        loss_dict['l_d_real'] = l_d_real
        loss_dict['out_d_real'] = torch.mean(real_d_pred.detach().float())
        self.grad_scaler.scale(l_d_real).backward()
        with self.train_autocast():
            fake_d_pred = self.net_d(self.output.detach())
            l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        loss_dict['l_d_fake'] = l_d_fake
        loss_dict['out_d_fake'] = torch.mean(fake_d_pred.detach().float())
        self.backward_step(
            l_d_fake,
            self.optimizer_d,
            current_iter, {
                'l_d_real': l_d_real,
                'l_d_fake': l_d_fake
            },
            'optimizer_d',
            total=l_d_real.detach() + l_d_fake.detach())

        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.end_step()

        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
