"""fsr-prepare crops (``--crop``) and paper recipes (``--recipe``, issue 15 items 1-2) on tiny fake copies of the
datasets' folder layouts, made from photos that installed packages ship (file names as the datasets use them)."""
import cv2
import json
import lmdb
import matplotlib
import numpy as np
import os
import pytest
import skimage.data

from fsr_data.face_align import OPENFACE_TEMPLATE, box_crop, openface_crop, square_box
from fsr_data.prepare import PrepareError, prepare


def _faces():
    """Two real face photos (BGR): scikit-image's astronaut, matplotlib's Grace Hopper."""
    astro = skimage.data.astronaut()[..., ::-1]
    grace = cv2.imread(os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))
    return [astro, grace]


def _photo(i, size):
    """Photo ``i`` of a series: one of the faces, mirrored on odd turns, rescaled to ``size`` px wide."""
    img = _faces()[i % 2]
    if (i // 2) % 2:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    return np.ascontiguousarray(cv2.resize(img, (size, round(h * size / w)), interpolation=cv2.INTER_AREA))


def _lmdb(path, key):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        v = txn.get(key.encode())
        n = txn.stat()['entries']
    env.close()
    return (None if v is None else cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED)), n


def _manifest(folder):
    return [json.loads(ln) for ln in open(os.path.join(folder, 'manifest.jsonl'))]


def _celeba(root, n_wild=0, n_aligned=0, parts=None):
    """CelebA's layout: img_celeba/000001.jpg (in the wild), img_align_celeba/000001.jpg (178x218),
    list_eval_partition.txt (``name 0|1|2``)."""
    names = [f'{i:06d}.jpg' for i in range(1, max(n_wild, n_aligned) + 1)]
    if n_wild:
        os.makedirs(root / 'img_celeba')
        for i in range(n_wild):
            cv2.imwrite(str(root / 'img_celeba' / names[i]), _photo(i, 200 + 20 * (i % 5)))
    if n_aligned:
        os.makedirs(root / 'img_align_celeba')
        rng = np.random.RandomState(0)
        for i in range(n_aligned):
            img = cv2.resize((rng.rand(9, 7, 3) * 255).astype(np.uint8), (178, 218), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / 'img_align_celeba' / names[i]), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    parts = parts or [0] * len(names)
    (root / 'list_eval_partition.txt').write_text(''.join(f'{n} {p}\n' for n, p in zip(names, parts)))
    return names


def _helen(root, n_train=3, n_test=4):
    """Helen's layout: helen_1/<id>_1.jpg (training photos), helen_5/<id>_1.jpg (test), testnames.txt (no extension)."""
    test = []
    for part, n, off in (('helen_1', n_train, 0), ('helen_5', n_test, n_train)):
        os.makedirs(root / part)
        for i in range(n):
            name = f'{1000000 + 7919 * (i + off)}_1'
            cv2.imwrite(str(root / part / f'{name}.jpg'), _photo(i + off, 240 + 20 * (i % 3)))
            if part == 'helen_5':
                test.append(name)
    (root / 'testnames.txt').write_text('\n'.join(test[::-1]) + '\n')  # the file's order, not the folder's, counts
    (root / 'trainnames.txt').write_text('')
    return test[::-1]


# ------------------------------------------------------------------------------------------------------------ crops
def test_box_crop_geometry():
    img = (np.random.RandomState(0).rand(100, 120, 3) * 255).astype(np.uint8)
    x0, y0, side = square_box((30, 20, 70, 80))  # 40 x 60 box -> 60 x 60 square with the same centre
    assert (x0, y0, side) == (20, 20, 60)
    crop, M, side = box_crop(img, (30, 20, 70, 80), (60, 60))
    assert side == 60 and np.array_equal(crop, img[20:80, 20:80])  # scale 1: a plain cut
    assert np.allclose(M, [[1, 0, -20], [0, 1, -20]])
    crop, M, _ = box_crop(img, (30, 20, 70, 80), (30, 30))
    ref = img[20:80, 20:80].reshape(30, 2, 30, 2, 3).mean((1, 3))  # 2x2 area average, written out
    assert np.abs(crop.astype(float) - ref).max() <= 1
    assert np.allclose(M @ [20.5, 20.5, 1], [0, 0])  # the centre of source pixels 20-21 is output pixel 0


