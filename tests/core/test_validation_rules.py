"""Each definition rule called on its own: a good input gives no problems, a bad one the expected problem."""

from __future__ import annotations

import pytest
from _core_helpers import make_step

from heph import Done, Dynamic, Retry, Step, Unique, Wait
from heph.core import graph, validation
from heph.core.definition import Edge, Route, Target

A = make_step("A", ["ok"])
B = make_step("B", ["ok"])
C = make_step("C", ["ok"])
Two = make_step("Two", ["left", "right"])


def pick(context):
    return A


def _step(name, **attrs):
    return type(name, (Step,), {"__qualname__": name, **attrs})


def _execute(self, instance, config, context):
    return "ok"


def _route(*steps, dynamic=None):
    return Route(tuple(Target(s.key, s) for s in steps), dynamic)


# -- class attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, good, bad, fragment",
    [
        (validation.check_name, "orderflow", "Order-Flow", "name 'Order-Flow' is invalid"),
        (validation.check_version, 2, True, "version must be a positive int, got True"),
        (validation.check_tags, ("a", "b"), ["a", 1], "tags must be a list of str"),
        (validation.check_metadata, {"a": [1, None]}, {"a": {1, 2}}, "metadata['a'] = {1, 2} is not JSON-safe (set)"),
        (validation.check_metadata, {}, ["a"], "metadata must be a dict"),
        (validation.check_transitions_type, {}, [A], "transitions must be a dict"),
    ],
)
def test_attribute_rules(rule, good, bad, fragment):
    assert rule(good) == []
    (problem,) = rule(bad)
    assert fragment in problem


def test_parse_unique():
    assert validation.parse_unique({"key": "o1", "scope": "global"}) == (Unique("o1", "global"), [])
    assert validation.parse_unique("orderid") == (Unique("orderid"), [])
    unique, problems = validation.parse_unique(Unique("Bad", scope="planet"))
    assert unique is None
    assert [p.split(" is invalid")[0] for p in problems] == ["unique key 'Bad'", "unique scope 'planet'"]
    assert validation.parse_unique(None)[1][0].startswith("unique is missing")


# -- step classes and configs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, bad, fragment",
    [
        (validation.check_step_events, _step("S", events="ok"), "step S must declare events as a list of str"),
        (validation.check_step_events_unique, _step("S", events=["ok", "ok"]), "step S declares an event twice"),
        (validation.check_step_execute, _step("S", events=["ok"], execute=3), "step S has no execute"),
        (validation.check_step_key, _step("S", key="bad key"), "step S has key 'bad key'"),
        (validation.check_step_retry, _step("S", retry=3), "step S has retry 3: use heph.Retry"),
        (validation.check_step_retry, _step("S", retry=Retry(max_attempts=0)), "step S retry: max_attempts"),
    ],
)
def test_step_rules(rule, bad, fragment):
    assert rule(make_step("Good", ["ok"], retry=Retry())) == []
    (problem,) = rule(bad)
    assert fragment in problem


def test_check_step_class():
    assert validation.check_step_class(A) == (True, [])
    instance = A()
    assert validation.check_step_class(instance) == (False, [f"{instance!r} is not a step class: targets must be Step subclasses"])
    usable, problems = validation.check_step_class(_step("Twice", events=["ok", "ok"], execute=_execute))
    assert usable and problems == ["step Twice declares an event twice in ['ok', 'ok']"]
    usable, problems = validation.check_step_class(_step("Broken", events="ok", key="bad key"))
    assert not usable
    starts = ["step Broken must declare events", "step Broken has no execute", "step Broken has key 'bad key'"]
    assert len(problems) == 3 and all(p.startswith(start) for p, start in zip(problems, starts)), problems


def test_config_problems_and_check_config():
    assert validation.config_problems(A, {"limit": 3}, "here") == []
    assert validation.config_problems(Wait, {"duration": 1, "unit": "hour"}, "here") == []
    assert validation.config_problems(A, "cfg", "here") == ["here: the config of A must be a dict, got 'cfg'"]
    (problem,) = validation.config_problems(Wait, None, "here")
    assert problem.startswith("here: Wait needs a config")
    found = validation.Problems()
    validation.check_config(A, {"x": object()}, found, "config")
    validation.check_config(A, {"x": object()}, found, "config")
    assert len(found.items) == 1 and "is not JSON-safe" in found.items[0]


# -- targets, routes and start ---------------------------------------------------------------------


