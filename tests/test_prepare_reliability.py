"""fsr-prepare under faults (issue 17 items 2, 5, 6; issue 19): a run with no face frees its folder, truncated JPEGs and
tiny photos are skipped with a reason, CMYK is read as colour, Ctrl-C says how to resume, a resume redoes nothing that
was finished, and ``--help`` imports nothing heavy."""
import cv2
import json
import numpy as np
import os
import pytest
import skimage.data
import subprocess
import sys
from helpers import Interrupt, fault_at, smooth_photos
from PIL import Image

from fsr_data import prepare as prep
from fsr_data.prepare import PrepareError, main, prepare

ALIGNED = ['--aligned', '--hr-size', '32', '--scales', '4', '--parsing', 'none', '--commit-every', '3', '--quiet']
DETECT = ['--hr-size', '32', '--scales', '4', '--parsing', 'none', '--quiet']


def _astronaut(size=256):
    return cv2.resize(skimage.data.astronaut()[..., ::-1], (size, size), interpolation=cv2.INTER_AREA)


def _report(out):
    lines = open(os.path.join(out, 'skipped.tsv')).read().split('\n')[1:]
    return {ln.split('\t')[0]: ln.split('\t')[1:] for ln in lines if ln}


def test_run_without_faces_leaves_its_folder_usable(tmp_path):
    src = tmp_path / 'photos'
    src.mkdir()
    cv2.imwrite(str(src / 'flat.png'), np.full((120, 100, 3), 127, np.uint8))
    (src / 'broken.jpg').write_bytes(b'\xff\xd8 not a JPEG')
    out = str(tmp_path / 'out')
    with pytest.raises(PrepareError, match='skipped.tsv') as err:
        prepare([str(src), '-o', out] + DETECT)
    assert '1 no_face, 1 unreadable' in str(err.value) and 'free again' in str(err.value)
    assert not os.path.exists(os.path.join(out, '.staging'))  # nothing blocks the next run
    assert set(_report(out)) == {'flat.png', 'broken.jpg'}
    # the same command fails the same clear way (not on a stale FINALIZING), and main() prints one error line
    assert main([str(src), '-o', out] + DETECT) == 1
    # new photos in the same folder, then --overwrite, both work
    cv2.imwrite(str(src / 'astronaut.png'), _astronaut())
    assert prepare([str(src), '-o', out] + DETECT)['faces'] == 1
    assert prepare([str(src), '-o', out, '--overwrite'] + DETECT)['faces'] == 1


def test_folder_stuck_by_an_empty_finalize_is_freed(tmp_path):
    """The state an older version left behind (FINALIZING with no face) is cleaned up, with or without --overwrite."""
    src = smooth_photos(str(tmp_path / 'photos'), 2)
    out = tmp_path / 'out'
    for overwrite in ([], ['--overwrite']):
        stage = out / '.staging'
        stage.mkdir(parents=True)
        (stage / 'FINALIZING').write_text('x\n')
        (stage / 'skipped.partial.tsv').write_text('img00.png\tno_face\tx\n')
        args = [src, '-o', str(out)] + ALIGNED + overwrite
        if not overwrite:
            with pytest.raises(PrepareError, match='free again'):
                prepare(args)
            assert not stage.exists()
            assert prepare(args)['faces'] == 2
        else:
            assert prepare(args)['faces'] == 2
        for p in out.iterdir():
            if p.is_dir():
                import shutil
                shutil.rmtree(p)
            else:
                p.unlink()


