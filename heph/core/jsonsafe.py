"""Turning step data into plain JSON values, and checking data is JSON-safe."""

from __future__ import annotations

import math
from datetime import date, datetime, time

from heph.errors import NotJsonSafe

__all__ = ["NotJsonSafe", "is_json_safe", "json_safe_problem", "to_json"]

MAX_DEPTH = 200


def to_json(value: object, path: str = "", depth: int = 0) -> object:
    """Return a JSON-safe copy of ``value``.

    datetime/date/time become ISO strings, Decimal and UUID become str, tuples
    become lists. Anything else that JSON cannot hold (other objects, NaN,
    infinities, non-str keys) raises ``NotJsonSafe`` naming the offending key.
    """
    if depth > MAX_DEPTH:
        raise NotJsonSafe(path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, int):
        if value.bit_length() > 14_000:  # about 4,300 digits: Python's limit for int <-> text
            try:
                str(value)
            except ValueError:
                raise NotJsonSafe(path, "the integer has too many digits to store as JSON") from None
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
            _text(k, _join(path, repr(k)))
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
    return json_safe_problem(value, "value") is None


def json_safe_problem(value: object, path: str, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON (str keys, finite numbers), or None."""
    if depth > 100:
        return f"{path} is nested too deeply"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value!r} is not a finite number"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-str key {k!r}"
            found = json_safe_problem(v, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = json_safe_problem(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    return f"{path} = {value!r} is not JSON-safe ({type(value).__name__})"


def _text(value: str, path: str) -> str:
    """``value`` if UTF-8 can hold it (a lone surrogate such as ``"\\ud800"`` cannot)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = value[exc.start]
            raise NotJsonSafe(path, f"the text holds a lone surrogate {shown!r}, which UTF-8 cannot store") from None
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
