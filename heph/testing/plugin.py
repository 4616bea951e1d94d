"""The pytest plugin (entry point ``pytest11``): the ``heph_app`` fixture."""

from __future__ import annotations

import pytest

from heph.core.current import in_use, use
from heph.testing.kit import memory_app


@pytest.fixture
def heph_app():
    """An in-memory ``Hephaestus`` with a ``ManualClock`` (``heph_app.clock``), installed with
    ``heph.use`` for the facades and removed afterwards."""
    previous = in_use()
    app = memory_app()
    use(app)
    try:
        yield app
    finally:
        use(previous)
