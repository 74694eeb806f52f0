"""fsr-infer's command line: faces of a real two-person photo restored and pasted back; image formats; no input ever
written over; one test per error case.

The photos are built in tmp_path from pictures that installed packages ship (scikit-image's astronaut, matplotlib's
grace_hopper.jpg); the network is TANet's TINY_CONFIG with random weights saved in BasicSR's checkpoint format. The
faces of these photos are larger than the tiny network's 16x16 LR input, so the runs that paste them use
``--restore-large-faces --upscale 1`` (the geometry of the default path is tested in test_infer_paste.py, its quality
in test_infer_quality.py).
"""
import argparse
import cv2
import json
import matplotlib
import numpy as np
import os
import pytest
import torch
import yaml

from fsr_utils import plugin

plugin.load()

from fsr_arch.laat_arch import LAAT  # noqa: E402
from fsr_arch.laat_arch import TINY_CONFIG as LAAT_TINY  # noqa: E402
from fsr_arch.tanet_arch import TINY_CONFIG, TANet  # noqa: E402
from fsr_data.face_align import align_face  # noqa: E402
from fsr_tools import infer  # noqa: E402

HR = 64  # HR face size of the tests (LR 16x16 at x4)
FORCE = ('--restore-large-faces', '--upscale', '1')  # restore the (large) faces, output at the input's size


def _tiny_cfg():
    return {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_CONFIG.items()}


def _astronaut_bgr():
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def _grace_hopper_bgr():
    return cv2.imread(os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('infer')
    torch.manual_seed(0)
    ckpt = {
        'x4': root / 'tanet_x4.pth',
        'x8': root / 'tanet_x8.pth',
        'laat': root / 'laat_x4.pth',
        'missing': root / 'nothing_here.pth',
        'unsafe': root / 'unsafe.pth'
    }
    torch.save({'params': TANet(upscale=4, **TINY_CONFIG).state_dict()}, ckpt['x4'])
    torch.save({'params': TANet(upscale=8, **TINY_CONFIG).state_dict()}, ckpt['x8'])
    torch.save({'params': LAAT(upscale=4, **LAAT_TINY).state_dict()}, ckpt['laat'])
    # a pickle with an arbitrary Python object (as a malicious file would hold): weights_only must refuse it
    torch.save({
        'params': TANet(upscale=4, **TINY_CONFIG).state_dict(),
        'args': argparse.Namespace(a=1)
    }, ckpt['unsafe'])
    opt = {
        'name': 'tiny_infer',
        'model_type': 'FSRModel',
        'scale': 4,
        'num_gpu': 0,
        'network_g': {
            'type': 'TANet',
            'upscale': 4,
            **_tiny_cfg()
        },
        'path': {
            'pretrain_network_g': str(ckpt['x4']),
            'param_key_g': 'params'
        }
    }
    opt_path = root / 'tiny_x4.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    # a real multi-face photo: two photographs side by side
    a, g = _astronaut_bgr(), _grace_hopper_bgr()
    two = np.full((max(a.shape[0], g.shape[0]), a.shape[1] + g.shape[1], 3), 90, np.uint8)
    two[:a.shape[0], :a.shape[1]] = a
    two[:g.shape[0], a.shape[1]:] = g
    photos = root / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'two_people.png'), two)
    # a small single-face photo (fast detection) for the format tests
    face = a[10:250, 110:340]
    return dict(root=root, ckpt=ckpt, opt=str(opt_path), two=str(photos / 'two_people.png'), face=face)


def _run(files, inp, out, *extra):
    argv = ['-i', str(inp), '-o', str(out), '--opt', files['opt'], '--hr-size', str(HR), '--quiet', *extra]
    code = infer.main(argv)
    summary = None
    if os.path.isfile(os.path.join(str(out), 'summary.json')):
        with open(os.path.join(str(out), 'summary.json')) as f:
            summary = json.load(f)
    return code, summary


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _check_pasted(inp, out, mask):
    """Same size and dtype; identical wherever the pasted masks are 0; changed inside them."""
    assert out.shape == inp.shape and out.dtype == inp.dtype
    assert mask.shape == inp.shape[:2] and (mask > 0).any()
    outside = mask == 0
    assert np.array_equal(out[outside], inp[outside])
    changed = out != inp if out.ndim == 2 else (out != inp).any(-1)
    assert changed[mask == 255].mean() > 0.5


