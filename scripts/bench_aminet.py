"""AMINet / AMIGAN benchmark (not a test): parameters, FLOPs, batch-1 latency for 16->128, peak memory.

Usage::

    python scripts/bench_aminet.py                      # CPU, everything (about a minute on 2 cores)
    python scripts/bench_aminet.py --parts params latency --repeats 10
    python scripts/bench_aminet.py --device cuda        # GPU latency / memory, plus channels_last and bf16 autocast

Figures:

- ``params``: parameters of the paper configuration (``PAPER_CONFIGS``; the paper's Tables II / III say 12.62M) and of
  the Table II / III variants (``ABLATION_CONFIGS``: 11.32M / 12.11M in the paper), of each part (encoders, bottleneck,
  decoders, EDFFs, up/down-sampling; SA, RDFE, FRM, SKAF over the LGFIs) and of AMIGAN's discriminator; FLOPs
  (``fsr_tools.speed.count_flops``: ``torch.utils.flop_counter.FlopCounterMode``, 1 multiply-add = 2 FLOPs;
  element-wise ops, pooling and softmax are not counted; the input's MATLAB-style bicubic up-sampling is two small
  matrix products, counted) at x8 (16->128) and x4 (32->128).
- ``latency``: batch-1 forward latency for 16->128 (x8) under ``torch.inference_mode`` (``fsr_tools.speed.timeit``),
  median of ``--repeats`` runs after a warm-up, with the machine's default thread count (``--threads`` to change it).
  On CUDA also channels_last and bf16 autocast.
- ``memory``: peak memory of one batch-1 16->128 forward (``torch.no_grad``) and of one training step (forward +
  backward, batch 1) in a fresh process (``fsr_tools.speed.peak_memory``): on the CPU the peak resident set size
  (``VmHWM``, its mark reset through ``/proc/self/clear_refs``; ``ru_maxrss`` where it cannot be reset) minus the
  resident size just before; on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before.
"""
import argparse
import json
import os
import subprocess
import sys
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from fsr_tools.speed import count_flops, count_params, peak_memory, timeit  # noqa: E402


def build(scale='x8', device='cpu'):
    from fsr_arch.aminet_arch import PAPER_CONFIGS, AMINet
    torch.manual_seed(0)
    return AMINet(**PAPER_CONFIGS[scale]).to(device).eval()


def part_params(args):
    from fsr_arch.amigan_discriminator_arch import PAPER_CONFIGS as D_CONFIGS
    from fsr_arch.amigan_discriminator_arch import AMIGANDiscriminator
    from fsr_arch.aminet_arch import ABLATION_CONFIGS, PAPER_PARAMS, AMINet
    net = build('x8')
    total = count_params(net)
    print('## Parameters and FLOPs (paper configuration)')
    counts = {'aminet': total}
    counts.update({name: count_params(AMINet(**cfg)) for name, cfg in ABLATION_CONFIGS.items()})
    labels = {
        'aminet': 'AMINet (LGFI with RDFE), Tables II/III',
        'transformer': 'Table II: every LGFI -> Transformer block',
        'ffn': 'Table III: RDFE -> FFN'
    }
    print('| network (x8) | paper | this code | diff |\n|---|---:|---:|---:|')
    for name, count in counts.items():
        paper = PAPER_PARAMS[name]
        print(f'| {labels[name]} | {paper / 1e6:.2f}M | {count / 1e6:.2f}M | {100 * (count / paper - 1):+.1f}% |')
    parts = {
        'head + tail convs': count_params(net.conv_first) + count_params(net.conv_last),
        'encoders (3 LGFI)': count_params(net.encoders),
        'bottleneck (2 LGFI)': count_params(net.bottleneck),
        'decoders (3 LGFI)': count_params(net.decoders),
        'EDFF x3': count_params(net.fusions),
        'down/up-sampling': count_params(net.downs) + count_params(net.ups),
    }
    for name, count in parts.items():
        print(f'  {name}: {count / 1e6:.3f}M')
    lgfis = [m for m in net.modules() if type(m).__name__ == 'LGFI']
    print(f'  the {len(lgfis)} LGFIs: ' +
          ', '.join(f'{name} {sum(count_params(getattr(m, name)) for m in lgfis) / 1e6:.3f}M'
                    for name in ('sa', 'rdfe', 'skaf')) +
          f'; FRM (part of RDFE) {sum(count_params(m.rdfe.frm) for m in lgfis) / 1e6:.3f}M')
    print(f'AMIGANDiscriminator (128x128): {count_params(AMIGANDiscriminator(**D_CONFIGS["x8"])) / 1e6:.2f}M')
    for scale, lr in (('x8', 16), ('x4', 32)):
        flops = count_flops(build(scale), torch.rand(1, 3, lr, lr))
        print(f'FLOPs {scale} ({lr}->128, batch 1): {flops / 1e9:.2f} GFLOPs')
    return {'params': total, 'parts': parts}


def part_latency(args):
    device = torch.device(args.device)
    net = build('x8', device)
    x = torch.rand(1, 3, 16, 16, device=device)
    print(f'## Latency, batch 1, 16->128 (x8), {args.device}, threads {torch.get_num_threads()}, '
          f'median of {args.repeats}')
    results = {'fp32': timeit(lambda: net(x), device, args.repeats, warmup=2)}
    if device.type == 'cuda':
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        results['fp32 channels_last'] = timeit(lambda: net_cl(x_cl), device, args.repeats, warmup=2)

        def bf16():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                return net_cl(x_cl)

        results['bf16 autocast channels_last'] = timeit(bf16, device, args.repeats, warmup=2)
    for name, seconds in results.items():
        print(f'  {name}: {seconds * 1e3:.1f} ms')
    return results


def _memory_child(device, mode):
    """Run in a fresh process: peak memory (bytes) of one forward (``infer``) or training step (``train``)."""
    device = torch.device(device)
    net = build('x8', device)
    x = torch.rand(1, 3, 16, 16, device=device)
    if mode == 'train':
        net.train()

    def step():
        if mode == 'train':
            net(x).abs().mean().backward()
        else:
            with torch.no_grad():
                net(x)

    peak, method = peak_memory(step, device)
    print(json.dumps({'peak_bytes': peak, 'method': method}))


def part_memory(args):
    print(f'## Peak memory, batch 1, 16->128 (x8), {args.device} (fresh process per case)')
    results = {}
    for mode in ('infer', 'train'):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--memory-child', mode, '--device', args.device],
            capture_output=True,
            text=True,
            check=True)
        peak = json.loads(out.stdout.strip().splitlines()[-1])['peak_bytes']
        results[mode] = peak
        label = 'forward (no_grad)' if mode == 'infer' else 'training step (forward + backward)'
        print(f'  {label}: {peak / 2**20:.0f} MiB')
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--parts', nargs='+', default=['params', 'latency', 'memory'], choices=['params', 'latency', 'memory'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    parser.add_argument('--memory-child', choices=['infer', 'train'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.device, args.memory_child)
        return
    for part in args.parts:
        globals()[f'part_{part}'](args)


if __name__ == '__main__':
    main()
