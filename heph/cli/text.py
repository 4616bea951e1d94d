"""Text helpers shared by the rich and plain renderers (no rich import): times, and
stored strings made safe to print."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

# C0 and C1 control characters (ESC, BEL, CR, CSI, ...) shown as \xNN: stored text (an error
# message, a lease's host) must never drive the reader's terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7f, *range(0x80, 0xa0)]}
_CONTROLS[ord("\t")] = " "
_ONE_LINE = {**_CONTROLS, ord("\n"): " "}
_LINES = {k: v for k, v in _CONTROLS.items() if k != ord("\n")}


def printable(text: object, newlines: bool = False) -> str:
    """``text`` safe to print: control characters escaped (``newlines``: line breaks kept)."""
    return str(text).translate(_LINES if newlines else _ONE_LINE)


def width(text: str) -> int:
    """Terminal cells taken by ``text`` (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1
               for ch in text)


def when(moment: datetime | None, utc: bool = False) -> str:
    """A UTC time to the second (``utc``: with the word UTC after it, where no header says so)."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if utc else "")


def finished_time(moment: datetime | None, today: date | None = None) -> str:
    """``HH:MM:SS.mmm`` in UTC, with the date in front when it is not ``today`` (UTC)."""
    if moment is None:
        return "-"
    moment = moment.astimezone(timezone.utc)
    today = today or datetime.now(timezone.utc).date()
    return moment.strftime("%H:%M:%S.%f" if moment.date() == today else "%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration(ms: float | None) -> str:
    """A duration in the unit that fits: ``0.4 ms``, ``850 ms``, ``4.6 s``, ``1.2 min``, ``3.5 h``."""
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 999.5:
        return f"{ms:.0f} ms"
    if ms < 59_950:
        return f"{ms / 1000:.1f} s"
    if ms < 3_597_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def error_line(error: dict) -> str:
    """``Type: message`` of a stored error (``builtins.`` dropped from the type: ``KeyError: 'amount'``)."""
    kind = str(error.get("type") or "Error")
    kind = kind.removeprefix("builtins.")
    message = error.get("message")
    return f"{kind}: {message}" if message not in (None, "") else kind


# -- what show and list print, for both renderers (plain: pipes; rich: terminals) -----------------

LIST_COLUMNS = ("id", "workflow", "version", "status", "waiting", "next due (UTC)", "created (UTC)")
WAIT_COLUMNS = ("step", "kind", "attempt", "since (UTC)", "due (UTC)")
INBOX_COLUMNS = ("#", "event", "received (UTC)", "data")
HISTORY_COLUMNS = ("#", "step", "outcome", "event", "attempt", "finished (UTC)", "duration")
RIGHT_ALIGNED = ("#", "attempt", "duration")

# On a terminal too narrow for a whole table, these columns go first (in this order), as kubectl
# and gh do, so that an id or a step key is never wrapped or cut; the columns not named stay.
LIST_DROPPED_FIRST = ("version", "next due (UTC)", "waiting", "created (UTC)", "workflow")
WAIT_DROPPED_FIRST = ("attempt", "since (UTC)", "due (UTC)")
INBOX_DROPPED_FIRST = ("#", "received (UTC)")
HISTORY_DROPPED_FIRST = ("attempt", "event", "#", "duration", "finished (UTC)")


def fitting_columns(columns: tuple[str, ...], rows: list[tuple[str, ...]], room: int | None,
                    dropped_first: tuple[str, ...]) -> tuple[list[int], bool]:
    """The indexes of ``columns`` to draw so that a boxed table of ``rows`` fits ``room`` cells
    (None: no limit), dropping ``dropped_first`` in order until it does; and whether it does."""
    sizes = [max([width(c)] + [width(r[i]) for r in rows]) for i, c in enumerate(columns)]
    kept = list(range(len(columns)))

    def total() -> int:  # "│ cell │ cell │": 3 cells of box and padding per column, 1 to close
        return sum(sizes[i] + 3 for i in kept) + 1

    for name in dropped_first:
        if room is None or total() <= room:
            break
        kept.remove(columns.index(name))
    return kept, room is None or total() <= room


def _stamp(text: object) -> str:
    return str(text)[:19].replace("T", " ") if text else "-"


SCHEDULE_COLUMNS = ("workflow", "cron (UTC)", "value", "catchup", "last started (UTC)", "next (UTC)")


def schedule_rows(schedules: list[dict]) -> list[tuple[str, ...]]:
    """One printable row per schedule (``SCHEDULE_COLUMNS``)."""
    return [tuple(printable(c) for c in (s["workflow"], s["cron"], s["value"], s["catchup"], _stamp(s["last"]),
                                          _stamp(s["next"])))
            for s in schedules]


def running(note: dict) -> str:
    """What a busy note (``Storage.busy``) says: the step, since when and who runs it."""
    return (f"step {note.get('step')} since {_stamp(note.get('since'))} UTC, pid {note.get('pid')} on "
            f"{note.get('host')}")


def head_rows(inst, runs: int = 1, metadata: dict | None = None, busy: dict | None = None) -> list[tuple[str, str]]:
    """``(label, value)`` lines heading ``show``; every value printable. ``metadata``: the
    workflow's, when it is known (a line when not empty); ``busy``: the note of a live process
    running a step of it (the status then reads ``running``, whatever is stored)."""
    rows = [("id", inst.id), ("workflow", f"{inst.workflow} v{inst.version}"),
            ("status", "running" if busy else inst.status),
            ("run", inst.run + (f"  ({runs} runs of this id: heph list --id {inst.id})" if runs > 1 else "")),
            ("created", when(inst.created_at, utc=True)), ("updated", when(inst.updated_at, utc=True))]
    if metadata:
        rows.insert(2, ("metadata", json.dumps(metadata, ensure_ascii=False, default=str)))
    if inst.active:
        rows.append(("active", ", ".join(a["step"] for a in inst.active)))
    if busy:
        rows.append(("running", running(busy)))
    elif inst.lease:
        lease = inst.lease
        rows.append(("lease", f"pid {lease.get('pid')} on {lease.get('host')} since {_stamp(lease.get('since'))} UTC"))
    return [(label, printable(value)) for label, value in rows]


def wait_rows(inst) -> list[tuple[str, ...]]:
    """One printable row per waiting step (``WAIT_COLUMNS``); a deadline names the event it fires."""
    return [tuple(printable(c) for c in (key, _kind(wait), wait.get("attempt", 1), _stamp(wait.get("since")),
                                          _stamp(wait.get("due_at"))))
            for key, wait in inst.waits.items()]


def _kind(wait: dict) -> str:
    return f"deadline ({wait.get('event')})" if wait["kind"] == "deadline" else wait["kind"]


def inbox_rows(inst) -> list[tuple[str, ...]]:
    """One printable row per buffered event, oldest first (``INBOX_COLUMNS``)."""
    return [tuple(printable(c) for c in (n, entry["event"], _stamp(entry["received_at"]),
                                          json.dumps(entry["data"], ensure_ascii=False, sort_keys=True)))
            for n, entry in enumerate(inst.inbox, 1)]


def history_rows(inst, today: date | None = None) -> list[tuple[str, ...]]:
    """One printable row per history entry (``HISTORY_COLUMNS``)."""
    return [tuple(printable(c) for c in (number, e.step, e.outcome, e.event or "-", e.attempt,
                                          finished_time(e.finished_at, today), duration(e.duration_ms)))
            for number, e in enumerate(inst.history, 1)]


def error_texts(inst) -> tuple[str, str, str]:
    """(title, ``type: message`` line, traceback) of the instance's error, printable."""
    error = inst.error or {}
    return (printable(f"error in step {error.get('step')}"),
            printable(error_line(error), newlines=True),
            printable(str(error.get("traceback") or "").rstrip(), newlines=True))


def list_rows(instances, busy: dict | None = None) -> list[tuple[str, ...]]:
    """One printable row per instance (``LIST_COLUMNS``); ``busy``: id -> the note of a live
    process running a step of it (status ``running (step)``)."""
    busy = busy or {}
    return [tuple(printable(c) for c in (
        i.id, i.workflow, i.version, f"running ({busy[i.id].get('step')})" if i.id in busy else i.status,
        ", ".join(i.waiting) or "-", when(i.next_due_at), when(i.created_at)))
            for i in instances]


def json_text(data: object) -> str:
    """``data`` as indented JSON, control characters escaped."""
    import json

    return printable(json.dumps(data, indent=2, ensure_ascii=False), newlines=True)
