"""Issue 23: misuse of fsr-prepare and fsr-degrade never loses a file and never turns a broken input into a number.

1. ``--overwrite`` deletes nothing before every input is checked, never an input or a folder holding one, and only
   what the tool made (fsr-degrade: ``degradation.json``; fsr-prepare: ``manifest.jsonl`` / ``.staging``).
2. One run per output folder (``safety.FolderLock``): a second run names the holder and exits 2; the lock file does
   not break resume, is never left in LMDB folders, and a finished folder is not touched.
3. Resume keys stay unique per photo (a photo added before a resume never replaces a staged face).
4. Every number is checked at parse time: one error line naming the option and its range, nothing written.
5. An output path that is a file or lies below one is one error line; an output inside the photo folder is skipped
   when photos are listed.
6. A damaged LMDB is an error naming its file (never a bus error or a None image), and the advice it gives is what a
   rerun does: fsr-prepare repairs a damaged finished folder.
"""
import cv2
import hashlib
import json
import lmdb
import numpy as np
import os
import pytest
import signal
import subprocess
import sys
import time
from helpers import (REPO_ROOT, Interrupt, console_script, fault_at, make_face_dataset, run_command, smooth_photos,
                     subprocess_env)

from fsr_data import degradations as deg
from fsr_data import prepare as prep
from fsr_data.lmdb_io import LmdbDamagedError, read_lmdb_images
from fsr_utils.safety import LOCK_NAME, FolderLock

ALIGNED = ['--aligned', '--hr-size', '32', '--scales', '4', '--parsing', 'none', '--quiet']


def _tree(folder):
    """{relative path: sha1 of the bytes} of every file under ``folder`` (what a run must leave untouched)."""
    out = {}
    for d, _, files in os.walk(str(folder)):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, str(folder))] = hashlib.sha1(open(p, 'rb').read()).hexdigest()
    return out


def _keys(lmdb_path):
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    with env.begin() as txn:
        keys = sorted(k.decode() for k in txn.cursor().iternext(keys=True, values=False))
    env.close()
    return keys


def _hr(lmdb_path, key):
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    with env.begin() as txn:
        buf = txn.get(key.encode())
    env.close()
    return cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)


def _center32(photo_path):
    """The HR face of a 48x40 photo with --aligned --hr-size 32, computed here: the centred 40x40 square shrunk."""
    img = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (48, 40)
    return cv2.resize(img[4:44, 0:40], (32, 32), interpolation=cv2.INTER_AREA)


def _manifest(out):
    return [json.loads(ln) for ln in open(os.path.join(str(out), 'manifest.jsonl'))]


def _one_error_line(err, *words):
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith(('usage:', ' '))]
    assert len(lines) == 1 and 'error' in lines[0] and 'Traceback' not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _degrade(*args):
    return run_command([console_script('fsr-degrade'), *map(str, args)], REPO_ROOT, check=False)


def _prepare(*args):
    return run_command([console_script('fsr-prepare'), *map(str, args)], REPO_ROOT, check=False)


# ------------------------------------------------------------------------------------------- 1. --overwrite deletes
def test_degrade_overwrite_never_deletes_an_input_or_a_foreign_folder(tmp_path):
    data = make_face_dataset(tmp_path / 'd', num=2, hr_size=(32, 32))
    before = _tree(data['root'])
    # the output is the input: refused, the dataset is left as it was (it used to be deleted)
    res = _degrade('--data', data['root'], '--out', data['root'], '--scale', 4, '--overwrite')
    assert res.returncode == 2 and _tree(data['root']) == before
    _one_error_line(res.stderr, '--out', 'input')
    # a missing input with an existing set: checked before anything is deleted (the set used to go first)
    made = tmp_path / 'set'
    assert deg.main(['--data', data['root'], '--out', str(made), '--scale', '4']) == 0
    kept = _tree(made)
    res = _degrade('--data', tmp_path / 'missing', '--out', made, '--scale', 4, '--overwrite')
    assert res.returncode == 2 and _tree(made) == kept
    _one_error_line(res.stderr, 'missing')
    # a folder fsr-degrade did not make is never deleted, with or without --overwrite
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('my notes')
    res = _degrade('--data', data['root'], '--out', mine, '--scale', 4, '--overwrite')
    assert res.returncode == 2 and _tree(mine) == {'notes.txt': hashlib.sha1(b'my notes').hexdigest()}
    _one_error_line(res.stderr, '--out', 'not made by fsr-degrade')
    # an output folder that holds the input (an earlier set with the input below it)
    inner = make_face_dataset(made / 'inner', num=1, hr_size=(32, 32))
    res = _degrade('--data', inner['root'], '--out', made, '--scale', 4, '--overwrite')
    assert res.returncode == 2 and os.path.isfile(os.path.join(inner['hr'], 'data.mdb'))


