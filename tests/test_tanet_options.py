"""TANet's option files, both token readings, both scales, both datasets (issue 13, items 1-2).

- every TANet option file of the two readings builds its network and runs one forward at its dataset's paper size
  (FFHQ 256x256, CelebA 216x176), with the paper's training settings where it trains;
- a train file and its test file describe the same network;
- training sees the geometry testing sees: the paper's reading (``window``) has no grid-bound encoding; the ``global``
  files train on whole faces and store the encoding at the whole face's token grid, so nothing is interpolated and no
  warning is raised (checked by running the network on the training crop and on the test face);
- each train file trains for a few CPU iterations through BasicSR's train pipeline (slow), on synthetic faces of its
  dataset's size, with the network shrunk by overrides (widths and depths only: the token reading, patch size and grid
  are the file's) and a validation on a whole test face.
"""
import glob
import math
import os
import pytest
import re
import torch
import warnings
import yaml
from helpers import REPO_ROOT, make_face_dataset, run_command, subprocess_env, write_opt

from fsr_arch.tanet_arch import TANet
from fsr_data.recipes import RECIPES

# this task's files: {train,test}_tanet[_ffhq]_x{4,8}[_global].yml (other *tanet* files, e.g. generated variants, are
# tested with their own generators)
OPTIONS = sorted(
    p for p in glob.glob(os.path.join(REPO_ROOT, 'options', '*tanet*.yml'))
    if re.fullmatch(r'(train|test)_tanet(_ffhq)?_x[48](_global)?\.yml', os.path.basename(p)))
TRAIN = [p for p in OPTIONS if os.path.basename(p).startswith('train_')]
HR_SIZE = {'FFHQ': (256, 256), 'CelebA': (216, 176)}  # the paper's sizes
TINY = dict(num_feat=8, num_smfm=1, num_rb=1, num_blocks=1, num_heads=2, mlp_ratio=2.0)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def dataset_of(opt):
    roots = {ds['dataroot_gt'].split('/')[1] for ds in opt['datasets'].values()}
    assert len(roots) == 1 and roots <= set(HR_SIZE), roots  # datasets/<FFHQ|CelebA>/...
    return roots.pop()


def lr_size(hw, scale):
    return hw[0] // scale, hw[1] // scale


def token_grid(hw, patch=4):
    return [math.ceil(hw[0] / patch), math.ceil(hw[1] / patch)]


def gt_hw(ds_opt, hr):
    size = ds_opt.get('gt_size')
    if size is None:
        return hr
    return (size, size) if isinstance(size, int) else tuple(size)


def test_both_readings_for_both_scales_and_datasets():
    names = {os.path.basename(p) for p in OPTIONS}
    for kind in ('train', 'test'):
        for scale in (4, 8):
            for data in ('', '_ffhq'):
                for mode, suffix in (('window', ''), ('global', '_global')):
                    name = f'{kind}_tanet{data}_x{scale}{suffix}.yml'
                    assert name in names, name
                    assert load(os.path.join(REPO_ROOT, 'options', name))['network_g']['token_mode'] == mode, name


@pytest.mark.parametrize('path', OPTIONS, ids=os.path.basename)
def test_option_file_builds_at_the_paper_size(path):
    from basicsr.archs import build_network

    from fsr_utils import plugin
    plugin.load()
    opt = load(path)
    s, hr = opt['scale'], HR_SIZE[dataset_of(opt)]
    assert opt['model_type'] == 'FSRModel' and opt['network_g']['upscale'] == s
    for ds in opt['datasets'].values():
        assert ds['type'] == 'FSRFaceDataset' and ds['io_backend']['type'] == 'lmdb'
        assert ds['dataroot_lq'].endswith(f'lr_x{s}.lmdb')
    net_opt = opt['network_g']
    assert (net_opt['num_feat'], net_opt['num_smfm'], net_opt['num_rb'], net_opt['patch_size']) == (64, 10, 10, 4)
    with torch.device('meta'):  # structure and one forward at the data's size, without initialising 8M weights
        net = build_network(dict(net_opt)).eval()
        assert isinstance(net, TANet)
        assert net(torch.rand(1, 3, *lr_size(hr, s))).shape == (1, 3, *hr)
    if 'train' in opt:
        optim, sched, ds = opt['train']['optim_g'], opt['train']['scheduler'], opt['datasets']['train']
        assert optim['type'] == 'Adam' and optim['lr'] == 2e-4 and optim['betas'] == [0.9, 0.999]
        assert optim['eps'] == 1e-8 and opt['train']['pixel_opt']['type'] == 'L1Loss'
        assert ds['use_rot'] and ds['use_hflip'] and ds['rot_mode'] == 'rot90'
        # the paper gives no batch size: 16 in total is the files' choice; halved every 60 epochs is the paper's
        assert ds['total_batch_size'] == 16 and 'batch_size_per_gpu' not in ds
        assert sched['gamma'] == 0.5 and sched['milestones_epochs'] == [60, 120, 180, 240]
        # validation on the paper's 100 validation faces: the val/ split the tanet-* recipe writes
        val, name = opt['datasets']['val'], dataset_of(opt)
        assert val['dataroot_gt'] == f'datasets/{name}/val/hr.lmdb' and val['name'] == f'{name}_val'
        assert val['dataroot_lq'] == f'datasets/{name}/val/lr_x{s}.lmdb'
        recipe = RECIPES['tanet-ffhq' if name == 'FFHQ' else 'tanet-celeba']
        assert [d['counts'] for d in recipe['datasets'].values()] == [{'train': 3800, 'val': 100, 'test': 100}]
    else:
        assert opt['val']['suffix'] is None


