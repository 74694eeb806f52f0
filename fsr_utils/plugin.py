"""Loading the plugin: import every package so that its classes register in BasicSR's registries."""
import importlib
import sys

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


def lazy_registration(package, package_file, suffix):
    """A ``register()`` for a package whose ``*{suffix}.py`` modules register themselves when imported, deferred so
    that importing the package is light (``fsr-prepare --help``, ``fsr-benchmark --help`` need no torch or basicsr).

    :func:`load` (run by the import hook whenever a process imports basicsr) calls it; it runs at once when basicsr is
    already imported. Idempotent; returns the imported modules.
    """
    modules = []

    def register():
        if not modules:
            from fsr_utils import compat
            compat.install_torchvision_shim()
            modules.extend(import_modules(package, package_file, suffix))
        return modules

    if 'basicsr' in sys.modules:
        register()
    return register