def test_parse_target():
    assert validation.parse_target((A, {"n": 1}), "w") == (Target("a", A, {"n": 1}), [])
    bad = (A, {}, 3)
    assert validation.parse_target(bad, "w") == (None, [f"w: a target tuple must be (StepClass, config_dict), got {bad!r}"])
    assert validation.parse_target(42, "w") == (None, ["42 is not a step class: targets must be Step subclasses"])


def test_parse_targets_reports_every_bad_target():
    assert validation.parse_targets([A, B], "w") == ((Target("a", A), Target("b", B)), [])
    targets, problems = validation.parse_targets([A, 1, 2], "w")
    assert targets is None and [p.split(" ")[0] for p in problems] == ["1", "2"]


def test_parse_dynamic():
    assert validation.parse_dynamic(Dynamic(pick, [A]), "w") == (Route((Target("a", A),), pick), [])
    route, problems = validation.parse_dynamic(Dynamic("pick", []), "w")
    assert route is None
    assert problems == [
        "w: Dynamic needs a callable fn(context), got 'pick'",
        "w: Dynamic needs a non-empty targets=[...] list of the steps it may return",
    ]


def test_parse_fan_out():
    assert validation.parse_fan_out([A, B], "w") == (_route(A, B), [])
    assert validation.parse_fan_out([], "w")[1] == ["w: an empty fan-out list leads nowhere; route to at least one step"]
    route, problems = validation.parse_fan_out([A, A], "w")
    assert problems == ["w: the fan-out list names a step twice (a, a)"]


def test_parse_route_dispatches_on_the_form():
    assert validation.parse_route(A, "w") == (_route(A), [])
    assert validation.parse_route([A, B], "w") == (_route(A, B), [])
    assert validation.parse_route(Dynamic(pick, [A]), "w") == (_route(A, dynamic=pick), [])
    assert validation.parse_route(None, "w") == (None, ["None is not a step class: targets must be Step subclasses"])


def test_parse_start():
    assert validation.parse_start((A, {"n": 1})) == (Target("a", A, {"n": 1}), [])
    assert validation.parse_start(None)[1][0].startswith("start is missing")
    assert validation.parse_start([A])[1][0].startswith("start must be one step class")
    assert validation.parse_start((Wait, None))[1][0].startswith("start: Wait needs a config")


# -- transitions -------------------------------------------------------------------------------------


def test_check_key_collision():
    same = make_step("Same", ["ok"], key="a")
    assert validation.check_key_collision({"a": A}, A) == []
    assert validation.check_key_collision({"a": A}, B) == []
    (problem,) = validation.check_key_collision({"a": A}, same)
    assert problem.startswith("steps A and Same share the context key 'a'")


def test_check_source():
    assert validation.check_source(A, {"ok": Done}) == []
    assert validation.check_source(Done, {}) == ["Done is terminal: remove transitions[Done]"]
    assert validation.check_source(A, Done)[0].startswith("transitions[A] must be a dict")


def test_events_declared_and_routed():
    assert validation.check_event_declared(Two, "left", "w") == []
    (problem,) = validation.check_event_declared(Two, "up", "w")
    assert problem.startswith("w: step Two does not declare event 'up' (its events are ['left', 'right'])")
    assert validation.check_events_routed(Two, {"left": A, "right": B}) == []
    (problem,) = validation.check_events_routed(Two, {})
    assert problem.startswith("step Two declares events 'left', 'right' with no transition")


def test_read_transitions():
    built, problems = validation.read_transitions(Target("a", A), {A: {"ok": [B, C]}, B: {"ok": Done}})
    assert problems == []
    assert list(built.steps) == ["a", "b", "c", "done"]
    assert built.routes == {"a": {"ok": _route(B, C)}, "b": {"ok": _route(Done)}}
    assert [(e.source, e.target) for e in built.edges] == [("a", "b"), ("a", "c"), ("b", "done")]
    built, problems = validation.read_transitions(None, {Two: {"left": Done, "up": Done}, 3: {}})
    assert len(problems) == 3
    assert problems[0].startswith("transitions[Two]['up']: step Two does not declare event 'up'")
    assert problems[1].startswith("step Two declares event 'right' with no transition")
    assert problems[2] == "3 is not a step class: targets must be Step subclasses"


# -- versioned umbrellas --------------------------------------------------------------------------------


class _Version:
    def __init__(self, version):
        self.version = version


def _module(version):
    return type(f"V{version}", (), {"__heph_definition__": _Version(version)})


