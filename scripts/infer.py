"""Run ``fsr-infer`` from a checkout without installing (``python scripts/infer.py -i PHOTO -o OUT --opt ...``).

See :mod:`fsr_tools.infer_cli` for the options and :mod:`fsr_tools.restorer` for the library API.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_tools.infer_cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
