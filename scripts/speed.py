"""Run ``fsr-speed`` from a checkout without installing: ``python scripts/speed.py [--arch NAME] [--quick]``.

See :mod:`fsr_tools.speed` for the options.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_tools.speed import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
