"""``python -m mcvae_framework.cli`` is the ``mcvae`` command."""

from . import main

main()
