"""Synthetic degradations (fsr_data/degradations.py), FSRFaceDataset's ``degradation`` option and ``fsr-degrade``.

Each step is checked against a computation written here (OpenCV's Gaussian blur, area resize, JPEG; the noise's
standard deviation), the pipeline is deterministic under a seed and leaves the caller's random streams alone, every
option changes the output, and the dataset keeps the HR face, the label map and the masks aligned with the LR face it
makes.
"""
import cv2
import numpy as np
import os
import pytest
import random
import torch
from basicsr.utils import tensor2img
from helpers import make_face_dataset, synthetic_face

from fsr_data import degradations as deg
from fsr_data.face_dataset import FSRFaceDataset, component_masks

SCALE = 4
# every step off, area down-sampling: the plain LR face
PLAIN = dict(blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, resize_modes=['area'], resize_prob=[1.0])


def _hr(size=64, seed=0):
    return synthetic_face(size, size, np.random.default_rng(seed))[0]


def _opts(**kw):
    return deg.degradation_options(kw)


def _area(img, scale=SCALE):
    h, w = img.shape[:2]
    return cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


def test_each_step_against_opencv():
    hr = _hr()
    f = hr.astype(np.float32) / 255.
    clean = _area(f)
    # nothing: the area-resized face
    out = deg.degrade(hr, SCALE, _opts(**PLAIN), seed=0)
    assert np.array_equal(out, np.clip(np.round(clean * 255), 0, 255).astype(np.uint8))
    # isotropic Gaussian blur, sigma 1.5, 21x21 (BasicSR's kernel) == OpenCV's Gaussian blur
    o = _opts(**dict(
        PLAIN,
        blur_prob=1.0,
        kernel_list=['iso'],
        kernel_prob=[1],
        blur_sigma=[1.5, 1.5],
        kernel_size=[21, 21],
        sinc_prob=0.0))
    ref = _area(cv2.GaussianBlur(f, (21, 21), 1.5, borderType=cv2.BORDER_REFLECT_101))
    assert np.abs(deg.degrade(hr, SCALE, o, seed=3).astype(np.float32) - ref * 255).max() <= 0.51
    # JPEG at quality 40 == OpenCV's JPEG of the clean 8-bit LR face
    o = _opts(**dict(PLAIN, jpeg_prob=1.0, jpeg_range=[40, 40]))
    clean8 = np.clip(np.round(clean * 255), 0, 255).astype(np.uint8)
    ref = cv2.imdecode(cv2.imencode('.jpg', clean8, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    assert np.array_equal(deg.degrade(hr, SCALE, o, seed=1), ref)
    # Gaussian noise, sigma 10 on 0-255, colour: the residual's standard deviation (on a mid-grey face: no clipping)
    grey = np.full((256, 256, 3), 128, np.uint8)
    o = _opts(**dict(PLAIN, noise_prob=1.0, gaussian_noise_prob=1.0, noise_range=[10, 10], gray_noise_prob=0.0))
    res = deg.degrade(grey, SCALE, o, seed=2).astype(np.float32) - 128
    assert abs(res.std() - 10) < 0.5 and abs(res.mean()) < 0.5
    assert np.abs(res[..., 0] - res[..., 1]).mean() > 5  # independent per channel
    o = _opts(**dict(PLAIN, noise_prob=1.0, gaussian_noise_prob=1.0, noise_range=[10, 10], gray_noise_prob=1.0))
    res = deg.degrade(grey, SCALE, o, seed=2).astype(np.float32)
    assert np.array_equal(res[..., 0], res[..., 1]) and res.std() > 8  # gray noise: the same on every channel


def test_deterministic_under_a_seed_and_leaves_random_streams_alone():
    hr = _hr()
    for level in (None, 'mild', 'medium', 'severe'):
        o = deg.degradation_options(level)
        random.seed(123)
        np.random.seed(123)
        a = deg.degrade(hr, SCALE, o, seed=7)
        after = (random.random(), np.random.rand())
        random.seed(123)
        np.random.seed(123)
        expected = (random.random(), np.random.rand())
        assert after == expected  # the caller's streams continue as if nothing had been drawn
        assert np.array_equal(a, deg.degrade(hr, SCALE, o, seed=7))
        assert a.shape == (16, 16, 3) and a.dtype == np.uint8
        assert not np.array_equal(a, deg.degrade(hr, SCALE, o, seed=8))


def test_levels_are_ordered_by_severity():
    faces = [_hr(64, s) for s in range(6)]

    def err(level):
        o = deg.degradation_options(level)
        return np.mean([
            np.abs(deg.degrade(hr, SCALE, o, seed=i).astype(np.float32) - _area(hr).astype(np.float32)).mean()
            for i, hr in enumerate(faces)
        ])

    e = [err(level) for level in ('mild', 'medium', 'severe')]
    assert e[0] < e[1] < e[2], e


# option -> (value a, value b, options that make it matter)
BLUR = dict(PLAIN, blur_prob=1.0, sinc_prob=0.0)
NOISE = dict(PLAIN, noise_prob=1.0)
OPTION_CASES = {
    'blur_prob': (0.0, 1.0, dict(PLAIN)),
    'kernel_list': (['iso'], ['aniso'], dict(BLUR, kernel_prob=[1], blur_sigma=[1, 3])),
    'kernel_prob': ([1, 0], [0, 1], dict(BLUR, kernel_list=['iso', 'plateau_iso'])),
    'kernel_size': ([7, 7], [21, 21], dict(BLUR, blur_sigma=[3, 3])),
    'blur_sigma': ([0.5, 0.5], [2.5, 2.5], BLUR),
    'betag_range': ([0.5, 0.6], [3.5, 4.0], dict(BLUR, kernel_list=['generalized_iso'], kernel_prob=[1])),
    'betap_range': ([1.0, 1.1], [1.9, 2.0], dict(BLUR, kernel_list=['plateau_iso'], kernel_prob=[1])),
    'sinc_prob': (0.0, 1.0, BLUR),
    'resize_modes': (['area'], ['bicubic'], dict(PLAIN, resize_prob=[1])),
    'resize_prob': ([1, 0], [0, 1], dict(PLAIN, resize_modes=['area', 'bilinear'])),
    'noise_prob': (0.0, 1.0, dict(PLAIN)),
    'gaussian_noise_prob': (0.0, 1.0, NOISE),
    'noise_range': ([1, 2], [20, 30], dict(NOISE, gaussian_noise_prob=1.0)),
    'poisson_scale_range': ([0.05, 0.1], [2, 3], dict(NOISE, gaussian_noise_prob=0.0)),
    'gray_noise_prob': (0.0, 1.0, dict(NOISE, gaussian_noise_prob=1.0)),
    'jpeg_prob': (0.0, 1.0, dict(PLAIN)),
    'jpeg_range': ([30, 30], [90, 90], dict(PLAIN, jpeg_prob=1.0)),
}


def test_every_option_is_covered():
    assert set(OPTION_CASES) | {'seed'} == set(deg.DEFAULTS)


@pytest.mark.parametrize('name', sorted(OPTION_CASES))
def test_each_option_changes_the_output(name):
    a, b, base = OPTION_CASES[name]
    hr = _hr()
    oa, ob = _opts(**dict(base, **{name: a})), _opts(**dict(base, **{name: b}))
    diffs = [np.abs(deg.degrade(hr, SCALE, oa, s).astype(int) - deg.degrade(hr, SCALE, ob, s)).mean() for s in range(3)]
    assert max(diffs) > 0.5, diffs  # a mean change of at least half a grey level for some seed


def test_option_errors():
    with pytest.raises(ValueError, match='unknown degradation option.*jpeg_quality'):
        deg.degradation_options({'jpeg_quality': [30, 40]})
    with pytest.raises(ValueError, match="level 'hard'.*mild, medium, severe"):
        deg.degradation_options('hard')
    with pytest.raises(ValueError, match='noise_prob.*probability'):
        deg.degradation_options({'noise_prob': 2})
    with pytest.raises(ValueError, match='blur_sigma.*low <= high'):
        deg.degradation_options({'blur_sigma': [3, 1]})
    with pytest.raises(ValueError, match='kernel_size.*odd'):
        deg.degradation_options({'kernel_size': [6, 21]})
    with pytest.raises(ValueError, match='kernel_list.*gauss'):
        deg.degradation_options({'kernel_list': ['gauss'], 'kernel_prob': [1]})
    with pytest.raises(ValueError, match='resize_prob'):
        deg.degradation_options({'resize_prob': [1]})
    with pytest.raises(ValueError, match='not a multiple of the scale'):
        deg.degrade(np.zeros((30, 32, 3), np.uint8), 4, deg.degradation_options(None), 0)


# ----------------------------------------------------------------------------------------------------- the dataset
def _dataset(data, phase='train', degradation=True, **kw):
    opt = dict(
        dataroot_gt=data['hr'],
        dataroot_parsing=data['parsing'],
        io_backend={'type': 'lmdb'},
        scale=SCALE,
        phase=phase,
        degradation=degradation)
    opt.update(kw)
    return FSRFaceDataset(opt)


def test_dataset_validation_is_seeded_per_face(tmp_path):
    data = make_face_dataset(tmp_path / 'd', num=3, hr_size=(32, 32), parsing=True)
    a = _dataset(data, 'val', 'medium')
    b = _dataset(data, 'val', {'level': 'medium'})
    random.seed(0)
    first = [a[i]['lq'] for i in range(3)]
    random.seed(99)
    for i in range(3):
        assert torch.equal(first[i], b[i]['lq'])  # another instance, other global draws: the same LR faces
        assert torch.equal(first[i], a[i]['lq'])
    assert not torch.equal(first[0], first[1][:, :first[0].shape[1], :first[0].shape[2]])
    c = _dataset(data, 'val', {'level': 'medium', 'seed': 1})
    assert not torch.equal(first[0], c[0]['lq'])  # the option seed changes the set
    # HR untouched, LR is the degradation of it
    hr = tensor2img(a[0]['gt'])
    o = deg.degradation_options('medium')
    assert np.array_equal(tensor2img(a[0]['lq']), deg.degrade(hr, SCALE, o, deg.face_seed(data['keys'][0], 0)))
    for ds in (a, b, c):
        ds.close()


def test_dataset_training_draws_new_degradations_reproducibly(tmp_path):
    data = make_face_dataset(tmp_path / 'd', num=2, hr_size=(32, 32), parsing=True)
    ds = _dataset(data, use_hflip=False, use_rot=False)
    random.seed(5)
    x = ds[0]['lq']
    random.seed(5)
    assert torch.equal(x, ds[0]['lq'])
    random.seed(6)
    assert not torch.equal(x, ds[0]['lq'])
    # no dataroot_lq and no degradation: a clear error
    with pytest.raises(ValueError, match='dataroot_lq.*degradation'):
        _dataset(data, degradation=None)
    with pytest.raises(ValueError, match='unknown degradation option'):
        _dataset(data, degradation={'blur': 1})


@pytest.mark.parametrize('rot_mode', ['basicsr', 'rot90'])
def test_dataset_keeps_lr_hr_parsing_and_masks_aligned(tmp_path, rot_mode):
    """Flips/rotations/crops after the degradation: LR = degradation of the output HR, labels/masks on the HR face."""
    rng = np.random.default_rng(0)
    hr_img, labels = synthetic_face(40, 40, rng)
    # the HR picture encodes its (left/right-free) label in the blue channel: alignment is readable from the image
    canon = labels.copy()
    for a, b in ((2, 3), (4, 5), (7, 8)):
        canon[labels == b] = a
    hr_img[..., 0] = canon * 12
    from fsr_data.lmdb_io import write_lmdb
    root = str(tmp_path)
    data = {
        'hr': write_lmdb(os.path.join(root, 'hr.lmdb'), {'f0': hr_img}),
        'parsing': write_lmdb(os.path.join(root, 'parsing.lmdb'), {'f0': labels})
    }
    for opts in (PLAIN, {}):  # exact check with the plain area LR; the default degradation for the labels
        ds = _dataset(
            data,
            degradation=dict(opts),
            gt_size=24,
            use_hflip=True,
            use_rot=True,
            rot_mode=rot_mode,
            return_parsing=True,
            return_component_masks=True)
        for seed in range(12):
            random.seed(seed)
            out = ds[0]
            gt = tensor2img(out['gt'])
            parsing = out['parsing_gt'].numpy().astype(np.uint8)
            canon_out = parsing.copy()
            for a, b in ((2, 3), (4, 5), (7, 8)):
                canon_out[parsing == b] = a
            assert np.array_equal(gt[..., 0], canon_out * 12)
            assert np.array_equal(out['masks'].numpy(), component_masks(parsing))
            assert out['lq'].shape[-2:] == (6, 6)
            if opts is PLAIN:  # the LR face went through the same crop and transform as the HR face
                ref = np.round(_area(gt.astype(np.float32) / 255.) * 255.)
                assert np.abs(tensor2img(out['lq']).astype(np.float32) - ref).max() <= 1
        ds.close()


# ------------------------------------------------------------------------------------------------------ fsr-degrade
def _degrade_twice(data_root, tmp_path, *args):
    """Run fsr-degrade twice with the same arguments (x4) into two folders; returns the first folder and both sets as
    fsr-benchmark reads them."""
    from fsr_metrics.benchmark import load_faces
    outs = [str(tmp_path / 'set1'), str(tmp_path / 'set2')]
    for out in outs:
        assert deg.main(['--data', data_root, '--out', out, '--scale', '4', *args]) == 0
    return outs[0], load_faces(outs[0], 4)[0], load_faces(outs[1], 4)[0]


def test_fsr_degrade_makes_a_fixed_set_fsr_benchmark_reads(tmp_path):
    from fsr_metrics.benchmark import load_faces
    data = make_face_dataset(tmp_path / 'd', num=3, hr_size=(34, 32))
    out1, f1, f2 = _degrade_twice(data['root'], tmp_path, '--level', 'medium')
    assert [n for n, *_ in f1] == data['keys']
    for (n, hr, lr), (_, hr2, lr2) in zip(f1, f2):
        assert hr.shape == (32, 32, 3) and lr.shape == (8, 8, 3)  # mod-cropped
        assert np.array_equal(lr, lr2) and np.array_equal(hr, hr2)
    assert os.path.isfile(os.path.join(out1, 'degradation.json'))
    # an existing output is not overwritten silently; bad options name themselves
    assert deg.main(['--data', data['root'], '--out', out1, '--scale', '4']) == 2
    assert deg.main(
        ['--data', data['root'], '--out',
         str(tmp_path / 'x'), '--scale', '4', '--set', 'jpeg_quality=[1,2]']) == 2
    out3 = str(tmp_path / 'severe')
    deg.main(
        ['--data', data['root'], '--out', out3, '--scale', '4', '--level', 'severe', '--set', 'jpeg_range=[30,31]'])
    f3, _ = load_faces(out3, 4)
    assert not np.array_equal(f3[0][2], f1[0][2])


def test_fsr_degrade_draws_several_degradations_per_face(tmp_path):
    """--draws N: N LR faces per HR face (keys <key>_d<i>), each its own fixed seed, the HR face repeated."""
    data = make_face_dataset(tmp_path / 'd', num=2, hr_size=(32, 32))
    _, faces, again = _degrade_twice(data['root'], tmp_path, '--draws', '3')
    assert [n for n, *_ in faces] == [f'{k}_d{i}' for k in data['keys'] for i in range(3)]
    hr_faces = deg.read_hr_faces(data['root'])
    opt = deg.degradation_options('medium')
    for (name, hr, lr), (_, hr2, lr2) in zip(faces, again):
        key = name.rsplit('_d', 1)[0]
        assert np.array_equal(hr, hr_faces[key]) and np.array_equal(hr2, hr)
        # the LR face is the degradation of the HR face with the draw's own seed, at every run
        assert np.array_equal(lr, deg.degrade(hr_faces[key], 4, opt, deg.face_seed(name, 0)))
        assert np.array_equal(lr, lr2)
    lrs = [lr for _, _, lr in faces[:3]]
    assert not np.array_equal(lrs[0], lrs[1]) and not np.array_equal(lrs[1], lrs[2])
    with pytest.raises(SystemExit) as exc:  # refused at parse time (argparse: exit status 2)
        deg.main(['--data', data['root'], '--out', str(tmp_path / 'z'), '--scale', '4', '--draws', '0'])
    assert exc.value.code == 2 and not (tmp_path / 'z').exists()


def test_real_option_files_are_in_sync_with_their_sources():
    """options/*_real_*.yml copy the bicubic files' network and schedule: rerun scripts/make_real_options.py when
    those change."""
    import subprocess
    import sys
    from helpers import REPO_ROOT
    res = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, 'scripts', 'make_real_options.py'), '--check'],
        capture_output=True,
        text=True)
    assert res.returncode == 0, res.stdout + res.stderr
