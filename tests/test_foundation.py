"""The plugin as a user installs it: registration, BasicSR entry points, fsr-train/fsr-test, resume and CPU DDP."""
import glob
import json
import os
import pytest
import re
import shutil
import subprocess
import sys
import torch
from helpers import (console_script, make_face_dataset, read_losses, run_command, run_fsr_train, subprocess_env,
                     tiny_test_opt, tiny_train_opt, write_opt)

PLUGIN_PACKAGES = ('fsr_arch', 'fsr_data', 'fsr_losses', 'fsr_metrics', 'fsr_models', 'fsr_utils')
REGISTRIES = ('ARCH_REGISTRY', 'DATASET_REGISTRY', 'LOSS_REGISTRY', 'METRIC_REGISTRY', 'MODEL_REGISTRY')
DUMP_REGISTRIES = ('import json, basicsr.utils.registry as r\n'
                   'print(json.dumps({n: {k: v.__module__ for k, v in getattr(r, n)._obj_map.items()} for n in %r}))' %
                   (REGISTRIES, ))
# What the plugin must register (the networks, datasets, losses and models of the issues).
EXPECTED = {
    'ARCH_REGISTRY': {'LAAT', 'AMINet', 'AMIGANDiscriminator', 'TANet', 'WNet'},
    'DATASET_REGISTRY': {'FSRFaceDataset'},
    'LOSS_REGISTRY': {'FSRPerceptualLoss', 'WNetKeyRegionLoss'},
    'METRIC_REGISTRY': {
        'calculate_face_vif', 'calculate_face_lpips', 'calculate_face_mps', 'calculate_face_identity',
        'calculate_face_landmark'
    },
    'MODEL_REGISTRY': {'FSRModel', 'FSRGANModel', 'WNetModel'},
}


def tiny_net(scale):
    from fsr_arch.tanet_arch import TINY_CONFIG
    return {'type': 'TANet', **TINY_CONFIG, 'upscale': scale}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_face_dataset(tmp_path_factory.mktemp('data'), num=8, hr_size=(32, 32), scales=(4, ))


def _registries(tmp_path, **env):
    proc = run_command([sys.executable, '-c', DUMP_REGISTRIES], tmp_path, env=subprocess_env(**env))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_registration_adds_plugin_names_without_collision(tmp_path):
    basicsr_only = _registries(tmp_path, FSR_DISABLE_BASICSR_HOOK='1')
    with_plugin = _registries(tmp_path)
    for reg in REGISTRIES:
        own = basicsr_only[reg]
        added = {k: m for k, m in with_plugin[reg].items() if k not in own}
        # BasicSR's own entries are untouched and every added name comes from a plugin package.
        assert all(with_plugin[reg][k] == m for k, m in own.items()), reg
        assert all(m.split('.')[0] in PLUGIN_PACKAGES for m in added.values()), (reg, added)
        assert EXPECTED.get(reg, set()) <= set(added), (reg, sorted(added))
    assert not any(m.startswith('fsr_') for reg in REGISTRIES for m in basicsr_only[reg].values())


def test_plugin_is_not_imported_without_basicsr(tmp_path):
    code = ('import sys, json, yaml, numpy\n'
            'print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r or m == "torch")))\n'
            'print("fsr_basicsr_hook" in sys.modules)' % (PLUGIN_PACKAGES, ))
    out = run_command([sys.executable, '-c', code], tmp_path).stdout.strip().splitlines()
    assert json.loads(out[0]) == []
    assert out[1] == 'True', 'the import hook (fsr_basicsr_hook.pth) is not installed in site-packages'


def test_unknown_optimizer_and_wrong_scale_give_clear_errors():
    from fsr_models.fsr_model import FSRModel
    model = FSRModel.__new__(FSRModel)
    with pytest.raises(ValueError, match='Unknown optimizer type "Adamm".*AdamW'):
        model.get_optimizer('Adamm', [torch.nn.Parameter(torch.zeros(1))], 1e-3)
    optim = model.get_optimizer('AdamW', [torch.nn.Parameter(torch.zeros(1))], 1e-3, weight_decay=0.02)
    assert isinstance(optim, torch.optim.AdamW) and optim.defaults['weight_decay'] == 0.02
    model.opt = {'scale': 4}
    with pytest.raises(ValueError, match=r'lr_x4.*a\.png|a\.png.*lr_x4'):
        model.check_pair({'lq': torch.zeros(1, 3, 16, 16), 'gt': torch.zeros(1, 3, 128, 128), 'lq_path': ['a.png']})


