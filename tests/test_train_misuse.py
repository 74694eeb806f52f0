"""Issue 23: misuse of fsr-train / fsr-test never loses a file and never turns a broken input into a number.

Non-finite weights are refused where they are loaded, a non-finite loss stops the training before its step, a
wrong-scale LR set is refused instead of scored on a cropped corner, the numbers of an options file and the keys of
``--force_yml`` are checked before any work, and ``--auto_resume`` in another network's folder says so in one line.
"""
import copy
import cv2
import math
import os
import pytest
import re
import torch
from helpers import (console_script, make_face_dataset, read_losses, run_command, run_fsr_train, tiny_test_opt,
                     tiny_train_opt, write_opt)

from fsr_utils import compat

compat.install_torchvision_shim()

from fsr_utils import plugin  # noqa: E402

plugin.load()


def tiny_net(kind='TANet', scale=4):
    if kind == 'LAAT':
        from fsr_arch.laat_arch import TINY_CONFIG
    else:
        from fsr_arch.tanet_arch import TINY_CONFIG
    return {'type': kind, **TINY_CONFIG, 'upscale': scale}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_face_dataset(tmp_path_factory.mktemp('data'), num=4, hr_size=(32, 32), scales=(4, 8))


def train_opt(name, data, **kw):
    kw.setdefault('total_iter', 2)
    kw.setdefault('batch_size', 2)
    kw.setdefault('dataset_extra', {'gt_size': 32})
    return tiny_train_opt(name, tiny_net(), data, 4, **kw)


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith('error:')]


def one_error(proc, status=2):
    """The single ``error:`` line of a run that failed with ``status`` (and no traceback)."""
    lines = error_lines(proc)
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert 'Traceback' not in proc.stderr
    return lines[0]


