#!/usr/bin/env python
"""Training part of ``scripts/gpu_check.sh``: each paper option file trains 20 iterations on one GPU, finite losses.

For each ``options/train_*.yml`` (the papers' configurations; ``--include`` adds others, e.g. ``options/baselines``), a
synthetic face set of the option's HR size (``gt_size``; 128x128 when the file trains on whole faces of unstated size)
is written as BasicSR LMDBs (with parsing maps where the file reads them), and ``fsr-train`` runs the file unchanged
except for: the data roots, ``num_gpu: 1``, ``total_iter`` (20), no validation, no checkpoints, no tensorboard, and the
VGG19 weights of perceptual losses replaced by a small stand-in with random weights (``vgg19-dcbb9e9d.pth`` cannot be
assumed present; the check is that training runs and its losses stay finite, not what they reach). The batch is the
file's own, so the GPU memory is the paper configuration's. ``--ddp 2`` runs the same through ``torchrun`` on two GPUs.

A GPU is lent rarely and briefly, so the check is built to finish in minutes: by default one option file per
(model, network, scale) runs (the shortest name: the paper file, not a variant; ``--all`` runs every file), the
synthetic set is enlarged so that all iterations fall in one epoch (data-loader workers are started once, not every
two iterations), and each run has a time limit (``--timeout``, seconds; a run past it is reported as
``FAIL ... timed out`` and the next one starts). Paths may be relative to the current directory (the work folder
is made absolute before ``fsr-train`` runs in it).

``--amp bf16`` trains with ``train: amp: bf16`` and ``channels_last: true`` (the plugin's speed options, docs/amp.md)
in experiments named ``..._bf16``. Each run reports its training images/s: the batch of one optimizer step over the
time per iteration in the second half of the run (from BasicSR's logged running mean of the iteration time, so the
first iterations' compilation and cuDNN autotuning are left out). The figures are kept in ``<workdir>/throughput.json``;
a run with ``--amp`` after one without in the same work folder prints both side by side (scripts/gpu_check.sh).

Usage: python scripts/gpu_check.py [--iters 20] [--ddp N] [--only NAME ...] [--all] [--timeout S] [--workdir DIR]
[--amp bf16]
Prints one line per option file (``ok`` with the training images/s, the last logged losses and the time, or ``FAIL``
with the log's tail) and exits 1 when any failed.
"""
import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))


def _hr_size(opt):
    size = opt['datasets']['train'].get('gt_size') or 128
    return (size, size) if isinstance(size, int) else tuple(size)


def _replace_vgg(node, path):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'vgg_weights_path':
                node[key] = path
            else:
                _replace_vgg(value, path)
    elif isinstance(node, list):
        for value in node:
            _replace_vgg(value, path)