def test_truncated_jpeg_is_skipped_with_a_reason(tmp_path):
    src = tmp_path / 'photos'
    src.mkdir()
    rgb = _astronaut(128)[..., ::-1]
    Image.fromarray(rgb).save(src / 'whole.jpg', quality=90)
    data = (src / 'whole.jpg').read_bytes()
    (src / 'cut.jpg').write_bytes(data[:len(data) // 2])
    Image.fromarray(rgb).save(src / 'prog.jpg', quality=90, progressive=True)
    prog = (src / 'prog.jpg').read_bytes()
    (src / 'cut_prog.jpg').write_bytes(prog[:len(prog) * 2 // 3])
    (src / 'trailer.jpg').write_bytes(data + b'camera trailer data')  # complete JPEG with bytes after its end
    (src / 'padded.jpg').write_bytes(data + b'\x00' * 100)
    out = str(tmp_path / 'out')
    summary = prepare([str(src), '-o', out] + ALIGNED)
    report = _report(out)
    assert set(report) == {'cut.jpg', 'cut_prog.jpg'} and summary['faces'] == 4
    assert all(r[0] == 'unreadable' and 'truncated JPEG' in r[1] for r in report.values())
    keys = [json.loads(ln)['key'] for ln in open(os.path.join(out, 'manifest.jsonl'))]
    assert keys == ['padded', 'prog', 'trailer', 'whole']


def test_tiny_photo_is_too_small_and_cmyk_is_colour(tmp_path):
    src = tmp_path / 'photos'
    src.mkdir()
    cv2.imwrite(str(src / 'tiny.png'), np.full((10, 10, 3), 90, np.uint8))
    cv2.imwrite(str(src / 'small.png'), np.full((16, 18, 3), 90, np.uint8))  # above 12 px, below --min-face 20
    out = str(tmp_path / 'out')
    with pytest.raises(PrepareError):
        prepare([str(src), '-o', out] + DETECT)
    report = _report(out)
    assert report['tiny.png'][0] == 'too_small' and 'too small' in report['tiny.png'][1]
    assert report['small.png'][0] == 'too_small' and '--min-face' in report['small.png'][1]

    cm = tmp_path / 'cmyk'
    cm.mkdir()
    rgb = _astronaut(64)[..., ::-1]
    Image.fromarray(rgb).save(cm / 'a_rgb.png')
    Image.fromarray(rgb).convert('CMYK').save(cm / 'b_cmyk.tif')
    out = str(tmp_path / 'out2')
    prepare([str(cm), '-o', out] + ALIGNED + ['--image-format', 'png'])
    import lmdb
    env = lmdb.open(os.path.join(out, 'hr.lmdb'), readonly=True, lock=False)
    with env.begin() as txn:
        a = cv2.imdecode(np.frombuffer(txn.get(b'a_rgb'), np.uint8), cv2.IMREAD_UNCHANGED)
        b = cv2.imdecode(np.frombuffer(txn.get(b'b_cmyk'), np.uint8), cv2.IMREAD_UNCHANGED)
    env.close()
    assert a.shape == b.shape == (32, 32, 3) and np.abs(a.astype(int) - b).max() <= 1


def test_ctrl_c_says_how_to_resume(tmp_path, capsys):
    src = smooth_photos(str(tmp_path / 'photos'), 8)
    out = str(tmp_path / 'out')
    assert main([src, '-o', out] + ALIGNED, _fault=fault_at('after_photo', 5)) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'same command' in err and 'Traceback' not in err
    assert os.path.join(out, '.staging') in err
    assert main([src, '-o', out] + ALIGNED) == 0
    assert len(open(os.path.join(out, 'manifest.jsonl')).readlines()) == 8


def test_bad_input_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('FSR_DEBUG', raising=False)
    assert main([str(tmp_path / 'nowhere'), '-o', str(tmp_path / 'o')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('fsr-prepare: error:') and 'nowhere' in err
    assert main([str(tmp_path), '-o', str(tmp_path / 'o'), '--recipe', 'laat']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'img_celeba' in err
    monkeypatch.setenv('FSR_DEBUG', '1')
    with pytest.raises(FileNotFoundError):
        main([str(tmp_path / 'nowhere'), '-o', str(tmp_path / 'o')])


def test_resume_does_not_redo_finished_photos(tmp_path, monkeypatch):
    """Issue 19: count the per-photo work and the detector calls of a resumed run."""
    src = smooth_photos(str(tmp_path / 'photos'), 10)
    (tmp_path / 'photos' / 'a_broken.png').write_bytes(b'not a png')  # sorted first: a skip among the finished
    calls = []
    orig = prep.PrepareJob.process

    def counting(self, rel, key):
        calls.append(rel)
        return orig(self, rel, key)

    monkeypatch.setattr(prep.PrepareJob, 'process', counting)
    out = str(tmp_path / 'out')
    args = [src, '-o', out, '--workers', '1'] + ALIGNED  # (in this process: the calls are counted here)
    # commit every 3: a_broken, img00, img01 are committed when the 5th photo is interrupted
    with pytest.raises(Interrupt):
        prepare(args, _fault=fault_at('after_photo', 5))
    assert len(calls) == 5
    calls.clear()
    summary = prepare(args)
    assert summary['faces'] == 10 and summary['skipped'] == 1
    assert calls == [f'img{i:02d}.png' for i in range(2, 10)]
    calls.clear()
    assert prepare(args)['status'] == 'complete' and calls == []


def test_resume_does_not_rerun_the_detector(tmp_path, monkeypatch):
    from fsr_data.face_align import FaceDetector
    src = tmp_path / 'photos'
    src.mkdir()
    face = _astronaut(200)
    for i, img in enumerate([face, face[:, ::-1], cv2.resize(face, (180, 180)), np.full((60, 60, 3), 128, np.uint8)]):
        cv2.imwrite(str(src / f'p{i}.png'), img)
    n = {'detect': 0}
    orig = FaceDetector.detect

    def counting(self, img):
        n['detect'] += 1
        return orig(self, img)

    monkeypatch.setattr(FaceDetector, 'detect', counting)
    out = str(tmp_path / 'out')
    args = [str(src), '-o', out, '--commit-every', '1', '--workers', '1'] + DETECT  # (detections counted here)
    with pytest.raises(Interrupt):
        prepare(args, _fault=fault_at('after_photo', 3))  # p0, p1 committed; p2 lost with the interruption
    assert n['detect'] == 3
    n['detect'] = 0
    summary = prepare(args)
    assert n['detect'] == 2 and summary['faces'] == 3 and summary['skipped'] == 1


def test_help_imports_nothing_heavy():
    """``prepare.py --help`` (loaded on its own, without the package's dataset registration) imports neither torch nor
    basicsr: the heavy modules are imported when a run needs them."""
    code = ('import importlib.util, sys\n'
            f'spec = importlib.util.spec_from_file_location("prep_alone", {prep.__file__!r})\n'
            'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n'
            'try:\n    m.main(["--help"])\nexcept SystemExit:\n    pass\n'
            'print("HEAVY", sorted(k for k in ("torch", "basicsr", "torchvision", "facenet_pytorch", "cv2", "numpy") '
            'if k in sys.modules))\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert '--recipe' in res.stdout and 'HEAVY []' in res.stdout
