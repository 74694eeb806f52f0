"""Before/after picture of ``fsr-infer`` for the README, with the measured gain over bicubic on held-out real faces.

Usage (after the demo training has written a checkpoint)::

    python scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \\
        --weights experiments/TANet_demo_x4/models/net_g_latest.pth [-o docs/infer_example.png]
    python scripts/make_infer_example.py --linear        # the tests' linear least-squares network (no face prior)
    # a small JPEG-compressed photo: the bicubic-trained and the degradation-trained network side by side
    python scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \\
        --weights experiments/TANet_demo_x4/models/net_g_latest.pth --jpeg 60 \\
        --vs options/demo/train_tanet_real_demo_x4.yml experiments/TANet_real_demo_x4/models/net_g_latest.pth \\
        --labels TANet TANet-real -o docs/infer_example_jpeg.png

Faces (nothing is stored in the repository; photos come from installed packages): the demo's held-out faces, i.e.
matplotlib's Grace Hopper and the two rightmost faces of insightface's group photo ``t1.jpg`` (if installed);
scikit-image's astronaut and the other ``t1.jpg`` faces trained the demo networks and are used only with ``--linear``
(which trained on no face), or add your own with ``--photo``. Each face is cut out with its surroundings, resized so
that it fills the network's HR crop (the reference), shrunk x``scale`` with MATLAB bicubic (the training degradation),
restored by :class:`fsr_tools.restorer.FaceRestorer` (what ``fsr-infer --upscale scale`` runs: detection on the small
photo, LR crop cut without resampling or resampled once, soft paste-back) and compared with bicubic enlargement on the
face box (Y-PSNR). The picture has one row per face: the small photo (pixels enlarged), bicubic x``scale``,
``fsr-infer``, the reference. The figures go to stdout (README-ready) and ``--json``.

Real low-quality photos: ``--jpeg Q`` saves the small photo as a JPEG of quality ``Q`` (OpenCV) after the shrink, as
a camera or a web page would; ``--degradation LEVEL`` makes the small photo with ``fsr_data.degradations`` instead
(blur, down-sampling, noise, JPEG of the whole photo, level mild|medium|severe, seed 0 per face). ``--vs OPT WEIGHTS``
adds a second network (e.g. the degradation-trained one) as one more column, restored from the same small photo.
"""
import argparse
import cv2
import json
import numpy as np
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MAX_BYTES = 300 * 1024


def held_out_faces(linear, photos, detector):
    """[(name, BGR photo, [face])] of the faces to measure (module docstring)."""
    from fsr_data.demo import demo_photo_paths
    paths = demo_photo_paths()
    out = []
    for name in ('astronaut', 'grace_hopper', 't1'):
        if name not in paths or (name == 'astronaut' and not linear):
            continue
        img = cv2.imread(paths[name])
        faces = [f for f in detector.detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]
        faces = sorted(faces, key=lambda f: f['box'][0])  # left to right, as fsr_data.demo splits t1.jpg
        if name == 't1':
            faces = [(i, f) for i, f in enumerate(faces) if linear or i >= len(faces) - 2]
        else:
            faces = list(enumerate(faces))
        out += [(f'{name}_face{i}', img, [f]) for i, f in faces]
    for path in photos or []:
        img = cv2.imread(path)
        if img is None:
            sys.exit(f'error: cannot read {path} (--photo)')
        faces = [f for f in detector.detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]
        out += [(f'{os.path.splitext(os.path.basename(path))[0]}_face{i}', img, [f]) for i, f in enumerate(faces)]
    return out


