"""fsr-benchmark (fsr_metrics/benchmark.py) on tiny face sets: bicubic and a tiny untrained network, tables, grid."""
import csv
import cv2
import numpy as np
import os
import pytest
import sys
import torch
import yaml
from helpers import make_face_dataset, run_command, synthetic_face

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.archs.srresnet_arch import MSRResNet  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402

from fsr_metrics import benchmark  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET_G = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}


def _tiny_net(tmp_path, name='tiny', extra_keys=()):
    """A tiny untrained MSRResNet, saved as a BasicSR checkpoint, and an options YAML naming it."""
    torch.manual_seed(0)
    net = MSRResNet(**{k: v for k, v in NET_G.items() if k != 'type'})
    ckpt = tmp_path / f'{name}.pth'
    torch.save({'params': net.state_dict(), **{k: net.state_dict() for k in extra_keys}}, str(ckpt))
    opt = {
        'name': name,
        'scale': 4,
        'network_g': NET_G,
        'path': {
            'pretrain_network_g': str(ckpt),
            'param_key_g': 'params'
        }
    }
    opt_path = tmp_path / f'{name}.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    return net, ckpt, opt_path


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_hr_folder_with_bicubic_and_a_network(tmp_path):
    rng = np.random.default_rng(0)
    hr_dir = tmp_path / 'faces'
    hr_dir.mkdir()
    hrs = {}
    for i in range(3):
        hrs[f'face{i}'] = synthetic_face(66, 66, rng)[0]  # 66: mod-cropped to 64 for x4
        cv2.imwrite(str(hr_dir / f'face{i}.png'), hrs[f'face{i}'])
    net, _, opt_path = _tiny_net(tmp_path)
    out = tmp_path / 'out'
    benchmark.main([
        '--data',
        str(hr_dir), '--scale', '4', '--opt',
        str(opt_path), '--out',
        str(out), '--grid-faces', '2', '--device', 'cpu', '--lpips-trunk',
        str(tmp_path / 'missing_alexnet.pth')
    ])

    md = (out / 'benchmark.md').read_text()
    assert 'Y channel' in md and 'crop_border = 4' in md and 'MATLAB-style bicubic imresize' in md
    assert '| Bicubic |' in md and '| tiny |' in md
    assert 'LPIPS and MPS left out' in md and 'missing_alexnet.pth' in md and 'LPIPS ↓' not in md
    assert 'FID left out' in md

    rows = _read_csv(out / 'benchmark_per_face.csv')
    assert [(r['face'], r['method']) for r in rows] == [(f'face{i}', m) for i in range(3) for m in ('Bicubic', 'tiny')]
    assert {'PSNR', 'SSIM', 'VIF', 'ID', 'LMD'} <= set(rows[0])
    # bicubic PSNR = BasicSR's Y-channel PSNR of the MATLAB-style bicubic of the MATLAB-style LR
    hr = hrs['face0'][:64, :64]
    bic = benchmark.matlab_bicubic(benchmark.matlab_bicubic(hr, 0.25), 4)
    assert float(rows[0]['PSNR']) == pytest.approx(calculate_psnr(bic, hr, 4, test_y_channel=True))
    # the untrained network is far worse than bicubic; the mean row is the mean of the per-face rows
    means = {r['method']: r for r in _read_csv(out / 'benchmark_mean.csv')}
    for method in ('Bicubic', 'tiny'):
        per = [float(r['PSNR']) for r in rows if r['method'] == method]
        assert float(means[method]['PSNR']) == pytest.approx(np.mean(per))
    assert float(means['tiny']['PSNR']) < float(means['Bicubic']['PSNR'])
    assert float(means['Bicubic']['ID']) > float(means['tiny']['ID'])

    grid = cv2.imread(str(out / 'grid.png'))
    header = grid.shape[0] - 2 * (64 + 2)
    assert 10 < header < 40 and grid.shape[1] == 4 * (64 + 2) - 2  # LR | Bicubic | tiny | HR
    # two grid faces of three: the first and the last (spread over the set)
    np.testing.assert_array_equal(grid[header:header + 64, -64:], hrs['face0'][:64, :64])
    np.testing.assert_array_equal(grid[header + 66:header + 130, -64:], hrs['face2'][:64, :64])


