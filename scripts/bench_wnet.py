"""W-Net cost figures: parameters, FLOPs, CPU latency at batch 1 and peak training memory per face.

Usage::

    python scripts/bench_wnet.py                        # all configurations, x4 (32->128) and x8 (16->128)
    python scripts/bench_wnet.py --configs paper light --scales 4 --no-latency

Configurations: ``paper`` (fsr_arch.wnet_arch.PAPER_CONFIGS: the W path reaches 8x the HR size, 1024x1024 maps for a
128x128 face), ``paper_ckpt`` (the same with activation checkpointing), ``up2`` (W path to 4x, a deviation) and
``light`` (LIGHT_CONFIG: W path to 2x + checkpointing, a deviation).

- FLOPs: ``fsr_tools.speed.count_flops`` (``torch.utils.flop_counter.FlopCounterMode``) on one forward at batch 1
  (a multiply-add counts 2), run on the meta device (shapes only, exact counts, no compute).
- Latency: median wall time of ``--repeats`` forwards at batch 1 under ``torch.inference_mode`` on the CPU
  (``fsr_tools.speed.timeit``), after one warm-up, with ``--threads`` intra-op threads. Note the machine's load: shared
  cores inflate it.
- Peak training memory per face: ``torch.distributed._tools.mem_tracker.MemTracker`` peak over forward + backward at
  batch 1 (parameters, gradients, activations and temporaries; no optimizer state: Adam adds 2 x the parameter bytes),
  tracked on the meta device, so it is the tensor memory a device allocator would hold at its peak (allocator caching,
  cuDNN workspaces and framework overhead come on top).
"""
import argparse
import os
import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_arch.wnet_arch import LIGHT_CONFIG, PAPER_CONFIGS, WNet  # noqa: E402
from fsr_tools.speed import count_flops, count_params, timeit  # noqa: E402

CONFIGS = {
    'paper': {},
    'paper_ckpt': {
        'use_checkpoint': True
    },
    'up2': {
        'num_up_levels': 2
    },
    'light': dict(LIGHT_CONFIG),
}
HR = 128


def build(scale, name, device='cpu'):
    with torch.device(device):
        return WNet(**{**PAPER_CONFIGS[f'x{scale}'], **CONFIGS[name]})


def flops(scale, name):
    net = build(scale, name, 'meta').eval()
    return count_flops(net, torch.rand(1, 3, HR // scale, HR // scale, device='meta'))


def latency(scale, name, repeats):
    torch.manual_seed(0)
    net = build(scale, name).eval()
    x = torch.rand(1, 3, HR // scale, HR // scale)
    return timeit(lambda: net(x), 'cpu', repeats, warmup=1)


def train_peak_bytes(scale, name):
    from torch.distributed._tools.mem_tracker import MemTracker
    net = build(scale, name, 'meta').train()
    x = torch.rand(1, 3, HR // scale, HR // scale, device='meta')
    tracker = MemTracker()
    tracker.track_external(net, x)
    with tracker:
        sr, parsing = net(x, return_parsing=True)
        (sr.square().mean() + parsing.square().mean()).backward()
    peak = tracker.get_tracker_snapshot('peak')
    return max(stats['Total'] for stats in peak.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--scales', nargs='+', type=int, default=[4, 8], choices=[4, 8])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--repeats', type=int, default=1, help='timed forwards (the paper config takes minutes)')
    parser.add_argument('--no-latency', action='store_true')
    parser.add_argument('--no-memory', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, CPU threads {args.threads}, load average {os.getloadavg()[0]:.1f}, '
          f'HR {HR}x{HR}, batch 1')
    print('| config | scale | params (M) | GFLOPs | CPU latency (s) | peak train memory / face (GiB) |')
    print('|---|---|---|---|---|---|')
    for name in args.configs:
        for scale in args.scales:
            params = count_params(build(scale, name, 'meta'))
            gflops = flops(scale, name) / 1e9
            lat = '-' if args.no_latency or name == 'paper_ckpt' else f'{latency(scale, name, args.repeats):.2f}'
            mem = '-' if args.no_memory else f'{train_peak_bytes(scale, name) / 2**30:.2f}'
            print(
                f'| {name} | x{scale} ({HR // scale}->{HR}) | {params / 1e6:.3f} | {gflops:.1f} | {lat} | {mem} |',
                flush=True)


if __name__ == '__main__':
    main()
