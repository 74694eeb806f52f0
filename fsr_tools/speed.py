"""``fsr-speed``: parameters, FLOPs, latency, throughput and peak memory of every network of the plugin, x4 and x8.

Networks: every module of ``fsr_arch`` with ``PAPER_CONFIGS`` contributes its registered classes that take ``upscale``
(discriminators are left out), followed by the generic networks of BasicSR that a user might pick instead
(:mod:`fsr_tools.baselines`: EDSR, RCAN, SwinIR; ``--no-baselines`` leaves them out); ``--arch`` picks some. Each
runs at its paper configuration (``--config demo``: the CPU demo's widths from ``options/demo``, x4 only; ``--config
tiny``: the test configuration) on ``--hr-size`` faces (LR input ``hr_size / scale``, RGB, batch 1 unless stated).

Columns:

* Params: ``sum(p.numel())``.
* GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (the counter maintained in torch itself), one forward, batch 1.
  It counts 2 FLOPs per multiply-accumulate of convolutions, matmuls and attention (``scaled_dot_product_attention``
  included); element-wise ops, norms and interpolation are not counted. Many papers quote MACs (= FLOPs / 2) as "FLOPs".
* CPU ms: median of ``--repeats`` forwards at batch 1 after ``--warmup`` runs, fp32, ``torch.inference_mode``, with the
  process's torch threads (printed in the header).
* CPU img/s: batch 16, ``16 / median time`` (left out with ``--quick``, or when a batch would take longer than
  ``--max-seconds``).
* CPU peak MB: peak resident memory added by one batch-1 forward, measured in a fresh subprocess per case (so that
  allocator caches of other cases do not hide it), with glibc's mmap threshold fixed at 128 KiB
  (``MALLOC_MMAP_THRESHOLD_``) so that freed activations go back to the system: the model and input are built, one
  warm-up forward loads code pages and thread pools, the kernel's peak-RSS mark is reset
  (``echo 5 > /proc/self/clear_refs``), and the result is ``VmHWM`` after a second forward minus ``VmRSS`` before it.
  Where the mark cannot be reset (non-Linux), ``ru_maxrss`` after the forward minus the RSS before it is used, an upper
  bound.
* On a GPU (when CUDA is available): ms at batch 1 in fp32 and with ``torch.autocast(dtype=torch.bfloat16)`` +
  ``channels_last``; peak MB = ``torch.cuda.max_memory_allocated`` during a fp32 batch-1 forward minus the memory held
  before it (weights and input).

The Markdown table goes to stdout and to ``--out`` (default ``speed.md``).

Input: the LR size is ``hr_size / scale`` rounded up to the multiple the network needs (its ``size_multiple``;
SwinIR's window, :func:`fsr_tools.baselines.size_multiple`), so every configuration runs at every scale; the
``Input`` column says the size measured.

Promises (docs/reliability.md):

* Every number is checked when the options are read: ``--scales`` 4 or 8, ``--hr-size`` 16-4096 and a multiple of
  every scale, ``--warmup`` 0-100, ``--repeats`` 1-1000, ``--max-seconds`` >= 0, ``--train-batch`` 0-1024; one
  ``error:`` line naming the option and its range, exit status 2. So are ``--arch`` and the demo option files.
* ``--out`` is checked before any measurement: not a folder, no file on the way, not inside ``--options-dir``; an
  existing file is replaced only when it is a table fsr-speed wrote (never someone else's file); exit status 2. The
  table is written atomically (a reader sees the old table or the whole new one; a failed write is an error, exit 1).
* A pair of a network and a scale that has no configuration (``--config demo --scales 8``) is a row that says it was
  skipped and why; a case that fails (e.g. out of memory) is a row that says ``failed:`` and why, with the columns
  measured before the failure, and the other cases are measured all the same: the table is written, and the exit
  status is 1 with one ``error:`` line naming the failed cases.
"""
import argparse
import contextlib
import gc
import importlib
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import torch

