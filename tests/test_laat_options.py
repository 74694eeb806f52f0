"""LAAT option files: every reading and ablation the plugin offers has an option file, each file builds its network at
the paper's size and runs one forward, the variant files stay in step with ``train_laat_x8.yml``, and every training
file trains for a few CPU iterations through BasicSR's own training loop (tiny sizes forced, as ``--force_yml`` does).
"""
import glob
import logging
import os
import pytest
import sys
import torch
import yaml
from helpers import REPO_ROOT, make_face_dataset

from fsr_arch.laat_arch import ABLATIONS, LAAT, PAPER_CONFIGS

OPTIONS = os.path.join(REPO_ROOT, 'options')
LAAT_FILES = sorted(
    glob.glob(os.path.join(OPTIONS, '*laat*.yml')) + glob.glob(os.path.join(OPTIONS, 'ablation', '*laat*.yml')) +
    glob.glob(os.path.join(OPTIONS, 'demo', '*laat*.yml')))
# The network arguments each variant file adds to options/train_laat_x8.yml (everything else must be equal).
VARIANTS = {
    'train_laat_stacked_up_x8.yml': dict(up_mode='stacked'),
    'train_laat_topk_max_x8.yml': dict(head_reduction='max'),
    'train_laat_topk_per_head_x8.yml': dict(head_reduction='per_head'),
    **{
        f'train_laat_{key}_x8.yml': kwargs
        for key, kwargs in ABLATIONS.items()
    },
}
PAPER_FILES = {'train_laat_x4.yml', 'train_laat_x8.yml', 'test_laat_x4.yml', 'test_laat_x8.yml'}
# Real-degradation files: generated from a paper file by scripts/make_real_options.py (sync test: test_degradations.py).
REAL_FILES = {os.path.basename(p) for p in glob.glob(os.path.join(OPTIONS, '*laat_real*.yml'))}
# Tiny sizes for the training runs (what a user passes to --force_yml on a small machine).
TINY_NET = dict(
    num_feat=8,
    num_blocks=1,
    extraction_heads=[1, 1, 2, 2],
    transformation_heads=2,
    recovery_heads=[2, 2, 1, 1],
    fim_reduction=2,
    mlp_ratio=1.0,
    img_size=32,
    csa_max_tokens=64)


def _rel(path):
    return os.path.relpath(path, OPTIONS)


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _network_args(opt):
    net = dict(opt['network_g'])
    assert net.pop('type') == 'LAAT'
    return net


def test_every_offered_reading_and_ablation_has_a_file():
    names = {os.path.basename(p) for p in LAAT_FILES}
    assert PAPER_FILES | set(VARIANTS) | {'train_laat_demo_x4.yml'} == names - REAL_FILES
    for key in ABLATIONS:
        assert os.path.isfile(os.path.join(OPTIONS, 'ablation', f'train_laat_{key}_x8.yml')), key


def test_no_x4_file_calls_x4_the_papers_configuration():
    """The paper reports 8x only: an x4 file (or a file made from one) says that x4 is an extension."""
    for path in LAAT_FILES:
        with open(path) as f:
            header = ''.join(line for line in f if line.startswith('#'))
        names_x4 = 'x4' in os.path.basename(path) or 'train_laat_x4.yml' in header
        if names_x4 and 'demo' not in path:
            assert 'EXTENSION' in header and 'paper configuration of' not in header, path


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_variant_file_is_train_laat_x8_plus_its_arguments(name):
    folder = 'ablation' if name.replace('train_laat_', '').replace('_x8.yml', '') in ABLATIONS else ''
    variant = _load(os.path.join(OPTIONS, folder, name))
    paper = _load(os.path.join(OPTIONS, 'train_laat_x8.yml'))
    assert variant['name'] != paper['name'] and variant['name'].startswith('LAAT_')
    net = _network_args(variant)
    expected = {**_network_args(paper), **VARIANTS[name]}
    assert net == expected
    for opt in (variant, paper):
        opt.pop('name')
        opt.pop('network_g')
    assert variant == paper  # datasets, optimizer, schedule, loss, validation: the paper's (Sec. 4)