def test_openface_crop_maps_the_three_points():
    # OpenFace's normalised template points, recomputed by hand from its TEMPLATE's min/max
    # (x: 0.0792..0.9712, y: 0.1824..1.0608)
    ref = np.array([[0.3638, 0.1780], [0.6190, 0.1727], [0.5002, 0.7506]])
    assert np.abs(OPENFACE_TEMPLATE - ref).max() < 2e-4
    pts = np.zeros((68, 2))
    pts[39], pts[42], pts[57] = (100, 80), (140, 82), (121, 170)
    img = (np.random.RandomState(1).rand(240, 240, 3) * 255).astype(np.uint8)
    crop, M = openface_crop(img, pts, (128, 96))
    assert crop.shape == (128, 96, 3)
    mapped = pts[[39, 42, 57]] @ M[:, :2].T + M[:, 2]
    assert np.abs(mapped - ref * [96, 128]).max() < 0.02


@pytest.mark.parametrize('crop', ['box', 'landmarks68', 'align5'])
def test_crops_on_a_photo_record_their_mode(tmp_path, crop):
    src = tmp_path / 'photos'
    src.mkdir()
    cv2.imwrite(str(src / 'astronaut.png'), _photo(0, 400))
    out = str(tmp_path / crop)
    prepare([str(src), '-o', out, '--crop', crop, '--hr-size', '48', '--scales', '4', '--parsing', 'none', '--quiet'])
    (e, ) = _manifest(out)
    assert e['crop'] == crop and e['options']['crop'] == crop
    hr, _ = _lmdb(os.path.join(out, 'hr.lmdb'), 'astronaut')
    photo = _photo(0, 400)
    M = np.array(e['transform'])
    assert hr.shape == (48, 48, 3)
    # the stored transform reproduces the stored crop (up to interpolation)
    again = cv2.warpAffine(photo, M, (48, 48), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    blur = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5) for x in (again, hr)]  # aliasing differs
    assert np.abs(blur[0] - blur[1]).mean() < 4
    shifted = cv2.warpAffine(photo, M + [[0, 0, 3], [0, 0, 0]], (48, 48), flags=cv2.INTER_CUBIC)
    assert np.abs(cv2.GaussianBlur(shifted.astype(np.float32), (0, 0), 1.5) - blur[1]).mean() > 6  # meaningful
    eyes = np.array(e['landmarks'])[:2] @ M[:, :2].T + M[:, 2]
    assert eyes[0, 0] < 24 < eyes[1, 0]  # the eyes left and right of the middle, in every mode
    if crop == 'box':
        x0, y0, side = square_box(e['box'])
        assert abs(M[0, 0] - 48 / side) < 0.02 * M[0, 0]
        with pytest.raises(PrepareError):  # the face's square box is < 200 px: excluded, as LAAT's < 128 px faces
            prepare([
                str(src), '-o', out + '_min', '--crop', 'box', '--min-box', '200', '--hr-size', '48', '--scales', '4',
                '--parsing', 'none', '--quiet'
            ])
        row = open(os.path.join(out + '_min', 'skipped.tsv')).read().split('\n')[1].split('\t')
        assert row[1] == 'too_small' and '--min-box 200' in row[2]


# ---------------------------------------------------------------------------------------------------------- recipes
def _run(root, out, recipe, scale, *extra):
    return prepare([str(root), '-o', str(out), '--recipe', recipe, '--recipe-scale', str(scale), '--quiet', *extra])


# the fake photos' faces are 40-90 px: allow the upscaling to the recipes' 128 px (the paper sizes stay) and let MTCNN
# skip the pyramid levels of faces under 40 px (speed)
SMALL = ('--max-upscale', '4', '--min-face', '40')


