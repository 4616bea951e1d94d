"""``python -m heph``: the same as the ``heph`` command."""

from heph.cli.fast import run

run()
