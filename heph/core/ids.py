"""Business ids: ``key::value`` (scope ``none``: ``key::value::suffix``)."""

from __future__ import annotations

import os
import re

from heph.errors import InvalidId

KEY_RE = re.compile(r"[a-z0-9]+\Z")
_PLAIN_VALUE_RE = re.compile(r"[a-z0-9]+\Z")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_SUFFIX_RE = re.compile(r"[0-9a-f]{8}\Z")
MAX_VALUE_LENGTH = 128
SEPARATOR = "::"


def _invalid(what: str, given: object, rule: str):
    shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "...'"
    return InvalidId(f"invalid {what} {shown}: {rule}", given=given)


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid business key (``[a-z0-9]+``), else raise ``InvalidId``."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise _invalid("business key", key, "use lower-case letters and digits only ([a-z0-9]+)")
    return key


def check_value(value: object) -> str:
    """Return ``value`` if it is ``[a-z0-9]+`` or a lower-case hyphenated UUID, else raise."""
    if not isinstance(value, str) or not value:
        raise _invalid("business value", value, "it must be a non-empty string")
    if len(value) > MAX_VALUE_LENGTH:
        raise _invalid("business value", value, f"it is longer than {MAX_VALUE_LENGTH} characters")
    if not (_PLAIN_VALUE_RE.match(value) or _UUID_RE.match(value)):
        raise _invalid(
            "business value",
            value,
            "use lower-case letters and digits ([a-z0-9]+) or a lower-case hyphenated UUID",
        )
    return value


def build_id(key: str, value: str, suffix: str | None = None) -> str:
    """Build ``key::value`` (or ``key::value::suffix``) after checking each part."""
    parts = [check_key(key), check_value(value)]
    if suffix is not None:
        if not _SUFFIX_RE.match(suffix):
            raise _invalid("id suffix", suffix, "it must be 8 lower-case hex characters")
        parts.append(suffix)
    return SEPARATOR.join(parts)


def parse_id(instance_id: object) -> tuple[str, str, str | None]:
    """Split an instance id into (key, value, suffix or None); raise ``InvalidId`` if malformed."""
    if not isinstance(instance_id, str) or len(instance_id) > 2 * MAX_VALUE_LENGTH:
        raise _invalid("instance id", instance_id, "expected 'key::value'")
    parts = instance_id.split(SEPARATOR)
    if len(parts) not in (2, 3):
        raise _invalid("instance id", instance_id, "expected 'key::value' or 'key::value::suffix'")
    key, value = parts[0], parts[1]
    suffix = parts[2] if len(parts) == 3 else None
    build_id(key, value, suffix)
    return key, value, suffix


def check_id(instance_id: object) -> str:
    """Return ``instance_id`` if well formed, else raise ``InvalidId``."""
    parse_id(instance_id)
    return instance_id  # type: ignore[return-value]


def new_suffix() -> str:
    """A random 8-hex-character suffix for scope ``none`` ids."""
    return os.urandom(4).hex()
