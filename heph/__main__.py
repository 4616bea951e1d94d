"""``python -m heph``: the same as the ``heph`` command."""

from heph.cli.main import run

run()
