"""The compiled form of a workflow: steps, routes, edges and graph facts for the engine and tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

SCOPES = ("workflow", "version", "global", "none")


@dataclass(frozen=True)
class Unique:
    """The business key of a workflow and the scope in which it must be unique."""

    key: str
    scope: str = "workflow"


class Dynamic:
    """A routing target chosen at run time: ``fn(context)`` returns one of ``targets``."""

    def __init__(self, fn: Callable[[Any], Any], targets: list):
        self.fn = fn
        self.targets = targets

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", repr(self.fn))
        return f"Dynamic({name}, targets={self.targets!r})"


@dataclass(frozen=True)
class Target:
    """One step to activate, with the config it runs with (``None`` when there is none)."""

    key: str
    step: type
    config: dict | None = None


@dataclass(frozen=True)
class Route:
    """Where an event of a step leads: every static target, or one chosen by ``dynamic``."""

    targets: tuple[Target, ...]
    dynamic: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Edge:
    """One edge of the DAG, for drawing and listing."""

    source: str
    event: str
    target: str
    config: dict | None
    dynamic: bool


@dataclass
class WorkflowDefinition:
    """A validated workflow: what the engine runs and what ``check``/``graph`` show."""

    name: str
    version: int
    unique: Unique | None
    tags: list[str]
    metadata: dict
    start: Target
    steps: dict[str, type]
    routes: dict[str, dict[str, Route]]
    edges: list[Edge]
    predecessors: dict[str, frozenset[str]]
    reach: dict[str, frozenset[str]]
    file: str = "?"
    line: int = 0
    cls: type | None = field(default=None, repr=False)

    def events_of(self, key: str) -> list[str]:
        """The events the step ``key`` declares."""
        return list(getattr(self.steps[key], "events"))  # noqa: B009  # steps are checked step classes

    def all_events(self) -> set[str]:
        """Every event some step of this version declares."""
        return {event for key in self.steps for event in self.events_of(key)}

    def successors(self, key: str) -> list[str]:
        """The steps an edge from ``key`` leads to, in declaration order."""
        seen: dict[str, None] = {}
        for edge in self.edges:
            if edge.source == key:
                seen.setdefault(edge.target)
        return list(seen)

    def topological_order(self) -> list[str]:
        """Every step, each after all its predecessors (start first)."""
        order: list[str] = []
        placed: set[str] = set()
        pending = [self.start.key]
        remaining = {k: set(v) for k, v in self.predecessors.items()}
        while pending:
            key = pending.pop(0)
            if key in placed:
                continue
            placed.add(key)
            order.append(key)
            for succ in self.successors(key):
                remaining[succ].discard(key)
                if not remaining[succ]:
                    pending.append(succ)
        order.extend(k for k in self.steps if k not in placed)
        return order
