"""Measure where ``fsr-infer`` should stop cutting LR crops without resampling (``--scale-tol``, ``--roll-tol``).

For each face of the real photos that installed packages ship (scikit-image astronaut, matplotlib Grace Hopper,
insightface t1.jpg when installed), a reference photo is made with the face at ``rel`` times the HR-crop scale and
rolled by ``roll`` degrees, shrunk x``scale`` with MATLAB bicubic, and restored twice with :class:`FaceRestorer`: once
forced to cut (no resampling), once forced to resample once to the LR template. The mean Y-PSNR gain over bicubic on the
face boxes, per (rel, roll), shows where the template mismatch of a cut costs more than a resampling at LR resolution::

    python scripts/measure_infer_tolerances.py --opt options/demo/train_tanet_demo_x4.yml \\
        --weights experiments/TANet_demo_x4/models/net_g_latest.pth
    python scripts/measure_infer_tolerances.py --linear     # the tests' linear network (no face prior)

The detected landmarks of the small photos are used (as fsr-infer does), so detector noise is included.
"""
import argparse
import cv2
import numpy as np
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rotate(img, deg):
    h, w = img.shape[:2]
    R = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    return cv2.warpAffine(img, R, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--opt', help='options file of the network (as for fsr-infer)')
    p.add_argument('--weights', help='checkpoint')
    p.add_argument('--linear', action='store_true', help='use the linear least-squares network of the tests instead')
    p.add_argument('--rels', type=float, nargs='+', default=[0.75, 0.8, 0.87, 0.93, 1.0, 1.07, 1.15, 1.25, 1.33])
    p.add_argument('--rolls', type=float, nargs='+', default=[0., 5., 10., 15., 20.])
    p.add_argument(
        '--held-out',
        action='store_true',
        help="only the demo's held-out faces (Grace Hopper, the two rightmost faces of t1.jpg): for the demo networks")
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    from fsr_data.demo import demo_photo_paths
    from fsr_data.face_align import FaceDetector
    from fsr_tools.infer_io import SkipImage
    from fsr_tools.infer_quality import degrade, face_gains, face_test_photos, fit_linear_sr
    from fsr_tools.restorer import FaceRestorer, detect_faces
    if args.linear:
        net, scale, hr, zoom, name = fit_linear_sr(), 4, (128, 128), 1.0, 'linear least-squares x4 (no face prior)'
        make = lambda **kw: FaceRestorer(net, 4, hr, upscale=4, detector=None, **kw)  # noqa: E731
    else:
        base = FaceRestorer.load(opt=args.opt, weights=args.weights, device=args.device, detector=None, upscale=None)
        net, scale, hr, zoom = base.net, base.scale, base.hr_size, base.zoom
        name = f'{base.info["network"]} x{scale} ({args.weights})'
        make = lambda **kw: FaceRestorer(net, scale, hr, args.device, zoom=zoom, detector=None, **kw)  # noqa: E731
    cut = make(scale_tol=1e9, roll_tol=1e9)
    resampled = make(scale_tol=0., roll_tol=0., restore_large=True)
    det = FaceDetector(min_face=12)
    sources = []
    for key, path in sorted(demo_photo_paths().items()):
        img = cv2.imread(path)
        faces = [f for f in det.detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]
        if args.held_out:  # fsr_data.demo's split: astronaut and the 4 leftmost t1.jpg faces are training faces
            if key == 'astronaut':
                continue
            if key == 't1':
                faces = sorted(faces, key=lambda f: f['box'][0])[-2:]
        sources.append((key, img, faces))
    print(f'network: {name}; faces: {sum(len(f) for _, _, f in sources)} from {", ".join(k for k, _, _ in sources)}')
    print('rel   roll  faces  cut_gain_dB  resampled_gain_dB  cut_minus_resampled_dB')
    for roll in args.rolls:
        for rel in args.rels:
            rows = {'cut': [], 'resampled': []}
            for key, img, faces in sources:
                for t in face_test_photos(img, faces, hr, scale, zoom, rels=(rel, )):
                    ref = rotate(t['ref'], roll) if roll else t['ref']
                    small = degrade(ref, scale)
                    try:
                        dets = [f for f in detect_faces(det, small[..., ::-1].copy(), 0) if f['score'] >= 0.9]
                    except SkipImage:
                        dets = []
                    if not dets:
                        continue
                    face = max(dets, key=lambda f: f['score'])
                    for kind, r in (('cut', cut), ('resampled', resampled)):
                        out, (rec, ) = r.restore(small, faces=[face])
                        plain = r.enlarge(small)
                        rows[kind] += face_gains(out, plain, ref, [face['box']], scale)
            if not rows['cut']:
                continue
            c = np.array([g['gain'] for g in rows['cut']])
            s = np.array([g['gain'] for g in rows['resampled']])
            print(
                f'{rel:<5} {roll:<5} {len(c):<6} {c.mean():+.3f}       {s.mean():+.3f}             '
                f'{(c - s).mean():+.3f}',
                flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
