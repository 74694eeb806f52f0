"""Training reliability (issues 17 and 19): atomic checkpoints, resume that survives a truncated state and restores
exactly what was saved, test-time padding reached by a validation, one-line option errors, and BasicSR's own
``python -m basicsr.train`` / ``python -m basicsr.test`` entry points."""
import copy
import cv2
import numpy as np
import os
import pytest
import re
import sys
import torch
from helpers import (make_face_dataset, run_command, run_fsr_train, subprocess_env, tiny_test_opt, tiny_train_opt,
                     write_opt)

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.data import build_dataloader  # noqa: E402
from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402

from fsr_utils import plugin  # noqa: E402

plugin.load()


def tiny_net(scale=4):
    from fsr_arch.tanet_arch import TINY_CONFIG
    return {'type': 'TANet', **TINY_CONFIG, 'upscale': scale}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_face_dataset(tmp_path_factory.mktemp('data'), num=8, hr_size=(32, 32), scales=(4, ))


def _in_process_opt(tmp_path, data, name='tiny_inproc', **kw):
    """A training option dict completed as BasicSR's parse_options does (paths under ``tmp_path``), CPU, no DDP."""
    opt = tiny_train_opt(name, tiny_net(), data, 4, dataset_extra={'gt_size': 32, 'phase': 'train', 'scale': 4}, **kw)
    exp = os.path.join(str(tmp_path), 'experiments', name)
    opt['path'].update(
        experiments_root=exp,
        models=os.path.join(exp, 'models'),
        training_states=os.path.join(exp, 'training_states'),
        log=exp,
        visualization=os.path.join(exp, 'visualization'))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return opt


def _batches(opt, num):
    dataset = PairedImageDataset(opt['datasets']['train'])
    loader = build_dataloader(dataset, opt['datasets']['train'], num_gpu=0, dist=False, sampler=None, seed=0)
    it = iter(loader)
    return [next(it) for _ in range(num)]


def _train_steps(model, batches, start_iter):
    for i, batch in enumerate(batches, start_iter + 1):
        model.update_learning_rate(i)
        model.feed_data(batch)
        model.optimize_parameters(i)


# ------------------------------------------------------------------------------------------------ atomic checkpoints
class _Unpicklable:
    """Pickling it fails, after the tensors before it in the dict have been written."""

    def __reduce__(self):
        raise RuntimeError('killed in the middle of the save')


def test_a_save_that_dies_midway_leaves_no_truncated_state(tmp_path):
    """A failure during ``save_training_state`` (as a kill would) must not leave a truncated ``N.state``."""
    from basicsr.models.base_model import BaseModel
    opt = {'path': {'training_states': str(tmp_path), 'models': str(tmp_path)}}
    fake = type('Fake', (), {})()
    fake.opt = opt
    good = type('O', (), {'state_dict': lambda self: {'big': torch.zeros(50000)}})()
    fake.optimizers, fake.schedulers = [good], []
    BaseModel.save_training_state(fake, 0, 3)
    before = (tmp_path / '3.state').read_bytes()
    bad = type('O', (), {'state_dict': lambda self: {'big': torch.ones(50000), 'x': _Unpicklable()}})()
    fake.optimizers = [bad]
    for it in (3, 6):  # overwrite an existing state, write a new one
        with pytest.raises(Exception, match='killed in the middle'):
            BaseModel.save_training_state(fake, 0, it)
    assert (tmp_path / '3.state').read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['3.state'], 'a partial file or a temporary file was left behind'
    assert compat.load_training_state(str(tmp_path / '3.state'))['iter'] == 3
    # network checkpoints too
    fake.get_bare_model = lambda net: net
    BaseModel.save_network(fake, torch.nn.Linear(2, 2), 'net_g', 3)
    assert set(torch.load(tmp_path / 'net_g_3.pth', weights_only=True)['params']) == {'weight', 'bias'}


