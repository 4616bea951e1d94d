"""Terminal output with rich: the only heph module that imports rich (tables, panels, trees).

Imported only by the commands that draw on a terminal (or with ``FORCE_COLOR``), and rich
itself only inside the functions that draw; ``heph.cli.plain`` draws the same for pipes.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from heph.cli import text

if TYPE_CHECKING:
    from heph.cli.graph import StepTree, TreeNode
    from heph.core.instance import Instance

STATUS_STYLES = {
    "pending": "yellow", "running": "yellow", "waiting": "cyan",
    "completed": "green", "failed": "bold red", "cancelled": "dim",
}


# the width of a pipe drawn in colour (FORCE_COLOR): rows are never wrapped there, as in plain text
UNBOUNDED = 1_000_000


def console():
    """A rich console: the terminal's width, or ``$COLUMNS``; on a pipe (``FORCE_COLOR``) without
    ``$COLUMNS``, no width at all, so nothing is wrapped or cut (rich would assume 80)."""
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=False)
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        out.width = UNBOUNDED
    return out


def room(out) -> int | None:
    """The cells a table may take on ``out`` (None: unbounded)."""
    return None if out.width >= UNBOUNDED else out.width


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]], room: int | None, dropped_first: tuple[str, ...],
           title: str | None = None, styles: dict[str, object] | None = None):
    """A rich table of ``rows`` that fits ``room``: less important columns dropped (never a key
    wrapped); ``styles``: a column's cell style, or a function of its cell giving one."""
    from rich.table import Table
    from rich.text import Text

    kept, fits = text.fitting_columns(columns, rows, room, dropped_first)
    table = Table(title=title, title_justify="left", header_style="bold")
    for i in kept:
        # the columns kept fit unwrapped; when even the essential ones cannot, they fold (never cut)
        table.add_column(columns[i], justify="right" if columns[i] in text.RIGHT_ALIGNED else "left",
                         overflow="fold", no_wrap=fits)
    styles = styles or {}
    for row in rows:
        cells = []
        for i in kept:
            style = styles.get(columns[i], "")
            cells.append(Text(row[i], style=style(row[i]) if callable(style) else str(style)))
        table.add_row(*cells)
    return table


def status_text(status: str):
    """``status`` in its colour."""
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def check_table(rows: list[dict]):
    """The workflows of ``heph check``: name, key, scope, versions, steps, tags."""
    from rich.table import Table

    table = Table(title="workflows", title_justify="left", header_style="bold")
    for column in ("name", "key", "scope", "version(s)", "steps", "tags"):
        table.add_column(column, overflow="fold")  # fold, never cut a name to "notification…"
    for row in rows:
        table.add_row(row["name"], row["key"], row["scope"], ", ".join(map(str, row["versions"])),
                      str(row["steps"]), ", ".join(row["tags"]))
    return table


def list_table(instances: list[Instance], room: int | None = None, busy: dict | None = None):
    """One row per instance (``heph list``), statuses in colour; columns dropped to fit ``room``."""
    return _table(text.LIST_COLUMNS, text.list_rows(instances, busy), room, text.LIST_DROPPED_FIRST,
                  styles={"status": lambda s: STATUS_STYLES.get(s.split(" ")[0], "")})


def _json(data: object):
    """``data`` as indented JSON, highlighted by rich's JSON highlighter (no pygments to import:
    a third of show's start-up time)."""
    from rich.highlighter import JSONHighlighter
    from rich.text import Text

    return JSONHighlighter()(Text(text.json_text(data)))


OUTCOME_STYLES = {"failed": "red", "cancelled": "dim", "async": "cyan", "resumed": "cyan"}


def show(out, inst: Instance, runs: int = 1, metadata: dict | None = None, busy: dict | None = None) -> None:
    """Everything about one instance: status, waits, context, metadata, history, error.

    Every string comes from ``heph.cli.text`` already printable, and is handed to rich as
    ``Text``: never interpreted as markup, never able to drive the terminal."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in text.head_rows(inst, runs, metadata, busy):
        head.add_row(label, status_text(value) if label == "status" else Text(value))
    out.print(head)
    if inst.waits:
        out.print(_table(text.WAIT_COLUMNS, text.wait_rows(inst), room(out), text.WAIT_DROPPED_FIRST,
                         title="waiting"))
    if inst.inbox:
        out.print(_table(text.INBOX_COLUMNS, text.inbox_rows(inst), room(out), text.INBOX_DROPPED_FIRST,
                         title="inbox (buffered events)"))
    out.print(Panel(_json({"initial": inst.context.initial, "steps": inst.context.steps}), title="context",
                    title_align="left", expand=False))
    if inst.runtime_metadata:
        out.print(Panel(_json(inst.runtime_metadata), title="runtime metadata", title_align="left", expand=False))
    out.print(_table(text.HISTORY_COLUMNS, text.history_rows(inst), room(out), text.HISTORY_DROPPED_FIRST,
                     title="history", styles={"outcome": lambda c: OUTCOME_STYLES.get(c, "green")}))
    if inst.error:
        title, line, trace = text.error_texts(inst)
        body = Text(line, style="bold red")
        if trace:
            body.append("\n" + trace, style="red")
        out.print(Panel(body, title=Text(title), title_align="left", border_style="red", expand=False))


def check(out, rows: list[dict], problems: list[dict]) -> None:
    """``heph check``: the table of workflows, then every definition problem with its location."""
    from rich.text import Text

    out.print(check_table(rows))
    for problem in problems:  # plain Text: messages hold brackets such as [a-z0-9]+, not markup
        out.print(Text.assemble(("error", "red"), text.printable(f" {problem['file']}:{problem['line']}: "
                                                                 f"{problem['message']}")), soft_wrap=True)
    out.print(f"{len(rows)} workflow(s), {len(problems)} error(s)")


STATE_STYLES = {"completed": "green", "active": "yellow", "waiting": "cyan", "failed": "bold red"}


def graph_tree(steps: StepTree):
    """A rich ``Tree`` of ``heph graph`` (``heph.cli.graph.tree``): steps coloured by state."""
    from rich.text import Text
    from rich.tree import Tree

    def label(node: TreeNode) -> Text:
        if node.drawn_above:
            return Text.assemble((node.via, "dim"), (f"{node.key} ↑ (drawn above)", "dim italic"))
        line = Text()
        line.append(node.via, style="dim")
        line.append(node.key, style=STATE_STYLES.get(node.state or "", "bold"))
        line.append(f"  {node.step}", style="dim")
        if node.join:
            line.append("  (join)", style="magenta")
        if node.state:
            line.append(f"  [{node.state}]", style=STATE_STYLES[node.state])
        return line

    def grow(branch: Tree, node: TreeNode) -> None:
        child = branch.add(label(node))
        for sub in node.children:
            grow(child, sub)

    drawn = Tree(Text(steps.title, style="bold"))
    grow(drawn, steps.root)
    return drawn
