"""Every option file in options/ parses the BasicSR way, names registered classes, builds its networks, passes the
number checks of fsr-train/fsr-test and takes the documented --force_yml overrides (docs/REPRODUCE.md)."""
import glob
import os
import pytest
import yaml
from helpers import REPO_ROOT

OPTION_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, 'options', '**', '*.yml'), recursive=True))


def _load(path):
    from basicsr.utils.options import ordered_yaml
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def _loss_types(train_opt):
    return [v['type'] for k, v in train_opt.items() if k.endswith('_opt') and isinstance(v, dict) and 'type' in v]


def test_there_are_option_files():
    names = {os.path.basename(p) for p in OPTION_FILES}
    assert {'train_wnet_x4.yml', 'train_laat_x8.yml', 'train_aminet_x8.yml', 'train_tanet_x4.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: os.path.relpath(p, os.path.join(REPO_ROOT, 'options')))
def test_option_file_builds(path):
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    from fsr_utils import plugin
    plugin.load()
    opt = _load(path)
    assert opt['name'] and opt['scale'] in (4, 8), path
    assert opt['model_type'] in MODEL_REGISTRY, opt['model_type']
    is_train = os.path.basename(path).startswith('train_')
    for phase, dataset in opt['datasets'].items():
        assert dataset['type'] in DATASET_REGISTRY, (phase, dataset['type'])
        assert phase == 'train' or phase.split('_')[0] in ('val', 'test'), phase
    if is_train:
        assert 'train' in opt['datasets']
        for loss in _loss_types(opt['train']):
            assert loss in LOSS_REGISTRY, loss
    else:
        assert 'suffix' in opt.get('val', {}), 'test files need "val: suffix: ~" (BasicSR raises KeyError otherwise)'
    for key in ('network_g', 'network_d'):
        if key in opt:
            net_opt = dict(opt[key])
            assert net_opt['type'] in ARCH_REGISTRY, net_opt['type']
            net = build_network(net_opt)
            assert sum(p.numel() for p in net.parameters()) > 0
            if key == 'network_g' and 'upscale' in net_opt:
                assert net_opt['upscale'] == opt['scale'], 'network_g:upscale must equal scale'


# The overrides docs/REPRODUCE.md ran every training file with (section "Checked"), plus the TANet/W-Net gt_size.
REPRODUCE_OVERRIDES = ('num_gpu=0 datasets:train:num_worker_per_gpu=0 datasets:train:batch_size_per_gpu=1 '
                       'train:total_iter=2 val:val_freq=2 logger:print_freq=1 logger:save_checkpoint_freq=2 '
                       'logger:use_tb_logger=false datasets:train:gt_size=64').split()


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: os.path.relpath(p, os.path.join(REPO_ROOT, 'options')))
def test_option_file_numbers_and_documented_overrides_pass_the_checks(path):
    """fsr-train/fsr-test check every number and every --force_yml key (issue 23): the shipped files and the
    documented overrides must pass (a check that refused them would be wrong, not the file)."""
    from fsr_utils import compat, plugin
    plugin.load()
    opt = _load(path)
    opt['_opt_file'] = path
    is_train = os.path.basename(path).startswith('train_')
    compat.check_numbers(opt, is_train)
    if is_train:
        assert compat.check_force_yml(_load(path), REPRODUCE_OVERRIDES, path) == REPRODUCE_OVERRIDES
