"""Utilities of the FSR plugin for BasicSR: compatibility fixes, plugin loading, command-line tools."""
