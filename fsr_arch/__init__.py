"""The plugin's networks (ARCH_REGISTRY): every ``*_arch.py`` module here registers itself."""
from fsr_utils import compat

compat.install_torchvision_shim()

from fsr_utils.plugin import import_modules  # noqa: E402

_modules = import_modules(__name__, __file__, '_arch')
