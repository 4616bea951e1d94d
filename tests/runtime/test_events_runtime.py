"""Events through the runtime (SPEC §6): data, buffered events and deadlines, on every local store."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import heph
from heph import ASYNC, Deadline, Done, InvalidContext, InvalidEvent, Step, Unique, Workflow
from heph.runtime.clock import ManualClock


class EvAwaitPayment(Step):
    events = ["paid", "expired"]
    key = "await_payment"
    deadline = Deadline(minutes=30, event="expired")

    def execute(self, instance, config, context):
        return ASYNC


class EvShip(Step):
    events = ["shipped"]
    key = "ship"

    def execute(self, instance, config, context):
        return "shipped", {"for_txn": context.steps["await_payment"].get("txn")}


class EvPack(Step):
    events = ["packed"]
    key = "pack"

    def execute(self, instance, config, context):
        return ASYNC


class EvOrder(Workflow):
    """pack (waits for "packed") -> await_payment (waits for "paid", or expires) -> ship."""

    unique = Unique("evorder")
    name = "ev_order"
    start = EvPack
    transitions = {EvPack: {"packed": EvAwaitPayment},
                   EvAwaitPayment: {"paid": EvShip, "expired": Done}, EvShip: {"shipped": Done}}


@pytest.fixture(params=["memory", "json"])
def app(request, tmp_path):
    store = heph.MemoryStorage() if request.param == "memory" else heph.JsonFileStorage(tmp_path / "store")
    return heph.Hephaestus(storage=store, clock=ManualClock())


def _paying(app) -> str:
    instance_id = app.start(EvOrder, "o1")
    app.resume(instance_id, "packed")
    return instance_id


def test_event_data_is_the_resumed_steps_entry_and_later_steps_read_it(app):
    instance_id = _paying(app)
    done = app.resume(instance_id, "paid", {"txn": "t-42", "amount": 12.5})
    assert done.status == "completed"
    assert done.context.steps["await_payment"] == {"txn": "t-42", "amount": 12.5}
    assert done.context.steps["ship"] == {"for_txn": "t-42"}
    assert app.get(instance_id).context.steps["await_payment"] == {"txn": "t-42", "amount": 12.5}


@pytest.mark.parametrize("data, fragment", [
    ([1, 2], "must be a JSON object"),
    ("txn", "must be a JSON object"),
    ({"when": object()}, "not JSON-serialisable"),
    ({"big": "x" * (2 * 1024 * 1024)}, "larger than 2 MB"),
])
def test_bad_event_data_is_refused_and_nothing_is_written(app, data, fragment):
    instance_id = _paying(app)
    before = app.get(instance_id)
    with pytest.raises(InvalidContext, match=fragment):
        app.resume(instance_id, "paid", data)
    assert app.get(instance_id) == before


def test_the_facade_takes_data_and_buffer(app):
    heph.use(app)
    try:
        EvOrder.start("o2")
        early = EvOrder.resume("o2", "paid", {"txn": "t-7"}, buffer=True)
        assert [e["event"] for e in early.inbox] == ["paid"] and early.waiting == ["pack"]
        done = EvOrder.resume("o2", "packed")
    finally:
        heph.use(None)
    assert done.status == "completed" and done.inbox == []
    assert done.context.steps["ship"] == {"for_txn": "t-7"}


def test_deliver_says_whether_the_event_was_buffered_or_resumed(app):
    instance_id = app.start(EvOrder, "o3")
    first = app.deliver(instance_id, "paid", {"txn": "t1"}, buffer=True)
    assert first.outcome == "buffered"
    assert first.instance.inbox[0]["data"] == {"txn": "t1"}
    assert app.get(instance_id).inbox == first.instance.inbox  # durable
    second = app.deliver(instance_id, "packed", buffer=True)
    assert second.outcome == "resumed" and second.instance.status == "completed"


def test_an_undeclared_event_or_a_finished_instance_is_refused_even_buffered(app):
    instance_id = app.start(EvOrder, "o4")
    with pytest.raises(InvalidEvent, match="declares 'refunded'"):
        app.resume(instance_id, "refunded", buffer=True)
    app.cancel(instance_id)
    with pytest.raises(InvalidEvent, match="has finished"):
        app.resume(instance_id, "paid", buffer=True)


def test_a_deadline_fires_from_tick_with_its_event(app):
    instance_id = _paying(app)
    waiting = app.get(instance_id)
    assert waiting.waits["await_payment"]["kind"] == "deadline"
    assert waiting.next_due_at == app.clock.now() + timedelta(minutes=30)
    app.clock.advance(minutes=29)
    assert list(app.tick()) == []
    app.clock.advance(minutes=1)
    fired = app.tick()
    assert [(a["step"], a["kind"]) for a in fired] == [("await_payment", "deadline")]
    done = app.get(instance_id)
    assert done.status == "completed"
    assert [(h.outcome, h.event) for h in done.history if h.step == "await_payment"] == [("async", None),
                                                                                        ("resumed", "expired")]


def test_an_event_before_the_deadline_drops_it(app):
    instance_id = _paying(app)
    app.clock.advance(minutes=10)
    assert app.resume(instance_id, "paid").status == "completed"
    app.clock.advance(hours=1)
    assert list(app.tick()) == []


def test_the_inbox_is_in_the_stored_document(tmp_path):
    app = heph.Hephaestus(storage=heph.JsonFileStorage(tmp_path / "store"), clock=ManualClock())
    instance_id = app.start(EvOrder, "o5")
    app.resume(instance_id, "paid", {"txn": "t5"}, buffer=True)
    (path,) = (tmp_path / "store" / "instances" / "evorder~o5").glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["inbox"] == [{"event": "paid", "data": {"txn": "t5"}, "received_at": "2026-01-01T00:00:00+00:00"}]
