"""Definition-time validation of workflows: every rule passes and fails, and every problem is reported."""

from __future__ import annotations

import inspect

import pytest
from _core_helpers import make_step

from heph import (
    Debug,
    Done,
    Dynamic,
    HephError,
    InvalidVersion,
    Retry,
    Step,
    Unique,
    VersionedWorkflow,
    Wait,
    WaitForEvent,
    Workflow,
    WorkflowDefinitionError,
)
from heph.core import validation
from heph.core.definition import Target
from heph.core.steps import snake_case, step_key
from heph.core.workflow import WorkflowMeta, lookup, registry

A = make_step("A", ["ok"])
B = make_step("B", ["ok"])
C = make_step("C", ["ok"])
D = make_step("D", ["ok"])
J = make_step("J", ["ok"])
Two = make_step("Two", ["left", "right"])


def pick(context):
    return B


def define(name: str, **attrs) -> type:
    """Define a workflow class called ``Flow_<name>`` with workflow name ``name`` (unique "k" by default)."""
    namespace = {"__module__": __name__, "__qualname__": f"Flow_{name}", "name": name, **attrs}
    namespace.setdefault("unique", "k")
    return WorkflowMeta(f"Flow_{name}", (Workflow,), namespace)


def problems_of(name: str, **attrs) -> list[str]:
    """The problems (without their ``file:line: Qualname: `` prefix) of an invalid workflow."""
    with pytest.raises(WorkflowDefinitionError) as caught:
        define(name, **attrs)
    marker = f"Flow_{name}: "
    for problem in caught.value.problems:
        assert marker in problem, problem
    return [p.split(marker, 1)[1] for p in caught.value.problems]


def assert_one(problems: list[str], *fragments: str) -> str:
    """Exactly one problem contains every fragment; return it."""
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert len(matching) == 1, f"{fragments} in {problems}"
    return matching[0]


SIMPLE = {"start": A, "transitions": {A: {"ok": Done}}}


# -- a valid workflow and its definition -----------------------------------------------------------


def test_valid_workflow_compiles_to_a_definition():
    class OrderFlowValid(Workflow):
        unique = Unique(key="orderid", scope="workflow")
        tags = ["orders", "payments"]
        metadata = {"team": "payments", "nested": {"a": [1, 2.5, None, True]}}
        start = A
        transitions = {A: {"ok": [B, C]}, B: {"ok": J}, C: {"ok": J}, J: {"ok": Done}}

    d = OrderFlowValid.definition()
    assert d.name == "orderflowvalid"  # default: class name lower-cased
    assert d.version == 1
    assert d.unique == Unique("orderid", "workflow")
    assert d.tags == ["orders", "payments"]
    assert d.metadata == {"team": "payments", "nested": {"a": [1, 2.5, None, True]}}
    assert d.start == Target("a", A, None)
    assert set(d.steps) == {"a", "b", "c", "j", "done"}
    assert d.predecessors["j"] == frozenset({"b", "c"})
    assert d.successors("a") == ["b", "c"]
    order = d.topological_order()
    assert order[0] == "a" and order[-1] == "done"
    assert order.index("j") > order.index("b") and order.index("j") > order.index("c")
    assert d.events_of("a") == ["ok"]
    assert d.file == __file__ and d.line > 0 and d.cls is OrderFlowValid
    assert lookup("orderflowvalid") is OrderFlowValid
    assert "orderflowvalid" in registry()
    assert OrderFlowValid.resolve_version() == 1
    # start stays usable as the facade classmethod
    assert callable(OrderFlowValid.start)


def test_explicit_name_and_version():
    flow = define("v_named", version=3, **SIMPLE)
    assert flow.definition().name == "v_named"
    assert flow.definition().version == 3
    assert flow.definition(3) is flow.definition()
    with pytest.raises(InvalidVersion):
        flow.definition(1)


def test_invalid_name_is_reported():
    problems = problems_of("Bad-Name", **SIMPLE)
    assert_one(problems, "name 'Bad-Name' is invalid")


# -- unique ------------------------------------------------------------------------------------


