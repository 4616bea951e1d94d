"""``heph graph``: a workflow's DAG as a rich tree, Mermaid or Graphviz DOT, optionally marked by an instance."""

from __future__ import annotations

import json

from heph.core.definition import WorkflowDefinition
from heph.core.instance import Instance
from heph.core.steps import Done

STATE_STYLES = {"completed": "green", "active": "yellow", "waiting": "cyan", "failed": "bold red"}
STATE_COLOURS = {"completed": "#c8e6c9", "active": "#fff59d", "waiting": "#b3e5fc", "failed": "#ffcdd2"}


def step_states(instance: Instance | None) -> dict[str, str]:
    """Each step's state in ``instance``: completed, active, waiting or failed."""
    if instance is None:
        return {}
    states = {key: "completed" for key in instance.completed}
    for entry in instance.active:
        states[entry["step"]] = "active"
    for key in instance.waits:
        states[key] = "waiting"
    if instance.failed:
        states[instance.failed["step"]] = "failed"
    return states


def _config_text(config: dict | None) -> str:
    return "" if config is None else " " + json.dumps(config, separators=(",", ":"))


def to_dict(definition: WorkflowDefinition, instance: Instance | None = None) -> dict:
    """Nodes and edges as plain data (the ``--json`` form)."""
    states = step_states(instance)
    return {
        "workflow": definition.name,
        "version": definition.version,
        "start": definition.start.key,
        "nodes": [
            {"key": key, "step": step.__qualname__, "events": list(step.events), "state": states.get(key)}
            for key, step in ((k, definition.steps[k]) for k in definition.topological_order())
        ],
        "edges": [
            {"from": e.source, "event": e.event, "to": e.target, "config": e.config, "dynamic": e.dynamic}
            for e in definition.edges
        ],
    }


def to_mermaid(definition: WorkflowDefinition, instance: Instance | None = None) -> str:
    """A Mermaid ``flowchart``; dynamic edges dotted; steps coloured by ``instance`` state."""
    lines = ["flowchart TD", f'    start(("start")) --> {definition.start.key}']
    for key in definition.topological_order():
        label = f"{key}<br/><small>{definition.steps[key].__qualname__}</small>"
        shape = f'(["{label}"])' if key == "done" else f'["{label}"]'
        lines.append(f"    {key}{shape}")
    for edge in definition.edges:
        text = edge.event + (_config_text(edge.config).replace('"', "'") if edge.config else "")
        arrow = "-.->" if edge.dynamic else "-->"
        lines.append(f'    {edge.source} {arrow}|"{text}"| {edge.target}')
    states = step_states(instance)
    for state, colour in STATE_COLOURS.items():
        members = [k for k, s in states.items() if s == state]
        if members:
            lines.append(f"    classDef {state} fill:{colour}")
            lines.append(f"    class {','.join(members)} {state}")
    return "\n".join(lines) + "\n"


def to_dot(definition: WorkflowDefinition, instance: Instance | None = None) -> str:
    """A Graphviz digraph; dynamic edges dashed; steps filled by ``instance`` state."""
    states = step_states(instance)
    lines = [f'digraph "{definition.name}" {{', "    rankdir=TB;", '    node [shape=box, style="rounded,filled", fillcolor="white"];']
    lines.append('    "__start" [shape=circle, label="start", fillcolor="black", fontcolor="white"];')
    lines.append(f'    "__start" -> "{definition.start.key}";')
    for key in definition.topological_order():
        fill = STATE_COLOURS.get(states.get(key, ""), "white")
        shape = ', shape=doublecircle' if key == "done" else ""
        lines.append(f'    "{key}" [label="{key}\\n{definition.steps[key].__qualname__}", fillcolor="{fill}"{shape}];')
    for edge in definition.edges:
        label = (edge.event + _config_text(edge.config)).replace('"', '\\"')
        style = ", style=dashed" if edge.dynamic else ""
        lines.append(f'    "{edge.source}" -> "{edge.target}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_tree(definition: WorkflowDefinition, instance: Instance | None = None):
    """A rich ``Tree`` from ``start``; a join is drawn once, later arrivals point back to it."""
    from rich.text import Text
    from rich.tree import Tree

    states = step_states(instance)
    preds = definition.predecessors

    def node_text(key: str, via: str | None) -> Text:
        text = Text()
        if via:
            text.append(via, style="dim")
        text.append(key, style=STATE_STYLES.get(states.get(key, ""), "bold"))
        text.append(f"  {definition.steps[key].__qualname__}", style="dim")
        if len(preds.get(key, ())) > 1 and not issubclass(definition.steps[key], Done):
            text.append("  (join)", style="magenta")
        if key in states:
            text.append(f"  [{states[key]}]", style=STATE_STYLES[states[key]])
        return text

    title = Text(f"{definition.name} v{definition.version}", style="bold")
    tree = Tree(title)
    drawn: set[str] = set()

    def grow(branch, key: str, via: str | None) -> None:
        if key in drawn:
            branch.add(Text.assemble((via or "", "dim"), (f"{key} ↑ (drawn above)", "dim italic")))
            return
        drawn.add(key)
        child = branch.add(node_text(key, via))
        by_event: dict[str, list] = {}
        for edge in definition.edges:
            if edge.source == key:
                by_event.setdefault(edge.event, []).append(edge)
        for event, edges in by_event.items():
            fan = len(edges) > 1 and not edges[0].dynamic
            for edge in edges:
                marker = "⇢ dynamic " if edge.dynamic else ("⇉ fan-out " if fan else "")
                label = f"─{event}{_config_text(edge.config)}→ {marker}"
                grow(child, edge.target, label)

    grow(tree, definition.start.key, "start" + _config_text(definition.start.config) + " → ")
    return tree