def test_multi_face_photo_restored_and_pasted_back(files, tmp_path):
    out_dir = tmp_path / 'out'
    code, summary = _run(files, files['two'], out_dir, '--save-masks', '--batch-size', '1', *FORCE)
    assert code == 0 and summary['skipped'] == []
    photo = summary['photos'][0]
    faces = photo['faces']
    # both people (one in each half of the photo) are detected, restored and pasted back
    assert len(faces) == 2
    width = 512
    assert sorted(f['box'][0] < width for f in faces) == [False, True]
    inp, out, mask = _read(files['two']), _read(photo['output']), _read(photo['mask'])
    _check_pasted(inp, out, mask)
    for f in faces:
        x0, y0, x1, y1 = f['pasted_region']
        bx0, by0, bx1, by1 = (int(v) for v in f['box'])
        assert x0 <= bx0 and y0 <= max(by0, 0) and x1 >= bx1 and y1 >= by1  # the paste covers the detected face
        cx, cy = (bx0 + bx1) // 2, (by0 + by1) // 2
        assert mask[cy, cx] == 255 and (out[cy - 5:cy + 5, cx - 5:cx + 5] != inp[cy - 5:cy + 5, cx - 5:cx + 5]).any()
        assert _read(f['lr_crop']).shape == (HR // 4, HR // 4, 3)
        assert _read(f['sr_crop']).shape == (HR, HR, 3)
    assert summary['counts']['faces'] == 2 and summary['settings']['lr_size'] == [HR // 4, HR // 4]


def test_paste_back_inverts_the_alignment():
    """Pasting the aligned crop itself back gives the photo again (best at zero shift: the inverse is exact)."""
    img = _astronaut_bgr()
    lm = np.array([[204.9, 100.7], [246.9, 102.9], [225., 129.], [201.7, 138.9], [244.8, 141.6]], np.float32)
    crop, M = align_face(np.ascontiguousarray(img[..., ::-1]), lm, (256, 256))
    out, union = img.copy(), np.zeros(img.shape[:2], np.uint8)
    infer.paste_warped(out, crop.astype(np.float32) / 255., M, infer.blend_mask(256, 256), union)
    ys, xs = np.nonzero(union == 255)
    assert len(ys) > 5000
    err = {
        (dy, dx): np.abs(out[ys + dy, xs + dx].astype(float) - img[ys, xs]).mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    assert min(err, key=err.get) == (0, 0) and err[(0, 0)] < 5
    assert np.array_equal(out[union == 0], img[union == 0])


def test_unreadable_file_is_skipped(files, tmp_path):
    bad = tmp_path / 'in' / 'broken.jpg'
    bad.parent.mkdir()
    bad.write_bytes(b'this is not a JPEG')
    code, summary = _run(files, bad.parent, tmp_path / 'out')
    assert code == 1
    assert len(summary['skipped']) == 1 and 'unreadable' in summary['skipped'][0]['reason']


def test_image_without_face_is_skipped(files, tmp_path):
    rng = np.random.default_rng(0)
    plain = cv2.GaussianBlur(rng.uniform(0, 255, (160, 160, 3)).astype(np.uint8), (0, 0), 6)
    path = tmp_path / 'wall.png'
    cv2.imwrite(str(path), plain)
    code, summary = _run(files, path, tmp_path / 'out')
    assert code == 1 and summary['photos'] == []
    assert 'no face' in summary['skipped'][0]['reason']
    assert not os.path.exists(tmp_path / 'out' / 'wall.png')


@pytest.mark.parametrize('kind', ['grayscale', 'rgba', '16bit'])
def test_grayscale_rgba_16bit_photos(files, tmp_path, kind):
    face = files['face']
    if kind == 'grayscale':
        img = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    elif kind == 'rgba':
        alpha = np.tile(np.linspace(40, 255, face.shape[1]).astype(np.uint8), (face.shape[0], 1))
        img = np.dstack([face, alpha])
    else:
        img = face.astype(np.uint16) * 257 + 100
    path = tmp_path / f'{kind}.png'
    cv2.imwrite(str(path), img)
    code, summary = _run(files, path, tmp_path / 'out', '--save-masks', *FORCE)
    assert code == 0, summary['skipped']
    photo = summary['photos'][0]
    assert len(photo['faces']) == 1
    out, mask = _read(photo['output']), _read(photo['mask'])
    _check_pasted(img, out, mask)
    if kind == 'rgba':
        assert np.array_equal(out[..., 3], img[..., 3])
    if kind == '16bit':
        assert out.dtype == np.uint16 and (out[mask == 255] % 257 != 100).any()  # real 16-bit values written


def test_missing_weights_file(files, tmp_path, capsys):
    code, summary = _run(files, files['two'], tmp_path / 'out', '--weights', str(files['ckpt']['missing']))
    err = capsys.readouterr().err
    assert code == 2 and summary is None
    assert 'does not exist' in err and 'nothing_here.pth' in err and '--weights' in err


def test_checkpoint_of_another_network(files, tmp_path, capsys):
    code, _ = _run(files, files['two'], tmp_path / 'out', '--weights', str(files['ckpt']['laat']))
    err = capsys.readouterr().err
    assert code == 2 and 'does not fit TANet x4' in err and 'another network' in err


def test_checkpoint_of_another_scale(files, tmp_path, capsys):
    code, _ = _run(files, files['two'], tmp_path / 'out', '--weights', str(files['ckpt']['x8']))
    err = capsys.readouterr().err
    assert code == 2 and 'TANet for scale x8' in err and 'TANet x4' in err


def test_unsafe_checkpoint_is_refused(files, tmp_path, capsys):
    code, _ = _run(files, files['two'], tmp_path / 'out', '--weights', str(files['ckpt']['unsafe']))
    err = capsys.readouterr().err
    assert code == 2 and 'weights_only=True' in err


def test_checkpoint_keys_params_ema_first(tmp_path):
    net = TANet(upscale=4, **TINY_CONFIG)
    params = {k: v.clone() for k, v in net.state_dict().items()}
    ema = {k: v + 1 for k, v in params.items()}
    path = tmp_path / 'both.pth'
    torch.save({'params': params, 'params_ema': {f'module.{k}': v for k, v in ema.items()}}, path)
    state, key = infer.read_checkpoint(str(path))
    assert key == 'params_ema' and torch.equal(state['conv_shallow.weight'], ema['conv_shallow.weight'])
    state, key = infer.read_checkpoint(str(path), 'params')
    assert key == 'params' and torch.equal(state['conv_shallow.weight'], params['conv_shallow.weight'])


def test_aligned_crops_lr_hr_and_wrong_size(files, tmp_path):
    face = cv2.resize(files['face'], (HR, HR), interpolation=cv2.INTER_AREA)
    folder = tmp_path / 'crops'
    folder.mkdir()
    cv2.imwrite(str(folder / 'hr.png'), face)
    cv2.imwrite(str(folder / 'lr.png'), cv2.resize(face, (HR // 4, HR // 4), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(folder / 'odd.png'), face[:50, :40])
    code, summary = _run(files, folder, tmp_path / 'out', '--aligned')
    assert code == 0
    kinds = {os.path.basename(p['input']): p['faces'][0]['input_kind'] for p in summary['photos']}
    assert kinds == {'hr.png': 'HR', 'lr.png': 'LR'}
    assert all(_read(p['output']).shape == (HR, HR, 3) for p in summary['photos'])
    (skip, ) = summary['skipped']
    assert skip['input'].endswith(
        'odd.png') and f'{HR // 4}x{HR // 4}' in skip['reason'] and f'{HR}x{HR}' in skip['reason']


def test_default_run_keeps_large_faces_as_they_are(files, tmp_path, capsys):
    """Faces with more pixels than the LR input are not shrunk and re-enlarged: the output is the plain enlargement."""
    code, summary = _run(files, files['two'], tmp_path / 'out', '--save-masks', '--profile')
    assert code == 0 and summary['settings']['upscale'] == 4  # default: the network's scale
    prof = summary['profile']
    assert set(prof['stages']) == {'read', 'detect', 'align', 'network', 'enlarge', 'paste', 'write'}
    assert prof['photos_per_s'] > 0 and sum(v['seconds'] for v in prof['stages'].values()) <= prof['seconds'] * 1.01
    faces = summary['photos'][0]['faces']
    assert len(faces) == 2 and all(f['plan'] == 'kept' and f['pasted_region'] is None for f in faces)
    assert summary['counts']['faces_kept'] == 2 and 'lr_crop' not in faces[0]
    inp = _read(files['two'])
    plain = cv2.resize(inp, (inp.shape[1] * 4, inp.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(_read(summary['photos'][0]['output']), plain)
    out = capsys.readouterr().out
    assert '2 face(s) left as they are' in out and 'shrink the photo by about' in out and 'photos/s' in out


def test_output_folder_of_the_input_photo_is_refused(files, tmp_path, capsys):
    """Issue 17 item 1: -i dir/photo.png -o dir used to write dir/photo.png over the user's photo."""
    folder = tmp_path / 'photos'
    folder.mkdir()
    photo = folder / 'photo.png'
    cv2.imwrite(str(photo), files['face'])
    before = photo.read_bytes()
    code, summary = _run(files, photo, folder)
    err = capsys.readouterr().err
    assert code == 2 and summary is None
    assert 'is the folder of the input photo' in err and 'Choose another output folder' in err
    assert photo.read_bytes() == before and sorted(os.listdir(folder)) == ['photo.png']
    # the same folder given as input and output: refused too
    code, _ = _run(files, folder, folder)
    err = capsys.readouterr().err
    assert code == 2 and 'is the input folder' in err and photo.read_bytes() == before
    # an output folder inside the input folder is fine: the photo is read, never written, and outputs are not inputs
    code, summary = _run(files, folder, folder / 'restored', *FORCE)
    assert code == 0 and [p['input'] for p in summary['photos']] == [str(photo)]
    assert photo.read_bytes() == before
    code, summary = _run(files, folder, folder / 'restored', *FORCE)  # a second run does not read the first's results
    assert code == 0 and summary['counts']['inputs'] == 1


def test_write_guard_never_writes_an_input(tmp_path):
    path = tmp_path / 'photo.png'
    path.write_bytes(b'original')
    with pytest.raises(infer.InferError, match='one of the input photos'):
        infer.write_image(str(path), np.zeros((4, 4, 3), np.uint8), {os.path.realpath(str(path))})
    assert path.read_bytes() == b'original'


def test_library_api_gives_what_the_command_line_writes(files, tmp_path):
    """FaceRestorer: loaded once, restore(img) -> (img, faces), the same pixels as fsr-infer writes."""
    from fsr_tools.restorer import FaceRestorer
    path = tmp_path / 'face.png'
    cv2.imwrite(str(path), files['face'])
    code, summary = _run(files, path, tmp_path / 'out', *FORCE)
    assert code == 0
    restorer = FaceRestorer.load(opt=files['opt'], hr_size=(HR, HR), device='cpu', upscale=1, restore_large=True)
    assert restorer.info['network'] == 'TANet' and restorer.info['weights'] == str(files['ckpt']['x4'])
    out, faces = restorer.restore(files['face'])
    assert np.array_equal(out, _read(summary['photos'][0]['output']))
    assert [f['plan'] for f in faces] == [f['plan'] for f in summary['photos'][0]['faces']] == ['resampled']
    assert faces[0]['sr'].shape == (HR, HR, 3) and faces[0]['lr'].shape == (HR // 4, HR // 4, 3)
    out2, _ = restorer.restore(cv2.flip(files['face'], 1))  # the same loaded network, another photo
    assert out2.shape == out.shape and not np.array_equal(out2, out)
    with pytest.raises(infer.SkipImage, match='no face found'):
        restorer.restore(files['face'], faces=[])


def test_help_imports_nothing_heavy():
    """``fsr-infer --help`` (the console script's module) imports neither torch, OpenCV, numpy nor basicsr."""
    import subprocess
    import sys
    from helpers import subprocess_env
    code = ('import sys\nfrom fsr_tools import infer_cli\ninfer_cli.build_parser().format_help()\n'
            "print(sorted(m for m in ('torch', 'cv2', 'numpy', 'basicsr') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], env=subprocess_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_cmyk_tiff_is_read_as_rgb_not_as_rgba(tmp_path):
    """OpenCV's IMREAD_UNCHANGED returns a CMYK TIFF's raw planes, which pass for BGRA: the reader converts them."""
    from PIL import Image
    from skimage import data

    from fsr_tools import infer_io
    rgb = data.astronaut()[:48, :40]
    path = str(tmp_path / 'cmyk.tif')
    Image.fromarray(rgb).convert('CMYK').save(path)
    img, notes = infer_io.read_image(path)
    expected = np.array(Image.open(path).convert('RGB'))[..., ::-1]  # PIL's own CMYK -> RGB, as BGR
    assert img.shape == expected.shape and np.abs(img.astype(int) - expected).max() <= 1
    assert any('CMYK' in n for n in notes) and not any('RGBA' in n for n in notes)
