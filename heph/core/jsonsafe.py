"""Turning step data into plain JSON values, and checking data is JSON-safe."""

from __future__ import annotations

import math
from datetime import date, datetime, time

MAX_DEPTH = 200


class NotJsonSafe(ValueError):
    """A value cannot be stored as JSON; ``path`` names where it sits (``amount``, ``items[2]``)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path or 'value'}: {reason}")


def to_json(value: object, path: str = "", depth: int = 0) -> object:
    """Return a JSON-safe copy of ``value``.

    datetime/date/time become ISO strings, Decimal and UUID become str, tuples
    become lists. Anything else that JSON cannot hold (other objects, NaN,
    infinities, non-str keys) raises ``NotJsonSafe`` naming the offending key.
    """
    if depth > MAX_DEPTH:
        raise NotJsonSafe(path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonSafe(path, f"{value!r} is not a finite number")
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotJsonSafe(_join(path, repr(k)), f"key {k!r} is not a string")
            out[k] = to_json(v, _join(path, k), depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if type(value).__name__ in ("Decimal", "UUID") and type(value).__module__ in ("decimal", "_decimal", "uuid"):
        return str(value)
    raise NotJsonSafe(path, f"{type(value).__name__} is not JSON-serialisable")


def is_json_safe(value: object) -> bool:
    """True if ``value`` is already plain JSON (no conversion needed)."""
    try:
        return to_json(value) == value and _strict(value)
    except NotJsonSafe:
        return False


def _strict(value: object) -> bool:
    if isinstance(value, dict):
        return all(_strict(v) for v in value.values())
    if isinstance(value, list):
        return all(_strict(v) for v in value)
    return value is None or isinstance(value, (str, bool, int, float))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
