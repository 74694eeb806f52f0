"""fsr-export (fsr_tools/export.py): every network's ONNX file gives PyTorch's output in onnxruntime; bad sizes,
existing outputs, broken weights and failed checks are refused and leave nothing behind; OnnxNetwork runs a file like
the network.

Expected values come from the networks themselves: each test builds the network with BasicSR's registry, loads the
checkpoint it gave the tool and compares its output with onnxruntime's on its own inputs (other sizes and seeds than the
tool's check).
"""
import math
import numpy as np
import onnx
import onnxruntime as ort
import os
import pytest
import time
import torch
import yaml
from helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures('one_thread')

TOL = 1e-4


def _tiny_configs():
    from fsr_arch import aminet_arch, laat_arch, tanet_arch, wnet_arch
    from fsr_tools.baselines import baseline_kwargs
    configs = {
        'LAAT': laat_arch.TINY_CONFIG,
        'AMINet': aminet_arch.TINY_CONFIG,
        'TANet': tanet_arch.TINY_CONFIG,
        'WNet': wnet_arch.TINY_CONFIG
    }
    configs = {k: dict(v, upscale=4) for k, v in configs.items()}
    for name in ('EDSR', 'RCAN', 'SwinIR'):
        configs[name] = baseline_kwargs(name, 4, 'tiny')
    return configs


# LR sizes of the --dynamic checks made here (batch 2), chosen apart from the tool's own second size; None: --dynamic
# must be refused (the graph holds size-dependent constants).
DYNAMIC_LR = {
    'LAAT': None,
    'AMINet': (12, 10),
    'TANet': (12, 16),
    'WNet': (16, 12),
    'EDSR': (10, 9),
    'RCAN': (9, 11),
    'SwinIR': None
}


def build(name, kwargs, state=None):
    from basicsr.utils.registry import ARCH_REGISTRY

    from fsr_utils import plugin
    plugin.load()
    net = ARCH_REGISTRY.get(name)(**kwargs).eval()
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net


def random_state(name, kwargs, seed):
    torch.manual_seed(seed)
    net = build(name, kwargs)
    # the networks' own initialisations leave some branches at zero: perturb every tensor so all weights count
    return {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}


def make_case(folder, name, kwargs=None, param_key_g=None):
    """Options file and checkpoint (params_ema and params differ) of a tiny network."""
    kwargs = kwargs or _tiny_configs()[name]
    os.makedirs(folder, exist_ok=True)
    opt = dict(name=f'tiny_{name}', scale=4, network_g=dict(type=name, **kwargs))
    if param_key_g:
        opt['path'] = dict(param_key_g=param_key_g)
    opt_path = os.path.join(folder, f'{name}.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    ckpt = dict(params=random_state(name, kwargs, 1), params_ema=random_state(name, kwargs, 2))
    ckpt_path = os.path.join(folder, f'{name}.pth')
    torch.save(ckpt, ckpt_path)
    return opt_path, ckpt_path, ckpt, kwargs


def export(argv, capsys=None):
    from fsr_tools.export import main
    status = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys else None
    return status, out


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return [torch.from_numpy(o) for o in sess.run(None, {sess.get_inputs()[0].name: x.numpy()})]


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp('export_cases')
    return {name: make_case(str(folder), name) for name in _tiny_configs()}


# ------------------------------------------------------------------------------------------------ every network
@pytest.mark.parametrize('name', list(DYNAMIC_LR))
def test_every_network_matches_pytorch(name, cases, tmp_path, capsys):
    opt, ckpt_path, ckpt, kwargs = cases[name]
    net = build(name, kwargs, ckpt['params_ema'])  # no param_key_g: params_ema first, as fsr-infer reads
    out = tmp_path / f'{name}.onnx'
    t0 = time.perf_counter()
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 32], capsys)
    assert status == 0, io.err
    assert 'max |onnxruntime - PyTorch|' in io.out
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = net(x)
    got = ort_run(out, x)
    assert len(got) == 1 and max_diff(got[0], ref) <= TOL, name
    assert tuple(got[0].shape) == (1, 3, 32, 32)
    # the file is fixed to its export size: another size is refused by onnxruntime
    with pytest.raises(Exception):
        ort_run(out, torch.rand(1, 3, 8, 12))

    dyn = tmp_path / f'{name}_dynamic.onnx'
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', dyn, '--hr-size', 32, '--dynamic'], capsys)
    if DYNAMIC_LR[name] is None:
        assert status == 2 and '--dynamic' in io.err and not dyn.exists()
        return
    assert status == 0, io.err
    assert io.out.count(') ok') == 2  # the tool's two checks
    for size in ((8, 8), DYNAMIC_LR[name]):
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(8))
        with torch.no_grad():
            ref = net(x)
        got = ort_run(dyn, x)
        assert max_diff(got[0], ref) <= TOL, (name, size)
    print(f'{name}: static + dynamic export and checks {time.perf_counter() - t0:.1f} s')


