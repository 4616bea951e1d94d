"""Definition-time validation: rule functions that collect every problem of a workflow class.

``compile_workflow`` and ``compile_versioned`` return ``(definition, problems)``;
the workflow metaclass raises one ``WorkflowDefinitionError`` listing them all,
and ``heph check`` calls the same functions.
"""

from __future__ import annotations

import re

from heph.core.definition import SCOPES, Dynamic, Edge, Route, Target, Unique, WorkflowDefinition
from heph.core.ids import KEY_RE
from heph.core.jsonsafe import json_safe_problem
from heph.core.steps import Done, Retry, Wait, step_key

NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
STEP_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def describe(step: object) -> str:
    """A step class as users wrote it: ``ChargePayment``."""
    return getattr(step, "__qualname__", None) or repr(step)


class Problems:
    """Collects problem sentences for one workflow class."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)


# -- small checks -----------------------------------------------------------------


def check_unique(value: object, problems: Problems) -> Unique | None:
    """Normalise ``unique`` (``Unique``, ``"key"`` or ``dict``) and report what is wrong with it."""
    if value is None:
        problems.add('unique is missing: add unique = Unique(key="orderid") (a business key of [a-z0-9]+)')
        return None
    if isinstance(value, str):
        value = Unique(value)
    elif isinstance(value, dict):
        try:
            value = Unique(**value)
        except TypeError:
            problems.add(f"unique {value!r} has unknown fields: use Unique(key=..., scope=...)")
            return None
    if not isinstance(value, Unique):
        problems.add(f"unique must be Unique(key, scope) or a key string, got {value!r}")
        return None
    ok = True
    if not isinstance(value.key, str) or not KEY_RE.match(value.key):
        problems.add(f"unique key {value.key!r} is invalid: use lower-case letters and digits only ([a-z0-9]+)")
        ok = False
    if value.scope not in SCOPES:
        problems.add(f"unique scope {value.scope!r} is invalid: use one of {', '.join(SCOPES)}")
        ok = False
    return value if ok else None


def check_name(name: object, problems: Problems) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.add(f"name {name!r} is invalid: workflow names match [a-z][a-z0-9_]* (set name = \"orderflow\")")
        return str(name)
    return name


def check_version(version: object, problems: Problems, what: str = "version") -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.add(f"{what} must be a positive int, got {version!r}")
        return 1
    return version


def check_tags(tags: object, problems: Problems) -> list[str]:
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        problems.add(f"tags must be a list of str, got {tags!r}")
        return []
    return list(tags)


def check_metadata(metadata: object, problems: Problems) -> dict:
    if not isinstance(metadata, dict):
        problems.add(f"metadata must be a dict with str keys and JSON-safe values, got {metadata!r}")
        return {}
    found = json_safe_problem(metadata, "metadata")
    if found:
        problems.add(f"{found}: metadata needs str keys and JSON-safe values (str, number, bool, None, lists, dicts)")
        return {}
    return dict(metadata)


def check_step_class(step: object, problems: Problems) -> bool:
    """Report what makes ``step`` not a usable step class; True when it is one."""
    if not isinstance(step, type):
        problems.add(f"{step!r} is not a step class: targets must be Step subclasses")
        return False
    ok = True
    events = getattr(step, "events", None)
    if not isinstance(events, (list, tuple)) or not all(isinstance(e, str) and e for e in events):
        problems.add(f"step {describe(step)} must declare events as a list of str, got {events!r}")
        ok = False
    elif len(set(events)) != len(events):
        problems.add(f"step {describe(step)} declares an event twice in {list(events)!r}")
    if not callable(getattr(step, "execute", None)):
        problems.add(f"step {describe(step)} has no execute(instance, config, context) method")
        ok = False
    key = step_key(step)
    if not STEP_KEY_RE.match(key):
        problems.add(f"step {describe(step)} has key {key!r}: keys must be identifiers ([A-Za-z_][A-Za-z0-9_]*)")
        ok = False
    retry = getattr(step, "retry", None)
    if retry is not None:
        if not isinstance(retry, Retry):
            problems.add(f"step {describe(step)} has retry {retry!r}: use heph.Retry(...)")
        else:
            for found in retry.problems():
                problems.add(f"step {describe(step)} retry: {found}")
    return ok


def check_config(step: type, config: object, problems: Problems, where: str) -> None:
    if config is not None:
        if not isinstance(config, dict):
            problems.add(f"{where}: the config of {describe(step)} must be a dict, got {config!r}")
            return
        found = json_safe_problem(config, "config")
        if found:
            problems.add(f"{where}: the config of {describe(step)} is not JSON-safe: {found}")
    if isinstance(step, type) and issubclass(step, Wait):
        for found in Wait.config_problems(config):
            problems.add(f"{where}: {found}")


# -- targets and graph ------------------------------------------------------------


def parse_target(value: object, problems: Problems, where: str) -> Target | None:
    """A single target: a step class or ``(step class, config)``."""
    config = None
    step = value
    if isinstance(value, tuple):
        if len(value) != 2:
            problems.add(f"{where}: a target tuple must be (StepClass, config_dict), got {value!r}")
            return None
        step, config = value
    if not check_step_class(step, problems):
        return None
    check_config(step, config, problems, where)  # type: ignore[arg-type]
    return Target(step_key(step), step, config if isinstance(config, dict) else None)  # type: ignore[arg-type]


def parse_route(value: object, problems: Problems, where: str) -> Route | None:
    """A transition's right-hand side: target, ``(target, config)``, list (fan-out) or ``Dynamic``."""
    if isinstance(value, Dynamic):
        if not callable(value.fn):
            problems.add(f"{where}: Dynamic needs a callable fn(context), got {value.fn!r}")
        if not isinstance(value.targets, (list, tuple)) or not value.targets:
            problems.add(f"{where}: Dynamic needs a non-empty targets=[...] list of the steps it may return")
            return None
        targets = [parse_target(t, problems, where) for t in value.targets]
        if any(t is None for t in targets):
            return None
        return Route(tuple(targets), value.fn)  # type: ignore[arg-type]
    if isinstance(value, list):
        if not value:
            problems.add(f"{where}: an empty fan-out list leads nowhere; route to at least one step")
            return None
        targets = [parse_target(t, problems, where) for t in value]
        if any(t is None for t in targets):
            return None
        keys = [t.key for t in targets]  # type: ignore[union-attr]
        if len(set(keys)) != len(keys):
            problems.add(f"{where}: the fan-out list names a step twice ({', '.join(keys)})")
        return Route(tuple(targets))  # type: ignore[arg-type]
    target = parse_target(value, problems, where)
    return Route((target,)) if target else None


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