def test_degrade_overwrite_replaces_only_its_own_set(tmp_path):
    data = make_face_dataset(tmp_path / 'd', num=2, hr_size=(32, 32))
    out = tmp_path / 'set'
    assert deg.main(['--data', data['root'], '--out', str(out), '--scale', '4']) == 0
    (out / 'notes.txt').write_text('kept')
    assert deg.main(['--data', data['root'], '--out', str(out), '--scale', '8', '--overwrite']) == 0
    assert sorted(os.listdir(out)) == ['degradation.json', 'hr.lmdb', 'lr_x8.lmdb', 'notes.txt']
    assert json.load(open(out / 'degradation.json'))['scale'] == 8
    assert not (tmp_path / 'set.partial').exists()
    lr = read_lmdb_images(str(out / 'lr_x8.lmdb'))
    assert sorted(lr) == data['keys'] and all(v.shape == (4, 4, 3) for v in lr.values())


def test_prepare_overwrite_deletes_only_what_it_made(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 3)
    photos_before = _tree(src)
    # a folder holding someone else's LMDB (no manifest.jsonl, no .staging): --overwrite refuses it
    foreign = make_face_dataset(tmp_path / 'foreign', num=2, hr_size=(32, 32))
    before = _tree(foreign['root'])
    assert prep.main([src, '-o', foreign['root'], '--overwrite'] + ALIGNED) == 2
    assert _tree(foreign['root']) == before
    # the photo folder itself as the output: refused before any write
    assert prep.main([src, '-o', src, '--overwrite'] + ALIGNED) == 2
    assert _tree(src) == photos_before
    # a folder fsr-prepare made: --overwrite replaces it, including the LMDB of a scale no longer asked for
    out = tmp_path / 'out'
    assert prep.main(
        [src, '-o',
         str(out), '--aligned', '--hr-size', '32', '--scales', '4', '8', '--parsing', 'none', '--quiet']) == 0
    (out / 'notes.txt').write_text('kept')
    assert prep.main([src, '-o', str(out), '--overwrite'] + ALIGNED) == 0
    assert sorted(os.listdir(out)) == ['hr.lmdb', 'lr_x4.lmdb', 'manifest.jsonl', 'notes.txt', 'skipped.tsv']


def test_prepare_overwrite_checks_the_weights_before_deleting(tmp_path, capsys):
    src = smooth_photos(str(tmp_path / 'photos'), 1)
    out = tmp_path / 'out'
    assert prep.main([src, '-o', str(out)] + ALIGNED) == 0
    before = _tree(out)
    # a missing detector weights file: found before --overwrite deletes the finished dataset (it used to go first)
    code = prep.main([
        src, '-o',
        str(out), '--overwrite', '--detector', 'retinaface', '--detector-weights',
        str(tmp_path / 'missing.pth'), '--hr-size', '32', '--scales', '4', '--parsing', 'none', '--quiet'
    ])
    assert code == 1 and _tree(out) == before
    _one_error_line(capsys.readouterr().err, '--detector-weights')


