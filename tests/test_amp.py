"""Issue 25.3 and 25.5: mixed precision, channels_last, torch.compile and TF32 as training options of the plugin's
models, checkpoints written by rank 0 only under DDP, and a warning where ``num_gpu`` > 1 trains with DataParallel.

Tiny networks on the CPU. fp16 does not run on the CPU (the models fall back to fp32, tested below); the fp16 gradient
scaler tests force it there by monkeypatching ``fsr_models.fsr_model.amp_unsupported`` (torch runs CPU fp16 autocast,
slowly: what the scaler does is the same as on a GPU). ``torch.compile`` with inductor takes minutes on the CPU (110 s
for the tiny TANet on this 2-core machine), so the option's plumbing is tested with a monkeypatched ``torch.compile``
and the real call with ``backend: eager`` (TorchDynamo's tracing without code generation, seconds).
"""
import copy
import logging
import math
import os
import pytest
import re
import sys
import torch
from helpers import (REPO_ROOT, make_face_dataset, read_losses, run_command, run_fsr_train, subprocess_env,
                     tiny_train_opt, write_opt)

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.models import build_model  # noqa: E402

from fsr_utils import plugin  # noqa: E402

plugin.load()

from fsr_models import fsr_model  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_net(kind='TANet'):
    if kind == 'WNet':
        from fsr_arch.wnet_arch import TINY_CONFIG
    elif kind == 'AMINet':
        from fsr_arch.aminet_arch import TINY_CONFIG
    else:
        from fsr_arch.tanet_arch import TINY_CONFIG
    return {'type': kind, 'upscale': 4, **TINY_CONFIG}


def model_opt(model_type='FSRModel', tmp_path=None, **train):
    """A completed in-process option dict (as BasicSR's parse_options makes it) of a tiny network of ``model_type``."""
    from fsr_arch.amigan_discriminator_arch import TINY_CONFIG as D_TINY
    opt = {
        'name': 'amp', 'model_type': model_type, 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'auto_resume': False,
        'network_g': tiny_net({'FSRModel': 'TANet', 'FSRGANModel': 'AMINet', 'WNetModel': 'WNet'}[model_type]),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, **train
        },
    }  # yapf: disable
    if model_type == 'FSRGANModel':
        opt['network_d'] = {'type': 'AMIGANDiscriminator', **D_TINY}
        opt['path']['pretrain_network_d'] = None
        opt['train'].update(
            optim_d={
                'type': 'Adam',
                'lr': 1e-3
            },
            gan_opt={
                'type': 'GANLoss',
                'gan_type': 'vanilla',
                'loss_weight': 0.01
            })
    if tmp_path is not None:
        exp = os.path.join(str(tmp_path), 'experiments', 'amp')
        opt['path'].update(experiments_root=exp, models=os.path.join(exp, 'models'),
                           training_states=os.path.join(exp, 'training_states'), log=exp,
                           visualization=os.path.join(exp, 'visualization'))  # yapf: disable
        for key in ('models', 'training_states'):
            os.makedirs(opt['path'][key], exist_ok=True)
    return opt


