"""The built-in plugins of mcvae_framework.

Each sub-package is one plugin, loaded through the ``mcvae_framework`` entry-point group
exactly like a third-party plugin, and importing only the core's public interfaces.
"""