def test_unique_missing():
    problems = problems_of("v_nounique", unique=None, **SIMPLE)
    assert_one(problems, "unique is missing")


@pytest.mark.parametrize(
    "unique, expected",
    [
        (Unique("orderid"), Unique("orderid", "workflow")),
        ("orderid", Unique("orderid", "workflow")),
        (Unique(key="o1", scope="version"), Unique("o1", "version")),
        (Unique(key="o1", scope="global"), Unique("o1", "global")),
        (Unique(key="o1", scope="none"), Unique("o1", "none")),
        ({"key": "o1", "scope": "global"}, Unique("o1", "global")),
    ],
)
def test_unique_valid_forms(unique, expected):
    flow = define("v_unique_ok", unique=unique, **SIMPLE)
    assert flow.definition().unique == expected


@pytest.mark.parametrize(
    "unique, fragment",
    [
        (Unique("Order"), "unique key 'Order' is invalid"),
        (Unique("a_b"), "unique key 'a_b' is invalid"),
        (Unique("a-b"), "unique key 'a-b' is invalid"),
        (Unique(""), "unique key '' is invalid"),
        ("Order", "unique key 'Order' is invalid"),
        (Unique("orderid", scope="tenant"), "unique scope 'tenant' is invalid"),
        (42, "unique must be Unique(key, scope) or a key string"),
        ({"key": "a", "bogus": 1}, "unknown fields"),
    ],
)
def test_unique_invalid(unique, fragment):
    assert_one(problems_of("v_unique_bad", unique=unique, **SIMPLE), fragment)


# -- start ---------------------------------------------------------------------------------------


def test_start_missing():
    assert_one(problems_of("v_nostart", transitions={A: {"ok": Done}}), "start is missing")


@pytest.mark.parametrize(
    "start, fragment",
    [
        (42, "42 is not a step class"),
        ([A], "start must be one step class"),
        (Dynamic(pick, targets=[A]), "start must be one step class"),
        ((A, {"x": 1}, 3), "a target tuple must be (StepClass, config_dict)"),
        ((A, "config"), "the config of A must be a dict"),
        ((A, {"x": object()}), "the config of A is not JSON-safe"),
        (Wait, "Wait needs a config"),
    ],
)
def test_start_invalid(start, fragment):
    problems = problems_of("v_badstart", start=start, transitions={A: {"ok": Done}})
    assert any(fragment in p for p in problems), problems


def test_start_with_config():
    flow = define("v_startcfg", start=(A, {"limit": 3}), transitions={A: {"ok": Done}})
    assert flow.definition().start == Target("a", A, {"limit": 3})


def test_start_wait_with_valid_config():
    flow = define("v_startwait", start=(Wait, {"duration": 1, "unit": "second"}), transitions={Wait: {"timeout": Done}})
    assert flow.definition().start.config == {"duration": 1, "unit": "second"}


# -- graph rules -----------------------------------------------------------------------------------


def test_cycle_is_rejected_and_named():
    Loop = make_step("Loop", ["ok", "stop"])
    problems = problems_of("v_cycle", start=Loop, transitions={Loop: {"ok": B, "stop": Done}, B: {"ok": Loop}})
    assert problems == ["the graph has a cycle loop -> b -> loop: workflows must be acyclic"]


def test_longer_cycle_names_every_step_on_it():
    Loop = make_step("Loop", ["ok", "stop"])
    problems = problems_of(
        "v_cycle3", start=Loop, transitions={Loop: {"ok": B, "stop": Done}, B: {"ok": C}, C: {"ok": Loop}}
    )
    assert_one(problems, "cycle loop -> b -> c -> loop")


def test_self_loop_is_a_cycle():
    Loop = make_step("Loop", ["again", "stop"])
    problems = problems_of("v_selfloop", start=Loop, transitions={Loop: {"again": Loop, "stop": Done}})
    assert_one(problems, "cycle loop -> loop")


def test_diamond_is_acyclic():
    flow = define("v_diamond", start=A, transitions={A: {"ok": [B, C]}, B: {"ok": J}, C: {"ok": J}, J: {"ok": Done}})
    assert set(flow.definition().steps) == {"a", "b", "c", "j", "done"}