def batches(num, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [{'lq': torch.rand(2, 3, 8, 8, generator=gen), 'gt': torch.rand(2, 3, 32, 32, generator=gen)}
            for _ in range(num)]  # yapf: disable


def build(opt, seed=0):
    torch.manual_seed(seed)
    return build_model(copy.deepcopy(opt))


def train_steps(model, data, start=0):
    """Train on ``data`` from iteration ``start + 1``; returns the logged losses of each step."""
    logs = []
    for i, batch in enumerate(data, start + 1):
        model.update_learning_rate(i)
        model.feed_data(batch)
        model.optimize_parameters(i)
        logs.append(dict(model.log_dict))
    return logs


def weights(model):
    return [p.detach().clone() for p in model.net_g.parameters()]


@pytest.fixture
def log_records():
    """The records of BasicSR's logger (it does not propagate to the root logger, so caplog cannot see them)."""
    records = []

    class Keep(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger('basicsr')
    handler, level = Keep(level=logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def cpu_fp16(monkeypatch):
    """fp16 autocast allowed on the CPU (see the module docstring)."""
    monkeypatch.setattr(fsr_model, 'amp_unsupported', lambda device, amp: None)


# ------------------------------------------------------------------------------------------------------ bf16 / fp16
@pytest.mark.parametrize('model_type', ['FSRModel', 'FSRGANModel', 'WNetModel'])
def test_bf16_step_one_loss_is_close_to_fp32(model_type, log_records):
    """Same weights, same batch: the first loss under bf16 autocast is within 1% of fp32's, and it is not fp32's
    (autocast really ran: the convolutions of the network computed in bf16)."""
    opt = model_opt(model_type)
    data = batches(1)
    fp32 = build(opt)
    bf16 = build(model_opt(model_type, amp='bf16'))
    dtypes = {}

    def record(name):

        def hook(module, inputs, output):
            dtypes.setdefault(name, output.dtype)  # returns None: the output is kept

        return hook

    for name, model in (('fp32', fp32), ('bf16', bf16)):
        next(m for m in model.net_g.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(record(name))
    l32, l16 = train_steps(fp32, data)[0], train_steps(bf16, data)[0]
    assert dtypes == {'fp32': torch.float32, 'bf16': torch.bfloat16}
    for key, value in l32.items():
        if key.startswith('l_'):
            gap = abs(l16[key] - value) / abs(value)
            assert 0 < gap < 1e-2, (key, value, l16[key])
    assert any('Speed options: training bf16 autocast (train.amp)' in r for r in log_records)


def test_fp16_on_the_cpu_falls_back_to_fp32_with_a_warning(log_records):
    opt = model_opt(amp='fp16')
    model = build(opt)
    assert model.amp_dtype is None and not model.grad_scaler.is_enabled()
    warning = [r for r in log_records if r.startswith('train.amp fp16:')]
    assert len(warning) == 1 and 'running in fp32 instead' in warning[0] and 'bf16' in warning[0], log_records
    data = batches(2)
    assert train_steps(model, data) == train_steps(build(model_opt()), data)  # exactly the fp32 run


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_face_dataset(tmp_path_factory.mktemp('data'), num=4, hr_size=(32, 32), scales=(4, ))


def small_opt(name, data, **train):
    opt = tiny_train_opt(
        name,
        tiny_net(),
        data,
        4,
        total_iter=2,
        batch_size=2,
        dataset_extra={
            'gt_size': 32,
            'use_hflip': False
        },
        extra={'train': train})
    return opt


def test_fsr_train_bf16_and_fp16_fallback(tmp_path, data):
    """Through fsr-train: the log says what runs; bf16's first loss is close to fp32's; fp16 on the CPU warns and
    trains exactly as fp32 (same seed, same batches, one thread)."""
    runs = {}
    for amp in ('none', 'bf16', 'fp16'):
        opt = small_opt(f'amp_{amp}', data)
        proc = run_fsr_train(opt, tmp_path, args=['--force_yml', f'train:amp={amp}'])
        runs[amp] = (read_losses(tmp_path, opt['name'])['l_pix'], proc.stdout + proc.stderr)
    fp32, bf16, fp16 = runs['none'][0], runs['bf16'][0], runs['fp16'][0]
    assert len(fp32) == len(bf16) == 2
    assert 0 < abs(bf16[0] - fp32[0]) / fp32[0] < 1e-2
    assert 'Speed options: training fp32 (train.amp), channels_last off, compile off' in runs['none'][1]
    assert 'Speed options: training bf16 autocast (train.amp)' in runs['bf16'][1]
    out = runs['fp16'][1]
    assert re.search(r'WARNING: train\.amp fp16: fp16 autocast on the CPU is emulated.*running in fp32 instead', out)
    assert 'Speed options: training fp32 (train.amp)' in out
    assert fp16 == fp32


# ----------------------------------------------------------------------------------------------- the fp16 scaler
SCALER = {'init_scale': 2.0**24, 'growth_interval': 1}  # overflows now and then: the state decides which steps apply


def test_fp16_scaler_state_is_saved_and_a_resumed_run_continues_identically(tmp_path, cpu_fp16):
    opt = model_opt(tmp_path=tmp_path, amp='fp16', grad_scaler=SCALER)
    data = batches(8)
    model = build(opt)
    assert model.grad_scaler.is_enabled() and model.amp_dtype is torch.float16
    # The scale after 4 steps, from the documented rule: x2 after each applied step (growth_interval 1), x0.5 after
    # each skipped one (a step whose weights did not change: an fp16 gradient overflowed).
    scale = SCALER['init_scale']
    for i, batch in enumerate(data[:4], 1):
        before = weights(model)
        train_steps(model, [batch], i - 1)
        applied = any(not torch.equal(a, b) for a, b in zip(before, weights(model)))
        scale *= 2.0 if applied else 0.5
        assert model.log_dict['grad_scale'] == scale
    model.save(epoch=0, current_iter=4)
    state = compat.load_training_state(os.path.join(opt['path']['training_states'], '4.state'))
    assert state['grad_scaler']['scale'] == scale and state['grad_scaler']['growth_interval'] == 1

    opt2 = copy.deepcopy(opt)
    opt2['auto_resume'] = True
    resume_state = compat.load_resume_state(opt2)
    resumed = build(opt2, seed=123)  # another initialisation: everything must come from the files
    resumed.resume_training(resume_state)
    assert resumed.grad_scaler.get_scale() == scale
    uninterrupted = train_steps(model, data[4:], 4)
    assert train_steps(resumed, data[4:], 4) == uninterrupted
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(resumed)))

    # the scenario depends on the scaler: a run resumed without its state ends elsewhere
    state_without = {k: v for k, v in resume_state.items() if k != 'grad_scaler'}
    fresh = build(opt2)
    fresh.resume_training(state_without)
    train_steps(fresh, data[4:], 4)
    assert not all(torch.equal(a, b) for a, b in zip(weights(model), weights(fresh)))


def test_an_fp16_gradient_overflow_is_skipped_not_stopped(cpu_fp16):
    """The finite-loss check looks at the loss, not at the scaled gradients: an overflow that the scaler handles
    (it skips the step and halves its scale) does not stop the run; a non-finite loss still does, with the fp16
    hint."""
    huge = 2.0**100  # loss x 2**100 is a finite fp32 number, its fp16 gradients are not
    model = build(model_opt(amp='fp16', grad_scaler={'init_scale': huge}))
    before = weights(model)
    logs = train_steps(model, batches(1))
    assert math.isfinite(logs[0]['l_pix'])
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))  # the step was skipped
    assert model.grad_scaler.get_scale() == huge / 2
    bad = batches(1)[0]
    bad['lq'][0, 0, 0, 0] = math.nan
    model.feed_data(bad)
    with pytest.raises(fsr_model.NonFiniteLossError, match=r"iteration 2: non-finite loss l_pix = nan.*fp16's range"):
        model.optimize_parameters(2)


