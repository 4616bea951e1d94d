"""Terminal output with rich: the only CLI module that draws tables and panels."""

from __future__ import annotations

import os

from heph.cli.text import clock_time, printable, when
from heph.core.instance import Instance

STATUS_STYLES = {
    "pending": "yellow", "running": "yellow", "waiting": "cyan",
    "completed": "green", "failed": "bold red", "cancelled": "dim",
}


PIPED_TABLE_WIDTH = 200


def console(stderr: bool = False, wide: bool = False):
    """A rich console; ``wide`` tables written to a pipe get room for whole rows (not 80 columns)."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if wide and not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = max(out.width, PIPED_TABLE_WIDTH)
    return out


def status_text(status: str):
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def check_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="workflows", title_justify="left", header_style="bold")
    for column in ("name", "key", "scope", "version(s)", "steps", "tags"):
        table.add_column(column, overflow="fold")  # fold, never cut a name to "notification…"
    for row in rows:
        table.add_row(row["name"], row["key"], row["scope"], ", ".join(map(str, row["versions"])),
                      str(row["steps"]), ", ".join(row["tags"]))
    return table


def list_table(instances: list[Instance]):
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    for column in ("id", "workflow", "version", "status", "waiting", "next due", "updated"):
        # only the short columns are no_wrap: long no_wrap columns made rich squeeze the others to zero width
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "status"))
    for inst in instances:
        table.add_row(Text(printable(inst.id)), Text(printable(inst.workflow)), str(inst.version),
                      status_text(inst.status), Text(printable(", ".join(inst.waiting) or "-")),
                      when(inst.next_due_at), when(inst.updated_at))
    return table


def _json(data: object):
    """``data`` as indented JSON, highlighted by rich's JSON highlighter (no pygments to import:
    a third of show's start-up time), with any control character in it escaped."""
    import json

    from rich.highlighter import JSONHighlighter
    from rich.text import Text

    return JSONHighlighter()(Text(printable(json.dumps(data, indent=2, ensure_ascii=False), newlines=True)))


def show(out, inst: Instance, runs: int = 1) -> None:
    """Everything about one instance: status, waits, context, metadata, history, error.

    Every stored string goes through ``printable``: a crafted file or a step's error message
    must not drive the terminal (and rich markup in data is never interpreted: no str is
    rendered as markup here)."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("id", Text(printable(inst.id)))
    head.add_row("workflow", Text(printable(f"{inst.workflow} v{inst.version}")))
    head.add_row("status", status_text(inst.status))
    head.add_row("run", Text(printable(inst.run) + (f"  ({runs} runs of this id: heph list --id {printable(inst.id)})"
                                                    if runs > 1 else "")))
    head.add_row("created", when(inst.created_at))
    head.add_row("updated", when(inst.updated_at))
    if inst.active:
        head.add_row("active", Text(printable(", ".join(a["step"] for a in inst.active))))
    if inst.lease:
        lease = inst.lease
        head.add_row("lease", Text(printable(f"pid {lease.get('pid')} on {lease.get('host')} since {lease.get('since')}")))
    out.print(head)
    if inst.waits:
        waits = Table(title="waiting", title_justify="left", header_style="bold")
        for column in ("step", "kind", "attempt", "since", "due"):
            waits.add_column(column)
        for key, wait in inst.waits.items():
            due = wait.get("due_at")
            cells = (key, wait["kind"], wait.get("attempt", 1), str(wait.get("since", "-"))[:19].replace("T", " "),
                     str(due)[:19].replace("T", " ") if due else "-")
            waits.add_row(*(Text(printable(c)) for c in cells))
        out.print(waits)
    context = {"initial": inst.context.initial, "steps": inst.context.steps}
    out.print(Panel(_json(context), title="context", title_align="left", expand=False))
    if inst.runtime_metadata:
        out.print(Panel(_json(inst.runtime_metadata), title="runtime metadata", title_align="left", expand=False))
    history = Table(title="history", title_justify="left", header_style="bold")
    for column in ("#", "step", "outcome", "event", "attempt", "finished (UTC)", "duration"):
        history.add_column(column, justify="right" if column in ("#", "attempt", "duration") else "left")
    for number, entry in enumerate(inst.history, 1):
        duration = "-" if entry.duration_ms is None else f"{entry.duration_ms:.1f} ms"
        outcome_style = {"failed": "red", "cancelled": "dim", "async": "cyan", "resumed": "cyan"}.get(entry.outcome, "green")
        history.add_row(str(number), Text(printable(entry.step)), Text(entry.outcome, style=outcome_style),
                        Text(printable(entry.event or "-")), str(entry.attempt), clock_time(entry.finished_at), duration)
    out.print(history)
    if inst.error:
        error = inst.error
        body = Text(printable(f"{error.get('type')}: {error.get('message')}", newlines=True), style="bold red")
        if error.get("traceback"):
            body.append("\n" + printable(str(error["traceback"]).rstrip(), newlines=True), style="red")
        out.print(Panel(body, title=Text(printable(f"error in step {error.get('step')}")), title_align="left",
                        border_style="red", expand=False))
