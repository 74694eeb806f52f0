"""Issue 15.3: the option files' total batch (the paper's where it gives one) and epoch schedule survive the number of
GPUs (DDP and DataParallel).

The expected numbers are the papers' rule written out in plain arithmetic: one epoch is ``floor(N / total batch)``
optimizer steps (BasicSR's train loader drops the last incomplete batch), and "halved every E epochs" is a halving
after ``E`` such epochs.
"""
import copy
import os
import pytest
import re
import sys
from helpers import console_script, make_face_dataset, run_command, subprocess_env, tiny_train_opt, write_opt

from fsr_utils import compat


def _opt(dist, world_size, num_gpu, total=32, per_gpu=None):
    return {
        'dist': dist,
        'world_size': world_size,
        'num_gpu': num_gpu,
        '_opt_file': 'x.yml',
        'datasets': {
            'train': {
                'total_batch_size': total,
                **({
                    'batch_size_per_gpu': per_gpu
                } if per_gpu else {})
            }
        }
    }


def test_total_batch_is_split_by_the_world_size():
    opt = _opt(True, 2, 2)  # DDP, 2 processes: each loads total / 2
    assert compat.resolve_total_batch(opt) == 16 and opt['datasets']['train']['batch_size_per_gpu'] == 16
    opt = _opt(False, 1, 2)  # DataParallel on 2 GPUs: BasicSR's loader batch is batch_size_per_gpu * 2
    assert compat.resolve_total_batch(opt) == 32 and opt['datasets']['train']['batch_size_per_gpu'] == 16
    opt = _opt(False, 1, 0)  # CPU, one process
    assert compat.resolve_total_batch(opt) == 32 and opt['datasets']['train']['batch_size_per_gpu'] == 32
    opt = _opt(True, 4, 4, total=4)  # W-Net: 4 in total on 4 GPUs
    assert compat.resolve_total_batch(opt) == 1
    with pytest.raises(
            compat.OptionsError,
            match=r'x\.yml: datasets\.train\.total_batch_size 16 does not divide among '
            r'3 DDP processes'):
        compat.resolve_total_batch(_opt(True, 3, 3, total=16))
    with pytest.raises(compat.OptionsError, match='does not divide among 3 GPUs'):
        compat.resolve_total_batch(_opt(False, 1, 3, total=16))
    # an explicit per-GPU batch (--force_yml on a small machine) wins, with a warning naming the resulting total
    forced = _opt(True, 2, 2, per_gpu=1)
    assert compat.resolve_total_batch(forced) == 1 and forced['datasets']['train']['batch_size_per_gpu'] == 1
    assert 'the total batch is 2 on 2 device(s), not the 32' in forced['_fsr_warnings'][0]
    assert compat.resolve_total_batch(_opt(True, 2, 2, per_gpu=16)) == 16  # consistent: accepted
    assert compat.resolve_total_batch({'datasets': {'train': {'batch_size_per_gpu': 8}}}) is None  # old style


@pytest.mark.parametrize(
    'paper, num_images, total, gpus, every, epochs',
    [
        ('LAAT', 177000, 32, 2, 20, 100),  # batch 32 on 2 GPUs, halved every 20 epochs, 100 epochs
        # 2 GPUs, halved every 60 epochs (the paper); the total 16 is the option files' choice (the paper gives none)
        ('TANet FFHQ', 3800, 16, 2, 60, None),
        ('LAAT on 4 GPUs', 177000, 32, 4, 20, 100),
    ])
