"""Face super-resolution metrics, registered in BasicSR's ``METRIC_REGISTRY`` for ``val.metrics`` in option files.

Every registered function follows BasicSR's calling convention ``calculate_x(img, img2, **kwargs)``: ``img`` is the
super-resolved image and ``img2`` the ground truth (HR), both ``(H, W, C)`` arrays in ``[0, 255]`` (uint8 or float) in
**BGR** channel order, as :meth:`basicsr.models.sr_model.SRModel.nondist_validation` passes them (``tensor2img``).
PSNR and SSIM are BasicSR's own ``calculate_psnr`` / ``calculate_ssim``; they are not duplicated here.

Registered names (``better`` is what to put in the option's ``better:`` key):

===========================  ======  =========================================================================
``calculate_face_vif``       higher  Pixel-domain VIF (Sheikh & Bovik 2006, ``vifp_mscale``), as in AMINet.
``calculate_face_lpips``     lower   LPIPS (Zhang et al. 2018), ``lpips`` package, trunk from a local file.
``calculate_face_mps``       higher  Mean Perceptual Score of TANet, eq. (18): ``0.5 * (SSIM + 1 - LPIPS)``.
``calculate_face_identity``  higher  Cosine of dlib's 128-d face descriptors of SR and HR (W-Net, TANet).
``calculate_face_landmark``  lower   Mean distance (HR pixels) of dlib's 68 landmarks on SR and HR (W-Net).
===========================  ======  =========================================================================

FID is a property of two *sets* of images, so it is not a per-image BasicSR metric: :class:`FIDCalculator` computes it
for ``fsr-benchmark``, with pytorch-fid's Inception network and its weights file
``pt_inception-2015-12-05-6726825d.pth`` (the TF-Inception weights published FIDs use) from a local path.

Pretrained files are never downloaded and never replaced by random weights: a missing file raises ``FileNotFoundError``
naming the option and the expected file; a file whose weights hold NaN or Inf raises :class:`BrokenWeightsError` (a
``ValueError``) naming the file and the tensor where it is loaded, so no score is ever computed with broken weights.

* LPIPS: ``lpips_trunk_path`` = torchvision's ImageNet state_dict of the trunk, ``alexnet-owt-7be5be79.pth``
  (``lpips_net: alex``, the default of the LPIPS paper) or ``vgg16-397923af.pth`` (``lpips_net: vgg``); a file holding
  only the ``features.*`` entries works too. The small linear layers ship with the ``lpips`` wheel.
* dlib: ``dlib_models_dir`` = a folder with ``shape_predictor_5_face_landmarks.dat``,
  ``shape_predictor_68_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat``; by default the folder of
  the ``face_recognition_models`` package.

Face box for the dlib metrics: dlib's HOG detector runs on the HR image (upsampled once) and the highest-scoring face is
used for *both* images; when it finds none (tightly aligned crops), the whole image is the box. Using one box for both
images makes the landmark distance measure what the predictor sees, not a detector's jitter.

Example (options file)::

    val:
      metrics:
        psnr: {type: calculate_psnr, crop_border: 4, test_y_channel: true}
        vif: {type: calculate_face_vif, crop_border: 4, test_y_channel: true}
        lpips: {type: calculate_face_lpips, lpips_trunk_path: pretrained/alexnet-owt-7be5be79.pth, better: lower}
        identity: {type: calculate_face_identity}
"""
import cv2
import importlib.util
import numpy as np
import os
import torch
import warnings
from basicsr.metrics.metric_util import reorder_image, to_y_channel
from basicsr.metrics.psnr_ssim import calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY

from fsr_utils.safety import check_finite_state_dict

LPIPS_TRUNK_FILES = {'alex': 'alexnet-owt-7be5be79.pth', 'vgg': 'vgg16-397923af.pth'}
FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
DLIB_FILES = {
    'sp5': 'shape_predictor_5_face_landmarks.dat',
    'sp68': 'shape_predictor_68_face_landmarks.dat',
    'rec': 'dlib_face_recognition_resnet_model_v1.dat'
}

_CACHE = {}


class BrokenWeightsError(ValueError):
    """A weights file (LPIPS trunk, FID Inception) with NaN or Inf values; the message names the file and tensor."""


def _check_finite(state, source):
    try:
        return check_finite_state_dict(state, source)
    except ValueError as err:
        raise BrokenWeightsError(str(err)) from None


