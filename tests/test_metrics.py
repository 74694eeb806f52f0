"""Face metrics (fsr_metrics/face_metric.py): best value for an image with itself, worse for a degraded image, identity
of two people lower than of one, VIF against sewar (an independent implementation of Sheikh & Bovik's vifp_mscale), and
the local-weights code paths of LPIPS and FID (tiny/random files made here, never reported as metrics)."""
import cv2
import numpy as np
import os
import pytest
import torch

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.metrics import calculate_metric  # noqa: E402
from basicsr.metrics.psnr_ssim import calculate_ssim  # noqa: E402
from basicsr.utils.registry import METRIC_REGISTRY  # noqa: E402

from fsr_metrics import face_metric as fm  # noqa: E402


def _largest_face_crop(rgb, size=128):
    """Crop the highest-scoring dlib face (box enlarged 1.6x: aligned FSR crops show the whole face), size x size."""
    import dlib
    boxes, scores, _ = dlib.get_frontal_face_detector().run(rgb, 0)
    b = boxes[int(np.argmax(scores))]
    cx, cy, half = (b.left() + b.right()) / 2, (b.top() + b.bottom()) / 2, 0.8 * max(b.width(), b.height())
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    crop = rgb[max(y0, 0):y0 + int(2 * half), max(x0, 0):x0 + int(2 * half)]
    return cv2.cvtColor(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope='module')
def faces():
    """Two real faces (BGR uint8 128x128) from photos that installed packages ship: the astronaut and Grace Hopper."""
    import matplotlib
    from skimage import data
    hopper = cv2.imread(os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))[..., ::-1]
    return {
        'astronaut': _largest_face_crop(data.astronaut()),
        'hopper': _largest_face_crop(np.ascontiguousarray(hopper))
    }


