"""onnxruntime vs PyTorch on the CPU at batch 1, for the paper configuration of every network (not a test).

Usage (from the repository root)::

    python scripts/bench_export.py                          # every network, x4, 128x128 faces (LR 32x32)
    python scripts/bench_export.py --arch TANet --repeats 20 --threads 2
    python scripts/bench_export.py --scale 8 --arch LAAT AMINet TANet

For each network: its paper configuration (``PAPER_CONFIGS`` of its ``fsr_arch`` module; EDSR/RCAN/SwinIR:
``fsr_tools.baselines``, ``paper``) with random weights (seed 0: the time does not depend on the values), exported
exactly as ``fsr-export`` does it (``fsr_tools.export.export_model``, fixed shape, ``--opset``), checked (the max abs
difference is printed), then timed: ``--warmup`` untimed runs, then ``--repeats`` timed runs of PyTorch
(``torch.inference_mode``, fp32) and onnxruntime (CPU execution provider, default graph optimizations) in turn, so that
both see the same load; the median of each is reported, with the process CPU time per run (summed over threads), which
other processes on a shared machine disturb much less than the wall time. Both use ``--threads`` intra-op threads
(default: torch's default). A network whose first run takes longer than ``--max-seconds`` / ``--repeats`` gets fewer
timed runs (at least 3); the table says how many. The load average before and after is printed: on a shared machine,
read the CPU-time columns.
"""
import argparse
import os
import platform
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

FACE = ('LAAT', 'AMINet', 'TANet', 'WNet')
GENERIC = ('EDSR', 'RCAN', 'SwinIR')


def paper_kwargs(name, scale):
    import importlib

    from fsr_tools import baselines
    if name in GENERIC:
        return baselines.baseline_kwargs(name, scale, 'paper')
    module = importlib.import_module(f'fsr_arch.{name.lower()}_arch')
    return dict(module.PAPER_CONFIGS[f'x{scale}'], upscale=scale)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def measure(name, scale, hr, opset, warmup, repeats, max_seconds, threads):
    import numpy as np
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY

    from fsr_tools.export import _exportable, compare, export_model, fill_zero_parameters, ort_session, size_rules
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(name)(**paper_kwargs(name, scale)).float().eval()
    fill_zero_parameters(net)  # AMINet's last conv starts at zero: the check must see the whole network
    multiple = size_rules(net, name)[0]
    lr = tuple(max(multiple, -(-(v // scale) // multiple) * multiple) for v in hr)
    module = _exportable(net, False)
    t0 = time.perf_counter()
    data = export_model(module, lr, opset, False, ['sr'])
    export_s = time.perf_counter() - t0
    session = ort_session(data, threads)
    x = torch.rand(1, 3, *lr, generator=torch.Generator().manual_seed(1))
    diff = compare(session, module, x, ['sr'])['sr']
    feed = {'lq': np.ascontiguousarray(x.numpy())}

    def run_torch():
        with torch.inference_mode():
            module(x)

    def run_ort():
        session.run(None, feed)

    wall = {'torch': [], 'ort': []}
    cpu = {'torch': [], 'ort': []}
    n = None
    i = 0
    while n is None or i < warmup + n:
        r0 = time.perf_counter()
        for key, fn in (('torch', run_torch), ('ort', run_ort)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if i >= warmup:
                wall[key].append(w)
                cpu[key].append(c)
        if n is None:  # after the first (warmup) round: how many timed runs fit in max_seconds
            round_s = max(1e-6, time.perf_counter() - r0)
            n = max(3, min(repeats, int(max_seconds // round_s)))
        i += 1
    med = {k: statistics.median(v) * 1e3 for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    return dict(
        name=name,
        scale=scale,
        lr=lr,
        torch_ms=med['torch'],
        ort_ms=med['ort'],
        torch_cpu_ms=med_cpu['torch'],
        ort_cpu_ms=med_cpu['ort'],
        runs=n,
        diff=diff,
        export_s=export_s,
        mb=len(data) / 1e6)


def main(argv=None):
    import torch
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', nargs='+', default=list(FACE + GENERIC), choices=FACE + GENERIC)
    p.add_argument('--scale', type=int, default=4, choices=(4, 8))
    p.add_argument('--hr-size', type=int, nargs=2, default=(128, 128), metavar=('H', 'W'))
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=10, help='timed runs of each backend (median). Default 10')
    p.add_argument('--max-seconds', type=float, default=300, help='time budget of the timed runs per network')
    p.add_argument('--threads', type=int, default=None, help="intra-op threads of both (default: torch's)")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1 or args.threads is not None and args.threads < 1:
        p.error('--warmup, --repeats and --threads must be >= 1')
    from fsr_utils import plugin
    plugin.load()
    import onnxruntime
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load0 = os.getloadavg()
    print(
        f'# {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, onnxruntime '
        f'{onnxruntime.__version__}; {threads} intra-op threads each; batch 1, fp32; HR {args.hr_size[0]}x'
        f'{args.hr_size[1]}, x{args.scale}; opset {args.opset}; load average before: '
        f'{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}',
        flush=True)
    print(
        '\n| Network | Scale | LR input | PyTorch ms | onnxruntime ms | speed-up | PyTorch CPU ms | onnxruntime CPU ms '
        '| CPU-time ratio | runs | max abs diff | export s | file MB |')
    print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |', flush=True)
    for name in args.arch:
        r = measure(name, args.scale, args.hr_size, args.opset, args.warmup, args.repeats, args.max_seconds, threads)
        print(
            f'| {r["name"]} | x{r["scale"]} | {r["lr"][0]}x{r["lr"][1]} | {r["torch_ms"]:.1f} | {r["ort_ms"]:.1f} | '
            f'{r["torch_ms"] / r["ort_ms"]:.2f}x | {r["torch_cpu_ms"]:.1f} | {r["ort_cpu_ms"]:.1f} | '
            f'{r["torch_cpu_ms"] / r["ort_cpu_ms"]:.2f}x | {r["runs"]} | {r["diff"]:.1e} | {r["export_s"]:.1f} | '
            f'{r["mb"]:.1f} |',
            flush=True)
    load1 = os.getloadavg()
    print(f'\n# load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}')


if __name__ == '__main__':
    main()