def test_epoch_schedule_in_iterations(paper, num_images, total, gpus, every, epochs):
    steps = num_images // total  # drop_last: 177000 / 32 = 5531.25 -> 5531
    opt = _opt(True, gpus, gpus, total=total)
    opt['train'] = {'scheduler': {'type': 'MultiStepLR', 'milestones_epochs': [every, 2 * every], 'gamma': 0.5}}
    if epochs:
        opt['train']['total_epochs'] = epochs
    compat.resolve_total_batch(opt)
    info = compat.resolve_epoch_schedule(opt, num_images)
    assert info['iters_per_epoch'] == steps, paper
    assert opt['train']['scheduler']['milestones'] == [every * steps, 2 * every * steps]
    assert 'milestones_epochs' not in opt['train']['scheduler']
    if epochs:
        assert opt['train']['total_iter'] == epochs * steps and 'total_epochs' not in opt['train']
    # the same options on one GPU give the same iterations (the schedule is in epochs of the data)
    one = _opt(False, 1, 1, total=total)
    one['train'] = {'scheduler': {'type': 'MultiStepLR', 'milestones_epochs': [every, 2 * every], 'gamma': 0.5}}
    compat.resolve_total_batch(one)
    compat.resolve_epoch_schedule(one, num_images)
    assert one['train']['scheduler']['milestones'] == opt['train']['scheduler']['milestones']


def test_epoch_keys_overrides_and_too_small_sets():
    opt = _opt(False, 1, 0, total=4)
    opt['train'] = {'total_iter': 10, 'total_epochs': 2, 'scheduler': {'milestones': [3], 'milestones_epochs': [1]}}
    compat.resolve_total_batch(opt)
    forced = copy.deepcopy(opt)  # iterations given too (--force_yml train:total_iter=10): they win, with a warning
    compat.resolve_epoch_schedule(forced, 40)
    assert forced['train'] == {'total_iter': 10, 'scheduler': {'milestones': [3]}}
    assert any('total_iter 10 is used, total_epochs 2 ignored' in w for w in forced['_fsr_warnings'])
    del opt['train']['total_iter'], opt['train']['scheduler']['milestones']
    with pytest.raises(compat.OptionsError, match='3 faces, fewer than one batch'):
        compat.resolve_epoch_schedule(copy.deepcopy(opt), 3)
    opt['val'] = {'val_freq_epochs': 1}
    opt['logger'] = {'save_checkpoint_freq_epochs': 2}
    compat.resolve_epoch_schedule(opt, 40)
    assert (opt['train']['total_iter'], opt['val']['val_freq'], opt['logger']['save_checkpoint_freq']) == (20, 10, 20)


def _lrs(out):
    """{iteration: lr} from BasicSR's training log lines."""
    return {int(i.replace(',', '')): float(lr) for i, lr in re.findall(r'iter:\s*([\d,]+), lr:\(([-+.\de]+),', out)}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_face_dataset(tmp_path_factory.mktemp('data'), num=12, hr_size=(32, 32), scales=(4, ))


def _epoch_schedule_run(tmp_path, data, name, total_batch, world, port, env=None):
    """A tiny TANet file with total batch ``total_batch``, 5 epochs and lr halvings after epochs 2 and 4, trained by
    ``world`` gloo processes; returns (the options file, launcher output + training log)."""
    from fsr_arch.tanet_arch import TINY_CONFIG
    opt = tiny_train_opt(
        name, {
            'type': 'TANet',
            **TINY_CONFIG, 'upscale': 4
        }, data, 4, lr=2e-3, dataset_extra={'gt_size': 32})
    train = opt['datasets']['train']
    del train['batch_size_per_gpu']
    train['total_batch_size'] = total_batch
    del opt['train']['total_iter']
    opt['train']['total_epochs'] = 5
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones_epochs': [2, 4], 'gamma': 0.5}
    opt['logger']['save_checkpoint_freq'] = None
    opt['logger']['save_checkpoint_freq_epochs'] = 5
    path = write_opt(opt, tmp_path / 'ddp.yml')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={world}', f'--master_port={port}',
        console_script('fsr-train'), '-opt', path, '--launcher', 'pytorch'
    ]
    out = run_command(cmd, tmp_path, env=env).stdout
    return path, out + open(max((tmp_path / 'experiments' / name).glob('train_*.log'))).read()


