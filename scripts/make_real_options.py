#!/usr/bin/env python
"""Write the real-degradation option files from the bicubic ones (rerun when a network section of those changes).

``options/train_<net>_real_x4.yml`` = ``options/train_<net>_x4.yml`` (network, losses, schedule: copied verbatim) with
the training LR faces made on the fly from the HR faces (``degradation:`` of ``FSRFaceDataset``, Real-ESRGAN's
first-order defaults, see ``fsr_data/degradations.py``) and the validation faces degraded at the ``medium`` level with
a fixed seed per face (the same LR faces as ``fsr-degrade --level medium --seed 0``).
``options/demo/train_tanet_real_demo_x4.yml`` = ``options/demo/train_tanet_demo_x4.yml`` likewise, with ranges from
mild to a little beyond medium (a few CPU minutes of training cannot cover Real-ESRGAN's widest ranges), the training
faces plus generic photo tiles (``demo_data/train_real``, see ``fsr_data/demo.py``), an EMA of the weights
(Real-ESRNet's ``ema_decay`` 0.999) and a schedule 6x as long (``DEMO_CHANGES``).

    python scripts/make_real_options.py            # rewrite the five files
    python scripts/make_real_options.py --check    # exit 1 if a file is out of date
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = ('tanet', 'laat', 'aminet', 'wnet')
NAMES = {'tanet': 'TANet', 'laat': 'LAAT', 'aminet': 'AMINet', 'wnet': 'W-Net'}
# What the x4 source file is: LAAT's paper reports 8x only, so its x4 file is an extension, not a paper configuration.
SOURCE_KIND = {'laat': "the paper's x8 settings\n# applied at x4 (an EXTENSION: LAAT reports 8x only) of"}

TRAIN_PAPER = """\
    # LR faces made on the fly from the HR faces (dataroot_lq is not read): blur, random down-sampling,
    # Gaussian/Poisson noise, JPEG with BasicSR's functions; {} = Real-ESRGAN's first-order recipe
    # (fsr_data/degradations.py)
    degradation: {}
"""
TRAIN_DEMO = """\
    # LR faces made on the fly from the HR faces (fsr_data/degradations.py): Real-ESRGAN's first-order kernels, with
    # noise and JPEG ranges from the mild to a little beyond the medium test level (a few CPU minutes cannot cover
    # Real-ESRGAN's widest ranges)
    degradation:
      noise_range: [1, 20]
      poisson_scale_range: [0.05, 2]
      jpeg_range: [40, 95]
"""
VAL = """\
    # the {} faces degraded at the medium level, one fixed seed per face: the LR faces of
    # fsr-degrade --level medium --seed 0 (fsr_data/degradations.py)
    degradation: {level: medium, seed: 0}
"""

# The demo's changes for degraded faces (measured on the held-out faces x 8 draws at the medium level, see the README's
# real-degradation section): five training people teach a network to remove noise and JPEG blocks from their own faces
# only, so the training set adds generic photo tiles; an EMA of the weights (as Real-ESRNet) and a schedule 6x as long
# as the bicubic demo's (degraded faces learn slower).
DEMO_CHANGES = {
    'dataroot_gt': ('    dataroot_gt: demo_data/train/hr.lmdb\n',
                    '    dataroot_gt: demo_data/train_real/hr.lmdb   # training faces + generic photo tiles\n'),
    'total_iter':
    ('  total_iter: 800\n', '  total_iter: 4800      # 6x the bicubic demo: degraded faces learn slower\n'),
    'milestones': ('    milestones: [600]\n', '    milestones: [3600]\n'),
    'ema_decay':
    ('  warmup_iter: -1\n', '  warmup_iter: -1\n  ema_decay: 0.999       # an EMA of the weights, as Real-ESRNet\n'),
    'save_checkpoint_freq': ('  save_checkpoint_freq: 800\n', '  save_checkpoint_freq: 4800\n'),
}


def realize(text, src, train_block, header, schedule=None):
    """The real-degradation version of an option file's text (see the module docstring)."""
    lines = text.splitlines(keepends=True)
    out, section, val_split = [], None, 'test'
    for line in lines:
        m = re.match(r'^  (\w+):\s*$', line)
        if m and out and any(x.startswith('datasets:') for x in out):
            section = m.group(1)
        if re.match(r'^\S', line):
            section = None if not line.startswith('datasets:') else section
        if line.startswith('name: '):
            # TANet_x4_CelebA -> TANet_real_x4_CelebA, TANet_demo_x4 -> TANet_real_demo_x4
            line = re.sub(r'^name: ([A-Za-z0-9-]+?)_((demo_)?x\d)', r'name: \1_real_\2', line)
        if section == 'val' and line.lstrip().startswith('dataroot_gt:') and '/val/' in line:
            val_split = 'validation'
        if section is not None and line.lstrip().startswith('dataroot_lq:'):
            line = train_block if section == 'train' else VAL.replace("{}", val_split, 1)
        out.append(line)
    body = ''.join(out)
    for key, (before, after) in (schedule or {}).items():
        if body.count(before) != 1:
            raise SystemExit(f'{src}: expected one line {before.strip()!r} to replace ({key}); update DEMO_CHANGES.')
        body = body.replace(before, after)
    # the source's own header comments are replaced (they name the source's commands)
    while body.startswith('#'):
        body = body.split('\n', 1)[1]
    note = (f'# GENERATED by scripts/make_real_options.py from {src}:\n# every section but the datasets\' '
            'LR faces and the name is that file\'s; rerun the script when it changes.\n')
    if schedule:
        note += f'# Also changed here (DEMO_CHANGES): {", ".join(schedule)}.\n'
    return header + note + body


def targets():
    for net in NETS:
        src = f'options/train_{net}_x4.yml'
        dst = f'options/train_{net}_real_x4.yml'
        header = (
            f'# {NAMES[net]} x4 trained on synthetic real-world degradations (blur, noise, JPEG) of the HR faces\n'
            f'# instead of bicubic LR faces; network and schedule: {SOURCE_KIND.get(net, "the paper configuration of")}'
            f' {src}.\n'
            f'# Train: fsr-train -opt {dst}\n')
        yield src, dst, TRAIN_PAPER, header, None
    src = 'options/demo/train_tanet_demo_x4.yml'
    dst = 'options/demo/train_tanet_real_demo_x4.yml'
    header = (f'# CPU demo: the small TANet of {src} trained on synthetic real-world\n'
              f'# degradations of the demo faces (a few CPU minutes). Train: fsr-train -opt {dst}\n'
              '# (checkpoints: experiments/TANet_real_demo_x4/models/)\n')
    yield src, dst, TRAIN_DEMO, header, DEMO_CHANGES


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true', help='only check that the files are up to date')
    args = p.parse_args()
    stale = []
    for src, dst, train_block, header, schedule in targets():
        with open(os.path.join(ROOT, src)) as f:
            text = realize(f.read(), src, train_block, header, schedule)
        path = os.path.join(ROOT, dst)
        old = open(path).read() if os.path.isfile(path) else None
        if old != text:
            stale.append(dst)
            if not args.check:
                with open(path, 'w') as f:
                    f.write(text)
    if args.check and stale:
        print('out of date (rerun scripts/make_real_options.py):', ', '.join(stale))
        return 1
    print(('up to date' if args.check else 'written: ' + ', '.join(stale)) if stale or args.check else 'no change')
    return 0


if __name__ == '__main__':
    sys.exit(main())