def test_prepared_lmdb_dataset_rgb_crop0_and_experiment_folder(tmp_path):
    data = make_face_dataset(tmp_path / 'data', num=2, hr_size=(48, 48), scales=(4, ))
    exp = tmp_path / 'experiments' / 'tiny_exp'
    (exp / 'models').mkdir(parents=True)
    net, ckpt, opt_path = _tiny_net(exp / 'models', name='net_g_5', extra_keys=('params_ema', ))
    os.replace(opt_path, exp / 'train_tiny.yml')  # as BasicSR copies the options file into the experiment folder
    out = tmp_path / 'out'
    benchmark.main([
        '--data', data['root'], '--scale', '4', '--net', f'Tiny net={ckpt}', '--out',
        str(out), '--rgb', '--crop-border', '0', '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu',
        '--save-images'
    ])
    md = (out / 'benchmark.md').read_text()
    assert 'RGB' in md and 'crop_border = 0' in md and '(hr.lmdb, lr_x4.lmdb)' in md
    assert '--no-face-metrics' in md and not (out / 'grid.png').exists()
    rows = _read_csv(out / 'benchmark_per_face.csv')
    hr = benchmark.read_lmdb(data['hr'])['00000']
    lr = benchmark.read_lmdb(data['lr_x4'])['00000']
    assert float(rows[0]['PSNR']) == pytest.approx(calculate_psnr(benchmark.matlab_bicubic(lr, 4), hr, 0))
    sr = benchmark.super_resolve(net.eval(), lr, 4, torch.device('cpu'))
    np.testing.assert_array_equal(cv2.imread(str(out / 'images' / 'Tiny net' / '00000.png')), sr)
    assert float(rows[1]['PSNR']) == pytest.approx(calculate_psnr(sr, hr, 0))


def test_checkpoint_keys_and_errors(tmp_path):
    torch.manual_seed(0)
    a, b = MSRResNet(num_feat=4, num_block=1), MSRResNet(num_feat=4, num_block=1)
    path = tmp_path / 'both.pth'
    torch.save({'params': a.state_dict(), 'params_ema': {f'module.{k}': v for k, v in b.state_dict().items()}}, path)
    ema = benchmark.load_state_dict(str(path))  # params_ema first, DataParallel prefix removed
    assert torch.equal(ema['conv_first.weight'], b.conv_first.weight)
    assert torch.equal(benchmark.load_state_dict(str(path), 'params')['conv_first.weight'], a.conv_first.weight)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        benchmark.load_state_dict(str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='LABEL=CHECKPOINT,OPTIONS.yml'):
        benchmark.parse_net_specs([], [f'x={path}'], 4)


def test_super_resolve_pads_to_size_multiple():

    class Nearest(torch.nn.Module):
        size_multiple = 4

        def forward(self, x):
            assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
            return torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest'), None

    lr = np.random.default_rng(0).integers(0, 256, (10, 7, 3), dtype=np.uint8)
    sr = benchmark.super_resolve(Nearest(), lr, 2, torch.device('cpu'))
    np.testing.assert_array_equal(sr, cv2.resize(lr, (14, 20), interpolation=cv2.INTER_NEAREST))


def test_script_runs_from_a_checkout(tmp_path):
    hr_dir = tmp_path / 'faces'
    hr_dir.mkdir()
    cv2.imwrite(str(hr_dir / 'a.png'), synthetic_face(64, 64, np.random.default_rng(1))[0])
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'benchmark.py')
    proc = run_command([
        sys.executable, script, '--data',
        str(hr_dir), '--scale', '8', '--out',
        str(tmp_path / 'o'), '--no-face-metrics', '--grid-faces', '1'
    ], tmp_path)
    assert '| Bicubic |' in proc.stdout and 'crop_border = 8' in proc.stdout
    assert (tmp_path / 'o' / 'grid.png').exists()


# ------------------------------------------------------------------------------------ reliability (issue 17.4, 17.6)
def _faces_folder(tmp_path, sizes):
    hr_dir = tmp_path / 'faces'
    hr_dir.mkdir()
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(hr_dir / f'f{i}.png'), synthetic_face(h, w, rng)[0])
    return hr_dir


