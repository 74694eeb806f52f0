"""Does TANet's reflect-padded last token row matter? (a measurement, not a test; issue 24, protocol item)

TANet's window reading cuts the shallow feature into 4x4 patches and pads the bottom/right to a multiple of 4 by
reflection (``fsr_arch/tanet_arch.py``). CelebA x4 tests on 54x44 LR faces, whose last token row is half padded, while
``options/train_tanet_x4.yml`` trains on 44x44 LR crops, which never are. This script measures the effect on the rows
the padding touches, with two networks of the CPU demo's size trained on the demo faces:

    fsr-train -opt options/demo/train_tanet_demo_x4.yml --force_yml name=TANet_pad_none \
        logger:use_tb_logger=false                                      # 16x16 LR crops: no padded tokens
    fsr-train -opt options/demo/train_tanet_demo_x4.yml --force_yml name=TANet_pad_rows \
        'datasets:train:gt_size=[72,64]' logger:use_tb_logger=false     # 18x16 LR crops: padded like 54x44 faces
    python scripts/measure_tanet_padding.py experiments/TANet_pad_none/models/net_g_800.pth \
        experiments/TANet_pad_rows/models/net_g_800.pth

Each 32x32 LR face (test and training faces of ``--data``) is cut to its first 30 LR rows (and, separately, its first
30 columns), so that its last token row (column) is half padded, as on CelebA x4's test faces. Printed per network:
the Y PSNR of the 8 HR rows (columns) of the last two LR rows (columns), "the band", (a) as the network computes it,
(b) with the global path given the real tokens instead of the padded ones (the shallow feature of the uncut face,
cropped back; the local path and everything else unchanged), and (c) bicubic; and the PSNR of the rest of the crop.
(a) vs (b) is the cost of the padded tokens for one network; the two networks' (a) compare training with and without
padded tokens.
"""
import argparse
import numpy as np
import os
import sys
import torch
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from basicsr.metrics import calculate_psnr  # noqa: E402

from fsr_arch.common import upsample_to  # noqa: E402
from fsr_arch.tanet_arch import TANet  # noqa: E402
from fsr_data.lmdb_io import read_lmdb_images  # noqa: E402


def _tensor(img):
    return torch.from_numpy(img[:, :, ::-1].astype(np.float32) / 255.).permute(2, 0, 1)[None]  # BGR -> RGB


def _u8(x):
    return (x.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _psnr(a, b):
    return calculate_psnr(a, b, crop_border=0, test_y_channel=True, input_order='HWC')


def forward(net, lr, lr_real=None):
    """``TANet.forward``; with ``lr_real`` (the uncut face) the global path sees real tokens where ``lr`` is padded."""
    with torch.no_grad():
        f = net.conv_shallow(lr)
        g = net.global_path(f if lr_real is None else net.conv_shallow(lr_real))[..., :f.shape[-2], :f.shape[-1]]
        out = net.conv_recon(net.upsample(net.glam(g, net.local_path(f)) + f))
        return out + upsample_to(lr, scale=net.upscale) if net.img_residual else out


def measure(net, hrs, lrs, cut=30):
    s = net.upscale
    rows = {'band': [], 'band_real': [], 'band_bicubic': [], 'rest': []}
    for hr, lr in zip(hrs, lrs):
        lr_t = _tensor(lr)
        for axis in (0, 1):  # cut rows (padded bottom token row) or columns (padded right token column)
            lr_cut = lr_t[:, :, :cut] if axis == 0 else lr_t[:, :, :, :cut]
            hr_cut = _u8(_tensor(hr))[:cut * s] if axis == 0 else _u8(_tensor(hr))[:, :cut * s]
            out, out_real = _u8(forward(net, lr_cut)), _u8(forward(net, lr_cut, lr_t))
            bicubic = _u8(upsample_to(lr_cut, scale=s))
            inner = slice(s, hr_cut.shape[1 - axis] - s)  # crop_border = scale along the band
            band = (slice((cut - 2) * s, cut * s), inner)
            rest = (slice(s, (cut - 2) * s), inner)
            if axis:
                band, rest = band[::-1], rest[::-1]
            cases = {'band': (out, band), 'band_real': (out_real, band), 'band_bicubic': (bicubic, band)}
            cases['rest'] = (out, rest)
            for key, (img, region) in cases.items():
                rows[key].append(_psnr(img[region], hr_cut[region]))
    return {k: np.array(v) for k, v in rows.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoints', nargs='+', help='TANet checkpoints of options/demo/train_tanet_demo_x4.yml')
    p.add_argument('--options', default=os.path.join(REPO_ROOT, 'options', 'demo', 'train_tanet_demo_x4.yml'))
    p.add_argument('--data', default='demo_data', help='folder with test/ and train/ (hr.lmdb, lr_x4.lmdb)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with open(args.options) as f:
        net_opt = yaml.safe_load(f)['network_g']
    net_opt.pop('type')
    for ckpt in args.checkpoints:
        net = TANet(**net_opt)
        net.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True)['params'])
        net.eval()
        for split in ('test', 'train'):
            hrs = read_lmdb_images(os.path.join(args.data, split, 'hr.lmdb'))
            lrs = read_lmdb_images(os.path.join(args.data, split, f'lr_x{net.upscale}.lmdb'))
            r = measure(net, [hrs[k] for k in sorted(hrs)], [lrs[k] for k in sorted(hrs)])
            d = r['band_real'] - r['band']
            print(f'{ckpt} {split} ({len(d)} crops): band {r["band"].mean():.3f} dB, global path on real tokens '
                  f'{r["band_real"].mean():.3f} dB (real - padded {d.mean():+.3f}, max |.| {np.abs(d).max():.3f}), '
                  f'bicubic {r["band_bicubic"].mean():.3f} dB; rest of the crop {r["rest"].mean():.3f} dB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