def files_under(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def pth_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.pth')) if os.path.isdir(folder) else []


def poisoned_checkpoint(path, value, net=None):
    """A checkpoint of the tiny TANet with ``value`` (NaN or Inf) in one weight; returns the tensor's name."""
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net_opt = dict(net or tiny_net())
    state = build_network(net_opt).state_dict()
    name = [k for k, v in state.items() if v.is_floating_point()][1]
    state[name].view(-1)[3] = value
    torch.save({'params': state}, str(path))
    return name


def all_finite(path):
    state = torch.load(str(path), map_location='cpu', weights_only=True)
    return all(torch.isfinite(v).all() for sd in state.values() for v in sd.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------- non-finite weights
def test_nan_or_inf_pretrained_weights_are_refused(tmp_path, data):
    ckpt = tmp_path / 'nan.pth'
    name = poisoned_checkpoint(ckpt, math.nan)
    opt = train_opt('pre_nan', data)
    opt['path']['pretrain_network_g'] = str(ckpt)
    line = one_error(run_fsr_train(opt, tmp_path, check=False))
    assert 'path.pretrain_network_g' in line and str(ckpt) in line and name in line and 'NaN or Inf' in line
    assert pth_files(tmp_path / 'experiments' / 'pre_nan' / 'models') == []

    ckpt = tmp_path / 'inf.pth'
    name = poisoned_checkpoint(ckpt, math.inf)
    path = write_opt(tiny_test_opt('test_inf', tiny_net(), data, ckpt), tmp_path / 'test.yml')
    proc = run_command([console_script('fsr-test'), '-opt', path], tmp_path, check=False)
    line = one_error(proc)
    assert str(ckpt) in line and name in line and '# psnr' not in proc.stdout + proc.stderr
    assert not list((tmp_path / 'results').rglob('*.png'))


def test_a_checkpoint_of_another_network_is_one_line(tmp_path, data):
    ckpt = tmp_path / 'tanet.pth'
    poisoned_checkpoint(ckpt, 0.5)  # a finite TANet checkpoint
    path = write_opt(tiny_test_opt('test_laat', tiny_net('LAAT'), data, ckpt), tmp_path / 'test.yml')
    line = one_error(run_command([console_script('fsr-test'), '-opt', path], tmp_path, check=False))
    assert str(ckpt) in line and 'does not fit the network LAAT' in line and 'tensors' in line


def test_resume_from_nan_weights_is_refused_and_auto_resume_skips_them(tmp_path, data):
    opt = train_opt('res_nan', data, total_iter=4, extra={'logger': {'save_checkpoint_freq': 2}})
    run_fsr_train(opt, tmp_path)
    exp = tmp_path / 'experiments' / 'res_nan'
    state = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    name = sorted(state['params'])[0]
    state['params'][name].view(-1)[0] = math.nan
    torch.save(state, exp / 'models' / 'net_g_4.pth')

    explicit = copy.deepcopy(opt)
    explicit['path']['resume_state'] = str(exp / 'training_states' / '4.state')
    line = one_error(run_fsr_train(explicit, tmp_path, check=False))
    assert 'net_g_4.pth' in line and name in line and 'NaN or Inf' in line

    proc = run_fsr_train(opt, tmp_path, args=['--auto_resume'])
    out = proc.stdout + proc.stderr
    assert re.search(r'skipping training state \S*4\.state: .*net_g_4\.pth holds NaN or Inf', out)
    assert re.search(r'Resuming training from epoch: \d+, iter: 2\.', out)
    assert all_finite(exp / 'models' / 'net_g_4.pth')


# ------------------------------------------------------------------------------------------------ non-finite loss
def test_a_diverging_training_stops_at_the_first_non_finite_loss(tmp_path, data):
    """lr 1e30: the weights blow up after the first step; BasicSR logged `l_pix: nan`, saved NaN checkpoints and
    exited 0. The run must stop at the first non-finite loss, naming it, with only finite checkpoints on disk."""
    opt = train_opt('diverge', data, total_iter=6, lr=1e30, extra={'logger': {'save_checkpoint_freq': 1}})
    line = one_error(run_fsr_train(opt, tmp_path, check=False), status=1)
    match = re.search(r'iteration (\d+): non-finite loss l_pix = (nan|inf)', line)
    assert match, line
    bad = int(match.group(1))
    logged = read_losses(tmp_path, 'diverge')['l_pix']
    assert len(logged) == bad - 1 and all(math.isfinite(v) for v in logged)  # every step before it was finite
    models = tmp_path / 'experiments' / 'diverge' / 'models'
    assert pth_files(models) == sorted(f'net_g_{i}.pth' for i in range(1, bad))
    assert all(all_finite(models / f) for f in pth_files(models))


def _gan_opt(**train):
    from fsr_arch.amigan_discriminator_arch import TINY_CONFIG as D_TINY
    from fsr_arch.aminet_arch import TINY_CONFIG
    opt = {
        'name': 'gan', 'model_type': 'FSRGANModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1,
        'network_g': {'type': 'AMINet', 'upscale': 4, **TINY_CONFIG},
        'network_d': {'type': 'AMIGANDiscriminator', **D_TINY},
        'path': {'pretrain_network_g': None, 'pretrain_network_d': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'optim_d': {'type': 'Adam', 'lr': 1e-4},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.01}, **train
        },
    }  # yapf: disable
    return opt


def _wnet_opt():
    from fsr_arch.wnet_arch import TINY_CONFIG
    opt = _gan_opt()
    opt.update(model_type='WNetModel', network_g={'type': 'WNet', 'upscale': 4, **TINY_CONFIG})
    del opt['network_d'], opt['train']['optim_d'], opt['train']['gan_opt']
    opt['train']['pixel_opt'] = {'type': 'MSELoss', 'loss_weight': 1.0}
    return opt


def _weights(*nets):
    return [p.detach().clone() for net in nets for p in net.parameters()]


@pytest.mark.parametrize('case', ['gan_g', 'gan_d', 'wnet', 'fsr'])
def test_every_model_stops_before_the_step_that_would_apply_a_non_finite_loss(case):
    """FSRGANModel (generator and discriminator steps), WNetModel and FSRModel: a NaN in the batch gives a NaN loss;
    the error names the iteration and the loss, and no weight has changed (the step was not applied)."""
    from basicsr.models import build_model

    from fsr_models.fsr_model import NonFiniteLossError
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    if case == 'gan_g':
        opt, expected = _gan_opt(), r'iteration 7: non-finite loss l_g_pix = nan.*optimizer_g'
        lq[0, 0, 0, 0] = math.nan
    elif case == 'gan_d':  # no generator step before net_d_init_iters: the discriminator's real loss goes first
        opt, expected = _gan_opt(net_d_init_iters=10), r'iteration 7: non-finite loss l_d_real = nan.*optimizer_d'
        gt[1, 2, 3, 4] = math.nan
    elif case == 'wnet':
        opt, expected = _wnet_opt(), r'iteration 7: non-finite loss l_pix = nan'
        lq[1, 1, 2, 2] = math.inf
    else:
        opt = _wnet_opt()
        opt.update(model_type='FSRModel', network_g=tiny_net())
        opt['train']['pixel_opt']['loss_weight'] = math.inf  # an overflowing loss: inf, not nan
        expected = r'iteration 7: non-finite loss l_pix = inf'
    model = build_model(opt)
    nets = [model.net_g] + ([model.net_d] if hasattr(model, 'net_d') else [])
    before = _weights(*nets)
    model.feed_data({'lq': lq, 'gt': gt})
    with pytest.raises(NonFiniteLossError, match=expected):
        model.optimize_parameters(7)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(*nets)))


