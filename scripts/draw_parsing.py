#!/usr/bin/env python
"""Draw the parsing maps of prepared faces over the faces (PNG for the README).

Reads ``hr.lmdb`` and ``parsing.lmdb`` of fsr-prepare dataset folders (default: the demo set) and writes a grid: one
column per face; rows: the HR face, the label map blended over it, the label map alone (CelebAMask-HQ colours).
Augmented demo variants (names with ``_flip``, ``_s085``, ``_rp6``, ``_rm6``) are left out.

    python scripts/draw_parsing.py [--data demo_data/train demo_data/test] [--out docs/parsing_demo.png]
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import lmdb  # noqa: E402
import numpy as np  # noqa: E402

from fsr_data.parsing import colorize  # noqa: E402

AUGMENTED = re.compile(r'_(orig_flip|s085|rp6|rm6)(_flip)?$')


def read_faces(folder):
    faces = []
    env_hr = lmdb.open(os.path.join(folder, 'hr.lmdb'), readonly=True, lock=False)
    env_p = lmdb.open(os.path.join(folder, 'parsing.lmdb'), readonly=True, lock=False)
    with open(os.path.join(folder, 'hr.lmdb', 'meta_info.txt')) as f:
        keys = [ln.split('.')[0] for ln in f]
    with env_hr.begin() as th, env_p.begin() as tp:
        for k in keys:
            if AUGMENTED.search(k):
                continue
            hr = cv2.imdecode(np.frombuffer(th.get(k.encode()), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            lab = cv2.imdecode(np.frombuffer(tp.get(k.encode()), np.uint8), cv2.IMREAD_GRAYSCALE)
            faces.append((f'{os.path.basename(os.path.normpath(folder))}/{k}', hr, lab))
    env_hr.close()
    env_p.close()
    return faces


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', nargs='+', default=['demo_data/train', 'demo_data/test'])
    p.add_argument('--out', default='docs/parsing_demo.png')
    p.add_argument('--colors', type=int, default=256, help='palette size of the PNG (0: full RGB)')
    p.add_argument('--alpha', type=float, default=0.45, help='weight of the label colours in the blend')
    args = p.parse_args()
    faces = [f for d in args.data for f in read_faces(d)]
    if not faces:
        raise SystemExit('no faces found: run scripts/make_demo_data.py first')
    cols = []
    for name, hr, lab in faces:
        color = colorize(lab)
        blend = np.where(lab[..., None] > 0, (1 - args.alpha) * hr + args.alpha * color, hr).astype(np.uint8)
        # outline every region so the boundaries are visible on the face
        edges = cv2.morphologyEx(lab, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) > 0
        blend[edges] = color[edges] // 2 + 127
        cols.append(np.vstack([hr, blend, color]))
    grid = np.hstack([np.pad(c, ((0, 0), (0, 2), (0, 0)), constant_values=255) for c in cols])[:, :-2]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.colors:  # an adaptive palette keeps the PNG small enough for the README
        from PIL import Image
        Image.fromarray(grid).quantize(args.colors, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    else:
        cv2.imwrite(args.out, grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f'{args.out}: {len(faces)} faces ({", ".join(n for n, _, _ in faces)}), '
          f'{os.path.getsize(args.out) // 1024} KB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
