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
