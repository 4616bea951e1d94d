"""Telemetry: ``heph.on(event_name, handler)``; a raising handler is logged, never fatal."""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("heph")

EVENTS = (
    "workflow.start",
    "workflow.stop",
    "workflow.exception",
    "workflow.transition",
    "step.start",
    "step.stop",
    "step.async",
    "step.exception",
    "step.resume",
    "segment.start",
    "segment.stop",
)

Handler = Callable[[str, dict], Any]
_handlers: dict[str, list[Handler]] = {name: [] for name in EVENTS}
_subscriptions = 0  # handlers subscribed, over every event


def listening() -> bool:
    """Whether any handler is subscribed: callers skip building payloads nobody would read."""
    return _subscriptions > 0


def on(event_name: str, handler: Handler) -> Callable[[], None]:
    """Call ``handler(event_name, payload)`` on every ``event_name``; returns an unsubscribe function.

    ``event_name`` is one of ``EVENTS``, or ``"*"`` for all of them.
    """
    global _subscriptions
    names = EVENTS if event_name == "*" else (event_name,)
    for name in names:
        if name not in _handlers:
            raise ValueError(f"unknown telemetry event {name!r}; known: {', '.join(EVENTS)}")
    for name in names:
        _handlers[name].append(handler)
        _subscriptions += 1

    def unsubscribe() -> None:
        global _subscriptions
        for name in names:
            if handler in _handlers[name]:
                _handlers[name].remove(handler)
                _subscriptions -= 1

    return unsubscribe


def emit(event_name: str, payload: dict) -> None:
    """Deliver ``payload`` to every handler of ``event_name``."""
    handlers = _handlers[event_name]
    if not handlers:
        return
    for handler in list(handlers):
        try:
            handler(event_name, dict(payload))
        except Exception:
            log.exception("telemetry handler %r failed on %s; ignored", handler, event_name)
