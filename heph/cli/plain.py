"""Plain-text ``show`` and ``list`` for output that is not a terminal (pipes, files, scripts).

The same boxes as rich draws on a terminal, without colour and without importing rich
(a third of a cold ``heph show``). Rows are never wrapped or cut: a pipe has no width.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Sequence

from heph.cli import text
from heph.cli.text import printable, width
from heph.core.instance import Instance

Write = Callable[[str], None]
_ASCII_BOXES = str.maketrans("┏┳┓┡╇┩└┴┘╭╮╰╯━─┃│", "+++++++++++++=-||")


def _fit(text: str) -> str:
    """``text`` as stdout can carry it: when its encoding cannot (an ASCII or cp1252 pipe, say),
    boxes are drawn in ASCII and other characters it lacks are written as escapes."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        return text.translate(_ASCII_BOXES).encode(encoding, "backslashreplace").decode(encoding)


def _pad(text: str, size: int, right: bool = False) -> str:
    fill = " " * (size - width(text))
    return fill + text if right else text + fill


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None,
          right: Iterable[str] = ()) -> list[str]:
    """A table drawn like rich's default (heavy head, light body); ``right``: right-justified columns."""
    cells = [[printable(v) for v in row] for row in rows]
    sizes = [max([width(c)] + [width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    flush = [c in set(right) for c in columns]

    def line(left: str, fill: str, mid: str, end: str) -> str:
        return left + mid.join(fill * (s + 2) for s in sizes) + end

    def row(values: Sequence[str], bar: str, justify: bool) -> str:
        return bar + bar.join(f" {_pad(v, s, justify and f)} " for v, s, f in zip(values, sizes, flush)) + bar

    out = [title] if title else []
    out += [line("┏", "━", "┳", "┓"), row(columns, "┃", False), line("┡", "━", "╇", "┩")]
    out += [row(r, "│", True) for r in cells]
    out.append(line("└", "─", "┴", "┘"))
    return out


def panel(body: str, title: str) -> list[str]:
    """``body`` in a rounded box with ``title`` on its top edge."""
    lines, title = printable(body, newlines=True).split("\n"), printable(title)
    inner = max([width(line) for line in lines] + [width(title) + 2]) + 2
    top = f"╭─ {title} " + "─" * (inner - width(title) - 3) + "╮"
    return [top] + [f"│ {_pad(line, inner - 2)} │" for line in lines] + ["╰" + "─" * inner + "╯"]


def show(write: Write, inst: Instance, runs: int = 1, metadata: dict | None = None, busy: dict | None = None) -> None:
    """Everything about one instance: status, waits, context, metadata, history, error."""
    head = text.head_rows(inst, runs, metadata, busy)
    key_size = max(width(k) for k, _ in head)
    out = [f"{_pad(k, key_size)}  {v}" for k, v in head]
    if inst.waits:
        out += table(text.WAIT_COLUMNS, text.wait_rows(inst), title="waiting")
    if inst.inbox:
        out += table(text.INBOX_COLUMNS, text.inbox_rows(inst), title="inbox (buffered events)", right=("#",))
    out += panel(text.json_text({"initial": inst.context.initial, "steps": inst.context.steps}), "context")
    if inst.runtime_metadata:
        out += panel(text.json_text(inst.runtime_metadata), "runtime metadata")
    out += table(text.HISTORY_COLUMNS, text.history_rows(inst), title="history", right=text.RIGHT_ALIGNED)
    if inst.error:
        title, line, trace = text.error_texts(inst)
        out += panel(f"{line}\n{trace}" if trace else line, title)
    write(_fit("\n".join(out)))


def list_table(write: Write, instances: list[Instance], busy: dict | None = None) -> None:
    """One row per instance: id, workflow, version, status, waiting steps, next due and creation times."""
    write(_fit("\n".join(table(text.LIST_COLUMNS, text.list_rows(instances, busy)))))


def schedule_table(write: Write, schedules: list[dict]) -> None:
    """One row per schedule (``heph schedules``): workflow, cron, value, catch-up, last and next slot."""
    write(_fit("\n".join(table(text.SCHEDULE_COLUMNS, text.schedule_rows(schedules)))))