# ------------------------------------------------------------------------------------------------ wrong scale
def test_a_wrong_scale_test_or_validation_set_is_refused(tmp_path, data):
    """An x8 LR set under an x4 network: BasicSR cropped the HR face to its top-left corner and scored it."""
    ckpt = tmp_path / 'net.pth'
    poisoned_checkpoint(ckpt, 0.5)
    test_opt = tiny_test_opt('test_x8', tiny_net(), data, ckpt)
    test_opt['datasets']['test_1']['dataroot_lq'] = data['lr_x8']
    path = write_opt(test_opt, tmp_path / 'test.yml')
    proc = run_command([console_script('fsr-test'), '-opt', path], tmp_path, check=False)
    line = one_error(proc)
    assert 'key 00000' in line and data['lr_x8'] in line and data['hr'] in line and 'LR 4x4' in line
    assert 'HR 32x32' in line and 'lr_x4' in line and '# psnr' not in proc.stdout + proc.stderr

    opt = train_opt('val_x8', data, dataset_type='FSRFaceDataset', extra={'val': {'val_freq': 1, 'save_img': False}})
    opt['datasets']['val'] = dict(opt['datasets']['train'], name='val', dataroot_lq=data['lr_x8'])
    line = one_error(run_fsr_train(opt, tmp_path, check=False))
    assert data['lr_x8'] in line and 'x scale 4 != HR 32x32' in line
    assert pth_files(tmp_path / 'experiments' / 'val_x8' / 'models') == []  # refused before the first step