# ---------------------------------------------------------------------------------------------------- channels_last
@pytest.mark.parametrize('model_type', ['FSRModel', 'FSRGANModel', 'WNetModel'])
def test_channels_last_gives_the_same_losses_as_contiguous(model_type):
    data = batches(2)
    plain = build(model_opt(model_type))
    cl = build(model_opt(model_type, channels_last=True))
    nets = [cl.net_g] + ([cl.net_d] if hasattr(cl, 'net_d') else [])
    convs = [  # weights whose two layouts differ (a 1x1 or depth-wise kernel is both)
        m.weight for net in nets for m in net.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1 and m.weight.shape[1] > 1
    ]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    for want, got in zip(train_steps(plain, data), train_steps(cl, data)):
        assert want.keys() == got.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    assert cl.lq.is_contiguous(memory_format=torch.channels_last) and not cl.lq.is_contiguous()


# ----------------------------------------------------------------------------------------------------- validation
def test_validation_runs_in_fp32_unless_val_amp(log_records):
    opt = model_opt()
    batch = batches(1)[0]
    outputs = {}
    for amp in (None, 'bf16'):
        o = copy.deepcopy(opt)
        o['val'] = {'amp': amp}
        model = build(o)
        model.feed_data(batch)
        model.test()
        outputs[amp] = model.output
    plain = build(opt)
    plain.feed_data(batch)
    with torch.no_grad():
        plain.net_g.eval()
        expected = plain.net_g(batch['lq'])
    assert torch.equal(outputs[None], expected)
    assert outputs['bf16'].dtype == torch.float32  # metrics see fp32 images
    gap = (outputs['bf16'] - expected).abs().max().item()
    assert 0 < gap < 0.05
    assert any('validation bf16 autocast (val.amp)' in r for r in log_records)


