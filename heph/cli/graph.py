"""``heph graph``: a workflow's DAG as plain data, a tree (drawn by ``heph.cli.render``), Mermaid
or Graphviz DOT, optionally marked by an instance's step states. No rich here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import cast

from heph.core.definition import WorkflowDefinition
from heph.core.instance import Instance
from heph.core.steps import Done, Step

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
            for key, step in ((k, cast("type[Step]", definition.steps[k])) for k in definition.topological_order())
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
    lines = [f'digraph "{definition.name}" {{', "    rankdir=TB;",
             '    node [shape=box, style="rounded,filled", fillcolor="white"];']
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


@dataclass
class TreeNode:
    """One step as the tree draws it: reached ``via`` an edge label, or a pointer back to a step
    ``drawn_above`` (a join reached again), with the steps it leads to."""

    key: str
    via: str
    step: str = ""
    join: bool = False
    state: str | None = None
    drawn_above: bool = False
    children: list[TreeNode] = field(default_factory=list)


@dataclass
class StepTree:
    """The DAG unrolled from ``start`` (``root``), titled ``name vN``; the rich renderer draws it."""

    title: str
    root: TreeNode


def tree(definition: WorkflowDefinition, instance: Instance | None = None) -> StepTree:
    """The DAG as a tree from ``start``; a join is expanded once, later arrivals point back to it."""
    states = step_states(instance)
    preds = definition.predecessors
    drawn: set[str] = set()

    def grow(key: str, via: str) -> TreeNode:
        if key in drawn:
            return TreeNode(key=key, via=via, drawn_above=True)
        drawn.add(key)
        step = definition.steps[key]
        node = TreeNode(key=key, via=via, step=step.__qualname__, state=states.get(key),
                        join=len(preds.get(key, ())) > 1 and not issubclass(step, Done))
        by_event: dict[str, list] = {}
        for edge in definition.edges:
            if edge.source == key:
                by_event.setdefault(edge.event, []).append(edge)
        for event, edges in by_event.items():
            fan = len(edges) > 1 and not edges[0].dynamic
            for edge in edges:
                marker = "⇢ dynamic " if edge.dynamic else ("⇉ fan-out " if fan else "")
                node.children.append(grow(edge.target, f"─{event}{_config_text(edge.config)}→ {marker}"))
        return node

    root = grow(definition.start.key, "start" + _config_text(definition.start.config) + " → ")
    return StepTree(title=f"{definition.name} v{definition.version}", root=root)
