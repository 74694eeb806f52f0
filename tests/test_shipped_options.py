"""The design card's command on the shipped, unchanged option file.

``fsr-train -opt options/train_wnet_x4.yml`` and BasicSR's own ``python basicsr/train.py -opt ...`` start training
W-Net on a folder laid out as ``fsr-prepare`` writes it.

Only sizes and lengths are overridden from the command line (``--force_yml``), as a user on a small machine would.
"""
import os
import shutil
import sys
from helpers import REPO_ROOT, console_script, make_face_dataset, run_command, save_small_vgg19

WNET_X4 = os.path.join(REPO_ROOT, 'options', 'train_wnet_x4.yml')
SMALL = [
    'num_gpu=0', 'network_g:num_up_levels=0', 'datasets:train:gt_size=64', 'datasets:train:batch_size_per_gpu=1',
    'datasets:train:num_worker_per_gpu=0', 'train:total_iter=1', 'logger:use_tb_logger=false', 'logger:print_freq=1',
    'logger:save_checkpoint_freq=1'
]


def _celeba_layout(root):
    """``datasets/CelebA/{train,val}`` (hr, lr_x4 and parsing LMDBs) and the VGG19 file the option file names."""
    for part, num, seed in (('train', 2, 0), ('val', 1, 1)):
        make_face_dataset(
            os.path.join(root, 'datasets', 'CelebA', part),
            num=num,
            hr_size=(64, 64),
            scales=(4, ),
            parsing=True,
            seed=seed)
    os.makedirs(os.path.join(root, 'experiments', 'pretrained_models'))
    save_small_vgg19(os.path.join(root, 'experiments', 'pretrained_models', 'vgg19-dcbb9e9d.pth'))


def _check_started(proc, root):
    out = proc.stdout + proc.stderr
    assert 'Network [WNet] is created.' in out and 'Model [WNetModel] is created.' in out
    assert 'l_key' in out and 'l_par' in out and 'l_pix' in out
    assert os.path.isfile(os.path.join(root, 'experiments', 'WNet_x4_CelebA', 'models', 'net_g_1.pth'))


def test_fsr_train_runs_the_shipped_wnet_file(tmp_path):
    _celeba_layout(str(tmp_path))
    proc = run_command([console_script('fsr-train'), '-opt', WNET_X4, '--force_yml', *SMALL], tmp_path)
    _check_started(proc, str(tmp_path))


def test_basicsr_train_runs_the_shipped_wnet_file(tmp_path):
    import basicsr
    checkout = tmp_path / 'BasicSR'
    (checkout / 'basicsr').mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(basicsr.__file__), 'train.py'), checkout / 'basicsr' / 'train.py')
    _celeba_layout(str(checkout))
    proc = run_command([sys.executable, 'basicsr/train.py', '-opt', WNET_X4, '--force_yml', *SMALL], checkout)
    _check_started(proc, str(checkout))
