"""Busy instances (SPEC §6): commands against an instance whose step runs elsewhere answer at once.

A step held on a gate in one thread stands in for another live process; resume, cancel and start
from the test's thread must answer within 2 s, and what they queued must be applied after the step.
"""

from __future__ import annotations

import threading
import time

import pytest

import heph
from heph import ASYNC, AlreadyRunning, Done, InvalidEvent, Step, Unique, Workflow
from heph.runtime.app import APPLIED_KEPT

GATE = threading.Event()
ENTERED = threading.Event()


class BzSlow(Step):
    key = "slow"
    events = ["done"]

    def execute(self, instance, config, context):
        ENTERED.set()
        assert GATE.wait(20), "the gate was never opened"
        return "done", {"slow": True}


class BzApprove(Step):
    key = "approve"
    events = ["approved", "refused"]

    def execute(self, instance, config, context):
        return ASYNC


class BzAfter(Step):
    key = "after"
    events = ["done"]

    def execute(self, instance, config, context):
        return "done"


class BzFlow(Workflow):
    """slow -> approve (waits for approved/refused) -> after -> Done."""

    name = "bz_flow"
    unique = Unique("bz")
    start = BzSlow
    transitions = {BzSlow: {"done": BzApprove}, BzApprove: {"approved": BzAfter, "refused": Done},
                   BzAfter: {"done": Done}}


class BzGo(Step):
    key = "go"
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class BzLater(Workflow):
    """go (waits for "go") -> slow -> approve -> after: the slow step runs in the resume of "go"."""

    name = "bz_later"
    unique = Unique("bzl")
    start = BzGo
    transitions = {BzGo: {"go": BzSlow}, BzSlow: {"done": BzApprove}, BzApprove: {"approved": BzAfter,
                                                                                 "refused": Done},
                   BzAfter: {"done": Done}}


@pytest.fixture(params=["memory", "json"])
def app(request, tmp_path):
    GATE.clear()
    ENTERED.clear()
    store = heph.MemoryStorage() if request.param == "memory" else heph.JsonFileStorage(tmp_path / "store")
    yield heph.Hephaestus(storage=store)
    GATE.set()


class _Running:
    """Start bz_flow in a thread and hold it in its slow step until ``release``."""

    def __init__(self, app, value="v1", call=None):
        self.result: dict = {}
        self.app = app
        call = call or (lambda: app.start(BzFlow, value))
        self.thread = threading.Thread(target=lambda: self.result.setdefault("out", call()), daemon=True)
        self.thread.start()
        assert ENTERED.wait(10), "the slow step never started"

    def release(self):
        GATE.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.result.get("out")


