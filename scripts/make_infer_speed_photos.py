"""Folders of real photos to time ``fsr-infer --profile`` on (photos/s, faces/s, time per stage).

    python scripts/make_infer_speed_photos.py -o speed_photos [--copies 4]
    fsr-infer -i speed_photos/normal -o out_normal --opt OPT --weights CKPT --profile --no-crops --quiet
    fsr-infer -i speed_photos/small -o out_small --opt OPT --weights CKPT --profile --no-crops --quiet --min-face 12

``normal/``: the photos that installed packages ship (scikit-image astronaut 512x512, matplotlib Grace Hopper 512x600,
insightface t1.jpg 1280x886 when installed) at their own size, ``--copies`` times: their faces are larger than a
128x128 x4 network's LR input, so fsr-infer keeps them (detection, enlargement and writing are timed). ``small/``: the
same photos shrunk so that their median face fits the LR template of ``--hr-size`` / ``--scale`` (the faces are cut and
restored: the network is timed too).
"""
import argparse
import cv2
import numpy as np
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('-o', '--output', required=True, help='folder to write normal/ and small/ into')
    p.add_argument('--copies', type=int, default=4, help='copies of each photo (4)')
    p.add_argument('--hr-size', type=int, default=128, help='HR face size of the network (128)')
    p.add_argument('--scale', type=int, default=4, help='scale of the network (4)')
    args = p.parse_args(argv)
    from fsr_data.demo import demo_photo_paths
    from fsr_data.face_align import FaceDetector, estimate_similarity, template_5pts, transform_scale
    det = FaceDetector()
    template = template_5pts(args.hr_size, args.hr_size)
    for sub in ('normal', 'small'):
        os.makedirs(os.path.join(args.output, sub), exist_ok=True)
    for name, path in sorted(demo_photo_paths().items()):
        img = cv2.imread(path)
        faces = [f for f in det.detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]
        f = np.median([transform_scale(estimate_similarity(x['landmarks'], template)) for x in faces]) / args.scale
        small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        for k in range(args.copies):
            cv2.imwrite(os.path.join(args.output, 'normal', f'{name}_{k}.png'), img)
            cv2.imwrite(os.path.join(args.output, 'small', f'{name}_{k}.png'), small)
        print(f'{name}: {img.shape[1]}x{img.shape[0]} ({len(faces)} faces) -> small {small.shape[1]}x{small.shape[0]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