def test_recipe_tanet_celeba_and_aminet(tmp_path):
    root = tmp_path / 'CelebA'
    names = _celeba(root, n_aligned=14, parts=[0] * 9 + [1] * 2 + [2] * 3)
    out = tmp_path / 'tanet'
    rep = _run(root, out, 'tanet-celeba', 0.001)  # 3800/100/100 -> 4/1/1 drawn from the 14 photos
    assert {s: r['faces'] for s, r in rep['subsets'].items()} == {'train': 4, 'val': 1, 'test': 1}
    srcs = {s: [e['source'] for e in _manifest(out / s)] for s in ('train', 'val', 'test')}
    assert not set(srcs['train']) & set(srcs['test']) and not set(srcs['val']) & set(srcs['test'])
    e = _manifest(out / 'test')[0]
    assert e['crop'] == 'center' and e['options']['hr_size'] == [216, 176] and e['options']['scales'] == [4, 8]
    hr, n = _lmdb(str(out / 'test' / 'hr.lmdb'), e['key'])
    img = cv2.imread(str(root / 'img_align_celeba' / e['source']))
    assert n == 1 and np.array_equal(hr, img[1:217, 1:177])  # the central 216x176 pixels, not resampled
    lr, _ = _lmdb(str(out / 'test' / 'lr_x8.lmdb'), e['key'])
    assert lr.shape == (27, 22, 3)
    assert not (out / 'pool').exists() and json.load(open(out / 'recipe.json'))['subsets']['train']['paper'] == 4
    from fsr_data.face_dataset import FSRFaceDataset  # a split folder is an ordinary dataset folder
    ds = FSRFaceDataset(
        dict(
            dataroot_gt=str(out / 'train' / 'hr.lmdb'),
            dataroot_lq=str(out / 'train' / 'lr_x4.lmdb'),
            io_backend={'type': 'lmdb'},
            scale=4,
            phase='val'))
    assert len(ds) == 4 and tuple(ds[0]['gt'].shape) == (3, 216, 176) and tuple(ds[0]['lq'].shape) == (3, 54, 44)
    # the same seed gives the same draw; a rerun is a no-op
    assert _run(root, out, 'tanet-celeba', 0.001)['status'] == 'complete'

    out = tmp_path / 'aminet'
    rep = _run(root, out, 'aminet', 1 / 3000)  # 18000/1000 -> 6/1, from partitions 0 and 2
    assert {s: r['faces'] for s, r in rep['subsets'].items()} == {'train': 6, 'test': 1}
    train = [e['source'] for e in _manifest(out / 'train')]
    test = [e['source'] for e in _manifest(out / 'test')]
    assert set(train) <= set(names[:9]) and set(test) <= set(names[11:])
    e = _manifest(out / 'test')[0]
    assert e['options']['hr_size'] == [128, 128] and e['options']['scales'] == [8]
    hr, _ = _lmdb(str(out / 'test' / 'hr.lmdb'), e['key'])
    img = cv2.imread(str(root / 'img_align_celeba' / e['source']))
    ref = cv2.resize(img[20:198], (128, 128), interpolation=cv2.INTER_AREA)  # centre 178x178 square -> 128
    assert hr.shape == (128, 128, 3) and np.abs(hr.astype(int) - ref).max() <= 1


