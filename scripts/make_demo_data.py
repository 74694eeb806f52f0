#!/usr/bin/env python
"""Build the demo face set (demo_data/train, demo_data/test) from photographs shipped by installed packages.

Sources, held-out rule and the training-only augmentation are documented in ``fsr_data/demo.py``. Needs scikit-image and
matplotlib; ``pip install --no-deps insightface==2.1`` adds the 6 faces of its group photo.

    python scripts/make_demo_data.py [--out demo_data] [--no-augment] [--hr-size 128] [--parsing landmarks]
                                     [--no-generic]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_data.demo import demo_photo_paths, make_demo_data  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='demo_data', help='output folder')
    p.add_argument('--no-augment', action='store_true', help='no flipped/rescaled/rotated training variants')
    p.add_argument('--hr-size', default='128', help='HR size: N or HxW')
    p.add_argument('--scales', type=int, nargs='+', default=[4, 8])
    p.add_argument('--parsing', choices=['landmarks', 'none'], default='landmarks')
    p.add_argument(
        '--no-generic',
        action='store_true',
        help='no train_real set (training faces + generic photo tiles '
        'for the degradation-trained demo network)')
    p.add_argument('--quiet', action='store_true')
    args = p.parse_args()
    print('demo photographs found:', ', '.join(f'{k} ({v})' for k, v in demo_photo_paths().items()))
    listing, summaries = make_demo_data(args.out, not args.no_augment, args.hr_size, args.scales, args.parsing,
                                        args.quiet, not args.no_generic)
    for part in ('train', 'test'):
        print(f'{part}: {len(listing[part])} source images -> {summaries[part]["faces"]} faces, '
              f'{summaries[part]["skipped"]} skipped')
    if 'train_real' in summaries:
        print(f'train_real: {summaries["train_real"]["faces"]} training faces + {summaries["train_real"]["tiles"]} '
              'generic photo tiles (HR only: the LR faces are made on the fly)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