@pytest.mark.slow
def test_two_process_ddp_total_batch_and_lr_halvings(tmp_path, data):
    """2 gloo processes on the CPU: total batch 4 (2 per process), an epoch of 12 faces is 3 steps, the lr halves after
    2 and 4 epochs (iterations 6 and 12) and training stops after 5 epochs (15 iterations) - as on one process."""
    path, out = _epoch_schedule_run(tmp_path, data, 'tiny_ddp_epochs', 4, 2, 29623)
    assert re.search(r'Batch size per gpu: 2\b', out) and re.search(r'World size \(gpu number\): 2\b', out)
    assert re.search(r'Epoch schedule: 12 training faces .* 3 iterations per epoch', out)
    expected = {i: 2e-3 * 0.5**((i > 6) + (i > 12)) for i in range(1, 16)}
    assert _lrs(out) == pytest.approx(expected)
    models = tmp_path / 'experiments' / 'tiny_ddp_epochs' / 'models'
    assert (models / 'net_g_15.pth').is_file() and not (models / 'net_g_16.pth').exists()

    # the same options file on one process: batch 4 per step, the same iterations
    single = run_command([console_script('fsr-train'), '-opt', path, '--force_yml', 'name=tiny_one_epochs'], tmp_path)
    out1 = single.stdout + single.stderr
    assert re.search(r'Batch size per gpu: 4\b', out1) and re.search(r'World size \(gpu number\): 1\b', out1)
    assert _lrs(out1) == pytest.approx(expected)
    assert os.path.isfile(tmp_path / 'experiments' / 'tiny_one_epochs' / 'models' / 'net_g_15.pth')


@pytest.mark.slow
@pytest.mark.parametrize('world', [3, 4])
def test_three_and_four_process_ddp_total_batch_and_lr_halvings(tmp_path, data, world):
    """Issue 25 part 4: any world size. Total batch 12 over `world` gloo processes (12 / world each), an epoch of 12
    faces is one step, the lr halves after 2 and 4 epochs and training stops after 5 epochs: the same iterations as on
    one process with batch 12."""
    _, out = _epoch_schedule_run(
        tmp_path, data, f'tiny_ddp{world}', 12, world, 29623 + world, env=subprocess_env(OMP_NUM_THREADS='1'))
    assert re.search(rf'Batch size per gpu: {12 // world}\b', out)
    assert re.search(rf'World size \(gpu number\): {world}\b', out)
    assert re.search(r'Epoch schedule: 12 training faces .* 1 iterations per epoch', out)
    assert _lrs(out) == pytest.approx({i: 2e-3 * 0.5**((i > 2) + (i > 4)) for i in range(1, 6)})


@pytest.mark.parametrize('world', [1, 2, 3, 4])
@pytest.mark.parametrize('num_images', [12, 13])
def test_every_rank_reads_a_disjoint_part_of_the_data(world, num_images):
    """The sampler every process uses (BasicSR's EnlargedSampler with the plugin's resume skip) gives each rank its own
    faces: disjoint across ranks, together every face (padded to a multiple of the world size, as DistributedSampler
    does), the same for every epoch's permutation."""
    import torch
    from basicsr.data.data_sampler import EnlargedSampler
    dataset = list(range(num_images))
    for epoch in (0, 1):
        parts = []
        for rank in range(world):
            sampler = EnlargedSampler(dataset, num_replicas=world, rank=rank, ratio=1)
            sampler.set_epoch(epoch)
            parts.append(list(sampler))
        per_rank = -(-num_images // world)
        assert all(len(p) == per_rank for p in parts)
        order = torch.randperm(per_rank * world, generator=torch.Generator().manual_seed(epoch)).tolist()
        expected = [[order[i] % num_images for i in range(rank, per_rank * world, world)] for rank in range(world)]
        assert parts == expected  # BasicSR's rule written out: rank r takes every world-th index from r
        flat = [i for p in parts for i in p]
        assert set(flat) == set(range(num_images))
        if num_images % world == 0:
            assert len(flat) == len(set(flat))  # disjoint when the world size divides the set
