"""VGG19 perceptual loss with the weights from an explicit local file (AMIGAN eq. 19; reused by W-Net).

BasicSR's ``PerceptualLoss`` reads ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` relative to its own package or
downloads the weights; neither is acceptable here. :class:`VGG19FeatureExtractor` builds torchvision's VGG19 without
weights, loads the torchvision ``state_dict`` file given by ``vgg_weights_path`` and returns the features of named
layers (BasicSR's names: ``conv1_1``, ``relu1_1``, ..., ``conv5_4``, ``relu5_4``, ``pool5``). A missing file is a
``FileNotFoundError`` naming the option and the expected file (torchvision's ``vgg19-dcbb9e9d.pth``). Inputs are RGB in
[0, 1]; the ImageNet normalization is applied inside.

:class:`FSRPerceptualLoss` (registered) has the call signature of BasicSR's ``PerceptualLoss``: ``loss(x, gt)`` returns
``(perceptual_loss, style_loss)`` (``None`` for a term whose weight is 0), so BasicSR's SRGANModel uses it unchanged.
With ``criterion: l1`` every layer's term is the mean absolute difference, i.e. the ``1 / M_VGG^l`` normalized L1 of eq.
19, which sums it over all ``L_VGG`` layers of VGG, unweighted (``options/train_amigan_x8.yml`` lists VGG19's 16 conv
layers with weight 1 each). ``FSRPerceptualLoss.features(x)`` gives the feature dict for other losses (e.g. a masked
perceptual term).
"""
import os
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from collections import OrderedDict
from torch import nn
from torch.nn import functional as F

__all__ = ['VGG19FeatureExtractor', 'FSRPerceptualLoss', 'VGG19_LAYER_NAMES', 'VGG19_WEIGHTS_FILE']

VGG19_WEIGHTS_FILE = 'vgg19-dcbb9e9d.pth'
VGG19_LAYER_NAMES = [
    'conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1', 'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2', 'conv3_1',
    'relu3_1', 'conv3_2', 'relu3_2', 'conv3_3', 'relu3_3', 'conv3_4', 'relu3_4', 'pool3', 'conv4_1', 'relu4_1',
    'conv4_2', 'relu4_2', 'conv4_3', 'relu4_3', 'conv4_4', 'relu4_4', 'pool4', 'conv5_1', 'relu5_1', 'conv5_2',
    'relu5_2', 'conv5_3', 'relu5_3', 'conv5_4', 'relu5_4', 'pool5'
]