def test_unreachable_step_is_named():
    problems = problems_of("v_unreach", start=A, transitions={A: {"ok": Done}, C: {"ok": Done}})
    assert problems == ["step c is unreachable from start: route to it or remove the transitions"]


def test_several_unreachable_steps_are_all_named():
    problems = problems_of("v_unreach2", start=A, transitions={A: {"ok": Done}, C: {"ok": D}, D: {"ok": Done}})
    assert_one(problems, "steps c, d are unreachable")


def test_leaf_that_is_not_done():
    problems = problems_of("v_leaf", start=A, transitions={A: {"ok": B}})
    assert_one(problems, "step B is a leaf but not Done", "['ok']")


def test_leaf_without_events():
    Mute = make_step("Mute", [])
    problems = problems_of("v_leafmute", start=A, transitions={A: {"ok": Mute}})
    assert_one(problems, "step Mute declares no events and is not Done")


def test_done_subclass_is_a_valid_leaf():
    class Finished(Done):
        pass

    assert step_key(Finished) == "finished"
    flow = define("v_doneleaf", start=A, transitions={A: {"ok": Finished}})
    assert "finished" in flow.definition().steps


def test_done_has_no_transitions():
    problems = problems_of("v_donetrans", start=A, transitions={A: {"ok": Done}, Done: {"done": B}})
    assert_one(problems, "Done is terminal")


def test_fan_out_must_converge_before_done():
    problems = problems_of("v_noconverge", start=A, transitions={A: {"ok": [B, C]}, B: {"ok": Done}, C: {"ok": Done}})
    assert problems == [
        "the fan-out of a on 'ok' to b, c never converges before Done: route every branch to a common join step first"
    ]


def test_fan_out_that_converges_late_is_fine():
    flow = define(
        "v_converge",
        start=A,
        transitions={A: {"ok": [B, C]}, B: {"ok": D}, D: {"ok": J}, C: {"ok": J}, J: {"ok": Done}},
    )
    assert flow.definition().predecessors["j"] == frozenset({"c", "d"})


def test_fan_out_partly_converging_is_rejected():
    problems = problems_of(
        "v_partconv",
        start=A,
        transitions={A: {"ok": [B, C, D]}, B: {"ok": J}, C: {"ok": J}, D: {"ok": Done}, J: {"ok": Done}},
    )
    assert_one(problems, "fan-out of a on 'ok' to b, c, d never converges")


def test_fan_out_meeting_only_at_a_done_subclass_does_not_converge():
    class Finish(Done):
        key = "finish"

    problems = problems_of(
        "v_convdonesub", start=A, transitions={A: {"ok": [B, C]}, B: {"ok": Finish}, C: {"ok": Finish}}
    )
    assert_one(problems, "fan-out of a on 'ok' to b, c never converges")


def test_fan_out_list_problems():
    assert_one(problems_of("v_emptyfan", start=A, transitions={A: {"ok": []}}), "empty fan-out list")
    problems = problems_of("v_dupfan", start=A, transitions={A: {"ok": [B, B]}, B: {"ok": Done}})
    assert_one(problems, "the fan-out list names a step twice")


# -- context keys ------------------------------------------------------------------------------------


def test_context_key_collision_is_rejected():
    X1 = make_step("X1", ["ok"], key="same")
    X2 = make_step("X2", ["ok"], key="same")
    Fork = make_step("Fork", ["one", "two"])
    problems = problems_of("v_collide", start=Fork, transitions={Fork: {"one": X1, "two": X2}, X1: {"ok": Done}, X2: {"ok": Done}})
    assert_one(problems, "steps X1 and X2 share the context key 'same'")


def test_collision_with_a_default_key():
    class ChargePayment(Step):
        events = ["ok"]

        def execute(self, instance, config, context):
            return "ok"

    Other = make_step("Other", ["ok"], key="charge_payment")
    problems = problems_of(
        "v_collide2", start=ChargePayment, transitions={ChargePayment: {"ok": Other}, Other: {"ok": Done}}
    )
    assert_one(problems, "share the context key 'charge_payment'")


