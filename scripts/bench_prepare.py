#!/usr/bin/env python
"""``fsr-prepare`` throughput with 1 and N workers (issue 25 part 1): photos/s, CPU seconds per photo, worker memory.

    python scripts/bench_prepare.py [--sets celeba ffhq mixed] [--photos 120 40 90] [--workers 1 2] [--repeat R] \
        [--workdir /tmp/fsr_bench_prepare] [--json results.json] [-- extra fsr-prepare options]

Photo folders (made here from the demo photographs that installed packages ship, ``fsr_data.demo.demo_photo_paths``;
no photo is stored in the repository; deterministic, ``--seed``): every synthetic photo is one of the demo faces (found
once with MTCNN) warped by a random similarity (scale, rotation +-8 degrees, shift, mirror) with colour jitter (gain
and gamma per channel) and a little noise:

- ``celeba``: 178x218 photos framed like CelebA's ``img_align_celeba`` (eye distance about 38 px, +-15%).
- ``ffhq``: 1024x1024 photos framed like FFHQ (eye distance about 260 px, +-10%; upscaled from the demo faces).
- ``mixed``: a third each of the two above and of "in the wild" photos (400-900 px wide, 3:4 to 4:3, the face 8-25%
  of the width; some are the group photo at random scales).

Each folder is prepared with the default ``fsr-prepare`` options (5-point alignment, 128x128, x4 and x8 LR, dlib
landmark parsing, BMP) by the console script (a new process each run, as a user runs it), once per ``--workers``
value. Reported per run:

- ``photos/s``: all photos / wall time of the whole command (start-up, model loading and the final LMDB moves
  included) and ``steady``: photos/s between the first and the last commit of the staging manifest (start-up
  excluded; the runs use ``--commit-every 8`` for that resolution);
- ``CPU s/photo``: user + system CPU seconds of every process of the run (the main process, the pool's server and its
  workers, read from /proc every 0.1 s) per photo, for the whole run and ``steady`` (between the first and the last
  commit): less sensitive than wall time to other jobs on the machine;
- ``worker RSS/PSS``: the largest resident set of one worker and its proportional share (pages shared with the pool's
  server, e.g. the preloaded libraries, divided among the processes that map them), the main process's RSS, and the
  run's PSS (all its processes together: what the run costs the machine);
- the load average (1 minute) before and after the run, and the run-queue wait share: the time the run's processes
  were ready to run but waited for a core (``/proc/PID/schedstat``), over that time plus their CPU time. On a shared
  machine the wall-time figures depend on both; the CPU time per photo hardly does.

The speed-up compares the steady rates of N workers and 1 worker on the same folder; the CPU-bound speed-up (N x CPU
s/photo of 1 worker / that of N workers) is what N free cores give, the main process needing little CPU (0.5 s for
300 photos).

Measured on the development machine (2 cores, Intel Xeon; shared with other jobs: load average 1.2-3.9, measured
2026-12-06), ``python scripts/bench_prepare.py --photos 300 50 120 --repeat 2`` and then ``--sets mixed ffhq --photos
120 50 --repeat 2`` (steady photos/s of 1 -> 2 workers per run; "wait": the run-queue wait share of the 2-worker run):

=================  ===============================================  ==================  ==================
set                1 -> 2 workers, photos/s (wait)                   CPU s/photo, 1 / 2  CPU-bound speed-up
=================  ===============================================  ==================  ==================
celeba 178x218     16.0 -> 20.1 (54%), 19.3 -> 19.7 (54%)            0.040 / 0.042       1.91x
ffhq 1024x1024     3.85 -> 3.36 (54%), 3.86 -> 3.26 (55%),           0.221 / 0.245,      1.81x, 1.90x
                   4.59 -> 7.43 (12%), 4.42 -> 7.62 (12%)            0.219 / 0.230
mixed              5.19 -> 8.11 (31%), 5.17 -> 4.46 (56%),           0.163 / 0.168,      1.94x, 1.95x
                   5.24 -> 4.83 (56%), 5.04 -> 4.73 (56%)            0.164 / 0.169
=================  ===============================================  ==================  ==================

Where the 2-worker runs waited for a core 12% of the time (one other busy process), 2 workers gave 1.62x and 1.72x
(FFHQ); at 31% 1.56x (mixed); where other jobs took about a core (waits 54-56%, as two busy processes of others would)
0.84x to 1.26x. CPU time per photo grows 3-11% with two workers at once, so 2 free cores give about 1.8-1.95x: about
24 CelebA-like, 4.4 FFHQ-like and 6 mixed photos per second per core (steady; start-up about 10-20 s here, models and
imports, once per run).

On a quiet machine (nothing else running, load average 1.1-1.6, later the same day), ``python scripts/bench_prepare.py
--photos 300 50 120 --repeat 2``, median of the 2 runs: celeba 24.6 -> 42.2 photos/s (**1.72x**), ffhq 4.31 -> 7.44
(**1.73x**), mixed 5.96 -> 10.69 (**1.79x**); the 2-worker runs waited for a core 12-14% of the time (the main process
and the machine's own work); CPU-bound speed-ups 1.94x / 1.97x / 2.04x. The >= 1.7x target is met on all three sets.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CLK_TCK = os.sysconf('SC_CLK_TCK')
PAGE_KB = os.sysconf('SC_PAGE_SIZE') // 1024


# --------------------------------------------------------------------------------------------------------- the photos
def demo_faces():
    """[(BGR photo, (5, 2) landmarks)] of every demo face with a detection score >= 0.95."""
    from fsr_utils import compat
    compat.install_torchvision_shim()
    from fsr_data.demo import demo_photo_paths
    from fsr_data.face_align import FaceDetector
    det = FaceDetector('mtcnn')
    faces = []
    for name, path in sorted(demo_photo_paths().items()):
        img = cv2.imread(path)
        for d in det.detect(np.ascontiguousarray(img[..., ::-1])):
            if d['score'] >= 0.95:
                faces.append((name, img, np.asarray(d['landmarks'], np.float64)))
    if not faces:
        raise SystemExit('no demo face found: install scikit-image / matplotlib (and insightface for the group photo)')
    return faces


def _jitter(img, rng):
    """Colour jitter (gain and gamma per channel) and Gaussian noise, uint8."""
    x = img.astype(np.float32) / 255
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    gamma = rng.uniform(0.85, 1.2, 3).astype(np.float32)
    x = np.clip(x * gain, 0, 1)**gamma
    x += rng.normal(0, rng.uniform(0.002, 0.012), x.shape).astype(np.float32)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def synth_photo(face, size_wh, eye_dist, centre_xy, rng):
    """Warp the demo ``face`` (name, photo, landmarks) so that its eyes are ``eye_dist`` apart around ``centre_xy`` in a
    ``size_wh`` photo: random rotation and mirror, then colour jitter."""
    _, img, lm = face
    if rng.rand() < 0.5:
        img = img[:, ::-1]
        lm = lm.copy()
        lm[:, 0] = img.shape[1] - 1 - lm[:, 0]
        lm = lm[[1, 0, 2, 4, 3]]
    eyes = (lm[0] + lm[1]) / 2
    d = np.linalg.norm(lm[1] - lm[0])
    s = eye_dist / d
    ang = rng.uniform(-8, 8)
    M = cv2.getRotationMatrix2D((float(eyes[0]), float(eyes[1])), ang, s)
    M[:, 2] += np.asarray(centre_xy) - eyes
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    out = cv2.warpAffine(np.ascontiguousarray(img), M, tuple(size_wh), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    return _jitter(out, rng)


def make_set(kind, folder, n, faces, seed=0):
    """Write ``n`` synthetic photos of ``kind`` (celeba | ffhq | mixed) into ``folder`` (JPEG, quality 90-95)."""
    rng = np.random.RandomState({'celeba': 1, 'ffhq': 2, 'mixed': 3}[kind] * 1000 + seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        k = kind if kind != 'mixed' else ('celeba', 'ffhq', 'wild')[i % 3]
        face = faces[rng.randint(len(faces))]
        if k == 'celeba':
            w, h = 178, 218
            img = synth_photo(face, (w, h), 38 * rng.uniform(0.85, 1.15),
                              (89 + rng.uniform(-4, 4), 111 + rng.uniform(-4, 4)), rng)
        elif k == 'ffhq':
            w = h = 1024
            img = synth_photo(face, (w, h), 260 * rng.uniform(0.9, 1.1),
                              (512 + rng.uniform(-15, 15), 480 + rng.uniform(-15, 15)), rng)
        else:
            w = int(rng.uniform(400, 900))
            h = int(w * rng.uniform(0.75, 1.333))
            if face[0] == 't1' and rng.rand() < 0.5:  # the group photo itself, rescaled and cropped
                img = face[1]
                s = w / img.shape[1] * rng.uniform(1.0, 1.6)
                img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
                y0 = rng.randint(0, max(1, img.shape[0] - h + 1))
                x0 = rng.randint(0, max(1, img.shape[1] - w + 1))
                img = _jitter(
                    cv2.copyMakeBorder(img[y0:y0 + h, x0:x0 + w], 0, max(0, h - img.shape[0] + y0), 0,
                                       max(0, w - img.shape[1] + x0), cv2.BORDER_REFLECT_101), rng)
            else:
                eye = w * rng.uniform(0.08, 0.25) * 0.45
                img = synth_photo(face, (w, h), eye, (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.6)), rng)
        cv2.imwrite(osp.join(folder, f'{kind}_{i:06d}.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.randint(90, 96))])
    return folder


# ---------------------------------------------------------------------------------------------------- measuring a run
def _children(pid):
    kids = []
    try:
        for task in os.listdir(f'/proc/{pid}/task'):
            try:
                with open(f'/proc/{pid}/task/{task}/children') as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _tree(pid):
    out, todo = [pid], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _stat(pid):
    """(cpu seconds, rss kB, pss kB or None, cmdline, run-queue wait seconds) of ``pid``, or None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = int(fields[21]) * PAGE_KB
        pss = None
        try:
            with open(f'/proc/{pid}/smaps_rollup') as f:
                for ln in f:
                    if ln.startswith('Pss:'):
                        pss = int(ln.split()[1])
                        break
        except OSError:
            pass
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
        try:
            with open(f'/proc/{pid}/schedstat') as f:
                wait = int(f.read().split()[1]) / 1e9  # seconds runnable but waiting for a CPU
        except (OSError, IndexError, ValueError):
            wait = 0.0
        return cpu, rss, pss, cmd, wait
    except (OSError, IndexError, ValueError):
        return None