def prepare(opt_path, workdir, iters, num_gpu, amp=None):
    """Return the path of the modified option file (data made under ``workdir``), the experiment name and the number
    of faces of one optimizer step on one process (``amp``: ``train.amp`` with ``channels_last``, e.g. ``'bf16'``)."""
    from helpers import make_face_dataset, save_small_vgg19
    with open(opt_path) as f:
        opt = yaml.safe_load(f)
    train = opt['datasets']['train']
    scale = opt['scale']
    h, w = _hr_size(opt)
    h, w = h + (-h) % scale, w + (-w) % scale
    batch = train.get('total_batch_size') or train.get('batch_size_per_gpu') or 4
    num = max(2 * int(batch), 8)
    parsing = 'dataroot_parsing' in train
    data_dir = os.path.join(workdir, f'data_{h}x{w}_x{scale}_p{int(parsing)}')
    if not os.path.isdir(data_dir):
        make_face_dataset(data_dir, num=num, hr_size=(h, w), scales=(scale, ), parsing=parsing)
    train['dataroot_gt'] = os.path.join(data_dir, 'hr.lmdb')
    train['dataroot_lq'] = os.path.join(data_dir, f'lr_x{scale}.lmdb')
    if parsing:
        train['dataroot_parsing'] = os.path.join(data_dir, 'parsing.lmdb')
    train['num_worker_per_gpu'] = 2
    # one epoch holds every iteration: BasicSR re-creates the loader's workers at each epoch
    train['dataset_enlarge_ratio'] = max(1, math.ceil((iters + 1) * int(batch) / num))
    train.pop('prefetch_mode', None)
    opt['datasets'] = {'train': train}
    opt.pop('val', None)
    opt['num_gpu'] = num_gpu
    opt['name'] = f'gpucheck_{os.path.splitext(os.path.basename(opt_path))[0]}' + (f'_{amp}' if amp else '')
    opt['train']['total_iter'] = iters
    if amp:
        opt['train'].update(amp=amp, channels_last=True)
    for key in ('total_epochs', 'milestones_epochs'):
        opt['train'].pop(key, None)
    opt['logger'] = {
        'print_freq': max(1, min(5, iters)),
        'save_checkpoint_freq': 10**9,
        'use_tb_logger': False,
        'wandb': None
    }
    opt.setdefault('dist_params', {})['backend'] = 'nccl' if num_gpu else 'gloo'
    vgg = os.path.join(workdir, 'vgg19_standin.pth')
    if not os.path.isfile(vgg):
        save_small_vgg19(vgg, num_layers=37)
    _replace_vgg(opt, vgg)
    out = os.path.join(workdir, opt['name'] + '.yml')
    with open(out, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return out, opt['name'], int(train.get('total_batch_size') or train['batch_size_per_gpu'])


def losses(log_text):
    """Logged losses ``{name: [values]}`` from BasicSR's training log lines (``l_pix: 1.2e-02 ...``)."""
    found = {}
    for name, value in re.findall(r'\b(l_[a-z_]+): ([-+0-9.eE]+|nan|inf)', log_text):
        found.setdefault(name, []).append(float(value))
    return found


def seconds_per_iteration(log_text):
    """Seconds per training iteration in the second half of a run, from BasicSR's log lines (or None).

    BasicSR logs ``time (data): T`` with T the running mean of the iteration time since the first iteration (reset
    every 200), so the iterations between two logged points ``i1 < i2`` took ``(i2 * T2 - i1 * T1) / (i2 - i1)``
    each; ``i1`` is the last logged iteration at or before ``i2 / 2``.
    """
    points = [(int(i.replace(',', '')), float(t))
              for i, t in re.findall(r'iter:\s*([\d,]+), lr:\(.*?time \(data\): ([0-9.]+)', log_text)]
    if len(points) < 2 or points[-1][0] > 200:
        return None
    i2, t2 = points[-1]
    i1, t1 = [p for p in points if p[0] <= i2 / 2][-1] if points[0][0] <= i2 / 2 else points[0]
    return (i2 * t2 - i1 * t1) / (i2 - i1)


def record_throughput(workdir, label, mode, images_per_s):
    """Keep ``{option file: {mode: images/s}}`` in ``<workdir>/throughput.json``; returns the whole table."""
    path = os.path.join(workdir, 'throughput.json')
    table = {}
    if os.path.isfile(path):
        with open(path) as f:
            table = json.load(f)
    table.setdefault(label, {})[mode] = images_per_s
    with open(path + '.tmp', 'w') as f:
        json.dump(table, f, indent=1)
    os.replace(path + '.tmp', path)
    return table


def compare_table(table, mode):
    """Markdown lines comparing fp32 with ``mode`` for the option files that have both (empty if none)."""
    rows = [(label, t['fp32'], t[mode]) for label, t in table.items() if t.get('fp32') and t.get(mode)]
    if not rows:
        return []
    lines = [f'| option file | fp32 images/s | {mode} images/s | {mode} / fp32 |', '|---|---|---|---|']
    lines += [f'| {label} | {a:.1f} | {b:.1f} | {b / a:.2f}x |' for label, a, b in rows]
    return lines


def run_one(opt_path, workdir, iters, ddp, num_gpu=1, timeout=None, amp=None):
    path, name, batch = prepare(opt_path, workdir, iters, num_gpu, amp)
    exe = shutil.which('fsr-train')
    if ddp > 1:
        cmd = ['torchrun', f'--nproc_per_node={ddp}', exe, '-opt', path, '--launcher', 'pytorch']
    else:
        cmd = [exe, '-opt', path]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b'') + (exc.stderr or b'')
        out = out.decode(errors='replace') if isinstance(out, bytes) else out
        print(f'FAIL {os.path.relpath(opt_path, ROOT)}: timed out after {timeout} s\n{out[-2000:]}', flush=True)
        return False
    seconds = time.time() - start
    logs = sorted(glob.glob(os.path.join(workdir, 'experiments', name, f'train_{name}_*.log')))
    text = open(logs[-1]).read() if logs else ''
    found = losses(text)
    ok = proc.returncode == 0 and found and all(math.isfinite(v) for vs in found.values() for v in vs)
    label = os.path.relpath(opt_path, ROOT)
    if ok:
        last = ', '.join(f'{k} {v[-1]:.3g}' for k, v in sorted(found.items()))
        per_iter = seconds_per_iteration(text)
        # one optimizer step: the file's total batch, or its per-GPU batch on each of the ddp processes
        images = batch * (1 if prepare_total(opt_path) else ddp)
        rate = images / per_iter if per_iter else None
        speed = f', {rate:.1f} training images/s' if rate else ', training images/s: too few logged iterations'
        mode = f'{amp}+channels_last' if amp else 'fp32'
        if rate:
            record_throughput(workdir, label, mode, rate)
        tag = f' ({mode})' if amp else ''
        print(f'ok   {label}{tag}: {iters} iterations in {seconds:.0f} s{speed} ({last})', flush=True)
    else:
        tail = (proc.stdout + proc.stderr)[-3000:]
        print(f'FAIL {label}: rc {proc.returncode}, losses {found}\n{tail}', flush=True)
    return bool(ok)


