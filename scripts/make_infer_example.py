"""Before/after picture of ``fsr-infer`` for the README (``docs/infer_example.png``, kept under 300 KB).

Usage (after the demo training has written a checkpoint)::

    python scripts/make_infer_example.py --opt options/train_tanet_x4_demo.yml \\
        --weights experiments/<name>/models/net_g_latest.pth [--photo PHOTO] [-o docs/infer_example.png]

The photo (default: the demo photographs that scikit-image and matplotlib ship, side by side; nothing is stored in the
repository) is brought to the scale at which its largest face fills the network's HR crop (the most detail the network
can give), then shrunk by ``--shrink`` (default: the network's scale) so that its faces are small, as in the photos
people want to restore. ``fsr-infer --upscale SHRINK`` then restores it (detect, align as fsr-prepare,
MATLAB-bicubic LR, network, soft paste-back into the bicubic-enlarged photo). The picture shows:

- top: the small photo enlarged with bicubic interpolation ("before") and the ``fsr-infer`` output ("after");
- one row per face: the network's aligned LR input (pixels enlarged), its bicubic enlargement, the network's output,
  and the same aligned crop of the original (unshrunk) photo, the reference.
"""
import argparse
import cv2
import json
import numpy as np
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_tools import infer  # noqa: E402

MAX_BYTES = 300 * 1024


def demo_photos():
    """The demo photographs shipped by installed packages (BGR)."""
    from fsr_data.demo import demo_photo_paths
    paths = demo_photo_paths()
    imgs = [cv2.imread(paths[k]) for k in ('astronaut', 'grace_hopper') if k in paths]
    imgs = [im for im in imgs if im is not None]
    if not imgs:
        sys.exit('error: no demo photograph found (install scikit-image and matplotlib) - pass --photo.')
    return imgs