def test_param_key_and_weights_really_loaded(cases, tmp_path, capsys):
    """--param-key params exports 'params', not 'params_ema': the two give different outputs."""
    opt, ckpt_path, ckpt, kwargs = cases['EDSR']
    out = tmp_path / 'edsr.onnx'
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 32, '--param-key', 'params'],
                  capsys)[0] == 0
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref_params = build('EDSR', kwargs, ckpt['params'])(x)
        ref_ema = build('EDSR', kwargs, ckpt['params_ema'])(x)
    got = ort_run(out, x)[0]
    assert max_diff(got, ref_params) <= TOL
    assert max_diff(got, ref_ema) > 1e-3
    assert onnx.load(str(out)).metadata_props  # metadata written
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta['network'] == 'EDSR' and meta['scale'] == '4' and '(params)' in meta['weights']


def test_paper_configuration_tanet_x4(tmp_path, capsys):
    """TANet x4 at its paper configuration and 128x128 faces (LR 32x32): the tool's check and ours."""
    from fsr_arch.tanet_arch import PAPER_CONFIGS
    out = tmp_path / 'tanet_x4.onnx'
    t0 = time.perf_counter()
    status, io = export(['--net', 'TANet', '--scale', 4, '--random-init', '-o', out], capsys)
    seconds = time.perf_counter() - t0
    assert status == 0, io.err
    assert 'LR 32x32' in io.out and 'RANDOM' in io.err
    from fsr_tools.export import fill_zero_parameters
    torch.manual_seed(0)  # --random-init is seed 0, then all-zero parameters filled
    net = build('TANet', PAPER_CONFIGS['x4'])
    fill_zero_parameters(net)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net(x)
    assert max_diff(ort_run(out, x)[0], ref) <= TOL
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta['weights'].startswith('RANDOM')
    print(f'TANet x4 paper configuration: export + check {seconds:.1f} s')


def test_wnet_parsing_output(cases, tmp_path, capsys):
    opt, ckpt_path, ckpt, kwargs = cases['WNet']
    out = tmp_path / 'wnet.onnx'
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 32, '--with-parsing'], capsys)[0] == 0
    net = build('WNet', kwargs, ckpt['params_ema'])
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        sr, parsing = net(x, return_parsing=True)
    got = ort_run(out, x)
    assert [o.name for o in onnx.load(str(out)).graph.output] == ['sr', 'parsing']
    assert max_diff(got[0], sr) <= TOL and max_diff(got[1], parsing) <= TOL
    assert tuple(got[1].shape) == (1, kwargs['parsing_channels'], 8, 8)
    # only W-Net has one
    opt_t, ckpt_t = cases['TANet'][:2]
    status, io = export(['--opt', opt_t, '--weights', ckpt_t, '-o', tmp_path / 't.onnx', '--with-parsing'], capsys)
    assert status == 2 and '--with-parsing' in io.err and not (tmp_path / 't.onnx').exists()


# ------------------------------------------------------------------------------------------------------ refusals
def _lr_needed(lr, m):
    return max(m, math.ceil(lr / m) * m)


def test_sizes_the_network_cannot_take_are_refused(cases, tmp_path, capsys):
    out = tmp_path / 'x.onnx'
    # LAAT x4: LR sides multiples of its size_multiple; HR 36 -> LR 9
    opt, ckpt_path, _, kwargs = cases['LAAT']
    m = build('LAAT', kwargs).size_multiple
    assert m > 1
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 36], capsys)
    need = _lr_needed(9, m) * 4
    assert status == 2 and f'--hr-size {need}x{need}' in io.err and f'multiples of {m}' in io.err, io.err
    # not divisible by the scale
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', '30x32'], capsys)
    assert status == 2 and 'not divisible by the scale 4' in io.err and '--hr-size 32x32' in io.err
    # SwinIR: multiples of its window (BasicSR's SwinIR does not pad); LR 10x8
    from fsr_tools.baselines import size_multiple
    opt, ckpt_path, _, kwargs = cases['SwinIR']
    m = size_multiple('SwinIR', kwargs)
    assert 10 % m
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', '40x32'], capsys)
    assert status == 2 and f'--hr-size {_lr_needed(10, m) * 4}x{_lr_needed(8, m) * 4}' in io.err, io.err
    # TANet takes any size, but its dynamic graph multiples of the patch size (4): LR 10x8
    opt, ckpt_path = cases['TANet'][:2]
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', '40x32', '--dynamic'], capsys)
    assert status == 2 and '--hr-size 48x32' in io.err and 'patch size' in io.err, io.err
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', '40x32'], capsys)[0] == 0
    assert out.exists()