@pytest.mark.parametrize('dataset_type', ['FSRFaceDataset', 'PairedImageDataset'])
def test_every_paired_read_checks_the_sizes(tmp_path, data, dataset_type):
    """Folders are checked on their first pair when built; every later read checks its own pair."""
    from basicsr.data import build_dataset

    from fsr_utils.compat import PairSizeError
    from fsr_utils.safety import UsageError
    hr_dir, lr_dir = tmp_path / 'hr', tmp_path / 'lr'
    hr_dir.mkdir()
    lr_dir.mkdir()
    rng = torch.Generator().manual_seed(0)
    hrs = {}
    for i in range(2):
        hrs[f'f{i}.png'] = (torch.rand(32, 32, 3, generator=rng) * 255).to(torch.uint8).numpy()
        cv2.imwrite(str(hr_dir / f'f{i}.png'), hrs[f'f{i}.png'])
        cv2.imwrite(str(lr_dir / f'f{i}.png'), cv2.resize(hrs[f'f{i}.png'], (8, 8), interpolation=cv2.INTER_AREA))
    dataset = build_dataset({
        'name': 'folders', 'type': dataset_type, 'phase': 'val', 'scale': 4, 'dataroot_gt': str(hr_dir),
        'dataroot_lq': str(lr_dir), 'io_backend': {'type': 'disk'}
    })  # yapf: disable
    second = os.path.basename(dataset.paths[1]['lq_path'])  # the set was checked on its first pair: replace another
    cv2.imwrite(str(lr_dir / second), cv2.resize(hrs[second], (4, 4), interpolation=cv2.INTER_AREA))
    assert tuple(dataset[0]['gt'].shape) == (3, 32, 32)
    with pytest.raises(
            PairSizeError, match=re.escape(second) + r': LR 4x4 in .*lr x scale 4 != HR 32x32 in .*hr '
            r'\(an x8 pair\)'):
        dataset[1]
    assert issubclass(PairSizeError, UsageError)


def test_lmdb_pairs_are_checked_when_the_set_is_built(tmp_path, data):
    from basicsr.data import build_dataset

    from fsr_utils.compat import PairSizeError
    for dataset_type in ('FSRFaceDataset', 'PairedImageDataset'):
        with pytest.raises(PairSizeError, match=re.escape(data['lr_x8']) + r'.* \(an x8 pair\)'):
            build_dataset({
                'name': 'x8', 'type': dataset_type, 'phase': 'train', 'scale': 4, 'gt_size': 32,
                'dataroot_gt': data['hr'], 'dataroot_lq': data['lr_x8'], 'io_backend': {'type': 'lmdb'}
            })  # yapf: disable


def test_model_check_pair_names_both_files():
    from fsr_models.fsr_model import FSRModel
    model = FSRModel.__new__(FSRModel)
    model.opt = {'scale': 4}
    with pytest.raises(ValueError, match=r'\(16, 16\) x scale 4 != HR size \(32, 32\) \(LR a\.png, HR b\.png\)'):
        model.check_pair({'lq': torch.zeros(1, 3, 16, 16), 'gt': torch.zeros(1, 3, 32, 32), 'lq_path': 'a.png',
                          'gt_path': ['b.png']})  # yapf: disable


# ---------------------------------------------------------------------------------------------------- numbers
def _checked_opt(data, mutate):
    opt = train_opt('nums', data, dataset_type='FSRFaceDataset', extra={'val': {'val_freq': 2, 'save_img': False}})
    opt['datasets']['val'] = dict(opt['datasets']['train'], name='val')
    opt.update(is_train=True, dist=False, rank=0, world_size=1, _opt_file='my.yml')
    mutate(opt)
    return opt


def _set(path, value):

    def mutate(opt):
        node = opt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


