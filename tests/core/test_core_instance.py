"""Instance values: JSON round trips (a hypothesis property), malformed documents, JSON safety."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from _core_helpers import NOW, define, make_step, run, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heph import ASYNC, Done, Retry, Wait
from heph.core import engine
from heph.core.definition import SCOPES
from heph.core.instance import (
    ACTIVE_STATUSES,
    FORMAT_VERSION,
    OUTCOMES,
    STATUSES,
    Context,
    HistoryEntry,
    Instance,
    from_iso,
    to_iso,
)
from heph.core.jsonsafe import MAX_DEPTH, NotJsonSafe, is_json_safe, to_json
from heph.core.validation import json_safe_problem

# -- strategies --------------------------------------------------------------------------------

offsets = st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc) | offsets
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
# what a well-formed document holds (the malformed ones are tests/core/test_instance_documents.py's)
attempts = st.integers(min_value=1, max_value=2**40)
step_keys = st.text(min_size=1, max_size=10)
configs = st.none() | json_objects
errors = st.none() | st.fixed_dictionaries(
    {"type": st.text(max_size=10), "message": st.text(max_size=20)},
    optional={"traceback": st.none() | st.text(max_size=30), "step": step_keys},
)
ids = st.builds(
    lambda key, value, suffix: "::".join([key, value] + ([suffix] if suffix else [])),
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
    st.none() | st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
)

histories = st.builds(
    HistoryEntry,
    step=step_keys,
    outcome=st.sampled_from(OUTCOMES),
    event=st.none() | st.text(max_size=10),
    attempt=attempts,
    started_at=st.none() | moments,
    finished_at=st.none() | moments,
    duration_ms=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    error=errors,
)
waits = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["timer", "retry"]),
            "config": configs,
            "attempt": attempts,
            "first_attempt": attempts,
            "since": moments.map(lambda m: m.isoformat()),
            "due_at": moments.map(lambda m: m.isoformat()),
        },
        optional={"last_error": errors},
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("event"),
            "config": configs,
            "attempt": attempts,
            "first_attempt": attempts,
            "since": moments.map(lambda m: m.isoformat()),
            "due_at": st.none() | moments.map(lambda m: m.isoformat()),
        }
    ),
)
actives = st.fixed_dictionaries({"step": step_keys, "config": configs, "attempt": attempts, "first_attempt": attempts})
failures = st.none() | st.fixed_dictionaries({"step": step_keys, "config": configs, "attempt": attempts})
leases = st.none() | st.fixed_dictionaries(
    {"pid": st.integers(min_value=0, max_value=2**22), "host": st.text(max_size=10),
     "since": moments.map(lambda m: m.isoformat())}
)
instances = st.builds(
    Instance,
    id=ids,
    workflow=st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True),
    version=st.integers(min_value=1, max_value=2**31),
    scope=st.sampled_from(SCOPES),
    status=st.sampled_from(STATUSES),
    context=st.builds(Context, initial=json_objects, steps=st.dictionaries(st.text(max_size=10), json_objects, max_size=3)),
    run=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,19}", fullmatch=True),
    created_at=moments,
    updated_at=moments,
    runtime_metadata=json_objects,
    active=st.lists(actives, max_size=3),
    waits=st.dictionaries(step_keys, waits, max_size=3),
    arrived=st.dictionaries(step_keys, configs, max_size=3),
    completed=st.lists(step_keys, max_size=4),
    failed=failures,
    history=st.lists(histories, max_size=5),
    error=errors,
    lease=leases,
)


def through_json(instance: Instance) -> Instance:
    text = json.dumps(instance.to_dict(), allow_nan=False)
    return Instance.from_dict(json.loads(text))


# -- the round trip property ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances)
def test_instance_json_round_trip(instance):
    data = instance.to_dict()
    text = json.dumps(data, allow_nan=False)  # plain, strict JSON
    back = Instance.from_dict(json.loads(text))
    assert back == instance
    assert back.to_dict() == data
    assert back.next_due_at == instance.next_due_at
    assert back.waiting == instance.waiting
    for entry in back.history:
        for moment in (entry.started_at, entry.finished_at):
            assert moment is None or moment.utcoffset() == timedelta(0)
    assert back.created_at.utcoffset() == timedelta(0)


@given(histories)
def test_history_entry_round_trip(entry):
    assert HistoryEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


def test_instance_document_shape():
    d, inst = start(
        define("n_shape", start=(Wait, {"duration": 1, "unit": "hour"}), transitions={Wait: {"timeout": Done}})
    )
    data = inst.to_dict()
    assert data["format"] == FORMAT_VERSION
    assert set(data) >= {
        "format", "id", "run", "workflow", "version", "status", "created_at", "updated_at", "next_due_at",
        "context", "runtime_metadata", "active", "waits", "arrived", "completed", "failed", "error", "lease",
        "history",
    }
    assert data["next_due_at"] == (NOW + timedelta(hours=1)).isoformat()
    assert data["context"] == {"initial": {}, "steps": {}}
    assert data["created_at"] == "2024-01-02T03:04:05+00:00"


# -- instances the engine produced survive a round trip and carry on ------------------------------


def test_engine_instances_round_trip_and_continue():
    Pre = make_step("Pre", ["ok"], result=("ok", {"when": datetime(2024, 1, 1, tzinfo=timezone.utc)}, {"m": 1}))
    Approve = make_step("Approve", ["approved"], result=ASYNC)
    Join = make_step("Join", ["ok"])
    flow = define(
        "n_continue",
        start=Pre,
        transitions={Pre: {"ok": [Approve, (Wait, {"duration": 1, "unit": "minute"})]},
                     Approve: {"approved": Join}, Wait: {"timeout": Join}, Join: {"ok": Done}},
    )
    d, inst = start(flow, {"amount": 2})
    assert inst.status == "waiting"
    back = through_json(inst)
    assert back == inst
    # the restored instance behaves as the original
    later = NOW + timedelta(minutes=1)
    fired_a, _ = engine.fire_due(d, inst, later)
    fired_b, _ = engine.fire_due(d, back, later)
    assert fired_a == fired_b
    a = run(d, engine.resume(d, fired_a, "approved", later), later)
    b = run(d, engine.resume(d, through_json(fired_b), "approved", later), later)
    assert a == b and a.status == "completed"
    assert through_json(a) == a


def test_failed_and_retrying_instances_round_trip():
    def boom(instance, config, context):
        raise RuntimeError("down")

    Flaky = make_step("Flaky", ["ok"], fn=boom, retry=Retry(max_attempts=2, base_delay=5))
    d, inst = start(define("n_retrying", start=Flaky, transitions={Flaky: {"ok": Done}}))
    assert inst.status == "waiting" and inst.waits["flaky"]["kind"] == "retry"
    assert through_json(inst) == inst
    assert through_json(inst).next_due_at == NOW + timedelta(seconds=5)
    inst, _ = engine.fire_due(d, through_json(inst), NOW + timedelta(seconds=5))
    inst = run(d, inst)
    assert inst.status == "failed" and "RuntimeError: down" in inst.error["traceback"]
    back = through_json(inst)
    assert back == inst and back.error == inst.error
    assert engine.retry(d, back, NOW) == engine.retry(d, inst, NOW)


def test_cancelled_instance_round_trip():
    d, inst = start(_hold_flow())
    out = engine.cancel(inst, NOW)
    assert through_json(out) == out


def _hold_flow():
    Hold = make_step("Hold", ["go"], result=ASYNC)
    return define("n_hold", start=Hold, transitions={Hold: {"go": Done}})


# -- malformed documents --------------------------------------------------------------------------


def _valid_document() -> dict:
    d, inst = start(_hold_flow())
    return json.loads(json.dumps(inst.to_dict()))


def _broken(path, value):
    doc = _valid_document()
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("format",), 2, 'format: unsupported format version 2 (this heph reads format 1)'),
        (("format",), _DELETE, 'format: unsupported format version null (this heph reads format 1)'),
        (("id",), _DELETE, 'id: required field missing'),
        (("id",), 3, 'id: expected a non-empty string, got 3'),
        (("run",), None, 'run: expected a non-empty string, got null'),
        (("workflow",), _DELETE, 'workflow: required field missing'),
        (("version",), "1", "version: expected an integer >= 1, got '1'"),
        (("version",), True, 'version: expected an integer >= 1, got true'),
        (("status",), "sleeping", "status: expected one of pending, running, waiting, completed, failed, cancelled, got 'sleeping'"),
        (("created_at",), "2024-01-01T00:00:00", "created_at: time '2024-01-01T00:00:00' has no time zone"),
        (("created_at",), 5, 'created_at: expected an ISO 8601 time with a time zone, got 5'),
        (("updated_at",), "yesterday", "updated_at: expected an ISO 8601 time with a time zone, got 'yesterday'"),
        (("context",), [], 'context: expected an object, got a list'),
        (("context", "initial"), _DELETE, 'context.initial: required field missing'),
        (("context", "initial"), [1], 'context.initial: expected an object, got a list'),
        (("context", "steps"), "x", "context.steps: expected an object, got 'x'"),
        (("runtime_metadata",), [], 'runtime_metadata: expected an object, got a list'),
        (("active",), {}, 'active: expected a list, got an object'),
        (("waits",), [], 'waits: expected an object, got a list'),
        (("arrived",), None, 'arrived: expected an object, got null'),
        (("completed",), "a", "completed: expected a list, got 'a'"),
        (("history",), {}, 'history: expected a list, got an object'),
        (("history", 0, "outcome"), "exploded", "history[0].outcome: expected one of completed, async, resumed, failed, cancelled, rejected, got 'exploded'"),
        (("history", 0, "step"), None, 'history[0].step: expected a step key (a non-empty string), got null'),
        (("history", 0, "attempt"), False, 'history[0].attempt: expected an integer >= 1, got false'),
        (("history", 0, "started_at"), "2024-01-01 10:00", "history[0].started_at: time '2024-01-01 10:00' has no time zone"),
        (("history", 0), "entry", "history[0]: expected an object, got 'entry'"),
        (("history", 0), [], 'history[0]: expected an object, got a list'),
    ],
)
def test_malformed_documents_are_refused(path, value, fragment):
    with pytest.raises(ValueError) as caught:
        Instance.from_dict(_broken(path, value))
    assert fragment in str(caught.value)


@pytest.mark.parametrize("document", [None, [], "instance", 3])
def test_a_document_must_be_an_object(document):
    with pytest.raises(ValueError, match="must be a JSON object"):
        Instance.from_dict(document)


def test_optional_fields_default():
    doc = _valid_document()
    for name in ("runtime_metadata", "active", "waits", "arrived", "completed", "failed", "error", "lease", "history"):
        del doc[name]
    inst = Instance.from_dict(doc)
    assert inst.history == [] and inst.waits == {} and inst.active == [] and inst.failed is None


# -- timestamps ---------------------------------------------------------------------------------------


def test_to_iso_and_from_iso():
    assert to_iso(None) is None and from_iso(None) is None
    paris = timezone(timedelta(hours=2))
    moment = datetime(2024, 6, 1, 14, 0, tzinfo=paris)
    assert to_iso(moment) == "2024-06-01T12:00:00+00:00"
    assert from_iso("2024-06-01T14:00:00+02:00") == moment
    assert from_iso("2024-06-01T14:00:00+02:00").tzinfo == timezone.utc
    assert from_iso("2024-06-01T12:00:00Z") == moment
    assert to_iso(datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)) == "2024-06-01T12:00:00.123456+00:00"
    with pytest.raises(ValueError, match="no time zone"):
        from_iso("2024-06-01T12:00:00")


# -- instance properties -----------------------------------------------------------------------------


def _bare(**changes) -> Instance:
    fields = dict(id="k::x", workflow="w", version=1, status="waiting", context=Context({}, {}), run="r",
                  created_at=NOW, updated_at=NOW)
    fields.update(changes)
    return Instance(**fields)


@pytest.mark.parametrize("status", STATUSES)
def test_is_active(status):
    assert _bare(status=status).is_active == (status in ACTIVE_STATUSES)


def test_waiting_and_next_due_at():
    inst = _bare(waits={
        "a": {"kind": "event", "due_at": None},
        "b": {"kind": "timer", "due_at": (NOW + timedelta(hours=2)).isoformat()},
        "c": {"kind": "retry", "due_at": (NOW + timedelta(minutes=5)).isoformat()},
    })
    assert inst.waiting == ["a", "b", "c"]
    assert inst.next_due_at == NOW + timedelta(minutes=5)
    assert _bare().next_due_at is None and _bare().waiting == []


def test_copy_has_independent_containers():
    inst = _bare(context=Context({"a": [1]}, {"s": {"b": 2}}), runtime_metadata={"m": {"n": 1}},
                 history=[HistoryEntry("s", "completed", "ok")])
    twin = inst.copy()
    assert twin == inst
    twin.context.steps["t"] = {}
    twin.runtime_metadata["x"] = 1
    twin.history.append(HistoryEntry("t", "completed", "ok"))
    twin.active.append({"step": "t"})
    twin.completed.append("t")
    assert inst.context.steps == {"s": {"b": 2}}
    assert inst.runtime_metadata == {"m": {"n": 1}}
    assert len(inst.history) == 1 and inst.active == [] and inst.completed == []


def test_copy_carries_every_field():
    inst = _bare(context=Context({"a": 1}, {"s": {}}), runtime_metadata={"m": 1}, active=[{"step": "s"}],
                 waits={"w": {"kind": "event"}}, arrived={"j": ["s"]}, completed=["s"], failed={"step": "s"},
                 history=[HistoryEntry("s", "completed", "ok")], error={"type": "E"}, lease={"pid": 1})
    twin = inst.copy()
    for f in dataclasses.fields(inst):
        assert getattr(twin, f.name) == getattr(inst, f.name), f.name
    other = Context({"b": 2}, {})
    assert inst.copy(other).context is other


def test_deepcopy_is_independent():
    inst = _bare(context=Context({"a": [1]}, {"s": {"b": 2}}), runtime_metadata={"m": {"n": 1}},
                 history=[HistoryEntry("s", "failed", "ok", error={"type": "E"})])
    twin = inst.deepcopy()
    assert twin == inst
    twin.context.initial["a"].append(2)
    twin.context.steps["s"]["b"] = 3
    twin.runtime_metadata["m"]["n"] = 2
    twin.history[0].error["type"] = "changed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        twin.history[0].event = "changed"  # history entries never change once made
    assert inst.context.initial == {"a": [1]}
    assert inst.context.steps == {"s": {"b": 2}}
    assert inst.runtime_metadata == {"m": {"n": 1}}
    assert inst.history[0].event == "ok" and inst.history[0].error == {"type": "E"}


def test_history_entry_defaults():
    entry = HistoryEntry.from_dict({"step": "s", "outcome": "async"})
    assert (entry.event, entry.attempt, entry.started_at, entry.finished_at, entry.duration_ms, entry.error) == (
        None, 1, None, None, None, None)


# -- JSON safety ------------------------------------------------------------------------------------


def test_to_json_converts_rich_values():
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {
        "at": moment, "day": date(2024, 1, 2), "clock": time(3, 4), "price": Decimal("9.99"),
        "id": UUID(int=1), "pair": (1, (2, 3)), "plain": [None, True, 1, 1.5, "s"],
    }
    assert to_json(value) == {
        "at": "2024-01-02T03:04:05+00:00", "day": "2024-01-02", "clock": "03:04:00", "price": "9.99",
        "id": "00000000-0000-0000-0000-000000000001", "pair": [1, [2, 3]], "plain": [None, True, 1, 1.5, "s"],
    }


@pytest.mark.parametrize(
    "value, path, reason",
    [
        ({"a": object()}, "a", "object is not JSON-serialisable"),
        ({"a": {"b": [0, 1, {1, 2}]}}, "a.b[2]", "set is not JSON-serialisable"),
        ({"a": float("inf")}, "a", "inf is not a finite number"),
        ({"a": float("nan")}, "a", "nan is not a finite number"),
        ({1: "x"}, "1", "key 1 is not a string"),
        ({("t",): "x"}, "('t',)", "is not a string"),
        (b"bytes", "", "bytes is not JSON-serialisable"),
    ],
)
def test_to_json_names_the_offending_place(value, path, reason):
    with pytest.raises(NotJsonSafe) as caught:
        to_json(value)
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_deep_nesting_is_refused_without_recursion_error():
    deep: list = []
    for _ in range(MAX_DEPTH + 50):
        deep = [deep]
    with pytest.raises(NotJsonSafe, match="nested deeper"):
        to_json(deep)
    nested: dict = {}
    for _ in range(150):
        nested = {"x": nested}
    assert "nested too deeply" in json_safe_problem(nested, "metadata")


@pytest.mark.parametrize(
    "value, safe",
    [
        ({"a": [1, 2.5, None, True, "s", {"b": {}}]}, True),
        ([], True),
        ("s", True),
        ((1, 2), False),
        ({"a": (1,)}, False),
        ({"at": datetime(2024, 1, 1)}, False),
        ({"d": Decimal("1")}, False),
        ({"x": float("nan")}, False),
        ({1: 1}, False),
        ({"o": object()}, False),
    ],
)
def test_is_json_safe(value, safe):
    assert is_json_safe(value) is safe


@given(json_values)
def test_to_json_is_identity_on_plain_json(value):
    assert to_json(value) == value
    assert is_json_safe(value)
    assert json_safe_problem(value, "v") is None
