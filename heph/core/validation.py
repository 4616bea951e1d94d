"""Definition-time validation: one small rule function per rule, each returning its problems.

``compile_workflow`` and ``compile_versioned`` run the rules in a fixed order and
return ``(definition, problems)``; the workflow metaclass raises one
``WorkflowDefinitionError`` listing them all, and ``heph check`` calls the same functions.
Rules named ``check_*`` return a list of problem sentences; ``parse_*`` also return the
value they normalised (None when it is invalid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from heph.core.definition import SCOPES, Dynamic, Edge, Route, Target, Unique, WorkflowDefinition
from heph.core.graph import (
    adjacency,
    check_acyclic,
    check_fan_out_convergence,
    check_leaves,
    check_reachable,
    reachability,
)
from heph.core.graph import find_cycle as find_cycle  # re-exported: the walks used to live here
from heph.core.ids import KEY_RE
from heph.core.jsonsafe import json_safe_problem
from heph.core.steps import Deadline, Done, Retry, Wait, step_key

NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
STEP_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def describe(step: object) -> str:
    """A step class as users wrote it: ``ChargePayment``."""
    return getattr(step, "__qualname__", None) or repr(step)


class Problems:
    """Collects problem sentences for one workflow class, each once, in the order first seen."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.add(message)


# -- class attributes ---------------------------------------------------------------


def parse_unique(value: object) -> tuple[Unique | None, list[str]]:
    """Normalise ``unique`` (``Unique``, ``"key"`` or ``dict``) and report what is wrong with it."""
    if value is None:
        return None, ['unique is missing: add unique = Unique(key="orderid") (a business key of [a-z0-9]+)']
    if isinstance(value, str):
        value = Unique(value)
    elif isinstance(value, dict):
        try:
            value = Unique(**value)
        except TypeError:
            return None, [f"unique {value!r} has unknown fields: use Unique(key=..., scope=...)"]
    if not isinstance(value, Unique):
        return None, [f"unique must be Unique(key, scope) or a key string, got {value!r}"]
    problems = []
    if not isinstance(value.key, str) or not KEY_RE.match(value.key):
        problems.append(f"unique key {value.key!r} is invalid: use lower-case letters and digits only ([a-z0-9]+)")
    if value.scope not in SCOPES:
        problems.append(f"unique scope {value.scope!r} is invalid: use one of {', '.join(SCOPES)}")
    return (None if problems else value), problems


def check_name(name: object) -> list[str]:
    """The workflow name matches ``[a-z][a-z0-9_]*``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return [f"name {name!r} is invalid: workflow names match [a-z][a-z0-9_]* (set name = \"orderflow\")"]
    return []


def check_version(version: object) -> list[str]:
    """``version`` is a positive int (not a bool)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return [f"version must be a positive int, got {version!r}"]
    return []


def check_tags(tags: object) -> list[str]:
    """``tags`` is a list (or tuple) of str."""
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        return [f"tags must be a list of str, got {tags!r}"]
    return []


def check_metadata(metadata: object) -> list[str]:
    """``metadata`` is a dict with str keys and JSON-safe values."""
    if not isinstance(metadata, dict):
        return [f"metadata must be a dict with str keys and JSON-safe values, got {metadata!r}"]
    found = json_safe_problem(metadata, "metadata")
    if found:
        return [f"{found}: metadata needs str keys and JSON-safe values (str, number, bool, None, lists, dicts)"]
    return []


def check_transitions_type(transitions: object) -> list[str]:
    """``transitions`` is a dict."""
    if not isinstance(transitions, dict):
        return ["transitions must be a dict {StepClass: {\"event\": target}}"]
    return []


# -- step classes and configs ---------------------------------------------------------


def check_step_events(step: type) -> list[str]:
    """The step declares ``events`` as a list of non-empty str."""
    events = getattr(step, "events", None)
    if not isinstance(events, (list, tuple)) or not all(isinstance(e, str) and e for e in events):
        return [f"step {describe(step)} must declare events as a list of str, got {events!r}"]
    return []


def check_step_events_unique(step: type) -> list[str]:
    """The step declares each event once."""
    events = list(getattr(step, "events", []) or [])
    if len(set(events)) != len(events):
        return [f"step {describe(step)} declares an event twice in {events!r}"]
    return []


def check_step_execute(step: type) -> list[str]:
    """The step has a callable ``execute``."""
    if not callable(getattr(step, "execute", None)):
        return [f"step {describe(step)} has no execute(instance, config, context) method"]
    return []


def check_step_key(step: type) -> list[str]:
    """The step's context key is an identifier."""
    key = step_key(step)
    if not STEP_KEY_RE.match(key):
        return [f"step {describe(step)} has key {key!r}: keys must be identifiers ([A-Za-z_][A-Za-z0-9_]*)"]
    return []


