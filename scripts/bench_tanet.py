"""Benchmark TANet's paper configuration: parameters, FLOPs, batch-1 latency and peak memory (not a test).

Usage (from the repository root)::

    python scripts/bench_tanet.py                      # CPU, the two cases below
    python scripts/bench_tanet.py --device cuda        # GPU: fp32, channels_last and bf16 autocast rows
    python scripts/bench_tanet.py --token-mode global  # the 'global' deviation (pos_grid = each case's token grid)
    python scripts/bench_tanet.py --flops-only         # parameters and FLOPs only (no timing: e.g. a loaded machine)

The paper configuration is ``PAPER_CONFIGS`` (the paper's token reading, ``token_mode='window'``); ``--token-mode
global`` measures the deviation with its position encoding stored at the case's token grid (as its option files do).

Cases: 128x128 HR at x4 and x8 (as ``fsr-speed``), and the CelebA 216x176 HR case at x4 (LR 54x44) and x8 (LR 27x22,
which the 4x4 tokenizer pads to 28x24). Also prints the parameter counts.

- FLOPs: ``fsr_tools.speed.count_flops``: ``torch.utils.flop_counter.FlopCounterMode`` on one batch-1 forward,
  1 multiply-add = 2 FLOPs. It does not count the CPU ``scaled_dot_product_attention`` kernel, so FLOPs are counted
  with the explicit attention path (``use_sdpa`` False; same arithmetic). Element-wise ops (ReLU, sigmoid, softmax,
  sums) are not counted, as is usual.
- Latency (``fsr_tools.speed.timeit``): median of ``--repeats`` timed forwards after ``--warmup`` untimed ones,
  ``torch.inference_mode``, batch 1. On the CPU with ``--threads`` threads (default: torch's default). Wall-clock
  numbers from a loaded machine are noisy (the load is printed), so the CPU also gets ``cpu_ms``: the process CPU time
  per forward (summed over threads), which other processes disturb much less.
- Peak memory (``fsr_tools.speed.peak_memory``): CPU (Linux): in a fresh child process with the model and input built,
  the high-water mark of the resident set (``VmHWM``) is reset through ``/proc/self/clear_refs``; the peak is its growth
  over the resident size during one forward (weights excluded; activations, workspaces and allocator overhead included).
  GPU: ``torch.cuda.max_memory_allocated`` during one forward minus the memory allocated before it.
"""
import argparse
import json
import os
import subprocess
import sys
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from fsr_tools.speed import count_flops, count_params, peak_memory, timeit  # noqa: E402

CASES = {
    '32->128 x4': (4, 32, 32),
    '16->128 x8': (8, 16, 16),
    '216x176 x4 (LR 54x44)': (4, 54, 44),
    '216x176 x8 (LR 27x22)': (8, 27, 22)
}
# GPU rows: (name, channels_last, bf16 autocast)
VARIANTS = (('channels_last', True, False), ('bf16', False, True), ('bf16_channels_last', True, True))


def build(scale, device='cpu', token_mode='window', lr_hw=(16, 16)):
    from fsr_arch.tanet_arch import PAPER_CONFIGS, TANet
    torch.manual_seed(0)
    cfg = dict(PAPER_CONFIGS[f'x{scale}'], token_mode=token_mode)
    if token_mode == 'global':
        cfg['pos_grid'] = [-(-lr_hw[0] // cfg['patch_size']), -(-lr_hw[1] // cfg['patch_size'])]
    return TANet(**cfg).to(device).eval()


def latency(net, x, warmup, repeats, channels_last=False, bf16=False):
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            net(x)

    wall, cpu = timeit(forward, x.device, repeats, warmup, cpu_time=True)
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    return wall * 1000, cpu * 1000


def cpu_peak_memory_child(scale, h, w, token_mode):
    """Run in a fresh process: growth (MiB) of the peak resident set size during one forward (Linux)."""
    net = build(scale, token_mode=token_mode, lr_hw=(h, w))
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        net(torch.rand(1, 3, 4, 4))  # load kernels / thread pools before the baseline

    def forward():
        with torch.no_grad():
            net(x)

    return peak_memory(forward)[0] / 2**20


def cpu_peak_memory(scale, h, w, threads, token_mode):
    cmd = [
        sys.executable,
        os.path.abspath(__file__), '--_memory_child', f'{scale},{h},{w}', '--threads',
        str(threads), '--token-mode', token_mode
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_mib']


def gpu_peak_memory(net, x, bf16=False):

    def forward():
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=bf16):
            net(x)

    return peak_memory(forward, x.device)[0] / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--token-mode',
        choices=['window', 'global'],
        default='window',
        help="window: the paper's token reading (PAPER_CONFIGS); global: the deviation")
    parser.add_argument('--flops-only', action='store_true', help='parameters and FLOPs only, no timing or memory')
    parser.add_argument('--_memory_child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory_child:
        scale, h, w = map(int, args._memory_child.split(','))
        print(json.dumps({'peak_mib': cpu_peak_memory_child(scale, h, w, args.token_mode)}))
        return

    device = torch.device(args.device)
    print(f'torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, '
          f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs')
    for scale in (4, 8):
        n = count_params(build(scale, token_mode=args.token_mode))
        print(f'TANet paper config x{scale}, token_mode {args.token_mode}: {n / 1e6:.3f} M parameters' +
              (' (pos_grid 4x4; it grows with the grid)' if args.token_mode == 'global' else ''))
    rows = []
    for name, (scale, h, w) in CASES.items():
        net = build(scale, device, args.token_mode, (h, w))
        x = torch.rand(1, 3, h, w, device=device)
        flops = count_flops(net, x)
        row = {'case': name, 'token_mode': args.token_mode, 'GFLOPs': round(flops / 1e9, 2)}
        if args.flops_only:
            rows.append(row)
            print(json.dumps(row))
            continue
        wall, cpu = latency(net, x, args.warmup, args.repeats)
        row['latency_ms'] = round(wall, 1)
        if device.type == 'cuda':
            for key, cl, bf16 in VARIANTS:
                row[f'latency_ms_{key}'] = round(latency(net, x, args.warmup, args.repeats, cl, bf16)[0], 1)
            row['peak_mib'] = round(gpu_peak_memory(net, x), 1)
            row['peak_mib_bf16'] = round(gpu_peak_memory(net, x, bf16=True), 1)
        else:
            row['cpu_ms'] = round(cpu, 1)
            row['peak_mib'] = round(cpu_peak_memory(scale, h, w, args.threads, args.token_mode), 1)
        rows.append(row)
        print(json.dumps(row))
    keys = list(rows[0])
    print('\n| ' + ' | '.join(keys) + ' |\n|' + '---|' * len(keys))
    for row in rows:
        print('| ' + ' | '.join(str(row[k]) for k in keys) + ' |')


if __name__ == '__main__':
    main()
