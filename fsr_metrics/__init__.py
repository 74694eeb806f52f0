"""The plugin's metrics (METRIC_REGISTRY): every ``*_metric.py`` module here registers itself.

Importing the package is light (``fsr-benchmark --help`` starts without torch or basicsr): the modules are imported, and
so registered, by ``register()`` (:func:`fsr_utils.plugin.lazy_registration`), which the plugin loader calls whenever a
process imports basicsr.
"""
from fsr_utils.plugin import lazy_registration

register = lazy_registration(__name__, __file__, '_metric')
