"""The demo face set: real photographs shipped inside installed Python packages, prepared with ``fsr-prepare``.

No photo is stored in the repository; they are read from the installed packages:

- scikit-image: ``skimage/data/astronaut.png`` (512x512): 1 face (Eileen Collins), TRAIN.
- matplotlib: ``mpl-data/sample_data/grace_hopper.jpg`` (512x600): 1 face (Grace Hopper), TEST.
- insightface 2.1 (optional): ``insightface/data/images/t1.jpg`` (1280x886): 6 faces (detections with score >= 0.95);
  the 4 leftmost TRAIN, the 2 rightmost TEST.

``insightface`` is optional: ``pip install --no-deps insightface==2.1`` (a 1 MB pure-Python wheel; only its data
folder is read, the package is never imported, so its onnxruntime dependency is not needed). Without it the demo has
1 training and 1 test face.

Held out: the test faces are different people from the training faces (different photos, or different faces of the
group photo ``t1.jpg``). Each test face is cut out of its photo (a region of 2.5x its detected box) so that
``fsr-prepare`` sees one face per source.

Augmentation, training part only (documented, never applied to the test faces): every training source is also saved
horizontally flipped, rescaled by 0.85, and rotated by +-6 degrees (and the flip of each of these), i.e. 8 variants per
face; each variant is aligned again by ``fsr-prepare``, so the HR crops differ by sub-pixel alignment, resampling and
mirroring. Set ``augment=False`` for one crop per face.

Generic photo tiles (``train_real/hr.lmdb``, for the degradation-trained demo network only): the training faces' HR
crops plus non-overlapping HR-size tiles of ten scikit-image photographs that show none of the test people
(:data:`GENERIC_PHOTOS`: a cup of coffee, a cat, a rocket, a motorcycle, the cameraman, brick, grass, gravel, coins,
the moon). Five training people are enough to learn bicubic x4 of new faces, but not to learn removing noise, blur and
JPEG blocks from them: on the training faces such a network gains +2.1 dB over bicubic and on the held-out faces
nothing. Real-ESRGAN learns the same restoration from generic photographs (DF2K and OST); the tiles give the demo
network that generic prior (measured in the README's real-degradation section). ``generic=False`` leaves them out.
"""
import cv2
import importlib.util
import numpy as np
import os
import os.path as osp
import shutil


def demo_photo_paths():
    """{name: path} of the demo photographs that the installed packages provide."""
    paths = {}
    spec = importlib.util.find_spec('skimage')
    if spec is not None:
        p = osp.join(spec.submodule_search_locations[0], 'data', 'astronaut.png')
        if osp.isfile(p):
            paths['astronaut'] = p
    try:
        import matplotlib
        p = osp.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg')
        if osp.isfile(p):
            paths['grace_hopper'] = p
    except ImportError:
        pass
    spec = importlib.util.find_spec('insightface')
    if spec is not None and spec.submodule_search_locations:
        p = osp.join(spec.submodule_search_locations[0], 'data', 'images', 't1.jpg')
        if osp.isfile(p):
            paths['t1'] = p
    return paths


# scikit-image photographs (skimage/data/<name>.png|jpg) cut into tiles for train_real (none shows a test person)
GENERIC_PHOTOS = ('coffee', 'chelsea', 'rocket', 'motorcycle_left', 'camera', 'brick', 'grass', 'gravel', 'coins',
                  'moon')


def generic_tiles(hr_size=(128, 128)):
    """{``generic_<photo>_<y>_<x>``: BGR uint8 tile} of the :data:`GENERIC_PHOTOS` that scikit-image ships:
    non-overlapping ``hr_size`` tiles read left to right, top to bottom (grey photos as 3 equal channels). A photo
    that this scikit-image version does not ship is skipped with a message; none at all is an error."""
    spec = importlib.util.find_spec('skimage')
    if spec is None:
        raise RuntimeError('the generic demo tiles come from scikit-image: pip install scikit-image')
    folder = osp.join(spec.submodule_search_locations[0], 'data')
    th, tw = hr_size
    tiles, missing = {}, []
    for name in GENERIC_PHOTOS:
        files = [f for f in sorted(os.listdir(folder)) if osp.splitext(f)[0] == name]
        img = cv2.imread(osp.join(folder, files[0]), cv2.IMREAD_COLOR) if files else None
        if img is None:
            missing.append(name)
            continue
        h, w = img.shape[:2]
        for y in range(0, h - th + 1, th):
            for x in range(0, w - tw + 1, tw):
                tiles[f'generic_{name}_{y}_{x}'] = np.ascontiguousarray(img[y:y + th, x:x + tw])
    if missing:
        print(f'generic demo tiles: scikit-image photo(s) {", ".join(missing)} not in {folder}: left out')
    if not tiles:
        raise RuntimeError(f'no generic demo photo found in {folder} ({", ".join(GENERIC_PHOTOS)}): reinstall '
                           'scikit-image, or make_demo_data.py --no-generic')
    return tiles


