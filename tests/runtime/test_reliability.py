"""The runtime's side of reliability: a result the store cannot keep fails its step, a write
that fails after the change began says the change may have been applied, tick tells failed
fires from skipped runs, and the newest run is the one made last whatever the clock did."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import heph
from heph import Done, Step, Unique, Wait, WaitForEvent, Workflow
from heph.errors import InstanceBusy, InvalidContext, MaybeApplied, StorageError
from heph.runtime.storage import MemoryStorage

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


class RlBig(Step):
    events = ["ok"]
    key = "rl_big"

    def execute(self, instance, config, context):
        return "ok", {"blob": "x" * context.initial.get("size", 10)}


class RlAfter(Step):
    events = ["ok"]
    key = "rl_after"

    def execute(self, instance, config, context):
        return "ok", {"after": True}


class RlFlow(Workflow):
    unique = Unique("rl")
    name = "rl_flow"
    start = RlBig
    transitions = {RlBig: {"ok": RlAfter}, RlAfter: {"ok": Done}}


class RlTimer(Workflow):
    unique = Unique("rlt")
    name = "rl_timer"
    start = RlAfter
    transitions = {RlAfter: {"ok": (Wait, {"duration": 1, "unit": "second"})}, Wait: {"timeout": Done}}


class RlGate(Workflow):
    unique = Unique("rlg")
    name = "rl_gate"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class SmallStore(MemoryStorage):
    """A store that cannot keep an instance whose blob is longer than 100 characters."""

    def unstorable(self, instance):
        blob = (instance.context.steps.get("rl_big") or {}).get("blob", "")
        return f"the blob is {len(blob)} characters, more than 100" if len(blob) > 100 else None


class FailingStore(MemoryStorage):
    """Writes fail once ``fail_after`` writes have succeeded (``ids``: only for these ids)."""

    def __init__(self, fail_after=10**9, ids=None):
        super().__init__()
        self.fail_after, self.ids, self.writes = fail_after, ids, 0

    def session(self, instance_id, timeout=None, *, must_exist=False):
        store = self
        inner = super().session(instance_id, timeout, must_exist=must_exist)

        class Wrapped:
            def __enter__(self):
                self.session = inner.__enter__()
                return self

            def __exit__(self, *exc):
                return inner.__exit__(*exc)

            def runs(self):
                return self.session.runs()

            def __getattr__(self, name):  # mail, announce, ...: the real session's
                return getattr(self.session, name)

            def _write(self, how, instance):
                if store.ids is None or instance.id in store.ids:
                    if store.writes >= store.fail_after:
                        raise StorageError(f"cannot write {instance.id}: [Errno 5] Input/output error")
                    store.writes += 1
                how(instance)

            def insert(self, instance):
                self._write(self.session.insert, instance)

            def update(self, instance):
                self._write(self.session.update, instance)

        return Wrapped()


def test_a_step_whose_result_the_store_cannot_keep_fails_and_nothing_is_lost():
    app = heph.Hephaestus(storage=SmallStore(), clock=heph.ManualClock(T0))
    instance = app.start_run(RlFlow, {"size": 1000}, id="rl::big")
    assert instance.status == "failed"
    assert instance.error["type"] == "heph.Unstorable"
    assert "the blob is 1000 characters, more than 100" in instance.error["message"]
    assert app.get("rl::big").status == "failed"                  # and it reads back
    assert app.start_run(RlFlow, {"size": 5}, id="rl::small").status == "completed"


def test_a_start_context_the_store_cannot_keep_is_refused_and_nothing_written():
    class NoNotes(MemoryStorage):
        def unstorable(self, instance):
            return "no notes here" if "note" in instance.context.initial else None

    store = NoNotes()
    app = heph.Hephaestus(storage=store, clock=heph.ManualClock(T0))
    with pytest.raises(InvalidContext, match="cannot be stored: no notes here"):
        app.start_instance(RlFlow, {"note": "x"}, id="rl::n")
    assert store.runs("rl::n") == []


def test_a_write_failing_after_the_first_of_a_command_says_it_may_have_been_applied():
    store = FailingStore(fail_after=1)
    app = heph.Hephaestus(storage=store, clock=heph.ManualClock(T0))
    with pytest.raises(MaybeApplied, match="may have been applied") as caught:
        app.start_instance(RlFlow, {}, id="rl::half")
    assert caught.value.instance_id == "rl::half" and caught.value.code == "may_have_been_applied"
    assert [r.status for r in store.runs("rl::half")] == ["running"]   # what it left: tick recovers it


def test_a_first_write_failing_is_a_plain_refusal_and_nothing_is_written():
    store = FailingStore(fail_after=0)
    app = heph.Hephaestus(storage=store, clock=heph.ManualClock(T0))
    with pytest.raises(StorageError) as caught:
        app.start_instance(RlFlow, {}, id="rl::none")
    assert not isinstance(caught.value, MaybeApplied)
    assert store.runs("rl::none") == []


def test_tick_reports_a_fire_it_could_not_write_and_fires_the_others():
    store = FailingStore(ids={"rlt::bad"})
    clock = heph.ManualClock(T0)
    app = heph.Hephaestus(storage=store, clock=clock)
    for value in ("bad", "good"):
        app.start_instance(RlTimer, {}, id=f"rlt::{value}")
    store.fail_after = store.writes                     # from now on rlt::bad cannot be written
    clock.advance(seconds=5)
    done = app.tick()
    assert [a["id"] for a in done] == ["rlt::good"]
    assert [(f["id"], f["code"]) for f in done.failed] == [("rlt::bad", "storage_error")]
    assert "Input/output error" in done.failed[0]["error"]
    assert app.get("rlt::bad").status == "waiting" and app.get("rlt::good").status == "completed"


def test_tick_skips_a_busy_run_without_calling_it_failed():
    class Busy(MemoryStorage):
        def session(self, instance_id, timeout=None, *, must_exist=False):
            if instance_id == "rlt::busy" and timeout == 0:
                raise InstanceBusy(instance_id=instance_id)
            return super().session(instance_id, timeout, must_exist=must_exist)

    clock = heph.ManualClock(T0)
    app = heph.Hephaestus(storage=Busy(), clock=clock)
    app.start_instance(RlTimer, {}, id="rlt::busy")
    clock.advance(seconds=5)
    done = app.tick()
    assert list(done) == [] and done.failed == []


def test_the_newest_run_is_the_last_made_even_after_the_clock_jumped_back():
    clock = heph.ManualClock(T0)
    app = heph.Hephaestus(storage=MemoryStorage(), clock=clock)
    app.start(RlGate, "a")
    app.resume("rlg::a", "received")
    clock.set(T0 - timedelta(days=2))                   # the clock jumps back two days
    second = app.start_run(RlGate, id="rlg::a")
    runs = app.runs("rlg::a")
    assert runs[0].run == second.run and runs[0].status == "waiting"
    assert app.get("rlg::a").run == second.run
    app.resume("rlg::a", "received")
    assert app.get("rlg::a").run == second.run          # both finished: still the newest


class DueListingFails(MemoryStorage):
    """A store whose due index cannot be listed (after the interrupted runs could)."""

    def due_batches(self, now, batch=100):
        raise StorageError("cannot list directory index/due: [Errno 5] Input/output error")


def test_a_tick_that_stops_after_doing_some_work_says_it_may_have_been_applied():
    from heph.testing.conformance import make_instance

    store = DueListingFails()
    app = heph.Hephaestus(storage=store, clock=heph.ManualClock(T0))
    interrupted = make_instance("rl::left", status="running", workflow="rl_flow")
    interrupted.active = [{"step": "rl_after", "config": None, "attempt": 1, "first_attempt": 1}]
    with store.session(interrupted.id) as session:
        session.insert(interrupted)
    with pytest.raises(MaybeApplied, match=r"tick stopped after it had done the due work of 1 run\(s\)"):
        app.tick()
    assert app.get("rl::left").status == "completed"  # the part it did is written
    with pytest.raises(StorageError) as nothing_done:  # nothing to recover: a plain refusal
        app.tick()
    assert not isinstance(nothing_done.value, MaybeApplied)