BAD_NUMBERS = [
    (('train', 'total_iter'), -5, r'train\.total_iter must be an integer >= 1, not -5'),
    (('train', 'total_iter'), 'abc', r"train\.total_iter must be an integer, not 'abc'"),
    (('train', 'total_iter'), 2.5, r'train\.total_iter must be an integer, not 2\.5'),
    (('train', 'total_iter'), None, r'train\.total_iter .* is missing'),
    (('datasets', 'train', 'batch_size_per_gpu'), 0, r'datasets\.train\.batch_size_per_gpu must be an integer >= 1'),
    (('datasets', 'train', 'num_worker_per_gpu'), -1, r'datasets\.train\.num_worker_per_gpu must be .* >= 0'),
    (('datasets', 'train', 'gt_size'), 30, r'datasets\.train\.gt_size 30 is not a multiple of scale 4'),
    (('datasets', 'train', 'dataset_enlarge_ratio'), 0, r'datasets\.train\.dataset_enlarge_ratio must be a number > 0'),
    (('scale', ), 8, r'scale 8 differs from network_g\.upscale \(TANet sets 4\)'),
    (('scale', ), 0, r'scale must be an integer >= 1'),
    (('num_gpu', ), -1, r'num_gpu must be an integer >= 0, not -1 \(or auto'),
    (('manual_seed', ), -1, r'manual_seed must be an integer in \[0, 4294967295\]'),
    (('train', 'optim_g', 'lr'), 0, r'train\.optim_g\.lr must be a number > 0, not 0'),
    (('train', 'optim_g', 'lr'), math.nan, r'train\.optim_g\.lr must be a finite number'),
    (('train', 'optim_g', 'betas'), [0.9, 1.5], r'train\.optim_g\.betas\[1\] must be a number in \[0, 1\)'),
    (('train', 'ema_decay'), 1, r'train\.ema_decay must be a number in \[0, 1\), not 1'),
    (('train', 'warmup_iter'), -2, r'train\.warmup_iter must be an integer >= -1'),
    (('train', 'scheduler', 'milestones'), [100, -1], r'train\.scheduler\.milestones\[1\] must be an integer >= 1'),
    (('train', 'scheduler', 'gamma'), 0, r'train\.scheduler\.gamma must be a number > 0'),
    (('train', 'pixel_opt', 'loss_weight'), -1, r'train\.pixel_opt\.loss_weight must be a number >= 0'),
    (('val', 'val_freq'), 0, r'val\.val_freq must be an integer >= 1'),
    (('logger', 'print_freq'), 0, r'logger\.print_freq must be an integer >= 1'),
    (('logger', 'save_checkpoint_freq'), -3, r'logger\.save_checkpoint_freq must be an integer >= 1'),
]


@pytest.mark.parametrize('path,value,message', BAD_NUMBERS, ids=lambda v: str(v))
def test_numbers_out_of_range_name_the_key_and_range(data, path, value, message):
    opt = _checked_opt(data, _set(path, value))
    with pytest.raises(compat.OptionsError, match=r'^my\.yml: ' + message):
        compat.check_options(opt)


def test_numbers_that_basicsr_allows_pass(data):
    opt = _checked_opt(data, _set(('train', 'total_iter'), 1e5))  # a YAML !!float 1e5: BasicSR's int() takes it
    compat.check_options(opt)
    assert opt['train']['total_iter'] == 100000 and isinstance(opt['train']['total_iter'], int)
    for path, value in ((('manual_seed', ), None), (('num_gpu', ), 'auto'), (('train', 'warmup_iter'), -1),
                        (('train', 'ema_decay'), 0), (('datasets', 'train', 'gt_size'), [32, 16]),
                        (('datasets', 'val', 'batch_size_per_gpu'), None), (('val', ), None)):
        compat.check_options(_checked_opt(data, _set(path, value)))
    epochs = _checked_opt(data, _set(('train', 'total_iter'), None))
    epochs['train']['total_epochs'] = 2
    compat.check_options(epochs)


def test_fsr_train_refuses_a_negative_total_iter_before_any_work(tmp_path, data):
    proc = run_fsr_train(train_opt('neg', data), tmp_path, args=['--force_yml', 'train:total_iter=-5'], check=False)
    line = one_error(proc)
    assert 'neg.yml: train.total_iter must be an integer >= 1, not -5' in line
    assert not (tmp_path / 'experiments').exists()


# ------------------------------------------------------------------------------------------------ --force_yml
def test_fsr_train_refuses_an_unknown_or_mistyped_force_yml_key(tmp_path, data):
    opt = train_opt('force', data)
    line = one_error(run_fsr_train(opt, tmp_path, args=['--force_yml', 'train:totl_iter=7'], check=False))
    assert 'train:totl_iter' in line and 'did you mean train:total_iter' in line and '+train:totl_iter=7' in line
    line = one_error(run_fsr_train(opt, tmp_path, args=['--force_yml', 'train:total_iter=abc'], check=False))
    assert 'train:total_iter is number in the file (2)' in line and "'abc' reads as text" in line
    assert not (tmp_path / 'experiments').exists()


