"""The rules every tool of the plugin follows for the numbers it takes and the files it writes (docs/reliability.md).

One place for them, so that ``fsr-prepare``, ``fsr-degrade``, ``fsr-infer``, ``fsr-benchmark``, ``fsr-speed`` and
``fsr-train`` behave alike (``../shared/DESIGN.md``, "Files a tool writes"):

* Numbers are checked at parse time (:func:`int_range`, :func:`float_range`, :func:`check_number`): one ``error:``
  line that names the option and its valid range.
* Output folders are checked before any work (:func:`check_output_path`): not a file, not an input, not inside an
  input folder and not holding one, writable.
* One run per output folder at a time (:class:`FolderLock`): a lock file holding the PID, released when the process
  ends (``fcntl.flock``: a killed run never leaves a stale lock); a second run names the holder and stops.
* Files are written to a temporary name in the same folder and renamed when complete (:func:`atomic_write_bytes`,
  :func:`atomic_write_text`, :func:`atomic_imwrite`); a failed write raises, it is never skipped.
* Broken numbers are refused where they enter (:func:`check_finite_state_dict`): a checkpoint with NaN or Inf weights
  names the tensor.

This module imports neither torch nor OpenCV at import time (``--help`` of the tools must work without them).
"""
import argparse
import math
import os
import sys
import tempfile

LOCK_NAME = '.fsr.lock'


class UsageError(ValueError):
    """A problem with what the user asked for, found before any work: the message names the option and the fix.

    Console scripts print it as one ``error:`` line and exit with status 2.
    """


# ------------------------------------------------------------------------------------------------------------- numbers
def _range_text(minimum, maximum, min_open=False, max_open=False):
    if minimum is not None and maximum is not None:
        return f'{"(" if min_open else "["}{minimum}, {maximum}{")" if max_open else "]"}'
    if minimum is not None:
        return f'{">" if min_open else ">="} {minimum}'
    if maximum is not None:
        return f'{"<" if max_open else "<="} {maximum}'
    return 'any finite number'


def check_number(name, value, minimum=None, maximum=None, min_open=False, max_open=False, integer=False, choices=None):
    """``value`` if it is a finite number in range (and an integer when ``integer``), else :class:`UsageError`.

    Args:
        name (str): the option as the user wrote it (``--scale``, ``train.total_iter``), named in the message.
        value: the value (bool is refused as a number).
        minimum, maximum: bounds (None: unbounded); ``min_open``/``max_open`` make them exclusive.
        integer (bool): require an integer (an integral float such as 4.0 is accepted and returned as int).
        choices (iterable | None): the allowed values, when only a few are.
    """
    what = 'an integer' if integer else 'a number'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f'{name} must be {what}, not {value!r}.')
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f'{name} must be a finite number, not {value!r}.')
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise UsageError(f'{name} must be an integer, not {value!r}.')
            value = int(value)
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise UsageError(f'{name} must be one of {", ".join(str(c) for c in choices)}, not {value!r}.')
        return value
    low_bad = minimum is not None and (value <= minimum if min_open else value < minimum)
    high_bad = maximum is not None and (value >= maximum if max_open else value > maximum)
    if low_bad or high_bad:
        where = _range_text(minimum, maximum, min_open, max_open)
        where = f'in {where}' if minimum is not None and maximum is not None else where
        raise UsageError(f'{name} must be {what} {where}, not {value!r}.')
    return value


def _argparse_type(name, convert, **limits):

    def parse(text):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            kind = 'an integer' if convert is int else 'a number'
            raise argparse.ArgumentTypeError(f'{text!r} is not {kind}')
        try:
            return check_number(name, value, **limits)
        except UsageError as exc:
            # argparse prefixes "argument --opt:": keep only the range part
            raise argparse.ArgumentTypeError(str(exc).replace(f'{name} must be', 'must be', 1).rstrip('.'))

    parse.__name__ = 'int' if convert is int else 'float'  # argparse's "invalid int value" wording
    return parse


