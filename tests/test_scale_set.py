"""scripts/make_scale_set.py: a synthetic face set written as fsr-prepare writes one, read by FSRFaceDataset.

One small set (260 faces: two chunks of the generator, HR 64x64, x4 and x8) is made through the script's command
line with 2 worker processes; the expected values come from BasicSR's own ``imresize`` (LR faces), hashes (distinct
faces), the FSRFaceDataset readers and the 5-point alignment template (the manifest's transforms).
"""
import cv2
import hashlib
import helpers
import json
import numpy as np
import os
import pytest
import sys
from helpers import REPO_ROOT, run_command

SCRIPT = os.path.join(REPO_ROOT, 'scripts', 'make_scale_set.py')
N, HR, SCALES = 260, 64, (4, 8)


def load_script():
    return helpers.load_script('make_scale_set')


def lmdb_items(path):
    return helpers.lmdb_items(path, decode_keys=True)


def decode(buf, flag=cv2.IMREAD_UNCHANGED):
    return cv2.imdecode(np.frombuffer(buf, np.uint8), flag)


@pytest.fixture(scope='module')
def scale_set(tmp_path_factory):
    out = tmp_path_factory.mktemp('scale') / 'set'
    cmd = [
        sys.executable, SCRIPT,
        str(N), '-o',
        str(out), '--hr-size',
        str(HR), '--scales', *map(str, SCALES), '--seed', '3', '--workers', '2', '--quiet'
    ]
    run_command(cmd, REPO_ROOT, timeout=300)
    return out