# ------------------------------------------------------------------------------------------------------- 2. locks
def test_a_second_run_on_a_locked_folder_names_the_holder(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 2)
    data = make_face_dataset(tmp_path / 'd', num=1, hr_size=(32, 32))
    out, dout = tmp_path / 'out', tmp_path / 'deg'
    with FolderLock(str(out), 'test holder'), FolderLock(str(dout), 'test holder'):
        res = _prepare(src, '-o', out, *ALIGNED)
        assert res.returncode == 2
        _one_error_line(res.stderr, str(out), f'PID {os.getpid()}')
        res = _degrade('--data', data['root'], '--out', dout, '--scale', 4)
        assert res.returncode == 2
        _one_error_line(res.stderr, str(dout), f'PID {os.getpid()}')
        assert sorted(os.listdir(out)) == [LOCK_NAME] and sorted(os.listdir(dout)) == [LOCK_NAME]
    res = _prepare(src, '-o', out, *ALIGNED)
    assert res.returncode == 0 and sorted(os.listdir(out)) == ['hr.lmdb', 'lr_x4.lmdb', 'manifest.jsonl', 'skipped.tsv']


_HELD_RUN = '''
import os, sys, time
sys.path.insert(0, {repo!r})
from fsr_data.prepare import main
def hold(where, n):
    if where == 'after_photo' and n == 2:
        open({ready!r}, 'w').close()
        while not os.path.exists({go!r}):
            time.sleep(0.05)
sys.exit(main({argv!r}, _fault=hold))
'''


def _held_run(tmp_path, argv):
    """An fsr-prepare run (its own process) that stops after its 2nd photo until the file ``go`` appears."""
    ready, go = str(tmp_path / 'ready'), str(tmp_path / 'go')
    code = _HELD_RUN.format(repo=REPO_ROOT, ready=ready, go=go, argv=argv)
    proc = subprocess.Popen([sys.executable, '-c', code],
                            env=subprocess_env(),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while not os.path.exists(ready):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 300
        time.sleep(0.05)
    return proc, go


def test_two_runs_into_one_folder(tmp_path):
    """The second run is refused while the first holds the folder; the first finishes with every face."""
    src = smooth_photos(str(tmp_path / 'photos'), 8)
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--commit-every', '1'] + ALIGNED
    first, go = _held_run(tmp_path, argv)
    second = _prepare(*argv)
    assert second.returncode == 2
    _one_error_line(second.stderr, out, f'PID {first.pid}')
    open(go, 'w').close()
    assert first.wait(timeout=300) == 0, first.communicate()
    assert len(_manifest(out)) == 8 and _keys(os.path.join(out, 'hr.lmdb')) == [f'img{i:02d}' for i in range(8)]
    assert sorted(os.listdir(out)) == ['hr.lmdb', 'lr_x4.lmdb', 'manifest.jsonl', 'skipped.tsv']


def test_a_killed_run_leaves_a_lock_file_that_does_not_block_the_resume(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 6)
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--commit-every', '1'] + ALIGNED
    first, _ = _held_run(tmp_path, argv)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert os.path.isfile(os.path.join(out, LOCK_NAME))  # left behind, but its flock died with the process
    assert prep.main(argv) == 0
    assert len(_manifest(out)) == 6
    for d, _, files in os.walk(out):
        assert LOCK_NAME not in files, d  # released, and never inside an LMDB folder


def test_a_finished_folder_is_not_touched(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 3)
    out = tmp_path / 'out'
    assert prep.main([src, '-o', str(out)] + ALIGNED) == 0
    stamp = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in os.listdir(out)}
    with FolderLock(str(out), 'another run'):  # even while another run holds the folder: nothing to do
        assert prep.prepare([src, '-o', str(out)] + ALIGNED)['status'] == 'complete'
    assert {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in os.listdir(out)} == stamp


def test_a_recipe_run_locks_its_output_root(tmp_path):
    root = tmp_path / 'FFHQ' / 'images1024x1024'
    root.mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / f'{i:05d}.png'), np.full((256, 256, 3), 40 * i, np.uint8))
    out = tmp_path / 'out'
    argv = [str(tmp_path / 'FFHQ'), '-o', str(out), '--recipe', 'tanet-ffhq', '--recipe-scale', '0.0005', '--quiet']
    with FolderLock(str(out), 'test holder'):
        assert prep.main(argv) == 2
        assert os.listdir(out) == [LOCK_NAME]
    # a folder of that name that the recipe did not make is refused, not replaced
    (out / 'train').mkdir()
    (out / 'train' / 'mine.txt').write_text('x')
    assert prep.main(argv + ['--overwrite']) == 2 and (out / 'train' / 'mine.txt').is_file()
    (out / 'train' / 'mine.txt').unlink()
    (out / 'train').rmdir()
    assert prep.main(argv) == 0 and json.load(open(out / 'recipe.json'))['subsets']['train']['faces'] == 2


