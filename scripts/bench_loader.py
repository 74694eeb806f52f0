#!/usr/bin/env python
"""Loader throughput of FSRFaceDataset (samples/s, one worker), from LMDB and from PNG folders.

Each sample: decode HR (128x128), LR and the parsing map, random crop (= the whole face at gt_size 128), flip/rotation,
and the component masks + W-Net binary maps. Measured two ways: ``__getitem__`` in a loop in this process (what one
DataLoader worker does) and a ``DataLoader(num_workers=1, batch_size=16)`` (adds the worker hand-off and collation).

    python scripts/bench_loader.py [--data demo_data/train] [--scale 4] [--samples 2000]

Without ``--data`` (or if the folder is missing) it uses a synthetic dataset of 256 faces written to a temporary folder.
Target: >= 800 samples/s per worker from LMDB at 128x128 with masks. The "per CPU-second" column (samples per second of
CPU time of this process) is what one worker delivers on a core of its own.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import lmdb  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic(root, n=256, size=128, scale=4):
    from basicsr.utils.matlab_functions import imresize

    from fsr_data.lmdb_io import write_lmdb
    rng = np.random.RandomState(0)
    hr, lr, par = {}, {}, {}
    for i in range(n):
        img = cv2.resize((rng.rand(16, 16, 3) * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        hr[f'{i:05d}'] = img
        lr[f'{i:05d}'] = np.clip(np.round(imresize(img / 255., 1 / scale) * 255), 0, 255).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        cv2.ellipse(lab, (size // 2, size // 2), (size // 3, size // 2 - 8), 0, 0, 360, 1, -1)
        for lbl, (x, y) in zip((4, 5, 2, 3, 10, 12, 11, 13),
                               ((44, 56), (84, 56), (44, 44), (84, 44), (64, 76), (64, 92), (64, 96), (64, 100))):
            cv2.ellipse(lab, (x, y), (9, 3), 0, 0, 360, lbl, -1)
        par[f'{i:05d}'] = lab
    write_lmdb(os.path.join(root, 'hr.lmdb'), hr)
    write_lmdb(os.path.join(root, f'lr_x{scale}.lmdb'), lr)
    write_lmdb(os.path.join(root, 'parsing.lmdb'), par)
    return root


def export_folders(root, dst, scale):
    """PNG folders with the LMDBs' content (same bytes), for the disk backend."""
    for name in ('hr', f'lr_x{scale}', 'parsing'):
        os.makedirs(os.path.join(dst, name), exist_ok=True)
        env = lmdb.open(os.path.join(root, f'{name}.lmdb'), readonly=True, lock=False)
        with env.begin() as txn:
            for k, v in txn.cursor():
                with open(os.path.join(dst, name, k.decode() + '.png'), 'wb') as f:
                    f.write(v)
        env.close()
    return dst


def convert(root, dst, scale, fmt):
    """The same dataset with HR/LR stored as ``fmt`` (parsing maps stay PNG)."""
    from fsr_data.lmdb_io import write_lmdb
    for name in ('hr', f'lr_x{scale}', 'parsing'):
        env = lmdb.open(os.path.join(root, f'{name}.lmdb'), readonly=True, lock=False)
        with env.begin() as txn:
            imgs = {k.decode(): cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED) for k, v in txn.cursor()}
        env.close()
        write_lmdb(os.path.join(dst, f'{name}.lmdb'), imgs, fmt='png' if name == 'parsing' else fmt)
    return dst


def options(root, scale, lmdb_backend, size):
    ext = '.lmdb' if lmdb_backend else ''
    return dict(
        dataroot_gt=os.path.join(root, 'hr' + ext),
        dataroot_lq=os.path.join(root, f'lr_x{scale}' + ext),
        dataroot_parsing=os.path.join(root, 'parsing' + ext),
        io_backend={'type': 'lmdb' if lmdb_backend else 'disk'},
        scale=scale,
        phase='train',
        gt_size=size,
        use_hflip=True,
        use_rot=True,
        return_component_masks=True,
        return_binary_parsing=True)


def bench(opt, samples):
    from fsr_data.face_dataset import FSRFaceDataset
    ds = FSRFaceDataset(opt)
    n = len(ds)
    for i in range(min(n, 32)):  # warm up (opens the LMDBs, fills the page cache)
        ds[i]
    t, c = time.perf_counter(), time.process_time()
    for i in range(samples):
        ds[i % n]
    direct = samples / (time.perf_counter() - t)
    per_cpu_s = samples / (time.process_time() - c)
    ds.close()
    ds = FSRFaceDataset(opt)
    idx = [i % n for i in range(samples)]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, idx), batch_size=16, num_workers=1, shuffle=False, persistent_workers=False)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    count = 0
    for batch in it:
        count += batch['gt'].shape[0]
    loaded = count / (time.perf_counter() - t)
    return direct, per_cpu_s, loaded, n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None, help='fsr-prepare dataset folder (hr.lmdb, lr_xS.lmdb, parsing.lmdb)')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--size', type=int, default=128, help='gt_size (HR patch)')
    p.add_argument('--samples', type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    tmp = tempfile.mkdtemp(prefix='fsr_bench_')
    try:
        root = args.data
        if not root or not os.path.isfile(os.path.join(root, 'hr.lmdb', 'data.mdb')):
            root = synthetic(os.path.join(tmp, 'lmdb'), size=args.size, scale=args.scale)
            print(f'using a synthetic dataset ({root})')
        png = convert(root, os.path.join(tmp, 'png'), args.scale, 'png')
        bmp = convert(root, os.path.join(tmp, 'bmp'), args.scale, 'bmp')
        folders = export_folders(png, os.path.join(tmp, 'folders'), args.scale)
        print(f'FSRFaceDataset, gt_size {args.size}, x{args.scale}, masks + binary maps, flips/rotations, '
              f'torch threads 1, {args.samples} samples')
        print('| backend | faces | getitem loop (samples/s) | same, per CPU-second | DataLoader 1 worker, batch 16 '
              '(samples/s) |')
        print('|---|---|---|---|---|')
        cases = [('LMDB, BMP (fsr-prepare default)', bmp, True), ('LMDB, PNG (--image-format png)', png, True),
                 ('folders, PNG', folders, False)]
        for name, r, lm in cases:
            direct, per_cpu_s, loaded, n = bench(options(r, args.scale, lm, args.size), args.samples)
            print(f'| {name} | {n} | {direct:.0f} | {per_cpu_s:.0f} | {loaded:.0f} |')
        print(f'load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall-clock figures '
              'drop when other processes compete for the cores; the per-CPU-second figure much less)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