# -- whole workflows ---------------------------------------------------------------


def compile_workflow(cls: type, *, name: str, unique_required: bool) -> tuple[WorkflowDefinition | None, list[str]]:
    """Validate a ``Workflow`` class; return its definition (None if invalid) and every problem."""
    problems = Problems()
    unique_value = getattr(cls, "unique", None)
    unique = check_unique(unique_value, problems) if (unique_value is not None or unique_required) else None
    name = check_name(name, problems)
    version = check_version(getattr(cls, "version", 1), problems)
    tags = check_tags(getattr(cls, "tags", []), problems)
    metadata = check_metadata(getattr(cls, "metadata", {}), problems)

    start_value = getattr(cls, "__heph_start__", None)
    start = None
    if start_value is None:
        problems.add("start is missing: set start = FirstStep (or (FirstStep, config))")
    elif isinstance(start_value, (list, Dynamic)):
        problems.add("start must be one step class or (StepClass, config), not a list or Dynamic")
    else:
        start = parse_target(start_value, problems, "start")

    transitions = getattr(cls, "transitions", None)
    if not isinstance(transitions, dict):
        problems.add("transitions must be a dict {StepClass: {\"event\": target}}")
        transitions = {}

    steps: dict[str, type] = {}
    routes: dict[str, dict[str, Route]] = {}
    edges: list[Edge] = []

    def register(step: type) -> None:
        key = step_key(step)
        other = steps.get(key)
        if other is not None and other is not step:
            problems.add(
                f"steps {describe(other)} and {describe(step)} share the context key {key!r}: "
                f"set key = \"...\" on one of them"
            )
            return
        steps[key] = step

    if start:
        register(start.step)
    for source, mapping in transitions.items():
        if not check_step_class(source, problems):
            continue
        register(source)
        src_key = step_key(source)
        if isinstance(source, type) and issubclass(source, Done):
            problems.add("Done is terminal: remove transitions[Done]")
            continue
        if not isinstance(mapping, dict):
            problems.add(f"transitions[{describe(source)}] must be a dict {{\"event\": target}}, got {mapping!r}")
            continue
        declared = list(getattr(source, "events", []) or [])
        routes[src_key] = {}
        for event, value in mapping.items():
            where = f"transitions[{describe(source)}][{event!r}]"
            if event not in declared:
                problems.add(
                    f"{where}: step {describe(source)} does not declare event {event!r} "
                    f"(its events are {declared}): add it to {describe(source)}.events or remove the transition"
                )
            route = parse_route(value, problems, where)
            if route is None:
                continue
            routes[src_key][event] = route
            for target in route.targets:
                register(target.step)
                edges.append(Edge(src_key, str(event), target.key, target.config, route.dynamic is not None))
        missing = [e for e in declared if e not in mapping]
        if missing:
            problems.add(
                f"step {describe(source)} declares event{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(e) for e in missing)} with no transition: add "
                f"transitions[{describe(source)}][{missing[0]!r}] = NextStep (or Done)"
            )

    successors: dict[str, list[str]] = {key: [] for key in steps}
    predecessors: dict[str, set[str]] = {key: set() for key in steps}
    for edge in edges:
        if edge.target in successors and edge.target not in successors[edge.source]:
            successors[edge.source].append(edge.target)
        predecessors.setdefault(edge.target, set()).add(edge.source)

    for key, step in steps.items():
        if key not in routes and not issubclass(step, Done):
            declared = list(getattr(step, "events", []) or [])
            if declared:
                problems.add(
                    f"step {describe(step)} is a leaf but not Done: add transitions[{describe(step)}] "
                    f"for its events {declared} (every path must end at Done)"
                )
            else:
                problems.add(f"step {describe(step)} declares no events and is not Done: every path must end at Done")

    cycle = find_cycle(successors)
    if cycle:
        problems.add(f"the graph has a cycle {' -> '.join(cycle)}: workflows must be acyclic")
    reach = reachability(successors)

    if start:
        reachable = {start.key} | reach.get(start.key, frozenset())
        unreachable = [k for k in steps if k not in reachable]
        if unreachable:
            problems.add(
                f"step{'s' if len(unreachable) > 1 else ''} {', '.join(unreachable)} "
                f"{'are' if len(unreachable) > 1 else 'is'} unreachable from start: "
                f"route to {'them' if len(unreachable) > 1 else 'it'} or remove the transitions"
            )
    terminals = frozenset(k for k, s in steps.items() if issubclass(s, Done))
    check_fan_out_convergence(routes, reach, problems, terminals)

    if problems.items or start is None:
        return None, problems.items
    return (
        WorkflowDefinition(
            name=name,
            version=version,
            unique=unique,
            tags=tags,
            metadata=metadata,
            start=start,
            steps=steps,
            routes=routes,
            edges=edges,
            predecessors={k: frozenset(v) for k, v in predecessors.items()},
            reach=reach,
        ),
        [],
    )