def test_recipe_tanet_ffhq(tmp_path):
    root = tmp_path / 'FFHQ'
    rng = np.random.RandomState(2)
    for i in range(7):
        for folder, size in (('images1024x1024', 256), ('thumbnails128x128', 128)):
            d = root / folder / '00000'
            d.mkdir(parents=True, exist_ok=True)
            img = cv2.resize((rng.rand(8, 8, 3) * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(d / f'{i:05d}.png'), img)
    out = tmp_path / 'out'
    rep = _run(root, out, 'tanet-ffhq', 0.001)  # 3800/100/100 -> 4/1/1
    assert {s: r['faces'] for s, r in rep['subsets'].items()} == {'train': 4, 'val': 1, 'test': 1}
    assert rep['images'].endswith('images1024x1024')  # the full-size copy, not the thumbnails
    e = _manifest(out / 'val')[0]
    hr, _ = _lmdb(str(out / 'val' / 'hr.lmdb'), e['key'])
    assert hr.shape == (256, 256, 3) and e['source'].startswith('00000/')
    assert {
        s: r['faces']
        for s, r in _run(root, tmp_path / 'seed1', 'tanet-ffhq', 0.001, '--split-seed', '1')['subsets'].items()
    } == {
        'train': 4,
        'val': 1,
        'test': 1
    }
    assert ([e['source'] for e in _manifest(tmp_path / 'seed1' / 'train')]
            != [e['source'] for e in _manifest(out / 'train')])


def test_recipe_laat_celeba_and_helen(tmp_path):
    root = tmp_path / 'CelebA'
    _celeba(root, n_wild=4)
    tiny = _photo(0, 120)  # its face box (~27 px) is under --min-box: excluded
    cv2.imwrite(str(root / 'img_celeba' / '000005.jpg'), tiny)
    with open(root / 'list_eval_partition.txt', 'a') as f:
        f.write('000005.jpg 0\n')
    out = tmp_path / 'laat'
    # the fake photos' faces are 40-70 px: --min-box 40 stands in for LAAT's 128 at this scale
    rep = _run(root, out, 'laat', 0.002, '--min-box', '40', '--max-upscale',
               '4')  # test: the last 1000 -> 2; train: the rest
    assert rep['subsets']['test']['faces'] == 2 and rep['subsets']['train']['faces'] == rep['pool_faces'] - 2
    test = [e['source'] for e in _manifest(out / 'test')]
    train = [e['source'] for e in _manifest(out / 'train')]
    assert max(train) < min(test) and '000005.jpg' not in train + test and len(train) >= 1
    e = _manifest(out / 'test')[0]
    assert e['crop'] == 'box' and e['options']['min_box'] == 40 and e['options']['scales'] == [8]
    skipped = open(out / 'skipped.tsv').read()
    assert '000005.jpg\ttoo_small\tsquare box' in skipped
    hr, _ = _lmdb(str(out / 'test' / 'lr_x8.lmdb'), e['key'])
    assert hr.shape == (16, 16, 3)

    helen = tmp_path / 'Helen'
    _helen(helen, n_train=2, n_test=1)
    out = tmp_path / 'laat_helen'
    rep = _run(helen, out, 'laat', 0.02, '--dataset', 'helen', '--min-box', '40', *SMALL)  # 100 random -> 2 of 3
    assert set(rep['subsets']) == {'test'} and rep['subsets']['test']['faces'] == 2
    assert rep['photos'] == 3  # the whole Helen set is cropped, then 100 (here 2) drawn


def test_recipe_wnet_modes(tmp_path):
    root = tmp_path / 'CelebA'
    names = _celeba(root, n_wild=5, parts=[0] * 3 + [1] + [2])
    with pytest.raises(FileNotFoundError, match='bisenet-weights'):  # the paper's BiSeNet maps need their weights
        _run(root, tmp_path / 'x', 'wnet-mode1', 0.0001)
    out = tmp_path / 'mode1'
    # 168854/100/1000 -> 3/1/1, in name order: DIC's split of the faces that survive detection
    rep = _run(root, out, 'wnet-mode1', 0.00002, '--parsing', 'landmarks', *SMALL)
    assert {s: r['faces'] for s, r in rep['subsets'].items()} == {'train': 3, 'val': 1, 'test': 1}
    srcs = {s: [e['source'] for e in _manifest(out / s)] for s in ('train', 'val', 'test')}
    assert max(srcs['train']) < srcs['val'][0] < srcs['test'][0]
    e = _manifest(out / 'train')[0]
    assert e['crop'] == 'landmarks68' and e['options']['parsing'] == 'landmarks'
    parsing, n = _lmdb(str(out / 'train' / 'parsing.lmdb'), e['key'])
    assert n == 3 and parsing.shape == (128, 128) and parsing.max() > 0
    hr, _ = _lmdb(str(out / 'train' / 'hr.lmdb'), e['key'])
    # OpenFace's framing: the inner eye corners at 17-18% of the height, the bottom lip at 75%
    M = np.array(e['transform'])
    eyes = np.array(e['landmarks'])[:2] @ M[:, :2].T + M[:, 2]
    assert np.all(np.abs(eyes[:, 1] / 128 - 0.176) < 0.06) and hr.shape == (128, 128, 3)

    out = tmp_path / 'mode2'
    rep = _run(root, out, 'wnet-mode2', 1 / 9000, '--parsing', 'none', *SMALL)  # 18000/100 -> 2/1, partitions 0/2
    assert {s: r['faces'] for s, r in rep['subsets'].items()} == {'train': 2, 'test': 1}
    assert [e['source'] for e in _manifest(out / 'test')] == names[4:]
    assert set(e['source'] for e in _manifest(out / 'train')) < set(names[:3])

    helen = tmp_path / 'Helen'
    order = _helen(helen, n_train=1, n_test=3)
    out = tmp_path / 'helen'
    rep = _run(helen, out, 'wnet-mode1', 0.04, '--dataset', 'helen', '--parsing', 'none', *SMALL)  # 50 -> 2
    assert [e['source'] for e in _manifest(out / 'test')] == sorted(f'helen_5/{n}.jpg' for n in order[:2])


def test_recipe_resumes_and_explains_layout_errors(tmp_path):
    root = tmp_path / 'FFHQ'
    (root / 'images1024x1024').mkdir(parents=True)
    for i in range(6):
        cv2.imwrite(str(root / 'images1024x1024' / f'{i:05d}.png'), np.full((256, 256, 3), 40 * i, np.uint8))

    class Stop(KeyboardInterrupt):
        pass

    def fault(where, n):
        if where == 'after_photo' and n == 3:
            raise Stop

    out = tmp_path / 'out'
    with pytest.raises(Stop):
        args = [str(root), '-o', str(out), '--recipe', 'tanet-ffhq', '--recipe-scale', '0.001', '--commit-every', '1']
        prepare(args + ['--quiet'], _fault=fault)
    assert (out / 'pool' / '.staging').is_dir() and not (out / 'recipe.json').exists()
    rep = _run(root, out, 'tanet-ffhq', 0.001, '--commit-every', '1')
    assert rep['status'] == 'done' and rep['subsets']['train']['faces'] == 4
    with pytest.raises(FileNotFoundError, match='img_celeba'):
        _run(root, tmp_path / 'o2', 'laat', 0.001)
    with pytest.raises(SystemExit):
        _run(root, tmp_path / 'o3', 'tanet-ffhq', 0.001, '--dataset', 'helen')


def test_recipe_names_only_files_that_exist(tmp_path, capsys):
    """Issue 26 part 5: the recipe's last line named OUT/pool/skipped.tsv, then deleted the pool. Every skip report a
    recipe run prints must exist when it ends (with and without --keep-pool), and count the photos it lists."""
    from fsr_data.prepare import main
    root = tmp_path / 'FFHQ' / 'images1024x1024'
    root.mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(root / f'{i:05d}.png'), np.full((256, 256, 3), 40 * i, np.uint8))
    (root / '00005.png').write_bytes(b'not a png')  # 6 photos, all drawn (4/1/1): one skipped
    for keep in ([], ['--keep-pool']):
        out = tmp_path / f'out{len(keep)}'
        argv = [str(tmp_path / 'FFHQ'), '-o', str(out), '--recipe', 'tanet-ffhq', '--recipe-scale', '0.001'] + keep
        assert main(argv) == 0
        printed = capsys.readouterr().out
        named = [w.strip('();,.') for w in printed.split() if w.strip('();,.').endswith('skipped.tsv')]
        assert named, printed
        for path in named:
            assert os.path.isfile(path), f'{path} is printed but does not exist: {printed}'
            rows = [ln for ln in open(path).read().split('\n')[1:] if ln]
            assert [r.split('\t')[:2] for r in rows] == [['00005.png', 'unreadable']]
        assert '1 photos skipped' in printed
        assert (out / 'pool').is_dir() == bool(keep)


def test_split_seed_help_names_the_draws():
    """``--split-seed``'s help names every recipe whose photos or faces are drawn at random, and no other."""
    import re

    from fsr_data.prepare import build_parser
    from fsr_data.recipes import RECIPES
    action = next(a for a in build_parser()._actions if '--split-seed' in a.option_strings)
    text = ' '.join(action.help.split())
    draws, fixed = set(), set()
    for name, r in RECIPES.items():
        for dataset, d in r['datasets'].items():
            random = d['select'] in ('random', 'partition') or d.get('assign') == 'random'
            (draws if random else fixed).add((name, dataset))
    named = set(re.findall(r'\b(laat|aminet|tanet-ffhq|tanet-celeba|wnet-mode1|wnet-mode2)\b', text))
    assert named == {n for n, _ in draws}, text
    assert 'fsrnet-celeba' in text and 'recipe.json' in text
    # a recipe that draws for one dataset only says which
    for name in {n for n, _ in draws} & {n for n, _ in fixed}:
        ds = [d for n, d in draws if n == name]
        assert re.search(rf'{name} \(?--dataset {"|".join(ds)}|{name} \(({"|".join(ds)})', text, re.I), (name, text)