def _file_opt():
    return {
        'name': 'x', 'num_gpu': 0, 'scale': 4,
        'datasets': {'train': {'type': 'FSRFaceDataset', 'total_batch_size': 4, 'gt_size': 32}},
        'network_g': tiny_net(),
        'path': {'pretrain_network_g': None},
        'train': {'total_epochs': 3, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10]}},
        'logger': {'print_freq': 10},
    }  # yapf: disable


@pytest.mark.parametrize('entry', [
    'train:total_epochs=5', 'datasets:train:batch_size_per_gpu=1', 'train:total_iter=2', 'network_g:num_feat=8',
    'train:ema_decay=0.999', 'num_gpu=auto', 'datasets:train:gt_size=[32, 16]', 'path:pretrain_network_g=a.pth',
    'train:optim_g:weight_decay=0.01', 'train:scheduler:milestones_epochs=[1]', 'logger:save_checkpoint_freq=5',
    'datasets:train:gt_size=~', 'name=other', 'train:optim_g:lr=1e-3', 'train:total_epochs=-1'
])
def test_force_yml_accepts_keys_that_exist_or_that_basicsr_reads(entry):
    assert compat.check_force_yml(_file_opt(), [entry]) == [entry]


@pytest.mark.parametrize('entry,message', [
    ('train:totl_iter=7', r'no key train:totl_iter \(did you mean train:total_iter\?\)'),
    ('network_g:num_fet=8', r'no key network_g:num_fet \(did you mean network_g:num_feat\?\)'),
    ('train:optim_g:lr=abc', r"train:optim_g:lr is number in the file \(0\.001\), and 'abc' reads as text.*1e5"),
    ('scale=x4', r'scale is number in the file'),
    ('name=7', r'name is text in the file'),
    ('train:scheduler:milestones=5', r'milestones is list in the file'),
    ('val:val_freq=5', r'the file has no section val'),
    ('train:total_epochs:x=5', r'train:total_epochs is 3 in the file, not a section'),
    ('train:total_iter=1=2', r'exactly one "="'),
    ('train:total_iter', r'exactly one "="'),
    ('train"]:x=1', r'is not a key path'),
])
def test_force_yml_refuses_what_basicsr_would_silently_add_or_mistype(entry, message):
    with pytest.raises(compat.OptionsError, match=message):
        compat.check_force_yml(_file_opt(), [entry], 'my.yml')


def test_force_yml_reads_signed_and_exponent_numbers():
    assert [compat.force_value(t) for t in ('-5', '1e-3', '+2', '2.5', '7', 'abc', '~', '[1, 2]')
            ] == [-5, 0.001, 2, 2.5, 7, 'abc', None, [1, 2]]


def test_force_yml_plus_adds_any_key_and_entries_apply_in_order():
    assert compat.check_force_yml(_file_opt(), ['+train:my_option=1', '+name=7']) == ['train:my_option=1', 'name=7']
    # a section set to ~ by an earlier entry has no keys for a later one
    with pytest.raises(compat.OptionsError, match='is None in the file, not a section'):
        compat.check_force_yml(_file_opt(), ['path=~', 'path:pretrain_network_g=a.pth'])


# ------------------------------------------------------------------------------------------ another network's run
def test_auto_resume_in_another_networks_folder_is_one_line_and_writes_nothing(tmp_path, data):
    run_fsr_train(train_opt('same', data), tmp_path)
    exp = tmp_path / 'experiments' / 'same'
    before = files_under(exp)
    other = tiny_train_opt('same', tiny_net('LAAT'), data, 4, total_iter=2, batch_size=2, dataset_extra={'gt_size': 32})
    proc = run_fsr_train(other, tmp_path, args=['--auto_resume'], check=False)
    line = one_error(proc)
    assert re.search(r'net_g_2\.pth holds a TANet network \(as \S+same\.yml states\), not the LAAT of \S+same\.yml',
                     line), line
    assert 'another name' in line and 'name=same_2' in line
    assert files_under(exp) == before  # nothing written into the other run's folder
