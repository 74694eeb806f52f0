"""``WNetModel``: trains W-Net with its pixel, parsing and key-region losses (W-Net paper eq. 24-29).

``L = lambda_pixel * MSE(SR, HR) + lambda_par * MSE(parsing, parsing target) + lambda_key * L_key`` with the paper's
weights 1.0 / 1.0 / 0.5 set as the ``loss_weight`` of each loss option. GFPGAN style: a loss is used iff its option key
is present under ``train``:

- ``pixel_opt``: e.g. ``{type: MSELoss, loss_weight: 1.0}`` on (SR, gt);
- ``parsing_opt``: e.g. ``{type: MSELoss, loss_weight: 1.0}`` on (predicted parsing map, binary target);
- ``key_region_opt``: e.g. ``{type: WNetKeyRegionLoss, loss_weight: 0.5, vgg_weights_path: ...}`` on (SR, gt, masks).

Data keys (``FSRFaceDataset`` with ``return_binary_parsing`` and ``return_component_masks``): ``lq``, ``gt``,
``parsing_bin_lq`` / ``parsing_bin_gt`` (1-channel binary skin maps) and ``masks`` (4, H, W).

``train: parsing_target``: ``lq`` (default) compares the network's LR-size parsing map with ``parsing_bin_lq`` (the
paper's implementation details: LR parsing targets are the binary maps bicubic-downsampled to 32x32 / 16x16); ``gt``
compares it, bilinearly up-sampled to the HR size, with ``parsing_bin_gt`` (eq. 25 read literally). A 1-channel target
is broadcast over the network's ``parsing_channels`` (3 in the paper).

Validation: ``val: metrics`` may hold BasicSR metrics (``calculate_psnr``, ``calculate_ssim``, ...) on the SR image and
``{type: parsing_mse}``: the MSE between the predicted parsing map (clamped to [0, 1]) and the target, averaged over the
images (needs ``return_binary_parsing: true`` in the validation dataset).

Training Mode I / II of the paper differ only by the training data (168,854 CelebA faces with DIC's split vs 18,000 with
RAAN's split) and thus the schedule: see ``options/train_wnet_x4.yml`` and ``options/train_wnet_x4_mode2.yml``.
"""
import os.path as osp
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict
from torch.nn import functional as F

from fsr_models.fsr_model import FSRModel

PARSING_METRIC = 'parsing_mse'