COLUMNS = ['Network', 'Scale', 'Input', 'Params (M)', 'GFLOPs', 'CPU ms (b1)', 'CPU img/s (b16)', 'CPU peak MB (b1)']
GPU_COLUMNS = [
    'GPU fp32 ms', 'GPU bf16+CL ms', 'GPU peak MB', 'GPU train img/s fp32', 'GPU train img/s bf16+CL',
    'GPU train peak MB/img'
]


def _load_plugin():
    from fsr_utils import plugin
    plugin.load()


def discover(modules=None):
    """Networks of the plugin: ``[(name, module)]`` for registered classes taking ``upscale`` in modules with
    ``PAPER_CONFIGS``.

    Args:
        modules (list | None): Modules to scan (default: every ``fsr_arch/*_arch.py`` module).
    """
    from basicsr.utils.registry import ARCH_REGISTRY
    if modules is None:
        _load_plugin()
        fsr_arch = importlib.import_module('fsr_arch')
        modules = fsr_arch._modules
    found = []
    for module in modules:
        if not hasattr(module, 'PAPER_CONFIGS'):
            continue
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and obj.__module__ == module.__name__ and name in ARCH_REGISTRY
                    and ARCH_REGISTRY.get(name) is obj and 'upscale' in inspect.signature(obj.__init__).parameters):
                found.append((name, module))
    return sorted(found, key=lambda x: x[0].lower())


def discover_baselines():
    """Generic networks of BasicSR put beside the face networks (:mod:`fsr_tools.baselines`): ``[(name, module)]``."""
    from fsr_tools import baselines
    return [(name, baselines) for name in baselines.BASELINES]


def network_kwargs(module, scale, config='paper', name=None, options_dir='options/demo'):
    """Constructor arguments (+ ``upscale``) of a network for ``config``.

    ``paper``: ``PAPER_CONFIGS['x<scale>']`` of the network's module; ``tiny``: its ``TINY_CONFIG``; ``demo``: the
    ``network_g`` of ``<options_dir>/train_<name>_demo_x4.yml`` (the CPU demo's widths). For the generic baselines
    (:mod:`fsr_tools.baselines`) the three configurations come from that module.
    """
    from fsr_tools import baselines
    if module is baselines:
        return baselines.baseline_kwargs(name, scale, config)
    if config == 'paper':
        if f'x{scale}' not in module.PAPER_CONFIGS:
            raise KeyError(f'{module.__name__}.PAPER_CONFIGS has no x{scale} entry.')
        kwargs = dict(module.PAPER_CONFIGS[f'x{scale}'])
    elif config == 'tiny':
        kwargs = dict(module.TINY_CONFIG)
    elif config == 'demo':
        path = os.path.join(options_dir, f'train_{name.lower()}_demo_x4.yml')
        if not os.path.isfile(path):
            from fsr_utils.safety import UsageError
            raise UsageError(f'--config demo reads the demo options file {path}, which does not exist: run from the '
                             'repository root or give --options-dir.')
        import yaml
        with open(path) as f:
            kwargs = dict(yaml.safe_load(f)['network_g'])
        kwargs.pop('type')
    else:
        raise ValueError(f'config must be paper, demo or tiny, got {config}')
    kwargs['upscale'] = scale
    return kwargs


