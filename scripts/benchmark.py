"""Run ``fsr-benchmark`` from a checkout without installing: ``python scripts/benchmark.py --data DIR --scale 4 ...``.

See :mod:`fsr_metrics.benchmark` for the options.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_metrics.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
