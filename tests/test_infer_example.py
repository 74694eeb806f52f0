"""scripts/make_infer_example.py: the small photos it restores (bicubic shrink, + JPEG, or a degradation level), the
labels of its columns and its argument errors (the whole run needs trained checkpoints: README, after the demo)."""
import cv2
import numpy as np
import os
import pytest
from helpers import load_script, synthetic_face

from fsr_data import degradations as deg
from fsr_data.prepare import make_lr


def _script():
    return load_script('make_infer_example')


def test_small_photos():
    m = _script()
    ref = synthetic_face(64, 48, np.random.default_rng(0))[0]
    plain = m.small_photo(ref, 4)
    assert np.array_equal(plain, make_lr(ref, 4, 'matlab'))
    # --jpeg Q: the bicubic shrink saved as an OpenCV JPEG of quality Q
    jpg = m.small_photo(ref, 4, jpeg_quality=30)
    expected = cv2.imdecode(cv2.imencode('.jpg', plain, [int(cv2.IMWRITE_JPEG_QUALITY), 30])[1], cv2.IMREAD_COLOR)
    assert np.array_equal(jpg, expected) and not np.array_equal(jpg, plain)
    # --degradation LEVEL: fsr_data.degradations at that level, seeded by the face's name
    med = m.small_photo(ref, 4, level='medium', name='face0')
    assert np.array_equal(med, deg.degrade(ref, 4, deg.degradation_options('medium'), deg.face_seed('face0')))
    assert not np.array_equal(med, m.small_photo(ref, 4, level='medium', name='face1'))


def test_column_labels_and_argument_errors():
    m = _script()
    path = os.path.join('experiments', 'TANet_real_demo_x4', 'models', 'net_g_latest.pth')
    assert m.short_label(path, 'TANet x4') == 'TANet_real_demo_x4'
    assert m.short_label('net.pth', 'TANet x4') == 'TANet x4' and m.short_label(None, 'linear') == 'linear'
    with pytest.raises(SystemExit, match='JPEG quality is 1-100'):
        m.main(['--linear', '--jpeg', '0'])
    with pytest.raises(SystemExit, match='pass one'):
        m.main(['--linear', '--jpeg', '50', '--degradation', 'medium'])
    with pytest.raises(SystemExit, match='--labels names 2 networks; there are 1'):
        m.main(['--linear', '--labels', 'a', 'b'])