def check_step_retry(step: type) -> list[str]:
    """The step's ``retry``, if any, is a valid ``Retry``."""
    retry = getattr(step, "retry", None)
    if retry is None:
        return []
    if not isinstance(retry, Retry):
        return [f"step {describe(step)} has retry {retry!r}: use heph.Retry(...)"]
    return [f"step {describe(step)} retry: {found}" for found in retry.problems()]


def check_step_deadline(step: type) -> list[str]:
    """The step's ``deadline``, if any, is a valid ``Deadline`` whose event the step declares
    (so the graph gives that event a transition); a ``Wait`` has its own timer instead."""
    deadline = getattr(step, "deadline", None)
    if deadline is None:
        return []
    if not isinstance(deadline, Deadline):
        return [f"step {describe(step)} has deadline {deadline!r}: use heph.Deadline(...)"]
    if issubclass(step, Wait):
        return [f"step {describe(step)} is a Wait, whose timer is its deadline: remove deadline"]
    found = [f"step {describe(step)} deadline: {problem}" for problem in deadline.problems()]
    events = getattr(step, "events", None)
    if not found and isinstance(events, list) and deadline.event not in events:
        found.append(f"step {describe(step)} deadline event {deadline.event!r} is not one of its events "
                     f"{events}: add it to events (and give it a transition)")
    return found


def check_step_class(step: object) -> tuple[bool, list[str]]:
    """Whether ``step`` is a usable step class, and every problem with it."""
    if not isinstance(step, type):
        return False, [f"{step!r} is not a step class: targets must be Step subclasses"]
    events, execute, key = check_step_events(step), check_step_execute(step), check_step_key(step)
    # A repeated event or a bad retry policy is reported, but the step is still usable for the graph rules.
    repeated = [] if events else check_step_events_unique(step)
    return not (events or execute or key), (events + repeated + execute + key + check_step_retry(step)
                                            + check_step_deadline(step))


def config_problems(step: type, config: object, where: str) -> list[str]:
    """A target's config is a JSON-safe dict, and a valid Wait config for Wait steps."""
    problems = []
    if config is not None:
        if not isinstance(config, dict):
            return [f"{where}: the config of {describe(step)} must be a dict, got {config!r}"]
        found = json_safe_problem(config, "config")
        if found:
            problems.append(f"{where}: the config of {describe(step)} is not JSON-safe: {found}")
    if isinstance(step, type) and issubclass(step, Wait):
        problems += [f"{where}: {found}" for found in Wait.config_problems(config)]
    return problems


def check_config(step: type, config: object, problems: Problems, where: str) -> None:
    """Add the problems of ``config`` for ``step`` to ``problems`` (the engine checks dynamic routes with it)."""
    problems.extend(config_problems(step, config, where))


# -- targets and routes ----------------------------------------------------------------


def parse_target(value: object, where: str) -> tuple[Target | None, list[str]]:
    """A single target: a step class or ``(step class, config)``."""
    config = None
    step = value
    if isinstance(value, tuple):
        if len(value) != 2:
            return None, [f"{where}: a target tuple must be (StepClass, config_dict), got {value!r}"]
        step, config = value
    usable, problems = check_step_class(step)
    if not usable:
        return None, problems
    step = cast(type, step)
    problems += config_problems(step, config, where)
    return Target(step_key(step), step, config if isinstance(config, dict) else None), problems


def parse_targets(values: Iterable[object], where: str) -> tuple[tuple[Target, ...] | None, list[str]]:
    """Every target (each reports its problems); None if any is invalid."""
    parsed = [parse_target(value, where) for value in values]
    targets = tuple(target for target, _ in parsed if target is not None)
    problems = [problem for _, found in parsed for problem in found]
    return (targets if len(targets) == len(parsed) else None), problems


def parse_dynamic(value: Dynamic, where: str) -> tuple[Route | None, list[str]]:
    """A ``Dynamic`` route: a callable and a non-empty list of the targets it may return."""
    problems = []
    if not callable(value.fn):
        problems.append(f"{where}: Dynamic needs a callable fn(context), got {value.fn!r}")
    if not isinstance(value.targets, (list, tuple)) or not value.targets:
        problems.append(f"{where}: Dynamic needs a non-empty targets=[...] list of the steps it may return")
        return None, problems
    targets, found = parse_targets(value.targets, where)
    return (None if targets is None else Route(targets, value.fn)), problems + found


