"""AMIGAN's discriminator (AMINet paper, Sec. III-D, eq. 20-21).

The paper does not describe its discriminator. Eq. 20-21 use one real/fake probability ``D(I)`` per image, which is what
a VGG-style classifier gives (a U-Net discriminator gives one score per pixel instead), and the GAN methods the paper
compares with (FSRGAN, DICGAN, SPARGAN, SFMGAN) train with SRGAN/ESRGAN-style global discriminators. So this is ESRGAN's
VGG-style discriminator (the one BasicSR registers as ``VGGStyleDiscriminator``), generalized to any input size that is
a multiple of 32 (128x128 faces by default: five stride-2 stages down to 4x4, then two linear layers to one logit), with
a choice of normalization: batch norm as in ESRGAN (default), spectral norm, or none.
"""
import math
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn.utils import spectral_norm

__all__ = ['AMIGANDiscriminator', 'PAPER_CONFIGS', 'TINY_CONFIG']


@ARCH_REGISTRY.register()
class AMIGANDiscriminator(nn.Module):
    """VGG-style discriminator: (N, 3, S, S) image in [0, 1] -> (N, 1) logit (use with ``GANLoss`` type ``vanilla``).

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_feat (int): Channels of the first stage (doubled at each of the next three stages, as in ESRGAN).
            Default: 64.
        input_size (int): Height and width of the input, a multiple of 32 (a power-of-two multiple of 4). Default: 128.
        norm (str): 'bn' (batch norm, ESRGAN), 'sn' (spectral norm on every conv and linear layer) or 'none'.
            Default: 'bn'.
    """

    def __init__(self, num_in_ch=3, num_feat=64, input_size=128, norm='bn'):
        super().__init__()
        stages = math.log2(input_size / 4) if input_size >= 32 else 0
        if input_size < 32 or stages != int(stages):
            raise ValueError(f'AMIGANDiscriminator: input_size must be 4 * 2^k with k >= 3 (32, 64, 128, 256, ...), '
                             f'got {input_size}.')
        if norm not in ('bn', 'sn', 'none'):
            raise ValueError(f"AMIGANDiscriminator: norm must be 'bn', 'sn' or 'none', got {norm!r}.")
        self.input_size = input_size
        wrap = spectral_norm if norm == 'sn' else (lambda m: m)

        def block(cin, cout, kernel, stride):
            layers = [wrap(nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if stride == 1 else 1, bias=norm != 'bn'))]
            if norm == 'bn':
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        layers = [wrap(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True)]
        layers += block(num_feat, num_feat, 4, 2)
        ch = num_feat
        for i in range(1, int(stages)):
            out = num_feat * 2**min(i, 3)
            layers += block(ch, out, 3, 1) + block(out, out, 4, 2)
            ch = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            wrap(nn.Linear(ch * 4 * 4, 100)), nn.LeakyReLU(0.2, inplace=True), wrap(nn.Linear(100, 1)))

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f'AMIGANDiscriminator: input must be {self.input_size}x{self.input_size} (input_size), '
                             f'got {x.shape[-2]}x{x.shape[-1]}.')
        return self.classifier(self.features(x).flatten(1))


# The discriminator for the paper's 128x128 faces, and a tiny one for CPU tests on 32x32 crops.
PAPER_CONFIGS = {
    'x4': dict(num_in_ch=3, num_feat=64, input_size=128),
    'x8': dict(num_in_ch=3, num_feat=64, input_size=128),
}
TINY_CONFIG = dict(num_in_ch=3, num_feat=4, input_size=32)