def test_key_override_avoids_the_collision():
    X1 = make_step("X1", ["ok"], key="first")
    X2 = make_step("X2", ["ok"], key="second")
    flow = define("v_keys", start=X1, transitions={X1: {"ok": X2}, X2: {"ok": Done}})
    assert list(flow.definition().steps) == ["first", "second", "done"]


# -- events and transitions ------------------------------------------------------------------------------


def test_declared_event_without_transition():
    problems = problems_of("v_missingev", start=Two, transitions={Two: {"left": Done}})
    assert problems == [
        "step Two declares event 'right' with no transition: add transitions[Two]['right'] = NextStep (or Done)"
    ]


def test_several_declared_events_without_transition():
    Three = make_step("Three", ["x", "y", "z"])
    problems = problems_of("v_missingev2", start=Three, transitions={Three: {"x": Done}})
    assert_one(problems, "step Three declares events 'y', 'z' with no transition")


def test_transition_on_undeclared_event():
    problems = problems_of("v_undeclared", start=A, transitions={A: {"ok": Done, "nope": Done}})
    assert_one(problems, "step A does not declare event 'nope'", "transitions[A]['nope']")


def test_events_and_transitions_matching_both_ways():
    flow = define("v_evok", start=Two, transitions={Two: {"left": A, "right": Done}, A: {"ok": Done}})
    assert {(e.source, e.event, e.target) for e in flow.definition().edges} == {
        ("two", "left", "a"),
        ("two", "right", "done"),
        ("a", "ok", "done"),
    }


def test_transitions_must_be_dicts():
    assert_one(problems_of("v_transnotdict", start=A, transitions=[A]), "transitions must be a dict")
    problems = problems_of("v_mapnotdict", start=A, transitions={A: Done})
    assert_one(problems, "transitions[A] must be a dict")


# -- step shape ----------------------------------------------------------------------------------


def _bad_step(name, **attrs):
    return type(name, (Step,), {"__qualname__": name, **attrs})


def _execute(self, instance, config, context):
    return "ok"