def side_by_side(imgs, multiple):
    """Photos side by side on a grey canvas, each cropped to a multiple of ``multiple``."""
    imgs = [im[:im.shape[0] // multiple * multiple, :im.shape[1] // multiple * multiple] for im in imgs]
    canvas = np.full((max(im.shape[0] for im in imgs), sum(im.shape[1] for im in imgs), 3), 90, np.uint8)
    x = 0
    for im in imgs:
        canvas[:im.shape[0], x:x + im.shape[1]] = im
        x += im.shape[1]
    return canvas


def run_infer(args, net_args, inp, out, *extra):
    """``fsr-infer`` in-process; returns (exit status, summary or None)."""
    argv = ['-i', inp, '-o', out, '--quiet', '--weights', args.weights, '--device', args.device]
    code = infer.main(argv + list(net_args) + list(extra))
    path = os.path.join(out, 'summary.json')
    if not os.path.isfile(path):
        return code, None
    with open(path) as f:
        return code, json.load(f)


def fit_faces_to_hr(photo, args, net_args, tmp, index):
    """Shrink a photo so that its smallest detected face is at the network's HR-crop scale (so the 'original' tiles
    show what the network should reach); a photo whose faces are already that small is kept."""
    path = os.path.join(tmp, f'full{index}.png')
    cv2.imwrite(path, photo)
    _, summary = run_infer(args, net_args, path, os.path.join(tmp, f'full{index}'), '--no-crops')
    scales = [face['crop_scale'] for p in summary['photos'] for face in p['faces']] if summary else []
    f = min([1.] + scales)
    if f < 1:
        photo = cv2.resize(photo, (round(photo.shape[1] * f), round(photo.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return photo


def label(img, text):
    out = img.copy()
    h = max(14, out.shape[0] // 12)
    cv2.rectangle(out, (0, 0), (out.shape[1], h + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (3, h), cv2.FONT_HERSHEY_SIMPLEX, h / 30., (255, 255, 255), 1, cv2.LINE_AA)
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
    p.add_argument('--weights', required=True, help='checkpoint (experiments/<name>/models/net_g_*.pth)')
    p.add_argument('--opt', help='options file of the network (as for fsr-infer)')
    p.add_argument('--net', help='or: registered network name with its paper configuration')
    p.add_argument('--scale', type=int, help='scale for --net')
    p.add_argument('--photo', help='photo to use (default: the demo photographs side by side)')
    p.add_argument('--shrink', type=int, help="shrink the photo by this factor first (default: the network's scale)")
    p.add_argument('--hr-size', help='HR face size, as for fsr-infer (default: from the options / 128)')
    p.add_argument(
        '--keep-size',
        action='store_true',
        help='do not first shrink each photo so that its faces are '
        'is at the HR-crop scale (the network cannot add detail beyond its HR size)')
    p.add_argument('--device', default='auto')
    p.add_argument('-o', '--output', default='docs/infer_example.png')
    p.add_argument('--row-height', type=int, default=128, help='height of the face rows in pixels (128)')
    args = p.parse_args(argv)

    photos = [cv2.imread(args.photo, cv2.IMREAD_COLOR)] if args.photo else demo_photos()
    if photos[0] is None:
        sys.exit(f'error: cannot read {args.photo}')
    net_args = (['--opt', args.opt] if args.opt else []) + (['--net', args.net] if args.net else [])
    net_args += ['--scale', str(args.scale)] if args.scale else []
    net_args += ['--hr-size', args.hr_size] if args.hr_size else []
    with tempfile.TemporaryDirectory() as tmp:
        shrink = args.shrink
        if shrink is None:  # the network's scale, from a setup-only run (an empty folder)
            os.makedirs(os.path.join(tmp, 'empty'))
            code, summary = run_infer(args, net_args, os.path.join(tmp, 'empty'), os.path.join(tmp, 'probe'))
            if summary is None:
                return code
            shrink = summary['settings']['scale']
        if not args.keep_size:
            photos = [fit_faces_to_hr(im, args, net_args, tmp, i) for i, im in enumerate(photos)]
        photo = side_by_side(photos, shrink)
        h, w = photo.shape[:2]
        small = cv2.resize(photo, (w // shrink, h // shrink), interpolation=cv2.INTER_AREA)
        small_path = os.path.join(tmp, 'photo.png')
        cv2.imwrite(small_path, small)
        # faces of the shrunk photo are small: let the detector look down to its 12 px window
        code, summary = run_infer(args, net_args, small_path, os.path.join(tmp, 'out'), '--upscale', str(shrink),
                                  '--min-face', '12')
        if code:
            return code
        settings, rec = summary['settings'], summary['photos'][0]
        after = cv2.imread(rec['output'])
        before = cv2.resize(small, (after.shape[1], after.shape[0]), interpolation=cv2.INTER_CUBIC)
        top_h = 2 * args.row_height + 32
        top = np.concatenate([
            label(fit_height(before, top_h), f'before: photo / {shrink}, bicubic x{shrink}'),
            np.full((top_h, 6, 3), 255, np.uint8),
            label(fit_height(after, top_h), f'after: fsr-infer {settings["network"]} x{settings["scale"]}')
        ], 1)
        rows = []
        from fsr_data.face_align import align_face, template_5pts
        hr_h, hr_w = settings['hr_size']
        template = template_5pts(hr_h, hr_w, zoom=settings['template_zoom'])
        for face in rec['faces']:
            lr = cv2.imread(face['lr_crop'])
            sr = cv2.imread(face['sr_crop'])
            ref, _ = align_face(
                photo, (np.asarray(face["landmarks"]) + 0.5) * shrink - 0.5, (hr_h, hr_w), template=template)
            tiles = [('LR input', cv2.resize(lr, (hr_w, hr_h), interpolation=cv2.INTER_NEAREST)),
                     ('bicubic', cv2.resize(lr, (hr_w, hr_h), interpolation=cv2.INTER_CUBIC)), ('network', sr),
                     ('original', ref)]
            row = []
            for name, tile in tiles:
                row += [label(fit_height(tile, args.row_height), name), np.full((args.row_height, 4, 3), 255, np.uint8)]
            rows.append(np.concatenate(row[:-1], 1))
        width = max([top.shape[1]] + [r.shape[1] for r in rows])
        pad = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in [top] + rows]
        picture = np.concatenate(pad, 0)
    size = save_small_png(picture, args.output)
    print(f'{args.output}: {picture.shape[1]}x{picture.shape[0]}, {size // 1024} KB, {len(rec["faces"])} face(s); '
          f'{settings["network"]} x{settings["scale"]}, weights {settings["weights"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
