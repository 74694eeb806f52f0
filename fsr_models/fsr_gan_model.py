"""``FSRGANModel``: BasicSR's SRGANModel with the plugin's optimizer choice, input checks and test-time padding.

Used by AMIGAN (AMINet paper, Sec. III-D): ``L = l_pix * L1 + l_pcp * VGG19 perceptual + l_adv * adversarial``
(eq. 18-22) with ``pixel_opt`` (``L1Loss``), ``perceptual_opt`` (``FSRPerceptualLoss``, local VGG19 weights) and
``gan_opt`` (``GANLoss`` type ``vanilla``: the binary cross-entropy of eq. 20-21). The generator and discriminator steps
are SRGANModel's (one D step per G step by default, ``net_d_iters`` / ``net_d_init_iters`` as in BasicSR); both run on
the CPU (``num_gpu: 0``) and the GPU.
"""
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from fsr_models.fsr_model import FSRInputCheckMixin, FSROptimizerMixin


@MODEL_REGISTRY.register()
class FSRGANModel(FSROptimizerMixin, FSRInputCheckMixin, SRGANModel):
    """SRGANModel for the plugin's networks: any ``torch.optim`` optimizer for ``optim_g`` / ``optim_d``, a clear error
    for wrong-scale pairs and test-time padding to the generator's ``size_multiple``."""

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
