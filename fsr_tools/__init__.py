"""Tools built on the networks and datasets: console scripts (``fsr-train``, ``fsr-test``, ``fsr-speed``, ``fsr-infer``)
and their library APIs. ``fsr_utils`` stays the ground floor (BasicSR compatibility fixes, plugin loading) that every
other package imports; nothing here is imported by the plugin's registries.
"""
