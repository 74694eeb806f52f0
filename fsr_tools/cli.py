"""Console scripts ``fsr-train`` and ``fsr-test``: BasicSR's own train/test pipelines with the plugin loaded.

They take BasicSR's flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``, ``--local_rank``)
and write ``experiments/``, ``results/`` and ``tb_logger/`` under the current directory, never under site-packages.

A failure prints one line, ``error: <what, naming the file/option, and the fix>``; the traceback is shown with
``FSR_DEBUG=1`` in the environment or with BasicSR's ``--debug`` flag (which also makes a ``debug_`` experiment, as in
BasicSR). Exit status 2: a problem with the options or the data (:class:`fsr_utils.safety.UsageError`); 1: any other
failure (e.g. a training that diverged).

What is refused, and where (:mod:`fsr_utils.compat`, :mod:`fsr_models.fsr_model`, :mod:`fsr_data.face_dataset`):

* Before any data is read: a missing ``dataroot_*``, an unknown network or model type, an output folder that is a
  file, a total batch that does not divide; every number of the options file out of its range, each error naming the
  key and the range (``train:total_iter=-5``, ``ema_decay: 1``, ``gt_size`` not a multiple of ``scale``, ``scale``
  that differs from the network's ``upscale``, ...); a ``--force_yml`` key that the file does not have and no part of
  BasicSR or the plugin reads (``train:totl_iter=7``), or a value of another kind than the file's
  (``train:total_iter=abc``); ``+key=value`` adds a key anyway (:func:`fsr_utils.compat.check_force_yml`).
* ``--auto_resume`` in an experiment folder that holds another network's run: one line naming both networks, before
  anything is written there.
* A checkpoint (``path.pretrain_network_*``, a resumed state, the network of ``fsr-test``) with NaN or Inf weights, or
  of another network: refused when it is loaded, naming the file and the tensor.
* An LR set of the wrong scale (LR size x scale != HR size): refused when the dataset is built (every pair of an LMDB
  set, from its ``meta_info.txt``; the first pair of a folder) and at every read, naming the key, both sets, the sizes
  and the fix; never scored on a cropped corner of the HR face.
* A NaN or Inf loss stops the training at the iteration where it appears, naming the iteration and the loss, before
  the optimizer step applies it; no checkpoint of NaN weights is ever written. Under ``train: amp: fp16`` the check
  is on the loss value, so a gradient overflow that the gradient scaler skips does not stop the run.
* The speed options (``train: amp / channels_last / compile / tf32 / grad_scaler``, ``val: amp``;
  :mod:`fsr_models.fsr_model`) are checked with the numbers; the log states which are on. ``num_gpu`` > 1 without
  ``--launcher`` (``num_gpu: auto`` on a multi-GPU machine) trains with DataParallel: a warning gives the torchrun
  command for DDP.
"""
import importlib
import os
import sys


def _prepare_argv():
    # torch >= 2 launchers pass --local-rank; BasicSR's parser knows --local_rank.
    sys.argv = [a.replace('--local-rank', '--local_rank', 1) if a.startswith('--local-rank') else a for a in sys.argv]


def _check_opt_file():
    if '-opt' in sys.argv:
        i = sys.argv.index('-opt')
        if i + 1 < len(sys.argv) and not os.path.isfile(sys.argv[i + 1]):
            print(
                f'error: options file {sys.argv[i + 1]} does not exist (pass an existing YAML file to -opt).',
                file=sys.stderr)
            sys.exit(2)


def show_traceback():
    """True when a failure should show its traceback: ``FSR_DEBUG`` set (not 0) or BasicSR's ``--debug`` flag."""
    return os.environ.get('FSR_DEBUG', '0') not in ('', '0') or '--debug' in sys.argv


def _plugin_error(exc):
    from fsr_utils.safety import UsageError
    return isinstance(exc, (UsageError, FloatingPointError))


def error_line(exc):
    """One line for an exception: the message of the plugin's own errors, else ``Type: message``.

    An error raised in a DataLoader worker arrives with the worker's traceback in its message: its last line is kept.
    """
    text = str(
        exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    if 'Original Traceback' in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(': ', 1)[1] if last.startswith(type(exc).__name__ + ': ') else last
    if not (_plugin_error(exc) or isinstance(exc, KeyError)):
        text = f'{type(exc).__name__}: {text}'
    return 'error: ' + ' '.join(text.split()) + ' (FSR_DEBUG=1 shows the traceback)'


def exit_status(exc):
    """2 for a problem with the options or the data (a ``UsageError``), 1 for any other failure."""
    from fsr_utils.safety import UsageError
    return 2 if isinstance(exc, UsageError) else 1


def _run(module, pipeline):
    _prepare_argv()
    _check_opt_file()
    from fsr_utils import plugin
    plugin.load()
    try:
        getattr(importlib.import_module(module), pipeline)(os.getcwd())
    except KeyboardInterrupt:
        if show_traceback():
            raise
        sys.exit('error: interrupted. A training resumes from its last saved state with the same command and '
                 '--auto_resume.')
    except Exception as exc:  # one line for the user; the traceback behind FSR_DEBUG / --debug
        if show_traceback():
            raise
        print(error_line(exc), file=sys.stderr, flush=True)
        sys.exit(exit_status(exc))
    finally:
        _end_process_group()


def _end_process_group():
    """Under DDP, destroy the process group before the interpreter exits: left to the interpreter's teardown, gloo's
    threads could abort a rank after a finished training (``terminate called without an active exception``, SIGABRT:
    seen once in 4 runs of the 2-process test; torch warns about it too)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train():
    """Entry point of ``fsr-train -opt options/X.yml``."""
    _run('basicsr.train', 'train_pipeline')


def test():
    """Entry point of ``fsr-test -opt options/test_X.yml``."""
    _run('basicsr.test', 'test_pipeline')
