"""fsr-prepare: split rules, interruption/resume, skip report, LR kernels, and the dataset reading the result."""
import cv2
import json
import numpy as np
import os
import pytest
import skimage.data
from basicsr.utils.matlab_functions import imresize
from helpers import Interrupt, fault_at, lmdb_items, smooth_photos

from fsr_data.face_dataset import FSRFaceDataset
from fsr_data.prepare import make_keys, prepare, read_split_file, select_split


def _meta_keys(path):
    with open(os.path.join(path, 'meta_info.txt')) as f:
        return [ln.split('.')[0] for ln in f]


ARGS = ['--aligned', '--hr-size', '32', '--scales', '4', '8', '--parsing', 'none', '--commit-every', '3', '--quiet']


def test_split_rules_on_fake_lists(tmp_path):
    names = [f'{i:06d}.jpg' for i in range(1, 169854 + 11)]
    (tmp_path / 'dic.txt').write_text('\n'.join(names) + '\n')
    rows = read_split_file(str(tmp_path / 'dic.txt'))
    train = select_split(rows, 'dic-celeba', 'train')
    test = select_split(rows, 'dic-celeba', 'test')
    assert len(train) == 168854 and len(test) == 1000
    assert train[0] == '000001.jpg' and test[-1] == names[169853] and not set(train) & set(test)
    with pytest.raises(ValueError, match='169854'):
        select_split(rows[:5000], 'dic-celeba', 'train')

    # CelebA list_eval_partition.txt format: 162770 train (0), 19867 val (1), 19962 test (2)
    parts = [0] * 162770 + [1] * 19867 + [2] * 19962
    lines = [f'{i + 1:06d}.jpg {p}' for i, p in enumerate(parts)]
    (tmp_path / 'part.txt').write_text('\n'.join(lines) + '\n')
    rows = read_split_file(str(tmp_path / 'part.txt'))
    tr = select_split(rows, 'fsrnet-celeba', 'train')
    te = select_split(rows, 'fsrnet-celeba', 'test')
    assert len(tr) == 18000 and len(te) == 100
    assert all(int(n[:6]) <= 162770 for n in tr) and all(int(n[:6]) > 182637 for n in te)
    assert tr == select_split(rows, 'fsrnet-celeba', 'train')  # deterministic
    assert tr != select_split(rows, 'fsrnet-celeba', 'train', seed=1)
    assert len(select_split(rows, 'fsrnet-celeba', 'test', test_count=1000)) == 1000
    assert select_split(rows, 'list', 'test') == [f'{i:06d}.jpg' for i in range(182638, 202600)]

    helen = [f'helen_{i}.jpg' for i in range(330)]
    rows = [(n, None) for n in helen]
    assert select_split(rows, 'helen-test', 'test') == helen[:50]
    assert select_split(rows, 'helen-test', 'train') == helen[50:]
    assert make_keys(['a/b.c.jpg', 'a_b_c.png', 'x y.jpg']) == ['a_b_c', 'a_b_c_1', 'x_y']


@pytest.mark.parametrize('point,count', [('after_commit', 2), ('after_photo', 5), ('after_move', 'hr')])
def test_interrupted_run_resumes_without_duplicates(tmp_path, point, count):
    src = smooth_photos(str(tmp_path / 'photos'))
    ref = str(tmp_path / 'ref')
    prepare([src, '-o', ref] + ARGS)
    out = str(tmp_path / 'out')
    with pytest.raises(Interrupt):
        prepare([src, '-o', out] + ARGS, _fault=fault_at(point, count))
    assert not os.path.isfile(os.path.join(out, 'manifest.jsonl'))  # nothing looks finished
    if point == 'after_commit':
        # the interruption left LMDB entries without manifest lines, and a manifest line cut in the middle
        assert len(lmdb_items(os.path.join(out, '.staging', 'hr.lmdb'))) == 6
        with open(os.path.join(out, '.staging', 'manifest.partial.jsonl'), 'a') as f:
            f.write('{"key": "img05", "sour')
    summary = prepare([src, '-o', out] + ARGS)
    assert summary['status'] == 'done' and summary['faces'] == 10
    assert not os.path.exists(os.path.join(out, '.staging'))
    for name in ('hr', 'lr_x4', 'lr_x8'):
        keys = _meta_keys(os.path.join(out, f'{name}.lmdb'))
        assert keys == sorted(set(keys)) and len(keys) == 10
        assert lmdb_items(os.path.join(out, f'{name}.lmdb')) == lmdb_items(os.path.join(ref, f'{name}.lmdb'))
    manifest = [json.loads(ln) for ln in open(os.path.join(out, 'manifest.jsonl'))]
    assert sorted(e['key'] for e in manifest) == [f'img{i:02d}' for i in range(10)]
    assert prepare([src, '-o', out] + ARGS)['status'] == 'complete'


