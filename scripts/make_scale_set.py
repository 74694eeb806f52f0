#!/usr/bin/env python
"""Make a large synthetic face set, written the way ``fsr-prepare`` writes a dataset folder (docs/scale.md).

    python scripts/make_scale_set.py N -o OUT [--image-format bmp|png] [--scales 4 8] [--hr-size 128] [--seed 0]
                                     [--workers W] [--quiet]

What it is for: measuring the costs that grow with the number of faces (LMDB size and build time, the loader's
samples/s, evaluation on 1,000 faces, validation during training) without a real dataset. It is NOT a training set: its
N faces are N different images of the few people in the demo photos (8 faces with all demo packages installed).

Sources: the faces of the demo photographs that installed packages ship (``fsr_data.demo.demo_photo_paths``:
scikit-image's astronaut, matplotlib's Grace Hopper, insightface's group photo ``t1.jpg``; no photo is stored in the
repository). Each photo is searched once with MTCNN (detections with score >= 0.95); each face is aligned once, with
``fsr-prepare``'s 5-point CelebA-frame template, into a canonical crop of 2x the HR size (the face at 0.75 of its HR
framing, so that jitter finds real context around it) and its label map is drawn once from dlib's 68 landmarks, as
``fsr-prepare --parsing landmarks`` does (an approximation: skin, brows, eyes, nose, lips, mouth; no hair or ears).

Each of the N faces is a random draw (seeded by ``--seed`` and the face's chunk of 256: the same command gives the same
bytes whatever ``--workers``):

- a source face, mirrored with probability 0.5 (the label map's left/right labels swapped, as FSRFaceDataset's flip);
- a similarity jitter about the HR centre: scale x0.9..x1.1 (log-uniform), rotation -8..8 degrees, shift up to 3% of
  the HR size per axis; the canonical crop is warped to the HR size with it (bicubic, reflected borders) and its label
  map with the same transform (nearest neighbour);
- a colour jitter, per channel (white balance gain 0.88..1.12), exposure (-0.06..0.06), contrast (0.85..1.15) and
  gamma (0.8..1.25, log-uniform), applied as one lookup table per channel.

Then, exactly as ``fsr-prepare``: LR = MATLAB-style bicubic of the HR face (``fsr_data.prepare.make_lr`` with the
default kernel, i.e. ``basicsr.utils.matlab_functions.imresize``) for every ``--scales``; computed for a chunk of faces
at once with the same arithmetic (:func:`matlab_lr_batch`; checked against ``make_lr`` at start, falling back to
``make_lr`` face by face if they ever differ).

Output folder (what ``FSRFaceDataset`` reads)::

    OUT/hr.lmdb  OUT/lr_x<s>.lmdb  OUT/parsing.lmdb   data.mdb + meta_info.txt (BasicSR format) each, written with
                                                      fsr_data.lmdb_io's LmdbWriter and write_meta_info; HR/LR as
                                                      --image-format (default bmp, as fsr-prepare), label maps PNG
    OUT/manifest.jsonl   one line per face, fsr-prepare's fields (key, source, face_index, crop 'synthetic', box,
                         landmarks, score, transform source -> HR crop, hr_size, source_size, shapes, options) plus
                         ``flip`` and ``jitter`` (the draw)
    OUT/scale_set.json   the command's options, the source faces, timings per stage, bytes per LMDB

Keys are ``face0000000`` .. in generation order. The output folder must not exist: the tool writes only into a folder
it creates (in ``OUT/.staging`` until the end), and removes that folder again when it fails or is interrupted; a
folder left by a killed run (``OUT/.staging``) is refused like any existing folder.
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import sys
import time
from collections import deque

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from fsr_data.prepare import check_scales, size_type  # noqa: E402 (light: imports no torch/cv2)
from fsr_utils.safety import UsageError, check_output_path, error_exit, int_range  # noqa: E402

MAX_FACES = 10_000_000  # keys face0000000 .. face9999999
CHUNK = 256  # faces per random draw, LMDB transaction and worker task (fixed: the output does not depend on --workers)
HR_SIDE_RANGE = (16, 1024)
MAX_SEED = 2**32 - 1
MIN_SCORE = 0.95  # the demo's rule for insightface's group photo (its two lower-scored detections are tiny faces)
CANON_FACTOR = 2  # canonical crop: 2x the HR size ...
CANON_ZOOM = 0.75  # ... with the face at 0.75 of its HR framing (context for the jitter)
PARSE_MIN_WIDTH = 256  # the 68 landmarks are fitted on a canonical crop at least this wide
JITTER = dict(
    scale=(0.9, 1.1),
    rotation_deg=8.0,
    shift=0.03,
    gain=(0.88, 1.12),
    exposure=0.06,
    contrast=(0.85, 1.15),
    gamma=(0.8, 1.25),
    flip=0.5)
KEY_FMT = 'face{:07d}'


# ----------------------------------------------------------------------------------------------------------- options
def build_parser():
    p = argparse.ArgumentParser(
        prog='make_scale_set.py',
        description='N distinct synthetic faces from the demo photos, written as an fsr-prepare dataset folder '
        '(docs/scale.md).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('n', type=int_range(1, MAX_FACES), metavar='N', help=f'number of faces, in [1, {MAX_FACES}]')
    p.add_argument('-o', '--output', required=True, help='dataset folder to create (must not exist)')
    p.add_argument(
        '--image-format',
        choices=['bmp', 'png'],
        default='bmp',
        help='encoding of the HR/LR images (label maps are always PNG), as fsr-prepare --image-format')
    p.add_argument(
        '--scales',
        type=int_range(2, 64),
        nargs='+',
        default=[4, 8],
        help='LR scales: integers in [2, 64] that divide both sides of --hr-size')
    p.add_argument(
        '--hr-size',
        type=size_type('--hr-size', *HR_SIDE_RANGE),
        default=(128, 128),
        help=f'HR size: N or HxW, each side in [{HR_SIDE_RANGE[0]}, {HR_SIDE_RANGE[1]}]')
    p.add_argument('--seed', type=int_range(0, MAX_SEED), default=0, help=f'random seed, in [0, {MAX_SEED}]')
    p.add_argument(
        '--workers',
        type=int_range(1, 64),
        default=min(os.cpu_count() or 1, 64),
        help='processes that synthesise and encode faces (1: all in this process); the output is the same for any '
        'number')
    p.add_argument('--quiet', action='store_true', help='no progress lines')
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    check_scales(p, args.hr_size, args.scales)
    return args


def check_output(out):
    """Refuse an existing or unwritable output before any work (UsageError naming ``-o``)."""
    check_output_path(out, '-o')
    if osp.lexists(out):
        raise UsageError(f'-o {out} exists: make_scale_set.py writes only into a folder it creates (a folder left by '
                         'an interrupted run holds .staging). Choose a new path, or delete that folder yourself.')


# ----------------------------------------------------------------------------------------------------------- sources
def load_sources(hr_hw, quiet=False):
    """:func:`_load_sources` with one torch and one OpenCV thread, whatever the caller's settings: MTCNN's landmarks
    change in their last bits with the thread count, and every face of the set is drawn from these crops."""
    import cv2
    import torch
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        return _load_sources(hr_hw, quiet)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def _load_sources(hr_hw, quiet=False):
    """The source faces: detect each demo photo once, align each face into its canonical crop, draw its label map.

    Returns:
        list[dict]: per face ``name``, ``source`` (photo file name), ``face_index``, ``box``, ``landmarks`` (5, in the
        photo), ``score``, ``source_size``, ``canon`` (BGR uint8, CANON_FACTOR x HR size), ``labels`` (uint8 label map
        of ``canon``), ``to_canon`` (2x3 photo -> canonical crop), ``upscale`` (its scale: > 1 means the canonical
        crop has more pixels than the face in the photo).
    """
    import cv2
    import numpy as np

    from fsr_data.demo import demo_photo_paths
    from fsr_data.face_align import FaceDetector, align_face, template_5pts, transform_scale
    from fsr_data.parsing import LandmarkParser, labels_from_68
    photos = demo_photo_paths()
    if not photos:
        raise RuntimeError('no demo photograph found: install scikit-image and matplotlib (and optionally '
                           'pip install --no-deps insightface==2.1 for 6 more faces)')
    h, w = hr_hw
    ch, cw = CANON_FACTOR * h, CANON_FACTOR * w
    f = max(1.0, PARSE_MIN_WIDTH / cw)  # the landmarks are fitted on a crop at least PARSE_MIN_WIDTH wide
    ph, pw = round(ch * f), round(cw * f)
    detector, parser = FaceDetector('mtcnn'), LandmarkParser()
    sources = []
    for name in sorted(photos):
        img = cv2.imread(photos[name], cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f'cannot read the demo photo {photos[name]}: reinstall the package that ships it')
        faces = [d for d in detector.detect(np.ascontiguousarray(img[..., ::-1])) if d['score'] >= MIN_SCORE]
        for i, det in enumerate(sorted(faces, key=lambda d: float(d['box'][0]))):
            canon, to_canon = align_face(img, det['landmarks'], (ch, cw), template=template_5pts(ch, cw, CANON_ZOOM))
            big, _ = align_face(img, det['landmarks'], (ph, pw), template=template_5pts(ph, pw, CANON_ZOOM))
            pts68 = parser.landmarks68(np.ascontiguousarray(big[..., ::-1]), template_5pts(ph, pw, CANON_ZOOM)) / f
            sources.append(
                dict(
                    name=f'{name}_f{i}',
                    source=osp.basename(photos[name]),
                    face_index=i,
                    box=[round(float(v), 2) for v in det['box']],
                    landmarks=np.round(np.asarray(det['landmarks'], float), 2).tolist(),
                    score=round(float(det['score']), 5),
                    source_size=[img.shape[0], img.shape[1]],
                    canon=canon,
                    labels=labels_from_68((ch, cw), pts68),
                    to_canon=to_canon,
                    upscale=round(transform_scale(to_canon), 3)))
    if not sources:
        raise RuntimeError(f'no face with score >= {MIN_SCORE} in the demo photos {sorted(photos.values())}')
    if not quiet:
        print(f'{len(sources)} source faces: ' + ', '.join(f'{s["name"]} (x{s["upscale"]:.2f})' for s in sources))
    return sources


# ------------------------------------------------------------------------------------------------------------ LR faces
def matlab_lr_batch(hr, scale):
    """LR faces of a batch of HR faces, each equal to ``fsr_data.prepare.make_lr(face, scale)`` (MATLAB bicubic).

    BasicSR's ``imresize`` resizes one image with one matrix-vector product per output row and channel (height pass),
    then per output column and channel (width pass). Here the same products run over a whole batch at once: the height
    pass on the faces and channels side by side (columns are independent in it), the width pass on them stacked
    (rows are independent in it), each face padded at its own borders as ``imresize`` pads it. Every output value is
    the same dot product of the same float32 numbers as in ``imresize``: the loop count is that of one image, not of B.

    Args:
        hr (ndarray): (B, H, W, C) uint8.
        scale (int): H and W must be multiples of it.

    Returns:
        ndarray: (B, H // scale, W // scale, C) uint8.
    """
    import numpy as np
    import torch
    from basicsr.utils.matlab_functions import calculate_weights_indices
    b, h, w, c = hr.shape
    out_h, out_w = math.ceil(h / scale), math.ceil(w / scale)
    wh, ih, hs, he = calculate_weights_indices(h, out_h, 1 / scale, 'cubic', 4, True)
    ww, iw, ws, we = calculate_weights_indices(w, out_w, 1 / scale, 'cubic', 4, True)
    with torch.no_grad():
        xa = torch.empty(h + hs + he, b, w, c)
        xa[hs:hs + h].copy_(torch.from_numpy(np.ascontiguousarray(hr)).permute(1, 0, 2, 3))
        xa[hs:hs + h].div_(255.)  # == hr.astype(np.float32) / 255. (make_lr): IEEE division, correctly rounded
        xa[:hs] = xa[hs:2 * hs].flip(0)  # imresize's symmetric padding
        xa[hs + h:] = xa[h + hs - he:h + hs].flip(0)
        xa = xa.view(h + hs + he, b * w * c)
        o1 = torch.empty(out_h, b * w * c)
        kw = wh.size(1)
        for i in range(out_h):
            idx = int(ih[i][0])
            o1[i] = xa[idx:idx + kw].transpose(0, 1).mv(wh[i])
        o1a = torch.empty(b, out_h, c, w + ws + we)
        o1a[..., ws:ws + w].copy_(o1.view(out_h, b, w, c).permute(1, 0, 3, 2))
        o1a[..., :ws] = o1a[..., ws:2 * ws].flip(3)
        o1a[..., ws + w:] = o1a[..., w + ws - we:w + ws].flip(3)
        o1a = o1a.view(b * out_h * c, w + ws + we)
        o2 = torch.empty(out_w, b * out_h * c)
        kw = ww.size(1)
        for i in range(out_w):
            idx = int(iw[i][0])
            o2[i] = o1a[:, idx:idx + kw].mv(ww[i])
        o2 = o2.view(out_w, b, out_h, c).permute(1, 2, 0, 3).numpy()
    return np.clip(np.round(o2 * 255), 0, 255).astype(np.uint8)  # make_lr's rounding


def batch_lr_is_exact(hr_hw, scales, trials=3):
    """True when :func:`matlab_lr_batch` gives ``make_lr``'s bytes on ``trials`` random smooth faces (this machine's
    BLAS could, in principle, sum a dot product in another order for another matrix size)."""
    import cv2
    import numpy as np

    from fsr_data.prepare import make_lr
    rng = np.random.default_rng(12345)
    h, w = hr_hw
    faces = np.stack([
        cv2.resize((rng.random((8, 8, 3)) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(trials)
    ])
    faces[0, :2] = 255  # saturated rows: values at the clipping bounds
    return all(
        np.array_equal(matlab_lr_batch(faces, s)[i], make_lr(faces[i], s)) for s in scales for i in range(trials))


# ------------------------------------------------------------------------------------------------------- one chunk
_STATE = {}


def init_worker(sources, opts):
    """Set the state of a worker (or of this process with ``--workers 1``)."""
    import cv2
    import torch
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from fsr_data.face_dataset import swap_left_right
    flipped = []
    for s in sources:
        cw = s['canon'].shape[1]
        mirror = [[-1.0, 0.0, cw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        flipped.append((s['canon'][:, ::-1].copy(), swap_left_right(s['labels'][:, ::-1]).copy(), mirror))
    _STATE.update(sources=sources, flipped=flipped, opts=opts)


def draw_jitter(rng, n, n_sources):
    """The random draws of ``n`` faces (dict of arrays; module docstring for the ranges)."""
    import numpy as np
    j = JITTER
    return dict(
        source=rng.integers(0, n_sources, n),
        flip=rng.random(n) < j['flip'],
        scale=np.exp(rng.uniform(math.log(j['scale'][0]), math.log(j['scale'][1]), n)),
        rotation=rng.uniform(-j['rotation_deg'], j['rotation_deg'], n),
        shift=rng.uniform(-j['shift'], j['shift'], (n, 2)),
        gain=rng.uniform(j['gain'][0], j['gain'][1], (n, 3)),
        exposure=rng.uniform(-j['exposure'], j['exposure'], n),
        contrast=rng.uniform(j['contrast'][0], j['contrast'][1], n),
        gamma=np.exp(rng.uniform(math.log(j['gamma'][0]), math.log(j['gamma'][1]), n)))


def colour_lut(gain, exposure, contrast, gamma):
    """(1, 256, 3) uint8 lookup table: per channel, gamma, then contrast about mid-grey and exposure, then gain."""
    import numpy as np
    x = (np.arange(256, dtype=np.float64) / 255.)**gamma
    y = ((x - 0.5) * contrast + 0.5 + exposure)[:, None] * np.asarray(gain, np.float64)[None]
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)[None]


def synth_chunk(chunk):
    """Faces ``chunk * CHUNK`` .. of the set: ({lmdb name: [encoded bytes]}, [manifest entry], {stage: (wall, CPU)
    seconds})."""
    import cv2
    import numpy as np

    from fsr_data.lmdb_io import encode_image
    from fsr_data.prepare import make_lr
    sources, flipped, o = _STATE['sources'], _STATE['flipped'], _STATE['opts']
    h, w = o['hr_size']
    first = chunk * CHUNK
    n = min(CHUNK, o['n'] - first)
    rng = np.random.default_rng([o['seed'], chunk])
    d = draw_jitter(rng, n, len(sources))
    clock = [(time.perf_counter(), time.process_time())]
    hr = np.empty((n, h, w, 3), np.uint8)
    labels = np.empty((n, h, w), np.uint8)
    entries = []
    for i in range(n):
        s = sources[d['source'][i]]
        canon, lab = s['canon'], s['labels']
        to_canon = np.vstack([s['to_canon'], [0, 0, 1]])
        if d['flip'][i]:
            canon, lab, mirror = flipped[d['source'][i]]
            to_canon = np.asarray(mirror) @ to_canon
        ch, cw = canon.shape[:2]
        # canonical -> HR: the template is scaled by w / cw / CANON_ZOOM about the centres, then jittered
        k = d['scale'][i] * (w / cw) / CANON_ZOOM
        a = math.radians(d['rotation'][i])
        A = k * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        t = np.array([w / 2, h / 2]) + d['shift'][i] * [w, h] - A @ [cw / 2, ch / 2]
        M = np.hstack([A, t[:, None]])
        face = cv2.warpAffine(canon, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        lut = colour_lut(d['gain'][i], d['exposure'][i], d['contrast'][i], d['gamma'][i])
        hr[i] = cv2.LUT(face, lut)
        labels[i] = cv2.warpAffine(lab, M, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        total = np.vstack([M, [0, 0, 1]]) @ to_canon
        entries.append(
            dict(
                key=KEY_FMT.format(first + i),
                source=s['source'],
                face_index=s['face_index'],
                crop='synthetic',
                box=s['box'],
                landmarks=s['landmarks'],
                score=s['score'],
                transform=np.round(total[:2], 6).tolist(),
                hr_size=[h, w],
                source_size=s['source_size'],
                flip=bool(d['flip'][i]),
                jitter=dict(
                    scale=round(float(d['scale'][i]), 5),
                    rotation=round(float(d['rotation'][i]), 4),
                    shift=[round(float(v), 5) for v in d['shift'][i]],
                    gain=[round(float(v), 5) for v in d['gain'][i]],
                    exposure=round(float(d['exposure'][i]), 5),
                    contrast=round(float(d['contrast'][i]), 5),
                    gamma=round(float(d['gamma'][i]), 5))))
    clock.append((time.perf_counter(), time.process_time()))
    lrs = {}
    for s in o['scales']:
        lrs[s] = matlab_lr_batch(hr, s) if o['batch_lr'] else np.stack([make_lr(x, s) for x in hr])
    clock.append((time.perf_counter(), time.process_time()))
    fmt, level = o['image_format'], 1
    out = {'hr': [encode_image(x, fmt, level) for x in hr]}
    for s in o['scales']:
        out[f'lr_x{s}'] = [encode_image(x, fmt, level) for x in lrs[s]]
    out['parsing'] = [encode_image(x, 'png', level) for x in labels]
    clock.append((time.perf_counter(), time.process_time()))
    shapes = {'hr': [h, w, 3], 'parsing': [h, w, 1], **{f'lr_x{s}': [h // s, w // s, 3] for s in o['scales']}}
    for e in entries:
        e['shapes'] = shapes
    times = {}
    for stage, (a, b) in zip(('synthesis', 'lr', 'encode'), zip(clock, clock[1:])):
        times[stage] = (b[0] - a[0], b[1] - a[1])  # (wall, CPU) seconds
    return out, entries, times


# ------------------------------------------------------------------------------------------------------------- writing
def _writer_class():
    from fsr_data.lmdb_io import LmdbWriter, check_key

    class EncodedWriter(LmdbWriter):
        """``LmdbWriter`` that takes bytes encoded elsewhere (by the worker processes), with the same key check.

        (``LmdbWriter.put_image`` encodes in the writing process, which would make the one writer the bottleneck.)
        """

        def put_encoded(self, key, buf):
            self.pending.append((check_key(key).encode('ascii'), buf))

    return EncodedWriter


def _chunks(n_chunks, workers, sources, opts):
    """Yield the results of :func:`synth_chunk` in order, with at most 2 chunks per worker in flight."""
    if workers == 1 or n_chunks == 1:
        init_worker(sources, opts)
        for c in range(n_chunks):
            yield synth_chunk(c)
        return
    import multiprocessing as mp
    ctx = mp.get_context('spawn')  # this process ran torch (MTCNN): no fork of its thread pools
    with ctx.Pool(min(workers, n_chunks), initializer=init_worker, initargs=(sources, opts)) as pool:
        pending, nxt = deque(), 0
        while nxt < n_chunks or pending:
            while nxt < n_chunks and len(pending) < 2 * workers:
                pending.append(pool.apply_async(synth_chunk, (nxt, )))
                nxt += 1
            yield pending.popleft().get()


def make_scale_set(argv=None):
    """Run the tool; returns the summary dict written to ``OUT/scale_set.json``."""
    args = parse_args(argv)
    out = args.output
    check_output(out)
    t_start = time.perf_counter()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    try:
        os.mkdir(out)  # atomic: a second run on the same path fails here
    except FileExistsError:
        raise UsageError(f'-o {out} exists (made by another run meanwhile?): choose a new path.') from None
    try:
        return _make(args, t_start)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # this run created the folder: nothing else is in it
        raise


def _make(args, t_start):
    import numpy as np
    out, stage = args.output, osp.join(args.output, '.staging')
    os.mkdir(stage)
    hr_hw = tuple(args.hr_size)
    sources = load_sources(hr_hw, args.quiet)
    batch_lr = batch_lr_is_exact(hr_hw, args.scales)
    if not batch_lr:
        print('warning: the batched MATLAB bicubic differs from make_lr on this machine: using make_lr face by face '
              '(exact, slower)')
    t_setup, cpu_setup = time.perf_counter() - t_start, cpu_seconds()
    opts = dict(
        n=args.n,
        seed=args.seed,
        hr_size=list(hr_hw),
        scales=list(args.scales),
        image_format=args.image_format,
        batch_lr=batch_lr)
    names = ['hr'] + [f'lr_x{s}' for s in args.scales] + ['parsing']
    fmts = {n: 'png' if n == 'parsing' else args.image_format for n in names}
    # the map grows by doubling when full; start near the expected size (BMP HR face: 54 B header + pixels)
    px = hr_hw[0] * hr_hw[1] * 3 * (1 + sum(1 / s**2 for s in args.scales))
    map_size = int(max(1 << 26, min(args.n * (px + 8192) * 1.2, 1 << 40)))
    Writer = _writer_class()
    writers = {n: Writer(osp.join(stage, f'{n}.lmdb'), map_size=map_size, fmt=fmts[n]) for n in names}
    manifest = open(osp.join(stage, 'manifest.partial.jsonl'), 'w')
    manifest_opts = dict(
        hr_size=list(hr_hw),
        scales=list(args.scales),
        lr_kernel='matlab',
        parsing='landmarks-warped',
        crop='synthetic',
        image_format=args.image_format,
        compress_level=1,
        seed=args.seed,
        n=args.n,
        jitter=JITTER)
    stages = {k: [0.0, 0.0] for k in ('synthesis', 'lr', 'encode', 'write')}  # [wall, CPU] seconds, summed
    n_chunks = math.ceil(args.n / CHUNK)
    done, last_print, committed = 0, time.perf_counter(), False
    t_gen = time.perf_counter()
    try:
        for bufs, entries, times in _chunks(n_chunks, args.workers, sources, opts):
            tw = (time.perf_counter(), time.process_time())
            for name in names:
                for e, buf in zip(entries, bufs[name]):
                    writers[name].put_encoded(e['key'], buf)
                writers[name].commit()
            manifest.write(''.join(json.dumps(dict(e, options=manifest_opts)) + '\n' for e in entries))
            times['write'] = (time.perf_counter() - tw[0], time.process_time() - tw[1])
            for k, (wall, cpu) in times.items():
                stages[k][0] += wall
                stages[k][1] += cpu
            done += len(entries)
            if not args.quiet and (time.perf_counter() - last_print > 10 or done == args.n):
                el = time.perf_counter() - t_gen
                print(f'{done}/{args.n} faces, {el:.0f} s, {done / el:.0f} faces/s', flush=True)
                last_print = time.perf_counter()
        committed = True
    finally:
        manifest.close()
        for w in writers.values():
            w.close(commit=committed)
    t_gen = time.perf_counter() - t_gen
    keys = [KEY_FMT.format(i) for i in range(args.n)]
    shapes = {'hr': (hr_hw[0], hr_hw[1], 3), 'parsing': (hr_hw[0], hr_hw[1], 1)}
    shapes.update({f'lr_x{s}': (hr_hw[0] // s, hr_hw[1] // s, 3) for s in args.scales})
    from fsr_data.lmdb_io import write_meta_info
    sizes = {}
    for name in names:
        path = osp.join(stage, f'{name}.lmdb')
        write_meta_info(path, [(k, shapes[name]) for k in keys], 1, fmts[name])
        # allocated bytes (LMDB's data.mdb is a sparse file up to its map size)
        sizes[name] = os.stat(osp.join(path, 'data.mdb')).st_blocks * 512
        os.replace(path, osp.join(out, f'{name}.lmdb'))
    os.replace(osp.join(stage, 'manifest.partial.jsonl'), osp.join(out, 'manifest.jsonl'))
    os.rmdir(stage)
    total = time.perf_counter() - t_start
    summary = dict(
        made_by='scripts/make_scale_set.py',
        command='python scripts/make_scale_set.py ' + ' '.join(argv_for_summary(args)),
        faces=args.n,
        options=dict(manifest_opts, workers=args.workers),
        sources=[{
            k: s[k]
            for k in ('name', 'source', 'face_index', 'box', 'score', 'upscale')
        } for s in sources],
        batch_lr_exact=batch_lr,
        seconds=dict(
            total=round(total, 2),
            setup=round(t_setup, 2),
            generate_and_write=round(t_gen, 2),
            cpu_total=round(cpu_seconds(), 2),
            cpu_setup=round(cpu_setup, 2),
            stages_wall_sum={
                k: round(v[0], 2)
                for k, v in stages.items()
            },
            stages_cpu_sum={
                k: round(v[1], 2)
                for k, v in stages.items()
            }),
        bytes=dict(sizes, manifest=os.path.getsize(osp.join(out, 'manifest.jsonl'))),
        load_average=[round(v, 2) for v in os.getloadavg()],
        cpus=os.cpu_count())
    summary['bytes']['total'] = int(np.sum(list(summary['bytes'].values())))
    tmp = osp.join(out, 'scale_set.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, osp.join(out, 'scale_set.json'))
    if not args.quiet:
        mb = summary['bytes']['total'] / 1e6
        print(f'make_scale_set: {args.n} faces in {out} ({", ".join(n + ".lmdb" for n in names)}), {mb:.1f} MB, '
              f'{total:.1f} s ({t_setup:.1f} s setup, {t_gen:.1f} s generating and writing)')
    return summary


def cpu_seconds():
    """CPU seconds (user + system) of this process and of its finished child processes (the workers)."""
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def argv_for_summary(args):
    return [
        str(args.n), '-o', args.output, '--image-format', args.image_format, '--scales', *map(str, args.scales),
        '--hr-size', f'{args.hr_size[0]}x{args.hr_size[1]}', '--seed',
        str(args.seed), '--workers',
        str(args.workers)
    ]


def main(argv=None):
    """Exit status 0 on success, 2 with one ``error:`` line for a bad option or output, 1 for a failure during the
    work (the output folder is then removed), 130 when interrupted (also removed)."""
    try:
        make_scale_set(argv)
    except UsageError as e:
        return error_exit(e, 2)
    except KeyboardInterrupt:
        print('\nmake_scale_set: interrupted; the output folder was removed.', file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as e:
        return error_exit(f'{type(e).__name__}: {e} (the output folder was removed)', 1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