def _loadavg():
    with open('/proc/loadavg') as f:
        return float(f.read().split()[0])


def _command():
    exe = shutil.which('fsr-prepare')
    return [exe] if exe else [sys.executable, '-m', 'fsr_data.prepare']


def run_prepare(photos, out, workers, extra=()):
    """Run fsr-prepare on ``photos`` with ``workers``; returns the measurements of the module docstring."""
    if osp.isdir(out):
        shutil.rmtree(out)
    n_photos = len([f for f in os.listdir(photos) if f.endswith('.jpg')])
    cmd = _command() + [photos, '-o', out, '--workers', str(workers), '--commit-every', '8', '--quiet', *extra]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    load0 = _loadavg()
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu, rss, pss, role, waits = {}, {}, {}, {}, {}
    manifest = osp.join(out, '.staging', 'manifest.partial.jsonl')
    skipped = osp.join(out, '.staging', 'skipped.partial.tsv')
    commits = []  # (time, photos done)
    total_pss = 0
    while proc.poll() is None:
        alive = []
        for pid in _tree(proc.pid):
            st = _stat(pid)
            if st is None:
                continue
            alive.append(pid)
            cpu[pid] = max(cpu.get(pid, 0), st[0])
            waits[pid] = max(waits.get(pid, 0), st[4])
            rss[pid] = max(rss.get(pid, 0), st[1])
            if st[2] is not None:
                pss[pid] = max(pss.get(pid, 0), st[2])
            if pid not in role:
                role[pid] = ('main' if pid == proc.pid else 'server' if 'forkserver' in st[3]
                             and proc.pid in _parents(pid, 1) else 'worker' if 'forkserver' in st[3] else 'other')
        try:
            done = sum(1 for p in (manifest, skipped) if osp.isfile(p) for ln in open(p) if ln.endswith('\n'))
        except OSError:
            done = None
        if done is not None and (not commits or done != commits[-1][1]):
            commits.append((time.time(), done, sum(cpu.values())))
        total_pss = max(total_pss, sum(pss.get(p, 0) for p in alive))
        time.sleep(0.1)
    wall = time.time() - t0
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f'fsr-prepare failed ({proc.returncode}): {err.strip()[-2000:]}')
    faces = sum(1 for _ in open(osp.join(out, 'manifest.jsonl')))
    commits = [c for c in commits if c[1] > 0]
    steady = steady_cpu = None
    if len(commits) >= 2 and commits[-1][0] > commits[0][0]:
        steady = (commits[-1][1] - commits[0][1]) / (commits[-1][0] - commits[0][0])
        steady_cpu = (commits[-1][2] - commits[0][2]) / (commits[-1][1] - commits[0][1])
    workers_pids = [p for p, r in role.items() if r == 'worker']
    return dict(
        photos=n_photos,
        faces=faces,
        workers=workers,
        wall_s=round(wall, 2),
        photos_per_s=round(n_photos / wall, 3),
        steady_photos_per_s=None if steady is None else round(steady, 3),
        cpu_s=round(sum(cpu.values()), 2),
        cpu_s_per_photo=round(sum(cpu.values()) / n_photos, 4),
        steady_cpu_s_per_photo=None if steady_cpu is None else round(steady_cpu, 4),
        total_pss_mb=round(total_pss / 1024, 1),
        runqueue_wait_share=round(sum(waits.values()) / max(1e-9,
                                                            sum(waits.values()) + sum(cpu.values())), 3),
        main_cpu_s=round(cpu.get(proc.pid, 0), 2),
        workers_cpu_s=[round(cpu[p], 2) for p in workers_pids],
        main_rss_mb=round(rss.get(proc.pid, 0) / 1024, 1),
        worker_rss_mb=round(max([rss[p] for p in workers_pids], default=0) / 1024, 1),
        worker_pss_mb=round(max([pss.get(p, 0) for p in workers_pids], default=0) / 1024, 1),
        server_rss_mb=round(max([rss[p] for p, r in role.items() if r == 'server'], default=0) / 1024, 1),
        load_before=load0,
        load_after=_loadavg(),
        command=' '.join(cmd))