def test_existing_output_is_never_overwritten_without_force(cases, tmp_path, capsys):
    opt, ckpt_path = cases['EDSR'][:2]
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'keep me')
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 32], capsys)
    assert status == 2 and 'exists' in io.err and '--force' in io.err
    assert out.read_bytes() == b'keep me'
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', out, '--hr-size', 32, '--force'], capsys)[0] == 0
    onnx.checker.check_model(onnx.load(str(out)))
    # only .onnx files are written: --force replaces no other file, and never an input
    notes = tmp_path / 'notes.txt'
    notes.write_text('keep')
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', notes, '--force'], capsys)
    assert status == 2 and '.onnx' in io.err and notes.read_text() == 'keep'
    ckpt_onnx = tmp_path / 'ckpt.onnx'
    ckpt_onnx.write_bytes(open(ckpt_path, 'rb').read())
    status, io = export(['--opt', opt, '--weights', ckpt_onnx, '-o', ckpt_onnx, '--force'], capsys)
    assert status == 2 and 'is the input given by --weights' in io.err
    assert torch.load(ckpt_onnx, weights_only=True)['params']
    assert sorted(os.listdir(tmp_path)) == ['ckpt.onnx', 'model.onnx', 'notes.txt']  # no temporary file left


def test_nan_weights_are_refused(cases, tmp_path, capsys):
    opt, _, ckpt, _ = cases['TANet']
    bad = {k: dict(v) for k, v in ckpt.items()}
    key = next(k for k, v in bad['params_ema'].items() if v.is_floating_point())
    bad['params_ema'][key] = bad['params_ema'][key].clone()
    bad['params_ema'][key].view(-1)[0] = float('nan')
    path = tmp_path / 'nan.pth'
    torch.save(bad, path)
    status, io = export(['--opt', opt, '--weights', path, '-o', tmp_path / 'nan.onnx'], capsys)
    assert status == 2 and 'NaN' in io.err and key in io.err, io.err
    assert not (tmp_path / 'nan.onnx').exists()


def test_weights_of_another_network_are_refused(cases, tmp_path, capsys):
    status, io = export(['--opt', cases['TANet'][0], '--weights', cases['EDSR'][1], '-o', tmp_path / 'x.onnx'], capsys)
    assert status == 2 and 'does not fit TANet' in io.err, io.err
    assert not (tmp_path / 'x.onnx').exists()


def test_failed_check_writes_nothing(cases, tmp_path, capsys):
    """A difference above --tolerance is a failure (exit 1) and no file (nor temporary file) is left."""
    opt, ckpt_path = cases['TANet'][:2]
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', tmp_path / 'x.onnx', '--tolerance', 1e-12], capsys)
    assert status == 1 and 'FAILED' in io.out and 'nothing written' in io.err, io.err
    assert os.listdir(tmp_path) == []


def test_the_check_catches_a_wrong_export(cases, tmp_path, capsys):
    """AMINet exported at opset 14 runs in onnxruntime but gives wrong images (measured: max abs difference > 1): the
    check refuses it; opset 16 is right."""
    opt, ckpt_path = cases['AMINet'][:2]
    status, io = export(['--opt', opt, '--weights', ckpt_path, '-o', tmp_path / 'a.onnx', '--opset', 14], capsys)
    assert status == 1 and 'differs from PyTorch' in io.err and '--opset 17' in io.err, io.err
    assert not (tmp_path / 'a.onnx').exists()
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', tmp_path / 'a.onnx', '--opset', 16], capsys)[0] == 0


