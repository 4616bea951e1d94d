"""Text helpers shared by the rich and plain renderers (no rich import): times, and
stored strings made safe to print."""

from __future__ import annotations

from datetime import datetime, timezone

# C0 and C1 control characters (ESC, BEL, CR, CSI, ...) shown as \xNN: stored text (an error
# message, a lease's host) must never drive the reader's terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7f, *range(0x80, 0xa0)]}
_CONTROLS[ord("\t")] = " "
_ONE_LINE = {**_CONTROLS, ord("\n"): " "}
_LINES = {k: v for k, v in _CONTROLS.items() if k != ord("\n")}


def printable(text: object, newlines: bool = False) -> str:
    """``text`` safe to print: control characters escaped (``newlines``: line breaks kept)."""
    return str(text).translate(_LINES if newlines else _ONE_LINE)


def clock_time(moment: datetime | None) -> str:
    """``HH:MM:SS.mmm`` in UTC (the day is in the instance's header)."""
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def when(moment: datetime | None) -> str:
    """A UTC time to the second."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