def _prepare(img, img2, crop_border=0, input_order='HWC', test_y_channel=False):
    """Reorder, crop and (optionally) convert to Y exactly as BasicSR's PSNR/SSIM do; returns float64 HWC arrays."""
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape}, {img2.shape}.')
    img = reorder_image(img, input_order=input_order)
    img2 = reorder_image(img2, input_order=input_order)
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel:
        img = to_y_channel(img)
        img2 = to_y_channel(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def _default_device(device=None):
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


# ----------------------------------------------------------------------------------------------------------------- VIF
def _gaussian_window(size, sigma):
    """MATLAB ``fspecial('gaussian', size, sigma)``."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax[:, None]**2 + ax[None, :]**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img, win):
    """``filter2(win, img, 'valid')`` for a symmetric window."""
    r = win.shape[0] // 2
    return cv2.filter2D(img, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]


def vifp_single(ref, dist, sigma_nsq=2.0):
    """Pixel-domain VIF of one channel (Sheikh & Bovik, IEEE TIP 2006; their ``vifp_mscale.m``).

    Four scales with Gaussian windows of size ``2^(5-s)+1`` and sigma ``size/5``; between scales the images are
    low-passed and decimated by 2. The Gaussian-scale-mixture model gives, per window, the gain
    ``g = sigma_rd / sigma_r^2`` and the distortion noise ``sv^2 = sigma_d^2 - g * sigma_rd``;
    VIF = sum log(1 + g^2 sigma_r^2 / (sv^2 + sigma_n^2)) / sum log(1 + sigma_r^2 / sigma_n^2) over windows and scales.

    Args:
        ref (ndarray): Reference (HR) channel, (H, W), [0, 255].
        dist (ndarray): Distorted (SR) channel, same shape.
        sigma_nsq (float): Variance of the visual noise (2, as in the reference code).

    Returns:
        float: VIF (1 for identical images; lower is worse; above 1 for contrast enhancement).
    """
    eps = 1e-10
    ref = np.asarray(ref, dtype=np.float64)
    dist = np.asarray(dist, dtype=np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        n = 2**(4 - scale + 1) + 1
        win = _gaussian_window(n, n / 5)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        if min(ref.shape) < n:
            raise ValueError('VIF needs images of at least 41x41 pixels after the border crop (four scales of valid '
                             f'filtering); got {ref.shape} at scale {scale}.')
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        sigma1_sq = _filter_valid(ref * ref, win) - mu1 * mu1
        sigma2_sq = _filter_valid(dist * dist, win) - mu2 * mu2
        sigma12 = _filter_valid(ref * dist, win) - mu1 * mu2
        sigma1_sq = np.maximum(sigma1_sq, 0)
        sigma2_sq = np.maximum(sigma2_sq, 0)

        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < eps
        g[flat_ref] = 0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0
        flat_dist = sigma2_sq < eps
        g[flat_dist] = 0
        sv_sq[flat_dist] = 0
        neg = g < 0
        sv_sq[neg] = sigma2_sq[neg]
        g[neg] = 0
        sv_sq = np.maximum(sv_sq, eps)

        num += np.sum(np.log10(1 + g * g * sigma1_sq / (sv_sq + sigma_nsq)))
        den += np.sum(np.log10(1 + sigma1_sq / sigma_nsq))
    return float(num / den) if den > 0 else float('nan')


@METRIC_REGISTRY.register()
def calculate_face_vif(img, img2, crop_border=0, input_order='HWC', test_y_channel=False, sigma_nsq=2.0, **kwargs):
    """Pixel-domain VIF of the SR image ``img`` against the HR image ``img2`` (higher is better, 1 if identical).

    Crop and Y conversion are BasicSR's (as for PSNR/SSIM); for three channels the mean over channels is returned.

    Args:
        img (ndarray): SR image, [0, 255].
        img2 (ndarray): HR (reference) image, [0, 255].
        crop_border (int): Pixels cropped at each edge.
        input_order (str): 'HWC' or 'CHW'.
        test_y_channel (bool): Evaluate on the Y channel of YCbCr.
        sigma_nsq (float): Visual noise variance.

    Returns:
        float: VIF.
    """
    img, img2 = _prepare(img, img2, crop_border, input_order, test_y_channel)
    return float(np.mean([vifp_single(img2[..., c], img[..., c], sigma_nsq) for c in range(img.shape[2])]))


# --------------------------------------------------------------------------------------------------------------- LPIPS
def _require_file(path, option, expected):
    if not path:
        raise FileNotFoundError(f'Option `{option}` is not set: give the local path of {expected} (no download is '
                                'attempted and random weights are never used).')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Option `{option}`: file {path} does not exist (expected {expected}).')


class LPIPSMetric:
    """LPIPS (``lpips`` package, v0.1 linear layers shipped with it) with the trunk loaded from a local file.

    Args:
        trunk_path (str): torchvision ImageNet state_dict of the trunk (see module docstring).
        net (str): 'alex' (default of the LPIPS paper) or 'vgg'.
        device (str | torch.device | None): Device; CUDA when available by default.
    """

    def __init__(self, trunk_path, net='alex', device=None):
        import lpips
        if net not in LPIPS_TRUNK_FILES:
            raise ValueError(f'LPIPS net must be one of {sorted(LPIPS_TRUNK_FILES)}, got {net}.')
        _require_file(trunk_path, 'lpips_trunk_path', f'torchvision\'s {LPIPS_TRUNK_FILES[net]}')
        self.device = _default_device(device)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torchvision's deprecation warning for lpips' `pretrained=` argument
            # pnet_rand=True only builds the trunk without downloading; its weights are replaced just below.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        load_lpips_trunk(model, trunk_path)
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, img, img2):
        """LPIPS distance of two BGR ``(H, W, 3)`` images in [0, 255]."""
        x = _bgr_to_tensor(img, self.device) * 2 - 1
        y = _bgr_to_tensor(img2, self.device) * 2 - 1
        return float(self.model(x, y).mean())


def load_lpips_trunk(model, trunk_path):
    """Copy the ``features.N.*`` tensors of a torchvision state_dict into the slices of ``lpips.LPIPS(...).net``.

    Raises:
        ValueError: if the file lacks a trunk tensor, a shape differs (wrong network) or a tensor holds NaN or Inf.
    """
    state = torch.load(trunk_path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'{trunk_path} holds a {type(state).__name__}, not a torchvision state_dict.')
    _check_finite(state, f'LPIPS trunk {trunk_path}')
    expected = {}
    for slice_name, block in model.net.named_children():
        for idx, module in block.named_children():
            for pname, param in module.state_dict().items():
                expected[f'features.{idx}.{pname}'] = f'{slice_name}.{idx}.{pname}'
    new_state = {}
    for key, target in expected.items():
        if key not in state:
            raise ValueError(f'{trunk_path} is not a torchvision {model.pnet_type} state_dict: `{key}` is missing.')
        new_state[target] = state[key]
    model.net.load_state_dict(new_state, strict=True)


def _bgr_to_tensor(img, device):
    img = np.asarray(img, dtype=np.float32) / 255.
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., ::-1].copy()  # BGR -> RGB
    return torch.from_numpy(img.transpose(2, 0, 1))[None].to(device)


def _crop(img, crop_border):
    return img[crop_border:-crop_border, crop_border:-crop_border, ...] if crop_border else img


def get_lpips(trunk_path, net='alex', device=None):
    """A cached :class:`LPIPSMetric` (one per file, trunk and device)."""
    key = ('lpips', os.path.abspath(trunk_path) if trunk_path else None, net, str(_default_device(device)))
    if key not in _CACHE:
        _CACHE[key] = LPIPSMetric(trunk_path, net=net, device=device)
    return _CACHE[key]


@METRIC_REGISTRY.register()
def calculate_face_lpips(img,
                         img2,
                         lpips_trunk_path=None,
                         lpips_net='alex',
                         crop_border=0,
                         input_order='HWC',
                         device=None,
                         **kwargs):
    """LPIPS between the SR image ``img`` and the HR image ``img2`` (RGB, lower is better, 0 for identical images).

    Args:
        img (ndarray): SR image, BGR, [0, 255].
        img2 (ndarray): HR image, BGR, [0, 255].
        lpips_trunk_path (str): Local torchvision trunk weights (required).
        lpips_net (str): 'alex' or 'vgg'.
        crop_border (int): Pixels cropped at each edge (0 by default: LPIPS is usually computed on the whole face).
        input_order (str): 'HWC' or 'CHW'.
        device (str | None): Device (CUDA when available by default).

    Returns:
        float: LPIPS distance.
    """
    img, img2 = reorder_image(img, input_order), reorder_image(img2, input_order)
    return get_lpips(lpips_trunk_path, lpips_net, device)(_crop(img, crop_border), _crop(img2, crop_border))


@METRIC_REGISTRY.register()
def calculate_face_mps(img,
                       img2,
                       lpips_trunk_path=None,
                       lpips_net='alex',
                       crop_border=0,
                       input_order='HWC',
                       test_y_channel=False,
                       lpips_crop_border=0,
                       device=None,
                       **kwargs):
    """Mean Perceptual Score of TANet, eq. (18): ``0.5 * (SSIM + (1 - LPIPS))`` (higher is better, 1 at best).

    SSIM is BasicSR's ``calculate_ssim`` with ``crop_border``/``test_y_channel``; LPIPS is :func:`calculate_face_lpips`
    with ``lpips_crop_border``.
    """
    ssim = calculate_ssim(img, img2, crop_border=crop_border, input_order=input_order, test_y_channel=test_y_channel)
    lp = calculate_face_lpips(
        img, img2, lpips_trunk_path, lpips_net, crop_border=lpips_crop_border, input_order=input_order, device=device)
    return mps_from(ssim, lp)


def mps_from(ssim, lpips_value):
    """TANet eq. (18)."""
    return 0.5 * (float(ssim) + 1 - float(lpips_value))


# ---------------------------------------------------------------------------------------------------------------- dlib
def default_dlib_models_dir():
    """The ``models/`` folder of the ``face_recognition_models`` package (None when it is not installed)."""
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], 'models')


class DlibFace:
    """dlib's HOG face detector, 5/68-point shape predictors and 128-d ResNet face descriptor.

    Args:
        models_dir (str | None): Folder with the ``.dat`` files (default: ``face_recognition_models``'s folder).
    """

    def __init__(self, models_dir=None):
        import dlib
        models_dir = models_dir or default_dlib_models_dir()
        if models_dir is None:
            raise FileNotFoundError(
                'Option `dlib_models_dir` is not set and the face_recognition_models package is not '
                f'installed: give a folder with {", ".join(DLIB_FILES.values())}.')
        paths = {k: os.path.join(models_dir, f) for k, f in DLIB_FILES.items()}
        for path in paths.values():
            _require_file(path, 'dlib_models_dir', os.path.basename(path))
        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(paths['sp5'])
        self.sp68 = dlib.shape_predictor(paths['sp68'])
        self.rec = dlib.face_recognition_model_v1(paths['rec'])
        self._dlib = dlib

    @staticmethod
    def to_rgb(img):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = np.clip(np.round(img), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img[..., ::-1])

    def face_box(self, rgb):
        """Highest-scoring HOG detection (image upsampled once), or the whole image when none is found."""
        boxes, scores, _ = self.detector.run(rgb, 1)
        if len(boxes):
            return boxes[int(np.argmax(scores))]
        return self._dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)

    def descriptor(self, rgb, box):
        """128-d descriptor, normalised to unit length."""
        shape = self.sp5(rgb, box)
        d = np.array(self.rec.compute_face_descriptor(rgb, shape), dtype=np.float64)
        return d / (np.linalg.norm(d) + 1e-12)

    def landmarks68(self, rgb, box):
        shape = self.sp68(rgb, box)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def get_dlib(models_dir=None):
    """A cached :class:`DlibFace`."""
    key = ('dlib', os.path.abspath(models_dir) if models_dir else None)
    if key not in _CACHE:
        _CACHE[key] = DlibFace(models_dir)
    return _CACHE[key]


@METRIC_REGISTRY.register()
def calculate_face_identity(img, img2, dlib_models_dir=None, input_order='HWC', **kwargs):
    """Identity similarity: cosine of dlib's 128-d descriptors of SR (``img``) and HR (``img2``), higher is better.

    Both descriptors use the face box found on the HR image (module docstring). 1 for identical images. (dlib's own
    same-person rule is a Euclidean distance below 0.6 between the raw descriptors, whose norm is about 1.4.)
    """
    face = get_dlib(dlib_models_dir)
    sr = face.to_rgb(reorder_image(img, input_order))
    hr = face.to_rgb(reorder_image(img2, input_order))
    box = face.face_box(hr)
    return float(np.dot(face.descriptor(sr, box), face.descriptor(hr, box)))


@METRIC_REGISTRY.register()
def calculate_face_landmark(img, img2, dlib_models_dir=None, input_order='HWC', **kwargs):
    """Mean Euclidean distance in pixels between dlib's 68 landmarks on SR (``img``) and HR (``img2``), lower is better.

    Both predictions start from the face box found on the HR image (module docstring).
    """
    face = get_dlib(dlib_models_dir)
    sr = face.to_rgb(reorder_image(img, input_order))
    hr = face.to_rgb(reorder_image(img2, input_order))
    box = face.face_box(hr)
    return float(np.linalg.norm(face.landmarks68(sr, box) - face.landmarks68(hr, box), axis=1).mean())


# ----------------------------------------------------------------------------------------------------------------- FID
class FIDCalculator:
    """Frechet Inception Distance between two sets of images, with pytorch-fid's network and local weights.

    The network is ``pytorch_fid.inception.InceptionV3([3])`` (2048-d pool features, input resized to 299x299 bilinear,
    the TF-Inception port that published FIDs use); its weights come from ``fid_weights_path`` =
    ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release file) instead of a download. FID is only meaningful
    with thousands of images per set (the covariance is 2048x2048).

    Args:
        fid_weights_path (str): Local pytorch-fid Inception weights.
        device (str | torch.device | None): Device (CUDA when available by default).
        batch_size (int): Batch size of the feature extraction.
    """

    def __init__(self, fid_weights_path, device=None, batch_size=16):
        _require_file(fid_weights_path, 'fid_weights_path', f'pytorch-fid\'s {FID_WEIGHTS_FILE}')
        try:
            from pytorch_fid import inception as fid_inception
        except ImportError as err:
            raise ImportError('FID needs the pytorch-fid package: pip install pytorch-fid') from err
        self.device = _default_device(device)
        self.batch_size = batch_size

        def local_weights(*args, **kwargs):
            state = torch.load(fid_weights_path, map_location='cpu', weights_only=True)
            return _check_finite(state, f'FID weights {fid_weights_path}')

        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = local_weights  # pytorch-fid's builder, fed the local file
        try:
            model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        finally:
            fid_inception.load_state_dict_from_url = original
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def features(self, images):
        """2048-d features of a list of BGR ``(H, W, 3)`` images in [0, 255]; returns an (N, 2048) float64 array."""
        feats = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.cat([_bgr_to_tensor(im, self.device) for im in images[i:i + self.batch_size]])
            feats.append(self.model(batch)[0].squeeze(-1).squeeze(-1).double().cpu().numpy())
        return np.concatenate(feats)

    @staticmethod
    def frechet(feats1, feats2):
        """Frechet distance of the Gaussians fitted to two feature sets (the FID formula of pytorch-fid).

        ``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2))``, with ``Tr(sqrt(S1 S2))`` computed exactly as the
        nuclear norm of ``L1^T L2`` for factors ``S = L L^T`` (centred features when there are fewer samples than
        dimensions, otherwise the eigen-decomposition), which avoids ``scipy.linalg.sqrtm`` on singular 2048x2048
        products (slow and inaccurate for small sets).
        """
        feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
        mu1, mu2 = feats1.mean(0), feats2.mean(0)
        l1, l2 = _cov_factor(feats1), _cov_factor(feats2)
        tr_sqrt = np.linalg.svd(l1.T @ l2, compute_uv=False).sum()
        return float(np.sum((mu1 - mu2)**2) + np.sum(l1 * l1) + np.sum(l2 * l2) - 2 * tr_sqrt)

    def __call__(self, images, images2):
        """FID between two lists of BGR images (lower is better, 0 for the same set)."""
        return self.frechet(self.features(images), self.features(images2))


def _cov_factor(feats):
    """A factor ``L`` with ``L @ L.T`` = the sample covariance of ``feats`` (N, D), of shape (D, min(N, D))."""
    n, d = feats.shape
    if n < 2:
        raise ValueError('FID needs at least 2 images per set.')
    centred = feats - feats.mean(0)
    if n - 1 < d:
        return centred.T / np.sqrt(n - 1)
    eigval, eigvec = np.linalg.eigh(centred.T @ centred / (n - 1))
    return eigvec * np.sqrt(np.clip(eigval, 0, None))