# ---------------------------------------------------------------------------------------------------------- compile
class FakeCompiled(torch.nn.Module):
    """What a monkeypatched ``torch.compile`` returns: the module itself, counting its calls (or failing)."""

    def __init__(self, net, fail=None):
        super().__init__()
        self.net, self.fail, self.calls = net, fail, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.net(*args, **kwargs)


def test_compile_option_compiles_net_g_for_the_training_step_only(tmp_path, monkeypatch, log_records):
    seen = []

    def fake_compile(net, **kwargs):
        seen.append((net, kwargs))
        return FakeCompiled(net)

    monkeypatch.setattr(torch, 'compile', fake_compile)
    opt = model_opt(tmp_path=tmp_path, compile={'mode': 'max-autotune', 'dynamic': False})
    model = build(opt)
    assert len(seen) == 1 and seen[0][0] is model.net_g and seen[0][1] == {'mode': 'max-autotune', 'dynamic': False}
    data = batches(2)
    logs = train_steps(model, data)
    assert model.net_g_compiled.calls == 2
    assert logs == train_steps(build(model_opt()), data)  # the same network, the same steps
    model.feed_data(data[0])
    model.test()  # validation: the plain network
    assert model.net_g_compiled.calls == 2
    model.save(epoch=0, current_iter=2)
    saved = torch.load(os.path.join(opt['path']['models'], 'net_g_2.pth'), weights_only=True)['params']
    assert list(saved) == list(model.net_g.state_dict())  # no _orig_mod. prefixes: checkpoints as without compile
    assert any('compile on (mode: max-autotune, dynamic: False)' in r for r in log_records)


def test_a_network_that_cannot_be_compiled_warns_once_and_trains_uncompiled(monkeypatch, log_records):
    from torch._dynamo.exc import Unsupported
    failure = Unsupported('data-dependent branching in forward')
    monkeypatch.setattr(torch, 'compile', lambda net, **kw: FakeCompiled(net, fail=failure))
    model = build(model_opt(compile=True))
    compiled = model.net_g_compiled
    data = batches(2)
    logs = train_steps(model, data)
    assert compiled.calls == 1 and model.net_g_compiled is None  # tried once, then the plain network
    assert logs == train_steps(build(model_opt()), data)
    warnings = [r for r in log_records if r.startswith('train.compile:')]
    assert len(warnings) == 1, log_records
    assert 'cannot compile TANet (Unsupported: data-dependent branching in forward)' in warnings[0]
    assert 'continues without compile' in warnings[0]


def test_an_error_of_the_network_itself_is_raised_not_blamed_on_compile(monkeypatch, log_records):
    monkeypatch.setattr(torch, 'compile', lambda net, **kw: FakeCompiled(net, fail=RuntimeError('compiled failed')))
    model = build(model_opt(compile=True))
    model.feed_data({'lq': torch.rand(2, 5, 8, 8), 'gt': torch.rand(2, 3, 32, 32)})  # 5 channels: the network fails
    with pytest.raises(RuntimeError) as err:
        model.optimize_parameters(1)
    assert 'compiled failed' not in str(err.value)
    assert not [r for r in log_records if r.startswith('train.compile:')]


