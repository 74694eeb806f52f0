"""fsr-benchmark misused (issue 23): broken inputs never become numbers, and no file is lost.

Through the real entry points: ``benchmark.main(argv)`` in this process (fast) and the installed ``fsr-benchmark``
console script where the exit status, the lock or a resource limit of a separate process matter.
"""
import cv2
import hashlib
import json
import numpy as np
import os
import pytest
import resource
import subprocess
import torch
import yaml
from helpers import console_script, make_face_dataset, run_command, subprocess_env, synthetic_face

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.archs.srresnet_arch import MSRResNet  # noqa: E402

from fsr_metrics import benchmark  # noqa: E402
from fsr_utils.safety import FolderLock  # noqa: E402

NET_G = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}
COMMON = ['--scale', '4', '--no-face-metrics', '--device', 'cpu']


def _faces(tmp_path, n=2, size=64, name='faces'):
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        cv2.imwrite(str(folder / f'f{i}.png'), synthetic_face(size, size, rng)[0])
    return folder


def _net(tmp_path, name='tiny', edit=None, upscale=4):
    """A tiny MSRResNet checkpoint (``edit(state_dict)`` may break it) and the options file naming it."""
    torch.manual_seed(0)
    net = MSRResNet(num_feat=8, num_block=1, upscale=upscale)
    state = net.state_dict()
    if edit:
        edit(state)
    ckpt = tmp_path / f'{name}.pth'
    torch.save({'params': state}, str(ckpt))
    opt = {'name': name, 'network_g': dict(NET_G, upscale=upscale), 'path': {'pretrain_network_g': str(ckpt)}}
    opt_path = tmp_path / f'{name}.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    return ckpt, opt_path


def _fail(argv, capsys, status=2):
    """``benchmark.main(argv)`` must exit with ``status`` and one ``error:`` line; returns (line, stdout)."""
    with pytest.raises(SystemExit) as exc:
        benchmark.main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == status, captured.err
    lines = captured.err.strip().splitlines()
    assert lines and lines[-1].startswith(('error: ', 'fsr-benchmark: error: ')), captured.err
    return lines[-1], captured.out


def _tree(folder):
    """Every file under ``folder`` with its bytes."""
    found = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, 'rb') as fh:
                found[os.path.relpath(path, folder)] = fh.read()
    return found


