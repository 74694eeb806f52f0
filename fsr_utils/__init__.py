"""Utilities of the face super-resolution plugin for BasicSR: compatibility fixes, plugin loading, command-line tools."""
