#!/usr/bin/env python
"""bf16 autocast vs fp32 training on the CPU: loss curves of every network on the demo faces (docs/amp.md).

For each network's demo options (``options/demo/train_{net}_demo_x4.yml``: LAAT, AMINet, TANet, W-Net at demo widths),
``fsr-train`` runs ``--steps`` iterations twice, one run at a time, from the same seed and on the same batches: once in
fp32 (BasicSR's default) and once with ``train: amp: bf16``. The files are used unchanged except for: absolute data
roots, no validation, a loss logged at every iteration, no intermediate checkpoints and ``total_iter = --steps``.

The curves are compared on their trailing moving average over ``--window`` iterations (one iteration's loss depends on
its batch far more than on the precision): the gap at iteration ``t >= window`` is
``|MA_bf16(t) - MA_fp32(t)| / MA_fp32(t)``. Tolerance (stated before the runs, docs/amp.md): the largest gap at most
``--max-gap`` (5%) and the means over the last ``--tail`` iterations (50) within ``--tail-gap`` (2%). The step-1 losses
(same weights, same batch) are compared too.

Usage (about 10 CPU minutes at OMP_NUM_THREADS=1; demo_data/ from ``scripts/make_demo_data.py --out demo_data``)::

    OMP_NUM_THREADS=1 python scripts/amp_curves.py --steps 200 --out docs/amp_curves.png

Prints a Markdown table (the one in docs/amp.md) and writes the plot; exits 1 when a network is outside the tolerance.
"""
import argparse
import json
import math
import numpy as np
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
NETWORKS = ('laat', 'aminet', 'tanet', 'wnet')
TITLES = {'laat': 'LAAT', 'aminet': 'AMINet', 'tanet': 'TANet', 'wnet': 'W-Net'}
MODES = ('fp32', 'bf16')


