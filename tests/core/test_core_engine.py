"""The pure engine: return forms, routing, joins, waits, retries, timers, cancel and retry."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from _core_helpers import NOW, define, executed, make_step, run, start

from heph import (
    ASYNC,
    Debug,
    Done,
    Dynamic,
    Error,
    InvalidEvent,
    NotCancellable,
    NotRetryable,
    Retry,
    Step,
    Wait,
    WaitForEvent,
)
from heph.core import engine
from heph.core.engine import Completed, Failed, Paused

SECOND = timedelta(seconds=1)


def ret_flow(name: str, fn, events=("ok",)):
    """A workflow whose only step ``Ret`` (key ``ret``) runs ``fn`` and leads to Done on every event."""
    Ret = make_step("Ret", list(events), fn=fn)
    return define(name, start=Ret, transitions={Ret: {e: Done for e in events}})


def trail(instance):
    return [(h.step, h.outcome, h.event) for h in instance.history]


# -- new instances and the loop --------------------------------------------------------------


def test_new_instance():
    flow = ret_flow("e_new", lambda i, c, x: "ok")
    d = flow.definition()
    inst = engine.new_instance(d, "k::x", {"a": 1}, NOW, "run1")
    assert (inst.id, inst.workflow, inst.version, inst.status, inst.run) == ("k::x", "e_new", 1, "pending", "run1")
    assert inst.context.initial == {"a": 1} and inst.context.steps == {}
    assert inst.active == [{"step": "ret", "config": None, "attempt": 1, "first_attempt": 1}]
    assert inst.created_at == inst.updated_at == NOW
    assert inst.history == [] and inst.waits == {} and inst.error is None
    assert engine.next_step(inst) == inst.active[0]


def test_begin_sets_running_and_lease_and_settling_clears_it():
    d = ret_flow("e_begin", lambda i, c, x: ASYNC).definition()
    inst = engine.new_instance(d, "k::x", {}, NOW, "run1")
    begun = engine.begin(inst, NOW + SECOND, {"owner": "me"})
    assert begun.status == "running" and begun.lease == {"owner": "me"} and begun.updated_at == NOW + SECOND
    assert inst.status == "pending" and inst.lease is None  # the input is left alone
    after = run(d, begun)
    assert after.status == "waiting" and after.lease is None
    assert engine.next_step(after) is None


# -- every return form -----------------------------------------------------------------------


def test_return_event():
    d, inst = start(ret_flow("e_ret_event", lambda i, c, x: "ok"))
    assert inst.status == "completed"
    assert inst.context.steps == {}
    assert trail(inst) == [("ret", "completed", "ok"), ("done", "completed", "done")]
    assert inst.completed == ["ret", "done"]
    assert inst.error is None and inst.failed is None and inst.active == [] and inst.waits == {}


def test_return_event_and_updates():
    d, inst = start(ret_flow("e_ret_updates", lambda i, c, x: ("ok", {"amount": 5, "items": ["a"]})))
    assert inst.status == "completed"
    assert inst.context.steps == {"ret": {"amount": 5, "items": ["a"]}}
    assert inst.runtime_metadata == {}


def test_return_event_updates_and_metadata():
    d, inst = start(ret_flow("e_ret_meta", lambda i, c, x: ("ok", {"a": 1}, {"trace": "t1"})))
    assert inst.status == "completed"
    assert inst.context.steps == {"ret": {"a": 1}}
    assert inst.runtime_metadata == {"trace": "t1"}


@pytest.mark.parametrize("result, steps", [(("ok", None), {}), (("ok", {}), {"ret": {}}), (("ok", None, None), {})])
def test_return_empty_updates(result, steps):
    d, inst = start(ret_flow("e_ret_empty", lambda i, c, x: result))
    assert inst.status == "completed"
    assert inst.context.steps == steps


def test_return_async_then_resume():
    d, inst = start(ret_flow("e_ret_async", lambda i, c, x: ASYNC))
    assert inst.status == "waiting"
    assert inst.waiting == ["ret"]
    assert inst.waits["ret"]["kind"] == "event" and inst.waits["ret"]["due_at"] is None
    assert trail(inst) == [("ret", "async", None)]
    assert engine.next_step(inst) is None
    later = NOW + 3 * SECOND
    resumed = engine.resume(d, inst, "ok", later)
    assert resumed.status == "running"
    assert resumed.history[-1].outcome == "resumed" and resumed.history[-1].event == "ok"
    assert resumed.history[-1].started_at == NOW and resumed.history[-1].finished_at == later
    assert resumed.history[-1].duration_ms == 3000.0
    done = run(d, resumed, later)
    assert done.status == "completed"
    assert trail(done) == [("ret", "async", None), ("ret", "resumed", "ok"), ("done", "completed", "done")]


def test_return_error():
    d, inst = start(ret_flow("e_ret_error", lambda i, c, x: Error("card declined")))
    assert inst.status == "failed"
    assert inst.error == {"type": "heph.Error", "message": "card declined", "traceback": None, "step": "ret"}
    assert inst.failed == {"step": "ret", "config": None, "attempt": 1}
    entry = inst.history[-1]
    assert (entry.step, entry.outcome, entry.event, entry.error) == ("ret", "failed", None, inst.error)
    assert engine.next_step(inst) is None


def test_error_reason_may_be_any_value():
    d, inst = start(ret_flow("e_ret_error2", lambda i, c, x: Error({"code": 7})))
    assert inst.error["message"] == "{'code': 7}"


def test_raised_exception_is_a_failure_with_traceback():
    def boom(instance, config, context):
        raise ValueError("bad amount")

    d, inst = start(ret_flow("e_raise", boom))
    assert inst.status == "failed"
    assert inst.error["type"] == "builtins.ValueError"
    assert inst.error["message"] == "bad amount"
    assert inst.error["step"] == "ret"
    assert "Traceback (most recent call last)" in inst.error["traceback"]
    assert "ValueError: bad amount" in inst.error["traceback"]
    assert "in boom" in inst.error["traceback"]


def test_custom_exception_type_is_named():
    class PaymentGatewayDown(Exception):
        pass

    def boom(instance, config, context):
        raise PaymentGatewayDown("503")

    d, inst = start(ret_flow("e_raise2", boom))
    assert inst.error["type"].endswith("PaymentGatewayDown")
    assert inst.error["type"].startswith(__name__)


def test_a_step_that_cannot_be_instantiated_fails():
    class NeedsArgs(Step):
        events = ["ok"]

        def __init__(self, required):
            pass

        def execute(self, instance, config, context):
            return "ok"

    flow = define("e_init", start=NeedsArgs, transitions={NeedsArgs: {"ok": Done}})
    d, inst = start(flow)
    assert inst.status == "failed" and inst.error["type"] == "builtins.TypeError"


@pytest.mark.parametrize(
    "value, shown",
    [
        (42, "42"),
        (None, "None"),
        (["ok"], "['ok']"),
        (("ok",), "('ok',)"),
        ((1, {}), "(1, {})"),
        (("ok", {}, {}, {}), "('ok', {}, {}, {})"),
        ({"ok": 1}, "{'ok': 1}"),
        (b"ok", "b'ok'"),
        (True, "True"),
    ],
)
def test_any_other_return_value_fails_naming_step_and_value(value, shown):
    d, inst = start(ret_flow("e_badreturn", lambda i, c, x: value))
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.InvalidReturn"
    assert inst.error["message"].startswith(f"step ret returned {shown}: expected 'event'")


def test_undeclared_event_fails_naming_step_and_event():
    d, inst = start(ret_flow("e_undeclared", lambda i, c, x: ("nope", {"a": 1})))
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.InvalidReturn"
    assert inst.error["message"] == "step ret returned event 'nope', which it does not declare ['ok']"
    assert inst.context.steps == {}


@pytest.mark.parametrize(
    "result, fragment",
    [
        (("ok", ["a"]), "step ret returned updates ['a']: updates must be a dict"),
        (("ok", "text"), "step ret returned updates 'text': updates must be a dict"),
        (("ok", {}, ["m"]), "step ret returned metadata ['m']: metadata must be a dict"),
    ],
)
def test_updates_and_metadata_must_be_dicts(result, fragment):
    d, inst = start(ret_flow("e_notdict", lambda i, c, x: result))
    assert inst.status == "failed"
    assert inst.error["message"] == fragment


@pytest.mark.parametrize(
    "result, where",
    [
        (("ok", {"payload": object()}), "payload: object is not JSON-serialisable"),
        (("ok", {"tags": {"a", "b"}}), "tags: set is not JSON-serialisable"),
        (("ok", {"ratio": float("nan")}), "ratio: nan is not a finite number"),
        (("ok", {"deep": {"items": [1, 2, object()]}}), "deep.items[2]: object is not JSON-serialisable"),
        (("ok", {1: "one"}), "key 1 is not a string"),
        (("ok", {}, {"meta": object()}), "meta: object is not JSON-serialisable"),
    ],
)
def test_non_json_safe_data_fails_naming_step_and_key(result, where):
    d, inst = start(ret_flow("e_notjson", lambda i, c, x: result))
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.NotSerializable"
    assert inst.error["message"].startswith("step ret returned data that cannot be stored as JSON: ")
    assert where in inst.error["message"]
    assert inst.context.steps == {} and inst.runtime_metadata == {}


def test_datetime_decimal_uuid_are_stored_as_strings():
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    uid = UUID("12345678-1234-5678-1234-567812345678")
    updates = {
        "at": moment,
        "day": date(2024, 5, 6),
        "amount": Decimal("10.50"),
        "id": uid,
        "pair": (1, 2),
        "nested": {"when": [moment]},
    }
    d, inst = start(ret_flow("e_convert", lambda i, c, x: ("ok", updates, {"amount": Decimal("1.5")})))
    assert inst.status == "completed"
    assert inst.context.steps["ret"] == {
        "at": "2024-05-06T07:08:09+00:00",
        "day": "2024-05-06",
        "amount": "10.50",
        "id": "12345678-1234-5678-1234-567812345678",
        "pair": [1, 2],
        "nested": {"when": ["2024-05-06T07:08:09+00:00"]},
    }
    assert inst.runtime_metadata == {"amount": "1.5"}


def test_interpret_directly():
    d = ret_flow("e_interpret", lambda i, c, x: "ok").definition()
    from heph.core.instance import Context

    ctx = Context({}, {})
    assert engine.interpret(d, "ret", ASYNC, ctx) == Paused()
    out = engine.interpret(d, "ret", ("ok", {"a": 1}, {"m": 2}), ctx)
    assert isinstance(out, Completed)
    assert (out.event, out.updates, out.metadata) == ("ok", {"a": 1}, {"m": 2})
    assert [t.key for t in out.targets] == ["done"]
    assert isinstance(engine.interpret(d, "ret", Error("x"), ctx), Failed)


# -- the step sees what it should ------------------------------------------------------------------


def test_step_sees_instance_config_and_context():
    seen = {}

    def look(instance, config, context):
        seen.update(id=instance.id, workflow=instance.workflow, status=instance.status, config=config,
                    initial=context.initial, steps=context.steps)
        return "ok", {"mine": 1}

    First = make_step("First", ["ok"], fn=lambda i, c, x: ("ok", {"v": 1}))
    Look = make_step("Look", ["ok"], fn=look)
    flow = define("e_sees", start=First, transitions={First: {"ok": Look}, Look: {"ok": Done}})
    d, inst = start(flow, {"amount": 3})
    assert seen == {"id": "k::x", "workflow": "e_sees", "status": "running", "config": None,
                    "initial": {"amount": 3}, "steps": {"first": {"v": 1}}}
    assert inst.context.steps == {"first": {"v": 1}, "look": {"mine": 1}}


def test_step_cannot_change_the_stored_context_through_its_context_argument():
    def meddle(instance, config, context):
        context.initial["amount"] = 999
        context.steps["intruder"] = {}
        return "ok"

    d, inst = start(ret_flow("e_meddle", meddle), {"amount": 1})
    assert inst.context.initial == {"amount": 1}
    assert inst.context.steps == {}


def test_step_cannot_change_nested_stored_data_through_its_context_argument():
    def meddle(instance, config, context):
        context.initial["order"]["items"][0]["qty"] = 999
        context.steps["first"]["seen"].append("intruder")
        return "ok"

    First = make_step("First", ["ok"], fn=lambda i, c, x: ("ok", {"seen": ["first"]}))
    Meddle = make_step("Meddle", ["ok"], fn=meddle)
    flow = define("e_meddle3", start=First, transitions={First: {"ok": Meddle}, Meddle: {"ok": Done}})
    d, inst = start(flow, {"order": {"items": [{"qty": 1}]}})
    assert inst.context.initial == {"order": {"items": [{"qty": 1}]}}
    assert inst.context.steps["first"] == {"seen": ["first"]}


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, True, None, "x"], "b": {"c": {}}},
    {"big": 10**40, "text": "é\u2028"},
    {"odd": type("Text", (str,), {})("a str subclass")},
    None,
])
def test_plain_copy_is_an_equal_independent_copy(value):
    copied = engine._plain_copy(value)
    assert copied == value and type(copied) is type(value)
    if isinstance(value, dict):
        assert copied is not value
        for key, item in value.items():
            assert type(copied[key]) is type(item)
            if isinstance(item, (dict, list)):
                assert copied[key] is not item


def test_step_cannot_change_the_instance_it_is_given():
    def meddle(instance, config, context):
        instance.runtime_metadata["leak"] = 1
        instance.history.clear()
        instance.status = "completed"
        return "ok"

    First = make_step("First", ["ok"])
    Meddle = make_step("Meddle", ["ok"], fn=meddle)
    flow = define("e_meddle2", start=First, transitions={First: {"ok": Meddle}, Meddle: {"ok": Done}})
    d, inst = start(flow)
    assert inst.status == "completed"
    assert inst.runtime_metadata == {}
    assert [h.step for h in inst.history] == ["first", "meddle", "done"]


def test_apply_outcome_does_not_change_its_input():
    d = ret_flow("e_pure", lambda i, c, x: ("ok", {"a": 1}, {"m": 1})).definition()
    inst = engine.new_instance(d, "k::x", {}, NOW, "run1")
    snapshot = inst.to_dict()
    entry = engine.next_step(inst)
    outcome = engine.execute_step(d, inst, entry)
    after = engine.apply_outcome(d, inst, entry, outcome, NOW, NOW)
    assert inst.to_dict() == snapshot
    assert after.context.steps == {"ret": {"a": 1}}


# -- config passing -------------------------------------------------------------------------------


def echo_config(name, key=None):
    return make_step(name, ["ok"], key=key, fn=lambda i, c, x: ("ok", {"config": c}))


def test_start_with_config():
    Rec = echo_config("Rec")
    flow = define("e_startcfg", start=(Rec, {"limit": 3}), transitions={Rec: {"ok": Done}})
    d, inst = start(flow)
    assert inst.context.steps["rec"] == {"config": {"limit": 3}}


def test_target_config_and_no_config():
    First = echo_config("First")
    Second = echo_config("Second")
    flow = define(
        "e_targetcfg", start=First, transitions={First: {"ok": (Second, {"mode": "fast"})}, Second: {"ok": Done}}
    )
    d, inst = start(flow)
    assert inst.context.steps == {"first": {"config": None}, "second": {"config": {"mode": "fast"}}}


def test_fan_out_configs_reach_each_branch():
    Split = make_step("Split", ["ok"])
    Left = echo_config("Left")
    Right = echo_config("Right")
    Join = echo_config("Join")
    flow = define(
        "e_fancfg",
        start=Split,
        transitions={Split: {"ok": [(Left, {"n": 1}), (Right, {"n": 2})]}, Left: {"ok": Join}, Right: {"ok": Join},
                     Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.context.steps == {"left": {"config": {"n": 1}}, "right": {"config": {"n": 2}}, "join": {"config": None}}


# -- step keys --------------------------------------------------------------------------------------


def test_key_override_names_context_history_and_waits():
    Charge = make_step("ChargePayment", ["charged"], key="charge", fn=lambda i, c, x: ("charged", {"amount": 10}))
    Approve = make_step("AwaitApproval", ["approved"], key="approval", result=ASYNC)
    flow = define("e_keys", start=Charge, transitions={Charge: {"charged": Approve}, Approve: {"approved": Done}})
    d, inst = start(flow)
    assert inst.context.steps == {"charge": {"amount": 10}}
    assert inst.waiting == ["approval"]
    assert [h.step for h in inst.history] == ["charge", "approval"]
    inst = run(d, engine.resume(d, inst, "approved", NOW, step="approval"))
    assert inst.status == "completed"


def test_default_snake_case_key_in_context():
    class ProcessPayment(Step):
        events = ["ok"]

        def execute(self, instance, config, context):
            return "ok", {"paid": True}

    flow = define("e_snake", start=ProcessPayment, transitions={ProcessPayment: {"ok": Done}})
    d, inst = start(flow)
    assert inst.context.steps == {"process_payment": {"paid": True}}


# -- runtime metadata ------------------------------------------------------------------------------


def test_runtime_metadata_accumulates_and_overwrites():
    S1 = make_step("S1", ["ok"], result=("ok", {}, {"a": 1, "b": 1}))
    S2 = make_step("S2", ["ok"], result=("ok", None, {"b": 2, "c": {"n": 3}}))
    S3 = make_step("S3", ["ok"], result=("ok", {}, {}))
    S4 = make_step("S4", ["ok"], result=("ok", {"x": 1}))
    flow = define("e_meta", start=S1, transitions={S1: {"ok": S2}, S2: {"ok": S3}, S3: {"ok": S4}, S4: {"ok": Done}})
    d, inst = start(flow)
    assert inst.runtime_metadata == {"a": 1, "b": 2, "c": {"n": 3}}


def test_metadata_is_visible_to_later_steps_through_the_instance():
    seen = {}
    S1 = make_step("S1", ["ok"], result=("ok", None, {"trace": "abc"}))
    S2 = make_step("S2", ["ok"], fn=lambda i, c, x: seen.update(i.runtime_metadata) or "ok")
    flow = define("e_meta2", start=S1, transitions={S1: {"ok": S2}, S2: {"ok": Done}})
    start(flow)
    assert seen == {"trace": "abc"}


# -- joins ---------------------------------------------------------------------------------------


def _join3(name, order):
    """Start -> three branches of lengths 1, 2 and 3 -> Join -> Done."""
    upd = lambda i, c, x: ("ok", {"v": 1})  # noqa: E731
    Start = make_step("Start", ["ok"])
    A1 = make_step("A1", ["ok"], fn=upd)
    B1, B2 = make_step("B1", ["ok"], fn=upd), make_step("B2", ["ok"], fn=upd)
    C1, C2, C3 = (make_step(n, ["ok"], fn=upd) for n in ("C1", "C2", "C3"))
    Join = make_step("Join", ["ok"], fn=lambda i, c, x: ("ok", {"seen": sorted(x.steps)}))
    firsts = {"a": A1, "b": B1, "c": C1}
    return define(
        name,
        start=Start,
        transitions={
            Start: {"ok": [firsts[k] for k in order]},
            A1: {"ok": Join},
            B1: {"ok": B2}, B2: {"ok": Join},
            C1: {"ok": C2}, C2: {"ok": C3}, C3: {"ok": Join},
            Join: {"ok": Done},
        },
    )


@pytest.mark.parametrize("order", ["abc", "cba", "bca"])
def test_join_of_three_branches_of_different_lengths(order):
    d, inst = start(_join3("e_join3", order))
    assert inst.status == "completed"
    steps = executed(inst)
    assert steps.count("join") == 1 and steps.count("done") == 1
    branch = ["a1", "b1", "b2", "c1", "c2", "c3"]
    assert set(branch) <= set(steps)
    assert all(steps.index("join") > steps.index(k) for k in branch)
    assert steps[-2:] == ["join", "done"]
    assert inst.context.steps["join"] == {"seen": sorted(branch)}
    assert d.predecessors["join"] == frozenset({"a1", "b2", "c3"})


def test_join_waits_for_an_async_branch():
    Start = make_step("Start", ["ok"])
    Quick = make_step("Quick", ["ok"])
    Slow = make_step("Slow", ["ok"])
    Approval = make_step("Approval", ["approved"], result=ASYNC)
    Join = make_step("Join", ["ok"])
    flow = define(
        "e_joinasync",
        start=Start,
        transitions={Start: {"ok": [Quick, Approval, Slow]}, Quick: {"ok": Join}, Slow: {"ok": Join},
                     Approval: {"approved": Join}, Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.status == "waiting"
    assert inst.waiting == ["approval"]
    assert "join" not in executed(inst)
    assert list(inst.arrived) == ["join"]
    inst = run(d, engine.resume(d, inst, "approved", NOW))
    assert inst.status == "completed"
    assert executed(inst).count("join") == 1


def test_join_with_a_skipped_branch_still_runs_once():
    # A branch may leave through another event; the join runs when nothing live can reach it.
    Start = make_step("Start", ["ok"])
    Maybe = make_step("Maybe", ["ok", "skip"], result="skip")
    Other = make_step("Other", ["ok"])
    Join = make_step("Join", ["ok"])
    flow = define(
        "e_joinskip",
        start=Start,
        transitions={Start: {"ok": [Maybe, Other]}, Maybe: {"ok": Join, "skip": Done}, Other: {"ok": Join},
                     Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.status == "completed"
    steps = executed(inst)
    assert steps.count("join") == 1 and steps.count("done") == 1 and steps[-1] == "done"


# -- parallel async waits and resume routing ----------------------------------------------------


def _parallel(name, first, second):
    Start = make_step("Start", ["ok"])
    Join = make_step("Join", ["ok"])
    return define(
        name,
        start=Start,
        transitions={Start: {"ok": [first, second]},
                     first: {e: Join for e in first.events},
                     second: {e: Join for e in second.events},
                     Join: {"ok": Done}},
    )


def test_parallel_waits_are_resumed_by_event():
    ApproveA = make_step("ApproveA", ["approved"], result=ASYNC)
    ApproveB = make_step("ApproveB", ["signed"], result=ASYNC)
    d, inst = start(_parallel("e_parallel", ApproveA, ApproveB))
    assert inst.status == "waiting"
    assert inst.waiting == ["approve_a", "approve_b"]
    inst = engine.resume(d, inst, "signed", NOW + SECOND)
    assert inst.history[-1].step == "approve_b" and inst.history[-1].outcome == "resumed"
    inst = run(d, inst)
    assert inst.status == "waiting" and inst.waiting == ["approve_a"]
    assert "join" not in executed(inst)
    inst = run(d, engine.resume(d, inst, "approved", NOW + 2 * SECOND))
    assert inst.status == "completed"
    assert executed(inst)[-2:] == ["join", "done"]


def _ambiguous(name):
    ReviewA = make_step("ReviewA", ["received", "rejected"], result=ASYNC)
    ReviewB = make_step("ReviewB", ["received"], result=ASYNC)
    return _parallel(name, ReviewA, ReviewB)


def test_ambiguous_event_needs_a_step():
    d, inst = start(_ambiguous("e_ambiguous"))
    with pytest.raises(InvalidEvent) as caught:
        engine.resume(d, inst, "received", NOW)
    message = str(caught.value)
    assert "review_a" in message and "review_b" in message and "step=" in message
    picked = engine.resume(d, inst, "received", NOW, step="review_b")
    assert picked.waiting == ["review_a"]
    assert picked.history[-1].step == "review_b"


def test_event_declared_by_one_waiting_step_needs_no_step():
    d, inst = start(_ambiguous("e_unambiguous"))
    out = engine.resume(d, inst, "rejected", NOW)
    assert out.history[-1].step == "review_a" and out.history[-1].event == "rejected"


def test_unknown_event_lists_what_waiting_steps_accept():
    d, inst = start(_ambiguous("e_unknownevent"))
    with pytest.raises(InvalidEvent) as caught:
        engine.resume(d, inst, "nope", NOW)
    assert str(caught.value) == (
        "no waiting step of k::x accepts 'nope'; waiting: review_a accepts received, rejected; "
        "review_b accepts received"
    )
    assert caught.value.code == "invalid_event"


def test_step_argument_must_name_a_waiting_step_that_accepts_the_event():
    d, inst = start(_ambiguous("e_badstep"))
    with pytest.raises(InvalidEvent, match="step 'start' of k::x is not waiting"):
        engine.resume(d, inst, "received", NOW, step="start")
    with pytest.raises(InvalidEvent, match="step 'ghost' of k::x is not waiting"):
        engine.resume(d, inst, "received", NOW, step="ghost")
    with pytest.raises(InvalidEvent, match="waiting step review_b does not accept 'rejected'"):
        engine.resume(d, inst, "rejected", NOW, step="review_b")


def test_resume_of_an_instance_that_is_not_waiting():
    flow = ret_flow("e_notwaiting", lambda i, c, x: "ok")
    d, inst = start(flow)
    with pytest.raises(InvalidEvent, match="is not waiting \\(status: completed\\)"):
        engine.resume(d, inst, "ok", NOW)
    pending = engine.new_instance(d, "k::y", {}, NOW, "run2")
    with pytest.raises(InvalidEvent, match="status: pending"):
        engine.resume(d, pending, "ok", NOW)


def test_resume_does_not_change_its_input():
    d, inst = start(_ambiguous("e_resumepure"))
    snapshot = inst.to_dict()
    engine.resume(d, inst, "rejected", NOW)
    assert inst.to_dict() == snapshot


def test_wait_for_event_builtin():
    flow = define("e_wfe", start=WaitForEvent, transitions={WaitForEvent: {"received": Done}})
    d, inst = start(flow)
    assert inst.waiting == ["wait_for_event"] and inst.waits["wait_for_event"]["kind"] == "event"
    assert run(d, engine.resume(d, inst, "received", NOW)).status == "completed"


# -- dynamic routing -------------------------------------------------------------------------------


Fast = make_step("Fast", ["ok"])
Standard = make_step("Standard", ["ok"])
Stray = make_step("Stray", ["ok"])


def _dynamic(name, chooser, targets=None, router=None):
    Router = router or make_step("Router", ["routed"], fn=lambda i, c, x: ("routed", {"score": x.initial.get("score", 0)}))
    targets = targets or [Fast, Standard]
    transitions = {Router: {"routed": Dynamic(chooser, targets=targets)}}
    for target in targets:
        step = target[0] if isinstance(target, tuple) else target
        transitions[step] = {e: Done for e in step.events}
    return define(name, start=Router, transitions=transitions)


def by_score(context):
    return Fast if context.steps["router"]["score"] > 5 else Standard


@pytest.mark.parametrize("score, taken, skipped", [(9, "fast", "standard"), (1, "standard", "fast")])
def test_dynamic_routing_picks_a_target(score, taken, skipped):
    d, inst = start(_dynamic("e_dyn", by_score), {"score": score})
    assert inst.status == "completed"
    assert executed(inst) == ["router", taken, "done"]
    assert skipped not in inst.completed


def test_dynamic_route_to_an_undeclared_target_fails_the_step():
    d, inst = start(_dynamic("e_dynstray", lambda ctx: Stray))
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.InvalidRoute"
    assert inst.error["step"] == "router"
    assert inst.error["message"] == (
        "dynamic route of step router on 'routed' returned Stray, which is not one of its targets (Fast, Standard)"
    )
    assert inst.context.steps == {}  # the failed step's updates are not kept


@pytest.mark.parametrize("picked", [None, "fast", 3, [Fast]])
def test_dynamic_route_returning_garbage_fails(picked):
    d, inst = start(_dynamic("e_dyngarbage", lambda ctx: picked))
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.InvalidRoute"
    assert "dynamic route of step router on 'routed' returned" in inst.error["message"]


def test_dynamic_route_function_raising_fails_with_traceback():
    def explode(ctx):
        raise KeyError("priority")

    d, inst = start(_dynamic("e_dynraise", explode))
    assert inst.status == "failed"
    assert inst.error["type"] == "builtins.KeyError"
    assert inst.error["message"].startswith("dynamic route of step router on 'routed' raised:")
    assert "KeyError" in inst.error["traceback"]


def test_dynamic_target_with_declared_config():
    Cfg = echo_config("Cfg")
    d, inst = start(_dynamic("e_dyncfg", lambda ctx: Cfg, targets=[(Cfg, {"tier": "gold"}), Standard]))
    assert inst.status == "completed"
    assert inst.context.steps["cfg"] == {"config": {"tier": "gold"}}


def test_dynamic_function_may_return_a_step_with_config():
    Cfg = echo_config("Cfg")
    d, inst = start(_dynamic("e_dyncfg2", lambda ctx: (Cfg, {"tier": "silver"}), targets=[Cfg, Standard]))
    assert inst.status == "completed"
    assert inst.context.steps["cfg"] == {"config": {"tier": "silver"}}


def test_dynamic_route_to_a_declared_timer():
    d, inst = start(
        _dynamic("e_dyntimer", lambda ctx: Wait, targets=[(Wait, {"duration": 2, "unit": "hour"}), Standard])
    )
    assert inst.status == "waiting"
    assert inst.waits["wait"]["kind"] == "timer"
    assert inst.waits["wait"]["due_at"] == (NOW + timedelta(hours=2)).isoformat()


@pytest.mark.parametrize(
    "config",
    [{"duration": 1, "unit": "fortnight"}, {"duration": 0, "unit": "hour"}, {"unit": "hour"}, "1h", {"x": object()}],
)
def test_dynamic_config_is_checked_like_a_declared_one(config):
    d, inst = start(
        _dynamic("e_dynbadcfg", lambda ctx: (Wait, config), targets=[(Wait, {"duration": 2, "unit": "hour"}), Standard])
    )
    assert inst.status == "failed"
    assert inst.error["type"] == "heph.InvalidRoute"
    assert inst.error["message"].startswith("dynamic route of step router on 'routed' returned")


def test_dynamic_route_after_resume():
    # a paused step routes dynamically when resumed
    Approve = make_step("Approve", ["approved"], result=ASYNC)
    flow = define(
        "e_dynresume",
        start=Approve,
        transitions={Approve: {"approved": Dynamic(lambda ctx: Fast if ctx.initial["vip"] else Standard,
                                                   targets=[Fast, Standard])},
                     Fast: {"ok": Done}, Standard: {"ok": Done}},
    )
    d, inst = start(flow, {"vip": True})
    inst = run(d, engine.resume(d, inst, "approved", NOW))
    assert executed(inst) == ["fast", "done"]


def test_dynamic_failure_on_resume_fails_the_instance():
    Approve = make_step("Approve", ["approved"], result=ASYNC)
    flow = define(
        "e_dynresumefail",
        start=Approve,
        transitions={Approve: {"approved": Dynamic(lambda ctx: Stray, targets=[Fast])}, Fast: {"ok": Done}},
    )
    d, inst = start(flow)
    inst = engine.resume(d, inst, "approved", NOW + SECOND)
    assert inst.status == "failed"
    assert inst.history[-1].outcome == "failed" and inst.history[-1].event == "approved"
    assert inst.error["type"] == "heph.InvalidRoute" and inst.error["step"] == "approve"
    assert inst.failed["step"] == "approve"


# -- retry policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, delays",
    [
        (Retry(max_attempts=9, backoff="exponential", base_delay=1, max_delay=30), [1, 2, 4, 8, 16, 30, 30]),
        (Retry(backoff="exponential", base_delay=0.5, max_delay=3), [0.5, 1, 2, 3, 3]),
        (Retry(backoff="linear", base_delay=2, max_delay=7), [2, 4, 6, 7, 7]),
        (Retry(backoff="constant", base_delay=5, max_delay=60), [5, 5, 5]),
        (Retry(backoff="constant", base_delay=5, max_delay=3), [3, 3]),
        (Retry(backoff="exponential", base_delay=0, max_delay=10), [0, 0, 0]),
    ],
)
def test_retry_backoff_delays(policy, delays):
    assert [policy.delay(n) for n in range(1, len(delays) + 1)] == [float(x) for x in delays]
    assert all(isinstance(policy.delay(n), float) for n in range(1, 4))


def test_retry_delay_edge_cases():
    policy = Retry(backoff="exponential", base_delay=1, max_delay=60)
    assert policy.delay(0) == policy.delay(1) == 1.0
    assert policy.delay(10_000) == 60.0  # no overflow
    assert Retry().problems() == []
    assert Retry() == Retry(max_attempts=3, backoff="exponential", base_delay=1.0, max_delay=60.0)


def test_retry_policy_problems():
    problems = Retry(max_attempts=True, backoff="x", base_delay="1", max_delay=-2).problems()
    assert len(problems) == 4


def _flaky(name, policy, fails=99, error=False):
    calls = {"n": 0}

    def execute(instance, config, context):
        calls["n"] += 1
        if calls["n"] <= fails:
            if error:
                return Error(f"attempt {calls['n']} declined")
            raise ConnectionError(f"attempt {calls['n']} timed out")
        return "ok", {"calls": calls["n"]}

    Flaky = make_step("Flaky", ["ok"], fn=execute, retry=policy)
    return define(name, start=Flaky, transitions={Flaky: {"ok": Done}}), calls


def test_retry_bookkeeping_until_attempts_run_out():
    flow, calls = _flaky("e_retry", Retry(max_attempts=3, backoff="exponential", base_delay=10, max_delay=100))
    d, inst = start(flow)
    # attempt 1 failed: waiting for a durable retry
    assert inst.status == "waiting"
    assert inst.waiting == ["flaky"]
    wait = inst.waits["flaky"]
    assert wait["kind"] == "retry" and wait["attempt"] == 2 and wait["first_attempt"] == 1
    assert wait["due_at"] == (NOW + 10 * SECOND).isoformat()
    assert wait["last_error"] == {"type": "builtins.ConnectionError", "message": "attempt 1 timed out"}
    assert inst.next_due_at == NOW + 10 * SECOND
    assert inst.error is None and inst.failed is None
    assert engine.next_step(inst) is None
    assert [(h.outcome, h.attempt) for h in inst.history] == [("failed", 1)]
    assert inst.history[0].error["type"] == "builtins.ConnectionError"

    # a retry is not an event
    with pytest.raises(InvalidEvent, match="only retries are pending"):
        engine.resume(d, inst, "ok", NOW)

    # not yet due
    early = NOW + 9 * SECOND
    assert engine.due(inst, early) == []
    same, fired = engine.fire_due(d, inst, early)
    assert fired == [] and same is inst

    # due: attempt 2 runs and fails, next delay doubles
    t1 = NOW + 10 * SECOND
    assert engine.due(inst, t1) == ["flaky"]
    ready, fired = engine.fire_due(d, inst, t1)
    assert fired == [{"id": "k::x", "run": "run1", "step": "flaky", "kind": "retry", "due_at": wait["due_at"]}]
    assert ready.status == "running" and ready.waits == {}
    assert engine.next_step(ready) == {"step": "flaky", "config": None, "attempt": 2, "first_attempt": 1}
    inst = run(d, ready, t1)
    assert calls["n"] == 2
    assert inst.status == "waiting"
    assert inst.waits["flaky"]["attempt"] == 3
    assert inst.waits["flaky"]["due_at"] == (t1 + 20 * SECOND).isoformat()

    # attempt 3 fails: out of attempts
    t2 = t1 + 20 * SECOND
    inst, _ = engine.fire_due(d, inst, t2)
    inst = run(d, inst, t2)
    assert calls["n"] == 3
    assert inst.status == "failed"
    assert inst.waits == {} and inst.waiting == []
    assert inst.failed == {"step": "flaky", "config": None, "attempt": 3}
    assert inst.error["type"] == "builtins.ConnectionError"
    assert inst.error["message"] == "attempt 3 timed out"
    assert "ConnectionError: attempt 3 timed out" in inst.error["traceback"]
    assert [(h.step, h.outcome, h.attempt) for h in inst.history] == [
        ("flaky", "failed", 1), ("flaky", "failed", 2), ("flaky", "failed", 3)
    ]
    assert inst.history[0].finished_at == NOW and inst.history[2].finished_at == t2


def test_retry_succeeds_on_a_later_attempt():
    flow, calls = _flaky("e_retryok", Retry(max_attempts=3, backoff="constant", base_delay=1), fails=1, error=True)
    d, inst = start(flow)
    assert inst.status == "waiting" and inst.waits["flaky"]["last_error"]["type"] == "heph.Error"
    inst, _ = engine.fire_due(d, inst, NOW + SECOND)
    inst = run(d, inst, NOW + SECOND)
    assert inst.status == "completed"
    assert [(h.step, h.outcome, h.attempt) for h in inst.history] == [
        ("flaky", "failed", 1), ("flaky", "completed", 2), ("done", "completed", 1)
    ]
    assert inst.context.steps == {"flaky": {"calls": 2}}


def test_no_retry_policy_fails_at_once():
    flow, calls = _flaky("e_noretry", None)
    d, inst = start(flow)
    assert inst.status == "failed" and calls["n"] == 1


def test_single_attempt_policy_fails_at_once():
    flow, calls = _flaky("e_oneattempt", Retry(max_attempts=1))
    d, inst = start(flow)
    assert inst.status == "failed" and calls["n"] == 1


def test_retry_keeps_the_config():
    calls = []

    def execute(instance, config, context):
        calls.append(config)
        raise RuntimeError("x")

    Flaky = make_step("Flaky", ["ok"], fn=execute, retry=Retry(max_attempts=2, base_delay=1))
    flow = define("e_retrycfg", start=(Flaky, {"n": 1}), transitions={Flaky: {"ok": Done}})
    d, inst = start(flow)
    assert inst.waits["flaky"]["config"] == {"n": 1}
    inst, _ = engine.fire_due(d, inst, NOW + SECOND)
    inst = run(d, inst, NOW + SECOND)
    assert calls == [{"n": 1}, {"n": 1}]
    assert inst.failed == {"step": "flaky", "config": {"n": 1}, "attempt": 2}


# -- Wait timers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, unit, delta",
    [(30, "second", timedelta(seconds=30)), (5, "minute", timedelta(minutes=5)),
     (2, "hour", timedelta(hours=2)), (3, "day", timedelta(days=3))],
)
def test_wait_due_at_computed_from_config(duration, unit, delta):
    Pre = make_step("Pre", ["ok"])
    flow = define("e_timer", start=Pre, transitions={Pre: {"ok": (Wait, {"duration": duration, "unit": unit})},
                                                     Wait: {"timeout": Done}})
    d, inst = start(flow)
    assert inst.status == "waiting"
    assert inst.waits["wait"]["kind"] == "timer"
    assert inst.waits["wait"]["config"] == {"duration": duration, "unit": unit}
    assert inst.waits["wait"]["due_at"] == (NOW + delta).isoformat()
    assert inst.next_due_at == NOW + delta
    assert Wait.due_at({"duration": duration, "unit": unit}, NOW) == NOW + delta


def _timer_flow(name):
    return define("e_" + name, start=(Wait, {"duration": 5, "unit": "minute"}), transitions={Wait: {"timeout": Done}})


def test_timer_fires_when_due():
    d, inst = start(_timer_flow("timerfire"))
    due_at = NOW + timedelta(minutes=5)
    same, fired = engine.fire_due(d, inst, due_at - SECOND)
    assert fired == [] and same.status == "waiting"
    out, fired = engine.fire_due(d, inst, due_at + SECOND)
    assert fired == [{"id": "k::x", "run": "run1", "step": "wait", "kind": "timer", "due_at": due_at.isoformat()}]
    out = run(d, out, due_at + SECOND)
    assert out.status == "completed"
    assert trail(out) == [("wait", "async", None), ("wait", "resumed", "timeout"), ("done", "completed", "done")]
    resumed = out.history[1]
    assert resumed.started_at == NOW and resumed.finished_at == due_at + SECOND
    assert resumed.duration_ms == 301_000.0


def test_timer_can_be_resumed_by_hand():
    d, inst = start(_timer_flow("timerhand"))
    out = run(d, engine.resume(d, inst, "timeout", NOW + SECOND))
    assert out.status == "completed"


def test_parallel_timers_fire_together():
    class ShortWait(Wait):
        pass

    class LongWait(Wait):
        pass

    Start = make_step("Start", ["ok"])
    Join = make_step("Join", ["ok"])
    flow = define(
        "e_twotimers",
        start=Start,
        transitions={Start: {"ok": [(ShortWait, {"duration": 1, "unit": "minute"}),
                                    (LongWait, {"duration": 1, "unit": "hour"})]},
                     ShortWait: {"timeout": Join}, LongWait: {"timeout": Join}, Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.waiting == ["short_wait", "long_wait"]
    assert inst.next_due_at == NOW + timedelta(minutes=1)
    mid, fired = engine.fire_due(d, inst, NOW + timedelta(minutes=2))
    assert [f["step"] for f in fired] == ["short_wait"]
    mid = run(d, mid)
    assert mid.status == "waiting" and mid.waiting == ["long_wait"]
    assert mid.next_due_at == NOW + timedelta(hours=1)
    late, fired = engine.fire_due(d, mid, NOW + timedelta(hours=1))
    assert [f["step"] for f in fired] == ["long_wait"]
    assert run(d, late).status == "completed"


def test_timer_resume_with_failing_dynamic_route():
    flow = define(
        "e_timerdynfail",
        start=(Wait, {"duration": 1, "unit": "second"}),
        transitions={Wait: {"timeout": Dynamic(lambda ctx: Stray, targets=[Fast])}, Fast: {"ok": Done}},
    )
    d, inst = start(flow)
    out, fired = engine.fire_due(d, inst, NOW + SECOND)
    assert out.status == "failed" and out.error["type"] == "heph.InvalidRoute"
    assert out.history[-1].event == "timeout"


# -- cancel --------------------------------------------------------------------------------------


def test_cancel_drops_waits_and_records_cancelled():
    ApproveA = make_step("ApproveA", ["approved"], result=ASYNC)
    Start = make_step("Start", ["ok"])
    Join = make_step("Join", ["ok"])
    flow = define(
        "e_cancel",
        start=Start,
        transitions={Start: {"ok": [ApproveA, (Wait, {"duration": 1, "unit": "day"})]},
                     ApproveA: {"approved": Join}, Wait: {"timeout": Join}, Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.waiting == ["approve_a", "wait"] and inst.next_due_at is not None
    later = NOW + timedelta(minutes=1)
    out = engine.cancel(inst, later)
    assert out.status == "cancelled"
    assert out.waits == {} and out.active == [] and out.arrived == {} and out.waiting == []
    assert out.next_due_at is None
    assert out.updated_at == later and out.lease is None
    cancelled = [(h.step, h.outcome, h.attempt, h.finished_at) for h in out.history if h.outcome == "cancelled"]
    assert cancelled == [("approve_a", "cancelled", 1, later), ("wait", "cancelled", 1, later)]
    assert inst.status == "waiting"  # input untouched
    # nothing moves a cancelled instance any more
    assert engine.next_step(out) is None
    assert engine.due(out, NOW + timedelta(days=2)) == []
    assert engine.fire_due(d, out, NOW + timedelta(days=2))[1] == []
    with pytest.raises(InvalidEvent):
        engine.resume(d, out, "approved", later)
    with pytest.raises(NotCancellable, match="is cancelled"):
        engine.cancel(out, later)


def test_cancel_a_pending_instance():
    d = ret_flow("e_cancelpending", lambda i, c, x: "ok").definition()
    inst = engine.new_instance(d, "k::x", {}, NOW, "run1")
    out = engine.cancel(inst, NOW)
    assert out.status == "cancelled"
    assert trail(out) == [("ret", "cancelled", None)]


def test_cancel_during_a_retry_wait():
    flow, _ = _flaky("e_cancelretry", Retry(max_attempts=3))
    d, inst = start(flow)
    out = engine.cancel(inst, NOW)
    assert out.history[-1].step == "flaky" and out.history[-1].outcome == "cancelled"
    assert out.history[-1].attempt == 2
    assert out.waits == {}


def test_cancel_finished_instances_is_refused():
    d, completed = start(ret_flow("e_cancelcompleted", lambda i, c, x: "ok"))
    with pytest.raises(NotCancellable, match="is completed"):
        engine.cancel(completed, NOW)
    d, failed = start(ret_flow("e_cancelfailed", lambda i, c, x: Error("x")))
    with pytest.raises(NotCancellable, match="is failed"):
        engine.cancel(failed, NOW)
    assert NotCancellable.code == "not_cancellable"


# -- retrying a failed instance -----------------------------------------------------------------------


def test_retry_reruns_the_failed_step():
    state = {"fail": True}
    Pre = make_step("Pre", ["ok"], result=("ok", {"pre": 1}))
    Fragile = make_step("Fragile", ["ok"], fn=lambda i, c, x: Error("down") if state["fail"] else ("ok", {"fixed": True}))
    flow = define("e_retryinst", start=Pre, transitions={Pre: {"ok": (Fragile, {"c": 1})}, Fragile: {"ok": Done}})
    d, inst = start(flow)
    assert inst.status == "failed"
    state["fail"] = False
    later = NOW + timedelta(hours=1)
    again = engine.retry(d, inst, later)
    assert again.status == "running"
    assert again.error is None and again.failed is None and again.updated_at == later
    assert engine.next_step(again) == {"step": "fragile", "config": {"c": 1}, "attempt": 2, "first_attempt": 2}
    assert inst.status == "failed"  # input untouched
    done = run(d, again, later)
    assert done.status == "completed"
    assert [(h.step, h.outcome, h.attempt) for h in done.history] == [
        ("pre", "completed", 1), ("fragile", "failed", 1), ("fragile", "completed", 2), ("done", "completed", 1)
    ]
    assert executed(done).count("pre") == 1
    assert done.context.steps == {"pre": {"pre": 1}, "fragile": {"fixed": True}}


def test_retry_after_exhausted_attempts_starts_a_new_series():
    flow, calls = _flaky("e_retryseries", Retry(max_attempts=2, backoff="constant", base_delay=1))
    d, inst = start(flow)
    inst, _ = engine.fire_due(d, inst, NOW + SECOND)
    inst = run(d, inst, NOW + SECOND)
    assert inst.status == "failed" and calls["n"] == 2
    inst = run(d, engine.retry(d, inst, NOW + 2 * SECOND), NOW + 2 * SECOND)
    # the policy applies afresh: attempt 3 failed, attempt 4 is scheduled
    assert inst.status == "waiting"
    assert inst.waits["flaky"]["attempt"] == 4 and inst.waits["flaky"]["first_attempt"] == 3


def test_retry_of_a_failed_fan_out_branch():
    state = {"fail": True}
    Start = make_step("Start", ["ok"])
    Bad = make_step("Bad", ["ok"], fn=lambda i, c, x: Error("no") if state["fail"] else "ok")
    Good = make_step("Good", ["ok"])
    Join = make_step("Join", ["ok"])
    flow = define(
        "e_retryfan",
        start=Start,
        transitions={Start: {"ok": [Bad, Good]}, Bad: {"ok": Join}, Good: {"ok": Join}, Join: {"ok": Done}},
    )
    d, inst = start(flow)
    assert inst.status == "failed"
    assert "join" not in executed(inst)
    state["fail"] = False
    done = run(d, engine.retry(d, inst, NOW))
    assert done.status == "completed"
    assert executed(done).count("join") == 1 and executed(done)[-1] == "done"


def test_retry_of_an_instance_that_has_not_failed_is_refused():
    d, completed = start(ret_flow("e_retrycompleted", lambda i, c, x: "ok"))
    with pytest.raises(NotRetryable, match="is completed"):
        engine.retry(d, completed, NOW)
    d, waiting = start(ret_flow("e_retrywaiting", lambda i, c, x: ASYNC))
    with pytest.raises(NotRetryable, match="is waiting"):
        engine.retry(d, waiting, NOW)
    cancelled = engine.cancel(waiting, NOW)
    with pytest.raises(NotRetryable, match="is cancelled"):
        engine.retry(d, cancelled, NOW)
    assert NotRetryable.code == "not_retryable"


# -- built-in steps -------------------------------------------------------------------------------


def test_debug_step_logs_at_debug_on_heph_logger(caplog):
    Pre = make_step("Pre", ["ok"], result=("ok", {"seen": 1}))
    flow = define("e_debug", start=Pre, transitions={Pre: {"ok": Debug}, Debug: {"completed": Done}})
    caplog.set_level(logging.DEBUG, logger="heph")
    d, inst = start(flow, {"order": 42})
    assert inst.status == "completed"
    assert executed(inst) == ["pre", "debug", "done"]
    records = [r for r in caplog.records if r.name == "heph" and "debug step" in r.getMessage()]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert "k::x" in message and "{'order': 42}" in message and "{'pre': {'seen': 1}}" in message
    assert "('pre', 'completed', 'ok')" in message


def test_debug_step_is_silent_above_debug(caplog):
    flow = define("e_debugquiet", start=Debug, transitions={Debug: {"completed": Done}})
    caplog.set_level(logging.INFO, logger="heph")
    start(flow)
    assert not [r for r in caplog.records if r.name == "heph"]


def test_done_step():
    assert Done().execute(None, None, None) == "done"
    assert Done.events == ["done"] and Wait.events == ["timeout"] and WaitForEvent.events == ["received"]
    assert Debug.events == ["completed"]
    assert Wait().execute(None, None, None) is ASYNC and WaitForEvent().execute(None, None, None) is ASYNC
    assert repr(ASYNC) == "heph.ASYNC"
    assert type(ASYNC)() is ASYNC


# -- history entries --------------------------------------------------------------------------------


def test_history_entry_fields():
    d = ret_flow("e_history", lambda i, c, x: ("ok", {"a": 1})).definition()
    inst = engine.new_instance(d, "k::x", {}, NOW, "run1")
    finished = NOW + timedelta(milliseconds=1500)
    inst = run(d, inst, NOW, finished)
    first = inst.history[0]
    assert first.step == "ret"
    assert first.outcome == "completed"
    assert first.event == "ok"
    assert first.attempt == 1
    assert first.started_at == NOW and first.finished_at == finished
    assert first.duration_ms == 1500.0
    assert first.error is None
    assert first.to_dict() == {
        "step": "ret", "outcome": "completed", "event": "ok", "attempt": 1,
        "started_at": NOW.isoformat(), "finished_at": finished.isoformat(), "duration_ms": 1500.0, "error": None,
    }
    assert inst.updated_at == finished


def test_failed_history_entry_carries_the_error():
    d, inst = start(ret_flow("e_historyfail", lambda i, c, x: Error("nope")))
    entry = inst.history[0]
    assert (entry.outcome, entry.event, entry.attempt) == ("failed", None, 1)
    assert entry.error == {"type": "heph.Error", "message": "nope", "traceback": None, "step": "ret"}


# -- versions -------------------------------------------------------------------------------------


def test_an_instance_keeps_the_version_it_started_with():
    from heph import VersionedWorkflow, Workflow

    One = make_step("One", ["ok"])
    Two = make_step("Two", ["ok"])

    class ShipV1(Workflow):
        version = 1
        start = One
        transitions = {One: {"ok": Done}}

    class ShipV2(Workflow):
        version = 2
        start = Two
        transitions = {Two: {"ok": Done}}

    class Ship(VersionedWorkflow):
        name = "e_ship"
        unique = "shipid"
        versions = {1: ShipV1, 2: ShipV2}
        current = 2

    d, inst = start(Ship, version=1)
    assert (inst.id, inst.workflow, inst.version) == ("shipid::x", "e_ship", 1)
    assert executed(inst) == ["one", "done"]
    d, inst = start(Ship)
    assert inst.version == 2 and executed(inst) == ["two", "done"]
