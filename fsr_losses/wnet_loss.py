"""W-Net's key-region loss (W-Net paper eq. 26-28): masked MSE + masked VGG19 perceptual loss on the face components.

``L_key = sum_{r in eyes, brows, nose, mouth} (L_mse^r + L_per^r)`` (eq. 27-28) where, with the 0-1 component mask
``m_r`` from the parsing map (``FSRFaceDataset``'s ``masks``, (N, 4, H, W)):

- ``L_mse^r = sum(m_r * (SR - HR)^2) / (C * sum(m_r))`` (``mse_normalize: region``, default): eq. 24's MSE taken over
  the region ``r``, i.e. a per-region mean; or ``sum(m_r * (SR - HR)^2) / (C * H * W)`` (``mse_normalize: image``):
  eq. 24 on the masked images, divided by the whole image's size.
- ``L_per^r = mean((phi_k(m_r * SR) - phi_k(m_r * HR))^2)``: eq. 26 on the masked images, ``phi_k`` a VGG19 layer,
  normalized by the layer's ``C_k H_k W_k`` as eq. 26 writes it.

Which scale eq. 27-29 support. ``L_mse^eye`` is eq. 24's pixel-wise loss "on" the eye region ("we employ pixel-wise
loss and perceptual loss on four regions"), and eq. 24 normalizes by the size ``CHW`` of what it compares, so the
region's MSE is its per-pixel mean. The purpose stated three times ("assign special weights to key facial areas",
"focus on different facial regions with varying importance", "ensure high-quality reconstruction of key areas") also
needs it: divided by the whole image, the four terms are a masked copy of ``L_mse`` that gives a key-region pixel
1 + lambda_key = 1.5 times the weight of another pixel, and an eye (~2% of a 128x128 face) adds ~1% to the loss;
as a per-region mean each component weighs as much as the whole-image MSE, whatever its area. Hence ``region`` is the
default; ``image`` is the other reading, kept as an option. An empty mask gives 0 in both.

Outside the masks both masked images are zero, so errors there do not change the loss; an empty mask gives 0 (those
image/component pairs do not even run through the VGG). The VGG19 is the shared frozen
:class:`fsr_losses.perceptual_loss.VGG19FeatureExtractor` loaded from ``vgg_weights_path`` (a missing file is a clear
error). The paper does not name the layer ``k``; the default ``relu2_2`` is the feature-reconstruction layer of Johnson
et al. (the paper's reference [50] for this loss): a shallow layer keeps the small components (an eye is a few pixels at
16x16 LR) local, and costs 4 VGG convs instead of 16.
"""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from fsr_losses.perceptual_loss import VGG19FeatureExtractor

__all__ = ['WNetKeyRegionLoss', 'COMPONENT_NAMES']

COMPONENT_NAMES = ('eyes', 'brows', 'nose', 'mouth')  # the order of FSRFaceDataset's 'masks' channels


@LOSS_REGISTRY.register()
class WNetKeyRegionLoss(nn.Module):
    """Key-region loss of W-Net (eq. 27-28), weighted by ``loss_weight`` (``lambda_key`` = 0.5 in the paper, eq. 29).

    Args:
        vgg_weights_path (str | None): Local torchvision VGG19 state_dict (``vgg19-dcbb9e9d.pth``). Required when
            ``perceptual_weight > 0``.
        layer_weights (dict): ``{vgg_layer: weight}`` of the perceptual term. Default: ``{'relu2_2': 1.0}``.
        loss_weight (float): lambda_key. Default: 0.5 (the paper).
        mse_weight (float): Weight of the masked MSE terms. Default: 1.0 (eq. 27: plain sum).
        perceptual_weight (float): Weight of the masked perceptual terms (0 disables the VGG). Default: 1.0 (eq. 27).
        component_weights (list[float]): Weights of eyes, brows, nose, mouth. Default: all 1 ("equal weighting").
        mse_normalize (str): 'region' (per-region mean, default: the reading of eq. 27 argued in the module docstring)
            or 'image' (divided by the whole image's size).
    """

    def __init__(self,
                 vgg_weights_path=None,
                 layer_weights=None,
                 loss_weight=0.5,
                 mse_weight=1.0,
                 perceptual_weight=1.0,
                 component_weights=None,
                 mse_normalize='region'):
        super().__init__()
        if mse_normalize not in ('image', 'region'):
            raise ValueError(f"WNetKeyRegionLoss: mse_normalize must be 'image' or 'region', got {mse_normalize!r}.")
        self.loss_weight = loss_weight
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight
        self.mse_normalize = mse_normalize
        self.layer_weights = dict(layer_weights or {'relu2_2': 1.0})
        weights = component_weights if component_weights is not None else [1.0] * len(COMPONENT_NAMES)
        if len(weights) != len(COMPONENT_NAMES):
            raise ValueError(f'WNetKeyRegionLoss: component_weights needs {len(COMPONENT_NAMES)} values '
                             f'({", ".join(COMPONENT_NAMES)}), got {weights}.')
        self.register_buffer('component_weights', torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.vgg = VGG19FeatureExtractor(vgg_weights_path, list(self.layer_weights)) if perceptual_weight > 0 else None

    def forward(self, sr, gt, masks):
        """Return the weighted key-region loss.

        Args:
            sr (Tensor): (N, C, H, W) SR faces, RGB [0, 1].
            gt (Tensor): (N, C, H, W) HR faces.
            masks (Tensor): (N, K, H, W) 0-1 component masks (K = 4: eyes, brows, nose, mouth).
        """
        n, c, h, w = sr.shape
        if masks.shape[0] != n or masks.shape[-2:] != (h, w) or masks.shape[1] != len(self.component_weights):
            raise ValueError(f'WNetKeyRegionLoss: masks of shape {tuple(masks.shape)} do not match images '
                             f'{tuple(sr.shape)}: expected (N, {len(self.component_weights)}, H, W).')
        masks = masks.to(sr.dtype)
        gt = gt.detach()
        cw = self.component_weights.to(sr.dtype)
        diff = (sr - gt).unsqueeze(1) * masks.unsqueeze(2)  # (N, K, C, H, W)
        sq = diff.pow(2).flatten(2).sum(-1)  # (N, K)
        if self.mse_normalize == 'image':
            mse = sq / (c * h * w)
        else:
            mse = sq / (c * masks.flatten(2).sum(-1)).clamp_min(1.0)
        loss = self.mse_weight * (mse * cw).sum(1).mean()

        if self.vgg is not None:
            present = masks.flatten(2).amax(-1) > 0  # (N, K): pairs with a non-empty mask
            idx_n, idx_k = present.nonzero(as_tuple=True)
            if idx_n.numel():
                m = masks[idx_n, idx_k].unsqueeze(1)
                f_sr = self.vgg(sr[idx_n] * m)
                with torch.no_grad():
                    f_gt = self.vgg(gt[idx_n] * m)
                per = 0
                for name, weight in self.layer_weights.items():
                    per = per + weight * (f_sr[name] - f_gt[name]).pow(2).flatten(1).mean(1)
                loss = loss + self.perceptual_weight * (per * cw[idx_k]).sum() / n
        return self.loss_weight * loss