def test_fsr_train_resume_and_fsr_test_on_cpu(tmp_path, data):
    opt = tiny_train_opt(
        'tiny_resume',
        tiny_net(4),
        data,
        4,
        total_iter=6,
        dataset_extra={'gt_size': 32},
        extra={'logger': {
            'save_checkpoint_freq': 3
        }})
    run_fsr_train(opt, tmp_path)
    exp = tmp_path / 'experiments' / 'tiny_resume'
    assert sorted(os.listdir(exp / 'training_states')) == ['3.state', '6.state']
    # Resume from the latest state with BasicSR's --auto_resume and a longer schedule.
    proc = run_fsr_train(opt, tmp_path, args=['--auto_resume', '--force_yml', 'train:total_iter=9'])
    assert re.search(r'Resuming training from epoch: \d+, iter: 6\.', proc.stderr + proc.stdout)
    assert (exp / 'models' / 'net_g_9.pth').is_file()
    assert len(read_losses(tmp_path, 'tiny_resume')['l_pix']) == 9

    test_opt = tiny_test_opt('tiny_test', tiny_net(4), data, exp / 'models' / 'net_g_9.pth')
    path = write_opt(test_opt, tmp_path / 'test.yml')
    proc = run_command([console_script('fsr-test'), '-opt', path], tmp_path)
    assert re.search(r'# psnr: \d+\.\d+', proc.stderr + proc.stdout)
    assert len(glob.glob(str(tmp_path / 'results' / 'tiny_test' / 'visualization' / 'tiny' / '*.png'))) == 8


def test_basicsr_own_train_entry_finds_plugin(tmp_path, data):
    """``python basicsr/train.py -opt ...`` in a BasicSR checkout (BasicSR unchanged) trains a plugin network."""
    import basicsr
    checkout = tmp_path / 'BasicSR'
    (checkout / 'basicsr').mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(basicsr.__file__), 'train.py'), checkout / 'basicsr' / 'train.py')
    opt = tiny_train_opt('tiny_dropin', tiny_net(4), data, 4, total_iter=2, dataset_extra={'gt_size': 32})
    path = write_opt(opt, checkout / 'tiny.yml')
    proc = run_command([sys.executable, 'basicsr/train.py', '-opt', path], checkout)
    assert 'Network [TANet] is created.' in proc.stderr + proc.stdout
    assert (checkout / 'experiments' / 'tiny_dropin' / 'models' / 'net_g_2.pth').is_file()


def test_ddp_two_processes_on_cpu(tmp_path, data):
    opt = tiny_train_opt('tiny_ddp', tiny_net(4), data, 4, total_iter=2, batch_size=2, dataset_extra={'gt_size': 32})
    path = write_opt(opt, tmp_path / 'ddp.yml')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29617',
        console_script('fsr-train'), '-opt', path, '--launcher', 'pytorch'
    ]
    proc = run_command(cmd, tmp_path)
    assert 'world_size: 2' in proc.stderr + proc.stdout
    assert (tmp_path / 'experiments' / 'tiny_ddp' / 'models' / 'net_g_2.pth').is_file()


def test_training_state_loads_with_weights_only(tmp_path):
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    from fsr_utils.compat import load_training_state
    optim = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], 1e-3)
    sched = MultiStepRestartLR(optim, milestones=[5, 10], gamma=0.5)
    torch.save({
        'iter': 3,
        'optimizers': [optim.state_dict()],
        'schedulers': [sched.state_dict()]
    }, tmp_path / '3.state')
    state = load_training_state(str(tmp_path / '3.state'))
    assert state['iter'] == 3 and dict(state['schedulers'][0]['milestones']) == {5: 1, 10: 1}
    with pytest.raises(FileNotFoundError, match='resume_state'):
        load_training_state(str(tmp_path / 'missing.state'))


def test_a_broken_plugin_names_itself_when_basicsr_is_imported(tmp_path):
    broken = tmp_path / 'shadow' / 'fsr_losses'
    broken.mkdir(parents=True)
    (broken / '__init__.py').write_text('raise RuntimeError("boom")\n')
    env = subprocess_env()
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path / 'shadow'), env['PYTHONPATH']])
    proc = run_command([sys.executable, '-c', 'import basicsr'], tmp_path, env=env, check=False)
    assert proc.returncode != 0
    assert 'basicsr-fsr' in proc.stderr and 'boom' in proc.stderr and 'FSR_DISABLE_BASICSR_HOOK=1' in proc.stderr


def test_missing_options_file_is_a_clear_error(tmp_path):
    proc = run_command([console_script('fsr-train'), '-opt', 'nope.yml'], tmp_path, check=False)
    assert proc.returncode != 0 and 'options file nope.yml does not exist' in proc.stderr


@pytest.mark.parametrize('module,flag', [('fsr_data.prepare', '--recipe'), ('fsr_metrics.benchmark', '--paper'),
                                         ('fsr_tools.infer_cli', '--upscale')])
def test_console_script_help_imports_nothing_heavy(module, flag):
    """``fsr-prepare/fsr-benchmark/fsr-infer --help`` through their real entry points (package imports included) print
    the options without importing torch or basicsr (the packages register their classes lazily)."""
    code = (f'import sys\nfrom {module} import main\n'
            'try:\n    main(["--help"])\nexcept SystemExit:\n    pass\n'
            'print("HEAVY", sorted(k for k in ("torch", "basicsr", "torchvision", "cv2") if k in sys.modules))\n')
    res = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         timeout=120,
                         env=subprocess_env())
    assert res.returncode == 0, res.stderr
    assert flag in res.stdout and 'HEAVY []' in res.stdout, res.stdout[-500:]