def parse_fan_out(value: list, where: str) -> tuple[Route | None, list[str]]:
    """A fan-out list: at least one target, each step once."""
    if not value:
        return None, [f"{where}: an empty fan-out list leads nowhere; route to at least one step"]
    targets, problems = parse_targets(value, where)
    if targets is None:
        return None, problems
    keys = [t.key for t in targets]
    if len(set(keys)) != len(keys):
        problems.append(f"{where}: the fan-out list names a step twice ({', '.join(keys)})")
    return Route(targets), problems


def parse_route(value: object, where: str) -> tuple[Route | None, list[str]]:
    """A transition's right-hand side: target, ``(target, config)``, list (fan-out) or ``Dynamic``."""
    if isinstance(value, Dynamic):
        return parse_dynamic(value, where)
    if isinstance(value, list):
        return parse_fan_out(value, where)
    target, problems = parse_target(value, where)
    return (Route((target,)) if target else None), problems


def parse_start(value: object) -> tuple[Target | None, list[str]]:
    """``start`` is one step class or ``(StepClass, config)``, not a list or ``Dynamic``."""
    if value is None:
        return None, ["start is missing: set start = FirstStep (or (FirstStep, config))"]
    if isinstance(value, (list, Dynamic)):
        return None, ["start must be one step class or (StepClass, config), not a list or Dynamic"]
    return parse_target(value, "start")


# -- transitions ----------------------------------------------------------------------


def check_key_collision(steps: dict[str, type], step: type) -> list[str]:
    """``step`` does not take a context key another step already has."""
    key = step_key(step)
    other = steps.get(key)
    if other is not None and other is not step:
        return [
            f"steps {describe(other)} and {describe(step)} share the context key {key!r}: "
            f"set key = \"...\" on one of them"
        ]
    return []


def check_source(source: type, mapping: object) -> list[str]:
    """A transition source is not ``Done`` and maps events with a dict."""
    if issubclass(source, Done):
        return ["Done is terminal: remove transitions[Done]"]
    if not isinstance(mapping, dict):
        return [f"transitions[{describe(source)}] must be a dict {{\"event\": target}}, got {mapping!r}"]
    return []


def check_event_declared(source: type, event: str, where: str) -> list[str]:
    """A transition's event is one the source step declares."""
    declared = list(getattr(source, "events", []) or [])
    if event not in declared:
        return [
            f"{where}: step {describe(source)} does not declare event {event!r} "
            f"(its events are {declared}): add it to {describe(source)}.events or remove the transition"
        ]
    return []


def check_events_routed(source: type, mapping: dict) -> list[str]:
    """Every event the source step declares has a transition."""
    missing = [e for e in list(getattr(source, "events", []) or []) if e not in mapping]
    if not missing:
        return []
    return [
        f"step {describe(source)} declares event{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(e) for e in missing)} with no transition: add "
        f"transitions[{describe(source)}][{missing[0]!r}] = NextStep (or Done)"
    ]


@dataclass
class Graph:
    """The steps (first registered wins a key), routes and edges read from ``start`` and ``transitions``."""

    steps: dict[str, type] = field(default_factory=dict)
    routes: dict[str, dict[str, Route]] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add_step(self, step: type) -> list[str]:
        problems = check_key_collision(self.steps, step)
        self.steps.setdefault(step_key(step), step)
        return problems


def read_transitions(start: Target | None, transitions: dict) -> tuple[Graph, list[str]]:
    """The graph of the workflow and every problem met reading it, in reading order."""
    graph = Graph()
    problems = graph.add_step(start.step) if start else []
    for source, mapping in transitions.items():
        problems += _read_source(graph, source, mapping)
    return graph, problems


def _read_source(graph: Graph, source: object, mapping: object) -> list[str]:
    usable, problems = check_step_class(source)
    if not usable:
        return problems
    source = cast(type, source)
    problems += graph.add_step(source)
    found = check_source(source, mapping)
    if found:
        return problems + found
    mapping = cast(dict[str, object], mapping)
    graph.routes[step_key(source)] = {}
    for event, value in mapping.items():
        problems += _read_event(graph, source, event, value)
    return problems + check_events_routed(source, mapping)


def _read_event(graph: Graph, source: type, event: str, value: object) -> list[str]:
    where = f"transitions[{describe(source)}][{event!r}]"
    problems = check_event_declared(source, event, where)
    route, found = parse_route(value, where)
    problems += found
    if route is None:
        return problems
    src_key = step_key(source)
    graph.routes[src_key][event] = route
    for target in route.targets:
        problems += graph.add_step(target.step)
        graph.edges.append(Edge(src_key, str(event), target.key, target.config, route.dynamic is not None))
    return problems


# -- whole workflows ---------------------------------------------------------------