def check_fan_out_convergence(
    routes: dict[str, dict[str, Route]],
    reach: dict[str, frozenset[str]],
    problems: Problems,
    terminals: frozenset[str] = frozenset({"done"}),
) -> None:
    """Every fan-out's branches must meet at a common step before ``Done`` (any of the ``terminals``)."""
    for source, by_event in routes.items():
        for event, route in by_event.items():
            if route.dynamic is not None or len(route.targets) < 2:
                continue
            meeting = None
            for target in route.targets:
                downstream = ({target.key} | reach.get(target.key, frozenset())) - terminals
                meeting = downstream if meeting is None else meeting & downstream
            if not meeting:
                names = ", ".join(t.key for t in route.targets)
                problems.add(
                    f"the fan-out of {source} on {event!r} to {names} never converges before Done: "
                    f"route every branch to a common join step first"
                )


def compile_versioned(cls: type, *, name: str) -> tuple[dict[int, WorkflowDefinition], Unique | None, list[str]]:
    """Validate a ``VersionedWorkflow`` umbrella; return its per-version definitions."""
    problems = Problems()
    unique = check_unique(getattr(cls, "unique", None), problems)
    name = check_name(name, problems)
    check_tags(getattr(cls, "tags", []), problems)
    check_metadata(getattr(cls, "metadata", {}), problems)
    if "version" in cls.__dict__:
        problems.add("an umbrella sets versions = {...}: remove version (each version class sets its own)")
    versions = getattr(cls, "versions", None)
    definitions: dict[int, WorkflowDefinition] = {}
    if not isinstance(versions, dict) or not versions:
        problems.add("versions must be a non-empty dict {1: WorkflowV1, 2: WorkflowV2}")
        versions = {}
    for number, module in versions.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            problems.add(f"versions key {number!r} must be a positive int")
            continue
        definition = getattr(module, "__heph_definition__", None) if isinstance(module, type) else None
        if definition is None:
            problems.add(f"versions[{number}] = {describe(module)} is not a valid Workflow class")
            continue
        if definition.version != number:
            problems.add(
                f"versions[{number}] = {describe(module)} has version = {definition.version}: "
                f"set version = {number} on it or change the key"
            )
            continue
        definitions[number] = definition
    current = getattr(cls, "current", None)
    if current is None and len(versions) == 1:
        current = next(iter(versions))
    if current not in versions:
        problems.add(f"current = {current!r} is not one of the versions {sorted(versions, key=str)}")
    if not callable(getattr(cls, "version_for", None)):
        problems.add("version_for must be a classmethod version_for(cls, versions, options)")
    return definitions, unique, problems.items


def located(problems: list[str], file: str, line: int, qualname: str) -> list[str]:
    """Prefix each problem with ``file:line: Workflow``."""
    return [f"{file}:{line}: {qualname}: {p}" for p in problems]