def build(name, kwargs):
    """The network ``name`` built from ``kwargs`` in eval mode; a network that needs whole windows (SwinIR) gets a
    ``size_multiple`` (:func:`fsr_tools.baselines.size_multiple`), so that :func:`lr_size` rounds its input up."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from fsr_tools.baselines import size_multiple
    net = ARCH_REGISTRY.get(name)(**kwargs).eval()
    if not getattr(net, 'size_multiple', None):
        net.size_multiple = size_multiple(name, kwargs)
    return net


def lr_size(net, hr_size, scale):
    """LR input size: ``hr_size / scale`` rounded up to the network's ``size_multiple``."""
    s = hr_size // scale
    m = getattr(net, 'size_multiple', 1) or 1
    return -(-s // m) * m


# ------------------------------------------------------------------------------------------- measuring helpers
# Shared by fsr-speed and the per-network benchmarks in scripts/ (bench_*.py).
def sync(device):
    """Wait for the kernels queued on ``device`` (CUDA); nothing to wait for on the CPU.

    Args:
        device (torch.device | str): The device timed.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timeit(fn, device, repeats, warmup=1, cpu_time=False, inference=True):
    """Median time of ``fn()`` under ``torch.inference_mode`` (``inference=False``: with autograd, for training steps).

    ``warmup`` untimed calls, then ``repeats`` timed ones, each between two :func:`sync` calls.

    Args:
        fn (callable): What to time (it chooses its own autocast / memory format).
        device (torch.device | str): The device ``fn`` runs on (synchronised around each call).
        repeats (int): Timed calls (at least 1).
        warmup (int): Untimed calls before them. Default: 1.
        cpu_time (bool): Also return the median process CPU time (``time.process_time``, summed over threads), which
            other processes on a shared machine disturb much less than the wall time. Default: False.
        inference (bool): Run under ``torch.inference_mode``. Default: True.

    Returns:
        float | tuple[float, float]: Median wall seconds, or ``(wall seconds, CPU seconds)`` with ``cpu_time``.
    """
    times, cpu_times = [], []
    with torch.inference_mode() if inference else contextlib.nullcontext():
        for i in range(warmup + repeats):
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    if cpu_time:
        return statistics.median(times), statistics.median(cpu_times)
    return statistics.median(times)


def time_forward(net, x, warmup, repeats, autocast_dtype=None):
    """Median seconds of ``repeats`` forwards ``net(x)`` after ``warmup`` forwards (:func:`timeit`), optionally under
    ``torch.autocast(dtype=autocast_dtype)``."""

    def forward():
        if autocast_dtype:
            with torch.autocast(x.device.type, dtype=autocast_dtype):
                return net(x)
        return net(x)

    return timeit(forward, x.device, repeats, warmup)


def count_params(module):
    """Number of parameters of ``module`` (``sum(p.numel())``)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(net, x):
    """FLOPs of one forward ``net(x)`` (``torch.utils.flop_counter.FlopCounterMode``, 2 per multiply-accumulate).

    FlopCounterMode does not count ``F.scaled_dot_product_attention`` on every backend (not on the CPU), so modules
    with a ``use_sdpa`` switch run their explicit attention (same result) while counting, and are switched back after.
    """
    from torch.utils.flop_counter import FlopCounterMode
    switched = [m for m in net.modules() if getattr(m, 'use_sdpa', None) is True]
    for module in switched:
        module.use_sdpa = False
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        for module in switched:
            module.use_sdpa = True
    return counter.get_total_flops()


def proc_status_kb(field):
    """A field of ``/proc/self/status`` in KiB (Linux), e.g. ``VmRSS`` (resident now) or ``VmHWM`` (peak resident).

    Raises:
        KeyError: The field is not there.
    """
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def peak_memory(fn, device='cpu'):
    """Peak memory that ``fn()`` adds above what the process holds before it.

    * CUDA: ``torch.cuda.max_memory_allocated`` during ``fn()`` minus ``torch.cuda.memory_allocated`` before it.
    * CPU (Linux): the kernel's peak-RSS mark is reset (``echo 5 > /proc/self/clear_refs``) and the result is
      ``VmHWM`` after ``fn()`` minus ``VmRSS`` before it. Where the mark cannot be reset, ``ru_maxrss`` after ``fn()``
      minus the RSS before it, an upper bound (earlier peaks of the process count too).

    ``fn`` chooses its own grad mode. Run it in a fresh process for figures that other cases' allocator caches do not
    hide, after one warm-up call that loads code pages and thread pools.

    Args:
        fn (callable): What to measure.
        device (torch.device | str): Where ``fn`` allocates. Default: 'cpu'.

    Returns:
        tuple[int, str]: Peak bytes and the method (``'max_memory_allocated'``, ``'VmHWM'`` or ``'ru_maxrss'``).
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - held, 'max_memory_allocated'
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        method = 'VmHWM'
    except OSError:
        method = 'ru_maxrss'
    before = proc_status_kb('VmRSS') if os.path.exists('/proc/self/status') else 0
    fn()
    if method == 'VmHWM':
        peak = proc_status_kb('VmHWM')
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return (peak - before) * 1024, method


def measure_cpu_memory_here(name, kwargs, hr_size, scale):
    """Peak RSS (MB) added by one batch-1 forward in this process (run it in a fresh one): see the module docstring."""
    torch.manual_seed(0)
    net = build(name, kwargs)
    s = lr_size(net, hr_size, scale)
    x = torch.rand(1, 3, s, s)
    with torch.inference_mode():
        net(x)  # warm-up: code pages, thread pools, one-time buffers
    gc.collect()

    def forward():
        with torch.inference_mode():
            net(x)

    peak, method = peak_memory(forward)
    return peak / 2**20, method


def measure_cpu_memory(name, kwargs, hr_size, scale, timeout=600):
    """:func:`measure_cpu_memory_here` in a fresh subprocess (the repository copy of this package comes first)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([root] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['MALLOC_MMAP_THRESHOLD_'] = '131072'
    case = json.dumps({'name': name, 'kwargs': kwargs, 'hr_size': hr_size, 'scale': scale})
    proc = subprocess.run([sys.executable, '-m', 'fsr_tools.speed', '--memory-case', case],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f'memory measurement of {name} x{scale} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])['mb']


# ------------------------------------------------------------------------------------------------------------ cases
def measure(name,
            kwargs,
            scale,
            hr_size,
            warmup=1,
            repeats=3,
            throughput=True,
            memory=True,
            max_seconds=30.,
            gpu=None,
            cpu=True,
            train_batch=8,
            row=None):
    """One row of the table (a dict keyed by :data:`COLUMNS` and, with a GPU, :data:`GPU_COLUMNS`).

    ``cpu=False`` leaves the CPU timing and memory columns empty (``--gpu-only``: paper configurations on a GPU).
    ``row``: a dict to fill in place, column by column, so that the columns measured before a failure (e.g. out of
    memory at batch 16) are kept in it when this raises.
    """
    row = {} if row is None else row
    row.update({'Network': name, 'Scale': f'x{scale}'})
    for column in COLUMNS[2:]:
        row.setdefault(column, None)
    torch.manual_seed(0)
    net = build(name, kwargs)
    s = lr_size(net, hr_size, scale)
    x = torch.rand(1, 3, s, s)
    row['Input'] = f'{s}x{s} -> {s * scale}x{s * scale}'
    row['Params (M)'] = count_params(net) / 1e6
    row['GFLOPs'] = count_flops(net, x) / 1e9
    if cpu:
        t1 = time_forward(net, x, warmup, repeats)
        row['CPU ms (b1)'] = t1 * 1e3
        if throughput and t1 * 16 <= max_seconds:
            t16 = time_forward(net, x.repeat(16, 1, 1, 1), min(warmup, 1), max(1, min(repeats, 2)))
            row['CPU img/s (b16)'] = 16 / t16
        row['CPU peak MB (b1)'] = measure_cpu_memory(name, kwargs, hr_size, scale) if memory else None
    if gpu is not None:
        measure_gpu(net, x, gpu, warmup, repeats, train_batch, row=row)
    del net
    gc.collect()
    return row


def _first_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def train_throughput(net, x, device, steps, autocast_dtype=None, channels_last=False):
    """Training images/s (forward, L1 loss against a random target, backward, Adam step) and peak bytes per image.

    Args:
        net (nn.Module): Network, already on ``device``.
        x (Tensor): LR batch on ``device``.
        device (torch.device): Where it runs.
        steps (int): Timed steps (after two untimed ones).
        autocast_dtype (torch.dtype | None): ``torch.bfloat16`` for mixed precision.
        channels_last (bool): Network and input in channels_last memory format.
    """
    net.train()
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)

    def step():
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = _first_output(net(x))
            loss = (out.float() - 0.5).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    peak, _ = peak_memory(step, device)
    seconds = timeit(step, device, max(1, steps), warmup=1, inference=False)
    net.to(memory_format=torch.contiguous_format).eval()
    return x.shape[0] / seconds, peak / x.shape[0]


def measure_gpu(net, x, device, warmup, repeats, train_batch=8, row=None):
    """GPU fp32 and bf16-autocast + channels_last latency (batch 1), fp32 peak memory, and training throughput.

    ``row``: a dict filled in place (the columns measured before a failure stay in it); returned.
    """
    row = {} if row is None else row
    net = net.to(device)
    x = x.to(device)

    def forward():
        with torch.inference_mode():
            net(x)

    try:
        row['GPU peak MB'] = peak_memory(forward, device)[0] / 2**20
        row['GPU fp32 ms'] = time_forward(net, x, max(warmup, 2), max(repeats, 5)) * 1e3
        net_cl = net.to(memory_format=torch.channels_last)
        row['GPU bf16+CL ms'] = time_forward(net_cl, x.to(memory_format=torch.channels_last), max(warmup, 2),
                                             max(repeats, 5), torch.bfloat16) * 1e3
        net.to(memory_format=torch.contiguous_format)
        if train_batch:
            xb = x.repeat(train_batch, 1, 1, 1)
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            row['GPU train img/s fp32'], train_peak = train_throughput(net, xb, device, repeats)
            row['GPU train peak MB/img'] = train_peak / 2**20
            row['GPU train img/s bf16+CL'], _ = train_throughput(net, xb, device, repeats, torch.bfloat16, True)
            net.load_state_dict(state)
    finally:
        net.cpu()
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------------------------------------- output
def _cell(column, value):
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    if column == 'Params (M)':
        return f'{value:.3f}'
    if column == 'GFLOPs':
        return f'{value:.2f}' if value >= 0.1 else f'{value:.4f}'
    if column.endswith('img/s (b16)'):
        return f'{value:.1f}' if value >= 1 else f'{value:.3f}'
    return f'{value:.1f}'


def machine_text(config, hr_size, gpu):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    text = (f'{config} configurations, {hr_size}x{hr_size} HR faces; CPU: {cpu}, {torch.get_num_threads()} torch '
            f'threads; torch {torch.__version__}')
    if gpu is not None:
        text += f'; GPU: {torch.cuda.get_device_name(gpu)}'
    return text


def markdown(rows, header, gpu):
    """The Markdown table; a ``Note`` column is added when a row has one (a case skipped or failed, and why)."""
    columns = COLUMNS + (GPU_COLUMNS if gpu is not None else [])
    noted = any(row.get('Note') for row in rows)
    if noted:
        columns = columns + ['Note']
    lines = [
        f'Speed ({header}).', '', '| ' + ' | '.join(columns) + ' |',
        '|---|---|---|' + '---:|' * (len(columns) - 3 - noted) + ('---|' if noted else '')
    ]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(c, row.get(c)) for c in columns) + ' |')
    lines += [
        '', 'GFLOPs: torch.utils.flop_counter.FlopCounterMode, 2 FLOPs per multiply-accumulate (MACs = GFLOPs / 2). '
        'CPU ms: median at batch 1; img/s: batch 16 ("-": skipped); peak MB: resident memory added by one batch-1 '
        'forward (fresh process per case).' + (' GPU: batch 1; bf16+CL = bf16 autocast + channels_last; peak MB: '
                                               'max_memory_allocated above weights and input.'
                                               if gpu is not None else ' No GPU on this machine: GPU columns left out.')
    ]
    if noted:
        lines[-1] += (' Note: a case skipped (no such configuration) or failed (e.g. out of memory), and why; '
                      '"-" cells of a failed row were not measured.')
    return '\n'.join(lines) + '\n'