# ------------------------------------------------------------------------------------------------ 1. broken weights
def test_nan_checkpoint_is_refused_by_the_console_script(tmp_path):
    """It used to report 6.80 dB for a network with one NaN weight (clamped to black pixels)."""
    faces = _faces(tmp_path)

    def nan(state):
        state['conv_first.weight'][0, 0, 0, 0] = float('nan')

    _, opt = _net(tmp_path, 'nan', nan)
    out = tmp_path / 'out'
    proc = run_command(
        [console_script('fsr-benchmark'), '--data',
         str(faces), '--opt',
         str(opt), '--out', str(out)] + COMMON,
        tmp_path,
        check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and 'nan.pth' in line and 'conv_first.weight' in line and 'NaN or Inf' in line
    assert '| Bicubic |' not in proc.stdout and not out.exists()  # refused before any face was scored


def test_inf_checkpoint_is_refused_before_any_face(tmp_path, capsys):
    faces = _faces(tmp_path)

    def inf(state):
        state['conv_last.bias'][1] = float('-inf')

    ckpt, opt = _net(tmp_path, 'inf', inf)
    out = tmp_path / 'out'
    line, stdout = _fail(['--data', str(faces), '--net', f'Inf={ckpt},{opt}', '--out', str(out)] + COMMON, capsys)
    assert 'inf.pth' in line and 'conv_last.bias (1 of 3 values)' in line
    assert 'Bicubic' not in stdout and not out.exists()


def test_non_finite_output_is_never_scored(tmp_path, capsys):
    """Finite but huge weights overflow to Inf: clamping gave a white face and a PSNR; now an error naming the face."""
    faces = _faces(tmp_path)

    def huge(state):
        for name in ('conv_hr.weight', 'conv_last.weight'):
            state[name].fill_(3e38)  # the largest float32 is 3.4e38: a sum of such products overflows

    ckpt, opt = _net(tmp_path, 'huge', huge)
    net = MSRResNet(num_feat=8, num_block=1, upscale=4)
    net.load_state_dict(torch.load(str(ckpt))['params'])
    with torch.no_grad():  # the premise, computed here: this network's output is not finite
        assert not torch.isfinite(net(torch.rand(1, 3, 16, 16))).all()
    out = tmp_path / 'out'
    line, _ = _fail(['--data', str(faces), '--opt', str(opt), '--out', str(out)] + COMMON, capsys, status=1)
    assert 'huge' in line and 'face f0' in line and 'NaN or Inf' in line and 'no score' in line
    assert not (out / 'benchmark.md').exists() and not (out / 'benchmark_mean.csv').exists()


# ------------------------------------------------------------------------------------------- 2. LR x scale == HR
def test_lr_set_of_another_scale_is_named(tmp_path, capsys):
    data = make_face_dataset(tmp_path / 'data', num=2, hr_size=(64, 64), scales=(8, ))
    os.replace(data['lr_x8'], os.path.join(data['root'], 'lr_x4.lmdb'))  # an x8 LR set where x4 is expected
    line, stdout = _fail(['--data', data['root'], '--out', str(tmp_path / 'out')] + COMMON, capsys)
    assert 'face 00000' in line and 'lr_x4.lmdb' in line and 'hr.lmdb' in line
    assert 'LR 8x8' in line and 'HR face' in line and '64x64' in line and '--scale 8' in line
    assert 'Bicubic' not in stdout and not (tmp_path / 'out').exists()


def test_hr_and_lr_folders_whose_sizes_disagree(tmp_path, capsys):
    data = tmp_path / 'data'
    (data / 'hr').mkdir(parents=True)
    (data / 'lr_x4').mkdir()
    rng = np.random.default_rng(0)
    for name, lr_size in (('a', (16, 16)), ('b', (15, 16))):  # b's LR face is one row short
        hr = synthetic_face(64, 64, rng)[0]
        cv2.imwrite(str(data / 'hr' / f'{name}.png'), hr)
        cv2.imwrite(str(data / 'lr_x4' / f'{name}.png'), cv2.resize(hr, lr_size[::-1], interpolation=cv2.INTER_AREA))
    line, _ = _fail(['--data', str(data), '--out', str(tmp_path / 'out')] + COMMON, capsys)
    assert 'face b' in line and 'LR 15x16' in line and '60x64' in line and '64x64' in line
    assert os.path.join('data', 'lr_x4') in line and 'does not belong' in line and 'fsr-prepare' in line


# ---------------------------------------------------------------------------------------------- 3. numbers in range
@pytest.mark.parametrize('option,value,expected', [('--scale', '0', '[2, 16]'), ('--scale', '-4', '[2, 16]'),
                                                   ('--limit', '-1', '>= 1'), ('--limit', '0', '>= 1'),
                                                   ('--crop-border', '-1', '>= 0'), ('--grid-faces', '-1', '[0, 100]'),
                                                   ('--device', 'gpu', 'cuda:N')])
def test_numbers_out_of_range_are_refused_at_parse_time(tmp_path, capsys, option, value, expected):
    faces = _faces(tmp_path, n=1)
    argv = ['--data', str(faces), '--scale', '4', '--out', str(tmp_path / 'out'), '--no-face-metrics']
    if option == '--scale':
        argv[3] = value
    else:
        argv += [option, value]
    line, _ = _fail(argv, capsys)
    assert f'argument {option}: must be' in line and expected in line and not (tmp_path / 'out').exists()


def test_scale_zero_through_the_console_script(tmp_path):
    """It used to die with ZeroDivisionError (exit 1)."""
    faces = _faces(tmp_path, n=1)
    proc = run_command([console_script('fsr-benchmark'), '--data', str(faces), '--scale', '0'], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith('fsr-benchmark: error: argument '
                                                                                    '--scale: must be an integer')


def test_crop_border_and_device_checked_before_any_face(tmp_path, capsys):
    faces = _faces(tmp_path, n=2, size=64)
    out = tmp_path / 'out'
    line, stdout = _fail(['--data', str(faces), '--out', str(out), '--crop-border', '27'] + COMMON, capsys)
    # 64 - 2 * 27 = 10 pixels left, below SSIM's 11x11 window; 26 leaves 12
    assert line.startswith('error: --crop-border 27') and 'face f0' in line and '--crop-border 26 or less' in line
    assert 'Bicubic' not in stdout and not out.exists()
    line, _ = _fail(['--data', str(faces), '--out', str(out), '--scale', '4', '--device', 'cuda:99'], capsys)
    assert line.startswith('error: --device cuda:99') and not out.exists()


def test_faces_too_small_for_vif_leave_it_out(tmp_path):
    """40x40 faces, crop 4: 32 pixels, fewer than VIF's 41 (it used to stop with a ValueError after bicubic)."""
    faces = _faces(tmp_path, n=2, size=40)
    out = tmp_path / 'out'
    benchmark.main(['--data', str(faces), '--out', str(out), '--grid-faces', '0'] + COMMON)
    md = (out / 'benchmark.md').read_text()
    assert 'VIF left out' in md and '41x41' in md and 'VIF ↑' not in md and 'PSNR ↑' in md


# ------------------------------------------------------------------------------------------------------ 4. outputs
@pytest.mark.parametrize('case', ['file', 'below_file', 'data', 'inside_data', 'holds_data', 'holds_checkpoint'])
def test_output_paths_refused_before_any_work(tmp_path, capsys, case):
    faces = _faces(tmp_path)
    models = tmp_path / 'models'
    models.mkdir()
    _, opt = _net(models)
    (tmp_path / 'afile').write_text('mine')
    out = {
        'file': tmp_path / 'afile',
        'below_file': tmp_path / 'afile' / 'out',
        'data': faces,
        'inside_data': faces / 'results',
        'holds_data': tmp_path,
        'holds_checkpoint': models,
    }[case]
    before = _tree(tmp_path)
    line, stdout = _fail(['--data', str(faces), '--opt', str(opt), '--out', str(out)] + COMMON, capsys)
    assert line.startswith(f'error: --out {out}')
    assert 'Bicubic' not in stdout and _tree(tmp_path) == before  # nothing written, nothing changed


def _run(faces, out, *extra):
    benchmark.main(['--data', str(faces), '--out', str(out), '--grid-faces', '1'] + COMMON + list(extra))


def test_earlier_output_is_replaced_a_foreign_file_never(tmp_path, capsys):
    faces = _faces(tmp_path)
    _, opt = _net(tmp_path)
    out = tmp_path / 'out'
    _run(faces, out, '--opt', str(opt), '--save-images')
    record = json.loads((out / 'benchmark.json').read_text())
    expected = {'benchmark.md', 'benchmark_mean.csv', 'benchmark_per_face.csv', 'grid.png'}
    expected |= {f'images/{m}/f{i}.png' for m in ('Bicubic', 'tiny') for i in range(2)}
    assert record['tool'] == 'fsr-benchmark' and set(record['files']) == expected
    for rel, digest in record['files'].items():  # the recorded hashes are those of the files
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    assert not any(name.endswith('.tmp') or name == '.fsr.lock' for name in os.listdir(out))

    # a second run replaces the first one's files; a file of the user's beside them is left alone
    (out / 'my_notes.txt').write_text('mine')
    (out / 'images' / 'tiny' / 'mine.txt').write_text('mine too')
    (out / 'benchmark.md').write_text('stale')  # changed since fsr-benchmark wrote it: the user's now
    line, _ = _fail(['--data', str(faces), '--out', str(out), '--grid-faces', '1'] + COMMON, capsys)
    assert 'benchmark.md is not fsr-benchmark\'s' in line and (out / 'benchmark.md').read_text() == 'stale'
    (out / 'benchmark.md').unlink()
    _run(faces, out)  # without --save-images and the network: the earlier images are removed, unchanged
    assert (out / 'my_notes.txt').read_text() == 'mine' and (out / 'images' / 'tiny' / 'mine.txt').exists()
    assert os.listdir(out / 'images') == ['tiny'] and os.listdir(out / 'images' / 'tiny') == ['mine.txt']
    assert (out / 'benchmark.md').read_text().startswith('# Face super-resolution')
    assert set(json.loads(
        (out / 'benchmark.json'
         ).read_text())['files']) == expected - {f'images/{m}/f{i}.png'
                                                 for m in ('Bicubic', 'tiny')
                                                 for i in range(2)}


@pytest.mark.parametrize('case', ['grid', 'images_file', 'manifest', 'link'])
def test_foreign_files_in_the_output_folder_stop_the_run(tmp_path, capsys, case):
    faces = _faces(tmp_path)
    out = tmp_path / 'out'
    out.mkdir()
    if case == 'grid':
        (out / 'grid.png').write_bytes(b'my own picture')
    elif case == 'images_file':
        (out / 'images').write_text('not a folder')
    elif case == 'manifest':
        (out / 'benchmark.json').write_text('{"my": "data"}')
    else:
        (tmp_path / 'elsewhere.csv').write_text('mine')
        os.symlink(tmp_path / 'elsewhere.csv', out / 'benchmark_mean.csv')
    before = _tree(tmp_path)
    line, stdout = _fail(
        ['--data', str(faces), '--out', str(out), '--grid-faces', '1', '--save-images'] + COMMON, capsys)
    assert line.startswith(f'error: --out {out}: ') and 'not fsr-benchmark\'s' in line
    assert {
        'grid': 'grid.png',
        'images_file': 'images',
        'manifest': 'benchmark.json',
        'link': 'benchmark_mean.csv'
    }[case] in line
    assert 'Bicubic' not in stdout and _tree(tmp_path) == before


def test_tables_of_a_run_before_benchmark_json_are_replaced(tmp_path):
    faces = _faces(tmp_path)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'benchmark.md').write_text('# Face super-resolution benchmark, x4\n\nold\n')
    (out / 'benchmark_mean.csv').write_text('method,PSNR\n')
    _run(faces, out)
    assert 'old' not in (out / 'benchmark.md').read_text() and 'Bicubic' in (out / 'benchmark_mean.csv').read_text()


def test_a_second_run_on_the_same_folder_names_the_holder(tmp_path):
    faces = _faces(tmp_path)
    out = tmp_path / 'out'
    with FolderLock(str(out), 'holder-of-the-test', '--out'):
        proc = run_command(
            [console_script('fsr-benchmark'), '--data',
             str(faces), '--out', str(out)] + COMMON, tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f'error: --out {out} is in use') and f'holder-of-the-test, PID {os.getpid()}' in line
    assert os.listdir(out) == []  # nothing written; the lock file went with its holder


def test_a_failed_write_is_an_error_and_leaves_no_partial_file(tmp_path):
    """A 3000-byte file-size limit: the tables fit, grid.png does not. cv2.imwrite used to return False unnoticed."""
    faces = _faces(tmp_path)
    out = tmp_path / 'out'
    cmd = [console_script('fsr-benchmark'), '--data', str(faces), '--out', str(out), '--grid-faces', '2'] + COMMON

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    proc = subprocess.run(
        cmd, cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True, preexec_fn=limit, timeout=600)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and 'grid.png' in line
    assert not (out / 'grid.png').exists() and not [n for n in os.listdir(out) if n.endswith('.tmp')]
    # the files being written were listed first: the same command, without the limit, replaces them
    run_command(cmd, tmp_path)
    assert cv2.imread(str(out / 'grid.png')) is not None


# ------------------------------------------------------------------------------------------------ network options
def test_network_label_and_scale_are_checked_before_any_face(tmp_path, capsys):
    faces = _faces(tmp_path)
    ckpt, opt = _net(tmp_path)
    out = tmp_path / 'out'
    line, _ = _fail(['--data', str(faces), '--out', str(out), '--net', f'../x={ckpt},{opt}'] + COMMON, capsys)
    assert 'network label \'../x\'' in line and not out.exists()
    ckpt2, opt2 = _net(tmp_path, 'x2', upscale=2)
    line, stdout = _fail(['--data', str(faces), '--out', str(out), '--net', f'E={ckpt2},{opt2}'] + COMMON, capsys)
    assert 'network_g.upscale is 2' in line and '--scale 4' in line and 'Bicubic' not in stdout and not out.exists()


def test_nan_lpips_trunk_is_an_error_not_a_note(tmp_path, capsys):
    import torchvision
    faces = _faces(tmp_path)
    torch.manual_seed(0)
    trunk = {f'features.{k}': v for k, v in torchvision.models.alexnet().features.state_dict().items()}
    trunk['features.3.bias'][5] = float('nan')
    torch.save(trunk, str(tmp_path / 'alex.pth'))
    out = tmp_path / 'out'
    line, stdout = _fail(
        ['--data', str(faces), '--out',
         str(out), '--lpips-trunk',
         str(tmp_path / 'alex.pth')] + COMMON, capsys)
    assert line.startswith('error: --lpips-trunk') and 'alex.pth' in line and 'features.3.bias' in line
    assert 'Bicubic' not in stdout and not out.exists()
