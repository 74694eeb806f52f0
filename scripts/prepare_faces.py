#!/usr/bin/env python
"""Same as the ``fsr-prepare`` console script (see ``fsr_data/prepare.py`` or ``fsr-prepare --help``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_data.prepare import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
