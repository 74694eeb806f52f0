"""LAAT benchmark (not a test): parameters, FLOPs, CPU latency, peak memory at 512x512 and RSA vs global MHSA.

Usage::

    python scripts/bench_laat.py                 # everything (a few minutes on 2 CPU cores)
    python scripts/bench_laat.py --parts params latency ratio
    python scripts/bench_laat.py --device cuda   # latency / memory / ratio on a GPU, plus the GPU options

Figures:

- ``params``: parameter count and FLOPs (``fsr_tools.speed.count_flops``: ``torch.utils.flop_counter.FlopCounterMode``
  on the explicit attention path so every matmul is counted; 1 multiply-add = 2 FLOPs) of the paper configuration
  (``PAPER_CONFIGS``) at x8 (16->128) and x4 (32->128).
- ``sizes``: parameter count of the x8 network for other values of the settings the paper does not state (MLP ratio,
  FIM's channel-attention reduction), for the stacked reading of eq. 12 and for each ablation of Sec. 4.4.
- ``latency``: batch-1 forward latency for 16->128 (x8), median of ``--repeats`` runs after a warm-up, fused and
  explicit attention (and, on CUDA, channels_last and bf16 autocast).
- ``memory``: peak memory of one ``torch.no_grad`` forward at 512x512 HR (x8, LR 64x64), each case in a fresh process:
  ``fsr_tools.speed.peak_memory``: on the CPU the peak resident set size (``VmHWM``, its mark reset through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where it cannot be reset) minus the resident size just before the forward;
  on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before. Cases: the network built for 128x128
  (the paper's; at 512 its CSA levels attend over 128x128 and 64x64 maps) and built with ``img_size=512`` (the paper's
  rule applied at 512: full RSA on every level). Also the first RSA (C=32, 1 head, lambda 4) on the 512x512 map with the
  blocked region scores vs the whole coarse map materialized in one block (what naive versions do).
- ``ratio``: time of one RSA (the paper's first-step layer: C=32, 1 head, lambda 4) divided by the time of a plain
  global MHSA (same C and heads, qkv / output projections, fused ``scaled_dot_product_attention``) over the same
  full-resolution token map, at 128x128 and 512x512. At 512x512 the global MHSA over 262144 tokens is timed on a
  fraction of its query rows (``--global-rows``) and scaled up: its cost is linear in the number of query rows.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import torch
from torch.nn import functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from fsr_tools.speed import count_flops, count_params, peak_memory, sync, timeit  # noqa: E402


def _laat():
    from fsr_arch import laat_arch
    return laat_arch


def part_params(args):
    laat = _laat()
    print('## Parameters and FLOPs (paper configuration, explicit attention path)')
    for key, lr_size in (('x8', 16), ('x4', 32)):
        torch.manual_seed(0)
        net = laat.LAAT(**laat.PAPER_CONFIGS[key]).eval()
        params = count_params(net)
        flops = count_flops(net, torch.rand(1, 3, lr_size, lr_size))
        print(f'LAAT {key} ({lr_size}->128): {params / 1e6:.3f} M parameters, {flops / 1e9:.2f} GFLOPs '
              f'({flops / 2e9:.2f} GMACs), lambda per level {net.level_lams}')


def part_sizes(args):
    laat = _laat()
    print('## Parameter count of LAAT x8 against the values the paper does not give (it reports no parameter count)')
    cases = [('paper configuration (mlp_ratio 2, fim_reduction 16)', {}), ('mlp_ratio 4', dict(mlp_ratio=4.)),
             ('fim_reduction 8', dict(fim_reduction=8)), ('fim_reduction 4', dict(fim_reduction=4)),
             ('share_fim False (two FIMs per RSA)', dict(share_fim=False)),
             ('share_attention True (one MHSA per RSA)', dict(share_attention=True)),
             ('up_mode stacked (eq. 12)', dict(up_mode='stacked'))]
    cases += [(f'ablation {name}', kwargs) for name, kwargs in laat.ABLATIONS.items()]
    for name, kwargs in cases:
        net = laat.LAAT(**laat.PAPER_CONFIGS['x8'], **kwargs)
        print(f'{name}: {count_params(net) / 1e6:.2f} M')


def part_latency(args):
    laat = _laat()
    device = torch.device(args.device)
    print(f'## Latency, batch 1, 16->128 (x8), {device.type}, {torch.get_num_threads()} threads, '
          f'median of {args.repeats}')
    lr = torch.rand(1, 3, 16, 16, device=device)
    cases = [('fused attention (use_sdpa=True)', {}, None),
             ('explicit attention (use_sdpa=False)', {
                 'use_sdpa': False
             }, None)]
    if device.type == 'cuda':
        cases += [('fused + channels_last', {
            'channels_last': True
        }, None), ('fused + bf16 autocast', {}, torch.bfloat16),
                  ('fused + channels_last + bf16 autocast', {
                      'channels_last': True
                  }, torch.bfloat16)]
    for name, kwargs, dtype in cases:
        torch.manual_seed(0)
        net = laat.LAAT(**{**laat.PAPER_CONFIGS['x8'], **kwargs}).to(device).eval()
        if kwargs.get('channels_last'):
            net = net.to(memory_format=torch.channels_last)

        def run():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return net(lr)

        print(f'{name}: {timeit(run, device, args.repeats) * 1e3:.1f} ms')


def _memory_child(case, device_name):
    """Run in a fresh process: one no_grad forward, print the peak memory delta as JSON."""
    laat = _laat()
    device = torch.device(device_name)
    torch.manual_seed(0)
    if case.startswith('net'):
        img_size = int(case.split('_')[1])
        model = laat.LAAT(**{**laat.PAPER_CONFIGS['x8'], 'img_size': img_size}).to(device).eval()
        x = torch.rand(1, 3, 64, 64, device=device)
    else:  # rsa_blocked / rsa_materialized: the first RSA on the 512x512 map
        extra = {} if case == 'rsa_blocked' else {'block_elems': 2**40}  # default blocks / one block
        model = laat.RSA(32, 1, lam=4, use_sdpa=True, **extra).to(device).eval()
        x = torch.randn(1, 32, 512, 512, device=device)
    result = {}

    def forward():
        start = time.perf_counter()
        with torch.no_grad():
            result['out'] = list(model(x).shape)
        sync(device)
        result['seconds'] = time.perf_counter() - start

    peak, method = peak_memory(forward, device)
    print(json.dumps({'case': case, 'peak_bytes': peak, 'method': method, **result}))


def part_memory(args):
    print(f'## Peak memory of one no_grad forward at 512x512 HR ({args.device}, fresh process per case)')
    labels = {
        'net_128': 'LAAT x8 64->512, built for 128 (paper; CSA levels attend over 128x128 / 64x64 maps)',
        'net_512': 'LAAT x8 64->512, built with img_size=512 (full RSA on every level)',
        'rsa_blocked': 'first RSA (C=32, lambda 4) on the 512x512 map, blocked region scores',
        'rsa_materialized': 'same RSA, whole 16384x16384 coarse map materialized in one block',
    }
    for case in args.memory_cases:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--memory-child', case, '--device', args.device] +
            (['--threads', str(args.threads)] if args.threads else []),
            capture_output=True,
            text=True,
            env=env)
        if proc.returncode:
            print(f'{labels[case]}: FAILED ({proc.returncode}) {proc.stderr.strip().splitlines()[-1:]}')
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f'{labels[case]}: peak +{res["peak_bytes"] / 2**20:.0f} MiB, {res["seconds"]:.1f} s')


class GlobalMHSA(torch.nn.Module):
    """Plain global multi-head self-attention over all H*W positions (qkv / output projections, fused attention)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x, row_fraction=1):
        """Global MHSA; with ``row_fraction = r`` > 1 only the first 1/r of the query rows (for timing)."""
        b, c, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1,
                                                                                                      4).unbind(0)
        rows = n // row_fraction
        out = F.scaled_dot_product_attention(q[:, :, :rows], k, v)
        return self.proj(out.transpose(1, 2).reshape(b, rows, c))


