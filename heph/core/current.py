"""The app the workflow facades call (``OrderFlow.start(...)``), set by ``heph.use(app)``.

Core names only the small protocol below, never the runtime: ``heph.Hephaestus`` fills it.
"""

from __future__ import annotations

from typing import Any, Protocol

from heph.errors import NoAppInUse


class FacadeApp(Protocol):
    """What the facades need of an app (``heph.Hephaestus`` provides it)."""

    def start(self, workflow: Any, value: str, context: dict | None = None, *,
              version: int | None = None, **options: Any) -> str: ...

    def resume(self, instance_id: str, event: str, data: dict | None = None, *, step: str | None = None,
               buffer: bool = False, workflow: Any = None) -> Any: ...

    def get(self, instance_id: str, *, workflow: Any = None) -> Any: ...

    def list(self, *, workflow: Any = None, **filters: Any) -> list: ...

    def cancel(self, instance_id: str, *, workflow: Any = None) -> Any: ...

    def retry(self, instance_id: str, *, workflow: Any = None) -> Any: ...


_current: FacadeApp | None = None


def use(app: Any) -> Any:
    """Make ``app`` the default app of the workflow facades (``None`` removes it); returns it."""
    global _current
    _current = app
    return app


def in_use() -> Any:
    """The app set with ``use``, or None."""
    return _current


def current_app() -> Any:
    """The app set with ``heph.use``; ``NoAppInUse`` if there is none."""
    if _current is None:
        raise NoAppInUse()
    return _current
