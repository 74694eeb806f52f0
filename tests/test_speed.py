"""fsr-speed (fsr_utils/speed.py): discovery of the plugin's networks, FLOP count, Markdown table on a tiny config."""
import pytest
import torch
import types

from fsr_utils import compat

compat.install_torchvision_shim()

from basicsr.archs.srresnet_arch import MSRResNet  # noqa: E402

from fsr_tools import speed  # noqa: E402


def test_discover_plugin_networks():
    nets = speed.discover()
    assert nets, 'no fsr_arch module with PAPER_CONFIGS'
    names = [n for n, _ in nets]
    assert 'AMIGANDiscriminator' not in names  # has PAPER_CONFIGS but no `upscale`: not an SR network
    for name, module in nets:
        assert {'x4', 'x8'} <= set(module.PAPER_CONFIGS), name
        assert speed.network_kwargs(module, 8)['upscale'] == 8
    plain = types.ModuleType('plain_arch')  # no PAPER_CONFIGS
    plain.MSRResNet = MSRResNet
    foreign = types.ModuleType('foreign_arch')  # PAPER_CONFIGS but the class is defined elsewhere
    foreign.PAPER_CONFIGS, foreign.MSRResNet = {'x4': {}}, MSRResNet
    assert speed.discover([plain, foreign]) == []


def test_flops_and_row_of_a_known_network():
    nf = 4
    row = speed.measure(
        'MSRResNet', {
            'num_feat': nf,
            'num_block': 1,
            'upscale': 4
        },
        4,
        16,
        warmup=0,
        repeats=1,
        throughput=True,
        memory=False)
    lr, mid, hr = 4 * 4, 8 * 8, 16 * 16  # pixels at LR, 2x and 4x
    macs = 9 * (3 * nf * lr + 2 * nf * nf * lr + nf * 4 * nf * lr + nf * 4 * nf * mid + nf * nf * hr + nf * 3 * hr)
    assert row['GFLOPs'] * 1e9 == 2 * macs  # FlopCounterMode: 2 FLOPs per multiply-accumulate
    assert row['Params (M)'] * 1e6 == sum(p.numel() for p in MSRResNet(num_feat=nf, num_block=1).parameters())
    assert row['CPU ms (b1)'] > 0 and row['CPU img/s (b16)'] > 0 and row['CPU peak MB (b1)'] is None
    assert row['Input'] == '4x4 -> 16x16'


def test_bf16_channels_last_path_runs_on_cpu():
    net = MSRResNet(num_feat=4, num_block=1).to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 8, 8).to(memory_format=torch.channels_last)
    assert speed.time_forward(net, x, 0, 1, autocast_dtype=torch.bfloat16) > 0


def test_table_on_a_tiny_config(tmp_path, capsys):
    names = [n for n, _ in speed.discover()]
    name = 'TANet' if 'TANet' in names else names[0]
    out = tmp_path / 'speed.md'
    speed.main([
        '--config', 'tiny', '--arch', name, '--scales', '4', '--quick', '--warmup', '0', '--repeats', '1', '--no-gpu',
        '--out',
        str(out)
    ])
    lines = out.read_text().splitlines()
    assert 'tiny configurations, 32x32 HR faces' in lines[0] and 'torch threads' in lines[0]
    header = [c.strip() for c in lines[2].strip('|').split('|')]
    assert header == speed.COLUMNS
    row = dict(zip(header, [c.strip() for c in lines[4].strip('|').split('|')]))
    assert row['Network'] == name and row['Scale'] == 'x4' and row['Input'] == '8x8 -> 32x32'
    for column in ('Params (M)', 'GFLOPs', 'CPU ms (b1)', 'CPU peak MB (b1)'):
        assert float(row[column]) > 0, column
    assert row['CPU img/s (b16)'] == '-'  # --quick
    capsys.readouterr()
    assert speed.main(['--arch', 'NoSuchNet', '--out', str(tmp_path / 'x.md')]) == 2
    assert 'error: --arch: unknown network(s) NoSuchNet' in capsys.readouterr().err
    assert not (tmp_path / 'x.md').exists()


def test_flops_count_attention_done_by_sdpa():
    """FlopCounterMode misses the CPU SDPA kernel: count_flops must give the explicit-attention count either way."""
    import torch

    from fsr_arch.tanet_arch import TINY_CONFIG, TANet
    from fsr_tools.speed import count_flops
    x = torch.rand(1, 3, 8, 8)
    fused, explicit = TANet(upscale=4, **TINY_CONFIG, use_sdpa=True), TANet(upscale=4, **TINY_CONFIG, use_sdpa=False)
    assert count_flops(fused, x) == count_flops(explicit, x) > 0
    assert all(m.use_sdpa for m in fused.modules() if hasattr(m, 'use_sdpa'))  # switched back afterwards


# ------------------------------------------------------------------------------------------------------ issue 23
TINY = ['--config', 'tiny', '--quick', '--warmup', '0', '--repeats', '1', '--no-gpu', '--no-memory']