def is_speed_table(path):
    """True when ``path`` is a Markdown table that fsr-speed wrote (its first line and its footnote)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    return text.startswith('Speed (') and '\nGFLOPs: torch.utils.flop_counter.FlopCounterMode' in text


def check_out(args):
    """Check ``--out`` before any measurement (``fsr_utils.safety.UsageError`` naming the option and the fix): a new
    file in a folder that can be made and written, not an input; an existing file only when fsr-speed wrote it (it is
    replaced atomically), never a file of someone else's."""
    from fsr_utils.safety import UsageError, check_output_path, is_within
    inputs = [(args.options_dir, '--options-dir')] if args.config == 'demo' else []
    if not os.path.lexists(args.out):
        check_output_path(args.out, '--out', inputs, kind='file')
        return
    if os.path.isdir(args.out):
        raise UsageError(f'--out {args.out} is a folder, not a file: give the path of the Markdown file to write.')
    if not is_speed_table(args.out):
        raise UsageError(f'--out {args.out} exists and is not a table fsr-speed wrote: fsr-speed never writes over it. '
                         'Move it away, or choose another --out.')
    for path, option in inputs:
        if is_within(args.out, path):
            raise UsageError(f'--out {args.out} is inside the input folder {path} ({option}): choose another --out.')
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f'--out {args.out} cannot be replaced: {folder} is not writable for this user. Choose a '
                         'writable location.')