# ------------------------------------------------------------------------------------------------ 3. resume keys
def test_a_photo_added_before_a_resume_gets_its_own_key(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 20)
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--commit-every', '3'] + ALIGNED
    with pytest.raises(Interrupt):  # img00..img02 staged; img03..img05 in the LMDBs only (their batch is cut)
        prep.prepare(argv, _fault=fault_at('after_commit', 2))
    other = smooth_photos(str(tmp_path / 'other'), 1, seed=7)
    os.replace(os.path.join(other, 'img00.png'), os.path.join(src, 'img00 .png'))  # key "img00" too
    os.remove(os.path.join(src, 'img05.png'))  # its LMDB entries have no manifest line: they must not stay behind
    assert prep.prepare(argv)['faces'] == 20
    manifest = _manifest(out)
    by_source = {e['source']: e['key'] for e in manifest}
    assert len(by_source) == 20 and len(set(by_source.values())) == 20
    assert by_source['img00.png'] == 'img00' and by_source['img00 .png'] != 'img00'
    hr = os.path.join(out, 'hr.lmdb')
    for source in ('img00.png', 'img00 .png'):
        assert np.array_equal(_hr(hr, by_source[source]), _center32(os.path.join(src, source)))
    assert _keys(hr) == sorted(by_source.values())  # no orphan entry (img05) of the interrupted batch


# ---------------------------------------------------------------------------------------------------- 4. numbers
PREPARE_BAD = [
    ('--template-zoom', '-1'),
    ('--template-zoom', '0'),
    ('--scales', '0'),
    ('--scales', '-4'),
    ('--scales', '3'),  # does not divide --hr-size 32
    ('--hr-size', '0'),
    ('--hr-size', '32x0'),
    ('--min-box', '-1'),
    ('--min-face', '0'),
    ('--box-margin', '-0.5'),
    ('--box-margin', 'nan'),
    ('--center-size', '0'),
    ('--train-count', '-1'),
    ('--test-count', '-2'),
    ('--split-seed', '-1'),
    ('--limit', '0'),
    ('--commit-every', '0'),
    ('--compress-level', '10'),
    ('--min-score', '1.5'),
    ('--max-upscale', '0'),
    ('--recipe-scale', '0'),
    ('--recipe-scale', 'inf'),
]


@pytest.mark.parametrize('option,value', PREPARE_BAD)
def test_prepare_numbers_out_of_range(tmp_path, capsys, option, value):
    src = smooth_photos(str(tmp_path / 'photos'), 1)
    args = [src, '-o', str(tmp_path / 'out'), '--aligned', '--hr-size', '32', '--scales', '4', '--parsing', 'none']
    with pytest.raises(SystemExit) as exc:
        prep.main(args + [option, value])
    assert exc.value.code == 2 and not (tmp_path / 'out').exists()
    _one_error_line(capsys.readouterr().err, option)


def test_prepare_scales_twice_and_accepted_values(tmp_path, capsys):
    src = smooth_photos(str(tmp_path / 'photos'), 1)
    with pytest.raises(SystemExit):
        prep.main([src, '-o', str(tmp_path / 'o'), '--scales', '4', '4'])
    _one_error_line(capsys.readouterr().err, '--scales', 'twice')
    args = prep.parse_args(
        [src, '-o', 'x', '--template-zoom', '1.3', '--hr-size', '216x176', '--scales', '2', '4', '8'])
    assert args.template_zoom == 1.3 and args.hr_size == (216, 176) and args.scales == [2, 4, 8]