@pytest.mark.parametrize('path', LAAT_FILES, ids=_rel)
def test_file_builds_its_network_at_paper_size_and_runs_a_forward(path):
    from basicsr.archs import build_network
    opt = _load(path)
    name = os.path.basename(path)
    net_opt = dict(opt['network_g'])
    torch.manual_seed(0)
    net = build_network(dict(net_opt)).eval()
    assert net_opt['upscale'] == opt['scale']
    if name in PAPER_FILES | REAL_FILES or name in VARIANTS:
        # The paper's Sec. 4.2 network (x4: the same settings, an extension), plus the variant's arguments.
        reference = LAAT(**PAPER_CONFIGS[f'x{opt["scale"]}'], **VARIANTS.get(name, {}))
        assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in reference.parameters())
        assert net.level_lams == [4, 4, 1, 1]
    hr = (32, 48) if name != 'train_laat_demo_x4.yml' else (64, 64)  # small faces the networks support
    s = opt['scale']
    with torch.no_grad():
        out = net(torch.rand(1, 3, hr[0] // s, hr[1] // s))
    assert out.shape == (1, 3, *hr) and torch.isfinite(out).all()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """The folders the option files name: datasets/{CelebA,Helen}/{train,test} and demo_data/{train,test}."""
    root = tmp_path_factory.mktemp('laat_data')
    for folder, num in (('datasets/CelebA/train', 4), ('datasets/CelebA/test', 1), ('demo_data/train', 4),
                        ('demo_data/test', 1)):
        make_face_dataset(root / folder, num=num, hr_size=(32, 32), scales=(4, 8), seed=num)
    return root


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


TRAIN_FILES = [p for p in LAAT_FILES if os.path.basename(p).startswith('train_')]


@pytest.mark.slow
@pytest.mark.parametrize('path', TRAIN_FILES, ids=_rel)
def test_train_file_trains_a_few_cpu_iterations(path, data_root, tmp_path, monkeypatch):
    """BasicSR's ``train_pipeline`` on the unchanged file, with tiny sizes forced from the command line."""
    from basicsr.train import train_pipeline

    from fsr_utils import plugin
    plugin.load()
    opt = _load(path)
    force = [
        'num_gpu=0', 'datasets:train:gt_size=32', 'datasets:train:batch_size_per_gpu=2',
        'datasets:train:num_worker_per_gpu=0', 'train:total_iter=2', 'logger:print_freq=1',
        'logger:save_checkpoint_freq=2', 'logger:use_tb_logger=false'
    ]
    if 'demo' not in os.path.basename(path):
        force += [f'network_g:{k}={v}' for k, v in TINY_NET.items()]
    monkeypatch.chdir(data_root)  # the option files' relative dataroots
    monkeypatch.setattr(sys, 'argv', ['train', '-opt', path, '--force_yml', *force])
    records, logger = _Records(), logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)  # BasicSR sets it only when it creates its logger, maybe earlier in this process
    try:
        train_pipeline(str(tmp_path))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    iters = [m for m in records.messages if 'iter:' in m and 'l_pix' in m]
    assert len(iters) == 2, records.messages[-20:]
    exp = tmp_path / 'experiments' / opt['name']
    state = torch.load(exp / 'training_states' / '2.state', map_location='cpu', weights_only=False)
    steps = {float(s['step']) for s in state['optimizers'][0]['state'].values()}
    assert steps == {2.0}  # every parameter was updated twice
    params = torch.load(exp / 'models' / 'net_g_2.pth', map_location='cpu')['params']
    assert all(torch.isfinite(v).all() for v in params.values())
    assert any('psnr' in m for m in records.messages)  # the end-of-training validation ran