def label(img, text):
    out = img.copy()
    h = max(12, out.shape[0] // 12)
    cv2.rectangle(out, (0, 0), (out.shape[1], h + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (3, h), cv2.FONT_HERSHEY_SIMPLEX, h / 32., (255, 255, 255), 1, cv2.LINE_AA)
    return out


def fit_height(img, h):
    return cv2.resize(img, (max(1, round(img.shape[1] * h / img.shape[0])), h), interpolation=cv2.INTER_AREA)


def save_small_png(img, path, max_bytes=MAX_BYTES):
    """Write a PNG under ``max_bytes``: full colour if it fits, else an adaptive 256-colour palette, else smaller."""
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
    rgb = Image.fromarray(np.ascontiguousarray(img[..., ::-1]))
    while True:
        for candidate in (rgb, rgb.quantize(256, method=Image.Quantize.MEDIANCUT)):
            candidate.save(path, optimize=True)
            if os.path.getsize(path) <= max_bytes:
                return os.path.getsize(path)
        rgb = rgb.resize((round(rgb.width * 0.85), round(rgb.height * 0.85)), Image.LANCZOS)


def short_label(weights, fallback):
    """The experiment's name of ``experiments/<name>/models/net_g_*.pth``, else ``fallback``."""
    parts = os.path.normpath(weights or '').split(os.sep)
    return parts[-3] if len(parts) >= 3 and parts[-2] == 'models' else fallback


def small_photo(ref, scale, jpeg_quality=None, level=None, name=''):
    """The small photo made from the reference: MATLAB-bicubic x1/scale (+ a JPEG of ``jpeg_quality``), or the
    ``level`` of ``fsr_data.degradations`` seeded by the face's ``name``."""
    from fsr_tools.infer_quality import degrade
    if level:
        from fsr_data.degradations import degradation_options
        from fsr_data.degradations import degrade as real_degrade
        from fsr_data.degradations import face_seed
        return real_degrade(ref, scale, degradation_options(level), face_seed(name))
    small = degrade(ref, scale)
    if jpeg_quality is not None:
        ok, buf = cv2.imencode('.jpg', small, [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
        small = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return small


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--weights', help='checkpoint (experiments/<name>/models/net_g_*.pth)')
    p.add_argument('--opt', help='options file of the network (as for fsr-infer)')
    p.add_argument('--net', help='or: registered network name with its paper configuration')
    p.add_argument('--scale', type=int, help='scale for --net')
    p.add_argument('--linear', action='store_true', help="the tests' linear least-squares x4 network (no face prior)")
    p.add_argument('--photo', nargs='+', help='more photos (their faces must not be training faces)')
    p.add_argument('--hr-size', type=int, nargs=2, help='HR face size h w (default: from the options / 128 128)')
    p.add_argument('--device', default='auto')
    p.add_argument('-o', '--output', default='docs/infer_example.png')
    p.add_argument('--json', help='also write the per-face figures here')
    p.add_argument('--row-height', type=int, default=128, help='height of the rows in pixels (128)')
    p.add_argument('--jpeg', type=int, metavar='Q', help='save the small photo as a JPEG of quality Q (1-100)')
    p.add_argument(
        '--degradation',
        choices=['mild', 'medium', 'severe'],
        help='make the small photo with this level '
        'of fsr_data.degradations (blur, noise, JPEG) instead of the bicubic shrink')
    p.add_argument('--vs', nargs=2, metavar=('OPT', 'WEIGHTS'), help='a second network shown beside the first')
    p.add_argument('--labels', nargs='+', help='column names of the networks (default: their experiment names)')
    args = p.parse_args(argv)
    if args.jpeg is not None and not 1 <= args.jpeg <= 100:
        sys.exit(f'error: --jpeg {args.jpeg}: a JPEG quality is 1-100.')
    if args.jpeg is not None and args.degradation:
        sys.exit('error: --jpeg and --degradation both make the small photo: pass one.')

    if args.labels and len(args.labels) != 1 + bool(args.vs):
        sys.exit(f'error: --labels names {len(args.labels)} networks; there are {1 + bool(args.vs)}.')

    from fsr_tools.infer_io import InferError
    from fsr_tools.infer_quality import face_gains, face_test_photos, fit_linear_sr
    from fsr_tools.restorer import FaceRestorer
    try:
        if args.linear:
            restorer = FaceRestorer(fit_linear_sr(), 4, tuple(args.hr_size or (128, 128)), min_face=12)
            title = 'linear least-squares x4 (no face prior)'
            args.weights = None
        else:
            if not args.weights and not args.opt:
                sys.exit('error: pass --opt and --weights (the network to show), or --linear.')
            restorer = FaceRestorer.load(
                opt=args.opt,
                weights=args.weights,
                net=args.net,
                scale=args.scale,
                device=args.device,
                hr_size=args.hr_size,
                min_face=12)
            title = f'{restorer.info["network"]} x{restorer.scale}'
        restorers = [(short_label(args.weights, title), restorer)]
        if args.vs:
            other = FaceRestorer.load(
                opt=args.vs[0], weights=args.vs[1], device=args.device, hr_size=args.hr_size, min_face=12)
            if other.scale != restorer.scale:
                sys.exit(f'error: --vs network is x{other.scale}, the first is x{restorer.scale}: use one scale.')
            restorers.append((short_label(args.vs[1], f'{other.info["network"]} x{other.scale}'), other))
    except InferError as e:
        sys.exit(f'error: {e}')
    if args.labels:
        restorers = [(lab, r) for lab, (_, r) in zip(args.labels, restorers)]
    s = restorer.scale
    rows, figures = [], []
    for name, img, faces in held_out_faces(args.linear, args.photo, restorer.get_detector()):
        (t, ) = face_test_photos(img, faces, restorer.hr_size, s, restorer.zoom)
        ref = t['ref']
        small = small_photo(ref, s, args.jpeg, args.degradation, name)
        plain = restorer.enlarge(small)
        found = restorer.get_detector().detect(np.ascontiguousarray(small[..., ::-1]))
        if not found:
            print(f'{name}: no face detected on the small photo ({small.shape[1]}x{small.shape[0]}): left out')
            continue
        outs, row_figures = [], []
        for label_text, rst in restorers:
            out, recs = rst.restore(small, faces=found)  # the same detections for every network
            face = max(recs, key=lambda f: f['score'])
            (g, ) = face_gains(out, plain, ref, [face['box']], s)
            outs.append((label_text, out, g))
            row_figures.append(
                dict(
                    face=name, network=label_text, plan=face['plan'], lr_scale=face['lr_scale'], roll=face['roll'],
                    **g))
        figures += row_figures
        g = outs[0][2]
        x0, y0, x1, y1 = g['box']
        pad = (x1 - x0) // 4
        xa, ya, xb, yb = max(0, x0 - pad), max(0, y0 - pad), min(ref.shape[1], x1 + pad), min(ref.shape[0], y1 + pad)
        nearest = cv2.resize(small, (small.shape[1] * s, small.shape[0] * s), interpolation=cv2.INTER_NEAREST)
        tiles = [('input', nearest), (f'bicubic {g["psnr_bicubic"]:.2f}', plain)]
        tiles += [((f'{lab} ' if len(outs) > 1 else 'fsr-infer ') + f'{gg["psnr"]:.2f}', out) for lab, out, gg in outs]
        tiles.append(('reference', ref))
        row = []
        for text, tile in tiles:
            row += [
                label(fit_height(tile[ya:yb, xa:xb], args.row_height), text),
                np.full((args.row_height, 4, 3), 255, np.uint8)
            ]
        rows.append(np.concatenate(row[:-1], 1))
    if not rows:
        sys.exit('error: no held-out face found (install matplotlib; optionally insightface) - pass --photo.')
    width = max(r.shape[1] for r in rows)
    picture = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    size = save_small_png(picture, args.output)
    small_desc = (f'JPEG quality {args.jpeg}' if args.jpeg is not None else
                  f'degradation {args.degradation}' if args.degradation else 'bicubic shrink')
    print(f'{args.output}: {picture.shape[1]}x{picture.shape[0]}, {size // 1024} KB; {title}; small photo: '
          f'{small_desc}')
    print('| face | network | plan | LR scale | roll | bicubic Y-PSNR | fsr-infer Y-PSNR | gain |\n'
          '|---|---|---|---|---|---|---|---|')
    for f in figures:
        print(f'| {f["face"]} | {f["network"]} | {f["plan"]} | {f["lr_scale"]:.2f} | {f["roll"]:.1f} | '
              f'{f["psnr_bicubic"]:.2f} | {f["psnr"]:.2f} | {f["gain"]:+.2f} |')
    for lab, _ in restorers:
        gains = np.array([f['gain'] for f in figures if f['network'] == lab])
        print(f'{lab}: mean gain {gains.mean():+.3f} dB, better than bicubic on {(gains > 0).sum()}/{len(gains)} '
              'faces')
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(network=title, small_photo=small_desc, faces=figures), fh, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