def test_numbers_and_combinations_are_checked(cases, tmp_path, capsys):
    from fsr_tools.export import opset_range
    opt, ckpt_path = cases['EDSR'][:2]
    lo, hi = opset_range()
    out = tmp_path / 'x.onnx'
    for bad in (['--opset', hi + 1], ['--opset', lo - 1], ['--tolerance', 0], ['--hr-size', '0x32'], ['--threads', 0]):
        with pytest.raises(SystemExit) as exc:
            export(['--opt', opt, '--weights', ckpt_path, '-o', out, *bad])
        assert exc.value.code == 2
        assert 'error' in capsys.readouterr().err
    for bad, words in ((['--net', 'EDSR'], 'not both'), (['--check-hr-size', 64], '--dynamic'), ([], None)):
        args = ['--opt', opt, '-o', out, *bad] + (['--weights', ckpt_path] if words else [])
        if words is None:  # neither --weights nor --random-init
            with pytest.raises(SystemExit) as exc:
                export(args)
            assert exc.value.code == 2
            capsys.readouterr()
            continue
        status, io = export(args, capsys)
        assert status == 2 and words in io.err, io.err
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------- OnnxNetwork
def test_onnx_network_runs_like_the_torch_network(cases, tmp_path, capsys):
    from fsr_tools.export import OnnxNetwork
    from fsr_tools.infer_net import run_network
    opt, ckpt_path, ckpt, kwargs = cases['AMINet']
    net = build('AMINet', kwargs, ckpt['params_ema'])
    static, dynamic = tmp_path / 's.onnx', tmp_path / 'd.onnx'
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', static, '--hr-size', 32], capsys)[0] == 0
    assert export(['--opt', opt, '--weights', ckpt_path, '-o', dynamic, '--hr-size', 32, '--dynamic'], capsys)[0] == 0
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
    onnx_static = OnnxNetwork(str(static))
    assert onnx_static.scale == 4 and onnx_static.size_multiple == net.size_multiple
    assert max_diff(onnx_static(x), ref) <= TOL  # batch 3 through a batch-1 file: face by face
    with pytest.raises(ValueError, match='--hr-size 40x32'):
        onnx_static(torch.rand(1, 3, 10, 8))
    # run_network (FaceRestorer's forward pass) pads to size_multiple: odd LR crops work with the dynamic file
    lr = np.random.default_rng(0).random((2, 9, 7, 3), dtype=np.float32)
    want = run_network(net, lr, 4, torch.device('cpu'))
    got = run_network(OnnxNetwork(str(dynamic)), lr, 4, torch.device('cpu'))
    assert got.shape == (2, 36, 28, 3) and np.abs(got - want).max() <= TOL


def test_setup_declares_the_tool_and_its_extra():
    text = open(os.path.join(REPO_ROOT, 'setup.py')).read()
    assert "'fsr-export=fsr_tools.export:main'" in text
    assert "'export': EXPORT_REQUIRES" in text and '+ EXPORT_REQUIRES' in text
    assert 'onnx>=' in text and 'onnxruntime>=' in text
    assert '[dev]' in open(os.path.join(REPO_ROOT, 'scripts', 'install.sh')).read()


def test_help_imports_no_torch(tmp_path):
    """``fsr-export --help`` answers without importing torch (as the other tools' --help)."""
    import subprocess
    import sys
    from helpers import subprocess_env
    code = ('import sys\nfrom fsr_tools.export import main\ntry:\n    main(["--help"])\nexcept SystemExit as e:\n'
            '    assert e.code == 0\nassert "torch" not in sys.modules, "torch imported"\nprint("ok")')
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=str(tmp_path),
                          env=subprocess_env(),
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-2000:]
    assert '--random-init' in proc.stdout and '--dynamic' in proc.stdout


def test_random_init_export_check_sees_the_whole_aminet():
    """AMINet's last conv starts at zero (its untrained output is bicubic): --random-init fills all-zero parameters
    with small random values, so that the ONNX check compares the whole network, not only the bicubic path."""
    from basicsr.utils.matlab_functions import imresize

    from fsr_arch.aminet_arch import AMINet
    from fsr_tools.export import fill_zero_parameters
    torch.manual_seed(0)
    net = AMINet(upscale=4, num_feat=8, num_heads=[1, 1, 2, 2], num_bottleneck=1).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), imresize(x[0], 4)[None], atol=1e-5)  # untrained: bicubic only
        filled = fill_zero_parameters(net)
        assert {'conv_last.weight', 'conv_last.bias'} <= set(filled)
        assert (net(x) - imresize(x[0], 4)[None]).abs().mean() > 1e-3
    assert fill_zero_parameters(net) == []  # nothing is all zero any more
