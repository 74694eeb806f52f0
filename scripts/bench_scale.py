#!/usr/bin/env python
"""The costs that grow with the number of faces, measured on a scale set (scripts/make_scale_set.py; docs/scale.md).

Five measurements, one per sub-command; each prints a Markdown table (and the load average: on a shared machine the
wall-clock figures drop when other processes compete for the cores, the CPU-second figures much less):

    python scripts/bench_scale.py build   --n 100000 --image-format bmp --workdir DIR [--hr-size 128] [--keep]
    python scripts/bench_scale.py loader  --data SET --workers 1 2 4 [--samples 4000] [--scale 4]
    python scripts/bench_scale.py gpu     --per-core RATE --per-core-masks RATE [--tflops 400 --util 0.3 0.35 0.4]
    python scripts/bench_scale.py lr      --data SET [--faces 256]
    python scripts/bench_scale.py metrics --data SET --faces 1000 [--net LABEL=CKPT,OPT.yml]
    python scripts/bench_scale.py dlib    --data SET [--faces 64]
    python scripts/bench_scale.py val     --train SET --val SET --workdir DIR [--iters 30 --val-freq 10]

- build: runs make_scale_set.py and reports its time (wall, CPU) and bytes per LMDB, projected linearly to CelebA's
  202,599 and FFHQ's 70,000 faces.
- loader: FSRFaceDataset through a torch DataLoader (batch 16, shuffled, 128x128 with the W-Net reads: component masks
  and binary parsing maps, horizontal flip), 1, 2, 4 workers: samples/s and the workers' CPU seconds per sample.
- gpu: what one GPU consumes when training the paper configurations (their option files: network and gt_size),
  estimated from FLOPs (torch's FlopCounterMode, as fsr-speed) at a stated GPU throughput and utilisation, training =
  3x the forward FLOPs (W-Net with its memory saving: x1.58 more, scripts/bench_wnet.py --flops-ratio); and how many
  loader cores that takes per GPU at the samples/s per core measured by ``loader`` (``--per-core``: LR/HR only;
  ``--per-core-masks``: with the W-Net masks and binary maps).
- lr: CPU ms per face of fsr-prepare's ``make_lr`` (BasicSR's imresize, one face at a time) and of the batched
  version in make_scale_set.py (same bytes).
- metrics: seconds per face of each metric of fsr-benchmark (PSNR, SSIM, VIF, ID, LMD, NIQE-set; the same functions
  MetricSuite calls), of bicubic and of a network; fsr-benchmark itself has no per-metric timing.
- dlib: dlib's face descriptor (ID, the dominant metric) one face at a time vs one batch call.
- val: a BasicSR validation during ``fsr-train`` (a demo network, val on a scale set), timed from the training log:
  seconds per validation and per training iteration.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from datetime import datetime

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from fsr_utils.safety import UsageError, error_exit, float_range, int_range  # noqa: E402

CELEBA, FFHQ = 202_599, 70_000


def load_text():
    la = os.getloadavg()
    return f'load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min) on {os.cpu_count()} CPUs'


def _cpu_of(pids):
    """CPU seconds (user + system) of the processes ``pids`` so far (Linux /proc)."""
    tick, total = os.sysconf('SC_CLK_TCK'), 0.0
    for pid in pids:
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


# -------------------------------------------------------------------------------------------------------------- build
def cmd_build(args):
    out = osp.join(args.workdir, f'scale_{args.image_format}_{args.hr_size}_{args.n}')
    cmd = [
        sys.executable,
        osp.join(ROOT, 'scripts', 'make_scale_set.py'),
        str(args.n), '-o', out, '--image-format', args.image_format, '--hr-size',
        str(args.hr_size), '--scales', '4', '8', '--workers',
        str(args.workers)
    ]
    print('$ ' + ' '.join(cmd), flush=True)
    before = load_text()
    subprocess.run(cmd, check=True)
    s = json.load(open(osp.join(out, 'scale_set.json')))
    sec, b, n = s['seconds'], s['bytes'], s['faces']
    lmdb_bytes = sum(v for k, v in b.items() if k not in ('manifest', 'total'))
    per_face_wall = sec['generate_and_write'] / n
    per_face_cpu = (sec['cpu_total'] - sec['cpu_setup']) / n
    c = s['seconds']['stages_cpu_sum']
    print(f'\n{load_text()} at the end ({before} at the start)\n')
    print('| format | HR | faces | wall s (setup + faces) | CPU s (all) | faces/s (wall) | CPU ms/face: synthesis, LR, '
          'encode, write | LMDB bytes/face | LMDBs | projected CelebA 202,599: wall, size | projected FFHQ 70,000: '
          'wall, size |')
    print('|---|---|---:|---:|---:|---:|---|---:|---:|---|---|')
    print(f'| {args.image_format} | {args.hr_size} | {n} | {sec["setup"]:.0f} + {sec["generate_and_write"]:.0f} | '
          f'{sec["cpu_total"]:.0f} | {n / sec["generate_and_write"]:.0f} | '
          f'{1e3 * c["synthesis"] / n:.2f}, {1e3 * c["lr"] / n:.2f}, {1e3 * c["encode"] / n:.2f}, '
          f'{1e3 * c["write"] / n:.2f} | {lmdb_bytes / n / 1e3:.1f} kB | {lmdb_bytes / 1e9:.2f} GB | '
          f'{CELEBA * per_face_wall / 60:.0f} min, {CELEBA * lmdb_bytes / n / 1e9:.1f} GB | '
          f'{FFHQ * per_face_wall / 60:.0f} min, {FFHQ * lmdb_bytes / n / 1e9:.1f} GB |')
    print('\nper LMDB (bytes/face): ' + ', '.join(f'{k} {v / n / 1e3:.1f} kB'
                                                  for k, v in b.items() if k not in ('manifest', 'total')) +
          f'; manifest.jsonl {b["manifest"] / n:.0f} B/face; CPU {1e3 * per_face_cpu:.2f} ms/face in all (setup '
          f'excluded: {sec["cpu_setup"]:.0f} s)')
    if not args.keep:
        import shutil
        shutil.rmtree(out)
        print(f'(removed {out}; --keep keeps it)')
    return 0


# ------------------------------------------------------------------------------------------------------------- loader
def wnet_dataset_opt(data, scale, size=128):
    """FSRFaceDataset options as options/train_wnet_x4.yml reads its training set."""
    return dict(
        dataroot_gt=osp.join(data, 'hr.lmdb'),
        dataroot_lq=osp.join(data, f'lr_x{scale}.lmdb'),
        dataroot_parsing=osp.join(data, 'parsing.lmdb'),
        io_backend={'type': 'lmdb'},
        scale=scale,
        phase='train',
        gt_size=size,
        use_hflip=True,
        use_rot=False,
        return_binary_parsing=True,
        return_component_masks=True)


class Uint8Masks:
    """FSRFaceDataset whose float maps (``masks``, ``parsing_bin_gt``) leave the worker as uint8: what returning them
    as uint8 from the dataset (float on the device) would save in the hand-off to the main process and the collation
    (the float maps are still made here, so the saving of making them as uint8 is not counted)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        import torch
        d = self.ds[i]
        d['masks'] = d['masks'].to(torch.uint8)
        d['parsing_bin_gt'] = d['parsing_bin_gt'].mul(255).round_().to(torch.uint8)
        return d