def part_ratio(args):
    laat = _laat()
    device = torch.device(args.device)
    print(f'## RSA time / global MHSA time over the same full-resolution map (C=32, 1 head, lambda 4, {device.type})')
    torch.manual_seed(0)
    dim, heads = 32, 1
    for size in (128, 512):
        x = torch.randn(1, dim, size, size, device=device)
        rsa_fused = laat.RSA(dim, heads, lam=4, use_sdpa=True).to(device).eval()
        rsa_explicit = laat.RSA(dim, heads, lam=4, use_sdpa=False).to(device).eval()
        rsa_explicit.load_state_dict(rsa_fused.state_dict())
        glob = GlobalMHSA(dim, heads).to(device).eval()
        repeats = args.repeats if size == 128 else max(1, args.repeats // 2)
        t_fused = timeit(lambda: rsa_fused(x), device, repeats)
        t_explicit = timeit(lambda: rsa_explicit(x), device, repeats)
        fraction = 1 if size == 128 or device.type == 'cuda' else args.global_rows
        t_glob = timeit(lambda: glob(x, fraction), device, repeats) * fraction
        n = size * size
        n_c = n // 16
        k = int(math.floor(math.sqrt(n) / 4)) * 16
        glob_flops = 2 * n * dim * 4 * dim + 4 * n * n * dim
        rsa_flops = count_flops(rsa_explicit, x)
        note = '' if fraction == 1 else f' (global timed on 1/{fraction} of the query rows, x{fraction})'
        print(f'{size}x{size} ({n} tokens; coarse {n_c} tokens, {k} refined positions): RSA fused '
              f'{t_fused * 1e3:.1f} ms, RSA explicit {t_explicit * 1e3:.1f} ms, global MHSA {t_glob * 1e3:.1f} ms'
              f'{note}; time ratio {min(t_fused, t_explicit) / t_glob:.4f} (fused {t_fused / t_glob:.4f}); '
              f'FLOP ratio {rsa_flops / glob_flops:.5f} ({rsa_flops / 1e9:.2f} / {glob_flops / 1e9:.1f} GFLOPs)')


PARTS = {
    'params': part_params,
    'sizes': part_sizes,
    'latency': part_latency,
    'memory': part_memory,
    'ratio': part_ratio
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--parts', nargs='+', choices=list(PARTS), default=list(PARTS))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--global-rows', type=int, default=64, help='at 512x512, time 1/N of the global query rows')
    parser.add_argument('--memory-cases', nargs='+', default=['net_128', 'net_512', 'rsa_blocked', 'rsa_materialized'])
    parser.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child, args.device)
        return
    print(f'torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, '
          f'load average {os.getloadavg()[0]:.1f}')
    for part in args.parts:
        PARTS[part](args)
        sys.stdout.flush()


if __name__ == '__main__':
    main()