def test_find_resume_state_skips_truncated_and_orphan_states(tmp_path, data):
    opt = _in_process_opt(tmp_path, data)
    states, models = opt['path']['training_states'], opt['path']['models']
    sd = {'params': torch.nn.Linear(2, 2).state_dict()}
    for it in (3, 6, 9):
        torch.save({'epoch': 0, 'iter': it, 'optimizers': [], 'schedulers': []}, os.path.join(states, f'{it}.state'))
        torch.save(sd, os.path.join(models, f'net_g_{it}.pth'))
    raw = open(os.path.join(states, '9.state'), 'rb').read()
    open(os.path.join(states, '9.state'), 'wb').write(raw[:len(raw) // 2])  # killed during the save of 9.state
    os.remove(os.path.join(models, 'net_g_6.pth'))  # a state whose network is missing cannot be resumed either
    messages = []
    assert compat.find_resume_state(opt, messages.append) == os.path.join(states, '3.state')
    assert '9.state' in messages[0] and 'cannot be used' in messages[0]
    assert '6.state' in messages[1] and 'net_g_6.pth' in messages[1]
    os.remove(os.path.join(states, '3.state'))
    with pytest.raises(compat.OptionsError, match='none of the training states'):
        compat.find_resume_state(opt, messages.append)


@pytest.mark.slow
def test_auto_resume_falls_back_past_a_truncated_newest_state(tmp_path, data):
    """The probe of issue 17.3: a kill during the save of ``6.state``; ``--auto_resume`` must resume from 3."""
    opt = tiny_train_opt(
        'tiny_trunc',
        tiny_net(),
        data,
        4,
        total_iter=6,
        dataset_extra={'gt_size': 32},
        extra={'logger': {
            'save_checkpoint_freq': 3
        }})
    run_fsr_train(opt, tmp_path)
    state6 = tmp_path / 'experiments' / 'tiny_trunc' / 'training_states' / '6.state'
    state6.write_bytes(state6.read_bytes()[:1000])
    proc = run_fsr_train(opt, tmp_path, args=['--auto_resume', '--force_yml', 'train:total_iter=9'], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r'skipping training state \S*6\.state', out)
    assert re.search(r'Resuming training from epoch: \d+, iter: 3\.', out)
    assert (tmp_path / 'experiments' / 'tiny_trunc' / 'models' / 'net_g_9.pth').is_file()


# --------------------------------------------------------------------------------------------- resume restores state
def test_resume_restores_weights_optimizer_and_scheduler_exactly(tmp_path, data):
    """Issue 19: after a resume the network, Adam's moments and the scheduler equal the saved ones, and the next step
    is the same as the uninterrupted run's."""
    opt = _in_process_opt(tmp_path, data, batch_size=2)
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [2, 3], 'gamma': 0.5}
    batches = _batches(opt, 4)
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    _train_steps(model, batches[:3], 0)
    model.save(epoch=0, current_iter=3)

    opt2 = copy.deepcopy(opt)
    opt2['auto_resume'] = True
    state = compat.load_resume_state(opt2)
    assert state['iter'] == 3 and opt2['path']['pretrain_network_g'].endswith('net_g_3.pth')
    torch.manual_seed(123)  # a different init: everything must come from the files
    resumed = build_model(opt2)
    resumed.resume_training(state)

    for (name, p), (_, q) in zip(model.net_g.named_parameters(), resumed.net_g.named_parameters()):
        assert torch.equal(p, q), name
    saved, restored = model.optimizers[0].state_dict(), resumed.optimizers[0].state_dict()
    assert saved['param_groups'] == restored['param_groups']
    assert len(saved['state']) == len(restored['state']) > 0
    for k in saved['state']:
        for key in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(torch.as_tensor(saved['state'][k][key]), torch.as_tensor(restored['state'][k][key]))
    assert resumed.schedulers[0].state_dict() == model.schedulers[0].state_dict()
    assert resumed.get_current_learning_rate() == model.get_current_learning_rate() == [1e-3
                                                                                        ]  # halved once (iteration 3)
    _train_steps(model, batches[3:], 3)
    _train_steps(resumed, batches[3:], 3)
    for (name, p), (_, q) in zip(model.net_g.named_parameters(), resumed.net_g.named_parameters()):
        assert torch.equal(p, q), name
    assert resumed.get_current_learning_rate() == [5e-4]  # halved again at 3 (iteration 4)


# -------------------------------------------------------------------------------------------- test-time padding
class _NearestUp(torch.nn.Module):
    """A stand-in network whose output is known: nearest x4; it only accepts multiples of ``size_multiple``."""
    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.seen = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0, f'input {tuple(x.shape)} is not padded'
        return torch.nn.functional.interpolate(x, scale_factor=4, mode='nearest') + 0 * self.dummy


def test_validation_pads_lr_sizes_that_are_not_multiples(tmp_path):
    """Issue 19: a validation at LR 9x7 (size_multiple 4) reaches FSRModel's padding; the output is the network's
    output on the original pixels, cropped back to 36x28."""
    data = make_face_dataset(tmp_path / 'odd', num=2, hr_size=(36, 28), scales=(4, ))
    opt = {
        'name': 'pad_val',
        'model_type': 'FSRModel',
        'scale': 4,
        'num_gpu': 0,
        'dist': False,
        'rank': 0,
        'world_size': 1,
        'is_train': False,
        'network_g': tiny_net(),
        'path': {
            'pretrain_network_g': None,
            'strict_load_g': True,
            'visualization': str(tmp_path / 'vis'),
            'results_root': str(tmp_path)
        },
        'val': {
            'save_img': True,
            'suffix': None,
            'metrics': {
                'psnr': {
                    'type': 'calculate_psnr',
                    'crop_border': 0,
                    'test_y_channel': False
                }
            }
        },
    }
    model = build_model(opt)
    model.net_g = _NearestUp()
    ds_opt = {
        'name': 'odd',
        'type': 'PairedImageDataset',
        'phase': 'test',
        'scale': 4,
        'dataroot_gt': data['hr'],
        'dataroot_lq': data['lr_x4'],
        'io_backend': {
            'type': 'lmdb'
        }
    }
    loader = build_dataloader(PairedImageDataset(ds_opt), ds_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    model.validation(loader, current_iter='pad', tb_logger=None, save_img=True)
    assert model.net_g.seen == [(12, 8), (12, 8)]  # 9x7 padded to multiples of 4
    psnrs = []
    for item in loader.dataset:  # the pairs as the dataset gives them (BGR uint8 via BasicSR's tensor2img)
        key = os.path.splitext(os.path.basename(item['lq_path']))[0]
        lr, hr = tensor2img(item['lq']), tensor2img(item['gt'])
        sr = cv2.imread(str(tmp_path / 'vis' / 'odd' / f'{key}_pad_val.png'))
        assert lr.shape[:2] == (9, 7) and sr.shape == hr.shape == (36, 28, 3)
        np.testing.assert_array_equal(sr, np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1))
        psnrs.append(calculate_psnr(sr, hr, 0))
    assert len(psnrs) == 2
    assert model.metric_results['psnr'] == pytest.approx(np.mean(psnrs))


# ----------------------------------------------------------------------------------------------- option errors
def test_option_problems_are_found_before_the_run(tmp_path, data):
    opt = _in_process_opt(tmp_path, data)
    compat.check_options(opt)  # a good file passes
    opt['_opt_file'] = 'my.yml'
    bad = copy.deepcopy(opt)
    bad['datasets']['train']['dataroot_lq'] = str(tmp_path / 'nope' / 'lr_x4.lmdb')
    with pytest.raises(compat.OptionsError, match=r'my\.yml: datasets\.train\.dataroot_lq = .*nope.* does not exist'):
        compat.check_options(bad)
    bad = copy.deepcopy(opt)
    bad['network_g']['type'] = 'TANett'
    with pytest.raises(compat.OptionsError, match=r'my\.yml: network_g\.type "TANett" .*did you mean TANet'):
        compat.check_options(bad)
    bad = copy.deepcopy(opt)
    bad['model_type'] = 'FSRModle'
    with pytest.raises(compat.OptionsError, match=r'model_type "FSRModle".*FSRModel'):
        compat.check_options(bad)
    (tmp_path / 'blocker').write_text('a file')
    bad = copy.deepcopy(opt)
    bad['path']['experiments_root'] = str(tmp_path / 'blocker' / 'exp')
    with pytest.raises(compat.OptionsError, match=r'blocker is a file'):
        compat.check_options(bad)


def test_fsr_train_prints_one_error_line(tmp_path, data):
    opt = tiny_train_opt('tiny_err', tiny_net(), data, 4, dataset_extra={'gt_size': 32})
    opt['datasets']['train']['dataroot_gt'] = 'datasets/missing/hr.lmdb'
    proc = run_fsr_train(opt, tmp_path, check=False)
    assert proc.returncode == 2  # a problem of the options: exit status 2, as every tool of the plugin
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'tiny_err.yml' in errors[0] and 'dataroot_gt' in errors[0], proc.stderr
    assert 'fsr-prepare' in errors[0] and 'Traceback' not in proc.stderr
    (tmp_path / 'experiments').write_text('not a folder')
    opt['datasets']['train']['dataroot_gt'] = data['hr']
    path = write_opt(opt, tmp_path / 'tiny_err.yml')
    proc = run_command([sys.executable, '-c', 'from fsr_tools.cli import train; train()', '-opt', path],
                       tmp_path,
                       check=False,
                       env=subprocess_env(FSR_DEBUG='1'))
    assert proc.returncode == 1 and 'Traceback' in proc.stderr and 'experiments is a file' in proc.stderr


# -------------------------------------------------------------------------------- BasicSR's own entry points
@pytest.mark.slow
def test_python_m_basicsr_train_and_test(tmp_path, data):
    """Issue 19: ``python -m basicsr.train`` and ``python -m basicsr.test`` run the plugin's networks, write under the
    current directory (not site-packages), and take the plugin's total batch option."""
    opt = tiny_train_opt('tiny_m', tiny_net(), data, 4, total_iter=2, dataset_extra={'gt_size': 32})
    opt['logger']['use_tb_logger'] = True  # tb_logger/ too goes under the current directory
    train = opt['datasets']['train']
    del train['batch_size_per_gpu']
    train['total_batch_size'] = 4
    path = write_opt(opt, tmp_path / 'train.yml')
    proc = run_command([sys.executable, '-m', 'basicsr.train', '-opt', path], tmp_path)
    out = proc.stdout + proc.stderr
    assert 'Network [TANet] is created.' in out and re.search(r'Batch size per gpu: 4\b', out)
    ckpt = tmp_path / 'experiments' / 'tiny_m' / 'models' / 'net_g_2.pth'
    assert ckpt.is_file() and (tmp_path / 'tb_logger' / 'tiny_m').is_dir()
    test_opt = tiny_test_opt('tiny_m_test', tiny_net(), data, ckpt)
    path = write_opt(test_opt, tmp_path / 'test.yml')
    proc = run_command([sys.executable, '-m', 'basicsr.test', '-opt', path], tmp_path)
    assert re.search(r'# psnr: \d+\.\d+', proc.stdout + proc.stderr)
    assert len(list((tmp_path / 'results' / 'tiny_m_test' / 'visualization' / 'tiny').glob('*.png'))) == 8


@pytest.mark.slow
def test_resumed_training_continues_the_data_order(tmp_path, data):
    """Issue 17.6: a training interrupted at iteration 3 (mid-epoch) and resumed ends with the same weights as the
    uninterrupted run (no random augmentation here, one thread), which needs the same faces in the same batches."""
    opt = tiny_train_opt(
        'tiny_order',
        tiny_net(),
        data,
        4,
        total_iter=6,
        batch_size=2,  # 8 faces: 4 iterations per epoch, the state at 3 is mid-epoch
        dataset_extra={
            'gt_size': 32,
            'use_hflip': False
        },
        extra={'logger': {
            'save_checkpoint_freq': 3
        }})
    run_fsr_train(opt, tmp_path)
    exp = tmp_path / 'experiments' / 'tiny_order'
    uninterrupted = torch.load(exp / 'models' / 'net_g_6.pth', weights_only=True)['params']
    for f in (exp / 'models' / 'net_g_6.pth', exp / 'training_states' / '6.state'):
        f.unlink()
    proc = run_fsr_train(opt, tmp_path, args=['--auto_resume'])
    out = proc.stdout + proc.stderr
    assert re.search(r'Resuming training from epoch: 0, iter: 3\.', out)
    assert 'data order restored: epoch 0 continues at batch 4 of 4' in out
    resumed = torch.load(exp / 'models' / 'net_g_6.pth', weights_only=True)['params']
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], resumed[key]), key


