"""fsr-infer on real photos: at the network's scale the restored faces beat bicubic (issue 14), and a default run on a
normal photo never returns faces worse than the input.

Network: :func:`fsr_tools.infer_quality.fit_linear_sr`, a linear x4 up-sampler fitted in the test by least squares on
scikit-image pictures with no face in them (so every test face is held out), registered for the test only and saved as a
BasicSR checkpoint, then run through the ``fsr-infer`` command line. It beats bicubic by about half a dB on aligned
faces; the tool must keep that gain (the double resampling of earlier versions turned it into a loss).

Photos: scikit-image's astronaut and matplotlib's Grace Hopper (and insightface's group photo t1.jpg when
``insightface`` is installed), each face cut out and resized so that it fills the 128x128 HR crop (at 0.93, 1 and 1.07
times that scale, and mirrored: 6 photos per face), shrunk 4x with MATLAB bicubic as fsr-prepare's LR.
"""
import cv2
import json
import numpy as np
import os
import pytest
import torch
import yaml

from fsr_tools import infer_cli
from fsr_tools.infer_quality import LinearSR, degrade, face_gains, face_test_photos, fit_linear_sr

ARCH = 'InferQualityTestLinearSR'


@pytest.fixture(scope='module')
def linear_net(tmp_path_factory):
    from basicsr.utils.registry import ARCH_REGISTRY

    from fsr_utils import plugin
    plugin.load()
    root = tmp_path_factory.mktemp('linear')
    net = fit_linear_sr()
    ckpt = root / 'linear_x4.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    opt = dict(name='linear', scale=4, network_g=dict(type=ARCH, scale=4, k=7), path=dict(pretrain_network_g=str(ckpt)))
    opt_path = root / 'linear_x4.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    ARCH_REGISTRY._do_register(ARCH, type(ARCH, (LinearSR, ), {}))
    yield dict(opt=str(opt_path), net=net)
    del ARCH_REGISTRY._obj_map[ARCH]


def _detect(img):
    from fsr_data.face_align import FaceDetector
    return [f for f in FaceDetector().detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]


def _real_photos():
    from fsr_data.demo import demo_photo_paths
    paths = demo_photo_paths()
    return {name: cv2.imread(paths[name]) for name in ('astronaut', 'grace_hopper', 't1') if name in paths}


def _run(opt, inp, out, *extra):
    code = infer_cli.main(['-i', str(inp), '-o', str(out), '--opt', opt, '--quiet', '--no-crops', *extra])
    with open(os.path.join(str(out), 'summary.json')) as f:
        return code, json.load(f)


@pytest.mark.slow
def test_restored_faces_beat_bicubic_on_real_photos(linear_net, tmp_path):
    small_dir = tmp_path / 'small'
    small_dir.mkdir()
    refs = {}
    for name, img in _real_photos().items():
        tests = face_test_photos(img, _detect(img), rels=(0.93, 1.0, 1.07), flips=(False, True))
        for k, t in enumerate(tests):
            stem = f'{name}_{k:02d}'
            refs[stem] = t['ref']
            cv2.imwrite(str(small_dir / f'{stem}.png'), degrade(t['ref'], 4))
    assert len(refs) >= 12
    code, summary = _run(linear_net['opt'], small_dir, tmp_path / 'out', '--upscale', '4', '--min-face', '12',
                         '--save-masks')
    assert code == 0 and summary['skipped'] == []
    gains = []
    for photo in summary['photos']:
        stem = os.path.splitext(os.path.basename(photo['input']))[0]
        small = cv2.imread(photo['input'])
        out, mask = cv2.imread(photo['output']), cv2.imread(photo['mask'], cv2.IMREAD_UNCHANGED)
        plain = cv2.resize(small, (small.shape[1] * 4, small.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(out[mask == 0], plain[mask == 0])  # outside the faces: the plain enlargement
        face = max(photo['faces'], key=lambda f: f['score'])  # one face per test photo
        if not stem.startswith('t1'):  # upright faces made at the template's scale: cut, no resampling
            assert face['plan'] == 'cut'
        for row in face_gains(out, plain, refs[stem], [face['box']], 4):
            gains.append(dict(row, stem=stem, plan=face['plan'], lr_scale=face['lr_scale'], roll=face['roll']))
    assert len(gains) == len(refs)
    kept = [r for r in gains if r['plan'] == 'kept']  # detected larger than the template: the plain enlargement
    assert all(r['gain'] == 0 for r in kept) and len(kept) <= 0.1 * len(gains)
    rows = [r for r in gains if r['plan'] != 'kept']
    g = np.array([r['gain'] for r in rows])
    for plan in ('cut', 'resampled'):
        sel = np.array([r['gain'] for r in rows if r['plan'] == plan])
        if len(sel):
            print(f'\n{plan}: {len(sel)} faces, mean gain {sel.mean():+.3f} dB, better on {(sel > 0).sum()}')
    print(f'Y-PSNR gain over bicubic on {len(g)} restored faces ({len(kept)} kept): mean {g.mean():+.3f} dB, min '
          f'{g.min():+.3f}, better on {(g > 0).sum()}/{len(g)}')
    assert (g > 0).mean() >= 0.8 and g.mean() > 0.2


def test_default_run_on_a_normal_photo_keeps_faces_as_sharp_as_the_input(linear_net, tmp_path):
    """Grace Hopper at her photo's own size (face ~220 px): the default run (--upscale = the network's scale) keeps
    the face as it is, enlarged like the background; forcing it through the 32x32 LR input blurs it."""
    photo = tmp_path / 'in' / 'grace_hopper.png'
    photo.parent.mkdir()
    img = _real_photos()['grace_hopper']
    cv2.imwrite(str(photo), img)
    code, summary = _run(linear_net['opt'], photo, tmp_path / 'out')
    assert code == 0
    (face, ) = summary['photos'][0]['faces']
    assert face['plan'] == 'kept' and face['lr_scale'] < 0.25
    out = cv2.imread(summary['photos'][0]['output'])
    plain = cv2.resize(img, (img.shape[1] * 4, img.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(out, plain)
    code, forced = _run(linear_net['opt'], photo, tmp_path / 'forced', '--restore-large-faces')
    out_forced = cv2.imread(forced['photos'][0]['output'])
    bx0, by0, bx1, by1 = [int(v) for v in face['box']]

    def sharpness(im, f=4):  # mean absolute Laplacian of the face box, measured at the input's resolution
        crop = im[by0 * f:by1 * f, bx0 * f:bx1 * f]
        if f > 1:
            crop = cv2.resize(crop, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
        return np.abs(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F)).mean()

    s_in = sharpness(img, 1)
    assert sharpness(out) >= 0.8 * s_in  # the plain enlargement keeps the input's detail (up to the x4 round trip)
    assert sharpness(out_forced) < 0.6 * sharpness(out)  # what the default protects from