def load_vgg19_state_dict(vgg_weights_path, option_name='vgg_weights_path'):
    """Load a torchvision VGG19 ``state_dict`` file, with a clear error when it is missing."""
    if not vgg_weights_path or not os.path.isfile(str(vgg_weights_path)):
        raise FileNotFoundError(
            f'VGG19 weights not found: {option_name} = {vgg_weights_path!r}. Set the option `{option_name}` to a local '
            f'copy of torchvision\'s ImageNet VGG19 weights ({VGG19_WEIGHTS_FILE}, from '
            f'https://download.pytorch.org/models/{VGG19_WEIGHTS_FILE}); nothing is downloaded at run time.')
    state = torch.load(str(vgg_weights_path), map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state and not any(k.startswith('features.') for k in state):
        state = state['state_dict']
    return state


class VGG19FeatureExtractor(nn.Module):
    """Frozen VGG19 returning the features of named layers for RGB [0, 1] images (ImageNet normalization inside).

    Args:
        vgg_weights_path (str): Local torchvision VGG19 state_dict (``vgg19-dcbb9e9d.pth``).
        layer_names (list[str]): Layers to return (names in :data:`VGG19_LAYER_NAMES`). Only the layers up to the
            deepest one are built and loaded (the file may hold only those).
        use_input_norm (bool): Apply the ImageNet mean/std normalization. Default: True.
        range_norm (bool): Map inputs from [-1, 1] to [0, 1] first. Default: False.
        requires_grad (bool): Train the VGG too. Default: False (frozen, always in eval mode).
    """

    def __init__(self, vgg_weights_path, layer_names, use_input_norm=True, range_norm=False, requires_grad=False):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers
        unknown = [n for n in layer_names if n not in VGG19_LAYER_NAMES]
        if unknown or not layer_names:
            raise ValueError(f'Unknown VGG19 layer names {unknown or layer_names}; use names of {VGG19_LAYER_NAMES}.')
        last = max(VGG19_LAYER_NAMES.index(n) for n in layer_names)
        # torchvision's vgg19().features, cut after the deepest layer asked for (the classifier is never built).
        features = make_layers(cfgs['E'])[:last + 1]
        state = load_vgg19_state_dict(vgg_weights_path)
        wanted = {k for k in features.state_dict()}
        sub = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.') and k[9:] in wanted}
        missing = sorted(wanted - set(sub), key=lambda k: int(k.split('.')[0]))
        if missing:
            raise KeyError(f'{vgg_weights_path} (vgg_weights_path) is not a torchvision VGG19 state_dict: it lacks '
                           f'{", ".join("features." + k for k in missing)}.')
        features.load_state_dict(sub)
        layers = OrderedDict()
        for name, layer in zip(VGG19_LAYER_NAMES[:last + 1], features):
            # Not in place: a conv's output is returned before the ReLU that follows it overwrites it.
            layers[name] = nn.ReLU(inplace=False) if isinstance(layer, nn.ReLU) else layer
        self.vgg_net = nn.Sequential(layers)
        self.layer_names = list(layer_names)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self.requires_grad = requires_grad
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        for p in self.vgg_net.parameters():
            p.requires_grad = requires_grad
        self.train(requires_grad)

    def train(self, mode=True):
        # A frozen extractor stays in eval mode whatever its parent does.
        return super().train(mode and self.requires_grad)

    def forward(self, x):
        """Return ``{layer_name: feature}`` for the layers of ``layer_names``."""
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = {}
        for name, layer in self.vgg_net.named_children():
            x = layer(x)
            if name in self.layer_names:
                out[name] = x
        return out


@LOSS_REGISTRY.register()
class FSRPerceptualLoss(nn.Module):
    """Perceptual (and optional style) loss on VGG19 features loaded from ``vgg_weights_path``.

    Args:
        vgg_weights_path (str): Local torchvision VGG19 state_dict (``vgg19-dcbb9e9d.pth``).
        layer_weights (dict): ``{layer_name: weight}``, e.g. ``{'conv5_4': 1.0}`` (ESRGAN's choice, before the ReLU).
        use_input_norm (bool): ImageNet normalization inside. Default: True.
        range_norm (bool): Inputs in [-1, 1]. Default: False.
        perceptual_weight (float): Weight of the perceptual term (0 disables it). Default: 1.0.
        style_weight (float): Weight of the Gram-matrix style term (0 disables it). Default: 0.
        criterion (str): 'l1' (mean absolute difference per layer, eq. 19), 'l2' (mean squared) or 'fro' (Frobenius
            norm). Default: 'l1'.
        loss_weight (float): Alias multiplied into both weights (BasicSR losses take ``loss_weight``). Default: 1.0.
    """

    def __init__(self,
                 vgg_weights_path=None,
                 layer_weights=None,
                 use_input_norm=True,
                 range_norm=False,
                 perceptual_weight=1.0,
                 style_weight=0.,
                 criterion='l1',
                 loss_weight=1.0):
        super().__init__()
        if criterion not in ('l1', 'l2', 'fro'):
            raise ValueError(f"FSRPerceptualLoss: criterion must be 'l1', 'l2' or 'fro', got {criterion!r}.")
        self.layer_weights = dict(layer_weights or {'conv5_4': 1.0})
        self.perceptual_weight = perceptual_weight * loss_weight
        self.style_weight = style_weight * loss_weight
        self.criterion = criterion
        self.vgg = VGG19FeatureExtractor(vgg_weights_path, list(self.layer_weights), use_input_norm, range_norm)

    def features(self, x):
        """VGG19 features ``{layer_name: Tensor}`` of an RGB [0, 1] image batch (for other losses to reuse)."""
        return self.vgg(x)

    def distance(self, a, b):
        """The per-layer criterion between two feature maps."""
        if self.criterion == 'l1':
            return F.l1_loss(a, b)
        if self.criterion == 'l2':
            return F.mse_loss(a, b)
        return torch.linalg.vector_norm(a - b)

    @staticmethod
    def gram(x):
        n, c, h, w = x.shape
        f = x.reshape(n, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    def forward(self, x, gt):
        """Return ``(perceptual_loss, style_loss)``; a term with weight 0 is ``None`` (BasicSR's convention)."""
        x_feats = self.vgg(x)
        gt_feats = self.vgg(gt.detach())
        percep = style = None
        if self.perceptual_weight > 0:
            percep = sum(self.distance(x_feats[k], gt_feats[k]) * w for k, w in self.layer_weights.items())
            percep = percep * self.perceptual_weight
        if self.style_weight > 0:
            style = sum(
                self.distance(self.gram(x_feats[k]), self.gram(gt_feats[k])) * w for k, w in self.layer_weights.items())
            style = style * self.style_weight
        return percep, style
