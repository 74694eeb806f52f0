"""Generic BasicSR baselines (fsr_tools/baselines.py): option files agree with the module, fsr-speed lists them."""
import glob
import os
import pytest
import torch
import yaml
from helpers import REPO_ROOT

from fsr_tools import baselines, speed


def _network_g(path):
    with open(path) as f:
        net = dict(yaml.safe_load(f)['network_g'])
    return net.pop('type'), net


@pytest.mark.parametrize('config,pattern', [('paper', 'options/baselines/train_{}_x4.yml'),
                                            ('demo', 'options/demo/train_{}_demo_x4.yml')])
def test_option_files_use_the_module_configuration(config, pattern):
    for name in baselines.BASELINES:
        path = os.path.join(REPO_ROOT, pattern.format(name.lower()))
        net_type, kwargs = _network_g(path)
        assert net_type == name
        assert kwargs == baselines.baseline_kwargs(name, 4, config), path


def test_every_baseline_option_file_is_known():
    files = glob.glob(os.path.join(REPO_ROOT, 'options', 'baselines', '*.yml'))
    assert {_network_g(p)[0] for p in files} == set(baselines.BASELINES)


def test_demo_baselines_cost_like_the_demo_face_networks():
    """The demo widths are matched by FLOPs: each baseline lies inside the range of the demo face networks."""
    from fsr_utils import plugin
    plugin.load()
    x = torch.rand(1, 3, 32, 32)

    def flops(name, kwargs):
        return speed.count_flops(speed.build(name, kwargs), x)

    face = [
        flops(*_network_g(p)) for p in glob.glob(os.path.join(REPO_ROOT, 'options', 'demo', 'train_*_demo_x4.yml'))
        if _network_g(p)[0] not in baselines.BASELINES and 'real' not in os.path.basename(p)
    ]
    assert len(face) >= 4
    for name in baselines.BASELINES:
        f = flops(name, baselines.baseline_kwargs(name, 4, 'demo'))
        assert min(face) <= f <= max(face), (name, f / 1e9, sorted(v / 1e9 for v in face))


def test_tiny_baselines_super_resolve_and_speed_lists_them(tmp_path):
    from fsr_utils import plugin
    plugin.load()
    for name in baselines.BASELINES:
        for scale in (4, 8):
            net = speed.build(name, baselines.baseline_kwargs(name, scale, 'tiny'))
            assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8 * scale, 8 * scale)
    assert [n for n, _ in speed.discover_baselines()] == list(baselines.BASELINES)
    out = tmp_path / 'speed.md'
    speed.main([
        '--config', 'tiny', '--arch', 'EDSR', '--scales', '4', '--quick', '--warmup', '0', '--repeats', '1', '--no-gpu',
        '--no-memory', '--out',
        str(out)
    ])
    assert '| EDSR | x4 | 8x8 -> 32x32 |' in out.read_text()
    with pytest.raises(KeyError, match='unknown baseline'):
        baselines.baseline_kwargs('VDSR', 4)


def test_paper_baselines_train_exactly_like_the_aminet_file():
    """Same data, batch, schedule, losses and validation as options/train_aminet_x4.yml: only the network differs."""
    with open(os.path.join(REPO_ROOT, 'options', 'train_aminet_x4.yml')) as f:
        reference = yaml.safe_load(f)
    for name in baselines.BASELINES:
        with open(os.path.join(REPO_ROOT, 'options', 'baselines', f'train_{name.lower()}_x4.yml')) as f:
            opt = yaml.safe_load(f)
        for key in ('datasets', 'train', 'val', 'scale', 'model_type', 'num_gpu', 'logger'):
            assert opt[key] == reference[key], (name, key)
