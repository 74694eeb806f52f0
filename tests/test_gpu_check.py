"""scripts/gpu_check.py in its CPU mode: the GPU check must work the first time a GPU is lent (issue 25, part 5)."""
import os
import sys
from helpers import REPO_ROOT, run_command, subprocess_env

SCRIPT = os.path.join(REPO_ROOT, 'scripts', 'gpu_check.py')
sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))


def test_gpu_check_cpu_mode_with_a_relative_workdir(tmp_path):
    """gpu_check.sh passes a relative --workdir; fsr-train runs inside it, so paths handed over must be absolute."""
    cmd = [sys.executable, SCRIPT, '--cpu', '--iters', '1', '--only', 'train_tanet_x4', '--workdir', 'rel/work']
    proc = run_command(cmd + ['--timeout', '500'], tmp_path, env=subprocess_env(OMP_NUM_THREADS='1'))
    assert 'ok   options/train_tanet_x4.yml: 1 iterations' in proc.stdout, proc.stdout + proc.stderr
    assert '1 passed, 0 failed' in proc.stdout
    assert os.path.isdir(tmp_path / 'rel' / 'work' / 'experiments' / 'gpucheck_train_tanet_x4')


def test_one_run_per_network_and_scale():
    import glob
    import gpu_check
    import yaml
    files = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', 'train_*.yml')))
    kept = gpu_check.one_per_kind(files)
    kinds = {}
    for f in files:
        opt = yaml.safe_load(open(f))
        kinds.setdefault((opt['model_type'], opt['network_g']['type'], opt['scale']), []).append(f)
    assert len(kept) == len(kinds)  # one file for each kind, and every kind covered
    for f in kept:
        opt = yaml.safe_load(open(f))
        group = kinds[(opt['model_type'], opt['network_g']['type'], opt['scale'])]
        assert f in group and len(os.path.basename(f)) == min(len(os.path.basename(g)) for g in group)
    assert [f for f in files if f in kept] == kept  # the given order is kept
    assert os.path.join(REPO_ROOT, 'options', 'train_tanet_x4.yml') in kept  # the paper file, not a variant
