"""fsr-infer and FaceRestorer under misuse (issue 23): no file the tool did not make is ever written over, output names
never clash, earlier results are not read as photos, a failed write is an error, broken numbers never become pixels,
every option is checked at parse time, and the library API takes what a user would pass (or says what it expects).

Most runs use ``--aligned`` LR-size crops (no face detector, a few milliseconds each) and TANet's TINY_CONFIG with
random weights saved as a BasicSR checkpoint, as tests/test_infer.py does.
"""
import cv2
import json
import numpy as np
import os
import pytest
import resource
import subprocess
import torch
import yaml
from helpers import console_script, subprocess_env
from torch.nn import functional as F

from fsr_utils import plugin

plugin.load()

from fsr_arch.tanet_arch import TINY_CONFIG, TANet  # noqa: E402
from fsr_data.face_align import template_5pts  # noqa: E402
from fsr_tools import infer_cli  # noqa: E402
from fsr_tools.infer_io import InferError, SettingError, output_names  # noqa: E402
from fsr_tools.restorer import FaceRestorer  # noqa: E402
from fsr_utils.safety import FolderLock  # noqa: E402

HR = 64  # LR crops of 16x16 at x4
OVERFLOW_ARCH = 'InferMisuseTestOverflowNet'


class BicubicNet(torch.nn.Module):
    """x4 bicubic enlargement: restores nothing, so every result can be computed independently with cv2.resize."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=4, mode='bicubic', align_corners=False)


class OverflowNet(BicubicNet):
    """Finite on dark crops (the blank crop of FaceRestorer.check too), NaN/Inf on a crop brighter than 0.5 anywhere:
    the stand-in for activations that overflow on some faces."""

    def __init__(self, upscale=4):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        bright = x.flatten(1).amax(1).view(-1, 1, 1, 1) > 0.5
        y = super().forward(x)
        return torch.where(bright, y * float('inf'), y)


def _tiny_cfg():
    return {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_CONFIG.items()}


def _opt(root, name, network_g, ckpt):
    path = root / f'{name}.yml'
    opt = dict(name=name, scale=4, network_g=network_g, path=dict(pretrain_network_g=str(ckpt), param_key_g='params'))
    path.write_text(yaml.safe_dump(opt))
    return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from basicsr.utils.registry import ARCH_REGISTRY
    root = tmp_path_factory.mktemp('misuse')
    torch.manual_seed(0)
    state = TANet(upscale=4, **TINY_CONFIG).state_dict()
    torch.save({'params': state}, root / 'tanet.pth')
    for bad in ('nan', 'inf'):
        broken = {k: v.clone() for k, v in state.items()}
        broken['conv_shallow.bias'][1] = float(bad)
        torch.save({'params': broken}, root / f'tanet_{bad}.pth')
    torch.save({'params': OverflowNet().state_dict()}, root / 'overflow.pth')
    ARCH_REGISTRY._do_register(OVERFLOW_ARCH, OverflowNet)
    yield dict(
        root=root,
        opt=_opt(root, 'tiny', dict(type='TANet', upscale=4, **_tiny_cfg()), root / 'tanet.pth'),
        overflow_opt=_opt(root, 'overflow', dict(type=OVERFLOW_ARCH, upscale=4), root / 'overflow.pth'))
    del ARCH_REGISTRY._obj_map[OVERFLOW_ARCH]


def _crop(seed, size=HR // 4, high=120):
    """An LR-size aligned crop (noisy: its x4 result is a PNG of several kB)."""
    return np.random.default_rng(seed).integers(0, high, (size, size, 3), dtype=np.uint8)


def _photos(folder, names, size=HR // 4):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / name), _crop(i, size)) or name.lower().endswith('.png')
    return folder


def _run(files, capsys, inp, out, *extra, opt=None):
    code = infer_cli.main(
        ['-i', str(inp), '-o',
         str(out), '--opt', opt or files['opt'], '--hr-size',
         str(HR), '--quiet', *extra])
    cap = capsys.readouterr()
    summary = None
    if os.path.isfile(os.path.join(str(out), 'summary.json')):
        with open(os.path.join(str(out), 'summary.json')) as f:
            summary = json.load(f)
    return code, summary, cap.out, cap.err


def _error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


def _tree(folder):
    return {
        os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), 'rb').read()
        for r, _, fs in os.walk(folder)
        for f in fs
    }


# ----------------------------------------------------------------------------------- 1. never write over a user's file
def test_output_folder_holding_user_photos_is_refused(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png', 'sub/a.png'])
    before = _tree(photos)
    code, summary, _, err = _run(files, capsys, photos, photos / 'sub', '--aligned')
    line = _error_line(err)
    assert code == 2 and summary is None
    assert str(photos / 'sub') in line and 'fsr-infer did not make' in line and 'a.png' in line
    assert _tree(photos) == before  # the photo in photos/sub untouched, nothing added (no summary, no lock file)


def test_output_inside_the_input_folder_and_reruns(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png', 'b.png'])
    out = photos / 'restored'
    for _ in range(2):  # a new folder, then the folder the first run made: its own files are replaced
        code, summary, _, _ = _run(files, capsys, photos, out, '--aligned')
        assert code == 0 and summary['tool'] == 'fsr-infer' and summary['status'] == 'done'
        assert summary['counts']['inputs'] == 2
        assert sorted(summary['files']) == [
            'a.png', 'b.png', 'crops/a_face00_lr.png', 'crops/a_face00_sr.png', 'crops/b_face00_lr.png',
            'crops/b_face00_sr.png'
        ]
    assert sorted(os.listdir(out)) == ['a.png', 'b.png', 'crops', 'summary.json']  # no journal, no lock left
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ('a.png', 'summary.json', os.path.join('crops', 'a_face00_sr.png')):  # as a plain write makes them
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name
    # a file the tool did not write, where this run would write: refused before any work
    os.remove(out / 'b.png')
    (out / 'b.png').write_bytes(b'my own file')
    code, _, _, err = _run(files, capsys, photos, out, '--aligned')
    assert code == 2 and str(out / 'b.png') in _error_line(err) and 'not a file fsr-infer wrote' in err
    assert (out / 'b.png').read_bytes() == b'my own file'
    (out / 'b.png').unlink()
    (out / 'crops' / 'a_face00_sr.png').unlink()
    (out / 'crops' / 'a_face00_sr.png').write_bytes(b'mine too')
    code, _, _, err = _run(files, capsys, photos, out, '--aligned')
    assert code == 2 and 'a_face00_sr.png' in _error_line(err)
    assert (out / 'crops' / 'a_face00_sr.png').read_bytes() == b'mine too'
    # the same run without crops does not touch crops/: it goes ahead
    code, summary, _, _ = _run(files, capsys, photos, out, '--aligned', '--no-crops')
    assert code == 0 and (out / 'crops' / 'a_face00_sr.png').read_bytes() == b'mine too'
    code, _, _, err = _run(files, capsys, photos, out, '--aligned')  # and the next run with crops still stops
    assert code == 2 and 'a_face00_sr.png' in _error_line(err)
    assert (out / 'crops' / 'a_face00_sr.png').read_bytes() == b'mine too'


# ---------------------------------------------------------------------------------------------- 2. output name clashes
@pytest.mark.parametrize('names,clash', [(['x.png', 'x.PNG'], 'x.PNG'), (['Face.png', 'face.png'], 'Face.png'),
                                         (['y.png', 'y.jpg', 'y_png.png'], 'y_png'),
                                         (['a.png', 'crops/a_face00_lr.png'], 'crops')])
def test_clashing_output_names_stop_before_any_work(files, tmp_path, capsys, names, clash):
    photos = _photos(tmp_path / 'photos', names)
    assert len(os.listdir(photos)) == len({n.split('/')[0] for n in names})  # x.png and x.PNG are two files here
    code, summary, _, err = _run(files, capsys, photos, tmp_path / 'out', '--aligned')
    line = _error_line(err)
    assert code == 2 and clash in line and 'rename' in line
    assert not os.path.exists(tmp_path / 'out')


def test_distinct_names_get_distinct_outputs(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['y.png', 'y.jpg', 'z.png', 'crops/q.png'])
    code, summary, _, _ = _run(files, capsys, photos, tmp_path / 'out', '--aligned', '--no-crops')
    assert code == 0 and summary['counts']['restored_images'] == 4
    outputs = sorted(os.path.relpath(p['output'], tmp_path / 'out') for p in summary['photos'])
    assert outputs == sorted(['y_png.png', 'y_jpg.png', 'z.png', os.path.join('crops', 'q.png')])
    assert len({_read(p['output']).tobytes() for p in summary['photos']}) == 4  # four files, four results


def test_output_names_folder_named_like_an_output_and_masks():
    assert output_names(['a.jpg', 'b.png']) == {'a.jpg': 'a', 'b.png': 'b'}
    with pytest.raises(ValueError, match='inside a folder a.png'):
        output_names(['a.jpg', os.path.join('a.png', 'b.jpg')])
    with pytest.raises(ValueError, match='mask of the input a.png'):
        output_names(['a.png', os.path.join('masks', 'a.png')], masks=True)
    assert output_names(['a.png', os.path.join('masks', 'a.png')]) == {
        'a.png': 'a',
        os.path.join('masks', 'a.png'): 'masks/a'
    }


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# --------------------------------------------------------------------------- 3. earlier results are not read as photos
def test_folders_made_by_fsr_infer_are_skipped(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png', 'b.png'])
    code, first, _, _ = _run(files, capsys, photos, photos / 'restored', '--aligned')
    assert code == 0 and len(first['files']) == 6  # 2 photos + 4 crops, all valid aligned crops if read again
    code, summary, out, _ = _run(files, capsys, photos, photos / 'restored_v2', '--aligned')
    assert code == 0 and summary['counts']['inputs'] == 2
    assert sorted(os.path.basename(p['input']) for p in summary['photos']) == ['a.png', 'b.png']
    (skip, ) = summary['skipped_folders']
    assert skip['folder'] == str(photos / 'restored') and 'earlier fsr-infer run' in skip['reason']
    assert f'skipped folder {photos / "restored"}' in out
    # the earlier run's folder given as the input: its restored photos are read, its crops are not
    code, summary, _, _ = _run(files, capsys, photos / 'restored', tmp_path / 'again', '--aligned', '--hr-size', '256')
    assert sorted(os.path.basename(p['input']) for p in summary['photos']) == ['a.png', 'b.png']
    assert summary['skipped_folders'][0]['folder'] == str(photos / 'restored' / 'crops')


# ----------------------------------------------------------------------------------------------------- 4. failed writes
def _run_with_file_limit(argv, limit):
    """fsr-infer in a child whose file-size limit is ``limit`` bytes (a full disk's stand-in)."""

    def limit_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([console_script('fsr-infer'), *argv],
                          env=subprocess_env(),
                          capture_output=True,
                          text=True,
                          preexec_fn=limit_files,
                          timeout=300)


def test_disk_full_is_an_error_and_leaves_no_truncated_file(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png', 'b.png'])
    out = tmp_path / 'out'
    argv = ['-i', str(photos), '-o', str(out), '--opt', files['opt'], '--hr-size', str(HR), '--quiet', '--aligned']
    proc = _run_with_file_limit(argv, 6000)  # the summary and the 16x16 crops fit, a 64x64 noisy result does not
    assert proc.returncode == 3, proc.stdout + proc.stderr
    line = _error_line(proc.stderr)
    assert 'cannot write' in line and str(out / 'crops' / 'a_face00_sr.png') in line
    for root, _, names in os.walk(out):
        assert not [n for n in names if n.endswith('.tmp')]
        for n in names:
            if n.endswith('.png'):
                assert _read(os.path.join(root, n)) is not None, n  # every image under its final name is complete
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['status'] == 'failed' and list(summary['files']) == ['crops/a_face00_lr.png']
    # the failed run's files are the tool's: a run with room for its files finishes the job
    code, summary, _, _ = _run(files, capsys, photos, out, '--aligned')
    assert code == 0 and summary['status'] == 'done' and summary['counts']['restored_images'] == 2


def test_failed_summary_write_is_an_error(files, tmp_path, capsys, monkeypatch):
    from fsr_tools import infer_io
    real_write = infer_io.atomic_write_bytes

    def full_disk(path, data):
        if path.endswith('summary.json') and b'"status": "done"' in data:
            raise OSError(28, f'cannot write {path}: No space left on device')
        real_write(path, data)

    monkeypatch.setattr(infer_io, 'atomic_write_bytes', full_disk)
    photos = _photos(tmp_path / 'photos', ['a.png'])
    code, _, out, err = _run(files, capsys, photos, tmp_path / 'out', '--aligned')
    assert code == 3 and str(tmp_path / 'out' / 'summary.json') in _error_line(err) and 'No space' in err


def test_files_of_an_interrupted_run_stay_the_tools(files, tmp_path, capsys, monkeypatch):
    """A run that dies before its final summary (here: no summary can be written after the first) leaves its journal:
    the next run knows those files are fsr-infer's and replaces them."""
    from fsr_tools import infer_io
    real_write = infer_io.atomic_write_bytes

    def no_final_summary(path, data):
        if path.endswith('summary.json') and b'"status": "running"' not in data:
            raise OSError(28, f'cannot write {path}: No space left on device')
        real_write(path, data)

    photos = _photos(tmp_path / 'photos', ['a.png'])
    out = tmp_path / 'out'
    with monkeypatch.context() as m:
        m.setattr(infer_io, 'atomic_write_bytes', no_final_summary)
        code, summary, _, err = _run(files, capsys, photos, out, '--aligned')
    assert code == 3 and '.fsr-infer.journal' in _error_line(err)
    assert summary['status'] == 'running' and summary['files'] == {}  # the summary of the start: nothing listed
    journal = (out / '.fsr-infer.journal').read_text().splitlines()
    assert '"a.png"' in journal and any(line.startswith('["a.png", "') for line in journal)
    code, summary, _, _ = _run(files, capsys, photos, out, '--aligned')
    assert code == 0 and summary['status'] == 'done' and 'a.png' in summary['files']
    assert not (out / '.fsr-infer.journal').exists()


def test_aligned_float_crop_comes_back_as_float():
    r = FaceRestorer(BicubicNet(), 4, (HR, HR), detector=None)
    crop = _crop(3)
    out8, rec = r.restore_aligned(crop)
    out, _ = r.restore_aligned(crop.astype(np.float64) / 255.)
    assert rec['input_kind'] == 'LR' and out.dtype == np.float64 and out.shape == out8.shape == (HR, HR, 3)
    assert out.min() >= 0 and out.max() <= 1 and np.abs(out * 255. - out8).max() <= 0.51


# ---------------------------------------------------------------------------------------------- 5. non-finite numbers
@pytest.mark.parametrize('bad', ['nan', 'inf'])
def test_checkpoint_with_non_finite_weights_is_refused(files, tmp_path, capsys, bad):
    photos = _photos(tmp_path / 'photos', ['a.png'])
    ckpt = str(files['root'] / f'tanet_{bad}.pth')
    code, summary, _, err = _run(files, capsys, photos, tmp_path / 'out', '--aligned', '--weights', ckpt)
    line = _error_line(err)
    assert code == 2 and summary is None and not os.path.exists(tmp_path / 'out')
    assert ckpt in line and 'conv_shallow.bias (1 of' in line and 'NaN or Inf' in line


def test_non_finite_network_output_is_an_error_not_a_pasted_square(files, tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a_dark.png'), _crop(0, high=100))
    cv2.imwrite(str(photos / 'b_bright.png'), _crop(1, high=256))
    out = tmp_path / 'out'
    code, summary, _, err = _run(files, capsys, photos, out, '--aligned', opt=files['overflow_opt'])
    line = _error_line(err)
    assert code == 3 and str(photos / 'b_bright.png') in line and 'NaN or Inf' in line and 'face 0' in line
    assert summary['status'] == 'failed' and [os.path.basename(p['input']) for p in summary['photos']] == ['a_dark.png']
    assert not os.path.exists(out / 'b_bright.png')
    # the library API: the same error, per face, where the detector's faces are given
    restorer = FaceRestorer(OverflowNet(), 4, (HR, HR), detector=None)
    photo = np.full((60, 60, 3), 40, np.uint8)
    photo[30:, 30:] = 250
    t = (template_5pts(HR, HR).astype(np.float64) + 0.5) / 4 - 0.5
    dark, bright = dict(landmarks=t + 2), dict(landmarks=t + 40)
    out_img, faces = restorer.restore(photo, faces=[dark])
    assert faces[0]['plan'] == 'cut' and np.isfinite(faces[0]['sr']).all()
    with pytest.raises(InferError, match='NaN or Inf values for face 1'):
        restorer.restore(photo, faces=[dark, bright])


# ------------------------------------------------------------------------------------------------------- 6. numbers
@pytest.mark.parametrize('option,value,expected', [
    ('--feather', '5', '[0.0, 0.5]'),
    ('--feather', '-0.1', '[0.0, 0.5]'),
    ('--feather', 'nan', 'finite'),
    ('--scale', '3', '2, 4, 8, 16'),
    ('--upscale', '0', '[1, 16]'),
    ('--batch-size', '0', '[1, 4096]'),
    ('--min-score', '1.5', '[0.0, 1.0]'),
    ('--scale-tol', '-1', '[0.0, 10.0]'),
    ('--roll-tol', '200', '[0.0, 180.0]'),
    ('--min-face', '0', '[4, 100000]'),
    ('--detect-max-side', '5', '0 (full size) or an integer in [32, 1000000]'),
    ('--hr-size', '0', '[4, 8192]'),
    ('--hr-size', '64x100000', '[4, 8192]'),
    ('--zoom', '0', '[0.25, 4.0]'),
    ('--template-zoom', 'inf', 'finite'),
])
def test_every_number_is_checked_at_parse_time(files, tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as exc:
        infer_cli.main(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), '--opt', files['opt'], f'{option}={value}'])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if 'error:' in line]
    assert exc.value.code == 2 and len(errors) == 1
    assert option in errors[0] and expected in errors[0], errors[0]
    assert not os.path.exists(tmp_path / 'out')


def test_valid_edge_values_are_accepted():
    args = infer_cli.build_parser().parse_args([
        '-i', 'x', '-o', 'y', '--feather', '0.5', '--detect-max-side', '0', '--min-score', '0', '--upscale', '16',
        '--hr-size', '216x176'
    ])
    assert (args.feather, args.detect_max_side, args.min_score, args.upscale, args.hr_size) == (0.5, 0, 0, 16, (216,
                                                                                                                176))


@pytest.mark.parametrize('setting,value', [('feather', 5.), ('batch_size', 0), ('upscale', 0), ('min_score', 2.),
                                           ('scale_tol', float('nan')), ('detect_max_side', 5), ('hr_size', (64, 0))])
def test_face_restorer_refuses_settings_out_of_range(setting, value):
    with pytest.raises(SettingError, match=setting) as exc:
        FaceRestorer(BicubicNet(), 4, **{'hr_size': (HR, HR), setting: value})
    assert isinstance(exc.value, ValueError)


# ----------------------------------------------------------------------------------- 7. what FaceRestorer.restore takes
@pytest.fixture(scope='module')
def bicubic():
    """A BicubicNet restorer, a photo, one face placed on the LR template (plan 'cut') and the uint8 result."""
    from skimage import data
    photo = np.ascontiguousarray(data.astronaut()[40:200, 140:300, ::-1])  # BGR
    t = (template_5pts(128, 128).astype(np.float64) + 0.5) / 4 - 0.5
    faces = [dict(landmarks=t + (60.3, 50.2))]
    restorer = FaceRestorer(BicubicNet(), 4, (128, 128), upscale=2, detector=None)
    out, recs = restorer.restore(photo, faces=faces)
    assert recs[0]['plan'] == 'cut' and out.shape == (320, 320, 3) and out.dtype == np.uint8
    return dict(restorer=restorer, photo=photo, faces=faces, out=out)


@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.float16])
def test_float_photos_in_0_1_come_back_as_float_in_0_1(bicubic, dtype):
    r, photo, faces = bicubic['restorer'], bicubic['photo'], bicubic['faces']
    out, _ = r.restore((photo / 255.).astype(dtype), faces=faces)
    assert out.dtype == dtype and out.shape == bicubic['out'].shape
    assert out.min() >= 0 and out.max() <= 1
    # the same pixels as the 8-bit photo gives, without its rounding (float16 carries ~3 decimal digits)
    tol = 2.5 / 255 if dtype == np.float16 else 1.01 / 255
    assert np.abs(out.astype(np.float64) - bicubic['out'] / 255.).max() <= tol


