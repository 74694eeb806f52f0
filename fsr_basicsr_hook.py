"""Import hook that makes BasicSR's own entry points load the face super-resolution plugin.

Installed as ``fsr_basicsr_hook.pth`` in site-packages, it only adds a meta-path finder (standard library only, nothing
imported). When - and only when - a process imports ``basicsr``, the finder:

1. installs the torchvision compatibility shim that basicsr 1.4.2 needs *before* it is imported, then
2. lets basicsr import as usual, then
3. imports the plugin (``fsr_utils.plugin.load``), which registers its networks, datasets, losses, metrics and models in
   BasicSR's registries and applies the CPU resume/DDP fixes.

So ``python basicsr/train.py -opt options/train_wnet_x4.yml`` in a BasicSR checkout, ``python -m basicsr.train`` and
``python -m basicsr.test`` find the plugin with no change to BasicSR, while a process that never imports basicsr never
imports the plugin. Set ``FSR_DISABLE_BASICSR_HOOK=1`` to run BasicSR without the plugin (the shim stays).
"""
import importlib.abc
import importlib.util
import os
import sys


class _PluginLoader(importlib.abc.Loader):

    def __init__(self, loader, load_plugin=True):
        self.loader = loader
        self.load_plugin = load_plugin

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        from fsr_utils import compat
        compat.install_torchvision_shim()
        self.loader.exec_module(module)
        if not self.load_plugin:
            return
        try:
            from fsr_utils import plugin
            plugin.load()
        except Exception as exc:
            raise ImportError(
                f'basicsr-fsr, the face super-resolution plugin that loads with basicsr, failed: {exc!r}. '
                'Fix or reinstall it (pip install --no-build-isolation .), or set '
                'FSR_DISABLE_BASICSR_HOOK=1 to import basicsr without it.') from exc

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _BasicsrFinder(importlib.abc.MetaPathFinder):

    def __init__(self, load_plugin=True):
        self.load_plugin = load_plugin

    def find_spec(self, fullname, path, target=None):
        if fullname != 'basicsr':
            return None
        uninstall()  # one shot: the real finders locate basicsr
        spec = importlib.util.find_spec('basicsr')
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PluginLoader(spec.loader, self.load_plugin)
        return spec


def install():
    """Add the finder to ``sys.meta_path`` (no-op when already installed or basicsr is already imported).

    With ``FSR_DISABLE_BASICSR_HOOK`` set, the finder only installs the torchvision shim (basicsr 1.4.2 cannot be
    imported without it) and the plugin is not loaded.
    """
    if 'basicsr' in sys.modules or any(isinstance(f, _BasicsrFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BasicsrFinder(load_plugin=not os.environ.get('FSR_DISABLE_BASICSR_HOOK')))


def uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BasicsrFinder)]
