"""Terminal output with rich: the only CLI module that draws tables and panels."""

from __future__ import annotations

import os
from datetime import datetime, timezone

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


def clock_time(moment: datetime | None) -> str:
    """``HH:MM:SS.mmm`` in UTC (the day is in the instance's header)."""
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def when(moment: datetime | None) -> str:
    """A short UTC time, with a relative hint for due times."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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

    table = Table(header_style="bold")
    for column in ("id", "workflow", "version", "status", "waiting", "next due", "updated"):
        # only the short columns are no_wrap: long no_wrap columns made rich squeeze the others to zero width
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "status"))
    for inst in instances:
        table.add_row(inst.id, inst.workflow, str(inst.version), status_text(inst.status),
                      ", ".join(inst.waiting) or "-", when(inst.next_due_at), when(inst.updated_at))
    return table


def show(out, inst: Instance, runs: int = 1) -> None:
    """Everything about one instance: status, waits, context, metadata, history, error."""
    from rich.panel import Panel
    from rich.json import JSON
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("id", inst.id)
    head.add_row("workflow", f"{inst.workflow} v{inst.version}")
    head.add_row("status", status_text(inst.status))
    head.add_row("run", f"{inst.run}" + (f"  ({runs} runs of this id: heph list --id {inst.id})" if runs > 1 else ""))
    head.add_row("created", when(inst.created_at))
    head.add_row("updated", when(inst.updated_at))
    if inst.active:
        head.add_row("active", ", ".join(a["step"] for a in inst.active))
    if inst.lease:
        head.add_row("lease", f"pid {inst.lease.get('pid')} on {inst.lease.get('host')} since {inst.lease.get('since')}")
    out.print(head)
    if inst.waits:
        waits = Table(title="waiting", title_justify="left", header_style="bold")
        for column in ("step", "kind", "attempt", "since", "due"):
            waits.add_column(column)
        for key, wait in inst.waits.items():
            due = wait.get("due_at")
            waits.add_row(key, wait["kind"], str(wait.get("attempt", 1)), wait.get("since", "-")[:19].replace("T", " "),
                          due[:19].replace("T", " ") if due else "-")
        out.print(waits)
    context = {"initial": inst.context.initial, "steps": inst.context.steps}
    # rich's own JSON highlighter: no pygments to import (a third of show's start-up time)
    out.print(Panel(JSON.from_data(context, indent=2, ensure_ascii=False), title="context", title_align="left", expand=False))
    if inst.runtime_metadata:
        out.print(Panel(JSON.from_data(inst.runtime_metadata, indent=2, ensure_ascii=False),
                        title="runtime metadata", title_align="left", expand=False))
    history = Table(title="history", title_justify="left", header_style="bold")
    for column in ("#", "step", "outcome", "event", "attempt", "finished (UTC)", "duration"):
        history.add_column(column, justify="right" if column in ("#", "attempt", "duration") else "left")
    for number, entry in enumerate(inst.history, 1):
        duration = "-" if entry.duration_ms is None else f"{entry.duration_ms:.1f} ms"
        outcome_style = {"failed": "red", "cancelled": "dim", "async": "cyan", "resumed": "cyan"}.get(entry.outcome, "green")
        history.add_row(str(number), entry.step, Text(entry.outcome, style=outcome_style), entry.event or "-",
                        str(entry.attempt), clock_time(entry.finished_at), duration)
    out.print(history)
    if inst.error:
        body = Text(f"{inst.error.get('type')}: {inst.error.get('message')}", style="bold red")
        if inst.error.get("traceback"):
            body.append("\n" + inst.error["traceback"].rstrip(), style="red")
        out.print(Panel(body, title=f"error in step {inst.error.get('step')}", title_align="left",
                        border_style="red", expand=False))
