"""W-Net's demo option file trains on real demo faces with landmark parsing maps, and its losses fall.

The demo set is built here by ``fsr_data.demo`` (as ``scripts/make_demo_data.py`` does) from the two photos that the
plugin's own dependencies ship (scikit-image's astronaut for training, matplotlib's Grace Hopper held out), so the test
does not depend on the optional insightface photo.
"""
import os
import pytest
from helpers import REPO_ROOT, console_script, loss_fell, read_losses, run_command

from fsr_data.lmdb_io import read_lmdb_images

WNET_DEMO = os.path.join(REPO_ROOT, 'options', 'demo', 'train_wnet_demo_x4.yml')


def test_wnet_demo_training_on_real_faces(tmp_path, monkeypatch):
    from fsr_data import demo
    photos = demo.demo_photo_paths()
    monkeypatch.setattr(demo, 'demo_photo_paths', lambda: {k: photos[k] for k in ('astronaut', 'grace_hopper')})
    demo.make_demo_data(str(tmp_path / 'demo_data'), augment=True, hr_size='128', scales=(4, ), quiet=True)
    for part in ('train', 'test'):
        for name in ('hr.lmdb', 'lr_x4.lmdb', 'parsing.lmdb'):
            assert os.path.isfile(tmp_path / 'demo_data' / part / name / 'data.mdb'), (part, name)
    # the degradation-trained demo network's set: every training face (never a test face) + the generic photo tiles
    train = read_lmdb_images(str(tmp_path / 'demo_data' / 'train' / 'hr.lmdb'))
    test = read_lmdb_images(str(tmp_path / 'demo_data' / 'test' / 'hr.lmdb'))
    real = read_lmdb_images(str(tmp_path / 'demo_data' / 'train_real' / 'hr.lmdb'))
    tiles = {k: v for k, v in real.items() if k.startswith('generic_')}
    assert {k: real[k].tobytes() for k in train} == {k: v.tobytes() for k, v in train.items()}
    assert set(real) == set(train) | set(tiles) and not set(real) & set(test)
    assert len(tiles) >= 100 and all(t.shape == (128, 128, 3) for t in tiles.values())
    assert {k.split('_')[1] for k in tiles} == {p.split('_')[0] for p in demo.GENERIC_PHOTOS}

    args = ['train:total_iter=16', 'logger:print_freq=1', 'logger:save_checkpoint_freq=16']
    proc = run_command([console_script('fsr-train'), '-opt', WNET_DEMO, '--force_yml', *args], tmp_path)
    assert '# parsing_mse' in proc.stdout + proc.stderr
    losses = read_losses(tmp_path, 'WNet_demo_x4')
    for name in ('l_pix', 'l_par', 'l_key'):
        assert len(losses[name]) == 16 and loss_fell(losses[name]), (name, losses[name])
    assert (tmp_path / 'experiments' / 'WNet_demo_x4' / 'models' / 'net_g_16.pth').is_file()


def test_generic_tiles_are_photo_crops_and_missing_photos_are_named(monkeypatch, capsys):
    import cv2
    import numpy as np
    from skimage import data

    from fsr_data import demo
    monkeypatch.setattr(demo, 'GENERIC_PHOTOS', ('coffee', 'no_such_photo'))
    tiles = demo.generic_tiles((128, 96))
    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)  # 400 x 600
    assert sorted(tiles) == sorted(f'generic_coffee_{y}_{x}' for y in (0, 128, 256) for x in range(0, 505, 96))
    assert np.array_equal(tiles['generic_coffee_128_192'], coffee[128:256, 192:288])
    assert 'no_such_photo' in capsys.readouterr().out
    monkeypatch.setattr(demo, 'GENERIC_PHOTOS', ('no_such_photo', ))
    with pytest.raises(RuntimeError, match='no generic demo photo.*--no-generic'):
        demo.generic_tiles()