def _blur(img, sigma=1.2):
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _jpeg(img, quality=40):
    return cv2.imdecode(cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _bicubic_degraded(img, scale=4):
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_registered_under_unique_names():
    for name in ('calculate_face_vif', 'calculate_face_lpips', 'calculate_face_mps', 'calculate_face_identity',
                 'calculate_face_landmark'):
        assert METRIC_REGISTRY.get(name) is getattr(fm, name)


def test_vif_matches_sewar_and_orders_degradations(faces):
    from sewar.full_ref import vifp
    hr = faces['astronaut']
    rng = np.random.default_rng(0)
    noisy = np.clip(hr + rng.normal(0, 8, hr.shape), 0, 255).astype(np.uint8)
    values = {}
    for name, img in (('self', hr), ('blur', _blur(hr)), ('bicubic', _bicubic_degraded(hr)), ('noise', noisy)):
        ours = fm.calculate_face_vif(img, hr)  # BGR, all channels: sewar averages channels too
        ref = vifp(hr.astype(np.float64), img.astype(np.float64))
        assert ours == pytest.approx(ref, rel=1e-7, abs=1e-9), name
        # the Y-channel protocol through BasicSR's calling convention (data dict + options)
        values[name] = calculate_metric({
            'img': img,
            'img2': hr
        }, {
            'type': 'calculate_face_vif',
            'crop_border': 4,
            'test_y_channel': True,
            'better': 'higher'
        })
    assert values['self'] == pytest.approx(1.0, abs=1e-6)
    assert values['blur'] < values['self'] and values['bicubic'] < values['blur']
    assert values['noise'] < values['self']
    assert fm.calculate_face_vif(hr[:41, :41], hr[:41, :41]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='at least 41x41'):
        fm.calculate_face_vif(hr[:40, :40], hr[:40, :40])


def _random_trunk(seed):
    """A torchvision AlexNet trunk (features only, random: a code-path check, NOT the LPIPS metric)."""
    import torchvision
    torch.manual_seed(seed)
    return {f'features.{k}': v for k, v in torchvision.models.alexnet().features.state_dict().items()}


def test_lpips_needs_local_trunk(tmp_path, faces):
    hr = faces['astronaut']
    with pytest.raises(FileNotFoundError, match='lpips_trunk_path'):
        fm.calculate_face_lpips(hr, hr)
    with pytest.raises(FileNotFoundError, match='alexnet-owt-7be5be79.pth'):
        fm.calculate_face_lpips(hr, hr, lpips_trunk_path=str(tmp_path / 'missing.pth'))
    bad = tmp_path / 'bad.pth'
    torch.save({'features.0.weight': torch.zeros(64, 3, 11, 11)}, str(bad))
    with pytest.raises(ValueError, match='features.0.bias'):
        fm.calculate_face_lpips(hr, hr, lpips_trunk_path=str(bad), device='cpu')


def test_lpips_and_mps_load_the_trunk_file(tmp_path, faces):
    hr = faces['astronaut']
    trunk_a = _random_trunk(seed=1)
    torch.save(trunk_a, str(tmp_path / 'alex_a.pth'))
    torch.save({k: v.flip(0) if v.ndim == 4 else v for k, v in trunk_a.items()}, str(tmp_path / 'alex_b.pth'))
    metric = fm.get_lpips(str(tmp_path / 'alex_a.pth'), 'alex', 'cpu')
    assert torch.equal(metric.model.net.slice1[0].weight.cpu(), trunk_a['features.0.weight'])
    assert torch.equal(getattr(metric.model.net.slice5, '10').bias.cpu(), trunk_a['features.10.bias'])

    opts = {'lpips_trunk_path': str(tmp_path / 'alex_a.pth'), 'device': 'cpu'}
    assert fm.calculate_face_lpips(hr, hr, **opts) == pytest.approx(0, abs=1e-6)
    blur = fm.calculate_face_lpips(_blur(hr), hr, **opts)
    assert blur > 1e-4
    # another trunk file gives another value: the file's weights are used
    other = fm.calculate_face_lpips(_blur(hr), hr, lpips_trunk_path=str(tmp_path / 'alex_b.pth'), device='cpu')
    assert abs(other - blur) > 1e-6

    assert fm.calculate_face_mps(hr, hr, crop_border=4, test_y_channel=True, **opts) == pytest.approx(1, abs=1e-6)
    mps = fm.calculate_face_mps(_blur(hr), hr, crop_border=4, test_y_channel=True, **opts)
    ssim = calculate_ssim(_blur(hr), hr, crop_border=4, test_y_channel=True)
    assert mps == pytest.approx(0.5 * (ssim + 1 - blur))
    assert mps < 1


def test_identity_similarity_one_person_above_two_people(faces):
    a, h = faces['astronaut'], faces['hopper']
    assert fm.calculate_face_identity(a, a) == pytest.approx(1, abs=1e-6)
    same_a = fm.calculate_face_identity(_jpeg(_blur(a, 0.8)), a)
    same_h = fm.calculate_face_identity(_jpeg(_blur(h, 0.8)), h)
    different = fm.calculate_face_identity(a, h)
    assert min(same_a, same_h) > 0.95
    assert min(same_a, same_h) > different + 0.05


def test_landmark_distance(faces):
    a = faces['astronaut']
    assert fm.calculate_face_landmark(a, a) == 0
    assert fm.calculate_face_landmark(_bicubic_degraded(a, 8), a) > 0
    shifted = np.roll(a, 4, axis=1)  # the face moves 4 px to the right: the landmarks must follow
    assert fm.calculate_face_landmark(shifted, a) > fm.calculate_face_landmark(_jpeg(a, 90), a)


def test_dlib_models_dir_missing_is_clear(tmp_path, faces):
    with pytest.raises(FileNotFoundError, match='dlib_models_dir'):
        fm.calculate_face_identity(faces['astronaut'], faces['astronaut'], dlib_models_dir=str(tmp_path))


def test_fid_needs_local_weights_and_is_zero_for_the_same_set(tmp_path, faces):
    import torchvision
    with pytest.raises(FileNotFoundError, match='fid_weights_path'):
        fm.FIDCalculator(str(tmp_path / fm.FID_WEIGHTS_FILE))
    # random weights with the FID Inception's layout (FIDInception blocks have torchvision's parameters): code path only
    torch.manual_seed(0)
    net = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    weights = tmp_path / 'random_inception.pth'
    torch.save(net.state_dict(), str(weights))
    fid = fm.FIDCalculator(str(weights), device='cpu')
    assert torch.equal(fid.model.blocks[0][0].conv.weight, net.Conv2d_1a_3x3.conv.weight)
    imgs = [faces['astronaut'], faces['hopper']]  # 2 s per image on 2 CPU cores (299x299 Inception)
    feats = fid.features(imgs)
    assert feats.shape == (2, 2048)
    degraded = fid.features([_bicubic_degraded(im, 8) for im in imgs])
    assert abs(fid.frechet(feats, feats)) < 1e-6 * fid.frechet(feats, degraded)


@pytest.mark.parametrize('n1,n2', [(5, 7), (40, 30)])
def test_frechet_distance_matches_pytorch_fid(n1, n2):
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(n1)
    f1 = rng.normal(0, 1, (n1, 6)) @ rng.normal(0, 1, (6, 6))
    f2 = rng.normal(0.5, 2, (n2, 6))
    ref = calculate_frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fm.FIDCalculator.frechet(f1, f2) == pytest.approx(ref, rel=1e-6)


def test_non_finite_lpips_trunk_and_fid_weights_are_refused(tmp_path, faces):
    """Issue 23: a weights file with NaN or Inf is refused where it is loaded, naming the file and the tensor (a NaN
    weight would turn every distance into NaN, or into a number computed from garbage)."""
    import torchvision
    hr = faces['astronaut']
    trunk = _random_trunk(seed=2)
    trunk['features.8.weight'][0, 0, 0, 0] = float('nan')
    torch.save(trunk, str(tmp_path / 'alex_nan.pth'))
    with pytest.raises(fm.BrokenWeightsError, match=r'alex_nan\.pth.*features\.8\.weight \(1 of'):
        fm.calculate_face_lpips(hr, hr, lpips_trunk_path=str(tmp_path / 'alex_nan.pth'), device='cpu')
    net = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    state = net.state_dict()
    state['Conv2d_1a_3x3.conv.weight'][0, 0, 0, 0] = float('inf')
    torch.save(state, str(tmp_path / 'inception_inf.pth'))
    with pytest.raises(fm.BrokenWeightsError, match=r'inception_inf\.pth.*Conv2d_1a_3x3\.conv\.weight'):
        fm.FIDCalculator(str(tmp_path / 'inception_inf.pth'), device='cpu')
    with pytest.raises(ValueError, match='Image shapes are different'):  # a ValueError, not an assert (python -O)
        fm.calculate_face_vif(hr, hr[:64])