@MODEL_REGISTRY.register()
class WNetModel(FSRModel):
    """Model for :class:`fsr_arch.wnet_arch.WNet` (two outputs: SR image and parsing map)."""

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            from basicsr.archs import build_network
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g', None)
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_parsing = build_loss(train_opt['parsing_opt']).to(
            self.device) if train_opt.get('parsing_opt') else None
        self.cri_key = build_loss(train_opt['key_region_opt']).to(
            self.device) if train_opt.get('key_region_opt') else None
        if self.cri_pix is None and self.cri_parsing is None and self.cri_key is None:
            raise ValueError('WNetModel: no loss configured: set at least one of train:pixel_opt, train:parsing_opt, '
                             'train:key_region_opt.')
        self.parsing_target = train_opt.get('parsing_target', 'lq')
        if self.parsing_target not in ('lq', 'gt'):
            raise ValueError(f'WNetModel: train:parsing_target must be "lq" or "gt", got {self.parsing_target!r}.')
        self.setup_optimizers()
        self.setup_schedulers()

    def _target_key(self):
        target = (self.opt.get('train') or {}).get('parsing_target') or self.opt.get('parsing_target') or 'lq'
        return f'parsing_bin_{target}'

    def feed_data(self, data):
        super().feed_data(data)
        key = self._target_key()
        self.parsing_gt = data[key].to(self.device) if key in data else None
        self.masks = data['masks'].to(self.device) if 'masks' in data else None

    def _require(self, value, what, flag):
        if value is None:
            raise KeyError(
                f'WNetModel: {what} is needed by the configured losses/metrics but the dataset did not return '
                f'it: set "{flag}: true" (and dataroot_parsing) in the dataset options (FSRFaceDataset).')
        return value

    def parsing_loss_input(self, parsing, target):
        """Bring the predicted parsing map and its 1-channel target to the same shape (see the module docstring)."""
        if parsing.shape[-2:] != target.shape[-2:]:
            parsing = F.interpolate(parsing, size=target.shape[-2:], mode='bilinear', align_corners=False)
        return parsing, target.expand_as(parsing)

    def optimize_parameters(self, current_iter):
        """The three losses (module docstring), the finite-loss check before the step, and the speed options of
        :class:`~fsr_models.fsr_model.FSRSpeedMixin` (``train: amp / channels_last / compile / tf32``)."""
        self.optimizer_g.zero_grad()
        with self.train_autocast():
            self.output, self.output_parsing = self.forward_g(self.lq, return_parsing=True)

            l_total = 0
            loss_dict = OrderedDict()
            if self.cri_pix:
                l_pix = self.cri_pix(self.output, self.gt)
                l_total += l_pix
                loss_dict['l_pix'] = l_pix
            if self.cri_parsing:
                target = self._require(self.parsing_gt, f"'{self._target_key()}'", 'return_binary_parsing')
                l_par = self.cri_parsing(*self.parsing_loss_input(self.output_parsing, target))
                l_total += l_par
                loss_dict['l_par'] = l_par
            if self.cri_key:
                masks = self._require(self.masks, "'masks'", 'return_component_masks')
                l_key = self.cri_key(self.output, self.gt, masks)
                l_total += l_key
                loss_dict['l_key'] = l_key
            loss_dict['l_total'] = l_total

        self.backward_step(l_total, self.optimizer_g, current_iter, loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.end_step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def forward_test(self, net, lq):
        """Test-time call: keep the SR image as ``self.output``, the (un-padded) parsing map as ``output_parsing``."""
        h, w = self.lq.shape[-2:]
        sr, parsing = net(lq, return_parsing=True)
        self.output_parsing = parsing[..., :h, :w].float()  # fp32 under val.amp, as the image
        return sr

    def parsing_error(self):
        """MSE between the clamped predicted parsing map and the target of the current batch."""
        target = self._require(self.parsing_gt, f"'{self._target_key()}'", 'return_binary_parsing')
        pred, target = self.parsing_loss_input(self.output_parsing.clamp(0, 1), target)
        return F.mse_loss(pred, target).item()

    def get_current_visuals(self):
        out = super().get_current_visuals()
        if getattr(self, 'output_parsing', None) is not None:
            out['parsing'] = self.output_parsing.detach().cpu()
        return out

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """SRModel's validation plus ``parsing_mse`` (a ``val: metrics`` entry with ``type: parsing_mse``)."""
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        with_metrics = bool(metrics_opt)
        if with_metrics:
            if not hasattr(self, 'metric_results'):
                self.metric_results = {metric: 0 for metric in metrics_opt}
            self._initialize_best_metric_results(dataset_name)
            self.metric_results = {metric: 0 for metric in self.metric_results}

        metric_data = dict()
        num = 0
        for val_data in dataloader:
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()
            visuals = self.get_current_visuals()
            sr_img = tensor2img([visuals['result']])
            metric_data['img'] = sr_img
            if 'gt' in visuals:
                metric_data['img2'] = tensor2img([visuals['gt']])
            if save_img:
                if self.opt['is_train']:
                    path = osp.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
                else:
                    suffix = self.opt['val'].get('suffix') or self.opt['name']
                    path = osp.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')
                imwrite(sr_img, path)
            if with_metrics:
                for name, opt_ in metrics_opt.items():
                    if opt_['type'] == PARSING_METRIC:
                        self.metric_results[name] += self.parsing_error()
                    else:
                        self.metric_results[name] += calculate_metric(metric_data, opt_)
            for attr in ('lq', 'gt', 'output', 'output_parsing', 'parsing_gt', 'masks'):
                if hasattr(self, attr):
                    delattr(self, attr)
            num += 1

        if with_metrics:
            for metric in self.metric_results:
                self.metric_results[metric] /= max(num, 1)
                self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _initialize_best_metric_results(self, dataset_name):
        """As BaseModel's, with ``parsing_mse`` lower-is-better unless the metric options say otherwise."""
        for opt_ in (self.opt['val'].get('metrics') or {}).values():
            if opt_['type'] == PARSING_METRIC:
                opt_.setdefault('better', 'lower')
        super()._initialize_best_metric_results(dataset_name)
