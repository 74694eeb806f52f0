#!/usr/bin/env python
"""AMINet and W-Net at the papers' widths: training loss with 1/sqrt(d) vs Restormer's l2norm attention scaling.

Both papers write their self-attention as ``Softmax(Q K / sqrt(d)) V`` (AMINet eq. 5, W-Net eq. 21) with the dot
products running over the H*W positions of the feature map (channel attention, ``attn_mode: channel``), so the logits
grow with the face size; Restormer's ``l2norm`` (L2-normalised q, k and a learned temperature) is the option that bounds
them. This script trains each network from the paper option file (``options/train_aminet_x4.yml``,
``options/train_wnet_x4.yml``: the papers' widths, depths, heads, optimiser and learning rate) on the demo faces
(whole 128x128 faces: every attention sees the paper's H*W) for ``--steps`` iterations, once per scaling, from the same
seed and on the same batches, and plots the losses (docs/attn_scaling_curves.png).

What differs from the paper files, for the CPU (printed with the table): the demo faces (``demo_data/train``, 40 faces),
batch ``--batch`` (the papers: AMINet none given, our 16; W-Net 4), no validation, a constant learning rate; W-Net
without the perceptual half of its key-region loss (no VGG19 weights here; the masked MSE stays) and with
``--wnet-up-levels`` W-path up-levels (default 0 instead of 3: the 256..1024 maps cost about 90% of its FLOPs and hold
no softmax attention, only LPF's sigmoid attentions; the SCABs, where eq. 21 applies, keep the paper's sizes 128..16).

A run whose loss turns non-finite stops there (``fsr-train`` refuses to step on a NaN loss) and is reported as such.

Usage (about 40 minutes on 2 cores: two runs at a time, one thread each; demo_data/ from
``scripts/make_demo_data.py --out demo_data``)::

    python scripts/attn_scaling_curves.py --steps 250 --json attn.json --out docs/attn_scaling_curves.png
"""
import argparse
import json
import numpy as np
import os
import shutil
import subprocess
import sys
import tempfile
import time
import yaml
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from amp_curves import logged_losses, moving_average, plot_two_runs  # noqa: E402

NETWORKS = ('aminet', 'wnet')
TITLES = {'aminet': 'AMINet', 'wnet': 'W-Net'}
SCALINGS = ('sqrt_d', 'l2norm')
LOSS_KEY = {'aminet': 'l_pix', 'wnet': 'l_total'}


