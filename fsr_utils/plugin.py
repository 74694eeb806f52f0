"""Loading the plugin: import every package so that its classes register in BasicSR's registries."""
import importlib

PLUGIN_PACKAGES = ('fsr_arch', 'fsr_data', 'fsr_losses', 'fsr_metrics', 'fsr_models')


def load():
    """Import the plugin packages (registering everything) and apply the BasicSR compatibility fixes. Idempotent."""
    from fsr_utils import compat
    compat.install_torchvision_shim()
    import basicsr  # noqa: F401  (through the hook, this may already load the plugin)
    compat.patch_basicsr()
    for name in PLUGIN_PACKAGES:
        package = importlib.import_module(name)
        if hasattr(package, 'register'):  # packages that register lazily (fsr_data: a light import for fsr-prepare)
            package.register()


def import_modules(package, package_file, suffix):
    """Import every ``*{suffix}.py`` module of a plugin package (BasicSR's scanning convention), sorted by name."""
    import os
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(f'{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]