def prepare_total(opt_path):
    """True when the option file states the total batch (``total_batch_size``) rather than a per-GPU batch."""
    with open(opt_path) as f:
        return bool(yaml.safe_load(f)['datasets']['train'].get('total_batch_size'))


def one_per_kind(files):
    """One option file of each (model_type, network_g type, scale): the shortest name (the paper file)."""
    seen, kept = set(), []
    for f in sorted(files, key=lambda f: (len(os.path.basename(f)), f)):
        with open(f) as fh:
            opt = yaml.safe_load(fh)
        kind = (opt.get('model_type'), (opt.get('network_g') or {}).get('type'), opt.get('scale'))
        if kind not in seen:
            seen.add(kind)
            kept.append(f)
    return [f for f in files if f in kept]  # the callers' order: paper files first, baselines last


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--ddp', type=int, default=1, help='processes (GPUs) per run; 2 runs torchrun')
    p.add_argument('--only', nargs='*', default=None, help='option file names (without .yml) to run')
    p.add_argument('--include', nargs='*', default=[], help='more option folders, e.g. options/baselines')
    p.add_argument('--all', action='store_true', help='every option file, not one per (model, network, scale)')
    p.add_argument('--timeout', type=float, default=None, help='seconds per run (default: no limit)')
    p.add_argument('--workdir', default=None)
    p.add_argument('--cpu', action='store_true', help='num_gpu 0 (to check this script itself on a CPU machine)')
    p.add_argument(
        '--amp', choices=['bf16', 'fp16'], default=None, help='train with train.amp (and channels_last: true)')
    args = p.parse_args(argv)
    files = sorted(glob.glob(os.path.join(ROOT, 'options', 'train_*.yml')))
    for folder in args.include:
        files += sorted(glob.glob(os.path.join(ROOT, folder, 'train_*.yml')))
    if args.only:
        files = [f for f in files if os.path.splitext(os.path.basename(f))[0] in args.only]
    if args.iters < 1 or args.ddp < 1 or (args.timeout is not None and not args.timeout > 0):
        p.error('--iters and --ddp must be >= 1 and --timeout > 0')
    if not args.all and not args.only:
        files = one_per_kind(files)
    # fsr-train runs with cwd=workdir: every path handed to it must not depend on the caller's directory
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix='fsr_gpu_check_'))
    os.makedirs(workdir, exist_ok=True)
    results = [run_one(f, workdir, args.iters, args.ddp, 0 if args.cpu else 1, args.timeout, args.amp) for f in files]
    print(f'{sum(results)} passed, {len(results) - sum(results)} failed')
    table_path = os.path.join(workdir, 'throughput.json')
    if args.amp and os.path.isfile(table_path):
        with open(table_path) as f:
            lines = compare_table(json.load(f), f'{args.amp}+channels_last')
        if lines:
            print(f'training images/s, fp32 vs train.amp {args.amp} + channels_last (same work folder):')
            print('\n'.join(lines))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
