"""fsr-infer's geometry against independent computations: what an identity ("bicubic") network pastes, the face plans,
the LR window, and faces left as they are.

A "network" that returns the bicubic enlargement of its input (``F.interpolate``, A = -0.75 as OpenCV's INTER_CUBIC)
restores nothing, so the photo that fsr-infer returns must equal the plain bicubic enlargement of the photo (computed
here with ``cv2.resize``, independently of the tool) wherever a face was pasted: a flipped, shifted, grey or mis-scaled
paste makes these tests fail. No detector runs: the landmarks are placed by hand on the network's LR template.
"""
import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fsr_data.face_align import template_5pts
from fsr_tools.face_geometry import cut_window, lr_template, plan_face
from fsr_tools.restorer import FaceRestorer

HR = (128, 128)


class BicubicNet(torch.nn.Module):
    """x4 bicubic enlargement: the SR crop of an LR window is the plain enlargement of that window."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=4, mode='bicubic', align_corners=False)


def _photo():
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def _template_lr():
    # written out from fsr-prepare's HR template: an LR pixel x covers HR pixels 4x..4x+3, centre (x + 0.5) * 4 - 0.5
    return (template_5pts(*HR).astype(np.float64) + 0.5) / 4 - 0.5


def _landmarks(shift=(200.3, 80.2), scale=1., roll_deg=0.):
    t = _template_lr()
    th = np.deg2rad(roll_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return (t - t.mean(0)) @ R.T * scale + t.mean(0) + np.asarray(shift)


def _restore(landmarks, upscale=4, img=None, **kw):
    img = _photo() if img is None else img
    r = FaceRestorer(BicubicNet(), 4, HR, upscale=upscale, detector=None, **kw)
    out, faces, union = r.restore(img, faces=[dict(landmarks=landmarks)], union=True)
    plain = cv2.resize(img, (img.shape[1] * upscale, img.shape[0] * upscale), interpolation=cv2.INTER_CUBIC)
    return out, faces, union, plain


def test_lr_template_matches_the_hr_template_downsampled():
    assert np.allclose(lr_template(HR, 4), _template_lr())


def test_cut_face_with_identity_network_equals_plain_enlargement():
    out, (face, ), union, plain = _restore(_landmarks())
    assert face['plan'] == 'cut' and face['notes'][0].startswith('LR crop cut from the photo')
    # the window is placed at integer offsets: template centroid on the landmarks' centroid, rounded
    x0, y0 = 200, 80
    assert face['pasted_region'] == (x0 * 4, y0 * 4, (x0 + 32) * 4, (y0 + 32) * 4)
    assert np.allclose(face['lr'], cv2.cvtColor(_photo()[y0:y0 + 32, x0:x0 + 32], cv2.COLOR_BGR2RGB) / 255., atol=1e-6)
    diff = np.abs(out.astype(int) - plain).max(-1)
    assert (union == 255).sum() > 80 * 80
    assert diff[union == 255].max() <= 1  # the pasted face is the plain enlargement (a flip or shift is ~40 on average)
    assert np.array_equal(out[union == 0], plain[union == 0])  # outside the masks: exactly the plain enlargement
    assert diff.max() <= 3  # at the feathered border bicubic's edge handling differs by a few levels at most


def test_cut_face_at_another_upscale_is_pasted_on_the_output_grid():
    out, (face, ), union, plain = _restore(_landmarks(), upscale=2)
    assert face['plan'] == 'cut' and face['pasted_region'] == (400, 160, 464, 224)
    diff = np.abs(out.astype(int) - plain).max(-1)
    # x4 bicubic then area-shrunk x2 vs bicubic x2: close, not equal; a shift by one output pixel gives ~3x more
    assert diff[union == 255].mean() < 1.
    shifted = np.abs(np.roll(out, 1, axis=1).astype(int) - plain).max(-1)
    assert shifted[union == 255].mean() > 2 * diff[union == 255].mean() + 1


@pytest.mark.parametrize('kind', ['roll', 'small'])
def test_resampled_face_is_pasted_where_it_was_taken(kind):
    lm = _landmarks(scale=0.95, roll_deg=35) if kind == 'roll' else _landmarks(scale=0.7)
    out, (face, ), union, plain = _restore(lm)
    assert face['plan'] == 'resampled' and 'resampled once' in face['notes'][0]
    assert np.array_equal(out[union == 0], plain[union == 0])
    (y0, x0), (y1, x1) = np.argwhere(union == 255).min(0) - 8, np.argwhere(union == 255).max(0) + 9
    out, plain, inside = out[y0:y1, x0:x1], plain[y0:y1, x0:x1], union[y0:y1, x0:x1] == 255
    assert inside.sum() > 60 * 60
    err = {}
    for d in (-4, -2, 0, 2, 4):  # one LR pixel is 4 output pixels
        for axis in (0, 1):
            moved = np.roll(out, d, axis=axis)
            err[(d, axis)] = np.abs(moved.astype(int) - plain).max(-1)[inside].mean()
    assert min(err, key=err.get)[0] == 0 and err[(0, 0)] < 3  # two cubic resamplings: a small blur, no displacement
    flipped = out[:, ::-1]
    assert np.abs(flipped.astype(int) - plain).max(-1)[inside].mean() > 5 * err[(0, 0)]


def test_face_larger_than_the_lr_input_is_left_as_it_is():
    lm = _landmarks(shift=(150, 60), scale=3.)
    out, (face, ), union, plain = _restore(lm)
    assert face['plan'] == 'kept' and face['pasted_region'] is None and face['lr'] is None
    assert 'shrink the photo by about 3.00' in face['notes'][0]
    assert np.array_equal(out, plain) and not union.any()
    forced, (ff, ), funion, _ = _restore(lm, restore_large=True)
    assert ff['plan'] == 'resampled' and 'down-sampled x3.00' in ff['notes'][0]
    # forcing it loses detail: less high-frequency energy in the face than the plain enlargement
    inside = funion == 255

    def hf(im):
        return np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F))[inside].mean()

    assert hf(forced) < 0.7 * hf(plain)


@pytest.mark.parametrize('rho,roll,expected', [(1., 0., 'cut'), (1.14, 0, 'cut'), (1 / 1.14, 0, 'cut'),
                                               (1.17, 0, 'resampled'), (1 / 1.17, 0, 'kept'), (1., 9., 'cut'),
                                               (1., -11., 'resampled'), (1.05, 11., 'resampled'), (0.95, 11., 'kept'),
                                               (2., 0., 'resampled'), (0.5, 0., 'kept')])
def test_plan_tolerances(rho, roll, expected):
    # landmarks drawn 1 / rho times the template's size: the LR crop needs rho LR pixels per photo pixel
    lm = _landmarks(scale=1 / rho, roll_deg=roll)
    plan = plan_face(lm, _template_lr(), scale_tol=0.15, roll_tol=10.)
    assert plan['plan'] == expected
    assert plan['lr_scale'] == pytest.approx(rho, rel=1e-4) and plan['roll'] == pytest.approx(roll, abs=0.01)
    assert plan_face(lm, _template_lr(), 0.15, 10., restore_large=True)['plan'] == expected.replace('kept', 'resampled')


def test_cut_window_reflects_outside_the_photo():
    img = np.arange(7 * 9 * 3, dtype=np.uint8).reshape(7, 9, 3)
    padded = np.pad(img, ((5, 5), (5, 5), (0, 0)), mode='reflect')  # numpy's 'reflect' is OpenCV's REFLECT_101
    for x0, y0 in ((-3, -2), (6, 4), (2, 1), (-5, 3)):
        assert np.array_equal(cut_window(img, x0, y0, 6, 5), padded[y0 + 5:y0 + 10, x0 + 5:x0 + 11])


def test_face_at_the_photo_border_is_clipped():
    img = _photo()
    out, (face, ), union, plain = _restore(_landmarks(shift=(-10.2, 495.4)), img=img)
    assert face['plan'] == 'cut'
    x0, y0, x1, y1 = face['pasted_region']
    assert (x0, y1) == (0, 512 * 4) and x1 == (-10 + 32) * 4 and y0 == 495 * 4
    diff = np.abs(out.astype(int) - plain).max(-1)[union == 255]
    # the window reflects the photo beyond its border, cv2.resize replicates it: a few levels on the last pixels only
    assert diff.max() <= 6 and (diff <= 1).mean() > 0.95