def test_bad_images_are_reported_and_skipped(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), n=3)
    (tmp_path / 'photos' / 'broken.jpg').write_bytes(b'\xff\xd8 this is not a JPEG')
    cv2.imwrite(str(tmp_path / 'photos' / 'tiny.png'), np.zeros((12, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'photos' / 'flat.png'), np.full((120, 100, 3), 127, np.uint8))
    astronaut = cv2.resize(skimage.data.astronaut()[..., ::-1], (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / 'photos' / 'astronaut.png'), astronaut)
    out = str(tmp_path / 'out')
    summary = prepare([src, '-o', out] + ARGS)
    assert summary['faces'] == 5 and summary['skipped'] == 2
    report = {
        ln.split('\t')[0]: ln.split('\t')[1]
        for ln in open(os.path.join(out, 'skipped.tsv')).read().split('\n')[1:] if ln
    }
    assert report == {'broken.jpg': 'unreadable', 'tiny.png': 'too_small'}

    # with detection: a face is found and aligned, a flat image has no face, a list file names a missing photo
    (tmp_path / 'photos' / 'list.txt').write_text('astronaut.png\nflat.png\nbroken.jpg\nmissing.jpg\n')
    out2 = str(tmp_path / 'out2')
    summary = prepare([
        str(tmp_path / 'photos' / 'list.txt'), '-o', out2, '--hr-size', '64', '--scales', '4', '--parsing', 'landmarks',
        '--quiet'
    ])
    assert summary['faces'] == 1 and summary['skipped'] == 3
    lines = open(os.path.join(out2, 'skipped.tsv')).read().split('\n')[1:]
    report = {ln.split('\t')[0]: ln.split('\t')[1] for ln in lines if ln}
    assert report == {'flat.png': 'no_face', 'broken.jpg': 'unreadable', 'missing.jpg': 'unreadable'}
    entry = json.loads(open(os.path.join(out2, 'manifest.jsonl')).readline())
    M = np.array(entry['transform'])
    eyes = np.array(entry['landmarks'])[:2] @ M[:, :2].T + M[:, 2]
    assert np.all(np.abs(eyes[:, 1] - 32.7) < 3) and eyes[0, 0] < 32 < eyes[1, 0]  # eyes at the template height
    ds = FSRFaceDataset(
        dict(
            dataroot_gt=f'{out2}/hr.lmdb',
            dataroot_lq=f'{out2}/lr_x4.lmdb',
            dataroot_parsing=f'{out2}/parsing.lmdb',
            io_backend={'type': 'lmdb'},
            scale=4,
            phase='val',
            return_component_masks=True,
            return_parsing=True))
    sample = ds[0]
    assert tuple(sample['lq'].shape) == (3, 16, 16) and sample['masks'].sum(dim=(1, 2)).min() > 0
    eye_rows = np.nonzero(sample['masks'][0].sum(1).numpy())[0]
    mouth_rows = np.nonzero(sample['masks'][3].sum(1).numpy())[0]
    assert eye_rows.mean() < mouth_rows.mean()  # the eyes are above the mouth
    parsing = sample['parsing_gt'].numpy()
    assert np.nonzero(parsing == 4)[1].mean() < 32 < np.nonzero(parsing == 5)[1].mean()  # l_eye on the image's left


def test_lr_kernels_and_non_square(tmp_path):
    src = smooth_photos(str(tmp_path / 'photos'), n=2, size=(96, 80))
    out = str(tmp_path / 'out')
    prepare([src, '-o', out, '--aligned', '--hr-size', '48x40', '--scales', '4', '8', '--parsing', 'none', '--quiet'])
    hr = cv2.imdecode(np.frombuffer(lmdb_items(f'{out}/hr.lmdb')[b'img00'], np.uint8), cv2.IMREAD_COLOR)
    lr = cv2.imdecode(np.frombuffer(lmdb_items(f'{out}/lr_x8.lmdb')[b'img00'], np.uint8), cv2.IMREAD_COLOR)
    assert hr.shape == (48, 40, 3) and lr.shape == (6, 5, 3)
    expected = np.clip(np.round(imresize(hr.astype(np.float32) / 255., 1 / 8) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(lr, expected)
    out2 = str(tmp_path / 'out2')
    prepare([
        src, '-o', out2, '--aligned', '--hr-size', '48x40', '--scales', '4', '--parsing', 'none', '--lr-kernel',
        'pil-bicubic', '--quiet'
    ])
    lr_pil = cv2.imdecode(np.frombuffer(lmdb_items(f'{out2}/lr_x4.lmdb')[b'img00'], np.uint8), cv2.IMREAD_COLOR)
    lr_mat = cv2.imdecode(np.frombuffer(lmdb_items(f'{out}/lr_x4.lmdb')[b'img00'], np.uint8), cv2.IMREAD_COLOR)
    assert lr_pil.shape == lr_mat.shape == (12, 10, 3)
    assert 0 < np.abs(lr_pil.astype(int) - lr_mat).mean() < 10
    with pytest.raises(FileExistsError, match='overwrite'):
        os.makedirs(f'{tmp_path}/other/hr.lmdb')
        prepare([src, '-o', f'{tmp_path}/other', '--aligned', '--hr-size', '48x40', '--scales', '4', '--quiet'])


def test_alignment_transform_and_inverse():
    from fsr_data.face_align import align_face, apply_affine, inverse_affine, template_5pts
    tpl = template_5pts(64, 48)
    assert tpl.shape == (5, 2) and tpl[0, 0] < tpl[2, 0] < tpl[1, 0] and tpl[0, 1] < tpl[2, 1] < tpl[3, 1]
    ang, s, t = np.deg2rad(20), 2.5, np.array([130., 90.])
    A = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lm = tpl @ A.T + t  # the template seen rotated, 2.5x larger, shifted in a "photo"
    photo = (np.random.RandomState(0).rand(320, 320, 3) * 255).astype(np.uint8)
    crop, M = align_face(photo, lm, (64, 48))
    assert crop.shape == (64, 48, 3) and M.shape == (2, 3)
    assert np.abs(apply_affine(M, lm) - tpl).max() < 1e-3
    assert np.abs(apply_affine(inverse_affine(M), tpl) - lm).max() < 1e-3
    assert abs(np.linalg.det(M[:, :2]) - 1 / s**2) < 1e-6


def test_detector_and_bisenet_weights_are_local_files(tmp_path):
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.bisenet import BiSeNet

    from fsr_data.face_align import FaceDetector
    from fsr_data.parsing import BiSeNetParser
    with pytest.raises(FileNotFoundError, match='detection_Resnet50_Final.pth'):
        FaceDetector('retinaface', weights=str(tmp_path / 'missing.pth'))
    with pytest.raises(FileNotFoundError, match='parsing_bisenet.pth'):
        BiSeNetParser(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='--bisenet-weights'):
        prepare([str(tmp_path), '-o', str(tmp_path / 'o'), '--parsing', 'bisenet'])
    # random weights saved locally stand in for the real files: the code paths load and run them
    torch.manual_seed(0)
    path = tmp_path / 'detection_mobilenet0.25_Final.pth'
    torch.save(RetinaFace('mobile0.25', device='cpu').state_dict(), path)
    faces = FaceDetector('retinaface', weights=str(path), threshold=0.0).detect(np.zeros((64, 64, 3), np.uint8))
    assert all(f['landmarks'].shape == (5, 2) and f['box'].shape == (4, ) for f in faces)
    torch.save(BiSeNet(num_class=19).state_dict(), tmp_path / 'parsing_bisenet.pth')
    labels, _ = BiSeNetParser(str(tmp_path)).parse(np.zeros((40, 32, 3), np.uint8))
    assert labels.shape == (40, 32) and labels.dtype == np.uint8 and labels.max() < 19