def _check_multiple(p, args):
    scales = [s for s in args.scales if args.config != 'demo' or s == 4]
    bad = [s for s in scales if args.hr_size % s]
    if bad:
        p.error(f'argument --hr-size: must be a multiple of every scale measured ({", ".join(map(str, scales))}), '
                f'not {args.hr_size}')


def parse_args(argv=None):
    """The options; every number is checked here (one ``error:`` line naming the option and its range, exit 2)."""
    from fsr_utils.safety import float_range, int_range
    p = argparse.ArgumentParser(
        prog='fsr-speed',
        description='Parameters, FLOPs, latency, throughput and peak memory of the plugin\'s '
        'networks at their paper configurations, x4 and x8; writes a Markdown table.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--arch', action='append', default=None, help='network name (repeatable; default: all)')
    p.add_argument(
        '--scales',
        type=int_range(choices=(4, 8)),
        nargs='+',
        default=None,
        help='4 and/or 8 (default: 4 8; --config demo: 4, its only scale)')
    p.add_argument(
        '--config',
        choices=['paper', 'demo', 'tiny'],
        default='paper',
        help='paper: the papers\' configurations; demo: the CPU demo\'s (options/demo, x4 only); tiny: the tests\'')
    p.add_argument('--options-dir', default='options/demo', help='where --config demo finds the demo option files')
    p.add_argument(
        '--no-baselines',
        action='store_true',
        help='leave out the generic BasicSR networks (EDSR, RCAN, SwinIR: fsr_tools/baselines.py)')
    p.add_argument(
        '--hr-size',
        type=int_range(16, 4096),
        default=None,
        help='HR face size, 16-4096, a multiple of every scale (default: 128 paper/demo, 32 tiny)')
    p.add_argument('--warmup', type=int_range(0, 100), default=1, help='untimed forwards before timing, 0-100')
    p.add_argument('--repeats', type=int_range(1, 1000), default=3, help='timed forwards (median), 1-1000')
    p.add_argument('--quick', action='store_true', help='skip the batch-16 throughput')
    p.add_argument('--no-memory', action='store_true', help='skip the CPU peak memory subprocesses')
    p.add_argument(
        '--max-seconds', type=float_range(0), default=30., help='skip batch 16 when it would take longer (>= 0)')
    p.add_argument('--no-gpu', action='store_true', help='skip the GPU columns even when CUDA is available')
    p.add_argument('--gpu-only', action='store_true', help='skip the CPU timing and memory columns (on a GPU machine)')
    p.add_argument(
        '--train-batch',
        type=int_range(0, 1024),
        default=8,
        help='batch of the GPU training throughput, 0-1024 (0: skip it)')
    p.add_argument('--out', default='speed.md', help='Markdown file to write')
    p.add_argument('--memory-case', default=None, help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = p.parse_args(argv)
    if args.hr_size is None:
        args.hr_size = 32 if args.config == 'tiny' else 128
    if args.scales is None:
        args.scales = [4] if args.config == 'demo' else [4, 8]
    args.scales = list(dict.fromkeys(args.scales))
    _check_multiple(p, args)
    return args


def plan_cases(nets, args):
    """``(cases, skipped)``: ``[(name, scale, kwargs)]`` to measure and ``[(name, scale, why)]`` for the pairs of a
    network and a scale that have no configuration (the demo's are x4 only; a module without a paper x8 entry)."""
    cases, skipped = [], []
    for name, module in nets:
        for scale in args.scales:
            if args.config == 'demo' and scale != 4:
                skipped.append((name, scale, 'skipped: the demo configurations (options/demo) are x4 only'))
                continue
            try:
                kwargs = network_kwargs(module, scale, args.config, name, args.options_dir)
            except KeyError as err:
                skipped.append((name, scale, f'skipped: no {args.config} configuration at x{scale} ({err.args[0]})'))
                continue
            cases.append((name, scale, kwargs))
    return cases, skipped


def _failure_text(exc):
    """One short line for a failed case: the exception's type and last line (a subprocess's traceback ends there)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = f'{type(exc).__name__}: {lines[-1] if lines else ""}'.rstrip(': ')
    if isinstance(exc, torch.cuda.OutOfMemoryError) or 'out of memory' in text.lower():
        text = 'out of memory (' + text + ')'
    text = text.replace('|', '/')
    return 'failed: ' + (text if len(text) <= 200 else text[:197] + '...')


def main(argv=None):
    """Entry point of ``fsr-speed``: exit status 0; 2 for a bad option or output path (found before any
    measurement); 1 when a case failed (its row says why; the table of the others is written all the same)."""
    from fsr_utils.safety import UsageError, atomic_write_text, error_exit
    args = parse_args(argv)
    if args.memory_case:
        _load_plugin()
        case = json.loads(args.memory_case)
        mb, method = measure_cpu_memory_here(case['name'], case['kwargs'], case['hr_size'], case['scale'])
        print(json.dumps({'mb': mb, 'method': method}))
        return 0
    try:
        check_out(args)
        nets = discover() + ([] if args.no_baselines else discover_baselines())
        if args.arch:
            known = {n.lower(): (n, m) for n, m in nets}
            missing = [a for a in args.arch if a.lower() not in known]
            if missing:
                raise UsageError(f'--arch: unknown network(s) {", ".join(missing)}; the plugin has '
                                 f'{", ".join(n for n, _ in nets)}.')
            nets = [known[a.lower()] for a in args.arch]
        cases, skipped = plan_cases(nets, args)
    except UsageError as exc:
        return error_exit(exc)
    gpu = torch.device('cuda') if torch.cuda.is_available() and not args.no_gpu else None
    rows, failed = [], []
    order = {(n, s): i for i, (n, s) in enumerate((n, s) for n, _ in nets for s in args.scales)}
    from tqdm import tqdm
    for name, scale, kwargs in tqdm(cases, desc='fsr-speed', unit='case', file=sys.stderr):
        row = {}
        try:
            measure(
                name,
                kwargs,
                scale,
                args.hr_size,
                args.warmup,
                args.repeats,
                not args.quick,
                not args.no_memory,
                args.max_seconds,
                gpu,
                not (args.gpu_only and gpu is not None),
                args.train_batch,
                row=row)
        except Exception as exc:  # one case (e.g. out of memory) must not lose the table of the others
            row['Note'] = _failure_text(exc)
            failed.append(f'{name} x{scale}')
        finally:
            gc.collect()
            if gpu is not None:
                torch.cuda.empty_cache()
        rows.append(row)
    rows += [{'Network': n, 'Scale': f'x{s}', 'Note': why} for n, s, why in skipped]
    rows.sort(key=lambda r: order[(r['Network'], int(r['Scale'][1:]))])
    text = markdown(rows, machine_text(args.config, args.hr_size, gpu), gpu)
    try:
        atomic_write_text(args.out, text)
    except OSError as exc:
        print(text)
        return error_exit(exc, 1)
    print(text)
    if failed:
        return error_exit(
            f'{len(failed)} of {len(cases)} cases failed ({", ".join(failed)}): their rows in '
            f'{args.out} say why; the other rows were measured.', 1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