def test_ema_network_follows_the_batchnorm_statistics(tmp_path, data):
    """BasicSR's model_ema averages parameters only: net_g_ema's BatchNorm running statistics stayed at their initial
    values (a W-Net trained with ema_decay scored ~10 dB through params_ema). FSRModel's EMA copies the buffers."""
    opt = _in_process_opt(tmp_path, data, name='tiny_ema')
    opt['train']['ema_decay'] = 0.9
    model = build_model(opt)
    torch.manual_seed(0)
    model.net_g = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    model.net_g_ema = copy.deepcopy(model.net_g)
    ema_weight = model.net_g_ema[0].weight.detach().clone()
    model.net_g.train()
    model.net_g(torch.rand(2, 3, 8, 8) * 5 + 3)  # moves the running statistics
    with torch.no_grad():
        model.net_g[0].weight.add_(1.0)
    model.model_ema(0.9)
    bn, bn_ema = model.net_g[1], model.net_g_ema[1]
    assert not torch.equal(bn.running_mean, torch.zeros(4))
    assert torch.equal(bn_ema.running_mean, bn.running_mean) and torch.equal(bn_ema.running_var, bn.running_var)
    assert int(bn_ema.num_batches_tracked) == 1
    # the parameters are still averaged, not copied
    torch.testing.assert_close(model.net_g_ema[0].weight, 0.9 * ema_weight + 0.1 * model.net_g[0].weight)
