"""``python -m installation`` is the ``art2mus`` command."""

from installation.cli import main

main()