def _parents(pid, depth):
    """The parent PIDs of ``pid`` up to ``depth`` levels."""
    out = []
    for _ in range(depth):
        try:
            with open(f'/proc/{pid}/stat') as f:
                pid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.append(pid)
    return out


def med(values):
    """The median of the values that are not None (None if there are none)."""
    v = [x for x in values if x is not None]
    return round(float(np.median(v)), 4) if v else None


# ------------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--sets', nargs='+', choices=['celeba', 'ffhq', 'mixed'], default=['celeba', 'ffhq', 'mixed'])
    p.add_argument('--photos', nargs='+', type=int, default=[120, 40, 90], help='photos per set (one value per set)')
    p.add_argument('--workers', nargs='+', type=int, default=[1, 2], help='worker counts to compare (first: the base)')
    p.add_argument('--workdir', default=osp.join('/tmp', 'fsr_bench_prepare'), help='where the photos and outputs go')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--repeat', type=int, default=1, help='runs per (set, workers), alternating the worker counts')
    p.add_argument('--json', help='write every measurement here')
    args, extra = p.parse_known_args(argv)
    extra = [x for x in extra if x != '--']
    counts = dict(zip(args.sets, args.photos + args.photos[-1:] * len(args.sets)))
    faces = None
    rows = []
    for kind in args.sets:
        folder = osp.join(args.workdir, f'{kind}_{counts[kind]}_s{args.seed}')
        if not osp.isdir(folder) or len(os.listdir(folder)) != counts[kind]:
            faces = faces or demo_faces()
            shutil.rmtree(folder, ignore_errors=True)
            make_set(kind, folder, counts[kind], faces, args.seed)
        for rep in range(args.repeat):
            for w in args.workers:
                r = run_prepare(folder, osp.join(args.workdir, f'out_{kind}_w{w}'), w, extra)
                r.update(set=kind, repeat=rep)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f'\nfsr-prepare throughput on {os.cpu_count()} cores ({", ".join(map(str, args.workers))} workers); '
          'the load average is that of the whole machine (other jobs included)\n')
    print('| set | photos | faces | workers | wall s | photos/s | steady photos/s | speed-up (steady) | CPU s/photo '
          '(all / steady) | worker RSS / PSS MB | main RSS MB | run PSS MB | load before/after | run-queue wait |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        base = [
            b for b in rows if b['set'] == r['set'] and b['repeat'] == r['repeat'] and b['workers'] == args.workers[0]
        ][0]
        sp = (
            r['steady_photos_per_s'] /
            base['steady_photos_per_s'] if r['steady_photos_per_s'] and base['steady_photos_per_s'] else None)
        mem = f'{r["worker_rss_mb"]} / {r["worker_pss_mb"]}' if r['worker_rss_mb'] else '(no pool)'
        print(f'| {r["set"]} | {r["photos"]} | {r["faces"]} | {r["workers"]} | {r["wall_s"]} | {r["photos_per_s"]} | '
              f'{r["steady_photos_per_s"]} | {"" if sp is None else f"{sp:.2f}x"} | {r["cpu_s_per_photo"]} / '
              f'{r["steady_cpu_s_per_photo"]} | {mem} | {r["main_rss_mb"]} | {r["total_pss_mb"]} | '
              f'{r["load_before"]} / {r["load_after"]} | {r["runqueue_wait_share"]:.0%} |')
    print('\nPer set, the median over the repeats: the steady speed-up measured (wall clock, other jobs included) '
          'and the one the CPU time allows on N free cores (N x CPU s/photo of 1 worker / CPU s/photo of N workers; '
          'the main process needs little CPU):\n')
    print('| set | workers | steady photos/s | measured speed-up | CPU s/photo (steady) | CPU-bound speed-up | '
          'run-queue wait |')
    print('|---|---|---|---|---|---|---|')
    for kind in args.sets:
        base = [r for r in rows if r['set'] == kind and r['workers'] == args.workers[0]]
        for w in args.workers:
            mine = [r for r in rows if r['set'] == kind and r['workers'] == w]
            speed = [
                r['steady_photos_per_s'] / b['steady_photos_per_s'] for r, b in zip(mine, base)
                if r['steady_photos_per_s'] and b['steady_photos_per_s']
            ]
            c1, cw = med([b['steady_cpu_s_per_photo'] for b in base]), med([r['steady_cpu_s_per_photo'] for r in mine])
            bound = w / args.workers[0] * c1 / cw if c1 and cw else None
            print(f'| {kind} | {w} | {med([r["steady_photos_per_s"] for r in mine])} | '
                  f'{"" if med(speed) is None else f"{med(speed):.2f}x"} | {cw} | '
                  f'{"" if bound is None else f"{bound:.2f}x"} | '
                  f'{med([r["runqueue_wait_share"] for r in mine]):.0%} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
