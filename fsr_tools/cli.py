"""Console scripts ``fsr-train`` and ``fsr-test``: BasicSR's own train/test pipelines with the plugin loaded.

They take BasicSR's flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``, ``--local_rank``)
and write ``experiments/``, ``results/`` and ``tb_logger/`` under the current directory, never under site-packages.
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


def _run(module, pipeline):
    _prepare_argv()
    _check_opt_file()
    from fsr_utils import plugin
    plugin.load()
    getattr(importlib.import_module(module), pipeline)(os.getcwd())


def train():
    """Entry point of ``fsr-train -opt options/X.yml``."""
    _run('basicsr.train', 'train_pipeline')


def test():
    """Entry point of ``fsr-test -opt options/test_X.yml``."""
    _run('basicsr.test', 'test_pipeline')
