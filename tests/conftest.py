import os
import pytest
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
sys.path.insert(0, os.path.join(TESTS_DIR, 'offline'))
sys.path.insert(0, REPO_ROOT)

import offline_guard  # noqa: E402


@pytest.fixture(autouse=True)
def offline():
    """Every test runs offline: a connection to a non-loopback address raises NetworkAccessError."""
    offline_guard.install()
    yield
    offline_guard.uninstall()
