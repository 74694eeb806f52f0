"""Console scripts ``fsr-train`` and ``fsr-test``: BasicSR's own train/test pipelines with the plugin loaded.

They take BasicSR's flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``, ``--local_rank``)
and write ``experiments/``, ``results/`` and ``tb_logger/`` under the current directory, never under site-packages.

A failure prints one line, ``error: <what, naming the file/option, and the fix>``, and exits with status 1; the
traceback is shown with ``FSR_DEBUG=1`` in the environment or with BasicSR's ``--debug`` flag (which also makes a
``debug_`` experiment, as in BasicSR). Option problems (a missing ``dataroot_*``, an unknown network or model type,
an output folder that is a file, a total batch that does not divide) are found before any data is read
(:func:`fsr_utils.compat.check_options`).
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
            sys.exit(f'error: options file {sys.argv[i + 1]} does not exist (pass an existing YAML file to -opt).')


def show_traceback():
    """True when a failure should show its traceback: ``FSR_DEBUG`` set (not 0) or BasicSR's ``--debug`` flag."""
    return os.environ.get('FSR_DEBUG', '0') not in ('', '0') or '--debug' in sys.argv


def error_line(exc):
    """One line for an exception: the message of the plugin's own errors, else ``Type: message``."""
    from fsr_utils.compat import OptionsError
    if isinstance(exc, OptionsError):
        text = str(exc)
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = f'{exc.args[0]}'  # KeyError's str() adds quotes
    else:
        text = f'{type(exc).__name__}: {exc}'
    return 'error: ' + ' '.join(text.split()) + ' (FSR_DEBUG=1 shows the traceback)'


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
        sys.exit(error_line(exc))


def train():
    """Entry point of ``fsr-train -opt options/X.yml``."""
    _run('basicsr.train', 'train_pipeline')


def test():
    """Entry point of ``fsr-test -opt options/test_X.yml``."""
    _run('basicsr.test', 'test_pipeline')