def _note_of(app, instance_id, within=2.0):
    """The busy note of ``instance_id`` (written a moment after its step began)."""
    deadline = time.monotonic() + within
    while not (note := app.storage.busy(instance_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return note


def _timed(fn):
    began = time.monotonic()
    out = fn()
    return out, time.monotonic() - began


def test_busy_reports_the_running_step(app):
    running = _Running(app, call=lambda: app.start(BzFlow, "v1"))
    # the first run's first step is running: nothing is stored yet, the note says what runs
    note = _note_of(app, "bz::v1")
    assert note and note["step"] == "slow" and note["workflow"] == "bz_flow"
    assert note["pid"] > 0 and note["since"]
    running.release()
    assert app.storage.busy("bz::v1") is None


def test_resume_while_running_is_queued_then_applied(app):
    running = _Running(app)
    delivery, took = _timed(lambda: app.deliver("bz::v1", "approved", {"by": "ann"}))
    assert took < 2 and delivery.outcome == "queued"
    assert delivery.busy["step"] == "slow" and delivery.busy["workflow"] == "bz_flow"
    running.release()
    final = app.get("bz::v1")
    assert final.status == "completed"
    assert final.context.steps["approve"] == {"by": "ann"}
    assert [h.outcome for h in final.history if h.step == "approve"] == ["async", "resumed"]
    assert not app.storage.has_mail("bz::v1")


def test_resume_of_a_stored_run_whose_step_runs_is_queued(app):
    instance_id = app.start(BzLater, "w1")
    running = _Running(app, call=lambda: app.resume(instance_id, "go"))
    shown = app.get(instance_id)
    assert shown.status == "waiting"  # as stored: the step's result is not written yet
    assert _note_of(app, instance_id)["step"] == "slow"
    resumed, took = _timed(lambda: app.resume(instance_id, "approved", {"ok": 1}))
    assert took < 2 and resumed.id == instance_id
    assert running.release().status == "completed"
    final = app.get(instance_id)
    assert final.status == "completed" and final.context.steps["approve"] == {"ok": 1}


def test_queued_event_that_no_step_takes_is_rejected_in_the_history(app):
    running = _Running(app)
    assert app.deliver("bz::v1", "approved").outcome == "queued"
    assert app.deliver("bz::v1", "refused").outcome == "queued"  # only one of them can be taken
    running.release()
    final = app.get("bz::v1")
    assert final.status == "completed"
    rejected = [h for h in final.history if h.outcome == "rejected"]
    assert len(rejected) == 1 and rejected[0].event == "refused" and rejected[0].error["type"] == "InvalidEvent"


def test_undeclared_event_for_a_busy_instance_is_refused_at_once(app):
    running = _Running(app)
    with pytest.raises(InvalidEvent, match="declares"):
        _timed(lambda: app.deliver("bz::v1", "nonsense"))
    assert not app.storage.has_mail("bz::v1")
    running.release()


def test_cancel_while_running_is_requested_and_no_further_step_starts(app):
    running = _Running(app)
    requested, took = _timed(lambda: app.request_cancel("bz::v1"))
    assert took < 2 and requested.outcome == "cancel requested"
    running.release()
    final = app.get("bz::v1")
    assert final.status == "cancelled"
    assert final.context.steps["slow"] == {"slow": True}  # the running step's result is recorded
    assert [(h.step, h.outcome) for h in final.history if h.step == "approve"] in ([], [("approve", "cancelled")])
    assert not any(h.outcome == "async" for h in final.history)


def test_cancel_wait_returns_once_the_run_has_ended(app):
    running = _Running(app)
    out: dict = {}
    waiter = threading.Thread(target=lambda: out.setdefault("i", app.cancel("bz::v1", wait=True)), daemon=True)
    waiter.start()
    time.sleep(0.8)
    assert waiter.is_alive()  # still running: the cancel waits
    running.release()
    waiter.join(10)
    assert out["i"].status == "cancelled"


def test_start_of_a_busy_id_is_already_running_at_once(app):
    running = _Running(app)
    with pytest.raises(AlreadyRunning):
        _timed(lambda: app.start(BzFlow, "v1"))
    began = time.monotonic()
    with pytest.raises(AlreadyRunning):
        app.start(BzFlow, "v1")
    assert time.monotonic() - began < 2
    running.release()


def test_mail_left_by_a_dead_holder_is_applied_by_tick(app):
    app.storage.post("bz::v9", {"kind": "event", "event": "approved", "data": {}, "step": None, "buffer": False})
    assert app.tick() == []  # no run: the message is dropped with a warning
    assert not app.storage.has_mail("bz::v9")
    GATE.set()
    instance_id = app.start(BzFlow, "v2")
    message_id = app.storage.post(instance_id, {"kind": "event", "event": "approved", "data": {"n": 1},
                                                "step": None, "buffer": False})
    done = app.tick()
    assert [a["kind"] for a in done] == ["mail"]
    final = app.get(instance_id)
    assert final.status == "completed" and message_id in final.applied


def test_a_message_applied_before_a_crash_is_only_dropped(app):
    GATE.set()
    instance_id = app.start(BzFlow, "v3")
    message = {"kind": "event", "event": "approved", "data": {}, "step": None, "buffer": False}
    first = app.storage.post(instance_id, message)
    app.tick()
    # the same message again, as if the crash came after the write but before it was dropped
    with app.storage.session(instance_id) as session:
        assert session.mail() == []
    second = app.storage.post(instance_id, message)
    with app.storage.session(instance_id) as session:
        run = session.runs()[0]
        run.applied.append(second)
        session.update(run)
    app.tick()
    final = app.get(instance_id)
    assert [h.outcome for h in final.history].count("resumed") == 1
    assert first in final.applied and not app.storage.has_mail(instance_id)
    assert len(final.applied) <= APPLIED_KEPT


def test_a_message_for_a_run_that_is_gone_is_dropped_not_applied_to_another(app, caplog):
    GATE.set()
    instance_id = app.start(BzFlow, "v4")
    app.storage.post(instance_id, {"kind": "cancel", "run": "20260101T000000000000-dead00"})
    app.tick()
    final = app.get(instance_id)
    assert final.status == "waiting" and not app.storage.has_mail(instance_id)
    assert "that run is gone" in caplog.text


def test_a_note_left_by_a_killed_holder_is_not_shown_for_the_next(tmp_path):
    import os

    store = heph.JsonFileStorage(tmp_path / "store")
    child = os.fork()
    if child == 0:  # announce, then die inside the session: nothing empties the note
        with store.session("bz::k1") as session:
            session.announce({"step": "slow", "workflow": "bz_flow", "pid": os.getpid()})
            os._exit(0)
    os.waitpid(child, 0)
    assert (tmp_path / "store" / "instances" / "bz~k1" / ".busy").read_bytes()  # left behind
    assert store.busy("bz::k1") is None  # the lock died with its holder
    with store.session("bz::k1"):
        assert store.busy("bz::k1") == {}  # held again: the old note is not this holder's
