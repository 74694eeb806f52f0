"""W-Net cost figures: parameters, FLOPs, CPU latency, peak training / inference memory per face, and the time cost of
the memory saving.

Usage::

    python scripts/bench_wnet.py                        # all configurations, x4 (32->128) and x8 (16->128)
    python scripts/bench_wnet.py --configs paper paper_save --scales 4 --no-latency
    python scripts/bench_wnet.py --time-ratio --scales 4 --repeats 1     # training step, saving on vs off, one process
    python scripts/bench_wnet.py --flops-ratio --scales 4                # FLOPs of a training step, saving on vs off

Configurations: ``paper`` (fsr_arch.wnet_arch.PAPER_CONFIGS: the W path reaches 8x the HR size, 1024x1024 maps for a
128x128 face), ``paper_save`` (the same with the memory saving ``use_checkpoint: true``: strip-wise W path +
checkpointing, same outputs and gradients), ``paper_ckpt_whole`` (checkpointing of whole stages only,
``checkpoint_tile_pixels: 0``, the saving before the strips), ``up2`` (W path to 4x, a deviation) and ``light``
(LIGHT_CONFIG: W path to 2x + checkpointing, a deviation).

Each (configuration, scale) row is measured in a fresh Python process (``--case``).

- FLOPs: ``fsr_tools.speed.count_flops`` (``torch.utils.flop_counter.FlopCounterMode``) on one forward at batch 1
  (a multiply-add counts 2), run on the meta device (shapes only, exact counts, no compute).
- Latency: median wall time of ``--repeats`` forwards at batch 1 under ``torch.inference_mode`` on the CPU
  (``fsr_tools.speed.timeit``), after one warm-up, with ``--threads`` intra-op threads. Note the machine's load: shared
  cores inflate it.
- Peak memory per face: ``torch.distributed._tools.mem_tracker.MemTracker`` peak at batch 1, tracked on the meta device,
  so it is the tensor memory a device allocator would hold at its peak (allocator caching, cuDNN workspaces and
  framework overhead come on top). Training: forward + backward in fp32 (parameters, gradients, activations and
  temporaries; no optimizer state: Adam adds 2 x the parameter bytes). Inference: one forward under ``no_grad``.
- ``--flops-ratio``: FLOPs of one training step at batch 1 (``FlopCounterMode`` on the meta device, recomputation
  included) with the saving off and on.
- ``--time-ratio``: one process, the same weights and input; ``--repeats`` training steps (forward + backward, batch 1,
  after no warm-up) with the saving off, then on; median wall and process CPU seconds and the on/off ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_arch.wnet_arch import LIGHT_CONFIG, PAPER_CONFIGS, WNet  # noqa: E402
from fsr_tools.speed import count_flops, count_params, timeit  # noqa: E402

CONFIGS = {
    'paper': {},
    'paper_save': {
        'use_checkpoint': True
    },
    'paper_ckpt_whole': {
        'use_checkpoint': True,
        'checkpoint_tile_pixels': 0
    },
    'up2': {
        'num_up_levels': 2
    },
    'light': dict(LIGHT_CONFIG),
}


def build(scale, name, device='cpu'):
    with torch.device(device):
        return WNet(**{**PAPER_CONFIGS[f'x{scale}'], **CONFIGS[name]})


def flops(scale, name, hr):
    net = build(scale, name, 'meta').eval()
    return count_flops(net, torch.rand(1, 3, hr // scale, hr // scale, device='meta'))


def latency(scale, name, repeats, hr):
    torch.manual_seed(0)
    net = build(scale, name).eval()
    x = torch.rand(1, 3, hr // scale, hr // scale)
    return timeit(lambda: net(x), 'cpu', repeats, warmup=1)


def peak_bytes(scale, name, hr, train=True):
    from torch.distributed._tools.mem_tracker import MemTracker
    net = build(scale, name, 'meta').train(train)
    x = torch.rand(1, 3, hr // scale, hr // scale, device='meta')
    tracker = MemTracker()
    tracker.track_external(net, x)
    with tracker:
        if train:
            sr, parsing = net(x, return_parsing=True)
            (sr.square().mean() + parsing.square().mean()).backward()
        else:
            with torch.no_grad():
                net(x)
    peak = tracker.get_tracker_snapshot('peak')
    return max(stats['Total'] for stats in peak.values())


def run_case(args):
    name, scale = args.case[0], int(args.case[1])
    row = dict(params=count_params(build(scale, name, 'meta')), gflops=flops(scale, name, args.hr) / 1e9)
    if not args.no_latency and not name.startswith('paper_'):
        row['latency'] = latency(scale, name, args.repeats, args.hr)
    if not args.no_memory:
        row['train_gib'] = peak_bytes(scale, name, args.hr, train=True) / 2**30
        row['infer_gib'] = peak_bytes(scale, name, args.hr, train=False) / 2**30
    print('CASE ' + json.dumps(row), flush=True)


def time_ratio(args):
    for scale in args.scales:
        torch.manual_seed(0)
        net = build(scale, 'paper').train()
        x = torch.rand(1, 3, args.hr // scale, args.hr // scale)

        def step():
            net.zero_grad(set_to_none=True)
            sr, parsing = net(x, return_parsing=True)
            (sr.square().mean() + parsing.square().mean()).backward()

        res = {}
        for on in (False, True):
            net.use_checkpoint = on
            res[on] = timeit(step, 'cpu', args.repeats, warmup=0, cpu_time=True, inference=False)
        print(
            f'x{scale} HR {args.hr}: training step off {res[False][0]:.1f} s wall / {res[False][1]:.1f} s CPU, '
            f'on {res[True][0]:.1f} s wall / {res[True][1]:.1f} s CPU; ratio on/off {res[True][0] / res[False][0]:.2f} '
            f'wall, {res[True][1] / res[False][1]:.2f} CPU (load average {os.getloadavg()[0]:.1f})',
            flush=True)


def flops_ratio(args):
    from torch.utils.flop_counter import FlopCounterMode
    for scale in args.scales:
        total = {}
        for on in (False, True):
            net = build(scale, 'paper', 'meta').train()
            net.use_checkpoint = on
            x = torch.rand(1, 3, args.hr // scale, args.hr // scale, device='meta')
            with FlopCounterMode(display=False) as counter:
                sr, parsing = net(x, return_parsing=True)
                (sr.square().mean() + parsing.square().mean()).backward()
            total[on] = counter.get_total_flops()
        print(
            f'x{scale} HR {args.hr}: training step FLOPs (forward + backward, with recomputation) off '
            f'{total[False] / 1e9:.0f} G, on {total[True] / 1e9:.0f} G, ratio on/off {total[True] / total[False]:.2f}',
            flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--scales', nargs='+', type=int, default=[4, 8], choices=[4, 8])
    parser.add_argument('--hr', type=int, default=128, help='HR size (the paper: 128)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument(
        '--repeats', type=int, default=1, help='timed forwards / steps (the paper config takes minutes)')
    parser.add_argument('--no-latency', action='store_true')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--time-ratio', action='store_true', help='time a training step with the saving off and on')
    parser.add_argument('--flops-ratio', action='store_true', help='count training-step FLOPs, saving off and on')
    parser.add_argument('--case', nargs=2, metavar=('CONFIG', 'SCALE'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        return run_case(args)
    print(f'torch {torch.__version__}, CPU threads {args.threads}, load average {os.getloadavg()[0]:.1f}, '
          f'HR {args.hr}x{args.hr}, batch 1')
    if args.time_ratio:
        return time_ratio(args)
    if args.flops_ratio:
        return flops_ratio(args)
    print('| config | scale | params (M) | GFLOPs | CPU latency (s) | peak train memory / face (GiB) '
          '| peak inference memory / face (GiB) |')
    print('|---|---|---|---|---|---|---|')
    flags = [f'--hr={args.hr}', f'--threads={args.threads}', f'--repeats={args.repeats}']
    flags += ['--no-latency'] * args.no_latency + ['--no-memory'] * args.no_memory
    for name in args.configs:
        for scale in args.scales:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), '--case', name,
                 str(scale), *flags],
                capture_output=True,
                text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith('CASE ')]
            if proc.returncode or not lines:
                raise RuntimeError(f'bench_wnet: case {name} x{scale} failed:\n{proc.stderr[-2000:]}')
            row = json.loads(lines[-1][5:])
            cells = [f"{row['params'] / 1e6:.3f}", f"{row['gflops']:.1f}"]
            cells.append(f"{row['latency']:.2f}" if 'latency' in row else '-')
            cells += [f"{row[k]:.2f}" if k in row else '-' for k in ('train_gib', 'infer_gib')]
            print(f"| {name} | x{scale} ({args.hr // scale}->{args.hr}) | {' | '.join(cells)} |", flush=True)


if __name__ == '__main__':
    main()
