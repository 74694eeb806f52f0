"""``FaceRestorer.load(backend='onnxruntime')`` and ``fsr-infer --backend onnxruntime`` run a file of ``fsr-export``
(issue 26): the same faces as the PyTorch network on a real photo, and one clear error for a file of another size, a
missing onnxruntime, and options that do not go with the backend.

The network is TANet's TINY_CONFIG with a checkpoint whose ``params`` and ``params_ema`` differ (the files are exported
from ``params_ema``; the restorer loaded with ``params`` shows that the comparison tells two networks apart). The photo
is scikit-image's astronaut; its face is larger than the tiny network's 16x16 LR input, so the runs restore it with
``restore_large`` and ``upscale=1`` (as tests/test_infer.py does).
"""
import cv2
import json
import numpy as np
import os
import pytest
import sys
import torch
import yaml

from fsr_utils import plugin

plugin.load()

from fsr_arch.laat_arch import TINY_CONFIG as LAAT_TINY  # noqa: E402
from fsr_arch.tanet_arch import TINY_CONFIG, TANet  # noqa: E402
from fsr_tools import infer_cli  # noqa: E402
from fsr_tools.infer_io import InferError  # noqa: E402
from fsr_tools.restorer import FaceRestorer  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')

HR = 64  # HR face size of the tests (LR 16x16 at x4)
FORCE = ('--restore-large-faces', '--upscale', '1')  # restore the (large) face, output at the input's size
TOL = 1 / 255


def _cfg(cfg):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _random_state(seed):
    torch.manual_seed(seed)
    state = TANet(upscale=4, **TINY_CONFIG).state_dict()
    # perturb every tensor: the initialisation leaves some branches at zero
    return {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


def _export(*argv):
    from fsr_tools.export import main
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope='module')
def files(tmp_path_factory, one_thread_module):
    root = tmp_path_factory.mktemp('infer_onnx')
    ckpt = root / 'tanet.pth'
    torch.save({'params': _random_state(1), 'params_ema': _random_state(2)}, ckpt)
    opt = root / 'tanet_x4.yml'  # no param_key_g: params_ema first, as fsr-infer and fsr-export read
    opt.write_text(
        yaml.safe_dump(dict(name='tiny', scale=4, network_g=dict(type='TANet', upscale=4, **_cfg(TINY_CONFIG)))))
    laat_opt = root / 'laat_x4.yml'
    laat_opt.write_text(
        yaml.safe_dump(dict(name='laat', scale=4, network_g=dict(type='LAAT', upscale=4, **_cfg(LAAT_TINY)))))
    fixed, dynamic = root / 'tanet_x4_64.onnx', root / 'tanet_x4_dynamic.onnx'
    _export('--opt', opt, '--weights', ckpt, '-o', fixed, '--hr-size', HR)
    _export('--opt', opt, '--weights', ckpt, '-o', dynamic, '--hr-size', 48, '--dynamic')  # another export size
    from skimage import data
    face = np.ascontiguousarray(data.astronaut()[10:250, 110:340, ::-1])  # BGR, one face
    photo = root / 'photos' / 'astronaut.png'
    photo.parent.mkdir()
    cv2.imwrite(str(photo), face)
    return dict(
        root=root,
        ckpt=str(ckpt),
        opt=str(opt),
        laat_opt=str(laat_opt),
        fixed=str(fixed),
        dynamic=str(dynamic),
        face=face,
        photo=str(photo))


@pytest.fixture(scope='module')
def torch_result(files):
    """PyTorch's restoration of the photo (params_ema) and the faces it detected."""
    restorer = FaceRestorer.load(
        opt=files['opt'], weights=files['ckpt'], hr_size=(HR, HR), device='cpu', upscale=1, restore_large=True)
    out, faces = restorer.restore(files['face'])
    assert len(faces) == 1 and faces[0]['plan'] == 'resampled'
    return out, faces


def _close(out, faces, ref_out, ref_faces):
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    assert np.abs(out.astype(int) - ref_out.astype(int)).max() <= 1
    assert len(faces) == len(ref_faces)
    for f, r in zip(faces, ref_faces):
        assert f['plan'] == r['plan'] and f['pasted_region'] == r['pasted_region']
        assert np.abs(f['lr'] - r['lr']).max() == 0
        assert f['sr'].shape == r['sr'].shape and np.abs(f['sr'] - r['sr']).max() <= TOL


