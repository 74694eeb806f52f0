"""Before/after picture of ``fsr-infer`` for the README, with the measured gain over bicubic on held-out real faces.

Usage (after the demo training has written a checkpoint)::

    python scripts/make_infer_example.py --opt options/demo/train_tanet_demo_x4.yml \\
        --weights experiments/TANet_demo_x4/models/net_g_latest.pth [-o docs/infer_example.png]
    python scripts/make_infer_example.py --linear        # the tests' linear least-squares network (no face prior)

Faces (nothing is stored in the repository; photos come from installed packages): the demo's held-out faces, i.e.
matplotlib's Grace Hopper and the two rightmost faces of insightface's group photo ``t1.jpg`` (if installed);
scikit-image's astronaut and the other ``t1.jpg`` faces trained the demo networks and are used only with ``--linear``
(which trained on no face), or add your own with ``--photo``. Each face is cut out with its surroundings, resized so
that it fills the network's HR crop (the reference), shrunk x``scale`` with MATLAB bicubic (the training degradation),
restored by :class:`fsr_tools.restorer.FaceRestorer` (what ``fsr-infer --upscale scale`` runs: detection on the small
photo, LR crop cut without resampling or resampled once, soft paste-back) and compared with bicubic enlargement on the
face box (Y-PSNR). The picture has one row per face: the small photo (pixels enlarged), bicubic x``scale``,
``fsr-infer``, the reference. The figures go to stdout (README-ready) and ``--json``.
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
    args = p.parse_args(argv)

    from fsr_tools.infer_io import InferError
    from fsr_tools.infer_quality import degrade, face_gains, face_test_photos, fit_linear_sr
    from fsr_tools.restorer import FaceRestorer
    try:
        if args.linear:
            restorer = FaceRestorer(fit_linear_sr(), 4, tuple(args.hr_size or (128, 128)), min_face=12)
            title = 'linear least-squares x4 (no face prior)'
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
    except InferError as e:
        sys.exit(f'error: {e}')
    s = restorer.scale
    rows, figures = [], []
    for name, img, faces in held_out_faces(args.linear, args.photo, restorer.get_detector()):
        (t, ) = face_test_photos(img, faces, restorer.hr_size, s, restorer.zoom)
        ref = t['ref']
        small = degrade(ref, s)
        out, recs = restorer.restore(small)
        face = max(recs, key=lambda f: f['score'])
        plain = restorer.enlarge(small)
        (g, ) = face_gains(out, plain, ref, [face['box']], s)
        figures.append(dict(face=name, plan=face['plan'], lr_scale=face['lr_scale'], roll=face['roll'], **g))
        x0, y0, x1, y1 = g['box']
        pad = (x1 - x0) // 4
        xa, ya, xb, yb = max(0, x0 - pad), max(0, y0 - pad), min(ref.shape[1], x1 + pad), min(ref.shape[0], y1 + pad)
        nearest = cv2.resize(small, (small.shape[1] * s, small.shape[0] * s), interpolation=cv2.INTER_NEAREST)
        tiles = [('input', nearest), (f'bicubic {g["psnr_bicubic"]:.2f}', plain), (f'fsr-infer {g["psnr"]:.2f}', out),
                 ('reference', ref)]
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
    gains = np.array([f['gain'] for f in figures])
    print(f'{args.output}: {picture.shape[1]}x{picture.shape[0]}, {size // 1024} KB; {title}')
    print('| face | plan | LR scale | roll | bicubic Y-PSNR | fsr-infer Y-PSNR | gain |\n|---|---|---|---|---|---|---|')
    for f in figures:
        print(f'| {f["face"]} | {f["plan"]} | {f["lr_scale"]:.2f} | {f["roll"]:.1f} | {f["psnr_bicubic"]:.2f} | '
              f'{f["psnr"]:.2f} | {f["gain"]:+.2f} |')
    print(f'mean gain {gains.mean():+.3f} dB, better than bicubic on {(gains > 0).sum()}/{len(gains)} faces')
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(network=title, faces=figures), fh, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
