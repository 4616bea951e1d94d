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


# -- what show and list print, for both renderers (plain: pipes; rich: terminals) -----------------

LIST_COLUMNS = ("id", "workflow", "version", "status", "waiting", "next due", "updated")
WAIT_COLUMNS = ("step", "kind", "attempt", "since", "due")
HISTORY_COLUMNS = ("#", "step", "outcome", "event", "attempt", "finished (UTC)", "duration")
RIGHT_ALIGNED = ("#", "attempt", "duration")


def _stamp(text: object) -> str:
    return str(text)[:19].replace("T", " ") if text else "-"


def head_rows(inst, runs: int = 1) -> list[tuple[str, str]]:
    """``(label, value)`` lines heading ``show``; every value printable."""
    rows = [("id", inst.id), ("workflow", f"{inst.workflow} v{inst.version}"), ("status", inst.status),
            ("run", inst.run + (f"  ({runs} runs of this id: heph list --id {inst.id})" if runs > 1 else "")),
            ("created", when(inst.created_at)), ("updated", when(inst.updated_at))]
    if inst.active:
        rows.append(("active", ", ".join(a["step"] for a in inst.active)))
    if inst.lease:
        lease = inst.lease
        rows.append(("lease", f"pid {lease.get('pid')} on {lease.get('host')} since {lease.get('since')}"))
    return [(label, printable(value)) for label, value in rows]


def wait_rows(inst) -> list[tuple[str, ...]]:
    """One printable row per waiting step (``WAIT_COLUMNS``)."""
    return [tuple(printable(c) for c in (key, wait["kind"], wait.get("attempt", 1), _stamp(wait.get("since")),
                                          _stamp(wait.get("due_at"))))
            for key, wait in inst.waits.items()]


def history_rows(inst) -> list[tuple[str, ...]]:
    """One printable row per history entry (``HISTORY_COLUMNS``)."""
    return [tuple(printable(c) for c in (number, e.step, e.outcome, e.event or "-", e.attempt,
                                          clock_time(e.finished_at),
                                          "-" if e.duration_ms is None else f"{e.duration_ms:.1f} ms"))
            for number, e in enumerate(inst.history, 1)]


def error_texts(inst) -> tuple[str, str, str]:
    """(title, ``type: message`` line, traceback) of the instance's error, printable."""
    error = inst.error or {}
    return (printable(f"error in step {error.get('step')}"),
            printable(f"{error.get('type')}: {error.get('message')}", newlines=True),
            printable(str(error.get("traceback") or "").rstrip(), newlines=True))


def list_rows(instances) -> list[tuple[str, ...]]:
    """One printable row per instance (``LIST_COLUMNS``)."""
    return [tuple(printable(c) for c in (i.id, i.workflow, i.version, i.status, ", ".join(i.waiting) or "-",
                                          when(i.next_due_at), when(i.updated_at)))
            for i in instances]


def json_text(data: object) -> str:
    """``data`` as indented JSON, control characters escaped."""
    import json

    return printable(json.dumps(data, indent=2, ensure_ascii=False), newlines=True)