def test_fsr_train_with_real_torch_compile(tmp_path, data):
    """The real ``torch.compile`` (TorchDynamo, ``backend: eager``) on the tiny TANet through fsr-train: it compiles
    (no fallback warning) and trains as the plain network does."""
    losses = {}
    for name, spec in (('plain', None), ('compiled', {'backend': 'eager'})):
        opt = small_opt(f'compile_{name}', data, **({'compile': spec} if spec else {}))
        proc = run_fsr_train(opt, tmp_path)
        out = proc.stdout + proc.stderr
        losses[name] = read_losses(tmp_path, opt['name'])['l_pix']
        assert 'train.compile:' not in out
    assert 'compile on (backend: eager)' in out
    assert losses['compiled'] == pytest.approx(losses['plain'], rel=1e-5)


# -------------------------------------------------------------------------------------------------------------- TF32
@pytest.fixture
def restore_tf32():
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


def test_tf32_is_set_on_cuda_only(restore_tf32):
    torch.set_float32_matmul_precision('highest')
    assert fsr_model.apply_tf32(torch.device('cpu'), True) is None
    assert torch.get_float32_matmul_precision() == 'highest'  # the CPU is left alone
    assert fsr_model.apply_tf32(torch.device('cuda'), None) is True  # the default: on
    assert torch.get_float32_matmul_precision() == 'high' and torch.backends.cudnn.allow_tf32
    assert fsr_model.apply_tf32(torch.device('cuda'), False) is False
    assert torch.get_float32_matmul_precision() == 'highest' and not torch.backends.cudnn.allow_tf32


# --------------------------------------------------------------------------------------------------- option checks
BAD_SPEED_OPTIONS = [
    ({'amp': 'fp32'}, r"train\.amp must be one of bf16, fp16, none .*not 'fp32'"),
    ({'channels_last': 'yes'}, r'train\.channels_last must be true or false'),
    ({'compile': 'max'}, r'train\.compile must be true, false or a section'),
    ({'compile': {'mod': 'default'}}, r'train\.compile\.mod is not an argument of torch\.compile'),
    ({'compile': {'mode': 'fast'}}, r'train\.compile\.mode must be one of default'),
    ({'tf32': 1}, r'train\.tf32 must be true or false'),
    ({'grad_scaler': {'growth_factor': 0.5}}, r'train\.grad_scaler\.growth_factor must be a number > 1'),
    ({'grad_scaler': {'backoff_factor': 1}}, r'train\.grad_scaler\.backoff_factor must be a number in \(0, 1\)'),
    ({'grad_scaler': {'init_scale': -1}}, r'train\.grad_scaler\.init_scale must be a number > 0'),
    ({'grad_scaler': {'growth_interval': 0.5}}, r'train\.grad_scaler\.growth_interval must be an integer'),
    ({'grad_scaler': {'scale': 2}}, r'train\.grad_scaler\.scale is not a gradient scaler option'),
]  # yapf: disable


@pytest.mark.parametrize('train, message', BAD_SPEED_OPTIONS)
def test_speed_options_are_checked_with_the_numbers(data, train, message):
    opt = small_opt('checks', data, **train)
    opt['_opt_file'] = 'x.yml'
    with pytest.raises(compat.OptionsError, match=r'^x\.yml: ' + message):
        compat.check_numbers(opt, True)


def test_val_amp_is_checked_and_good_values_pass(data):
    opt = small_opt('checks', data, amp='bf16', channels_last=True, compile={'mode': 'max-autotune'}, tf32=False,
                    grad_scaler={'init_scale': 1024, 'growth_factor': 2, 'backoff_factor': 0.5,
                                 'growth_interval': 100})  # yapf: disable
    opt['val'] = {'amp': 'bf16'}
    compat.check_numbers(opt, True)
    opt['val'] = {'amp': 'half'}
    with pytest.raises(compat.OptionsError, match=r'val\.amp must be one of bf16, fp16, none'):
        compat.check_numbers(opt, True)