def make_options(net, scaling, args, data, workdir):
    """The paper options of ``net`` turned into a ``--steps``-iteration CPU run; returns (path, experiment name)."""
    with open(os.path.join(ROOT, 'options', f'train_{net}_x4.yml')) as f:
        opt = yaml.safe_load(f)
    train = opt['datasets']['train']
    for key, value in list(train.items()):
        if key.startswith('dataroot') and isinstance(value, str):
            train[key] = os.path.join(data, 'train', os.path.basename(value))
    train.pop('total_batch_size', None)
    train.update(batch_size_per_gpu=args.batch, num_worker_per_gpu=0, gt_size=128)
    opt['datasets'] = {'train': train}
    opt.pop('val', None)
    opt['num_gpu'] = 0
    opt['name'] = f'attncurve_{net}_{scaling}'
    opt['network_g']['attn_scaling'] = scaling
    tr = opt['train']
    for key in ('total_epochs', 'total_iter'):
        tr.pop(key, None)
    tr['total_iter'] = args.steps
    tr['scheduler'] = {'type': 'MultiStepLR', 'milestones': [10**9], 'gamma': 0.5}
    if net == 'wnet':
        opt['network_g'].update(num_up_levels=args.wnet_up_levels, use_checkpoint=False)
        tr['key_region_opt'].update(perceptual_weight=0, vgg_weights_path=None)
    logger = opt['logger']
    for key in list(logger):
        if key.startswith('save_checkpoint_freq'):
            logger.pop(key)
    logger.update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    path = os.path.join(workdir, opt['name'] + '.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path, opt['name']


def run(net, scaling, args, data, workdir):
    """One training; returns (losses per iteration, seconds, the error line when it stopped early)."""
    path, name = make_options(net, scaling, args, data, workdir)
    exe = shutil.which('fsr-train') or os.path.join(os.path.dirname(sys.executable), 'fsr-train')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS=str(args.threads))
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    start = time.time()
    proc = subprocess.run([exe, '-opt', path], cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    stopped = None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        stopped = lines[-1] if lines else f'exit {proc.returncode}'
    try:
        losses = logged_losses(workdir, name, LOSS_KEY[net])
    except (OSError, IndexError):
        sys.exit(f'error: fsr-train failed for {net} {scaling} before logging a loss:\n{proc.stderr[-3000:]}')
    print(
        f'{net} {scaling}: {len(losses)} iterations in {seconds:.0f} s' + (f' (stopped: {stopped})' if stopped else ''),
        flush=True)
    return losses, seconds, stopped


def summary(values, window, tail):
    """First-window mean, last-``tail`` mean, the largest ``window``-iteration mean relative to the first one (a
    non-finite loss is never logged: fsr-train stops before it, see "stopped early")."""
    v = np.asarray(values, np.float64)
    ma = moving_average(v, window)
    return {
        'steps': int(len(v)),
        'first': float(np.mean(v[:window])),
        'last': float(np.mean(v[-tail:])),
        'worst_rise': float(np.max(ma / ma[0])),
    }


def plot(curves, window, out, note):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8))
    axes = np.atleast_1d(axes)
    for ax, (net, by_scaling) in zip(axes, curves.items()):
        plot_two_runs(ax, [(scaling, by_scaling[scaling]['losses']) for scaling in SCALINGS], window)
        ax.set_title(f'{TITLES[net]} (paper width)', fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel('training loss (AMINet l_pix; W-Net l_total)')
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=250)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--nets', nargs='+', default=list(NETWORKS), choices=NETWORKS)
    p.add_argument('--wnet-up-levels', type=int, default=0, choices=(0, 1, 2, 3))
    p.add_argument('--data', default=os.path.join(ROOT, 'demo_data'), help='demo_data/ of scripts/make_demo_data.py')
    p.add_argument('--jobs', type=int, default=2, help='trainings at a time')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per training')
    p.add_argument('--window', type=int, default=20)
    p.add_argument('--tail', type=int, default=50)
    p.add_argument('--out', default=os.path.join(ROOT, 'docs', 'attn_scaling_curves.png'))
    p.add_argument('--json', default=None, help='also write the curves here')
    p.add_argument('--replot', default=None, help='no training: plot and tabulate the curves of a --json file')
    p.add_argument('--workdir', default=None, help='experiments/ go here (default: a temporary folder, removed)')
    args = p.parse_args(argv)
    if args.steps < max(args.window, args.tail) or min(args.window, args.tail, args.batch, args.jobs) < 1:
        p.error('--steps must be at least --window and --tail; --window, --tail, --batch, --jobs >= 1')
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        for key in ('batch', 'wnet_up_levels', 'steps'):  # the note describes the runs, not this command line
            setattr(args, key, saved.get('args', {}).get(key, getattr(args, key)))
        return report(args, saved['curves'])
    data = os.path.abspath(args.data)
    if not os.path.isdir(os.path.join(data, 'train', 'hr.lmdb')):
        p.error(f'--data {args.data}: no train/hr.lmdb; make it with python scripts/make_demo_data.py --out demo_data')
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix='fsr_attn_curves_')
    os.makedirs(workdir, exist_ok=True)
    jobs = [(net, s) for net in args.nets for s in SCALINGS]
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda job: run(*job, args, data, workdir), jobs))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    curves = {}
    for (net, scaling), (losses, seconds, stopped) in zip(jobs, results):
        curves.setdefault(net, {})[scaling] = {'losses': losses, 'seconds': seconds, 'stopped': stopped}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'curves': curves, 'args': vars(args)}, f)
    return report(args, curves)


def report(args, curves):
    note = (f'paper option files, demo faces (128x128), batch {args.batch}, constant lr, CPU; W-Net: '
            f'{args.wnet_up_levels} W-path up-levels, no perceptual term (python scripts/attn_scaling_curves.py)')
    plot(curves, args.window, args.out, note)
    print(f'\n{note}\n')
    print(f'| network | scaling | iterations | first-{args.window} mean | last-{args.tail} mean | '
          f'largest {args.window}-it. mean / first | seconds | stopped early |')
    print('|---|---|---:|---:|---:|---:|---:|---|')
    for net, by_scaling in curves.items():
        for scaling, r in by_scaling.items():
            s = summary(r['losses'], args.window, args.tail)
            print(f'| {TITLES[net]} | {scaling} | {s["steps"]} | {s["first"]:.4g} | {s["last"]:.4g} | '
                  f'{s["worst_rise"]:.2f} | {r["seconds"]:.0f} | {r["stopped"] or "no"} |')
    print(f'\nplot: {os.path.relpath(args.out, os.getcwd())}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
