"""Tiny fake copies of the CelebA, Helen and FFHQ folder layouts, to dry-run the commands of docs/REPRODUCE.md.

The photos are the two face photos that installed packages ship (scikit-image's astronaut, matplotlib's Grace Hopper),
mirrored and rescaled, written under the file names the real datasets use (as tests/test_recipes.py does):

- ``ROOT/CelebA``: ``img_celeba/000001.jpg`` ... (in-the-wild photos), ``img_align_celeba/000001.jpg`` ... (178x218
  crops), ``list_eval_partition.txt`` (``name 0|1|2``; 6 training, 1 validation, 1 test photo);
- ``ROOT/Helen``: ``helen_1/<id>_1.jpg`` (training photos), ``helen_5/<id>_1.jpg`` (test photos), ``testnames.txt``
  and ``trainnames.txt``;
- ``ROOT/FFHQ``: ``images1024x1024/00000/00000.png`` ... (numbered PNGs; 256x256 here to keep the dry run cheap).

Usage: ``python scripts/make_fake_datasets.py /tmp/fsr_fake`` (an existing ROOT is kept unless ``--overwrite``).
Nothing here is a measurement: the fake sets only check that the commands run.
"""
import argparse
import cv2
import matplotlib
import numpy as np
import os
import shutil
import skimage.data


def faces():
    """Two real face photos (BGR): scikit-image's astronaut, matplotlib's Grace Hopper."""
    astro = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    grace = cv2.imread(os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))
    return [astro, grace]


def photo(i, width):
    """Photo ``i`` of a series: one of the two faces, mirrored on odd pairs, rescaled to ``width`` px wide."""
    img = faces()[i % 2]
    if (i // 2) % 2:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    return np.ascontiguousarray(cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA))


def aligned(i):
    """A 178x218 (WxH) crop around the face of photo ``i``, standing in for an ``img_align_celeba`` image."""
    img = photo(i, 300)
    h, w = img.shape[:2]
    # the faces of both photos sit in the upper middle; cut a 178x218 window there (clipped to the photo)
    y0 = max(0, min(h - 218, int(0.05 * h)))
    x0 = max(0, (w - 178) // 2)
    return np.ascontiguousarray(img[y0:y0 + 218, x0:x0 + 178])


def make_celeba(root, n=8, parts=None):
    parts = parts or [0] * (n - 2) + [1, 2]
    names = [f'{i:06d}.jpg' for i in range(1, n + 1)]
    os.makedirs(os.path.join(root, 'img_celeba'))
    os.makedirs(os.path.join(root, 'img_align_celeba'))
    for i, name in enumerate(names):
        cv2.imwrite(os.path.join(root, 'img_celeba', name), photo(i, 200 + 20 * (i % 5)))
        cv2.imwrite(os.path.join(root, 'img_align_celeba', name), aligned(i), [cv2.IMWRITE_JPEG_QUALITY, 95])
    with open(os.path.join(root, 'list_eval_partition.txt'), 'w') as f:
        f.writelines(f'{n_} {p}\n' for n_, p in zip(names, parts))


def make_helen(root, n_train=2, n_test=3):
    test = []
    for part, n, off in (('helen_1', n_train, 0), ('helen_5', n_test, n_train)):
        os.makedirs(os.path.join(root, part))
        for i in range(n):
            name = f'{1000000 + 7919 * (i + off)}_1'
            cv2.imwrite(os.path.join(root, part, f'{name}.jpg'), photo(i + off, 240 + 20 * (i % 3)))
            if part == 'helen_5':
                test.append(name)
    with open(os.path.join(root, 'testnames.txt'), 'w') as f:
        f.write('\n'.join(test) + '\n')
    with open(os.path.join(root, 'trainnames.txt'), 'w') as f:
        f.write('\n'.join(f'{1000000 + 7919 * i}_1' for i in range(n_train)) + '\n')


def make_ffhq(root, n=7, size=256):
    d = os.path.join(root, 'images1024x1024', '00000')
    os.makedirs(d)
    for i in range(n):
        img = photo(i, 400)
        side = min(img.shape[:2])
        img = cv2.resize(img[:side, (img.shape[1] - side) // 2:][:, :side], (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(os.path.join(d, f'{i:05d}.png'), img)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('root', help='folder to create (gets CelebA/, Helen/, FFHQ/)')
    p.add_argument('--overwrite', action='store_true', help='remove ROOT first')
    args = p.parse_args(argv)
    if os.path.exists(args.root):
        if not args.overwrite:
            print(f'{args.root} exists; nothing done (--overwrite to rebuild it).')
            return
        shutil.rmtree(args.root)
    make_celeba(os.path.join(args.root, 'CelebA'))
    make_helen(os.path.join(args.root, 'Helen'))
    make_ffhq(os.path.join(args.root, 'FFHQ'))
    print(f'fake CelebA/, Helen/, FFHQ/ layouts in {args.root}')


if __name__ == '__main__':
    main()
