"""The step graph of a workflow: pure walks over ``{step key: [successor keys]}``, and the
rules about its shape (every leaf is Done, acyclic, reachable, fan-outs converge).

Each rule returns its problem sentences; ``heph.core.validation`` runs them in order.
"""

from __future__ import annotations

from collections.abc import Iterable

from heph.core.definition import Edge, Route

# -- walks ----------------------------------------------------------------------------


def adjacency(keys: Iterable[str], edges: Iterable[Edge]) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Successors (in edge order, no repeats) and predecessors of every key."""
    successors: dict[str, list[str]] = {key: [] for key in keys}
    predecessors: dict[str, set[str]] = {key: set() for key in successors}
    for edge in edges:
        if edge.target in successors and edge.target not in successors[edge.source]:
            successors[edge.source].append(edge.target)
        predecessors.setdefault(edge.target, set()).add(edge.source)
    return successors, predecessors


def find_cycle(successors: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a list of keys (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in successors.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in list(successors):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def reachability(successors: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """For each node, every node reachable from it by one or more edges (cycles allowed)."""
    out: dict[str, frozenset[str]] = {}
    for node in successors:
        seen: set[str] = set()
        todo = list(successors.get(node, []))
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(successors.get(nxt, []))
        out[node] = frozenset(seen)
    return out


def common_downstream(
    starts: Iterable[str], reach: dict[str, frozenset[str]], ignore: frozenset[str] = frozenset()
) -> frozenset[str]:
    """The nodes every one of ``starts`` is or leads to, minus ``ignore``."""
    meeting: frozenset[str] | None = None
    for key in starts:
        downstream = (frozenset({key}) | reach.get(key, frozenset())) - ignore
        meeting = downstream if meeting is None else meeting & downstream
    return meeting or frozenset()


# -- shape rules ----------------------------------------------------------------------


def check_leaves(steps: dict[str, type], routes: dict[str, dict[str, Route]], terminals: frozenset[str]) -> list[str]:
    """Every step without transitions is one of the ``terminals`` (the ``Done`` steps)."""
    problems = []
    for step in (s for k, s in steps.items() if k not in routes and k not in terminals):
        name, declared = step.__qualname__, list(getattr(step, "events", []) or [])
        if declared:
            problems.append(
                f"step {name} is a leaf but not Done: add transitions[{name}] "
                f"for its events {declared} (every path must end at Done)"
            )
        else:
            problems.append(f"step {name} declares no events and is not Done: every path must end at Done")
    return problems


def check_acyclic(successors: dict[str, list[str]], steps: dict[str, type] | None = None) -> list[str]:
    """The graph has no cycle.

    A step class is one node of the graph, so one class used in two places (``Wait`` after two
    different steps) closes a loop. When the step the cycle returns to is also reached from
    outside the cycle (the sign of such a reuse) and ``steps`` names its class, the message
    says how to use the class twice.
    """
    cycle = find_cycle(successors)
    if not cycle:
        return []
    problem = f"the graph has a cycle {' -> '.join(cycle)}: workflows must be acyclic"
    entry, on_cycle = cycle[0], set(cycle)
    step = (steps or {}).get(entry)
    reached_from_outside = any(entry in nexts for node, nexts in successors.items() if node not in on_cycle)
    if step is None or not reached_from_outside:
        return [problem]
    name = step.__qualname__
    return [
        f"{problem}. A step class is one node of the graph: {name} appears in two places, so both "
        f"are the same step (key {entry!r}). To run it twice, subclass it with its own key: "
        f"class Second{name.rsplit('.', 1)[-1]}({name}): key = \"second_{entry}\""
    ]


def check_reachable(start: str, steps: Iterable[str], reach: dict[str, frozenset[str]]) -> list[str]:
    """Every step is reachable from the ``start`` key."""
    reachable = {start} | reach.get(start, frozenset())
    unreachable = [k for k in steps if k not in reachable]
    if not unreachable:
        return []
    many = len(unreachable) > 1
    return [
        f"step{'s' if many else ''} {', '.join(unreachable)} {'are' if many else 'is'} unreachable from start: "
        f"route to {'them' if many else 'it'} or remove the transitions"
    ]


def check_fan_out_convergence(
    routes: dict[str, dict[str, Route]],
    reach: dict[str, frozenset[str]],
    terminals: frozenset[str] = frozenset({"done"}),
) -> list[str]:
    """Every fan-out's branches meet at a common step before ``Done`` (any of the ``terminals``)."""
    problems = []
    for source, by_event in routes.items():
        for event, route in by_event.items():
            if route.dynamic is not None or len(route.targets) < 2:
                continue
            if not common_downstream((t.key for t in route.targets), reach, terminals):
                problems.append(
                    f"the fan-out of {source} on {event!r} to {', '.join(t.key for t in route.targets)} "
                    f"never converges before Done: route every branch to a common join step first"
                )
    return problems
