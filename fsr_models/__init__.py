"""The plugin's models (MODEL_REGISTRY): every ``*_model.py`` module here registers itself."""
from fsr_utils import compat

compat.install_torchvision_shim()

from fsr_utils.plugin import import_modules  # noqa: E402

_modules = import_modules(__name__, __file__, '_model')