def test_grid_of_faces_of_mixed_sizes(tmp_path):
    """Faces of different sizes used to crash grid.png after every metric was computed."""
    hr_dir = _faces_folder(tmp_path, [(64, 64), (60, 52)])
    out = tmp_path / 'out'
    benchmark.main([
        '--data',
        str(hr_dir), '--scale', '4', '--out',
        str(out), '--no-face-metrics', '--grid-faces', '2', '--device', 'cpu'
    ])
    grid = cv2.imread(str(out / 'grid.png'))
    header = grid.shape[0] - (64 + 2) - (60 + 2)
    assert 10 < header < 40 and grid.shape[1] == 3 * (64 + 2) - 2  # LR | Bicubic | HR, columns 64 wide
    np.testing.assert_array_equal(grid[header:header + 64, -64:], cv2.imread(str(hr_dir / 'f0.png')))
    y = header + 64 + 2
    np.testing.assert_array_equal(grid[y:y + 60, 2 * 66:2 * 66 + 52], cv2.imread(str(hr_dir / 'f1.png')))
    assert (grid[y:y + 60, 2 * 66 + 52:] == 255).all()  # white beside the narrower face
    rows = _read_csv(out / 'benchmark_per_face.csv')
    assert [r['face'] for r in rows] == ['f0', 'f1']


def _main_error(argv, capsys, status=2):
    """The ``error:`` line and the stdout of a failed ``main(argv)``, which must exit with ``status``."""
    with pytest.raises(SystemExit) as exc:
        benchmark.main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == status, captured.err
    lines = captured.err.strip().splitlines()
    return lines[-1] if lines else '', captured.out


def test_every_network_is_checked_before_any_face_is_evaluated(tmp_path, capsys):
    hr_dir = _faces_folder(tmp_path, [(64, 64)])
    net, ckpt, opt_path = _tiny_net(tmp_path)
    base = ['--data', str(hr_dir), '--scale', '4', '--no-face-metrics', '--device', 'cpu', '--opt', str(opt_path)]
    # a missing checkpoint, no options file: the diagnosis is the missing file, not "cannot tell the network"
    out = tmp_path / 'o1'
    msg, stdout = _main_error(base + ['--net', f'B={tmp_path / "nope.pth"}', '--out', str(out)], capsys)
    assert msg.startswith('error: --net B=') and 'nope.pth does not exist' in msg and 'cannot tell' not in msg
    assert not out.exists() and 'Bicubic' not in stdout  # nothing was evaluated
    # a checkpoint of another network (wrong sizes): found before bicubic and the first network run
    other = MSRResNet(num_feat=4, num_block=1, upscale=4)
    torch.save({'params': other.state_dict()}, str(tmp_path / 'other.pth'))
    msg, stdout = _main_error(base + ['--net', f'C={tmp_path / "other.pth"},{opt_path}', '--out', str(out)], capsys)
    assert 'other.pth does not load into MSRResNet' in msg and msg.count('\n') == 0
    assert not out.exists() and 'Bicubic' not in stdout
    # a wrong network name in an options file names the file
    bad = yaml.safe_load(opt_path.read_text())
    bad['network_g']['type'] = 'MSRResNett'
    (tmp_path / 'bad.yml').write_text(yaml.safe_dump(bad))
    msg, _ = _main_error(base[:-2] + ['--opt', str(tmp_path / 'bad.yml'), '--out', str(out)], capsys)
    assert 'bad.yml' in msg and '"MSRResNett" is not a registered network' in msg and 'MSRResNet' in msg
    # an output path that is a file, and a missing data folder
    (tmp_path / 'afile').write_text('x')
    msg, _ = _main_error(base + ['--out', str(tmp_path / 'afile')], capsys)
    assert msg.startswith('error: --out') and 'is a file' in msg
    msg, _ = _main_error(['--data', str(tmp_path / 'nodata'), '--scale', '4', '--out', str(out)], capsys)
    assert msg.startswith('error: --data') and 'is not a folder' in msg
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself
        benchmark.main(['--data', str(tmp_path / 'nodata'), '--scale', '4', '--debug'])