def cmd_loader(args):
    import torch

    from fsr_data.face_dataset import FSRFaceDataset
    torch.set_num_threads(1)
    opt = wnet_dataset_opt(args.data, args.scale, args.size)
    if args.no_masks:  # LR/HR only, as the other networks read them
        for key in ('dataroot_parsing', 'return_binary_parsing', 'return_component_masks'):
            opt.pop(key)
    ds = FSRFaceDataset(opt)
    what = 'LR/HR only' if args.no_masks else 'masks + binary maps'
    if args.masks_uint8:
        ds, what = Uint8Masks(ds), what + ' sent as uint8'
    print(f'FSRFaceDataset on {args.data} ({len(ds)} faces), batch 16, shuffled, gt {args.size}, {what}, '
          f'hflip; {args.samples} samples timed after {args.warmup} warm-up batches per case')
    print('\n| workers | samples/s | worker CPU ms/sample | main CPU ms/sample | samples per worker-CPU-second |')
    print('|---:|---:|---:|---:|---:|')
    rows = []
    for w in args.workers:
        g = torch.Generator()
        g.manual_seed(0)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=16, shuffle=True, num_workers=w, drop_last=True, generator=g, persistent_workers=False)
        it = iter(loader)
        for _ in range(args.warmup):
            next(it)
        pids = [p.pid for p in getattr(it, '_workers', [])]
        c0, m0, t0 = _cpu_of(pids), time.process_time(), time.perf_counter()
        count = 0
        while count < args.samples:
            batch = next(it)
            count += batch['gt'].shape[0]
        wall = time.perf_counter() - t0
        wcpu, mcpu = _cpu_of(pids) - c0, time.process_time() - m0
        if w == 0:  # no workers: this process loads the samples
            wcpu = mcpu
        del it, loader
        rows.append(dict(workers=w, rate=count / wall, worker_ms=1e3 * wcpu / count, main_ms=1e3 * mcpu / count))
        print(
            f'| {w} | {count / wall:.0f} | {1e3 * wcpu / count:.2f} | {1e3 * mcpu / count:.2f} | '
            f'{count / wcpu:.0f} |',
            flush=True)
    print(f'\n{load_text()}')
    return 0


