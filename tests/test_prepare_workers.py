"""``fsr-prepare --workers N`` (issue 25 part 1): a pool of processes computes the faces, the main process writes them
in photo order, so N = 2 gives the same bytes as N = 1; a killed or interrupted pool run resumes with no face written
twice and every skipped photo listed once; a worker that dies or cannot load its models is one error line."""
import cv2
import json
import numpy as np
import os
import pytest
import signal
import subprocess
import sys
import time
from helpers import REPO_ROOT, fault_at, lmdb_items, subprocess_env, torch_threads
from test_recipes import _photo

from fsr_data import prepare as prep
from fsr_data.demo import demo_photo_paths

# align5 with dlib landmark parsing: the detector, the alignment, both LR scales and the parsing model all run
BASE = ['--hr-size', '64', '--scales', '4', '8', '--max-upscale', '2', '--commit-every', '3', '--quiet']
OPTS = BASE + ['--parsing', 'landmarks']


def _photos(folder, n=8):
    """``n`` face photos (two people, mirrored, 150-290 px wide), the group photo of the demo at 60% where insightface
    provides it (one torch thread more moves its alignment by one pixel value: measured), and three photos that are
    skipped for different reasons. Returns (folder, number of faces)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f'face{i:02d}.jpg'), _photo(i, 150 + 20 * i))
    group = demo_photo_paths().get('t1')
    if group:
        img = cv2.imread(group)
        cv2.imwrite(
            os.path.join(folder, 'face_group.jpg'), cv2.resize(img, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA))
        n += 1
    cv2.imwrite(os.path.join(folder, 'b_flat.png'), np.full((90, 120, 3), 128, np.uint8))  # no_face
    with open(os.path.join(folder, 'c_broken.jpg'), 'wb') as f:  # unreadable
        f.write(b'\xff\xd8 not a JPEG')
    cv2.imwrite(os.path.join(folder, 'd_tiny.png'), np.full((10, 10, 3), 90, np.uint8))  # too_small
    return folder, n


SKIPPED = {'b_flat.png': 'no_face', 'c_broken.jpg': 'unreadable', 'd_tiny.png': 'too_small'}


def _files(out):
    """{relative path: bytes} of every file of a finished dataset folder."""
    res = {}
    for d, _, files in os.walk(out):
        for f in files:
            p = os.path.join(d, f)
            res[os.path.relpath(p, out)] = open(p, 'rb').read()
    return res


def _same_dataset(out, ref):
    """The same faces (manifest, meta_info, skip report byte for byte; every LMDB key and value), whatever the
    transactions that wrote them (a resumed run's data.mdb pages differ from a straight run's)."""
    a, b = _files(out), _files(ref)
    assert sorted(p for p in a if not p.endswith('data.mdb')) == sorted(p for p in b if not p.endswith('data.mdb'))
    for p in b:
        if p.endswith('data.mdb'):
            folder = os.path.dirname(p)
            assert lmdb_items(os.path.join(out, folder)) == lmdb_items(os.path.join(ref, folder)), folder
        else:
            assert a[p] == b[p], p


def _skipped(out):
    lines = [ln for ln in open(os.path.join(out, 'skipped.tsv')).read().split('\n')[1:] if ln]
    return [ln.split('\t')[0] for ln in lines], {ln.split('\t')[0]: ln.split('\t')[1] for ln in lines}


def _children(pid):
    kids = []
    for task in os.listdir(f'/proc/{pid}/task') if os.path.isdir(f'/proc/{pid}/task') else []:
        try:
            kids += [int(x) for x in open(f'/proc/{pid}/task/{task}/children').read().split()]
        except OSError:
            pass
    return kids


def _descendants(pid):
    """PIDs of every process below ``pid`` (from /proc)."""
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # a zombie has ended
    except OSError:
        return False


def _pool_workers():
    """The live worker processes of this process's pools: the children of its forkserver (the server itself outlives
    a pool by design)."""
    servers = []
    for p in _children(os.getpid()):
        try:
            if b'forkserver' in open(f'/proc/{p}/cmdline', 'rb').read():
                servers.append(p)
        except OSError:
            pass
    return [w for s in servers for w in _children(s) if _alive(w)]


@pytest.fixture(scope='module')
def photo_set(tmp_path_factory):
    """The photos and the dataset one process makes of them (``--workers 1``), shared by the tests of this file."""
    root = tmp_path_factory.mktemp('workers')
    src, faces = _photos(str(root / 'photos'))
    ref = str(root / 'ref')
    with torch_threads(2):  # the caller's thread count does not matter: --workers 1 computes with one thread too
        assert prep.main([src, '-o', ref, '--workers', '1'] + OPTS) == 0
    assert len(open(os.path.join(ref, 'manifest.jsonl')).readlines()) == faces
    return src, ref


def test_two_workers_write_the_same_bytes_as_one(photo_set, tmp_path, monkeypatch):
    src, ref = photo_set
    names, reasons = _skipped(ref)
    assert reasons == SKIPPED and len(names) == 3  # (the set covers the three kinds of skip)
    calls = []
    orig = prep.PrepareJob.process
    monkeypatch.setattr(prep.PrepareJob, 'process', lambda self, *a: calls.append(a) or orig(self, *a))
    out = str(tmp_path / 'out')
    assert prep.main([src, '-o', out, '--workers', '2'] + OPTS) == 0
    assert calls == []  # every photo was computed in the workers, none in this process
    a, b = _files(out), _files(ref)
    assert sorted(a) == sorted(b)
    for p in sorted(b):
        assert a[p] == b[p], f'{p} differs between --workers 2 and --workers 1'


_KILLED_RUN = '''
import os, sys, time
sys.path.insert(0, {repo!r})
from fsr_data.prepare import main
def hold(where, n):
    if where == 'after_photo' and n == 7:
        open({ready!r}, 'w').close()
        time.sleep(600)
sys.exit(main({argv!r}, _fault=hold))
'''


def test_a_killed_pool_run_resumes_with_nothing_twice(photo_set, tmp_path):
    """SIGKILL of the main process while its workers compute ahead: the workers go with it, the same command (again
    with 2 workers) finishes the job, and the result is the dataset of one straight run."""
    src, ref = photo_set
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--workers', '2'] + OPTS
    ready = str(tmp_path / 'ready')
    code = _KILLED_RUN.format(repo=REPO_ROOT, ready=ready, argv=argv)
    proc = subprocess.Popen([sys.executable, '-c', code], env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not os.path.exists(ready):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 300
        time.sleep(0.05)
    below = _descendants(proc.pid)
    assert len(below) >= 3  # (the pool's server and its 2 workers, at least)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    t0 = time.time()
    while any(_alive(p) for p in below) and time.time() - t0 < 60:
        time.sleep(0.2)
    left = [open(f'/proc/{p}/cmdline', 'rb').read()[:300] for p in below if _alive(p)]
    assert not left, f'outlived the killed fsr-prepare: {left}'
    # killed in the middle (commits every 3 photos, in name order: the 3 skipped photos, then faces 00-02)
    staged = open(os.path.join(out, '.staging', 'manifest.partial.jsonl')).read().split('\n')
    assert len([ln for ln in staged if ln]) == 3
    assert len(open(os.path.join(out, '.staging', 'skipped.partial.tsv')).readlines()) == 3

    assert prep.main(argv) == 0
    _same_dataset(out, ref)
    keys = [json.loads(ln)['key'] for ln in open(os.path.join(out, 'manifest.jsonl'))]
    assert len(keys) == len(set(keys)) == len(open(os.path.join(ref, 'manifest.jsonl')).readlines())
    names, reasons = _skipped(out)
    assert sorted(names) == sorted(SKIPPED) and reasons == SKIPPED  # each skipped photo listed once


def test_ctrl_c_in_a_pool_run_resumes(photo_set, tmp_path, capsys):
    src, ref = photo_set
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--workers', '2'] + OPTS
    t0 = time.time()
    assert prep.main(argv, _fault=fault_at('after_photo', 4)) == 130
    assert time.time() - t0 < 120  # the workers are stopped, not waited for
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'same command' in err and 'Traceback' not in err
    assert _pool_workers() == []  # ended with the run
    assert prep.main(argv) == 0
    _same_dataset(out, ref)


def test_a_worker_that_dies_is_one_error_line_and_the_run_resumes(photo_set, tmp_path, capsys):
    src, ref = photo_set
    out = str(tmp_path / 'out')
    argv = [src, '-o', out, '--workers', '2'] + OPTS

    def kill_workers(where, n):
        if where == 'after_photo' and n == 2:
            workers = _pool_workers()
            assert len(workers) == 2
            for p in workers:
                os.kill(p, signal.SIGKILL)  # what the kernel's OOM killer does

    assert prep.main(argv, _fault=kill_workers) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'worker process died' in err and 'same command' in err
    assert os.path.isdir(os.path.join(out, '.staging'))
    assert prep.main(argv) == 0
    _same_dataset(out, ref)


def test_a_worker_that_cannot_load_its_models_is_one_error_line(photo_set, tmp_path, capsys):
    src, _ = photo_set
    (tmp_path / 'w').mkdir()
    (tmp_path / 'w' / 'parsing_bisenet.pth').write_bytes(b'not a checkpoint')
    for workers in ('1', '2'):
        out = str(tmp_path / f'out{workers}')
        argv = [src, '-o', out, '--workers', workers, '--parsing', 'bisenet', '--bisenet-weights', str(tmp_path / 'w')]
        assert prep.main(argv + BASE) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and 'cannot load the models' in err and '--bisenet-weights' in err, err
        assert prep.main(argv + BASE) == 1  # and the folder is not left blocked: the same error again
        capsys.readouterr()


def test_workers_option(tmp_path, capsys):
    assert prep.build_parser().parse_args(['x', '-o', 'y']).workers == len(os.sched_getaffinity(0))
    for bad in ('0', '-2', 'two'):
        with pytest.raises(SystemExit):
            prep.parse_args(['x', '-o', 'y', '--workers', bad])
        assert '--workers' in capsys.readouterr().err