def test_paper_rows_beside_measured_rows(tmp_path, capsys):
    """Issue 15.4: --paper prints the paper's figures (copied from the paper) beside the rows measured here."""
    from fsr_metrics import paper_results
    data = make_face_dataset(tmp_path / 'data', num=2, hr_size=(64, 64), scales=(4, ))
    out = tmp_path / 'out'
    benchmark.main([
        '--data', data['root'], '--scale', '4', '--out',
        str(out), '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu', '--paper', 'tanet'
    ])
    stdout = capsys.readouterr().out
    assert '## Beside the paper (tanet)' in stdout
    # the FFHQ x4 TANet row of Table 2, as printed in the paper (Wang et al., arXiv:2109.08174):
    # 32.61 / 0.8910 / 0.1590 / 0.8660
    row = [line for line in stdout.splitlines() if line.startswith('| paper | Table 2 | FFHQ | TANet |')]
    assert len(row) == 1 and '| 32.61 | 0.8910 |' in row[0] and '0.1590' in row[0] and '0.8660' in row[0]
    assert not any('| paper |' in line and '| 28.62 |' in line for line in stdout.splitlines())  # x8 rows left out
    measured = [line for line in stdout.splitlines() if line.startswith('| measured here |')]
    means = {r['method']: r for r in _read_csv(out / 'benchmark_mean.csv')}
    assert len(measured) == 1 and f'| {float(means["Bicubic"]["PSNR"]):.2f} |' in measured[0]
    assert 'does not say on which channel' in stdout and 'not measured here' in stdout
    assert 'Beside the paper' in (out / 'benchmark.md').read_text()
    # every paper has rows, and LAAT states Y (no channel warning), at x8 only
    assert all(paper_results.paper_rows(p) for p in paper_results.PAPERS)
    assert paper_results.paper_rows('laat', scale=4) == []
    assert any('Y in both' in t for t in paper_results.protocol_differences('laat', True, 8, 8))
    assert any('not comparable' in t for t in paper_results.protocol_differences('laat', False, 8, 8))
    with pytest.raises(ValueError, match='unknown paper'):
        paper_results.paper_rows('srgan')
    # --paper-set: only that test set's rows; an unknown set or no --paper stops before any face is evaluated
    out2 = tmp_path / 'out2'
    common = ['--data', data['root'], '--scale', '4', '--no-face-metrics', '--grid-faces', '0', '--device', 'cpu']
    benchmark.main(common + ['--out', str(out2), '--paper', 'tanet', '--paper-set', 'celeba'])
    paper_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| paper |')]
    assert paper_lines and all('| CelebA |' in line for line in paper_lines)
    assert len(paper_lines) == len(paper_results.paper_rows('tanet', scale=4, dataset='CelebA'))
    msg, _ = _main_error(common + ['--out', str(tmp_path / 'o3'), '--paper', 'tanet', '--paper-set', 'Helen'], capsys)
    assert 'reports at x4 on FFHQ, CelebA' in msg or 'reports at x4 on CelebA, FFHQ' in msg
    msg, _ = _main_error(common + ['--out', str(tmp_path / 'o4'), '--paper-set', 'CelebA'], capsys)
    assert 'give --paper too' in msg
    assert not (tmp_path / 'o3').exists() and not (tmp_path / 'o4').exists()