def test_force_yml_knows_the_speed_keys(data):
    opt = small_opt('force', data)
    entries = ['train:amp=bf16', 'train:channels_last=true', 'train:compile=true', 'train:tf32=false']
    assert compat.check_force_yml(opt, entries, 'x.yml') == entries
    with pytest.raises(compat.OptionsError, match=r'no key train:channels_lst \(did you mean train:channels_last'):
        compat.check_force_yml(opt, ['train:channels_lst=true'], 'x.yml')
    with_scaler = small_opt('force', data, grad_scaler={'init_scale': 1024})
    assert compat.check_force_yml(with_scaler, ['train:grad_scaler:growth_interval=10'], 'x.yml')
    with pytest.raises(compat.OptionsError, match=r'no key train:grad_scaler:growth'):
        compat.check_force_yml(with_scaler, ['train:grad_scaler:growth=10'], 'x.yml')


def test_fsr_train_refuses_a_bad_amp_value_before_any_work(tmp_path, data):
    opt = small_opt('bad_amp', data)
    proc = run_fsr_train(opt, tmp_path, args=['--force_yml', 'train:amp=fp8'], check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert 'train.amp must be one of bf16, fp16, none' in lines[0]
    assert not (tmp_path / 'experiments' / 'bad_amp').exists()


# ------------------------------------------------------------------------------------------------ DataParallel warning
def _parse(tmp_path, data, monkeypatch, num_gpu, devices, launcher_args=()):
    import basicsr.utils.options
    for key in ('train_opt', 'num_gpu_option', 'resume_position'):  # the parse sets them: restored afterwards
        monkeypatch.setitem(compat._STATE, key, compat._STATE.get(key))
    opt = small_opt('dp', data)
    opt['num_gpu'] = num_gpu
    path = write_opt(opt, tmp_path / 'dp.yml')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: devices)
    monkeypatch.setattr(sys, 'argv', ['fsr-train', '-opt', path, *launcher_args])
    return basicsr.utils.options.parse_options(str(tmp_path), is_train=True)[0]


def test_num_gpu_auto_on_several_gpus_warns_and_points_to_torchrun(tmp_path, data, monkeypatch, capsys):
    opt = _parse(tmp_path, data, monkeypatch, 'auto', 4)
    assert opt['num_gpu'] == 4 and not opt['dist']
    err = capsys.readouterr().err
    assert 'num_gpu: auto found 4 GPUs and fsr-train runs without --launcher: BasicSR trains with DataParallel' in err
    assert 'torchrun --nproc_per_node=4 $(which fsr-train) -opt' in err and '--launcher pytorch' in err
    assert any('DataParallel' in w for w in opt['_fsr_warnings'])  # written to the log too
    opt = _parse(tmp_path, data, monkeypatch, 'auto', 1)
    assert opt['num_gpu'] == 1 and 'DataParallel' not in capsys.readouterr().err
    opt = _parse(tmp_path, data, monkeypatch, 2, 2)
    assert 'num_gpu 2 and fsr-train runs without --launcher' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ DDP: rank 0 saves
SPY = '''import os, sys
from fsr_utils import compat
real = compat.atomic_torch_save


def spy(obj, path):
    with open(os.environ['FSR_SAVE_LOG'], 'a') as f:
        f.write(f"{os.environ.get('RANK')} {os.path.basename(path)}\\n")
    return real(obj, path)


compat.atomic_torch_save = spy
from fsr_tools.cli import train
sys.argv[0] = 'fsr-train'
train()
'''