def make_options(net, mode, steps, data, workdir):
    """The demo options of ``net`` for a ``steps``-iteration run in ``mode``; returns (path, experiment name)."""
    with open(os.path.join(ROOT, 'options', 'demo', f'train_{net}_demo_x4.yml')) as f:
        opt = yaml.safe_load(f)
    train = opt['datasets']['train']
    for key, value in list(train.items()):
        if key.startswith('dataroot') and isinstance(value, str):
            train[key] = os.path.join(data, os.path.relpath(value, 'demo_data'))
    opt['datasets'] = {'train': train}
    opt.pop('val', None)
    opt['name'] = f'ampcurve_{net}_{mode}'
    opt['train']['total_iter'] = steps
    if mode == 'bf16':
        opt['train']['amp'] = 'bf16'
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    path = os.path.join(workdir, opt['name'] + '.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path, opt['name']


def logged_losses(workdir, name, key):
    """``[loss of iteration 1, 2, ...]`` from the training log of experiment ``name``."""
    exp = os.path.join(workdir, 'experiments', name)
    logs = sorted(f for f in os.listdir(exp) if f.startswith('train_') and f.endswith('.log'))
    values = {}
    with open(os.path.join(exp, logs[-1])) as f:
        for line in f:
            it = re.search(r'iter:\s*([\d,]+)', line)
            loss = re.search(rf'\b{key}: ([-+0-9.eE]+|nan|inf)', line)
            if it and loss and 'lr:(' in line:
                values[int(it.group(1).replace(',', ''))] = float(loss.group(1))
    return [values[i] for i in sorted(values)]


def moving_average(values, window):
    """Trailing mean over ``window`` iterations, from iteration ``window`` on (index 0 = iteration ``window``)."""
    v = np.asarray(values, np.float64)
    c = np.cumsum(np.insert(v, 0, 0.0))
    return (c[window:] - c[:-window]) / window


def compare(fp32, bf16, window, tail):
    """The gaps between two loss curves (see the module docstring)."""
    n = min(len(fp32), len(bf16))
    ma32, ma16 = moving_average(fp32[:n], window), moving_average(bf16[:n], window)
    gaps = np.abs(ma16 - ma32) / np.abs(ma32)
    t32, t16 = float(np.mean(fp32[n - tail:n])), float(np.mean(bf16[n - tail:n]))
    return {
        'steps': n,
        'step1_gap': abs(bf16[0] - fp32[0]) / abs(fp32[0]),
        'max_gap': float(gaps.max()),
        'max_gap_iter': int(np.argmax(gaps)) + window,
        'tail_fp32': t32,
        'tail_bf16': t16,
        'tail_gap': abs(t16 - t32) / abs(t32),
    }


def run(net, mode, steps, data, workdir):
    path, name = make_options(net, mode, steps, data, workdir)
    exe = shutil.which('fsr-train') or os.path.join(os.path.dirname(sys.executable), 'fsr-train')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    # this checkout's code first (as the tests run it), also where an older copy of the plugin is pip-installed
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    start = time.time()
    proc = subprocess.run([exe, '-opt', path], cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        sys.exit(f'error: fsr-train failed for {net} {mode} ({proc.returncode}):\n{proc.stderr[-3000:]}')
    key = 'l_total' if net == 'wnet' else 'l_pix'
    return logged_losses(workdir, name, key), seconds


def plot_two_runs(ax, runs, window):
    """Two loss curves on one axis (log scale): each iteration's loss faint, its ``window``-iteration trailing mean
    bold (the first run solid, the second dashed). ``runs``: ``[(label, losses), (label, losses)]``."""
    for (label, values), colour, style in zip(runs, ('tab:blue', 'tab:orange'), ('-', '--')):
        its = np.arange(1, len(values) + 1)
        ax.plot(its, values, color=colour, alpha=0.25, linewidth=0.8)
        if len(values) >= window:
            ax.plot(
                its[window - 1:],
                moving_average(values, window),
                color=colour,
                linewidth=1.8,
                linestyle=style,
                label=f'{label} ({window}-it. mean)')
    ax.set_xlabel('iteration')
    ax.set_yscale('log')
    ax.grid(alpha=0.3)


def plot(curves, results, window, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (net, by_mode) in zip(axes, curves.items()):
        plot_two_runs(ax, [(mode, by_mode[mode]) for mode in MODES], window)
        r = results[net]
        ax.set_title(
            f'{TITLES[net]}: max gap {100 * r["max_gap"]:.1f}%, last {r["tail"]} it. {100 * r["tail_gap"]:.1f}%',
            fontsize=9)
    axes[0].set_ylabel('training loss (l_pix; W-Net l_total)')
    axes[0].legend(fontsize=8)
    fig.suptitle(
        'CPU training, demo faces, same seed and batches: fp32 vs train.amp: bf16 '
        '(python scripts/amp_curves.py)',
        fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--nets', nargs='+', default=list(NETWORKS), choices=NETWORKS)
    p.add_argument('--data', default=os.path.join(ROOT, 'demo_data'), help='demo_data/ of scripts/make_demo_data.py')
    p.add_argument('--window', type=int, default=20)
    p.add_argument('--tail', type=int, default=50)
    p.add_argument('--max-gap', type=float, default=0.05)
    p.add_argument('--tail-gap', type=float, default=0.02)
    p.add_argument('--out', default=os.path.join(ROOT, 'docs', 'amp_curves.png'))
    p.add_argument('--json', default=None, help='also write the curves and figures here')
    p.add_argument('--replot', default=None, help='no training: plot and tabulate the curves of a --json file')
    p.add_argument('--workdir', default=None, help='experiments/ go here (default: a temporary folder, removed)')
    args = p.parse_args(argv)
    if args.steps < max(args.window, args.tail) or args.window < 1 or args.tail < 1:
        p.error('--steps must be at least --window and --tail (both >= 1)')
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        curves = {net: saved['curves'][net] for net in args.nets if net in saved['curves']}
        times = {tuple(k.split()): v for k, v in saved.get('times', {}).items()}
        return report(args, curves, times)
    data = os.path.abspath(args.data)
    if not os.path.isdir(os.path.join(data, 'train', 'hr.lmdb')):
        p.error(f'--data {args.data}: no train/hr.lmdb; make it with python scripts/make_demo_data.py --out demo_data')
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix='fsr_amp_curves_')
    os.makedirs(workdir, exist_ok=True)
    curves, times = {}, {}
    try:
        for net in args.nets:
            curves[net] = {}
            for mode in MODES:
                curves[net][mode], times[(net, mode)] = run(net, mode, args.steps, data, workdir)
                print(f'{net} {mode}: {len(curves[net][mode])} iterations in {times[(net, mode)]:.0f} s', flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'curves': curves, 'times': {f'{n} {m}': t for (n, m), t in times.items()}}, f)
    return report(args, curves, times)


def report(args, curves, times):
    """Compare, plot and print the table; 0 when every network is within the tolerance."""
    results = {}
    for net, by_mode in curves.items():
        results[net] = compare(by_mode['fp32'], by_mode['bf16'], args.window, args.tail)
        results[net]['tail'] = args.tail
    plot(curves, results, args.window, args.out)
    steps = min(r['steps'] for r in results.values())
    print(f'\n{steps} iterations per run; gap = |MA_bf16 - MA_fp32| / MA_fp32 of the {args.window}-iteration '
          f'moving averages; tolerance: max gap <= {100 * args.max_gap:g}%, last-{args.tail} means within '
          f'{100 * args.tail_gap:g}%.\n')
    print(f'| network | step-1 gap | max gap (at iteration) | last-{args.tail} mean fp32 / bf16 | last-{args.tail} gap '
          '| fp32 s | bf16 s '
          '| within tolerance |')
    print('|---|---|---|---|---|---|---|---|')
    ok = True
    for net in curves:
        r = results[net]
        good = r['max_gap'] <= args.max_gap and r['tail_gap'] <= args.tail_gap
        ok &= good
        print(f'| {TITLES[net]} | {100 * r["step1_gap"]:.2f}% | {100 * r["max_gap"]:.2f}% ({r["max_gap_iter"]}) | '
              f'{r["tail_fp32"]:.4g} / {r["tail_bf16"]:.4g} | {100 * r["tail_gap"]:.2f}% | '
              f'{times.get((net, "fp32"), math.nan):.0f} | {times.get((net, "bf16"), math.nan):.0f} | '
              f'{"yes" if good else "NO"} |')
    print(f'\nplot: {os.path.relpath(args.out, os.getcwd())}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
