"""A reader for the plain YAML a ``heph.yaml`` is usually written in, to skip importing PyYAML.

Importing PyYAML costs a cold ``heph`` command about as much as reading the store. Most
``heph.yaml`` files are a mapping of a few keys whose values are a plain scalar, a list of
plain scalars or a mapping of plain scalars. ``parse`` reads exactly that subset, with the
meaning PyYAML's ``safe_load`` gives it, and raises ``NotSimple`` for anything else (flow
collections, anchors, quotes with escapes, booleans, dates, tabs, duplicate keys, ...), so
that the caller hands the text to PyYAML: every error message still comes from PyYAML.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*\Z")
_INT = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[0-9]+\.[0-9]+\Z")
_QUOTED = re.compile(r"\"[^\"\\]*\"\Z|'[^']*'\Z")
# plain words PyYAML reads as booleans, nulls or special floats: left to PyYAML
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", ".inf", ".nan"}
_DOT_DIGIT = {f".{d}" for d in "0123456789"}  # ".5" is a float to PyYAML


class NotSimple(ValueError):
    """The text uses YAML beyond the simple subset: parse it with PyYAML."""


def parse(text: str) -> dict:
    """The mapping ``text`` holds, if it is simple YAML; ``NotSimple`` otherwise."""
    if not text.isascii() or "\t" in text or "\r" in text:
        raise NotSimple("not plain ASCII lines")
    lines = []
    for raw in text.split("\n"):
        body = _strip_comment(raw)
        if body.strip():
            lines.append((len(body) - len(body.lstrip(" ")), body.strip()))
    data: dict = {}
    i = 0
    while i < len(lines):
        indent, body = lines[i]
        if indent:
            raise NotSimple("unexpected indentation")
        key, value = _entry(body)
        i += 1
        if value is not None:
            _put(data, key, value)
            continue
        block = []
        while i < len(lines) and lines[i][0] > 0:
            block.append(lines[i])
            i += 1
        _put(data, key, _block(block))
    return data


def _strip_comment(line: str) -> str:
    if "#" not in line:
        return line.rstrip(" ")
    head, _, _ = line.partition("#")
    if head.strip() and not head.endswith(" "):
        raise NotSimple("'#' inside a value")
    return head.rstrip(" ")


def _entry(body: str) -> tuple[str, object]:
    """``key:`` (value None: a block follows) or ``key: scalar``."""
    key, sep, rest = body.partition(":")
    if not sep or not _KEY.match(key) or (rest and not rest.startswith(" ")) or key.lower() in _SPECIAL:
        raise NotSimple("not a 'key: value' line with a plain text key")
    rest = rest.strip()
    return key, (_scalar(rest) if rest else None)


def _block(block: list[tuple[int, str]]) -> object:
    """The lines under ``key:``: a list of scalars or a mapping of scalars, all at one indentation."""
    if not block:
        return None
    indent = block[0][0]
    if any(i != indent for i, _ in block):
        raise NotSimple("nested blocks")
    if all(body == "-" or body.startswith("- ") for _, body in block):
        return [_scalar(body[1:].strip()) for _, body in block]
    mapping: dict = {}
    for _, body in block:
        key, value = _entry(body)
        if value is None:
            raise NotSimple("nested blocks")
        _put(mapping, key, value)
    return mapping


def _put(mapping: dict, key: str, value: object) -> None:
    if key in mapping:
        raise NotSimple("duplicate key")
    mapping[key] = value


def _scalar(text: str) -> object:
    if _QUOTED.match(text):
        return text[1:-1]
    if not _PLAIN.match(text) or text.lower() in _SPECIAL or text[:2] in _DOT_DIGIT:
        raise NotSimple(f"not a plain scalar: {text[:40]!r}")
    if text[0].isdigit():
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text)
        raise NotSimple("a number PyYAML may read otherwise")
    return text