def test_layout_meta_info_and_manifest(scale_set):
    names = ['hr', 'lr_x4', 'lr_x8', 'parsing']
    assert sorted(os.listdir(scale_set)) == sorted([n + '.lmdb' for n in names] + ['manifest.jsonl', 'scale_set.json'])
    keys = [f'face{i:07d}' for i in range(N)]
    for n in names:
        lines = open(scale_set / f'{n}.lmdb' / 'meta_info.txt').read().splitlines()
        h = HR // int(n[4:]) if n.startswith('lr_x') else HR
        ext, c = ('png', 1) if n == 'parsing' else ('bmp', 3)
        assert lines == [f'{k}.{ext} ({h},{h},{c}) 1' for k in keys]
        assert sorted(lmdb_items(scale_set / f'{n}.lmdb')) == keys
    entries = [json.loads(ln) for ln in open(scale_set / 'manifest.jsonl')]
    assert [e['key'] for e in entries] == keys
    assert {e['source'] for e in entries} >= {'astronaut.png', 'grace_hopper.jpg'}
    assert all(e['shapes']['lr_x8'] == [HR // 8, HR // 8, 3] and e['hr_size'] == [HR, HR] for e in entries)


def test_lr_is_matlab_bicubic_of_hr_exactly(scale_set):
    from basicsr.utils.matlab_functions import imresize  # BasicSR's own function, face by face
    hr = lmdb_items(scale_set / 'hr.lmdb')
    for s in SCALES:
        lr = lmdb_items(scale_set / f'lr_x{s}.lmdb')
        for key in sorted(hr)[::3]:  # faces of both chunks
            ref = imresize(decode(hr[key]).astype(np.float32) / 255., 1 / s)
            ref = np.clip(np.round(ref * 255), 0, 255).astype(np.uint8)
            assert np.array_equal(decode(lr[key]), ref), (key, s)


def test_faces_are_distinct(scale_set):
    hr = lmdb_items(scale_set / 'hr.lmdb')
    assert len({hashlib.sha256(decode(v).tobytes()).hexdigest() for v in hr.values()}) == N
    faces = np.stack([decode(hr[k]) for k in sorted(hr)]).reshape(N, -1).astype(np.float32)
    # no near-duplicates either: every pair differs by more than 2 grey levels on average
    diff = np.stack([np.abs(faces - faces[i]).mean(1) for i in range(N)])
    np.fill_diagonal(diff, np.inf)
    assert diff.min() > 2.0


def test_fsr_face_dataset_reads_it(scale_set):
    from fsr_data.face_dataset import FSRFaceDataset
    ds = FSRFaceDataset(
        dict(
            dataroot_gt=str(scale_set / 'hr.lmdb'),
            dataroot_lq=str(scale_set / 'lr_x8.lmdb'),
            dataroot_parsing=str(scale_set / 'parsing.lmdb'),
            io_backend={'type': 'lmdb'},
            scale=8,
            phase='train',
            gt_size=HR,
            use_hflip=True,
            use_rot=False,
            return_parsing=True,
            return_component_masks=True,
            return_binary_parsing=True))
    assert len(ds) == N
    for i in (0, 255, 256, N - 1):  # both chunks
        item = ds[i]
        assert item['gt'].shape == (3, HR, HR) and item['lq'].shape == (3, HR // 8, HR // 8)
        assert item['masks'].shape == (4, HR, HR) and item['parsing_bin_gt'].shape == (1, HR, HR)
        assert item['parsing_gt'].shape == (HR, HR)
        # a face: skin, and each of eyes, brows, nose, mouth present
        assert (item['parsing_gt'] == 1).sum() > 0.1 * HR * HR
        assert all(item['masks'][c].sum() > 0 for c in range(4)), i
    ds.close()


def test_manifest_transform_is_the_alignment_then_the_recorded_jitter(scale_set):
    """``transform`` (photo -> HR crop) is fsr-prepare's 5-point alignment of the photo's landmarks, then the jitter
    the manifest records (scale, rotation, a shift of at most 3% per axis) and, for ``flip``, a mirror."""
    from fsr_data.face_align import estimate_similarity, template_5pts
    tpl = template_5pts(HR, HR)
    entries = [json.loads(ln) for ln in open(scale_set / 'manifest.jsonl')]
    assert 0.3 < np.mean([e['flip'] for e in entries]) < 0.7
    for e in entries:
        align = np.vstack([estimate_similarity(e['landmarks'], tpl), [0, 0, 1]])
        T = np.vstack([e['transform'], [0, 0, 1]]) @ np.linalg.inv(align)  # the jitter (and mirror) alone
        det = np.linalg.det(T[:2, :2])
        assert (det < 0) == e['flip'], e['key']
        scale = np.sqrt(abs(det))
        assert scale == pytest.approx(e['jitter']['scale'], rel=0.01), e['key']
        R = T[:2, :2] @ np.diag([-1.0 if e['flip'] else 1.0, 1.0]) / scale
        angle = np.degrees(np.arctan2(-R[1, 0], R[0, 0]))
        assert angle == pytest.approx(e['jitter']['rotation'], abs=0.5), e['key']
        centre = T @ [HR / 2, HR / 2, 1]
        assert np.all(np.abs(centre[:2] - HR / 2) <= 0.03 * HR + 1), e['key']


def test_output_does_not_depend_on_workers(scale_set, tmp_path):
    mod = load_script()
    out = tmp_path / 'one'
    assert mod.main([
        str(N), '-o',
        str(out), '--hr-size',
        str(HR), '--scales', '4', '8', '--seed', '3', '--workers', '1', '--quiet'
    ]) == 0
    for n in ('hr', 'lr_x4', 'lr_x8', 'parsing'):
        assert lmdb_items(out / f'{n}.lmdb') == lmdb_items(scale_set / f'{n}.lmdb'), n
    assert open(out / 'manifest.jsonl').read() == open(scale_set / 'manifest.jsonl').read()


def test_png_format_and_another_seed(scale_set, tmp_path):
    mod = load_script()
    out = tmp_path / 'png'
    assert mod.main(
        ['3', '-o',
         str(out), '--hr-size',
         str(HR), '--scales', '4', '--seed', '4', '--image-format', 'png', '--quiet']) == 0
    hr = lmdb_items(out / 'hr.lmdb')
    assert all(v[:8] == b'\x89PNG\r\n\x1a\n' for v in hr.values())
    assert open(out / 'hr.lmdb' / 'meta_info.txt').read().splitlines()[0] == f'face0000000.png ({HR},{HR},3) 1'
    other = lmdb_items(scale_set / 'hr.lmdb')
    assert not np.array_equal(decode(hr['face0000000']), decode(other['face0000000']))


@pytest.mark.parametrize('args, words', [(['0'], ['N', '[1, 10000000]']),
                                         (['5', '--scales', '3'], ['--scales', '3 does not divide']),
                                         (['5', '--scales', '4', '4'], ['--scales', 'twice']),
                                         (['5', '--seed', '-1'], ['--seed']),
                                         (['5', '--hr-size', '8'], ['--hr-size', '[16, 1024]']),
                                         (['5', '--workers', '0'], ['--workers']),
                                         (['5', '--image-format', 'jpg'], ['--image-format'])])
def test_bad_options_exit_2_before_any_work(tmp_path, args, words):
    out = tmp_path / 'out'
    proc = run_command([sys.executable, SCRIPT, *args, '-o', str(out)], REPO_ROOT, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert 'error:' in proc.stderr and all(w in proc.stderr for w in words), proc.stderr
    assert not out.exists()


def test_refuses_an_existing_output(tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    proc = run_command([sys.executable, SCRIPT, '5', '-o', str(out)], REPO_ROOT, check=False, timeout=60)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: -o ') and 'exists' in line and 'new path' in line
    assert os.listdir(out) == ['keep.txt'] and (out / 'keep.txt').read_text() == 'mine'


def test_a_failure_during_the_work_removes_the_output(tmp_path, monkeypatch, capsys):
    mod = load_script()
    real = mod.synth_chunk

    def fail_second(chunk):
        if chunk == 1:
            raise RuntimeError('planted failure')
        return real(chunk)

    monkeypatch.setattr(mod, 'synth_chunk', fail_second)
    out = tmp_path / 'sub' / 'set'
    assert mod.main(['300', '-o', str(out), '--hr-size', '32', '--scales', '4', '--workers', '1', '--quiet']) == 1
    assert 'planted failure' in capsys.readouterr().err
    assert not out.exists() and os.listdir(tmp_path / 'sub') == []


# ------------------------------------------------------------------------------------------ scripts/bench_scale.py
BENCH = os.path.join(REPO_ROOT, 'scripts', 'bench_scale.py')


def load_bench():
    return helpers.load_script('bench_scale')


def test_bench_val_log_parser(tmp_path):
    """Step and validation times from a BasicSR log (its line format); validations after a save are left out."""
    lines = [
        '2026-12-06 09:49:09,000 INFO: [x..][epoch:  0, iter:       9, lr:(1.000e-03,)] [eta: 0:00:03, time (data): '
        '0.231 (0.006)] l_pix: 4.2e-02', '2026-12-06 09:49:09,250 INFO: [x..][epoch:  0, iter:      10, lr:(1.0e-03,)] '
        '[eta: 0:00:03, time (data): 0.231 (0.006)] l_pix: 3.9e-02',
        '2026-12-06 09:49:14,000 INFO: Validation demo_test', '\t # psnr: 24.1',
        '2026-12-06 09:49:14,100 INFO: [x..][epoch:  0, iter:      11, lr:(1.0e-03,)] l_pix: 3e-02',
        '2026-12-06 09:49:14,400 INFO: [x..][epoch:  0, iter:      12, lr:(1.0e-03,)] l_pix: 3e-02',
        '2026-12-06 09:49:14,500 INFO: Saving models and training states.',
        '2026-12-06 09:49:20,000 INFO: Validation demo_test'
    ]
    log = tmp_path / 'train.log'
    log.write_text('\n'.join(lines) + '\n')
    steps, vals = load_bench().parse_val_log(str(log))
    assert steps == pytest.approx([0.25, 0.3], abs=1e-6)  # 9->10 and 11->12; not 10->val, val->11
    assert vals == pytest.approx([4.75], abs=1e-6)


def test_bench_loader_runs_on_a_scale_set(scale_set):
    cmd = [sys.executable, BENCH, 'loader', '--data', str(scale_set), '--workers', '0', '1', '--samples', '64']
    proc = run_command(cmd + ['--warmup', '1', '--size', str(HR)], REPO_ROOT, timeout=300)
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith('| 0 |') or ln.startswith('| 1 |')]
    assert len(rows) == 2, proc.stdout
    rates = [float(r.split('|')[2]) for r in rows]
    assert all(r > 0 for r in rates)
    assert f'({N} faces)' in proc.stdout and 'load average' in proc.stdout