def compile_workflow(cls: type, *, name: str, unique_required: bool) -> tuple[WorkflowDefinition | None, list[str]]:
    """Validate a ``Workflow`` class; return its definition (None if invalid) and every problem."""
    problems = Problems()
    unique_value = getattr(cls, "unique", None)
    unique, found = parse_unique(unique_value) if (unique_value is not None or unique_required) else (None, [])
    problems.extend(found)
    version, tags, metadata = getattr(cls, "version", 1), getattr(cls, "tags", []), getattr(cls, "metadata", {})
    problems.extend(check_name(name) + check_version(version) + check_tags(tags) + check_metadata(metadata))
    start, found = parse_start(getattr(cls, "__heph_start__", None))
    problems.extend(found)
    transitions = getattr(cls, "transitions", None)
    problems.extend(check_transitions_type(transitions))
    graph, found = read_transitions(start, transitions if isinstance(transitions, dict) else {})
    problems.extend(found)
    successors, predecessors = adjacency(graph.steps, graph.edges)
    reach = reachability(successors)
    terminals = frozenset(k for k, s in graph.steps.items() if issubclass(s, Done))
    problems.extend(check_leaves(graph.steps, graph.routes, terminals))
    problems.extend(check_acyclic(successors, graph.steps))
    problems.extend(check_reachable(start.key, graph.steps, reach) if start else [])
    problems.extend(check_fan_out_convergence(graph.routes, reach, terminals))
    if problems.items or start is None:
        return None, problems.items
    definition = WorkflowDefinition(
        name=name, version=version, unique=unique, tags=list(tags), metadata=dict(metadata), start=start,
        steps=graph.steps, routes=graph.routes, edges=graph.edges,
        predecessors={k: frozenset(v) for k, v in predecessors.items()}, reach=reach,
    )
    return definition, []


def check_umbrella_version(cls: type) -> list[str]:
    """An umbrella sets ``versions``, not ``version``."""
    if "version" in cls.__dict__:
        return ["an umbrella sets versions = {...}: remove version (each version class sets its own)"]
    return []


def parse_version_entry(number: object, module: object) -> tuple[WorkflowDefinition | None, list[str]]:
    """One ``versions`` item: a positive int key naming a valid Workflow class of that version."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None, [f"versions key {number!r} must be a positive int"]
    definition = getattr(module, "__heph_definition__", None) if isinstance(module, type) else None
    if definition is None:
        return None, [f"versions[{number}] = {describe(module)} is not a valid Workflow class"]
    if definition.version != number:
        return None, [
            f"versions[{number}] = {describe(module)} has version = {definition.version}: "
            f"set version = {number} on it or change the key"
        ]
    return definition, []


def parse_versions(versions: object) -> tuple[dict[int, WorkflowDefinition], list[str]]:
    """``versions`` is a non-empty dict; the definition of every valid entry."""
    if not isinstance(versions, dict) or not versions:
        return {}, ["versions must be a non-empty dict {1: WorkflowV1, 2: WorkflowV2}"]
    definitions: dict[int, WorkflowDefinition] = {}
    problems: list[str] = []
    for number, module in versions.items():
        definition, found = parse_version_entry(number, module)
        problems += found
        if definition is not None:
            definitions[number] = definition
    return definitions, problems


def check_current(current: object, versions: dict) -> list[str]:
    """``current`` names one of the versions (it may be left out when there is only one)."""
    if current is None and len(versions) == 1:
        current = next(iter(versions))
    if current not in versions:
        return [f"current = {current!r} is not one of the versions {sorted(versions, key=str)}"]
    return []


def check_version_for(cls: type) -> list[str]:
    """``version_for`` is callable."""
    if not callable(getattr(cls, "version_for", None)):
        return ["version_for must be a classmethod version_for(cls, versions, options)"]
    return []


def compile_versioned(cls: type, *, name: str) -> tuple[dict[int, WorkflowDefinition], Unique | None, list[str]]:
    """Validate a ``VersionedWorkflow`` umbrella; return its per-version definitions."""
    problems = Problems()
    unique, found = parse_unique(getattr(cls, "unique", None))
    problems.extend(found)
    problems.extend(check_name(name) + check_tags(getattr(cls, "tags", [])))
    problems.extend(check_metadata(getattr(cls, "metadata", {})) + check_umbrella_version(cls))
    versions = getattr(cls, "versions", None)
    definitions, found = parse_versions(versions)
    problems.extend(found)
    problems.extend(check_current(getattr(cls, "current", None), versions if isinstance(versions, dict) else {}))
    problems.extend(check_version_for(cls))
    return definitions, unique, problems.items


def located(problems: list[str], file: str, line: int, qualname: str) -> list[str]:
    """Prefix each problem with ``file:line: Workflow``."""
    return [f"{file}:{line}: {qualname}: {p}" for p in problems]
