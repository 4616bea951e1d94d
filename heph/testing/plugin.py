"""The pytest plugin (entry point ``pytest11``): the ``heph_app`` fixture."""

from __future__ import annotations

import pytest

from heph.runtime import app as app_module
from heph.testing.kit import memory_app


@pytest.fixture
def heph_app():
    """An in-memory ``Hephaestus`` with a ``ManualClock`` (``heph_app.clock``), installed with
    ``heph.use`` for the facades and removed afterwards."""
    previous = app_module._current
    app = memory_app()
    app_module.use(app)
    try:
        yield app
    finally:
        app_module.use(previous)