def test_check_umbrella_version():
    assert validation.check_umbrella_version(type("U", (), {})) == []
    assert validation.check_umbrella_version(type("U", (), {"version": 1}))[0].startswith("an umbrella sets versions")


def test_parse_version_entry():
    v1 = _module(1)
    assert validation.parse_version_entry(1, v1) == (v1.__heph_definition__, [])
    assert validation.parse_version_entry(True, v1) == (None, ["versions key True must be a positive int"])
    assert validation.parse_version_entry(1, "V1")[1] == ["versions[1] = 'V1' is not a valid Workflow class"]
    assert validation.parse_version_entry(2, v1)[1][0].startswith("versions[2] = V1 has version = 1")


def test_parse_versions():
    v1, v2 = _module(1), _module(2)
    assert validation.parse_versions({1: v1, 2: v2}) == ({1: v1.__heph_definition__, 2: v2.__heph_definition__}, [])
    assert validation.parse_versions([v1]) == ({}, ["versions must be a non-empty dict {1: WorkflowV1, 2: WorkflowV2}"])
    definitions, problems = validation.parse_versions({0: v1, 2: v2})
    assert definitions == {2: v2.__heph_definition__} and problems == ["versions key 0 must be a positive int"]


def test_check_current():
    assert validation.check_current(None, {1: "v1"}) == []
    assert validation.check_current(2, {1: "v1", 2: "v2"}) == []
    assert validation.check_current(None, {1: "v1", 2: "v2"}) == ["current = None is not one of the versions [1, 2]"]


def test_check_version_for():
    assert validation.check_version_for(type("U", (), {"version_for": classmethod(lambda cls, v, o: 1)})) == []
    assert validation.check_version_for(type("U", (), {"version_for": 3}))[0].startswith("version_for must be")


# -- graph walks and shape rules -------------------------------------------------------------------------


def _edges(*pairs):
    return [Edge(s, "ok", t, None, False) for s, t in pairs]


def test_adjacency():
    successors, predecessors = graph.adjacency(["a", "b", "c"], _edges(("a", "b"), ("a", "b"), ("a", "c"), ("b", "c")))
    assert successors == {"a": ["b", "c"], "b": ["c"], "c": []}
    assert predecessors == {"a": set(), "b": {"a"}, "c": {"a", "b"}}


def test_find_cycle_and_check_acyclic():
    assert graph.find_cycle({"a": ["b"], "b": []}) is None
    assert graph.check_acyclic({"a": ["b"], "b": []}) == []
    assert graph.find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    assert graph.check_acyclic({"a": ["a"]}) == ["the graph has a cycle a -> a: workflows must be acyclic"]


def test_reachability_and_common_downstream():
    reach = graph.reachability({"a": ["b", "c"], "b": ["j"], "c": ["j"], "j": []})
    assert reach == {"a": frozenset("bcj"), "b": frozenset("j"), "c": frozenset("j"), "j": frozenset()}
    assert graph.common_downstream(["b", "c"], reach) == frozenset("j")
    assert graph.common_downstream(["b", "c"], reach, frozenset("j")) == frozenset()


def test_check_leaves():
    assert graph.check_leaves({"a": A, "done": Done}, {"a": {}}, frozenset({"done"})) == []
    problems = graph.check_leaves({"a": A, "m": make_step("Mute", [])}, {}, frozenset())
    assert problems[0].startswith("step A is a leaf but not Done: add transitions[A] for its events ['ok']")
    assert problems[1] == "step Mute declares no events and is not Done: every path must end at Done"


def test_check_reachable():
    assert graph.check_reachable("a", ["a", "b"], {"a": frozenset("b")}) == []
    assert graph.check_reachable("a", ["a", "b", "c"], {"a": frozenset()}) == [
        "steps b, c are unreachable from start: route to them or remove the transitions"
    ]


def test_check_fan_out_convergence():
    reach = {"b": frozenset({"j", "done"}), "c": frozenset({"j", "done"}), "d": frozenset({"done"})}
    assert graph.check_fan_out_convergence({"a": {"ok": _route(B, C)}}, reach) == []
    assert graph.check_fan_out_convergence({"a": {"ok": _route(B, C, dynamic=pick)}}, {}) == []
    d = make_step("D", ["ok"])
    assert graph.check_fan_out_convergence({"a": {"ok": _route(B, d)}}, reach) == [
        "the fan-out of a on 'ok' to b, d never converges before Done: route every branch to a common join step first"
    ]
