"""The shared rules of fsr_utils.safety: numbers, output paths, folder locks, atomic writes, finite weights."""
import argparse
import os
import pytest
import resource
import subprocess
import sys
import textwrap

from fsr_utils import safety
from fsr_utils.safety import UsageError


@pytest.mark.parametrize('value,kw', [(0, dict(minimum=1)), (-4, dict(minimum=1)), (3, dict(choices=(4, 8))),
                                      (float('nan'), dict()), (float('inf'), dict(maximum=5)), (True, dict()),
                                      ('4', dict()), (2.5, dict(integer=True)), (1.0, dict(minimum=1, min_open=True)),
                                      (0.5, dict(minimum=0, maximum=0.5, max_open=True))])
def test_check_number_refuses(value, kw):
    with pytest.raises(UsageError, match='--opt'):
        safety.check_number('--opt', value, **kw)


def test_check_number_accepts_and_normalises():
    assert safety.check_number('--scale', 4, choices=(4, 8)) == 4
    assert safety.check_number('--n', 4.0, minimum=1, integer=True) == 4
    assert isinstance(safety.check_number('--n', 4.0, minimum=1, integer=True), int)
    assert safety.check_number('--f', 0.0, minimum=0, maximum=1) == 0.0


def test_argparse_types_name_the_option(capsys):
    parser = argparse.ArgumentParser(prog='tool')
    parser.add_argument('--scale', type=safety.int_range(choices=(4, 8)))
    parser.add_argument('--zoom', type=safety.float_range(0, min_open=True))
    assert parser.parse_args(['--scale', '8', '--zoom', '0.5']).zoom == 0.5
    for argv in (['--scale', '3'], ['--scale', 'x'], ['--zoom', '0'], ['--zoom', '-1'], ['--zoom', 'nan']):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
        assert argv[0] in capsys.readouterr().err


def test_output_path_rules(tmp_path):
    photos = tmp_path / 'photos'
    (photos / 'sub').mkdir(parents=True)
    (photos / 'a.png').write_bytes(b'x')
    inputs = [(str(photos), '-i')]
    for out in (photos, photos / 'sub', tmp_path):
        with pytest.raises(UsageError, match='-o'):
            safety.check_output_path(str(out), '-o', inputs)
    assert safety.check_output_path(str(photos / 'sub'), '-o', inputs, allow_inside_inputs=True)
    assert safety.check_output_path(str(tmp_path / 'out' / 'deep'), '-o', inputs)
    (tmp_path / 'file').write_bytes(b'x')
    with pytest.raises(UsageError, match='is a file'):
        safety.check_output_path(str(tmp_path / 'file'), '-o')
    with pytest.raises(UsageError, match='is a file'):
        safety.check_output_path(str(tmp_path / 'file' / 'below'), '-o')


def test_folder_lock_second_holder_is_named(tmp_path):
    out = tmp_path / 'out'
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(safety.__file__)))!r})
        from fsr_utils.safety import FolderLock
        with FolderLock({str(out)!r}, 'holder-tool'):
            print('locked', flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(UsageError, match=f'holder-tool, PID {holder.pid}'):
            safety.FolderLock(str(out), 'second').acquire()
    finally:
        holder.kill()
        holder.wait()
    # the killed holder left its file behind: the next run takes the lock over
    with safety.FolderLock(str(out), 'third') as lock:
        assert open(lock.path).read().startswith('third, PID')
    assert not os.path.exists(os.path.join(out, safety.LOCK_NAME))


def test_folder_lock_in_process(tmp_path):
    with safety.FolderLock(str(tmp_path), 'a'):
        with pytest.raises(UsageError, match='in use'):
            safety.FolderLock(str(tmp_path), 'b').acquire()
    with safety.FolderLock(str(tmp_path), 'b'):
        pass


def _write_with_limit(path, data, limit):
    """Run atomic_write_bytes in a child whose file-size limit is ``limit`` bytes (a full disk's stand-in)."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(safety.__file__)))!r})
        from fsr_utils.safety import atomic_write_bytes
        try:
            atomic_write_bytes({str(path)!r}, b'x' * {len(data)})
        except OSError as e:
            print('OSError', e)
            sys.exit(3)
    """)
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)


def test_atomic_write_failure_leaves_old_file(tmp_path):
    path = tmp_path / 'a.png'
    path.write_bytes(b'old')
    proc = _write_with_limit(path, b'x' * 100000, 1000)
    assert proc.returncode == 3, proc.stderr
    assert str(path) in proc.stdout
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['a.png']  # no temporary file left
    proc = _write_with_limit(tmp_path / 'b.png', b'x' * 100, 1000)
    assert proc.returncode == 0 and (tmp_path / 'b.png').read_bytes() == b'x' * 100
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # the limit was the child's only


def test_check_finite_state_dict_names_the_tensor():
    import torch
    sd = {
        'params': {
            'conv.weight': torch.ones(3),
            'conv.bias': torch.tensor([1., float('nan')]),
            'bn.num_batches_tracked': torch.tensor(3)
        }
    }
    with pytest.raises(ValueError, match=r'ckpt.pth holds NaN or Inf weights: params.conv.bias \(1 of 2'):
        safety.check_finite_state_dict(sd, 'ckpt.pth')
    sd['params']['conv.bias'] = torch.tensor([1., float('-inf')])
    with pytest.raises(ValueError, match='conv.bias'):
        safety.check_finite_state_dict(sd, 'ckpt.pth')
    sd['params']['conv.bias'] = torch.zeros(2)
    assert safety.check_finite_state_dict(sd, 'ckpt.pth') is sd


def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path):
    plain = tmp_path / 'plain'
    plain.write_bytes(b'x')
    safety.atomic_write_bytes(str(tmp_path / 'atomic'), b'x')
    assert (tmp_path / 'atomic').stat().st_mode == plain.stat().st_mode


def test_range_wording():
    with pytest.raises(UsageError, match=r'^--n must be an integer >= 1, not 0\.$'):
        safety.check_number('--n', 0, minimum=1, integer=True)
    with pytest.raises(UsageError, match=r'^--f must be a number in \(0, 1\], not 2\.$'):
        safety.check_number('--f', 2, minimum=0, maximum=1, min_open=True)


def test_output_file_that_exists_is_a_valid_file_output(tmp_path):
    (tmp_path / 'table.md').write_text('x')
    assert safety.check_output_path(str(tmp_path / 'table.md'), '--out', kind='file')
    with pytest.raises(UsageError, match='is a file'):
        safety.check_output_path(str(tmp_path / 'table.md' / 'below.md'), '--out', kind='file')
    with pytest.raises(UsageError, match='is a folder'):
        safety.check_output_path(str(tmp_path), '--out', kind='file')


def test_size_range():
    parse = safety.size_range(8, 4096)
    assert parse('128') == (128, 128) and parse('216x176') == (216, 176) and parse('216,176') == (216, 176)
    for bad in ('4', '128x', 'axb', '1x2x3', '128x5000'):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