def write_real_training_set(out_dir, hr_size=(128, 128)):
    """``out_dir/train_real/hr.lmdb``: the HR faces of ``out_dir/train`` and :func:`generic_tiles` (module docstring).

    Returns:
        dict: ``faces`` and ``tiles`` counts.
    """
    from fsr_data.lmdb_io import read_lmdb_images, write_lmdb
    faces = read_lmdb_images(osp.join(out_dir, 'train', 'hr.lmdb'), cv2.IMREAD_COLOR)
    tiles = generic_tiles(hr_size)
    folder = osp.join(out_dir, 'train_real')
    if osp.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    write_lmdb(osp.join(folder, 'hr.lmdb'), {**faces, **tiles})
    return dict(faces=len(faces), tiles=len(tiles))


def _cut(img, box, factor=2.5):
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * factor / 2
    h, w = img.shape[:2]
    xa, ya, xb, yb = (int(max(0, cx - half)), int(max(0, cy - half)), int(min(w, cx + half)), int(min(h, cy + half)))
    return img[ya:yb, xa:xb].copy()


def _variants(img):
    """The documented training augmentations of one source photo (BGR): name -> image."""
    h, w = img.shape[:2]
    out = {'orig': img}
    out['s085'] = cv2.resize(img, (round(w * 0.85), round(h * 0.85)), interpolation=cv2.INTER_AREA)
    for deg in (6, -6):
        R = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
        out[f'r{deg:+d}'.replace('+', 'p').replace('-', 'm')] = cv2.warpAffine(
            img, R, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    for name in list(out):
        out[name + '_flip'] = out[name][:, ::-1].copy()
    return out


def build_demo_sources(out_dir, augment=True, detector=None):
    """Write the demo source photos into ``out_dir/sources/{train,test}``; returns {'train': [...], 'test': [...]}."""
    from fsr_data.face_align import FaceDetector
    photos = demo_photo_paths()
    if not photos:
        raise RuntimeError('no demo photograph found: install scikit-image and matplotlib (and optionally '
                           'pip install --no-deps insightface==2.1)')
    src_root = osp.join(out_dir, 'sources')
    if osp.isdir(src_root):
        shutil.rmtree(src_root)
    parts = {'train': {}, 'test': {}}
    if 'astronaut' in photos:
        parts['train']['astronaut'] = cv2.imread(photos['astronaut'])
    if 'grace_hopper' in photos:
        parts['test']['grace_hopper'] = cv2.imread(photos['grace_hopper'])
    if 't1' in photos:
        det = detector or FaceDetector()
        img = cv2.imread(photos['t1'])
        faces = [f for f in det.detect(np.ascontiguousarray(img[..., ::-1])) if f['score'] >= 0.95]
        faces = sorted(faces, key=lambda f: f['box'][0])  # left to right
        for i, f in enumerate(faces):
            parts['test' if i >= len(faces) - 2 else 'train'][f't1_face{i}'] = _cut(img, f['box'])
    if not parts['test']:  # only one photo: nothing to hold out
        raise RuntimeError('the demo needs at least two photographs (scikit-image astronaut and matplotlib '
                           'grace_hopper)')
    listing = {}
    for part, imgs in parts.items():
        folder = osp.join(src_root, part)
        os.makedirs(folder, exist_ok=True)
        listing[part] = []
        for name, img in imgs.items():
            variants = _variants(img) if (augment and part == 'train') else {'orig': img}
            for vname, vimg in variants.items():
                fname = f'{name}.png' if vname == 'orig' else f'{name}_{vname}.png'
                cv2.imwrite(osp.join(folder, fname), vimg)
                listing[part].append(fname)
    return listing


def make_demo_data(out_dir='demo_data',
                   augment=True,
                   hr_size='128',
                   scales=(4, 8),
                   parsing='landmarks',
                   quiet=False,
                   generic=True):
    """Build ``out_dir/train`` and ``out_dir/test`` (fsr-prepare dataset folders) from the demo photographs, and
    ``out_dir/train_real/hr.lmdb`` (training faces + generic tiles) unless ``generic`` is False."""
    from fsr_data.prepare import prepare
    listing = build_demo_sources(out_dir, augment=augment)
    summaries = {}
    for part in ('train', 'test'):
        args = [
            osp.join(out_dir, 'sources', part), '-o',
            osp.join(out_dir, part), '--hr-size',
            str(hr_size), '--scales', *[str(s) for s in scales], '--parsing', parsing, '--overwrite'
        ]
        if quiet:
            args.append('--quiet')
        print('fsr-prepare ' + ' '.join(args))
        summaries[part] = prepare(args)
    if generic:
        size = [int(v) for v in str(hr_size).lower().split('x')]
        summaries['train_real'] = write_real_training_set(out_dir, (size[0], size[-1]))
    return listing, summaries