# ------------------------------------------------------------------------------------------------ the same faces
def test_face_restorer_runs_a_fixed_shape_file_like_pytorch(files, torch_result):
    ref_out, ref_faces = torch_result
    # no options, no --hr-size: the file says the network, the scale and the HR size
    restorer = FaceRestorer.load(
        weights=files['fixed'], backend='onnxruntime', onnx_threads=1, upscale=1, restore_large=True)
    info = restorer.info
    assert info['backend'] == 'onnxruntime' and info['onnx_file'] == files['fixed'] and info['onnx_shape'] == 'fixed'
    assert (info['network'], info['scale'], info['device']) == ('TANet', 4, 'cpu')
    assert info['hr_size'] == [HR, HR] and 'ONNX file' in info['hr_size_source']
    assert info['exported_from'] == f'{files["ckpt"]} (params_ema)' and info['onnx_threads'] == 1
    assert restorer.net.session.get_session_options().intra_op_num_threads == 1
    out, faces = restorer.restore(files['face'])
    _close(out, faces, ref_out, ref_faces)
    assert (out != files['face']).any(-1).mean() > 0.05  # the face was pasted
    # the comparison tells two networks apart: 'params' (not exported) is more than 1/255 away
    other = FaceRestorer.load(
        opt=files['opt'],
        weights=files['ckpt'],
        param_key='params',
        hr_size=(HR, HR),
        device='cpu',
        upscale=1,
        restore_large=True)
    assert np.abs(other.restore(files['face'])[1][0]['sr'] - faces[0]['sr']).max() > 5 * TOL


def test_face_restorer_runs_a_dynamic_file_at_another_size(files, torch_result):
    """A --dynamic file exported at HR 48 restores 64x64 faces (--hr-size); without it, its export size is used."""
    ref_out, ref_faces = torch_result
    restorer = FaceRestorer.load(
        opt=files['opt'],
        weights=files['dynamic'],
        backend='onnxruntime',
        hr_size=(HR, HR),
        device='auto',
        upscale=1,
        restore_large=True)
    assert restorer.info['onnx_shape'] == 'dynamic' and restorer.info['hr_size'] == [HR, HR]
    _close(*restorer.restore(files['face']), ref_out, ref_faces)
    default = FaceRestorer.load(weights=files['dynamic'], backend='onnxruntime')
    assert default.info['hr_size'] == [48, 48] and 'export size' in default.info['hr_size_source']


def _cli(files, out, *extra, onnx=True):
    argv = ['-i', files['photo'], '-o', str(out), '--quiet', *FORCE, *map(str, extra)]
    if onnx:
        argv += ['--backend', 'onnxruntime']
    return infer_cli.main(argv)


def _summary(out):
    with open(os.path.join(str(out), 'summary.json')) as f:
        return json.load(f)


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(int)


def test_fsr_infer_backend_onnxruntime_writes_what_pytorch_writes(files, tmp_path, capsys):
    ref_dir, onnx_dir = tmp_path / 'torch', tmp_path / 'onnx'
    assert _cli(files, ref_dir, '--opt', files['opt'], '--weights', files['ckpt'], '--hr-size', HR, onnx=False) == 0
    assert _cli(files, onnx_dir, '--weights', files['fixed'], '--onnx-threads', 1) == 0
    assert f'(onnxruntime: {files["fixed"]})' in capsys.readouterr().out
    ref, got = _summary(ref_dir), _summary(onnx_dir)
    assert ref['settings']['backend'] == 'torch' and 'onnx_file' not in ref['settings']
    settings = got['settings']
    assert settings['backend'] == 'onnxruntime' and settings['onnx_file'] == files['fixed']
    assert settings['hr_size'] == [HR, HR] and settings['network'] == 'TANet' and settings['device'] == 'cpu'
    (p_ref, ), (p_got, ) = ref['photos'], got['photos']
    assert np.abs(_read(p_got['output']) - _read(p_ref['output'])).max() <= 1
    assert np.abs(_read(p_got['faces'][0]['sr_crop']) - _read(p_ref['faces'][0]['sr_crop'])).max() <= 1
    assert (_read(p_got['output']) != files['face']).any(-1).mean() > 0.05


