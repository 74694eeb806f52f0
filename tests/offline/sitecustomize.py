"""Put on PYTHONPATH of the test suite's subprocesses: any connection to a non-loopback address fails the process."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import offline_guard  # noqa: E402

offline_guard.install()