DEGRADE_BAD = [
    (['--scale', '0'], '--scale'),
    (['--scale', '-4'], '--scale'),
    (['--scale', '1'], '--scale'),
    (['--scale', '4', '--draws', '0'], '--draws'),
    (['--scale', '4', '--seed', '-1'], '--seed'),
    (['--scale', '4', '--level', 'hard'], '--level'),
]


@pytest.mark.parametrize('args,option', DEGRADE_BAD)
def test_degrade_numbers_out_of_range(tmp_path, capsys, args, option):
    data = make_face_dataset(tmp_path / 'd', num=1, hr_size=(32, 32))
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exc:
        deg.main(['--data', data['root'], '--out', str(out)] + args)
    assert exc.value.code == 2 and not out.exists() and not (tmp_path / 'out.partial').exists()
    _one_error_line(capsys.readouterr().err, option)


@pytest.mark.parametrize('setting,word', [('jpeg_range=[30,1000]', 'jpeg_range'),
                                          ('noise_range=[1,Infinity]', 'noise_range'), ('blur_prob=NaN', 'blur_prob'),
                                          ('blur_sigma=[0,2]', 'blur_sigma'),
                                          ('kernel_prob=[1,1,1,1,1,-1]', 'kernel_prob'),
                                          ('sinc_prob="x"', 'sinc_prob')])
def test_degrade_option_values_out_of_range(tmp_path, capsys, setting, word):
    data = make_face_dataset(tmp_path / 'd', num=1, hr_size=(32, 32))
    out = tmp_path / 'out'
    assert deg.main(['--data', data['root'], '--out', str(out), '--scale', '4', '--set', setting]) == 2
    assert not out.exists()
    _one_error_line(capsys.readouterr().err, word)


def test_degrade_scale_larger_than_the_faces(tmp_path, capsys):
    data = make_face_dataset(tmp_path / 'd', num=1, hr_size=(12, 12))
    assert deg.main(['--data', data['root'], '--out', str(tmp_path / 'o'), '--scale', '16']) == 2
    assert not (tmp_path / 'o').exists()
    _one_error_line(capsys.readouterr().err, '--scale 16', '12x12')


# ------------------------------------------------------------------------------------------------- 5. output paths
def test_output_paths_that_are_files(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 1)
    data = make_face_dataset(tmp_path / 'd', num=1, hr_size=(32, 32))
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    for out in (afile, afile / 'below'):
        res = _prepare(src, '-o', out, *ALIGNED)
        assert res.returncode == 2
        _one_error_line(res.stderr, '-o', 'is a file')
        res = _degrade('--data', data['root'], '--out', out, '--scale', 4)
        assert res.returncode == 2
        _one_error_line(res.stderr, '--out', 'is a file')
    assert afile.read_text() == 'keep me'


def test_an_output_inside_the_photo_folder_is_never_read_as_photos(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), 3)
    out = os.path.join(src, 'dataset')
    assert prep.prepare([src, '-o', out] + ALIGNED)['faces'] == 3
    # something in the output folder that looks like a photo (a preview saved there, say) is not a photo to prepare
    cv2.imwrite(os.path.join(out, 'preview.png'), np.full((48, 40, 3), 200, np.uint8))
    assert prep.prepare([src, '-o', out, '--overwrite'] + ALIGNED)['faces'] == 3
    assert prep.prepare([src, '-o', os.path.join(src, 'dataset2')] + ALIGNED)['faces'] == 3
    assert sorted(e['source'] for e in _manifest(os.path.join(src, 'dataset2'))) == [f'img0{i}.png' for i in range(3)]


