"""Issue #19, the authoring API: duplicate names located, facade start options, scope-none ids,
the default ``name``, the message for a step class used twice, and ``Step.attempt``."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest
from _core_helpers import NOW, make_step, run, start

from heph import Done, Error, InvalidId, Retry, Step, Unique, VersionedWorkflow, Wait, Workflow, WorkflowDefinitionError
from heph.core import engine
from heph.core.workflow import collect_errors
from heph.testing import run_step

A = make_step("A", ["ok"])
B = make_step("B", ["ok"])

HERE = __file__


# -- 3: a duplicate workflow name carries the file and line of the class being defined ----------


def test_a_duplicate_name_is_located_at_the_class_that_reuses_it():
    class Issue19Dup(Workflow):
        unique = "k"
        start = A
        transitions = {A: {"ok": Done}}

    first_line = inspect.getsourcelines(Issue19Dup)[1]
    with collect_errors() as errors:
        class Issue19DupAgain(Workflow):
            name = "issue19dup"
            unique = "k"
            start = A
            transitions = {A: {"ok": Done}}
    line = inspect.getsourcelines(Issue19DupAgain)[1]

    assert len(errors) == 1
    error = errors[0]
    assert (error.file, error.line) == (HERE, line)
    [problem] = error.problems
    # located like every other definition problem: "file:line: Class: message" (heph check splits it)
    assert problem.startswith(f"{HERE}:{line}: ")
    assert "Issue19DupAgain: workflow name 'issue19dup' is already used by" in problem
    assert f"{HERE}:{first_line}" in problem  # and says where the first one is


def test_a_duplicate_name_raises_with_its_location_outside_collect_errors():
    class Issue19Raise(Workflow):
        unique = "k"
        start = A
        transitions = {A: {"ok": Done}}

    with pytest.raises(WorkflowDefinitionError) as caught:
        class Issue19RaiseToo(Workflow):
            name = "issue19raise"
            unique = "k"
            start = A
            transitions = {A: {"ok": Done}}
    assert caught.value.file == HERE and caught.value.line > 0
    assert caught.value.problems[0].startswith(f"{HERE}:{caught.value.line}: ")
    assert "Issue19RaiseToo: workflow name 'issue19raise' is already used" in caught.value.problems[0]


# -- 8: the facade takes start options as keywords and refuses options={...} -------------------


class Issue19Legacy1(Workflow):
    version = 1
    start = A
    transitions = {A: {"ok": Done}}


class Issue19Legacy(VersionedWorkflow):
    unique = Unique("zed")
    versions = {1: Issue19Legacy1}


class _RecordingApp:
    def __init__(self):
        self.calls = []

    def start(self, workflow, value, context=None, *, version=None, **options):
        self.calls.append((workflow, value, context, version, options))
        return f"zed::{value}"

    def _called(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
        return call

    def __getattr__(self, name):  # get, resume, cancel, retry: recorded, never expected here
        return self._called(name)


@pytest.fixture
def recording_app():
    import heph

    app = _RecordingApp()
    heph.use(app)
    try:
        yield app
    finally:
        heph.use(None)


def test_the_facade_refuses_options_as_a_dict_naming_the_keyword_spelling(recording_app):
    with pytest.raises(TypeError, match=r"keyword arguments: write Issue19Legacy\.start\(value, context, legacy=True\)"):
        Issue19Legacy.start("zed1", {}, options={"legacy": True})
    assert recording_app.calls == []  # nothing was started


def test_the_facade_hands_keyword_options_to_the_app(recording_app):
    assert Issue19Legacy.start("zed1", {"a": 1}, legacy=True) == "zed::zed1"
    assert recording_app.calls == [(Issue19Legacy, "zed1", {"a": 1}, None, {"legacy": True})]


# -- 8: get/resume/cancel of a scope-none workflow explain the suffix ----------------------------


class Issue19Anon(Workflow):
    unique = Unique("anon", scope="none")
    start = A
    transitions = {A: {"ok": Done}}


@pytest.mark.parametrize("call", [
    lambda: Issue19Anon.get("zed"),
    lambda: Issue19Anon.resume("zed", "ok"),
    lambda: Issue19Anon.cancel("zed"),
    lambda: Issue19Anon.retry("zed"),
])
def test_scope_none_facades_explain_that_ids_carry_a_suffix(call, recording_app):
    with pytest.raises(InvalidId) as caught:
        call()
    assert recording_app.calls == []
    message = str(caught.value)
    assert "uses scope 'none'" in message
    assert "anon::zed::<suffix>" in message
    assert "start() returned" in message and "Issue19Anon.list()" in message


def test_scope_none_full_ids_still_work():
    assert Issue19Anon.instance_id("anon::zed::0badcafe") == "anon::zed::0badcafe"
    with pytest.raises(InvalidId, match="does not use the business key"):
        Issue19Anon.instance_id("other::zed::0badcafe")


# -- 9: ``name`` reads as its default --------------------------------------------------------------


def test_name_defaults_to_the_lower_cased_class_name_as_a_class_attribute():
    class Issue19OrderFlow(Workflow):
        unique = "k"
        start = A
        transitions = {A: {"ok": Done}}

    assert Issue19OrderFlow.name == "issue19orderflow"
    assert Issue19OrderFlow.__heph_workflow_name__ == "issue19orderflow"
    assert Issue19Legacy.name == "issue19legacy"


def test_an_explicit_name_is_kept():
    class Issue19Named(Workflow):
        name = "issue19_named"
        unique = "k"
        start = A
        transitions = {A: {"ok": Done}}

    assert Issue19Named.name == "issue19_named"


# -- 15: a step class used twice: the cycle message says how to use it twice ------------------


def test_a_step_class_used_twice_is_one_node_and_the_message_says_how_to_subclass_it():
    with pytest.raises(WorkflowDefinitionError) as caught:
        class Issue19TwoWaits(Workflow):
            unique = "k"
            start = A
            transitions = {
                A: {"ok": (Wait, {"duration": 1, "unit": "second"})},
                Wait: {"timeout": B},
                B: {"ok": (Wait, {"duration": 2, "unit": "second"})},
            }
    [problem] = [p for p in caught.value.problems if "cycle" in p]
    assert "the graph has a cycle wait -> b -> wait: workflows must be acyclic" in problem
    assert "A step class is one node of the graph" in problem
    assert 'class SecondWait(Wait): key = "second_wait"' in problem


def test_the_subclass_the_message_suggests_is_accepted():
    class SecondWait(Wait):
        key = "second_wait"

    class Issue19TwoWaitsFixed(Workflow):
        unique = "k"
        start = A
        transitions = {
            A: {"ok": (Wait, {"duration": 1, "unit": "second"})},
            Wait: {"timeout": B},
            B: {"ok": (SecondWait, {"duration": 2, "unit": "second"})},
            SecondWait: {"timeout": Done},
        }

    assert set(Issue19TwoWaitsFixed.definition().steps) == {"a", "wait", "b", "second_wait", "done"}


def test_a_plain_loop_back_to_start_keeps_the_short_message():
    Loop = make_step("Loop", ["ok", "stop"])
    with pytest.raises(WorkflowDefinitionError) as caught:
        class Issue19Loop(Workflow):
            unique = "k"
            start = Loop
            transitions = {Loop: {"ok": B, "stop": Done}, B: {"ok": Loop}}
    assert any(p.endswith("the graph has a cycle loop -> b -> loop: workflows must be acyclic")
               for p in caught.value.problems)


# -- 16: a step can tell which attempt it is on -------------------------------------------------


class Flaky(Step):
    events = ["ok"]
    retry = Retry(max_attempts=3, backoff="constant", base_delay=1, max_delay=1)
    seen: list[int] = []

    def execute(self, instance, config, context):
        attempt = self.attempt(instance)
        Flaky.seen.append(attempt)
        if attempt < 3:
            return Error(f"attempt {attempt} failed")
        return "ok", {"attempt": attempt}


class Issue19Flaky(Workflow):
    unique = "k"
    start = Flaky
    transitions = {Flaky: {"ok": Done}}


def test_step_attempt_counts_the_retries():
    Flaky.seen = []
    definition, instance = start(Issue19Flaky)
    assert instance.status == "waiting" and Flaky.seen == [1]
    later = NOW
    for _ in range(2):  # fire each due retry, as tick does
        later += timedelta(seconds=5)
        instance, fired = engine.fire_due(definition, instance, later)
        assert [f["kind"] for f in fired] == ["retry"]
        instance = run(definition, instance, later)
    assert Flaky.seen == [1, 2, 3]
    assert instance.status == "completed"
    assert instance.context.steps["flaky"] == {"attempt": 3}
    assert [h.attempt for h in instance.history if h.step == "flaky"] == [1, 2, 3]


def test_step_attempt_is_1_outside_a_run():
    assert Flaky().attempt(None) == 1
    Flaky.seen = []
    assert run_step(Flaky, {}) == Error("attempt 1 failed")
