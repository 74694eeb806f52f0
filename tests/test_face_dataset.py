"""FSRFaceDataset: PairedImageDataset equivalence, joint augmentation, left/right label swap, masks, clear errors."""
import cv2
import lmdb
import numpy as np
import os
import pytest
import random
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import tensor2img

from fsr_data.face_dataset import FSRFaceDataset, component_masks, swap_left_right
from fsr_data.lmdb_io import write_lmdb

SCALE = 4


def _make_data(root, n=3, size=32, seed=0, blocky=False, fmt='png'):
    """Write hr/lr_x4/parsing as LMDBs and as folders. ``blocky``: HR = LR blocks, parsing = label from HR red."""
    rng = np.random.RandomState(seed)
    hr, lr, par = {}, {}, {}
    for i in range(n):
        key = f'face{i:03d}'
        if blocky:
            labels_lr = rng.randint(0, 19, (size // SCALE, size // SCALE)).astype(np.uint8)
            lr_img = (rng.rand(size // SCALE, size // SCALE, 3) * 255).astype(np.uint8)
            lr_img[..., 2] = labels_lr * 10  # red channel (BGR order) encodes the label
            hr_img = np.kron(lr_img, np.ones((SCALE, SCALE, 1), np.uint8))
            par[key] = np.kron(labels_lr, np.ones((SCALE, SCALE), np.uint8))
        else:
            hr_img = (rng.rand(size, size, 3) * 255).astype(np.uint8)
            lr_img = cv2.resize(hr_img, (size // SCALE, size // SCALE), interpolation=cv2.INTER_AREA)
            par[key] = rng.randint(0, 19, (size, size)).astype(np.uint8)
        hr[key], lr[key] = hr_img, lr_img
    paths = {}
    for name, images in (('hr', hr), (f'lr_x{SCALE}', lr), ('parsing', par)):
        paths[name + '.lmdb'] = write_lmdb(
            os.path.join(root, name + '.lmdb'), images, fmt='png' if name == 'parsing' else fmt)
        folder = os.path.join(root, name)
        os.makedirs(folder)
        for key, img in images.items():
            cv2.imwrite(os.path.join(folder, key + '.png'), img)
        paths[name] = folder
    return paths, hr, lr, par


def _opt(paths, lmdb_backend=True, **kw):
    ext = '.lmdb' if lmdb_backend else ''
    opt = dict(
        dataroot_gt=paths['hr' + ext],
        dataroot_lq=paths[f'lr_x{SCALE}' + ext],
        dataroot_parsing=paths['parsing' + ext],
        io_backend={'type': 'lmdb' if lmdb_backend else 'disk'},
        scale=SCALE,
        phase='train',
        gt_size=16,
        use_hflip=True,
        use_rot=True)
    opt.update(kw)
    return opt


@pytest.mark.parametrize('lmdb_backend,fmt', [(True, 'png'), (True, 'bmp'), (False, 'png')])
@pytest.mark.parametrize('phase', ['train', 'val'])
def test_same_lq_gt_as_paired_image_dataset(tmp_path, lmdb_backend, fmt, phase):
    paths, *_ = _make_data(str(tmp_path), fmt=fmt)
    ours = FSRFaceDataset(_opt(paths, lmdb_backend, phase=phase, return_component_masks=True))
    ref_opt = _opt(paths, lmdb_backend, phase=phase)
    ref_opt.pop('dataroot_parsing')
    ref = PairedImageDataset(ref_opt)
    assert len(ours) == len(ref) == 3
    cases = [(i, seed) for i in range(len(ref)) for seed in range(4)]
    mine = []
    for i, seed in cases:
        random.seed(seed)
        mine.append(ours[i])
    ours.close()
    for (i, seed), a in zip(cases, mine):
        random.seed(seed)
        b = ref[i]
        for k in ('lq_path', 'gt_path'):
            assert a[k] == b[k]
        for k in ('lq', 'gt'):
            assert a[k].shape == b[k].shape
            assert torch.equal(a[k], b[k]), (k, i, seed)
    if phase == 'val':
        assert tuple(mine[0]['gt'].shape) == (3, 32, 32) and tuple(mine[0]['masks'].shape) == (4, 32, 32)


@pytest.mark.parametrize('rot_mode', ['basicsr', 'rot90'])
def test_joint_augmentation_keeps_everything_aligned(tmp_path, rot_mode):
    paths, *_ = _make_data(str(tmp_path), blocky=True)
    ds = FSRFaceDataset(_opt(paths, rot_mode=rot_mode, return_parsing=True, return_parsing_lq=True))
    for seed in range(24):
        random.seed(seed)
        out = ds[seed % len(ds)]
        gt, lq, parsing = out['gt'], out['lq'], out['parsing_gt']
        assert torch.equal(gt[:, ::SCALE, ::SCALE], lq)
        labels_from_red = torch.round(gt[0] * 255 / 10).long()
        # the label swap changes 2<->3, 4<->5, 7<->8 only: compare after mapping both to the unswapped label
        canon = torch.from_numpy(np.minimum(np.arange(19), swap_left_right(np.arange(19, dtype=np.uint8))))
        assert torch.equal(canon[labels_from_red], canon[parsing])
        assert torch.equal(out['parsing_lq'], parsing[SCALE // 2::SCALE, SCALE // 2::SCALE])


def test_hflip_swaps_left_right_labels(tmp_path):
    paths, hr, _, par = _make_data(str(tmp_path), n=1)
    ds = FSRFaceDataset(_opt(paths, gt_size=32, use_rot=False, return_parsing=True))
    gt_orig = torch.from_numpy(hr['face000'][..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)
    par_orig = par['face000']
    seen = set()
    for seed in range(16):
        random.seed(seed)
        out = ds[0]
        if torch.equal(out['gt'], gt_orig):
            assert np.array_equal(out['parsing_gt'].numpy(), par_orig)
            seen.add('plain')
        else:
            assert torch.equal(out['gt'], gt_orig.flip(-1))
            expected = swap_left_right(par_orig[:, ::-1])
            assert np.array_equal(out['parsing_gt'].numpy(), expected)
            assert not np.array_equal(expected, par_orig[:, ::-1])  # the swap really changed labels
            assert (out['parsing_gt'] == 4).sum() == (par_orig == 5).sum()
            seen.add('flipped')
    assert seen == {'plain', 'flipped'}


def test_rot90_mode_without_hflip_never_mirrors(tmp_path):
    paths, _, _, par = _make_data(str(tmp_path), n=1)
    ds = FSRFaceDataset(_opt(paths, gt_size=None, use_hflip=False, rot_mode='rot90', return_parsing=True))
    rots = {k: np.rot90(par['face000'], k) for k in range(4)}
    seen = set()
    for seed in range(20):
        random.seed(seed)
        p = ds[0]['parsing_gt'].numpy()
        match = [k for k, r in rots.items() if np.array_equal(p, r)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {0, 1, 2, 3}


def test_masks_and_binary_parsing(tmp_path):
    paths, _, _, par = _make_data(str(tmp_path), n=1)
    ds = FSRFaceDataset(
        _opt(paths, phase='val', return_parsing=True, return_binary_parsing=True, return_component_masks=True))
    out = ds[0]
    p = par['face000']
    masks = out['masks'].numpy()
    assert masks.shape == (4, 32, 32) and set(np.unique(masks)) <= {0.0, 1.0}
    for c, labels in enumerate([(4, 5), (2, 3), (10, ), (11, 12, 13)]):
        assert np.array_equal(masks[c] == 1, np.isin(p, labels))
    assert np.array_equal(component_masks(p), masks)
    assert np.array_equal(out['parsing_bin_gt'][0].numpy() == 1, p == 1)
    bin_lq = out['parsing_bin_lq']
    assert tuple(bin_lq.shape) == (1, 8, 8) and bin_lq.min() >= 0 and bin_lq.max() <= 1
    # the bicubic downsampling keeps the mean of the map roughly
    assert abs(bin_lq.mean().item() - (p == 1).mean()) < 0.05


def test_missing_key_and_corrupt_image_errors(tmp_path):
    paths, *_ = _make_data(str(tmp_path))
    env = lmdb.open(paths['hr.lmdb'], map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.delete(b'face001')
        txn.put(b'face002', b'not a png at all')
    env.close()
    ds = FSRFaceDataset(_opt(paths))
    ds[0]
    with pytest.raises(KeyError, match=r"face001.*hr\.lmdb.*rebuild it with the tool that wrote it"):
        ds[1]  # no tool's mark on this folder: no promise of what a rerun does
    with pytest.raises(ValueError, match=r"face002.*hr\.lmdb.*corrupt"):
        ds[2]
    os.remove(os.path.join(paths['parsing'], 'face001.png'))
    ds = FSRFaceDataset(_opt(paths, lmdb_backend=False, return_parsing=True))
    index = [i for i, p in enumerate(ds.paths) if 'face001' in p['gt_path']][0]
    with pytest.raises(FileNotFoundError, match='face001.png'):
        ds[index]


def test_parsing_option_errors(tmp_path):
    paths, *_ = _make_data(str(tmp_path))
    opt = _opt(paths, return_component_masks=True)
    opt.pop('dataroot_parsing')
    with pytest.raises(ValueError, match='dataroot_parsing'):
        FSRFaceDataset(opt)
    with pytest.raises(FileNotFoundError, match='nothing.lmdb.*fsr-prepare'):
        FSRFaceDataset(_opt(paths, dataroot_parsing=str(tmp_path / 'nothing.lmdb'), return_parsing=True))


def test_train_and_val_datasets_share_one_lmdb(tmp_path):
    """A training and a validation set on the same LMDBs (BasicSR's reader dies with 'already open in this process'),
    and a DataLoader worker forked after the main process opened them."""
    paths, hr, _, _ = _make_data(str(tmp_path))
    train = FSRFaceDataset(_opt(paths, return_component_masks=True))
    val = FSRFaceDataset(_opt(paths, phase='val', gt_size=None, use_hflip=False, use_rot=False))
    assert train[0]['gt'].shape == (3, 16, 16) and 'masks' in train[0]
    for i, key in enumerate(sorted(hr)):
        assert np.array_equal(tensor2img(val[i]['gt']), hr[key])
    loader = torch.utils.data.DataLoader(val, batch_size=3, num_workers=1)
    batch = next(iter(loader))
    assert batch['gt'].shape == (3, 3, 32, 32)
    assert np.array_equal(tensor2img(batch['gt'][0]), hr[sorted(hr)[0]])


def test_every_lmdb_error_names_the_lmdb(tmp_path):
    """Issue 23: an LMDB problem names the LMDB (the key alone says nothing when several datasets are in use)."""
    paths, hr, lr, par = _make_data(str(tmp_path))
    # LR and HR LMDBs of different faces (BasicSR's own message named neither)
    other = write_lmdb(str(tmp_path / 'other_lr.lmdb'), {k: v for k, v in list(lr.items())[:2]})
    with pytest.raises(ValueError, match=r'other_lr\.lmdb and .*hr\.lmdb list different faces .*face002'):
        FSRFaceDataset(_opt(paths, dataroot_lq=other))
    # an empty meta_info.txt
    empty = write_lmdb(str(tmp_path / 'empty.lmdb'), {'face000': lr['face000']})
    open(os.path.join(empty, 'meta_info.txt'), 'w').close()
    with pytest.raises(ValueError, match=r'empty\.lmdb/meta_info\.txt lists no face'):
        FSRFaceDataset(_opt(paths, dataroot_lq=empty))
    # a parsing map of another size and one with labels outside 0..18
    small = write_lmdb(str(tmp_path / 'small_parsing.lmdb'), {k: v[:16, :16] for k, v in par.items()}, fmt='png')
    with pytest.raises(ValueError, match=r"parsing map \(key 'face000' of \S*small_parsing\.lmdb\) has size"):
        FSRFaceDataset(_opt(paths, dataroot_parsing=small, return_parsing=True, phase='val'))[0]
    wild = write_lmdb(str(tmp_path / 'wild_parsing.lmdb'), {k: v + 100 for k, v in par.items()}, fmt='png')
    with pytest.raises(ValueError, match=r"key 'face000' of \S*wild_parsing\.lmdb\) has label"):
        FSRFaceDataset(_opt(paths, dataroot_parsing=wild, return_parsing=True, phase='val'))[0]
    # a data.mdb that is not an LMDB
    broken = str(tmp_path / 'broken_lr.lmdb')
    os.makedirs(broken)
    with open(os.path.join(broken, 'data.mdb'), 'wb') as f:
        f.write(b'not an lmdb' * 1000)
    with open(os.path.join(paths[f'lr_x{SCALE}.lmdb'], 'meta_info.txt')) as src:
        open(os.path.join(broken, 'meta_info.txt'), 'w').write(src.read())
    with pytest.raises(ValueError, match=r'broken_lr\.lmdb cannot be opened as an LMDB'):
        FSRFaceDataset(_opt(paths, dataroot_lq=broken))[0]


@pytest.mark.parametrize('phase', ['train', 'val'])
def test_wrong_scale_lr_is_refused_in_every_phase(tmp_path, phase):
    """Issue 23: an x8 LR set under scale 4 is refused when the dataset is built (LMDB: every pair from meta_info.txt),
    in training and validation alike (validation used to crop the HR face to its top-left corner)."""
    from fsr_utils.compat import PairSizeError
    paths, hr, lr, par = _make_data(str(tmp_path))
    x8_faces = {k: cv2.resize(v, (4, 4), interpolation=cv2.INTER_AREA) for k, v in hr.items()}
    x8 = write_lmdb(str(tmp_path / 'lr_x8.lmdb'), x8_faces)
    with pytest.raises(
            PairSizeError,
            match=r'key face000: LR 4x4 in \S*lr_x8\.lmdb x scale 4 != HR 32x32 in '
            r'\S*hr\.lmdb \(an x8 pair\).*lr_x4'):
        FSRFaceDataset(_opt(paths, dataroot_lq=x8, phase=phase, gt_size=16 if phase == 'train' else None))


def test_truncated_lmdb_is_an_error_not_a_crash_and_the_advice_fits_the_folder(tmp_path):
    """A truncated data.mdb used to kill the loader with a bus error; the advice names what a rerun really does."""
    from fsr_data.lmdb_io import LmdbDamagedError
    paths, *_ = _make_data(str(tmp_path))
    open(os.path.join(str(tmp_path), 'manifest.jsonl'), 'w').close()  # fsr-prepare's mark on the dataset folder
    env = lmdb.open(paths['hr.lmdb'], map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.delete(b'face001')
    env.close()
    ds = FSRFaceDataset(_opt(paths))
    with pytest.raises(KeyError, match=r"face001.*hr\.lmdb.*rerun the fsr-prepare command that made"):
        ds[1]
    ds.close()  # the last reader closes the environment: the next dataset opens the file anew, as a new process does
    data = os.path.join(paths['hr.lmdb'], 'data.mdb')
    size = os.path.getsize(data)
    with open(data, 'r+b') as f:
        f.truncate(size // 2)
    with pytest.raises(LmdbDamagedError, match=r'hr\.lmdb/data\.mdb is truncated.*rerun the fsr-prepare command'):
        FSRFaceDataset(_opt(paths))[0]