# ------------------------------------------------------------------------------------------------ 6. damaged LMDBs
def _truncate(path):
    """Cut ``data.mdb`` to half its pages (its two meta pages kept): what a full disk or a cut copy leaves."""
    size = os.path.getsize(path)
    new = max(8192, size // 2 // 4096 * 4096)
    assert new < size
    with open(path, 'r+b') as f:
        f.truncate(new)


def test_damaged_lmdbs_are_named_never_a_crash(tmp_path):
    data = make_face_dataset(tmp_path / 'd', num=4, hr_size=(32, 32))
    mdb = os.path.join(data['hr'], 'data.mdb')
    # a key listed in meta_info.txt but missing from the data
    env = lmdb.open(data['hr'])
    with env.begin(write=True) as txn:
        txn.delete(b'00002')
    env.close()
    with pytest.raises(LmdbDamagedError, match=r'data\.mdb lacks the key 00002'):
        read_lmdb_images(data['hr'])
    # a truncated data.mdb: used to kill the process with a bus error (exit status -7)
    _truncate(mdb)
    res = _degrade('--data', data['root'], '--out', tmp_path / 'o', '--scale', 4)
    assert res.returncode == 2 and not (tmp_path / 'o').exists()
    _one_error_line(res.stderr, mdb, 'truncated')
    # a missing meta_info.txt
    os.remove(os.path.join(data['lr_x4'], 'meta_info.txt'))
    with pytest.raises(FileNotFoundError, match=r'lr_x4\.lmdb/meta_info\.txt is missing'):
        read_lmdb_images(data['lr_x4'])
    # an image that does not decode is an error, never a None image
    env = lmdb.open(data['lr_x4'])
    with env.begin(write=True) as txn:
        txn.put(b'00001', b'not an image')
    env.close()
    open(os.path.join(data['lr_x4'], 'meta_info.txt'), 'w').write('00001.png (8,8,3) 1\n')
    with pytest.raises(LmdbDamagedError, match='00001.*does not decode'):
        read_lmdb_images(data['lr_x4'])


def test_rerun_repairs_a_damaged_prepare_folder_as_the_message_says(tmp_path, monkeypatch):
    src = smooth_photos(str(tmp_path / 'photos'), 6)
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--commit-every', '2', '--workers', '1'] + ALIGNED  # (in this process: calls counted)
    assert prep.main(argv) == 0
    hr = os.path.join(out, 'hr.lmdb')
    env = lmdb.open(hr)
    with env.begin(write=True) as txn:
        txn.delete(b'img03')
    env.close()
    with pytest.raises(LmdbDamagedError) as err:
        read_lmdb_images(hr)
    assert 'rerun the fsr-prepare command that made' in str(err.value)  # the advice ...
    calls = []
    orig = prep.PrepareJob.process

    def counting(self, rel, key):
        calls.append(rel)
        return orig(self, rel, key)

    monkeypatch.setattr(prep.PrepareJob, 'process', counting)
    assert prep.main(argv) == 0  # ... is true: the same command repairs it, redoing only the missing face
    assert calls == ['img03.png']
    faces = read_lmdb_images(hr, cv2.IMREAD_COLOR)
    assert sorted(faces) == [f'img{i:02d}' for i in range(6)]
    assert np.array_equal(faces['img03'], _center32(os.path.join(src, 'img03.png')))
    assert len(_manifest(out)) == 6 and not os.path.exists(os.path.join(out, '.staging'))

    # a truncated LMDB is rebuilt (every face of it redone), a missing meta_info.txt rewritten (no photo redone)
    mdb = os.path.join(out, 'lr_x4.lmdb', 'data.mdb')
    _truncate(mdb)
    os.remove(os.path.join(hr, 'meta_info.txt'))
    calls.clear()
    assert prep.main(argv) == 0 and sorted(calls) == [f'img{i:02d}.png' for i in range(6)]
    assert sorted(read_lmdb_images(os.path.join(out, 'lr_x4.lmdb'))) == [f'img{i:02d}' for i in range(6)]
    assert sorted(read_lmdb_images(hr)) == [f'img{i:02d}' for i in range(6)]
    calls.clear()
    os.remove(os.path.join(hr, 'meta_info.txt'))
    assert prep.main(argv) == 0 and calls == [] and sorted(read_lmdb_images(hr)) == [f'img{i:02d}' for i in range(6)]
    # damaged, asked with other options: the message says which command repairs it; nothing changes
    env = lmdb.open(hr)
    with env.begin(write=True) as txn:
        txn.delete(b'img01')
    env.close()
    before = _tree(out)
    with pytest.raises(prep.PrepareError, match='other options'):
        prep.prepare([src, '-o', out, '--aligned', '--hr-size', '32', '--scales', '8', '--parsing', 'none', '--quiet'])
    assert _tree(out) == before
