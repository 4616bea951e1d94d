"""The engine's events (SPEC §6): event data, buffered events (the inbox), deadlines on waits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _core_helpers import NOW, define, make_step, run, start

from heph import ASYNC, Deadline, Done, WorkflowDefinitionError
from heph.core import engine
from heph.errors import InvalidEvent

# -- the flows --------------------------------------------------------------------------------------

Charge = make_step("Charge", ["charged"], result="charged")
AwaitPayment = make_step("AwaitPayment", ["paid", "declined"], result=ASYNC, key="await_payment")
Ship = make_step("Ship", ["shipped"], result="shipped")


def _pay_flow(name: str, deadline: Deadline | None = None):
    events = ["paid", "declined"] + ([deadline.event] if deadline and deadline.event not in ("paid", "declined")
                                      else [])
    waiting = make_step(f"Await_{name}", events, result=ASYNC, key="await_payment")
    if deadline is not None:
        waiting.deadline = deadline
    transitions = {waiting: {event: Done for event in events}}
    transitions[waiting]["paid"] = Ship
    transitions[Ship] = {"shipped": Done}
    return define(name, start=waiting, transitions=transitions)


def _two_pauses():
    """first (ASYNC, takes "a") -> second (ASYNC, takes "b") -> done: "b" can arrive early."""
    First = make_step("First", ["a"], result=ASYNC, key="first")
    Second = make_step("Second", ["b"], result=ASYNC, key="second")
    return define("ev_two", start=First, transitions={First: {"a": Second}, Second: {"b": Done}})


# -- event data ------------------------------------------------------------------------------------------


def test_event_data_becomes_the_resumed_steps_context_entry():
    d, inst = start(_pay_flow("ev_data"))
    out = run(d, engine.resume(d, inst, "paid", NOW, data={"txn": "t-42"}))
    assert out.status == "completed"
    assert out.context.steps["await_payment"] == {"txn": "t-42"}
    assert [h.event for h in out.history if h.outcome == "resumed"] == ["paid"]


def test_an_event_without_data_leaves_an_empty_entry():
    d, inst = start(_pay_flow("ev_nodata"))
    out = engine.resume(d, inst, "declined", NOW)
    assert out.context.steps["await_payment"] == {}


def test_later_steps_read_the_event_data():
    seen = {}

    def ship(instance, config, context):
        seen.update(context.steps["await_payment"])
        return "shipped"

    Waiting = make_step("AwaitR", ["paid"], result=ASYNC, key="await_payment")
    Reader = make_step("ShipR", ["shipped"], fn=ship)
    d, inst = start(define("ev_reader", start=Waiting, transitions={Waiting: {"paid": Reader}, Reader: {"shipped": Done}}))
    run(d, engine.resume(d, inst, "paid", NOW, data={"txn": "t9"}))
    assert seen == {"txn": "t9"}


# -- buffered events --------------------------------------------------------------------------------------


def test_a_buffered_event_waits_in_the_inbox_and_is_delivered_when_its_step_pauses():
    d, inst = start(_two_pauses())
    assert inst.waiting == ["first"]
    early = engine.resume(d, inst, "b", NOW, data={"n": 1}, buffer=True)
    assert early.inbox == [{"event": "b", "data": {"n": 1}, "received_at": NOW.isoformat()}]
    assert early.waiting == ["first"] and early.history == inst.history  # nothing ran
    later = NOW + timedelta(minutes=1)
    out = run(d, engine.resume(d, early, "a", later), later)
    assert out.status == "completed" and out.inbox == []
    assert out.context.steps["second"] == {"n": 1}
    assert [(h.step, h.outcome, h.event) for h in out.history][-3:-1] == [("second", "async", None),
                                                                           ("second", "resumed", "b")]


def test_buffer_resumes_at_once_when_a_step_already_waits_for_the_event():
    d, inst = start(_two_pauses())
    out = engine.resume(d, inst, "a", NOW, buffer=True)
    assert out.inbox == [] and out.history[-1].outcome == "resumed"


def test_the_oldest_buffered_event_a_step_declares_is_delivered_first():
    d, inst = start(_two_pauses())
    for n in (1, 2):
        inst = engine.resume(d, inst, "b", NOW + timedelta(seconds=n), data={"n": n}, buffer=True)
    out = run(d, engine.resume(d, inst, "a", NOW))
    assert out.context.steps["second"] == {"n": 1}
    assert [e["data"] for e in out.inbox] == [{"n": 2}]  # undelivered: the instance finished with it


def test_an_event_no_step_declares_is_refused_even_buffered():
    d, inst = start(_two_pauses())
    with pytest.raises(InvalidEvent, match="no step of ev_two v1 declares 'zzz'"):
        engine.resume(d, inst, "zzz", NOW, buffer=True)


def test_a_finished_instance_buffers_nothing():
    d, inst = start(_two_pauses())
    done = engine.cancel(inst, NOW)
    with pytest.raises(InvalidEvent, match="has finished"):
        engine.resume(d, done, "b", NOW, buffer=True)


def test_without_buffer_an_early_event_is_refused_as_before():
    d, inst = start(_two_pauses())
    with pytest.raises(InvalidEvent, match="no waiting step"):
        engine.resume(d, inst, "b", NOW)


# -- deadlines ---------------------------------------------------------------------------------------------


def test_a_deadline_is_stored_as_the_waits_due_time_and_fires_its_event():
    d, inst = start(_pay_flow("ev_deadline", Deadline(minutes=30, event="expired")))
    wait = inst.waits["await_payment"]
    assert wait["kind"] == "deadline" and wait["event"] == "expired"
    assert inst.next_due_at == NOW + timedelta(minutes=30)
    assert engine.fire_due(d, inst, NOW + timedelta(minutes=29))[1] == []
    fired_inst, fired = engine.fire_due(d, inst, NOW + timedelta(minutes=30))
    assert [(f["step"], f["kind"]) for f in fired] == [("await_payment", "deadline")]
    out = run(d, fired_inst)
    assert out.status == "completed"
    assert [(h.outcome, h.event) for h in out.history if h.step == "await_payment"] == [("async", None),
                                                                                        ("resumed", "expired")]


def test_an_event_before_the_deadline_drops_it():
    d, inst = start(_pay_flow("ev_early", Deadline(hours=1)))
    out = run(d, engine.resume(d, inst, "paid", NOW + timedelta(minutes=5)))
    assert out.status == "completed" and out.next_due_at is None
    assert engine.fire_due(d, out, NOW + timedelta(hours=2))[1] == []


def test_a_deadline_counts_from_the_pause():
    d, inst = start(_pay_flow("ev_from_pause", Deadline(seconds=90)), now=NOW)
    assert inst.waits["await_payment"]["due_at"] == (NOW + timedelta(seconds=90)).isoformat()


@pytest.mark.parametrize("deadline, fragment", [
    (Deadline(), "duration must be more than 0"),
    (Deadline(minutes=-1), "minutes must be a number >= 0"),
    (Deadline(hours="1"), "hours must be a number >= 0"),  # type: ignore[arg-type]
    (Deadline(seconds=5, event="late"), "deadline event 'late' is not one of its events"),
    ("1h", "use heph.Deadline(...)"),
])
def test_a_bad_deadline_is_a_definition_error(deadline, fragment):
    Waiting = make_step("AwaitBad", ["paid"], result=ASYNC)
    Waiting.deadline = deadline
    with pytest.raises(WorkflowDefinitionError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        define("ev_bad_deadline", start=Waiting, transitions={Waiting: {"paid": Done}})


def test_a_wait_step_takes_no_deadline():
    from heph import Wait

    class TimedWait(Wait):
        key = "timed_wait"
        deadline = Deadline(minutes=1)

    with pytest.raises(WorkflowDefinitionError, match="is a Wait, whose timer is its deadline"):
        define("ev_wait_deadline", start=(TimedWait, {"duration": 1, "unit": "minute"}),
               transitions={TimedWait: {"timeout": Done}})
