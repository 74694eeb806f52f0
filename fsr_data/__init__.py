"""The plugin's datasets (DATASET_REGISTRY): every ``*_dataset.py`` module here registers itself.

Importing the package itself is light, so that ``fsr-prepare --help`` (``fsr_data.prepare``) starts without torch or
basicsr: the dataset modules are imported, and so registered, by :func:`register`, which the plugin's loader
(:func:`fsr_utils.plugin.load`, run by the import hook whenever a process imports basicsr) calls, and which runs here
at once when basicsr is already imported.
"""
import sys

_modules = None


def register():
    """Import (and so register) every dataset module of the package. Idempotent; returns the modules."""
    global _modules
    if _modules is None:
        from fsr_utils import compat
        compat.install_torchvision_shim()
        from fsr_utils.plugin import import_modules
        _modules = import_modules(__name__, __file__, '_dataset')
    return _modules


if 'basicsr' in sys.modules:
    register()
