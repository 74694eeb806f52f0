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


@pytest.fixture
def one_thread():
    """One intra-op torch thread for a test (``helpers.torch_threads``); modules opt in with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    from helpers import torch_threads
    with torch_threads(1):
        yield


@pytest.fixture(scope='module')
def one_thread_module():
    """One intra-op torch thread for a whole module, its module-scoped fixtures included."""
    from helpers import torch_threads
    with torch_threads(1):
        yield