def int_range(minimum=None, maximum=None, choices=None):
    """An argparse ``type`` for integers in ``[minimum, maximum]`` (or one of ``choices``)."""
    return _argparse_type('value', int, minimum=minimum, maximum=maximum, integer=True, choices=choices)


def float_range(minimum=None, maximum=None, min_open=False, max_open=False):
    """An argparse ``type`` for finite floats in the range (``min_open``/``max_open``: exclusive bounds)."""
    return _argparse_type('value', float, minimum=minimum, maximum=maximum, min_open=min_open, max_open=max_open)


def size_range(minimum, maximum):
    """An argparse ``type`` for an image size ``N`` or ``HxW`` (also ``H,W``) -> ``(H, W)``, each side an integer in
    ``[minimum, maximum]``."""

    def parse(text):
        parts = str(text).lower().replace(',', 'x').split('x')
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
        if len(size) == 1:
            size = size * 2
        if len(size) != 2:
            raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
        if not all(minimum <= v <= maximum for v in size):
            raise argparse.ArgumentTypeError(f'size {text!r}: each side must be an integer in [{minimum}, {maximum}]')
        return size

    parse.__name__ = 'size'
    return parse


# ------------------------------------------------------------------------------------------------------------- paths
def real(path):
    """The canonical absolute path (links resolved)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def is_within(path, folder):
    """True when ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = real(path), real(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _first_existing(path):
    path = real(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_path(out, option, inputs=(), kind='folder', allow_inside_inputs=False):
    """Check an output path before any work; raise :class:`UsageError` naming ``option`` and the fix.

    Args:
        out (str): the output folder (``kind='folder'``) or file (``kind='file'``); need not exist.
        option (str): the option it came from (``-o``, ``--out``), named in the message.
        inputs (iterable[tuple[str, str]]): ``(path, option)`` of every input (file or folder).
        kind (str): 'folder' or 'file'.
        allow_inside_inputs (bool): allow an output folder inside an input folder (the tool then skips it when
            reading); an output that is an input, or that holds one, is refused whatever this says.

    Checks: the output is not an input and does not hold one; not inside an input folder (unless allowed); a folder
    output is not an existing file (and a file output not an existing folder); no file stands on the way to it; the
    nearest existing folder on its path is writable.
    """
    if out is None or str(out).strip() == '':
        raise UsageError(f'{option}: an output path is needed.')
    for path, in_option in inputs:
        if path is None:
            continue
        if real(out) == real(path):
            raise UsageError(f'{option} {out} is the input given by {in_option}: the tool never writes onto its '
                             'input. Choose another output path.')
        if os.path.isdir(path) and is_within(out, path) and not allow_inside_inputs:
            raise UsageError(f'{option} {out} is inside the input folder {path} ({in_option}): the outputs would be '
                             'mixed with (or written over) your inputs. Choose an output folder outside it.')
        if is_within(path, out):
            raise UsageError(f'{option} {out} holds the input {path} ({in_option}): the tool never writes into a '
                             'folder that holds its input. Choose another output path.')
    if os.path.exists(out):
        if kind == 'folder' and not os.path.isdir(out):
            raise UsageError(f'{option} {out} is a file, not a folder. Choose a folder path.')
        if kind == 'file' and os.path.isdir(out):
            raise UsageError(f'{option} {out} is a folder, not a file. Give a file path.')
    existing = _first_existing(out if kind == 'folder' else os.path.dirname(real(out)))
    if not os.path.isdir(existing):
        raise UsageError(f'{option} {out} cannot be made: {existing} is a file. Move it away or choose another path.')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f'{option} {out} cannot be written: {existing} is not writable for this user. Choose a '
                         'writable location.')
    return out


# ------------------------------------------------------------------------------------------------------------- locks
class FolderLock:
    """An exclusive lock on an output folder for the life of one run: ``with FolderLock(out, 'fsr-prepare'): ...``.

    The lock file ``<folder>/.fsr.lock`` holds the PID, host and command of the holder. ``fcntl.flock`` makes the
    lock itself, so the operating system releases it when the holder dies (a killed run leaves no stale lock; the file
    left behind is taken over by the next run). The folder is created if missing. A second run raises
    :class:`UsageError` naming the holder.
    """

    def __init__(self, folder, tool, option='-o'):
        self.folder, self.tool, self.option = folder, tool, option
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd = None

    def acquire(self):
        import fcntl
        import socket
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = b''
                try:
                    holder = os.pread(fd, 512, 0)
                except OSError:
                    pass
                os.close(fd)
                text = holder.decode('utf-8', 'replace').strip() or 'another process'
                raise UsageError(f'{self.option} {self.folder} is in use by another run ({text}): wait for it to '
                                 'finish, or choose another output folder.')
            # the holder before us may have removed the file after we opened it: lock the file that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{self.tool}, PID {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            if os.path.exists(self.path) and os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# ------------------------------------------------------------------------------------------------------------- writes
def _umask():
    """The process umask, read without changing it where the system says it (os.umask(0) would race with threads)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed, then renamed.

    A reader sees the old file or the complete new one, never a truncated file; any failure (disk full, file-size
    limit, permissions) removes the temporary file and raises ``OSError`` naming ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; a plain open() would honour the umask
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f'cannot write {path}: {exc.strerror or exc}') from exc
        raise


def atomic_write_text(path, text):
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_imwrite(path, img, params=()):
    """Encode ``img`` (OpenCV layout) by the extension of ``path`` (PNG when none) and write it atomically."""
    import cv2
    import numpy as np
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', np.ascontiguousarray(img), list(params))
    if not ok:
        raise OSError(f'cannot encode {path}')
    atomic_write_bytes(path, buf.tobytes())


# ------------------------------------------------------------------------------------------------------------- weights
def non_finite_tensors(state_dict):
    """``[(name, count of NaN/Inf values, numel)]`` of the floating-point tensors in a (nested) state dict."""
    import torch
    bad = []

    def visit(prefix, obj):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() or obj.is_complex():
                n = int((~torch.isfinite(obj)).sum())
                if n:
                    bad.append((prefix, n, obj.numel()))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                visit(f'{prefix}.{k}' if prefix else str(k), v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(f'{prefix}[{i}]', v)

    visit('', state_dict)
    return bad


def check_finite_state_dict(state_dict, source):
    """Raise ``ValueError`` when a tensor of ``state_dict`` holds NaN or Inf; the message names ``source`` and tensors.

    A checkpoint with non-finite weights gives non-finite outputs (a black or white face, a meaningless PSNR, a NaN
    training): it is refused where it is loaded.
    """
    bad = non_finite_tensors(state_dict)
    if bad:
        names = ', '.join(f'{n} ({c} of {t} values)' for n, c, t in bad[:3])
        more = f' and {len(bad) - 3} more tensors' if len(bad) > 3 else ''
        raise ValueError(
            f'{source} holds NaN or Inf weights: {names}{more}. The checkpoint is broken (e.g. saved after '
            'the training diverged): use an earlier checkpoint.')
    return state_dict


def error_exit(message, status=2):
    """Print one ``error:`` line to stderr and return ``status`` (for ``return error_exit(...)`` in a ``main``)."""
    print('error: ' + ' '.join(str(message).split()), file=sys.stderr, flush=True)
    return status


def exit_with_main(main_pid):
    """In a worker: a daemon thread that ends this process as soon as the main process ``main_pid`` has ended (a
    SIGKILL of ``fsr-prepare`` or ``fsr-benchmark --workers`` leaves no worker behind; the workers are children of the
    pool's server, and each holds the pipe the server watches, so neither would notice alone). Linux: waits on a
    pidfd; elsewhere polls each second.
    """
    import threading
    import time

    def watch():
        try:
            fd = os.pidfd_open(main_pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            import select
            poller = select.poll()
            poller.register(fd, select.POLLIN)  # readable once the process has ended (a zombie included)
            while not poller.poll():
                pass
        else:
            while True:
                try:
                    os.kill(main_pid, 0)
                except ProcessLookupError:
                    break
                except OSError:
                    pass
                time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name='fsr-main-watch', daemon=True).start()
