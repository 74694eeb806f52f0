"""Test utilities: tiny synthetic face datasets in BasicSR's LMDB format and ``fsr-train`` runs in a subprocess.

Usage in a test::

    from helpers import make_face_dataset, tiny_train_opt, run_fsr_train, read_losses
    data = make_face_dataset(tmp_path / 'data', num=8, hr_size=(32, 32), scales=(4,), parsing=True)
    opt = tiny_train_opt('tiny_laat', {'type': 'LAAT', **TINY_CONFIG, 'upscale': 4}, data, scale=4)
    run_fsr_train(opt, tmp_path)
    losses = read_losses(tmp_path, 'tiny_laat')['l_pix']
"""
import contextlib
import cv2
import lmdb
import numpy as np
import os
import re
import shutil
import subprocess
import sys
import yaml

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


@contextlib.contextmanager
def torch_threads(n=1):
    """Run with ``n`` intra-op torch threads, restoring the previous count: tiny networks run hundreds of small ops,
    for which a second thread brings nothing and, on a busy 2-core machine, OpenMP hand-offs cost a lot (measured:
    0.23 s vs 15 s per tiny W-Net training step)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# CelebAMask-HQ labels used by the synthetic faces.
SKIN, L_BROW, R_BROW, L_EYE, R_EYE, NOSE, MOUTH, U_LIP, L_LIP, HAIR = 1, 2, 3, 4, 5, 10, 11, 12, 13, 17


def synthetic_face(hr_h, hr_w, rng):
    """A schematic face (BGR uint8) and its 19-class label map (uint8), with left/right parts on the image's left/right.

    Random colours, position jitter and smooth texture make every sample different while the layout stays face-like.
    """
    label = np.zeros((hr_h, hr_w), np.uint8)
    jy, jx = rng.uniform(-0.03, 0.03, 2)
    cy, cx = hr_h * (0.52 + jy), hr_w * (0.5 + jx)

    def ellipse(lbl, y, x, ry, rx):
        cv2.ellipse(label, (int(round(cx + x * hr_w)), int(round(cy + y * hr_h))),
                    (max(1, int(rx * hr_w)), max(1, int(ry * hr_h))), 0, 0, 360, int(lbl), -1)

    ellipse(HAIR, -0.12, 0, 0.42, 0.40)
    ellipse(SKIN, 0.02, 0, 0.38, 0.32)
    for side, brow, eye in ((-1, L_BROW, L_EYE), (1, R_BROW, R_EYE)):
        ellipse(brow, -0.14, side * 0.13, 0.025, 0.08)
        ellipse(eye, -0.07, side * 0.13, 0.035, 0.06)
    ellipse(NOSE, 0.05, 0, 0.07, 0.04)
    ellipse(U_LIP, 0.18, 0, 0.025, 0.1)
    ellipse(MOUTH, 0.2, 0, 0.012, 0.08)
    ellipse(L_LIP, 0.225, 0, 0.025, 0.1)
    palette = rng.uniform(20, 235, (19, 3))
    img = palette[label]
    texture = cv2.resize(
        rng.normal(0, 18, (max(2, hr_h // 8), max(2, hr_w // 8), 3)), (hr_w, hr_h), interpolation=cv2.INTER_CUBIC)
    img = cv2.GaussianBlur(img + texture, (0, 0), 0.8)
    return np.clip(img, 0, 255).round().astype(np.uint8), label


def lmdb_items(lmdb_path, decode_keys=False):
    """Every ``{key: value}`` of an LMDB as bytes (keys decoded to str with ``decode_keys``)."""
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {(k.decode() if decode_keys else bytes(k)): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def load_script(name):
    """The module of ``scripts/<name>.py`` (the scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, 'scripts', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_lmdb(lmdb_path, images, compress_level=1):
    """Write ``{key: HxW or HxWxC uint8}`` as PNG bytes into a BasicSR-format LMDB (with meta_info.txt)."""
    total = sum(im.nbytes for im in images.values())
    env = lmdb.open(str(lmdb_path), map_size=max(10 * total, 1 << 20))
    lines = []
    with env.begin(write=True) as txn:
        for key, img in images.items():
            ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            assert ok
            txn.put(key.encode('ascii'), buf.tobytes())
            c = 1 if img.ndim == 2 else img.shape[2]
            lines.append(f'{key}.png ({img.shape[0]},{img.shape[1]},{c}) {compress_level}\n')
    env.close()
    with open(os.path.join(str(lmdb_path), 'meta_info.txt'), 'w') as f:
        f.writelines(lines)


def bicubic_lr(img_bgr_uint8, scale):
    """LR image made with BasicSR's MATLAB-style bicubic imresize (as the data pipeline does)."""
    from fsr_utils import compat
    compat.install_torchvision_shim()
    from basicsr.utils.matlab_functions import imresize
    lr = imresize(img_bgr_uint8.astype(np.float32) / 255., 1. / scale)
    return np.clip(lr * 255., 0, 255).round().astype(np.uint8)


def make_face_dataset(root, num=8, hr_size=(32, 32), scales=(4, ), parsing=False, seed=0):
    """Make ``root/hr.lmdb``, ``root/lr_x{s}.lmdb`` (and ``root/parsing.lmdb``) of synthetic faces.

    Returns:
        dict: 'root', 'hr', 'lr_x{s}' and (if parsing) 'parsing' paths, and 'keys'.
    """
    root = str(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    hr, labels = {}, {}
    for i in range(num):
        key = f'{i:05d}'
        hr[key], labels[key] = synthetic_face(hr_size[0], hr_size[1], rng)
    paths = {'root': root, 'hr': os.path.join(root, 'hr.lmdb'), 'keys': sorted(hr)}
    write_lmdb(paths['hr'], hr)
    for s in scales:
        paths[f'lr_x{s}'] = os.path.join(root, f'lr_x{s}.lmdb')
        write_lmdb(paths[f'lr_x{s}'], {k: bicubic_lr(v, s) for k, v in hr.items()})
    if parsing:
        paths['parsing'] = os.path.join(root, 'parsing.lmdb')
        write_lmdb(paths['parsing'], labels)
    return paths


def tiny_train_opt(name,
                   network_g,
                   data,
                   scale,
                   total_iter=20,
                   batch_size=4,
                   lr=2e-3,
                   dataset_type='PairedImageDataset',
                   model_type='FSRModel',
                   pixel_loss='L1Loss',
                   dataset_extra=None,
                   extra=None):
    """A BasicSR training option dict for a few CPU iterations on a dataset made by :func:`make_face_dataset`.

    ``dataset_extra`` updates the train dataset options, ``extra`` the top-level options (e.g. a ``train`` dict
    is merged
    key by key).
    """
    dataset = {
        'name': 'tiny',
        'type': dataset_type,
        'dataroot_gt': data['hr'],
        'dataroot_lq': data[f'lr_x{scale}'],
        'io_backend': {
            'type': 'lmdb'
        },
        'gt_size': None,
        'use_hflip': True,
        'use_rot': False,
        'num_worker_per_gpu': 0,
        'batch_size_per_gpu': batch_size,
        'dataset_enlarge_ratio': 1,
        'prefetch_mode': None,
    }
    dataset.update(dataset_extra or {})
    if dataset['gt_size'] is None:
        dataset.pop('gt_size')
        if dataset_type == 'PairedImageDataset':
            raise ValueError('PairedImageDataset needs gt_size')
    opt = {
        'name': name,
        'model_type': model_type,
        'scale': scale,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': dataset
        },
        'network_g': dict(network_g),
        'path': {
            'pretrain_network_g': None,
            'strict_load_g': True,
            'resume_state': None
        },
        'train': {
            'optim_g': {
                'type': 'Adam',
                'lr': lr,
                'betas': [0.9, 0.99]
            },
            'scheduler': {
                'type': 'MultiStepLR',
                'milestones': [10**6],
                'gamma': 0.5
            },
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {
                'type': pixel_loss,
                'loss_weight': 1.0,
                'reduction': 'mean'
            },
        },
        'logger': {
            'print_freq': 1,
            'save_checkpoint_freq': total_iter,
            'use_tb_logger': False,
            'wandb': None
        },
        'dist_params': {
            'backend': 'gloo',
            'port': 29500
        },
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(opt.get(key), dict):
            opt[key].update(value)
        else:
            opt[key] = value
    return opt


def subprocess_env(**overrides):
    """Environment for plugin subprocesses: repo code first on the path, offline guard, CPU only, 2 threads."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([os.path.join(TESTS_DIR, 'offline'), REPO_ROOT] +
                                        ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['CUDA_VISIBLE_DEVICES'] = ''
    env.setdefault('OMP_NUM_THREADS', '1')  # tiny networks: more threads only add OpenMP waits
    env.update(overrides)
    return env


def run_command(cmd, cwd, timeout=600, check=True, env=None):
    """Run a command in a subprocess with :func:`subprocess_env`; on failure the assertion shows its output."""
    proc = subprocess.run(
        cmd, cwd=str(cwd), env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f'{" ".join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n' \
                                     f'{proc.stderr[-6000:]}'
    return proc


def console_script(name):
    """Path of an installed console script of the plugin (the package must be pip-installed, as the README says)."""
    path = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.isfile(path), f'{name} is not installed: run `pip install --no-build-isolation .` (README).'
    return path


def write_opt(opt, path):
    with open(str(path), 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_fsr_train(opt, workdir, args=(), timeout=600, check=True):
    """Write ``opt`` to ``workdir/<name>.yml`` and run ``fsr-train -opt`` there (experiments/ lands in ``workdir``)."""
    opt_path = write_opt(opt, os.path.join(str(workdir), f'{opt["name"]}.yml'))
    cmd = [console_script('fsr-train'), '-opt', opt_path, *args]
    return run_command(cmd, workdir, timeout=timeout, check=check)


def read_losses(workdir, name):
    """Parse the BasicSR training log(s) of experiment ``name``: ``{loss_name: [value per logged iteration]}``."""
    exp = os.path.join(str(workdir), 'experiments', name)
    logs = sorted(f for f in os.listdir(exp) if f.startswith('train_') and f.endswith('.log'))
    losses = {}
    for log in logs:
        with open(os.path.join(exp, log)) as f:
            for line in f:
                if 'iter:' not in line or 'lr:(' not in line:
                    continue
                for key, value in re.findall(r'\b(l_\w+|parsing_\w+): ([-+0-9.eE]+)', line):
                    losses.setdefault(key, []).append(float(value))
    return losses


def loss_fell(values, window=3):
    """True when the mean of the last ``window`` logged values is below the mean of the first ``window``."""
    assert len(values) >= 2 * window, f'too few logged losses: {values}'
    return float(np.mean(values[-window:])) < float(np.mean(values[:window]))


def save_small_vgg19(path, num_layers=9):
    """A torchvision-format VGG19 weights file with random weights for ``features[:num_layers]`` only (9: up to
    relu2_2), a stand-in for ``vgg19-dcbb9e9d.pth`` (550 MB, not downloadable here) for the layers the tests use."""
    import torch
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    state = make_layers(cfgs['E'])[:num_layers].state_dict()
    torch.save({f'features.{k}': v for k, v in state.items()}, str(path))
    return str(path)


def tiny_test_opt(name, network_g, data, checkpoint, scale=4):
    """A BasicSR test option dict (``fsr-test`` / ``python -m basicsr.test``) of a checkpoint on a dataset made by
    :func:`make_face_dataset`: Y-channel PSNR with crop_border = scale, images saved."""
    return {
        'name': name,
        'model_type': 'FSRModel',
        'scale': scale,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'test_1': {
                'name': 'tiny',
                'type': 'PairedImageDataset',
                'dataroot_gt': data['hr'],
                'dataroot_lq': data[f'lr_x{scale}'],
                'io_backend': {
                    'type': 'lmdb'
                }
            }
        },
        'network_g': dict(network_g),
        'path': {
            'pretrain_network_g': str(checkpoint),
            'strict_load_g': True
        },
        'val': {
            'save_img': True,
            'suffix': None,
            'metrics': {
                'psnr': {
                    'type': 'calculate_psnr',
                    'crop_border': scale,
                    'test_y_channel': True
                }
            }
        },
    }


class Interrupt(KeyboardInterrupt):
    """The interruption :func:`fault_at` raises inside fsr-prepare (a Ctrl-C at a chosen point)."""


def fault_at(point, count):
    """fsr-prepare's ``_fault`` hook: raise :class:`Interrupt` the ``count``-th time the run reaches ``point``."""

    def fault(where, n):
        if where == point and n == count:
            raise Interrupt(f'{where} {n}')

    return fault


def smooth_photos(folder, n=10, size=(48, 40), seed=0):
    """``n`` aligned-face stand-ins for fsr-prepare: smooth random PNGs ``img00.png`` ... of ``size`` (H, W)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        img = cv2.resize((rng.rand(6, 5, 3) * 255).astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, f'img{i:02d}.png'), img)
    return folder