def test_under_ddp_only_rank_0_writes_checkpoints(tmp_path, data):
    """Two CPU processes (gloo): BasicSR's @master_only saves are replaced by atomic ones, which must keep the rank
    check (every rank wrote every file before)."""
    opt = small_opt('ddp_save', data)
    opt['logger']['save_checkpoint_freq'] = 1
    path = write_opt(opt, tmp_path / 'ddp.yml')
    spy = tmp_path / 'spy_train.py'
    spy.write_text(SPY)
    log = tmp_path / 'saves.txt'
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29631',
        str(spy), '-opt', path, '--launcher', 'pytorch'
    ]
    proc = run_command(cmd, tmp_path, env=subprocess_env(FSR_SAVE_LOG=str(log)))
    assert 'world_size: 2' in proc.stdout + proc.stderr
    saves = sorted(log.read_text().split('\n')[:-1])
    expected = sorted(f'0 {f}' for f in ('net_g_1.pth', '1.state', 'net_g_2.pth', '2.state', 'net_g_latest.pth'))
    assert saves == expected
    models = tmp_path / 'experiments' / 'ddp_save' / 'models'
    assert sorted(os.listdir(models)) == ['net_g_1.pth', 'net_g_2.pth', 'net_g_latest.pth']


def test_a_speed_option_under_basicsr_srmodel_is_refused(data):
    """BasicSR's SRModel would ignore train.amp: the run would be fp32 while the file says bf16."""
    opt = small_opt('srmodel', data, amp='bf16')
    opt.update(model_type='SRModel', _opt_file='x.yml')
    with pytest.raises(compat.OptionsError, match=r"x\.yml: train\.amp is an option of the plugin's models.*SRModel"):
        compat.check_options(opt)
    opt['train']['amp'] = 'none'
    compat.check_options(opt)


# --------------------------------------------------------------------------------------- scripts/gpu_check.py --amp
GPU_CHECK = os.path.join(REPO_ROOT, 'scripts', 'gpu_check.py')


def test_gpu_check_seconds_per_iteration_leaves_out_the_first_half():
    sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))
    import gpu_check
    durations = [9.0, 3.0, 1.0, 1.0, 1.0, 0.6, 0.5, 0.5, 0.5, 0.4]  # a slow start (compile, autotuning)
    lines = []
    for i in (5, 10):  # BasicSR logs the running mean of the iteration times
        mean = sum(durations[:i]) / i
        lines.append(f'[gpuch..][epoch:  0, iter:{i:8,d}, lr:(1.000e-03,)] [eta: 0:00:01, time (data): {mean:.3f} '
                     '(0.001)] l_pix: 1.0e-01')
    assert gpu_check.seconds_per_iteration('\n'.join(lines)) == pytest.approx(sum(durations[5:]) / 5, abs=2e-3)
    assert gpu_check.seconds_per_iteration(lines[0]) is None  # one logged point: no second half


def test_gpu_check_amp_trains_bf16_channels_last_and_compares_images_per_s(tmp_path, data):
    """``gpu_check.py --amp bf16`` (CPU mode, a tiny option file) trains with train.amp bf16 and channels_last, and
    after a plain run in the same work folder prints both runs' training images/s."""
    folder = tmp_path / 'opts'
    folder.mkdir()
    write_opt(small_opt('tiny', data), folder / 'train_tiny_x4.yml')
    cmd = [sys.executable, GPU_CHECK, '--cpu', '--iters', '10', '--include', str(folder), '--only', 'train_tiny_x4',
           '--workdir', 'work']  # yapf: disable
    plain = run_command(cmd, tmp_path).stdout
    amp = run_command(cmd + ['--amp', 'bf16'], tmp_path).stdout
    rate = r'ok   \S*train_tiny_x4\.yml{}: 10 iterations in \d+ s, ([0-9.]+) training images/s'
    fp32_rate = float(re.search(rate.format(''), plain).group(1))
    bf16_rate = float(re.search(rate.format(r' \(bf16\+channels_last\)'), amp).group(1))
    row = re.search(r'\| \S*train_tiny_x4\.yml \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+)x \|', amp)
    assert row, amp
    assert float(row.group(1)) == pytest.approx(fp32_rate, abs=0.06)
    assert float(row.group(2)) == pytest.approx(bf16_rate, abs=0.06)
    log = ''.join(
        open(f).read() for f in (tmp_path / 'work' / 'experiments' / 'gpucheck_train_tiny_x4_bf16').glob('*.log'))
    assert 'Speed options: training bf16 autocast (train.amp), channels_last on' in log