def test_uint16_gray_bgra_and_one_channel_keep_their_layout(bicubic):
    r, photo, faces, ref = bicubic['restorer'], bicubic['photo'], bicubic['faces'], bicubic['out'].astype(float)
    out16, _ = r.restore(photo.astype(np.uint16) * 257, faces=faces)
    assert out16.dtype == np.uint16 and np.abs(out16 / 257. - ref).max() <= 1.01
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    out_gray, _ = r.restore(gray, faces=faces)
    out_one, _ = r.restore(gray[..., None], faces=faces)
    assert out_gray.shape == (320, 320) and out_one.shape == (320, 320, 1)
    assert np.array_equal(out_one[..., 0], out_gray)
    alpha = np.tile(np.linspace(0, 255, 160).astype(np.uint8), (160, 1))
    out_bgra, _ = r.restore(np.dstack([photo, alpha]), faces=faces)
    assert out_bgra.shape == (320, 320, 4) and np.array_equal(out_bgra[..., :3], bicubic['out'])
    plain_alpha = cv2.resize(alpha, (320, 320), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(out_bgra[..., 3], plain_alpha)


def test_pil_images_in_rgb_order_come_back_as_pil_images(bicubic):
    from PIL import Image
    r, photo, faces = bicubic['restorer'], bicubic['photo'], bicubic['faces']
    rgb = Image.fromarray(np.ascontiguousarray(photo[..., ::-1]))
    out, _ = r.restore(rgb, faces=faces)
    assert isinstance(out, Image.Image) and out.mode == 'RGB' and out.size == (320, 320)
    assert np.array_equal(np.asarray(out), bicubic['out'][..., ::-1])  # RGB in, RGB out: the same restored pixels
    out_l, _ = r.restore(rgb.convert('L'), faces=faces)
    assert out_l.mode == 'L' and out_l.size == (320, 320)
    out_p, _ = r.restore(rgb.convert('P'), faces=faces)
    assert out_p.mode == 'RGB'
    out_a, _ = r.restore(rgb.convert('RGBA'), faces=faces)
    assert out_a.mode == 'RGBA' and np.array_equal(np.asarray(out_a)[..., :3], np.asarray(out))


@pytest.mark.parametrize(
    'make,error,match',
    [
        (lambda p: p / 1., ValueError, r'in \[0, 1\]'),  # float 0-255
        (lambda p: p.astype(np.int32), TypeError, 'int32'),
        (lambda p: p > 100, TypeError, 'bool'),
        (lambda p: p[..., :2], ValueError, r'shape \(160, 160, 2\)'),
        (lambda p: np.ascontiguousarray(p.transpose(2, 0, 1)), ValueError, 'channels-first'),
        (lambda p: p[None], ValueError, 'one photo at a time'),
        (lambda p: p[:0], ValueError, 'empty'),
        (lambda p: p.tolist(), TypeError, 'np.asarray'),
        (lambda p: None, TypeError, 'cv2.imread returns None'),
        (lambda p: np.where(p > 100, np.nan, p / 255.), ValueError, 'NaN'),
        (lambda p: torch.from_numpy(p), TypeError, 'Tensor'),
    ])
def test_anything_else_is_refused_with_what_is_expected(bicubic, make, error, match):
    with pytest.raises(error, match=match) as exc:
        bicubic['restorer'].restore(make(bicubic['photo']), faces=bicubic['faces'])
    assert 'uint8' in str(exc.value) or 'float' in str(exc.value)


def test_float_photo_with_the_detector(files):
    """With a float photo in [0, 1] the detector finds the faces the 8-bit photo has (it said "no face found")."""
    from skimage import data
    photo = np.ascontiguousarray(data.astronaut()[10:250, 110:340, ::-1])
    restorer = FaceRestorer.load(opt=files['opt'], hr_size=(HR, HR), device='cpu', upscale=1, restore_large=True)
    out8, faces8 = restorer.restore(photo)
    out, faces = restorer.restore(photo.astype(np.float32) / 255.)
    assert len(faces) == len(faces8) == 1 and out.dtype == np.float32
    assert np.abs(out * 255. - out8).max() <= 1.01


# ----------------------------------------------------------------------------------- 8. output paths, one run at a time
def test_output_that_is_a_file_or_below_a_file_is_refused_before_any_work(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png'])
    a_file = tmp_path / 'results.txt'
    a_file.write_text('notes')
    missing = str(tmp_path / 'no_weights.pth')  # the output is checked before the network is loaded
    for out, says in ((a_file, 'is a file'), (a_file / 'out', 'cannot be made')):
        code, _, _, err = _run(files, capsys, photos, out, '--aligned', '--weights', missing)
        line = _error_line(err)
        assert code == 2 and str(out) in line and says in line and 'no_weights' not in line
    assert a_file.read_text() == 'notes'


def test_a_second_run_on_the_same_output_folder_is_refused(files, tmp_path, capsys):
    photos = _photos(tmp_path / 'photos', ['a.png'])
    out = tmp_path / 'out'
    with FolderLock(str(out), 'another fsr-infer'):
        code, summary, _, err = _run(files, capsys, photos, out, '--aligned')
    line = _error_line(err)
    assert code == 2 and summary is None and 'in use by another run' in line and f'PID {os.getpid()}' in line
    assert sorted(os.listdir(out)) == []
    code, summary, _, _ = _run(files, capsys, photos, out, '--aligned')
    assert code == 0