# ---------------------------------------------------------------------------------------------------------------- gpu
PAPER_FILES = ('train_laat_x4', 'train_laat_x8', 'train_aminet_x4', 'train_aminet_x8', 'train_tanet_x4',
               'train_tanet_x8', 'train_tanet_ffhq_x4', 'train_tanet_ffhq_x8', 'train_wnet_x4', 'train_wnet_x8',
               'train_wnet_x4_mode2')
WNET_SAVING = 1.58  # the memory saving costs +58% FLOPs per training step (scripts/bench_wnet.py --flops-ratio)


def cmd_gpu(args):
    import torch
    import yaml
    from basicsr.utils.registry import ARCH_REGISTRY

    from fsr_tools.speed import count_flops
    from fsr_utils import plugin
    plugin.load()
    torch.set_num_threads(1)
    print(f'GPU: {args.tflops:g} TFLOP/s (assumed sustained dense bf16; H100 SXM spec-sheet peak: 989) at '
          f'{", ".join(f"{u:.0%}" for u in args.util)} utilisation; training step = 3 x forward FLOPs (forward + '
          f'backward of activations and weights){"; W-Net x" + str(WNET_SAVING) + " for its memory saving"}; '
          f'loader: {args.per_core:g} samples/s per worker core for LR/HR, {args.per_core_masks:g} with the W-Net '
          'masks and binary maps (bench_scale.py loader); loader cores at the middle utilisation\n')
    head = ' | '.join(f'img/s per GPU at {u:.0%}' for u in args.util)
    print(f'| option file | gt | fwd GFLOPs/face | train GFLOPs/face | {head} | loader cores per GPU | loader cores '
          'for 8 GPUs |')
    print('|---|---|---:|---:|' + '---:|' * len(args.util) + '---:|---:|')
    val_rows = []
    for name in args.files:
        opt = yaml.safe_load(open(osp.join(ROOT, 'options', name + '.yml')))
        g = dict(opt['network_g'])
        arch = g.pop('type')
        size = opt['datasets']['train'].get('gt_size') or 128
        h, w = (size, size) if isinstance(size, int) else size
        scale = opt['scale']
        net = ARCH_REGISTRY.get(arch)(**g).eval()
        x = torch.rand(1, 3, h // scale, w // scale)
        fwd = count_flops(net, x) / 1e9
        train = 3 * fwd * (WNET_SAVING if g.get('use_checkpoint') else 1)
        rates = [args.tflops * 1e3 * u / train for u in args.util]
        mid = rates[len(rates) // 2]
        masks = opt['datasets']['train'].get('return_component_masks', False)
        core = args.per_core_masks if masks else args.per_core
        print(
            f'| {name} | {h}x{w} | {fwd:.1f} | {train:.0f} | ' + ' | '.join(f'{r:.0f}' for r in rates) +
            f' | {mid / core:.1f}{" (masks)" if masks else ""} | {8 * mid / core:.1f} |',
            flush=True)
        val_rows.append(validation_share(args, name, opt, fwd * 1e9 / (h * w), mid))
        del net
    util = args.util[len(args.util) // 2]
    print(f'\nValidation during training (BasicSR validates on rank 0 only, one face at a time: the other GPUs wait): '
          f'{args.val_ms:g} ms of CPU per 128x128 validation face for PSNR + SSIM and the conversions (bench_scale.py '
          f'metrics; scaled with the face area), plus its forward on the GPU at {util:.0%}; the training between two '
          'validations at the middle img/s above; a total batch smaller than the GPU count leaves GPUs idle.\n')
    print('| option file | validates every | train faces between | val faces | val s | train s, 1 GPU | share, 1 GPU | '
          'train s, 8 GPUs | share, 8 GPUs |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for r in val_rows:
        print(
            f'| {r["name"]} | {r["every"]} | {r["faces"]:,} | {r["n_val"]} | {r["val_s"]:.1f} | {r["train_s"][0]:.0f} '
            f'| {r["share"][0]:.1%} | {r["train_s"][1]:.0f} | {r["share"][1]:.1%} |')
    return 0


# training faces per epoch and validation faces of each paper file (fsr_data/recipes.py: the recipe's train and val
# counts; LAAT and AMINet validate on their 1,000 test faces) and the size of the validation faces
TRAIN_VAL = {
    'laat': (168_854, 1000, (128, 128)),
    'aminet': (18_000, 1000, (128, 128)),
    'tanet': (3_800, 100, (216, 176)),
    'tanet_ffhq': (3_800, 100, (256, 256)),
    'wnet': (168_854, 100, (128, 128)),
}


def validation_share(args, name, opt, flops_per_pixel, rate):
    """Seconds of one validation and of the training between two, on 1 and 8 GPUs (see cmd_gpu's note)."""
    key = name.replace('train_', '').rsplit('_x', 1)[0]
    n_train, n_val, (vh, vw) = TRAIN_VAL[key]
    batch = opt['datasets']['train']['total_batch_size']
    v = opt['val']
    if 'val_freq_epochs' in v:
        faces, every = v['val_freq_epochs'] * n_train, f'{v["val_freq_epochs"]} epoch(s) of {n_train:,}'
    else:
        faces, every = int(v['val_freq']) * batch, f'{int(v["val_freq"]):,} iterations of {batch}'
    util = args.util[len(args.util) // 2]
    per_face = args.val_ms / 1e3 * vh * vw / 128**2 + flops_per_pixel * vh * vw / (args.tflops * 1e12 * util)
    val_s = n_val * per_face
    train_s = [faces / (rate * min(g, batch)) for g in (1, 8)]
    return dict(
        name=name,
        every=every,
        faces=faces,
        n_val=n_val,
        val_s=val_s,
        train_s=train_s,
        share=[val_s / (t + val_s) for t in train_s])


# ----------------------------------------------------------------------------------------------------------------- lr
def cmd_lr(args):
    """CPU ms per face of fsr-prepare's make_lr (one face at a time) and of make_scale_set.py's batched version."""
    import numpy as np
    import torch

    from fsr_data.lmdb_io import read_lmdb_images
    from fsr_data.prepare import make_lr
    torch.set_num_threads(1)
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    from make_scale_set import matlab_lr_batch
    imgs = read_lmdb_images(osp.join(args.data, 'hr.lmdb'))
    hr = np.stack([imgs[k] for k in sorted(imgs)[:args.faces]])
    print(f'{len(hr)} HR faces {hr.shape[1]}x{hr.shape[2]} of {args.data}; CPU ms per face (torch threads 1)\n')
    print('| scale | make_lr, face by face | matlab_lr_batch, one batch | same bytes |')
    print('|---:|---:|---:|---|')
    for s in (4, 8):
        make_lr(hr[0], s), matlab_lr_batch(hr[:2], s)  # warm-up
        t = time.process_time()
        ref = np.stack([make_lr(x, s) for x in hr])
        t1 = time.process_time() - t
        t = time.process_time()
        out = matlab_lr_batch(hr, s)
        t2 = time.process_time() - t
        print(f'| x{s} | {1e3 * t1 / len(hr):.2f} | {1e3 * t2 / len(hr):.2f} | {np.array_equal(ref, out)} |')
    print(f'\n{load_text()}')
    return 0


# ------------------------------------------------------------------------------------------------------------ metrics
def cmd_metrics(args):
    import numpy as np
    import torch

    from fsr_metrics import benchmark as bm
    from fsr_metrics.niqe_set import calculate_niqe_set
    torch.set_num_threads(1)
    bm._load_plugin()
    t = time.perf_counter()
    faces = bm.load_faces(args.data, args.scale)[0][:args.faces]
    t_load = time.perf_counter() - t
    n = len(faces)
    suite = bm.MetricSuite(args.scale, args.scale, True, torch.device('cpu'), niqe=True, min_face_size=128, num_faces=n)
    print(f'{n} faces of {args.data} (x{args.scale}, 128x128); metrics: {", ".join(suite.names)}; load + decode '
          f'{1e3 * t_load / n:.2f} ms/face')
    from basicsr.metrics import calculate_psnr, calculate_ssim
    kw = dict(crop_border=args.scale, test_y_channel=True)
    dl = suite.dlib
    timers = {}

    def timed(key, fn, *a, **k):
        t0 = time.perf_counter()
        r = fn(*a, **k)
        timers[key] = timers.get(key, 0.0) + time.perf_counter() - t0
        return r

    # HR side of ID/LMD (box, descriptor, landmarks): once per face, cached across methods (MetricSuite._hr_face)
    hr_side = {}
    for name, hr, _ in faces:
        rgb = dl.to_rgb(hr)
        box = timed('HR face box (dlib HOG, once per face)', dl.face_box, rgb)
        desc = timed('HR descriptor (once per face)', dl.descriptor, rgb, box)
        hr_side[name] = (box, (desc, timed('HR 68 landmarks (once per face)', dl.landmarks68, rgb, box)))
    methods = [('Bicubic', None)]
    if args.net:
        spec = bm.parse_net_specs([], [args.net], args.scale)[0]
        methods.append((spec['label'], bm.build_network(spec, torch.device('cpu'))))
    for label, net in methods:
        outs = []
        for name, hr, lr in faces:
            if net is None:
                sr = timed(f'{label}: super-resolve', bm.matlab_bicubic, lr, args.scale)
            else:
                sr = timed(f'{label}: super-resolve', bm.super_resolve, net, lr, args.scale, torch.device('cpu'))
            outs.append(sr)
            timed('PSNR', calculate_psnr, sr, hr, **kw)
            timed('SSIM', calculate_ssim, sr, hr, **kw)
            timed('VIF', suite.fm.calculate_face_vif, sr, hr, **kw)
            box, (desc, marks) = hr_side[name]
            rgb = dl.to_rgb(sr)
            float(np.dot(timed('ID (SR descriptor)', dl.descriptor, rgb, box), desc))
            np.linalg.norm(timed('LMD (SR 68 landmarks)', dl.landmarks68, rgb, box) - marks, axis=1).mean()
        timed('NIQE-set (over the set)', calculate_niqe_set, outs, args.scale)
    m = len(methods)
    print('\n| step | ms per face per method | share of one method\'s metric time |')
    print('|---|---:|---:|')
    metric_keys = [k for k in timers if ':' not in k]
    per_method = {k: timers[k] / n / (1 if 'once' in k else m) for k in metric_keys}
    total = sum(per_method.values())
    for k in metric_keys:
        print(f'| {k} | {1e3 * per_method[k]:.2f} | {per_method[k] / total:.0%} |')
    for k in timers:
        if ':' in k:
            print(f'| {k} | {1e3 * timers[k] / n:.2f} | |')
    print(f'| all metrics, one method (HR side included) | {1e3 * total:.2f} | 100% |')
    print(f'\n{load_text()}')
    return 0


def cmd_dlib(args):
    """dlib's face descriptor (the ID metric) one face at a time vs dlib's batch call, CPU ms per face."""
    import dlib
    import numpy as np

    from fsr_data.lmdb_io import read_lmdb_images
    from fsr_metrics.face_metric import get_dlib
    imgs = read_lmdb_images(osp.join(args.data, 'hr.lmdb'))
    dl = get_dlib()
    rgbs = [dl.to_rgb(imgs[k]) for k in sorted(imgs)[:args.faces]]
    shapes = [dl.sp5(r, dl.face_box(r)) for r in rgbs]
    dl.rec.compute_face_descriptor(rgbs[0], shapes[0])  # warm-up
    t = time.process_time()
    one = np.array([np.array(dl.rec.compute_face_descriptor(r, s)) for r, s in zip(rgbs, shapes)])
    t1 = time.process_time() - t
    t = time.process_time()
    batch = dl.rec.compute_face_descriptor(rgbs, [dlib.full_object_detections([s]) for s in shapes])
    t2 = time.process_time() - t
    same = np.allclose(one, np.array([np.array(d[0]) for d in batch]), atol=1e-6)
    print(f'dlib {dlib.__version__} (CUDA {dlib.DLIB_USE_CUDA}, AVX {dlib.USE_AVX_INSTRUCTIONS}), {len(rgbs)} faces: '
          f'one at a time {1e3 * t1 / len(rgbs):.1f} ms CPU/face, one batch call {1e3 * t2 / len(rgbs):.1f} ms '
          f'CPU/face, same descriptors: {same}; {load_text()}')
    return 0


# ---------------------------------------------------------------------------------------------------------------- val
LOG_TIME = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: (.*)$')


def val_options(args, name):
    import yaml
    opt = yaml.safe_load(open(osp.join(ROOT, 'options', 'demo', f'train_{args.net}_demo_x4.yml')))
    opt['name'] = name
    tr, va = opt['datasets']['train'], opt['datasets']['val']
    for d, root in ((tr, args.train), (va, args.val)):
        d['dataroot_gt'] = osp.join(root, 'hr.lmdb')
        d['dataroot_lq'] = osp.join(root, 'lr_x4.lmdb')
        if 'dataroot_parsing' in d:
            d['dataroot_parsing'] = osp.join(root, 'parsing.lmdb')
    opt['train']['total_iter'] = args.iters
    opt['val']['val_freq'] = args.val_freq
    opt['logger']['print_freq'] = 1
    opt['logger']['save_checkpoint_freq'] = args.iters
    return opt


def parse_val_log(path):
    """(step seconds between consecutive iteration lines, seconds of each validation that follows an iteration
    line) from a BasicSR training log."""
    events = []
    for line in open(path):
        m = LOG_TIME.match(line.rstrip('\n'))
        if m:
            t = datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S,%f').timestamp()
            kind = 'iter' if re.search(r'iter:\s*[\d,]+',
                                       m.group(2)) else ('val' if m.group(2).startswith('Validation') else 'other')
            events.append((t, kind))
    steps, vals = [], []
    for (t0, k0), (t1, k1) in zip(events, events[1:]):
        if k0 == 'iter' and k1 == 'iter':
            steps.append(t1 - t0)
        elif k0 == 'iter' and k1 == 'val':
            vals.append(t1 - t0)
    return steps, vals


def cmd_val(args):
    import yaml
    name = f'scale_val_{int(time.time())}'
    opt = val_options(args, name)
    os.makedirs(args.workdir, exist_ok=True)
    path = osp.join(args.workdir, name + '.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    import shutil
    exe = shutil.which('fsr-train') or 'fsr-train'
    cmd = [exe, '-opt', path]
    print(
        '$ ' + ' '.join(cmd) + f'   (in {args.workdir}; options/demo/train_{args.net}_demo_x4.yml, train on '
        f'{args.train}, val on {args.val})',
        flush=True)
    before = load_text()
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=args.workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return 1
    exp = osp.join(args.workdir, 'experiments', name)
    log = sorted(f for f in os.listdir(exp) if f.startswith('train_') and f.endswith('.log'))[-1]
    steps, vals = parse_val_log(osp.join(exp, log))
    import numpy as np
    step = float(np.median(steps))
    print(f'\nfsr-train: {wall:.0f} s for {args.iters} iterations; {len(steps)} step intervals, median '
          f'{step:.3f} s/iteration (batch {opt["datasets"]["train"]["batch_size_per_gpu"]}, gt '
          f'{opt["datasets"]["train"]["gt_size"]}); validations: ' + ', '.join(f'{v:.2f} s' for v in vals))
    v = float(np.median(vals))
    print(f'validation on {args.val}: median {v:.2f} s; per {args.val_freq} iterations of training '
          f'({args.val_freq * step:.1f} s): {v / (args.val_freq * step):.1%}')
    print(f'log: {osp.join(exp, log)}; checkpoint: {osp.join(exp, "models", f"net_g_{args.iters}.pth")}; '
          f'options: {path}')
    print(f'{load_text()} at the end ({before} at the start)')
    return 0


# ---------------------------------------------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build', help='LMDB build time and size (make_scale_set.py)')
    b.add_argument('--n', type=int_range(1, 10_000_000), required=True)
    b.add_argument('--image-format', choices=['bmp', 'png'], default='bmp')
    b.add_argument('--hr-size', type=int_range(16, 1024), default=128)
    b.add_argument('--workers', type=int_range(1, 64), default=os.cpu_count() or 1)
    b.add_argument('--workdir', required=True, help='folder that receives the set (scale_<format>_<hr>_<n>)')
    b.add_argument('--keep', action='store_true', help='keep the set (for loader, metrics, val)')
    lo = sub.add_parser('loader', help='DataLoader samples/s')
    lo.add_argument('--data', required=True)
    lo.add_argument('--scale', type=int_range(choices=[4, 8]), default=4)
    lo.add_argument('--workers', type=int_range(0, 64), nargs='+', default=[1, 2, 4])
    lo.add_argument('--size', type=int_range(8, 1024), default=128, help='gt_size (the whole face at 128)')
    lo.add_argument('--samples', type=int_range(16), default=4000)
    lo.add_argument('--no-masks', action='store_true', help='LR/HR only (no parsing maps, masks, binary maps)')
    lo.add_argument(
        '--masks-uint8', action='store_true', help='send masks and binary maps as uint8 (a proposed dataset change)')
    lo.add_argument('--warmup', type=int_range(1), default=5, help='batches before the timing starts')
    g = sub.add_parser('gpu', help='GPU training images/s from FLOPs, and loader cores per GPU')
    g.add_argument(
        '--per-core', type=float_range(0, min_open=True), required=True, help='loader samples/s per core, LR/HR')
    g.add_argument(
        '--per-core-masks',
        type=float_range(0, min_open=True),
        required=True,
        help='loader samples/s per core with masks and binary maps (the W-Net files)')
    g.add_argument('--tflops', type=float_range(0, min_open=True), default=400.0)
    g.add_argument('--util', type=float_range(0, 1, min_open=True), nargs='+', default=[0.30, 0.35, 0.40])
    g.add_argument(
        '--val-ms',
        type=float_range(0, min_open=True),
        default=6.0,
        help='CPU ms per 128x128 validation face (PSNR + SSIM + conversions; bench_scale.py metrics)')
    g.add_argument('--files', nargs='+', default=list(PAPER_FILES), help='option files (options/<name>.yml)')
    lr = sub.add_parser('lr', help="fsr-prepare's make_lr vs the batched MATLAB bicubic")
    lr.add_argument('--data', required=True)
    lr.add_argument('--faces', type=int_range(1), default=256)
    m = sub.add_parser('metrics', help='seconds per face per metric of fsr-benchmark')
    m.add_argument('--data', required=True)
    m.add_argument('--scale', type=int_range(choices=[4, 8]), default=4)
    m.add_argument('--faces', type=int_range(2), default=1000)
    m.add_argument('--net', help='LABEL=CHECKPOINT[,OPTIONS.yml] as fsr-benchmark --net')
    d = sub.add_parser('dlib', help="dlib's face descriptor one at a time vs batched")
    d.add_argument('--data', required=True)
    d.add_argument('--faces', type=int_range(1), default=64)
    v = sub.add_parser('val', help='validation time during fsr-train')
    v.add_argument('--train', required=True)
    v.add_argument('--val', required=True)
    v.add_argument('--workdir', required=True)
    v.add_argument('--net', choices=['wnet', 'tanet', 'laat', 'aminet'], default='wnet', help='demo network')
    v.add_argument('--iters', type=int_range(2), default=30)
    v.add_argument('--val-freq', type=int_range(1), default=10)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for key in ('data', 'train', 'val'):
        path = getattr(args, key, None)
        if path is not None and not osp.isfile(osp.join(path, 'hr.lmdb', 'data.mdb')):
            return error_exit(f'--{key} {path} is not a dataset folder (no hr.lmdb): make one with '
                              'scripts/make_scale_set.py')
    try:
        return globals()['cmd_' + args.cmd](args)
    except UsageError as e:
        return error_exit(e)


if __name__ == '__main__':
    sys.exit(main())