@pytest.mark.parametrize(
    "step, fragment",
    [
        (_bad_step("StrEvents", events="ok", execute=_execute), "step StrEvents must declare events as a list of str"),
        (_bad_step("IntEvents", events=["ok", 3], execute=_execute), "step IntEvents must declare events as a list of str"),
        (_bad_step("NoneEvents", events=None, execute=_execute), "step NoneEvents must declare events as a list of str"),
        (_bad_step("NoExecute", events=["ok"]), "step NoExecute has no execute"),
        (_bad_step("BadExecute", events=["ok"], execute=3), "step BadExecute has no execute"),
        (_bad_step("TwiceEvents", events=["ok", "ok"], execute=_execute), "declares an event twice"),
        (_bad_step("BadKey", events=["ok"], execute=_execute, key="bad key"), "has key 'bad key'"),
        (_bad_step("BadRetry", events=["ok"], execute=_execute, retry=3), "has retry 3: use heph.Retry"),
        (
            _bad_step("BadRetry2", events=["ok"], execute=_execute, retry=Retry(max_attempts=0)),
            "step BadRetry2 retry: max_attempts must be an int >= 1",
        ),
        (
            _bad_step("BadRetry3", events=["ok"], execute=_execute, retry=Retry(backoff="random")),
            "backoff must be one of exponential, linear, constant",
        ),
        (
            _bad_step("BadRetry4", events=["ok"], execute=_execute, retry=Retry(base_delay=-1)),
            "base_delay must be a number >= 0",
        ),
        (
            _bad_step("BadRetry5", events=["ok"], execute=_execute, retry=Retry(max_delay=float("inf"))),
            "max_delay must be a number >= 0",
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_bad_step_shapes(step, fragment):
    problems = problems_of("v_badstep", start=A, transitions={A: {"ok": step}, step: {"ok": Done}})
    assert any(fragment in p for p in problems), problems


def test_target_that_is_not_a_class():
    def not_a_step():
        pass

    problems = problems_of("v_notclass", start=A, transitions={A: {"ok": not_a_step}})
    assert any("is not a step class" in p for p in problems), problems
    problems = problems_of("v_instance", start=A, transitions={A: {"ok": B()}})
    assert any("is not a step class" in p for p in problems), problems


def test_a_valid_retry_policy_is_accepted():
    policy = Retry(max_attempts=5, backoff="linear", base_delay=0, max_delay=10)
    Flaky = make_step("Flaky", ["ok"], retry=policy)
    definition = define("v_retryok", start=Flaky, transitions={Flaky: {"ok": Done}}).definition()
    assert definition.steps["flaky"] is Flaky
    assert definition.steps["flaky"].retry == policy


# -- tags, metadata, version ------------------------------------------------------------------------------


@pytest.mark.parametrize("tags", [[], ["a"], ["a", "b"], ("a", "b")])
def test_tags_valid(tags):
    assert define("v_tags", tags=tags, **SIMPLE).definition().tags == list(tags)


@pytest.mark.parametrize("tags", ["orders", ["a", 1], [None], {"a": 1}, 3])
def test_tags_invalid(tags):
    assert_one(problems_of("v_tagsbad", tags=tags, **SIMPLE), "tags must be a list of str")


@pytest.mark.parametrize(
    "metadata",
    [{}, {"team": "x"}, {"a": {"b": {"c": [1, 2.5, None, True, "s", {"d": []}]}}}],
)
def test_metadata_valid(metadata):
    assert define("v_meta", metadata=metadata, **SIMPLE).definition().metadata == metadata


@pytest.mark.parametrize(
    "metadata, fragment",
    [
        ({1: "x"}, "non-str key 1"),
        ({"a": object()}, "is not JSON-safe (object)"),
        ({"a": {"b": [1, object()]}}, "metadata['a']['b'][1]"),
        ({"a": {2: "x"}}, "non-str key 2"),
        ({"a": float("nan")}, "not a finite number"),
        ({"a": {1, 2}}, "is not JSON-safe (set)"),
        (["team"], "metadata must be a dict"),
    ],
)
def test_metadata_invalid(metadata, fragment):
    assert_one(problems_of("v_metabad", metadata=metadata, **SIMPLE), fragment)


@pytest.mark.parametrize("version", [1, 2, 100])
def test_version_valid(version):
    assert define("v_version", version=version, **SIMPLE).definition().version == version


@pytest.mark.parametrize("version", [0, -1, True, False, "1", 1.0, None])
def test_version_invalid(version):
    problems = problems_of("v_versionbad", version=version, **SIMPLE)
    assert problems == [f"version must be a positive int, got {version!r}"]


# -- Wait configs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["second", "minute", "hour", "day"])
def test_wait_config_valid(unit):
    flow = define(
        "v_waitok", start=A, transitions={A: {"ok": (Wait, {"duration": 2, "unit": unit})}, Wait: {"timeout": Done}}
    )
    assert flow.definition().routes["a"]["ok"].targets[0].config == {"duration": 2, "unit": unit}


@pytest.mark.parametrize(
    "target, fragment",
    [
        (Wait, "Wait needs a config"),
        ((Wait, None), "Wait needs a config"),
        ((Wait, {"duration": 5, "unit": "week"}), "Wait unit must be one of second, minute, hour, day, got 'week'"),
        ((Wait, {"duration": 5}), "Wait unit must be one of"),
        ((Wait, {"duration": 0, "unit": "minute"}), "Wait duration must be an int > 0, got 0"),
        ((Wait, {"duration": -3, "unit": "minute"}), "Wait duration must be an int > 0, got -3"),
        ((Wait, {"duration": "5", "unit": "minute"}), "Wait duration must be an int > 0, got '5'"),
        ((Wait, {"duration": 1.5, "unit": "minute"}), "Wait duration must be an int > 0, got 1.5"),
        ((Wait, {"duration": True, "unit": "minute"}), "Wait duration must be an int > 0, got True"),
        ((Wait, {"unit": "minute"}), "Wait duration must be an int > 0, got None"),
        ((Wait, {"duration": 1, "unit": "minute", "extra": 1}), "unknown keys ['extra']"),
    ],
)
def test_wait_config_invalid(target, fragment):
    problems = problems_of("v_waitbad", start=A, transitions={A: {"ok": target}, Wait: {"timeout": Done}})
    assert_one(problems, fragment)


def test_wait_subclass_config_is_checked_too():
    class Pause(Wait):
        key = "pause"

    problems = problems_of("v_waitsub", start=A, transitions={A: {"ok": Pause}, Pause: {"timeout": Done}})
    assert_one(problems, "Wait needs a config")


# -- Dynamic ------------------------------------------------------------------------------------------


def test_dynamic_valid():
    flow = define(
        "v_dyn", start=A, transitions={A: {"ok": Dynamic(pick, targets=[B, C])}, B: {"ok": Done}, C: {"ok": Done}}
    )
    route = flow.definition().routes["a"]["ok"]
    assert route.dynamic is pick
    assert [t.key for t in route.targets] == ["b", "c"]
    assert all(e.dynamic for e in flow.definition().edges if e.source == "a")
    assert "Dynamic(pick" in repr(Dynamic(pick, targets=[B]))


@pytest.mark.parametrize(
    "dynamic, fragment",
    [
        (Dynamic(pick, targets=[]), "Dynamic needs a non-empty targets"),
        (Dynamic(pick, targets=None), "Dynamic needs a non-empty targets"),
        (Dynamic(pick, targets=[B, 42]), "42 is not a step class"),
        (Dynamic("pick", targets=[B]), "Dynamic needs a callable fn(context)"),
        (Dynamic(pick, targets=[B, Wait]), "Wait needs a config"),
    ],
)
def test_dynamic_invalid(dynamic, fragment):
    problems = problems_of("v_dynbad", start=A, transitions={A: {"ok": dynamic}, B: {"ok": Done}, Wait: {"timeout": Done}})
    assert any(fragment in p for p in problems), problems


# -- every problem, with its location ------------------------------------------------------------------


def test_every_problem_is_reported_with_file_line_and_qualname():
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(WorkflowDefinitionError) as caught:
        class Messy(Workflow):
            name = "v_messy"
            unique = Unique("Bad_Key", scope="planet")
            version = 0
            tags = "orders"
            metadata = {1: object()}
            start = Two
            transitions = {
                Two: {"left": [B, C], "sideways": Done},
                B: {"ok": Done},
                C: {"ok": Done},
                D: {"ok": Done},
            }

    error = caught.value
    assert isinstance(error, HephError)
    assert error.code == "definition_error"
    assert error.workflow.endswith("Messy")
    prefix = f"{__file__}:{line}: {Messy_qualname()}: "
    assert all(p.startswith(prefix) for p in error.problems), error.problems
    bare = [p[len(prefix):] for p in error.problems]
    for fragment in [
        "unique key 'Bad_Key' is invalid",
        "unique scope 'planet' is invalid",
        "version must be a positive int, got 0",
        "tags must be a list of str",
        "metadata has a non-str key 1",
        "does not declare event 'sideways'",
        "step Two declares event 'right' with no transition",
        "step d is unreachable",
        "fan-out of two on 'left' to b, c never converges",
    ]:
        assert_one(bare, fragment)
    assert len(error.problems) == 9
    message = str(error)
    assert "has 9 definition problems" in message
    assert all(p in message for p in error.problems)


def Messy_qualname() -> str:
    return f"{test_every_problem_is_reported_with_file_line_and_qualname.__qualname__}.<locals>.Messy"


def test_one_problem_message_is_singular():
    error = WorkflowDefinitionError("X", ["only one"])
    assert "has 1 definition problem:" in str(error)
    assert error.problems == ["only one"]


def test_problems_are_not_repeated():
    # A bad step used as a source and as targets is reported once.
    Bad = _bad_step("BadTwice", events="ok", execute=_execute)
    problems = problems_of("v_norepeat", start=A, transitions={A: {"ok": [Bad, B]}, Bad: {"ok": J}, B: {"ok": J}, J: {"ok": Done}})
    assert len([p for p in problems if "BadTwice must declare events" in p]) == 1


# -- workflow names are unique -----------------------------------------------------------------------


def test_duplicate_workflow_name_is_rejected():
    class FirstOfName(Workflow):
        name = "v_dupname"
        unique = "k"
        start = A
        transitions = {A: {"ok": Done}}

    with pytest.raises(WorkflowDefinitionError) as caught:
        class SecondOfName(Workflow):
            name = "v_dupname"
            unique = "k"
            start = B
            transitions = {B: {"ok": Done}}

    (problem,) = caught.value.problems
    assert "workflow name 'v_dupname' is already used by" in problem
    assert "FirstOfName" in problem
    assert lookup("v_dupname") is FirstOfName


def test_default_names_clash_too():
    def first():
        class Clash(Workflow):
            unique = "k"
            start = A
            transitions = {A: {"ok": Done}}

        return Clash

    def second():
        class Clash(Workflow):
            unique = "k"
            start = A
            transitions = {A: {"ok": Done}}

        return Clash

    first()
    with pytest.raises(WorkflowDefinitionError, match="workflow name 'clash' is already used"):
        second()


def test_redefining_the_same_class_is_allowed():
    def build():
        class SameEveryTime(Workflow):
            name = "v_same"
            unique = "k"
            start = A
            transitions = {A: {"ok": Done}}

        return SameEveryTime

    first, second = build(), build()
    assert first is not second
    assert lookup("v_same") is second


def test_umbrella_and_plain_workflow_names_clash():
    define("v_clash_umbrella", **SIMPLE)
    with pytest.raises(WorkflowDefinitionError, match="already used"):
        class Umbrella(VersionedWorkflow):
            name = "v_clash_umbrella"
            unique = "k"
            versions = {1: UserV1}


# -- versioned workflows -----------------------------------------------------------------------------


class UserV1(Workflow):
    version = 1
    start = A
    transitions = {A: {"ok": Done}}


class UserV2(Workflow):
    version = 2
    start = B
    transitions = {B: {"ok": Done}}


class Users(VersionedWorkflow):
    name = "v_users"
    unique = Unique("userid")
    versions = {1: UserV1, 2: UserV2}
    current = 2


class PickyUsers(VersionedWorkflow):
    name = "v_pickyusers"
    unique = Unique("userid", scope="version")
    versions = {1: UserV1, 2: UserV2}
    current = 2

    @classmethod
    def version_for(cls, versions, options):
        assert versions == [1, 2]
        return options.get("legacy") and 1 or options.get("want")


def test_version_classes_may_omit_unique_and_name():
    d = UserV1.definition()
    assert d.unique is None and d.version == 1
    assert lookup("userv1") is None


def test_umbrella_definitions():
    assert Users.definition().version == 2
    assert Users.definition().start.key == "b"
    v1 = Users.definition(1)
    assert (v1.name, v1.version, v1.unique) == ("v_users", 1, Unique("userid"))
    assert Users.definition(2).name == "v_users"
    assert lookup("v_users") is Users
    # the version classes' own definitions are left alone
    assert UserV1.definition().unique is None
    with pytest.raises(InvalidVersion, match="no version 3"):
        Users.definition(3)


def test_version_resolution_chain():
    # explicit > version_for > current
    assert Users.resolve_version() == 2
    assert Users.resolve_version(1) == 1
    assert Users.resolve_version(1, {"want": 2}) == 1
    assert PickyUsers.resolve_version() == 2
    assert PickyUsers.resolve_version(None, {"legacy": True}) == 1
    assert PickyUsers.resolve_version(None, {"want": 2}) == 2
    assert PickyUsers.resolve_version(2, {"legacy": True}) == 2
    with pytest.raises(InvalidVersion):
        PickyUsers.resolve_version(None, {"want": 7})
    with pytest.raises(InvalidVersion):
        Users.resolve_version(5)


def test_plain_workflow_resolution():
    flow = define("v_plainresolve", version=4, **SIMPLE)
    assert flow.resolve_version() == 4
    assert flow.resolve_version(4) == 4
    with pytest.raises(InvalidVersion):
        flow.resolve_version(1)


def test_single_version_umbrella_defaults_current():
    class OneVersion(VersionedWorkflow):
        name = "v_oneversion"
        unique = "userid"
        versions = {1: UserV1}

    assert OneVersion.definition().version == 1


def _umbrella_problems(**attrs) -> list[str]:
    namespace = {"__module__": __name__, "__qualname__": "Umb", "name": "v_umbrella_bad", "unique": "userid", **attrs}
    with pytest.raises(WorkflowDefinitionError) as caught:
        WorkflowMeta("Umb", (VersionedWorkflow,), namespace)
    return [p.split("Umb: ", 1)[1] for p in caught.value.problems]


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        ({"version": 1, "versions": {1: UserV1}}, "remove version"),
        ({"versions": {0: UserV1}}, "versions key 0 must be a positive int"),
        ({"versions": {-1: UserV1}}, "versions key -1 must be a positive int"),
        ({"versions": {"1": UserV1}}, "versions key '1' must be a positive int"),
        ({"versions": {True: UserV1}}, "versions key True must be a positive int"),
        ({"versions": {1: UserV1, 2: UserV2}, "current": 3}, "current = 3 is not one of the versions [1, 2]"),
        ({"versions": {1: UserV1, 2: UserV2}}, "current = None is not one of the versions"),
        ({"versions": {2: UserV1}}, "versions[2] = UserV1 has version = 1"),
        ({"versions": {1: A}}, "versions[1] = A is not a valid Workflow class"),
        ({"versions": {1: "UserV1"}}, "is not a valid Workflow class"),
        ({"versions": {}}, "versions must be a non-empty dict"),
        ({"versions": [UserV1]}, "versions must be a non-empty dict"),
        ({"versions": {1: UserV1}, "unique": None}, "unique is missing"),
        ({"versions": {1: UserV1}, "unique": "User"}, "unique key 'User' is invalid"),
        ({"versions": {1: UserV1}, "version_for": 3}, "version_for must be a classmethod"),
    ],
)
def test_umbrella_invalid(attrs, fragment):
    assert_one(_umbrella_problems(**attrs), fragment)


def test_umbrella_reports_every_problem():
    problems = _umbrella_problems(version=2, unique=None, versions={0: UserV1, 2: UserV1}, current=9)
    for fragment in ["unique is missing", "remove version", "versions key 0", "versions[2] = UserV1 has version = 1", "current = 9"]:
        assert_one(problems, fragment)


def test_version_class_with_an_invalid_version():
    with pytest.raises(WorkflowDefinitionError, match="version must be a positive int, got 0"):
        class BadVersion(Workflow):
            version = 0
            start = A
            transitions = {A: {"ok": Done}}


# -- snake_case step keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, key",
    [
        ("ProcessPayment", "process_payment"),
        ("HTTPRequest", "http_request"),
        ("A", "a"),
        ("Charge", "charge"),
        ("Step2Go", "step2_go"),
        ("getHTTPResponseCode", "get_http_response_code"),
        ("ABC", "abc"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case(name, key):
    assert snake_case(name) == key


def test_step_keys_default_and_override():
    class ProcessPayment(Step):
        events = ["ok"]

    class HTTPRequest(Step):
        events = ["ok"]

    class Charge(Step):
        events = ["ok"]
        key = "charge_it"

    class SubCharge(Charge):
        pass

    assert ProcessPayment.key == "process_payment"
    assert HTTPRequest.key == "http_request"
    assert Charge.key == "charge_it"
    assert SubCharge.key == "sub_charge"
    assert (Done.key, Wait.key, WaitForEvent.key, Debug.key) == ("done", "wait", "wait_for_event", "debug")
    assert step_key(Charge) == "charge_it"


def test_validation_functions_return_problems():
    """``heph check`` reuses the rule functions: they return problems instead of raising."""

    class Loose:  # a class that never went through the metaclass
        unique = "k"
        __heph_start__ = A
        transitions = {A: {"ok": B}}

    definition, problems = validation.compile_workflow(Loose, name="loose", unique_required=True)
    assert definition is None
    assert problems == ["step B is a leaf but not Done: add transitions[B] for its events ['ok'] (every path must end at Done)"]
    assert validation.located(["x"], "f.py", 3, "Q") == ["f.py:3: Q: x"]