def _rows(text):
    """``{(network, scale): {column: cell}}`` of a fsr-speed Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith('| ')]
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    rows = [dict(zip(header, [c.strip() for c in line.strip('|').split('|')])) for line in lines[1:]]
    return {(r['Network'], r['Scale']): r for r in rows}


@pytest.mark.parametrize('argv,expected', [(['--scales', '3'], 'argument --scales: must be one of 4, 8, not 3'),
                                           (['--scales', '4', '0'], 'argument --scales: must be one of 4, 8, not 0'),
                                           (['--hr-size', '8'], 'argument --hr-size: must be an integer in [16, 4096]'),
                                           (['--hr-size', '100'], 'argument --hr-size: must be a multiple of every '
                                            'scale measured (4, 8), not 100'),
                                           (['--repeats', '0'], 'argument --repeats: must be an integer in [1, 1000]'),
                                           (['--warmup', '-1'], 'argument --warmup: must be an integer in [0, 100]'),
                                           (['--train-batch', '-1'], 'argument --train-batch: must be an integer in '
                                            '[0, 1024]'),
                                           (['--max-seconds', 'nan'], 'argument --max-seconds: must be')])
def test_numbers_out_of_range_are_refused_at_parse_time(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        speed.main(argv + ['--out', str(tmp_path / 's.md')])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.strip().splitlines()[-1].startswith(f'fsr-speed: error: {expected}')
    assert not (tmp_path / 's.md').exists()


def test_swinir_tiny_at_x8_through_the_console_script(tmp_path):
    """It died with a raw traceback: a 4x4 LR input is smaller than the 8x8 window the tiny SwinIR had. Its tiny
    window is 4 now, and an input smaller than the window is rounded up to it (--hr-size 16: 2x2 -> 4x4)."""
    from helpers import console_script, run_command
    cmd = [console_script('fsr-speed'), '--arch', 'SwinIR', '--scales', '8'] + TINY
    proc = run_command(cmd + ['--out', str(tmp_path / 'a.md')], tmp_path)
    row = _rows((tmp_path / 'a.md').read_text())[('SwinIR', 'x8')]
    assert row['Input'] == '4x4 -> 32x32' and float(row['GFLOPs']) > 0 and 'Traceback' not in proc.stderr
    run_command(cmd + ['--hr-size', '16', '--out', str(tmp_path / 'b.md')], tmp_path)
    assert _rows((tmp_path / 'b.md').read_text())[('SwinIR', 'x8')]['Input'] == '4x4 -> 32x32'


def test_a_failed_case_is_reported_in_its_row(tmp_path, capsys, monkeypatch):
    """An out-of-memory error in one case (RCAN's batch-1 timing, simulated) loses neither the table nor the other
    rows: the row says why, keeps what was measured before, and the exit status is 1."""
    timing = speed.time_forward

    def failing(net, x, *args, **kwargs):
        if type(net).__name__ == 'RCAN':
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')
        return timing(net, x, *args, **kwargs)

    monkeypatch.setattr(speed, 'time_forward', failing)
    out = tmp_path / 'speed.md'
    assert speed.main(['--arch', 'EDSR', '--arch', 'RCAN', '--scales', '4'] + TINY + ['--out', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('error: 1 of 2 cases failed (RCAN x4)') and str(out) in err
    rows = _rows(out.read_text())
    assert float(rows[('EDSR', 'x4')]['CPU ms (b1)']) > 0 and rows[('EDSR', 'x4')]['Note'] == '-'
    rcan = rows[('RCAN', 'x4')]
    assert rcan['Note'].startswith('failed: out of memory (OutOfMemoryError: CUDA out of memory')
    assert float(rcan['Params (M)']) > 0 and rcan['CPU ms (b1)'] == '-'  # measured before the failure / not


def test_demo_config_says_which_scale_it_skips(tmp_path):
    out = tmp_path / 'speed.md'
    assert speed.main([
        '--config', 'demo', '--arch', 'EDSR', '--scales', '4', '8', '--quick', '--warmup', '0', '--repeats', '1',
        '--no-gpu', '--no-memory', '--out',
        str(out)
    ]) == 0
    rows = _rows(out.read_text())
    assert rows[('EDSR', 'x8')]['Note'] == 'skipped: the demo configurations (options/demo) are x4 only'
    assert rows[('EDSR', 'x4')]['Input'] == '32x32 -> 128x128'


def test_out_is_checked_before_any_measurement_and_a_foreign_file_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(speed, 'measure', lambda *a, **k: pytest.fail('measured before --out was checked'))
    (tmp_path / 'notes.md').write_text('my notes')
    (tmp_path / 'afile').write_text('x')
    for out, expected in ((tmp_path / 'notes.md', 'is not a table fsr-speed wrote'),
                          (tmp_path / 'afile' / 's.md', 'cannot be made'), (tmp_path, 'is a folder')):
        assert speed.main(['--arch', 'EDSR'] + TINY + ['--out', str(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f'error: --out {out}') and expected in line
    assert (tmp_path / 'notes.md').read_text() == 'my notes'
    # an earlier table of fsr-speed is replaced
    monkeypatch.undo()
    (tmp_path / 'old.md').write_text(speed.markdown([], 'old', None))
    assert speed.main(['--arch', 'EDSR', '--scales', '4'] + TINY + ['--out', str(tmp_path / 'old.md')]) == 0
    assert ('EDSR', 'x4') in _rows((tmp_path / 'old.md').read_text())
