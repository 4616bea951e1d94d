"""The runtime API of SPEC §3: start, resume, get, list, cancel, retry, tick, telemetry, facades.

Every test runs against the JSON-file store and the in-memory store, with a
``ManualClock`` so that timers and retries fire only when the test moves time.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from datetime import timedelta

import pytest

import heph
from heph import (
    ASYNC,
    Done,
    Retry,
    Step,
    Unique,
    VersionedWorkflow,
    Wait,
    WaitForEvent,
    Workflow,
)
from heph.core import engine
from heph.runtime.app import new_run_id
from heph.runtime.storage import JsonFileStorage, MemoryStorage

RUNS: Counter = Counter()  # (step key, instance id) -> executions
FAILS: dict[str, int] = {}  # instance id -> how many attempts of rt_flaky fail


class RtA(Step):
    events = ["ok"]
    key = "rt_a"

    def execute(self, instance, config, context):
        RUNS["rt_a", instance.id] += 1
        return "ok", {"a": context.initial.get("n", 0) + 1}


class RtB(Step):
    events = ["ok"]
    key = "rt_b"

    def execute(self, instance, config, context):
        return "ok", {"b": context.steps["rt_a"]["a"] * 2}, {"b_meta": True}


class RtSync(Workflow):
    unique = Unique("sync")
    name = "rt_sync"
    start = RtA
    transitions = {RtA: {"ok": RtB}, RtB: {"ok": Done}}


class RtWaitA(Workflow):
    unique = Unique("order", scope="workflow")
    name = "rt_wait_a"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class RtWaitB(Workflow):
    unique = Unique("order", scope="workflow")
    name = "rt_wait_b"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class RtGlobalA(Workflow):
    unique = Unique("glob", scope="global")
    name = "rt_global_a"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class RtGlobalB(Workflow):
    unique = Unique("glob", scope="global")
    name = "rt_global_b"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class RtVerV1(Workflow):
    version = 1
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class RtVerV2(Workflow):
    version = 2
    start = RtA
    transitions = {RtA: {"ok": WaitForEvent}, WaitForEvent: {"received": Done}}


class RtVer(VersionedWorkflow):
    unique = Unique("ver", scope="version")
    name = "rt_ver"
    versions = {1: RtVerV1, 2: RtVerV2}
    current = 2


class RtNone(Workflow):
    unique = Unique("multi", scope="none")
    name = "rt_none"
    start = RtA
    transitions = {RtA: {"ok": Done}}


class RtTimer(Workflow):
    unique = Unique("timer")
    name = "rt_timer"
    start = RtA
    transitions = {RtA: {"ok": (Wait, {"duration": 5, "unit": "minute"})}, Wait: {"timeout": Done}}


class RtFork(Step):
    events = ["go"]
    key = "rt_fork"

    def execute(self, instance, config, context):
        return "go"


class RtApproveA(Step):
    events = ["approved"]
    key = "approve_a"

    def execute(self, instance, config, context):
        return ASYNC


class RtApproveB(Step):
    events = ["approved", "rejected"]
    key = "approve_b"

    def execute(self, instance, config, context):
        return ASYNC


class RtJoin(Step):
    events = ["joined"]
    key = "rt_join"

    def execute(self, instance, config, context):
        RUNS["rt_join", instance.id] += 1
        return "joined"


class RtBoth(Workflow):
    unique = Unique("both")
    name = "rt_both"
    start = RtFork
    transitions = {
        RtFork: {"go": [RtApproveA, RtApproveB]},
        RtApproveA: {"approved": RtJoin},
        RtApproveB: {"approved": RtJoin, "rejected": RtJoin},
        RtJoin: {"joined": Done},
    }


class RtFlaky(Step):
    events = ["ok"]
    key = "rt_flaky"
    retry = Retry(max_attempts=3, backoff="exponential", base_delay=10, max_delay=60)

    def execute(self, instance, config, context):
        RUNS["rt_flaky", instance.id] += 1
        attempt = RUNS["rt_flaky", instance.id]
        if attempt <= FAILS.get(instance.id, 0):
            raise RuntimeError(f"flaky attempt {attempt}")
        return "ok"


class RtRetryFlow(Workflow):
    unique = Unique("flaky")
    name = "rt_retry"
    start = RtA
    transitions = {RtA: {"ok": RtFlaky}, RtFlaky: {"ok": Done}}


class RtOdd(Step):
    """Returns what ``context.initial["mode"]`` asks for."""

    events = ["ok"]
    key = "rt_odd"

    def execute(self, instance, config, context):
        from datetime import datetime, timezone

        mode = context.initial["mode"]
        return {
            "object": lambda: ("ok", {"when": object()}),
            "set": lambda: ("ok", {"s": {1, 2}}),
            "nan": lambda: ("ok", {"x": float("nan")}),
            "key": lambda: ("ok", {1: "int key"}),
            "metadata": lambda: ("ok", {}, {"m": object()}),
            "updates list": lambda: ("ok", [1, 2]),
            "event": lambda: "nope",
            "value": lambda: 42,
            "raise": lambda: (_ for _ in ()).throw(ValueError("kaboom")),
            "datetime": lambda: ("ok", {"at": datetime(2026, 1, 2, tzinfo=timezone.utc)}),
        }[mode]()


class RtOddFlow(Workflow):
    unique = Unique("odd")
    name = "rt_odd_flow"
    start = RtOdd
    transitions = {RtOdd: {"ok": Done}}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    FAILS.clear()
    yield
    heph.use(None)


@pytest.fixture
def clock():
    return heph.ManualClock()


@pytest.fixture(params=["json", "memory"])
def app(request, tmp_path, clock):
    storage = JsonFileStorage(tmp_path / "store") if request.param == "json" else MemoryStorage()
    return heph.use(heph.Hephaestus(storage=storage, clock=clock))


def snapshot(app):
    """Everything the store holds, to compare before and after a refused command."""
    storage = app.storage
    if isinstance(storage, JsonFileStorage):
        if not storage.root.exists():
            return None
        return {str(p.relative_to(storage.root)): p.read_bytes() if p.is_file() else "dir"
                for p in sorted(storage.root.rglob("*"))}
    return copy.deepcopy(storage._docs)


def ids(instances) -> list[str]:
    return sorted(i.id for i in instances)


def history(instance, step=None) -> list[tuple]:
    return [(h.step, h.outcome, h.event, h.attempt) for h in instance.history if step in (None, h.step)]


def tick_until_settled(app, clock, instance_id, seconds=60, rounds=10):
    for _ in range(rounds):
        if app.get(instance_id).status != "waiting":
            break
        clock.advance(seconds=seconds)
        app.tick()
    return app.get(instance_id)


# -- start ---------------------------------------------------------------------------------------


def test_start_runs_sync_steps_to_completion(app, clock):
    assert app.start(RtSync, "s1", {"n": 3}) == "sync::s1"
    instance = app.get("sync::s1")
    assert instance.status == "completed"
    assert instance.workflow == "rt_sync" and instance.version == 1
    assert instance.context.initial == {"n": 3}
    assert instance.context.steps == {"rt_a": {"a": 4}, "rt_b": {"b": 8}}
    assert instance.runtime_metadata == {"b_meta": True}
    assert instance.waiting == [] and instance.error is None
    assert history(instance) == [("rt_a", "completed", "ok", 1), ("rt_b", "completed", "ok", 1),
                                 ("done", "completed", "done", 1)]
    for entry in instance.history:
        assert entry.started_at == clock.now() == entry.finished_at
        assert entry.duration_ms == 0
    assert instance.created_at == instance.updated_at == clock.now()


def test_start_instance_with_a_full_id(app):
    assert app.start_instance(RtSync, {"n": 1}, id="sync::full1") == "sync::full1"
    assert app.start_instance("rt_sync", None, id="sync::full2") == "sync::full2"
    assert app.get("sync::full2").context.initial == {}


def test_start_run_returns_the_run_as_written(app):
    started = app.start_run(RtSync, {"n": 1}, id="sync::full3")
    assert started == app.get("sync::full3")
    assert started.status == "completed" and started.context.initial == {"n": 1}
    scoped = app.start_run(RtNone, id="multi::y")  # scope none: a suffix is added, as by start_instance
    assert re.fullmatch(r"multi::y::[0-9a-f]{8}", scoped.id) and app.get(scoped.id) == scoped


def test_start_of_an_unknown_workflow_is_refused(app):
    with pytest.raises(heph.HephError, match="unknown workflow"):
        app.start("rt_no_such_flow", "x")
    assert snapshot(app) in (None, {})


def test_already_running_within_workflow_scope(app):
    app.start(RtWaitA, "k1")
    before = snapshot(app)
    with pytest.raises(heph.AlreadyRunning, match="order::k1"):
        app.start(RtWaitA, "k1")
    assert snapshot(app) == before
    assert app.start(RtWaitB, "k1") == "order::k1"  # another workflow may use the same id
    assert sorted(i.workflow for i in app.list(id="order::k1")) == ["rt_wait_a", "rt_wait_b"]
    RtWaitA.resume("k1", "received")
    assert app.start(RtWaitA, "k1") == "order::k1"  # finished: may start again
    with pytest.raises(heph.AlreadyRunning):
        app.start(RtWaitB, "k1")


def test_already_running_within_version_scope(app):
    app.start(RtVer, "k1", version=1)
    with pytest.raises(heph.AlreadyRunning):
        app.start(RtVer, "k1", version=1)
    app.start(RtVer, "k1", version=2)  # another version may
    with pytest.raises(heph.AlreadyRunning):
        app.start(RtVer, "k1")  # current version is 2
    assert sorted(i.version for i in app.list(id="ver::k1")) == [1, 2]


def test_already_running_within_global_scope(app):
    app.start(RtGlobalA, "k1")
    before = snapshot(app)
    with pytest.raises(heph.AlreadyRunning):
        app.start(RtGlobalB, "k1")
    with pytest.raises(heph.AlreadyRunning):
        app.start(RtGlobalA, "k1")
    assert snapshot(app) == before
    RtGlobalA.resume("k1", "received")
    assert app.start(RtGlobalB, "k1") == "glob::k1"


def test_restart_after_completion_keeps_the_finished_run(app):
    app.start(RtSync, "r1", {"n": 1})
    first = app.get("sync::r1")
    app.start(RtSync, "r1", {"n": 2})  # same clock reading: runs still order by creation
    runs = app.runs("sync::r1")
    assert [r.status for r in runs] == ["completed", "completed"]
    assert runs[1] == first
    assert runs[0].run != first.run and runs[0].context.initial == {"n": 2}
    assert app.get("sync::r1") == runs[0]
    assert [i.run for i in app.list(id="sync::r1")] == [r.run for r in runs]


def test_run_ids_increase_even_when_the_clock_stands_still(clock):
    made = [new_run_id(clock.now()) for _ in range(50)]
    assert made == sorted(made) and len(set(made)) == 50


def test_scope_none_ids_get_a_random_suffix(app):
    first = app.start(RtNone, "x")
    second = RtNone.start("x")
    assert re.fullmatch(r"multi::x::[0-9a-f]{8}", first)
    assert re.fullmatch(r"multi::x::[0-9a-f]{8}", second)
    assert first != second
    assert app.get(first).status == app.get(second).status == "completed"
    assert RtNone.get(second).id == second
    assert re.fullmatch(r"multi::x::[0-9a-f]{8}", app.start_instance(RtNone, id="multi::x"))
    assert app.start_instance(RtNone, id="multi::x::0badcafe") == "multi::x::0badcafe"


# -- resume ----------------------------------------------------------------------------------------


def test_resume_hands_the_event_to_the_waiting_step(app):
    app.start(RtWaitA, "w1")
    assert app.get("order::w1").waiting == ["wait_for_event"]
    done = app.resume("order::w1", "received")
    assert done.status == "completed"
    assert history(done) == [("wait_for_event", "async", None, 1), ("wait_for_event", "resumed", "received", 1),
                             ("done", "completed", "done", 1)]
    assert app.get("order::w1") == done


@pytest.mark.parametrize("state", ["completed", "cancelled"])
def test_resume_of_a_non_waiting_instance_is_refused(app, state):
    app.start(RtWaitA, "w1")
    if state == "completed":
        app.resume("order::w1", "received")
    else:
        app.cancel("order::w1")
    before = snapshot(app)
    with pytest.raises(heph.InvalidEvent, match=f"not waiting.*{state}"):
        app.resume("order::w1", "received")
    assert snapshot(app) == before


def test_resume_with_an_unknown_event_names_the_accepted_ones(app):
    app.start(RtWaitA, "w1")
    before = snapshot(app)
    with pytest.raises(heph.InvalidEvent, match="wait_for_event accepts received"):
        app.resume("order::w1", "nope")
    assert snapshot(app) == before
    with pytest.raises(heph.HephError):
        app.resume("order::w1", "")
    assert snapshot(app) == before


def test_resume_of_an_ambiguous_event_needs_step(app):
    app.start(RtBoth, "x")
    assert sorted(app.get("both::x").waiting) == ["approve_a", "approve_b"]
    before = snapshot(app)
    with pytest.raises(heph.InvalidEvent, match=r"approve_a, approve_b.*step=") as caught:
        app.resume("both::x", "approved")
    assert "approve_a" in str(caught.value)
    with pytest.raises(heph.InvalidEvent, match="rt_fork"):
        app.resume("both::x", "approved", step="rt_fork")
    with pytest.raises(heph.InvalidEvent, match="accepts"):
        app.resume("both::x", "rejected", step="approve_a")
    assert snapshot(app) == before

    half = app.resume("both::x", "approved", step="approve_a")
    assert half.status == "waiting" and half.waiting == ["approve_b"]
    assert RUNS["rt_join", "both::x"] == 0  # the join waits for both branches
    done = app.resume("both::x", "approved")  # no longer ambiguous
    assert done.status == "completed"
    assert RUNS["rt_join", "both::x"] == 1


def test_resume_through_the_facade_picks_the_workflow(app):
    app.start(RtWaitA, "w1")
    app.start(RtWaitB, "w1")
    assert RtWaitB.resume("w1", "received").workflow == "rt_wait_b"
    assert RtWaitA.get("w1").status == "waiting"
    assert RtWaitB.get("w1").status == "completed"


# -- timers, retries, tick ---------------------------------------------------------------------------


def test_wait_timer_fires_only_when_due(app, clock):
    started = clock.now()
    app.start(RtTimer, "t1")
    instance = app.get("timer::t1")
    assert instance.status == "waiting" and instance.waiting == ["wait"]
    assert instance.waits["wait"]["kind"] == "timer"
    assert instance.next_due_at == started + timedelta(minutes=5)
    assert app.tick() == []
    clock.advance(minutes=4, seconds=59)
    assert app.tick() == []
    assert app.get("timer::t1").status == "waiting"
    clock.advance(seconds=1)
    fired = app.tick()
    assert [(f["id"], f["step"], f["kind"]) for f in fired] == [("timer::t1", "wait", "timer")]
    done = app.get("timer::t1")
    assert done.status == "completed"
    assert ("wait", "resumed", "timeout", 1) in history(done)
    assert app.tick() == []


def test_tick_skips_a_busy_instance(app, clock):
    app.start(RtTimer, "t1")
    clock.advance(minutes=10)
    with app.storage.session("timer::t1"):
        assert app.tick() == []
    assert [f["id"] for f in app.tick()] == ["timer::t1"]


def test_retries_back_off_and_tick_runs_the_next_attempt(app, clock):
    FAILS["flaky::f1"] = 2
    t0 = clock.now()
    app.start(RtRetryFlow, "f1")
    instance = app.get("flaky::f1")
    assert instance.status == "waiting"
    wait = instance.waits["rt_flaky"]
    assert wait["kind"] == "retry" and wait["attempt"] == 2
    assert instance.next_due_at == t0 + timedelta(seconds=10)
    assert instance.error is None
    assert app.tick() == []
    clock.advance(seconds=9)
    assert app.tick() == []
    assert RUNS["rt_flaky", "flaky::f1"] == 1
    clock.advance(seconds=1)
    assert [(f["step"], f["kind"]) for f in app.tick()] == [("rt_flaky", "retry")]
    again = app.get("flaky::f1")
    assert again.status == "waiting"
    assert again.next_due_at == clock.now() + timedelta(seconds=20)  # exponential backoff
    clock.advance(seconds=19)
    assert app.tick() == []
    clock.advance(seconds=1)
    app.tick()
    done = app.get("flaky::f1")
    assert done.status == "completed"
    assert history(done, "rt_flaky") == [("rt_flaky", "failed", None, 1), ("rt_flaky", "failed", None, 2),
                                         ("rt_flaky", "completed", "ok", 3)]
    assert done.history[1].error["message"] == "flaky attempt 1"
    assert RUNS["rt_a", "flaky::f1"] == 1


def test_a_failed_instance_is_retried_from_the_failed_step(app, clock):
    FAILS["flaky::f1"] = 3
    app.start(RtRetryFlow, "f1")
    failed = tick_until_settled(app, clock, "flaky::f1")
    assert failed.status == "failed"
    assert failed.error["step"] == "rt_flaky"
    assert failed.error["type"] == "builtins.RuntimeError"
    assert failed.error["message"] == "flaky attempt 3"
    assert "RuntimeError: flaky attempt 3" in failed.error["traceback"]
    assert [i.id for i in app.list(status="failed")] == ["flaky::f1"]

    retried = app.retry("flaky::f1")
    assert retried.status == "completed" and retried.error is None
    assert RUNS["rt_a", "flaky::f1"] == 1  # earlier steps are not run again
    assert RUNS["rt_flaky", "flaky::f1"] == 4
    assert history(retried, "rt_flaky")[-1] == ("rt_flaky", "completed", "ok", 4)


@pytest.mark.parametrize("state", ["completed", "waiting", "cancelled"])
def test_retry_of_an_instance_that_has_not_failed_is_refused(app, state):
    app.start(RtWaitA, "w1")
    if state == "completed":
        app.resume("order::w1", "received")
    elif state == "cancelled":
        app.cancel("order::w1")
    before = snapshot(app)
    with pytest.raises(heph.NotRetryable):
        app.retry("order::w1")
    assert isinstance(heph.NotRetryable("x"), heph.HephError)
    assert snapshot(app) == before


def test_tick_recovers_a_run_left_running(app, clock):
    definition = RtSync.definition()
    now = clock.now()
    orphan = engine.begin(engine.new_instance(definition, "sync::o1", {"n": 1}, now, new_run_id(now)), now,
                          {"pid": 999999, "host": "elsewhere", "since": now.isoformat()})
    with app.storage.session("sync::o1") as session:
        session.insert(orphan)
    assert app.get("sync::o1").status == "running"
    actions = app.tick()
    assert [(a["id"], a["kind"], a["step"]) for a in actions] == [("sync::o1", "recovered", "rt_a")]
    assert app.get("sync::o1").status == "completed"
    assert app.tick() == []


# -- cancel -----------------------------------------------------------------------------------------


def test_cancel_of_a_waiting_instance_drops_its_timers(app, clock):
    app.start(RtTimer, "t1")
    cancelled = app.cancel("timer::t1")
    assert cancelled.status == "cancelled" and cancelled.waiting == []
    assert history(cancelled)[-1] == ("wait", "cancelled", None, 1)
    clock.advance(hours=1)
    assert app.storage.due(clock.now()) == []
    assert app.tick() == []
    assert app.get("timer::t1").status == "cancelled"


def test_cancel_of_a_retrying_instance(app, clock):
    FAILS["flaky::f1"] = 1
    app.start(RtRetryFlow, "f1")
    app.cancel("flaky::f1")
    clock.advance(hours=1)
    assert app.tick() == []
    assert RUNS["rt_flaky", "flaky::f1"] == 1


@pytest.mark.parametrize("state", ["completed", "cancelled"])
def test_cancel_of_a_finished_instance_is_refused(app, state):
    app.start(RtWaitA, "w1")
    if state == "completed":
        app.resume("order::w1", "received")
    else:
        app.cancel("order::w1")
    before = snapshot(app)
    with pytest.raises(heph.NotCancellable, match=state):
        app.cancel("order::w1")
    assert snapshot(app) == before


# -- get, list ----------------------------------------------------------------------------------------


def test_unknown_ids_are_not_found_and_nothing_is_written(app):
    app.start(RtSync, "s1")
    before = snapshot(app)
    for command in (lambda: app.get("sync::nothere"), lambda: app.resume("sync::nothere", "ok"),
                    lambda: app.cancel("sync::nothere"), lambda: app.retry("sync::nothere"),
                    lambda: RtSync.get("nothere"), lambda: RtWaitA.get("s1"),
                    lambda: app.get("sync::s1", workflow=RtWaitA)):
        with pytest.raises(heph.InstanceNotFound):
            command()
    assert app.runs("sync::nothere") == []
    assert snapshot(app) == before


def test_list_filters(app, clock):
    app.start(RtSync, "s1")
    app.start(RtWaitA, "w1")
    app.start(RtWaitB, "w1")
    app.start(RtVer, "v1", version=1)
    app.start(RtVer, "v2")
    app.start(RtTimer, "t1")
    app.cancel("timer::t1")

    assert ids(app.list()) == ["order::w1", "order::w1", "sync::s1", "timer::t1", "ver::v1", "ver::v2"]
    assert ids(app.list(workflow="rt_wait_a")) == ids(app.list(workflow=RtWaitA)) == ["order::w1"]
    assert [i.workflow for i in app.list(workflow=RtWaitB)] == ["rt_wait_b"]
    assert ids(app.list(workflow=RtVer)) == ["ver::v1", "ver::v2"]
    assert ids(app.list(status="waiting")) == ["order::w1", "order::w1", "ver::v1", "ver::v2"]
    assert ids(app.list(status_in=["completed", "cancelled"])) == ["sync::s1", "timer::t1"]
    assert ids(app.list(status="waiting", status_in=["waiting", "completed"])) == ids(app.list(status="waiting"))
    assert app.list(status="completed", status_in=["waiting"]) == []
    assert sorted(i.workflow for i in app.list(id="order::w1")) == ["rt_wait_a", "rt_wait_b"]
    assert [i.workflow for i in app.list(id="order::w1", workflow=RtWaitB)] == ["rt_wait_b"]
    assert ids(app.list(version=2)) == ["ver::v2"]
    assert ids(app.list(workflow=RtVer, version=1, status="waiting")) == ["ver::v1"]
    assert app.list(workflow=RtVer, version=1, status="completed") == []
    assert len(app.list(limit=2)) == 2
    newest_first = app.list()
    assert [i.run for i in newest_first] == sorted((i.run for i in newest_first), reverse=True)
    assert newest_first[0].id == "timer::t1"  # started last
    with pytest.raises(heph.HephError, match="unknown status"):
        app.list(status="exploded")
    with pytest.raises(heph.HephError, match="unknown workflow"):
        app.list(workflow="rt_no_such_flow")
    with pytest.raises(heph.InvalidId):
        app.list(id="../x")


def test_an_instance_keeps_its_version(app):
    app.start(RtVer, "v1", version=1)
    app.start(RtVer, "v2")
    assert RtVer.get("v1").version == 1
    assert RtVer.get("v2").version == 2
    assert RtVer.resume("v1", "received").status == "completed"
    assert "rt_a" not in RtVer.get("v1").context.steps  # v1 has no rt_a step
    assert RtVer.get("v2").context.steps == {"rt_a": {"a": 1}}


# -- bad input ----------------------------------------------------------------------------------------


BAD_CONTEXTS = {
    "list": [1, 2],
    "str": "text",
    "int": 42,
    "set value": {"s": {1, 2}},
    "object value": {"o": object()},
    "nan": {"x": float("nan")},
    "infinity": {"x": float("inf")},
    "int key": {1: "int key"},
    "deep set": {"deep": [{"bad": {1}}]},
}


@pytest.mark.parametrize("name", list(BAD_CONTEXTS))
def test_bad_context_is_refused_before_anything_is_written(app, name):
    with pytest.raises(heph.InvalidContext):
        app.start(RtSync, "c1", BAD_CONTEXTS[name])
    assert snapshot(app) in (None, {})
    app.start(RtSync, "c0")
    before = snapshot(app)
    with pytest.raises(heph.InvalidContext):
        RtSync.start("c1", BAD_CONTEXTS[name])
    with pytest.raises(heph.InvalidContext):
        app.start_instance(RtSync, BAD_CONTEXTS[name], id="sync::c1")
    assert snapshot(app) == before


def test_context_values_are_stored_as_plain_json(app):
    from datetime import date

    app.start(RtSync, "c1", {"when": date(2026, 1, 2), "pair": (1, 2)})
    assert app.get("sync::c1").context.initial == {"when": "2026-01-02", "pair": [1, 2]}


@pytest.mark.parametrize("value", ["A", "../x", "a::b", "", "has space", "x" * 200, "Order", 42, None])
def test_invalid_business_values_are_refused(app, value):
    with pytest.raises(heph.InvalidId):
        app.start(RtSync, value)
    with pytest.raises(heph.InvalidId):
        RtSync.start(value)
    assert snapshot(app) in (None, {})


@pytest.mark.parametrize("bad_id", ["A", "../x", "", "sync::A", "sync::../x", "sync::x::y", "sync:x", "sync::",
                                    "::x", "sync::x::0BADCAFE", "sync::x::0badcafe::1", "a/b::c"])
def test_malformed_ids_are_refused_everywhere(app, bad_id):
    for command in (lambda: app.start_instance(RtSync, id=bad_id), lambda: app.get(bad_id),
                    lambda: app.runs(bad_id), lambda: app.resume(bad_id, "ok"), lambda: app.cancel(bad_id),
                    lambda: app.retry(bad_id)):
        with pytest.raises(heph.InvalidId):
            command()
    assert snapshot(app) in (None, {})


@pytest.mark.parametrize("bad_id", ["a::b", "order::x", "sync::x::0badcafe"])
def test_ids_that_do_not_fit_the_workflow_are_refused(app, bad_id):
    with pytest.raises(heph.InvalidId):
        app.start_instance(RtSync, id=bad_id)
    assert snapshot(app) in (None, {})


@pytest.mark.parametrize("version", [9, 0, -1, "1", 1.0, True])
def test_unknown_versions_are_refused(app, version):
    with pytest.raises(heph.InvalidVersion):
        app.start(RtVer, "v1", version=version)
    with pytest.raises(heph.InvalidVersion):
        RtSync.start("s1", version=version)
    assert snapshot(app) in (None, {})


@pytest.mark.parametrize("mode, error_type", [
    ("object", "heph.NotSerializable"), ("set", "heph.NotSerializable"), ("nan", "heph.NotSerializable"),
    ("key", "heph.NotSerializable"), ("metadata", "heph.NotSerializable"),
    ("updates list", "heph.InvalidReturn"), ("event", "heph.InvalidReturn"), ("value", "heph.InvalidReturn"),
])
def test_a_step_returning_what_cannot_be_stored_fails_the_instance(app, mode, error_type):
    app.start(RtOddFlow, "o1", {"mode": mode})
    instance = app.get("odd::o1")
    assert instance.status == "failed"
    assert instance.error["type"] == error_type
    assert instance.error["step"] == "rt_odd"
    assert "rt_odd" in instance.error["message"]
    assert instance.context.steps == {}
    assert history(instance) == [("rt_odd", "failed", None, 1)]


def test_a_raising_step_fails_the_instance_with_its_traceback(app):
    app.start(RtOddFlow, "o1", {"mode": "raise"})
    error = app.get("odd::o1").error
    assert error["type"] == "builtins.ValueError" and error["message"] == "kaboom"
    assert error["step"] == "rt_odd" and "ValueError: kaboom" in error["traceback"]


def test_step_updates_are_stored_as_plain_json(app):
    app.start(RtOddFlow, "o1", {"mode": "datetime"})
    instance = app.get("odd::o1")
    assert instance.status == "completed"
    assert instance.context.steps == {"rt_odd": {"at": "2026-01-02T00:00:00+00:00"}}


# -- telemetry ----------------------------------------------------------------------------------------


def test_step_stop_telemetry(app):
    seen: list[tuple[str, dict]] = []
    unsubscribe = heph.on("step.stop", lambda name, payload: seen.append((name, payload)))
    try:
        app.start(RtSync, "tel1")
    finally:
        unsubscribe()
    assert [name for name, _ in seen] == ["step.stop"] * 3
    assert [p["step"] for _, p in seen] == ["rt_a", "rt_b", "done"]
    first = seen[0][1]
    assert first["instance_id"] == "sync::tel1"
    assert first["workflow"] == "rt_sync" and first["version"] == 1
    assert first["event"] == "ok"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    app.start(RtSync, "tel2")
    assert len(seen) == 3  # unsubscribed


def test_every_telemetry_event_of_a_run(app):
    seen: list[str] = []
    unsubscribe = heph.on("*", lambda name, payload: seen.append(name))
    try:
        app.start(RtWaitA, "tel1")
        app.resume("order::tel1", "received")
    finally:
        unsubscribe()
    assert seen == ["segment.start", "workflow.start", "step.start", "step.async", "segment.stop",
                    "segment.start", "step.resume", "step.start", "step.stop", "workflow.transition",
                    "workflow.stop", "segment.stop"]
    with pytest.raises(ValueError):
        heph.on("step.exploded", lambda name, payload: None)


def test_a_raising_telemetry_handler_is_logged_and_ignored(app, caplog):
    def broken(name, payload):
        raise RuntimeError("handler broke")

    unsubscribe = heph.on("step.stop", broken)
    try:
        with caplog.at_level(logging.ERROR, logger="heph"):
            app.start(RtSync, "tel1")
    finally:
        unsubscribe()
    assert app.get("sync::tel1").status == "completed"
    logged = [r for r in caplog.records if r.name == "heph" and r.levelno == logging.ERROR]
    assert logged and "telemetry handler" in logged[0].getMessage()
    assert "handler broke" in logged[0].exc_text


# -- facades ------------------------------------------------------------------------------------------


def test_facades(app, clock):
    assert RtWaitA.start("f1", {"n": 1}) == "order::f1"
    assert RtWaitA.get("f1").status == "waiting"
    assert [i.id for i in RtWaitA.list(status="waiting")] == ["order::f1"]
    assert RtWaitB.list() == []
    assert RtWaitA.resume("f1", "received").status == "completed"
    assert [i.id for i in RtWaitA.list(status_in=["completed"])] == ["order::f1"]

    RtWaitA.start("f2")
    assert RtWaitA.cancel("f2").status == "cancelled"
    with pytest.raises(heph.NotCancellable):
        RtWaitA.cancel("f2")

    FAILS["flaky::f3"] = 3
    RtRetryFlow.start("f3")
    assert tick_until_settled(app, clock, "flaky::f3").status == "failed"
    assert RtRetryFlow.retry("f3").status == "completed"

    assert RtVer.start("f4", version=1) == "ver::f4"
    assert RtVer.get("f4").version == 1
    assert [i.id for i in RtVer.list(version=1)] == ["ver::f4"]
    assert RtWaitA.instance_id("f1") == "order::f1"


def test_facades_need_an_app():
    heph.use(None)
    with pytest.raises(heph.HephError, match="heph.use"):
        RtSync.start("x")