@pytest.mark.parametrize('path', TRAIN, ids=os.path.basename)
def test_train_and_test_files_agree_and_see_the_same_geometry(path):
    """Item 2: the encoding the network trains with is the one it is tested with."""
    opt = load(path)
    test = load(path.replace(f'{os.sep}train_', f'{os.sep}test_'))
    assert test['network_g'] == opt['network_g'] and test['scale'] == opt['scale']
    assert dataset_of(test) == dataset_of(opt)
    s, hr = opt['scale'], HR_SIZE[dataset_of(opt)]
    crop = gt_hw(opt['datasets']['train'], hr)
    # FSRFaceDataset's rules for gt_size: a multiple of the scale, no larger than the face
    assert crop[0] % s == 0 and crop[1] % s == 0 and crop[0] <= hr[0] and crop[1] <= hr[1], crop
    net_opt = opt['network_g']
    if net_opt['token_mode'] == 'global':
        assert crop == hr, 'the global reading trains on whole faces'
        assert net_opt['pos_grid'] == token_grid(lr_size(hr, s)) == token_grid(lr_size(crop, s))
    else:
        assert 'pos_grid' not in net_opt  # the paper's reading has no grid-bound encoding
        assert crop[0] == crop[1], 'a square crop keeps the paper\'s 90/270-degree rotations'
    small = {k: v for k, v in net_opt.items() if k != 'type'}
    net = TANet(**{**small, **TINY})
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # an interpolated encoding in training warns
        with torch.no_grad():
            net.train()(torch.rand(1, 3, *lr_size(crop, s)))
            net.eval()(torch.rand(1, 3, *lr_size(hr, s)))
    if net_opt['token_mode'] == 'global':
        assert tuple(net.global_path.pos_embed.shape[-2:]) == tuple(token_grid(lr_size(hr, s)))


# The few-iteration training runs all train files in ONE process (BasicSR's train pipeline called once per file): the
# interpreter and library start-up, not the two iterations, dominate the cost of a run.
DRIVER = r'''
import sys
from fsr_utils import plugin
plugin.load()
from basicsr.train import train_pipeline
for opt_path in sys.argv[2:]:
    sys.argv = ['fsr-train', '-opt', opt_path]
    train_pipeline(ROOT)
'''


@pytest.mark.slow
def test_every_train_file_trains_a_few_iterations(tmp_path):
    import sys
    data = {}
    for name, hr in HR_SIZE.items():
        for part, num in (('train', 2), ('test', 1)):
            data[name, part] = make_face_dataset(tmp_path / name / part, num=num, hr_size=hr, scales=(4, 8))
    opt_paths, names = [], []
    for path in TRAIN:
        opt = load(path)
        ds_name, s = dataset_of(opt), opt['scale']
        stem = os.path.basename(path)[:-4]
        opt['num_gpu'] = 0
        opt['network_g'].update(TINY)
        train, val = opt['datasets']['train'], opt['datasets']['val']
        train.update(
            dataroot_gt=data[ds_name, 'train']['hr'],
            dataroot_lq=data[ds_name, 'train'][f'lr_x{s}'],
            batch_size_per_gpu=2,
            num_worker_per_gpu=0)
        val.update(
            name=f'{stem}_val', dataroot_gt=data[ds_name, 'test']['hr'], dataroot_lq=data[ds_name, 'test'][f'lr_x{s}'])
        opt['train'].update(total_iter=2)
        opt['train']['scheduler']['milestones'] = [10**6]
        opt['val'].update(val_freq=2)
        opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False, wandb=None)
        opt['dist_params']['backend'] = 'gloo'
        opt_paths.append(write_opt(opt, tmp_path / f'{stem}.yml'))
        names.append((opt['name'], stem))
    driver = DRIVER.replace('ROOT', repr(str(tmp_path)))
    proc = run_command([sys.executable, '-c', driver, '-', *opt_paths], tmp_path, env=subprocess_env())
    out = proc.stdout + proc.stderr
    assert 'position encoding is interpolated' not in out
    for exp, stem in names:
        ckpt = tmp_path / 'experiments' / exp / 'models' / 'net_g_2.pth'
        assert ckpt.is_file(), exp
        params = torch.load(ckpt, map_location='cpu', weights_only=True)['params']
        assert all(torch.isfinite(v).all() for v in params.values()), exp
        assert f'Validation {stem}_val' in out, stem