def test_benchmark_module_imports_nothing_heavy(tmp_path):
    """``fsr-benchmark --help`` needs neither torch, cv2 nor numpy from this module (the package __init__ aside)."""
    code = ('import sys, types\n'
            f'pkg = types.ModuleType("fsr_metrics"); pkg.__path__ = [{os.path.join(REPO, "fsr_metrics")!r}]\n'
            'sys.modules["fsr_metrics"] = pkg\n'
            'import fsr_metrics.benchmark as b\n'
            'b.parse_args(["--data", "x", "--scale", "4"])\n'
            'print(sorted(m for m in ("torch", "cv2", "numpy", "basicsr") if m in sys.modules))')
    proc = run_command([sys.executable, '-c', code], tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == '[]'


def test_niqe_no_reference_score(tmp_path):
    """--niqe adds BasicSR's NIQE of each output alone (equal to calculate_niqe of the bicubic output), and is left out
    with a note naming the minimum size when the faces are too small for its 96-pixel blocks."""
    from basicsr.metrics.niqe import calculate_niqe
    from skimage import data
    hr_dir = tmp_path / 'faces'
    hr_dir.mkdir()
    hr = cv2.resize(data.astronaut()[:, :, ::-1], (200, 200), interpolation=cv2.INTER_AREA)  # 192 + 2 borders
    cv2.imwrite(str(hr_dir / 'a.png'), hr)
    out = tmp_path / 'out'
    benchmark.main([
        '--data',
        str(hr_dir), '--scale', '4', '--out',
        str(out), '--grid-faces', '0', '--device', 'cpu', '--niqe', '--no-face-metrics'
    ])
    rows = _read_csv(out / 'benchmark_per_face.csv')
    bic = benchmark.matlab_bicubic(benchmark.matlab_bicubic(hr, 0.25), 4)
    assert float(rows[0]['NIQE']) == pytest.approx(calculate_niqe(bic, 4, input_order='HWC', convert_to='y'), rel=1e-6)
    assert 'NIQE ↓' in (out / 'benchmark.md').read_text()
    small = tmp_path / 'small'
    small.mkdir()
    cv2.imwrite(str(small / 'a.png'), cv2.resize(hr, (128, 128), interpolation=cv2.INTER_AREA))
    benchmark.main([
        '--data',
        str(small), '--scale', '4', '--out',
        str(tmp_path / 'out2'), '--grid-faces', '0', '--device', 'cpu', '--niqe', '--no-face-metrics'
    ])
    md = (tmp_path / 'out2' / 'benchmark.md').read_text()
    assert 'NIQE left out' in md and '192x192' in md and 'NIQE ↓' not in md


def test_niqe_set_for_small_faces_and_faces_without_ground_truth(tmp_path, capsys):
    """--niqe on 128x128 faces (one 96-pixel block each) gives NIQE-set over the set, equal to calculate_niqe_set of
    the outputs; --no-gt evaluates LR faces alone (no reference metrics, no HR column) with the same NIQE-set."""
    from skimage import data

    from fsr_metrics.niqe_set import calculate_niqe_set
    photo = data.astronaut()[:, :, ::-1]
    hr_dir, lr_dir = tmp_path / 'faces', tmp_path / 'lr_faces'
    hr_dir.mkdir()
    lr_dir.mkdir()
    hrs = [np.ascontiguousarray(photo[y:y + 128, x:x + 128]) for y, x in ((0, 0), (150, 200), (300, 300))]
    for i, hr in enumerate(hrs):
        cv2.imwrite(str(hr_dir / f'f{i}.png'), hr)
        cv2.imwrite(str(lr_dir / f'f{i}.png'), benchmark.matlab_bicubic(hr, 0.25))
    _, _, opt_path = _tiny_net(tmp_path)
    common = ['--scale', '4', '--device', 'cpu', '--niqe', '--no-face-metrics', '--grid-faces', '2']
    benchmark.main(['--data', str(hr_dir), '--out', str(tmp_path / 'gt'), '--opt', str(opt_path)] + common)
    bicubic = [benchmark.matlab_bicubic(benchmark.matlab_bicubic(hr, 0.25), 4) for hr in hrs]
    means = {r['method']: r for r in _read_csv(tmp_path / 'gt' / 'benchmark_mean.csv')}
    assert float(means['Bicubic']['NIQE-set']) == pytest.approx(calculate_niqe_set(bicubic, 4), rel=1e-9)
    assert float(means['tiny']['NIQE-set']) != pytest.approx(float(means['Bicubic']['NIQE-set']))
    md = (tmp_path / 'gt' / 'benchmark.md').read_text()
    assert 'NIQE-set ↓' in md and 'NIQE-set instead' in md and 'PSNR ↑' in md
    assert 'NIQE-set' not in _read_csv(tmp_path / 'gt' / 'benchmark_per_face.csv')[0]  # a set metric

    benchmark.main(['--data', str(lr_dir), '--out', str(tmp_path / 'nogt'), '--opt', str(opt_path), '--no-gt'] + common)
    nogt = {r['method']: r for r in _read_csv(tmp_path / 'nogt' / 'benchmark_mean.csv')}
    assert list(nogt['Bicubic']) == ['method', 'NIQE-set']  # no reference metric without ground truth
    for m in ('Bicubic', 'tiny'):
        assert float(nogt[m]['NIQE-set']) == pytest.approx(float(means[m]['NIQE-set']), rel=1e-9)
    grid = cv2.imread(str(tmp_path / 'nogt' / 'grid.png'))
    assert grid.shape[1] == 3 * (128 + 2) - 2  # LR | Bicubic | tiny, no HR
    assert 'No ground truth' in (tmp_path / 'nogt' / 'benchmark.md').read_text()
    capsys.readouterr()
    msg, _ = _main_error(['--data', str(lr_dir), '--out',
                          str(tmp_path / 'p'), '--no-gt', '--paper', 'tanet'] + common, capsys)
    assert '--paper' in msg and 'needs ground truth' in msg


def test_grid_column_scores_a_planted_checkerboard_high_and_bicubic_zero(tmp_path, monkeypatch):
    """Issue 24: fsr-benchmark's Grid column (median over faces of fsr_metrics.grid_score). A "network" whose output is
    bicubic plus a period-2 checkerboard scores far above 1; bicubic adds no detail (0); the HR face itself as the
    output would score 1 (tests/test_grid_score.py)."""
    rng = np.random.default_rng(0)
    hr_dir = tmp_path / 'faces'
    hr_dir.mkdir()
    for i in range(3):
        cv2.imwrite(str(hr_dir / f'face{i}.png'), synthetic_face(66, 66, rng)[0])
    _, _, opt_path = _tiny_net(tmp_path)
    checker = (np.indices((64, 64)).sum(0) % 2 * 2 - 1)[..., None] * 6.0

    def planted(net, lr, scale, device, keep_float=False):
        out = np.clip(benchmark.matlab_bicubic(lr, scale).astype(np.float64) + checker, 0, 255).round()
        return out.astype(np.uint8)

    monkeypatch.setattr(benchmark, 'super_resolve', planted)
    out = tmp_path / 'out'
    benchmark.main([
        '--data',
        str(hr_dir), '--scale', '4', '--opt',
        str(opt_path), '--out',
        str(out), '--device', 'cpu', '--no-face-metrics', '--grid-faces', '0'
    ])
    means = {r['method']: r for r in _read_csv(out / 'benchmark_mean.csv')}
    assert float(means['Bicubic']['Grid']) == 0.0
    assert float(means['tiny']['Grid']) > 20
    rows = [r for r in _read_csv(out / 'benchmark_per_face.csv') if r['method'] == 'tiny']
    assert float(means['tiny']['Grid']) == pytest.approx(np.median([float(r['Grid']) for r in rows]))
    assert 'Grid (median over faces' in (out / 'benchmark.md').read_text()


def test_workers_give_the_same_scores_as_one_process(tmp_path, monkeypatch):
    """--workers 2 computes ID and LMD (dlib) in two processes: every per-face score equals the one-process run's, and
    the workers really did the dlib work (the main process computes no descriptor of its own)."""
    hr_dir = _faces_folder(tmp_path, [(66, 66)] * 4)
    _, _, opt_path = _tiny_net(tmp_path)
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f'out{workers}'
        if workers == 2:  # from here on, a descriptor computed in the main process fails the run
            from fsr_metrics import face_metric

            def no_descriptor(*args, **kwargs):
                raise AssertionError('descriptor computed in the main process')

            monkeypatch.setattr(face_metric.DlibFace, 'descriptor', no_descriptor)
        benchmark.main([
            '--data',
            str(hr_dir), '--scale', '4', '--opt',
            str(opt_path), '--out',
            str(out), '--grid-faces', '0', '--device', 'cpu', '--workers',
            str(workers)
        ])
        rows[workers] = _read_csv(out / 'benchmark_per_face.csv')
    assert len(rows[1]) == 8 and {'ID', 'LMD'} <= set(rows[1][0])
    assert rows[1] == rows[2]