# ------------------------------------------------------------------------------------------------------- misuse
def _error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


def test_fixed_shape_file_of_another_size_is_refused(files, tmp_path, capsys):
    with pytest.raises(
            InferError,
            match=r'--hr-size gives HR faces of 96x96.*exported for HR 64x64 only.*'
            r'fsr-export \.\.\. --hr-size 96x96\) or with --dynamic'):
        FaceRestorer.load(weights=files['fixed'], backend='onnxruntime', hr_size=(96, 96))
    assert _cli(files, tmp_path / 'out', '--weights', files['fixed'], '--hr-size', 96) == 2
    line = _error_line(capsys.readouterr().err)
    assert '96x96' in line and files['fixed'] in line and '--dynamic' in line
    assert not (tmp_path / 'out').exists()
    # the options' dataset says how the faces were made: a file of another size is refused too
    data = tmp_path / 'hr'
    data.mkdir()
    (data / 'meta_info.txt').write_text('face0.png (96,96,3)\n')
    opt = yaml.safe_load(open(files['opt']))
    opt['datasets'] = dict(test=dict(dataroot_gt=str(data)))
    (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
    with pytest.raises(InferError, match="the options' dataset .*meta_info.txt.* gives HR faces of 96x96"):
        FaceRestorer.load(opt=str(tmp_path / 'opt.yml'), weights=files['fixed'], backend='onnxruntime')


def test_missing_onnxruntime_is_one_clear_error(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime raises ImportError
    with pytest.raises(InferError, match=r'needs onnxruntime.*pip install'):
        FaceRestorer.load(weights=files['fixed'], backend='onnxruntime')
    assert _cli(files, tmp_path / 'out', '--weights', files['fixed']) == 2
    line = _error_line(capsys.readouterr().err)
    assert 'onnxruntime' in line and 'pip install' in line and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('extra, onnx, expected', [
    (('--device', 'cuda'), True, '--device cuda: --backend onnxruntime runs on the CPU'),
    (('--param-key', 'params'), True, '--param-key params: an ONNX file holds the weights'),
    (('--weights', 'CKPT'), True, 'pass --weights FILE.onnx'),
    ((), True, 'pass --weights FILE.onnx'),
    (('--weights', 'FIXED', '--onnx-threads', '2'), False, '--onnx-threads sets the threads of --backend'),
    (('--weights', 'FIXED', '--opt', 'OPT'), False, 'is an ONNX file: add --backend onnxruntime'),
    (('--weights', 'FIXED', '--onnx-threads', '0'), True, "argument --onnx-threads: must be an integer in"),
    (('--weights', 'FIXED', '--opt', 'LAAT_OPT'), True, '--opt is LAAT x4, but the ONNX file'),
    (('--weights', 'FIXED', '--net', 'LAAT'), True, '--net LAAT, but the ONNX file'),
    (('--weights', 'FIXED', '--scale', '8'), True, '--scale 8, but the ONNX file'),
    (('--weights', 'MISSING'), True, 'does not exist (--weights)'),
    (('--weights', 'BROKEN'), True, 'cannot load ONNX file'),
])
def test_options_that_do_not_fit_the_backend_stop_before_any_work(files, tmp_path, capsys, extra, onnx, expected):
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not an ONNX model')
    names = dict(
        CKPT=files['ckpt'],
        FIXED=files['fixed'],
        OPT=files['opt'],
        LAAT_OPT=files['laat_opt'],
        MISSING=str(tmp_path / 'nothing.onnx'),
        BROKEN=str(broken))
    out = tmp_path / 'out'
    try:
        code = _cli(files, out, *[names.get(a, a) for a in extra], onnx=onnx)
    except SystemExit as e:  # argparse's range check
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    line = err.strip().splitlines()[-1] if err.startswith('usage:') else _error_line(err)
    assert expected in line, line
    assert not out.exists()
