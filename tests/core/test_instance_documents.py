"""Instance documents are checked completely when read (issue #14, defects 1 and 11).

``Instance.from_dict`` must refuse, with a ``MalformedDocument`` (a ``ValueError``) whose message
starts with the field's path, every document whose fields have the wrong type or shape, and
must read back every document heph writes (or heph 0.1 wrote) unchanged.
"""

from __future__ import annotations

import copy
import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest
from _core_helpers import NOW, define, make_step, run, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heph import ASYNC, Done, Retry, Wait
from heph.core import engine
from heph.core.definition import SCOPES
from heph.core.instance import OUTCOMES, STATUSES, WAIT_KINDS, Context, HistoryEntry, Instance, MalformedDocument
from heph.core.uniqueness import scope_of_id
from heph.testing.conformance import make_instance


def through_json(instance: Instance) -> Instance:
    return Instance.from_dict(json.loads(json.dumps(instance.to_dict(), allow_nan=False)))


def assert_round_trips(instance: Instance) -> None:
    data = instance.to_dict()
    back = through_json(instance)
    assert back == instance
    assert back.to_dict() == data
    assert back.next_due_at == instance.next_due_at


# -- valid documents: every shape heph writes ----------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("scope", [None, *SCOPES])
def test_conformance_instances_round_trip(status, scope):
    assert_round_trips(make_instance("conf::one", status=status, scope=scope))


@pytest.mark.parametrize("kind", ["event", "timer", "retry"])
def test_conformance_waits_of_every_kind_round_trip(kind):
    due = None if kind == "event" else NOW + timedelta(hours=1)
    instance = make_instance("conf::one", status="waiting", due_at=due, wait_kind=kind)
    assert instance.waits["pause"]["kind"] == kind
    assert_round_trips(instance)


def test_a_suffixed_id_and_a_uuid_value_round_trip():
    assert_round_trips(make_instance("conf::one::0a1b2c3d", status="waiting", scope="none"))
    assert_round_trips(make_instance("conf::123e4567-e89b-12d3-a456-426614174000", status="running"))


def _parallel_flow():
    Pre = make_step("Pre", ["ok"], result=("ok", {"when": "then"}, {"m": 1}))
    Approve = make_step("Approve", ["approved"], result=ASYNC)
    Join = make_step("Join", ["ok"])
    return define(
        "md_parallel",
        start=Pre,
        transitions={Pre: {"ok": [Approve, (Wait, {"duration": 1, "unit": "minute"})]},
                     Approve: {"approved": Join}, Wait: {"timeout": Join}, Join: {"ok": Done}},
    )


def test_engine_instances_at_every_stage_round_trip():
    """Waiting on an event and a timer at once, a join half reached, completed, cancelled."""
    d, inst = start(_parallel_flow(), {"amount": 2})
    assert {w["kind"] for w in inst.waits.values()} == {"event", "timer"}
    assert_round_trips(inst)
    later = NOW + timedelta(minutes=1)
    fired, _ = engine.fire_due(d, through_json(inst), later)
    assert fired.arrived  # the join is reached by one branch of two
    assert_round_trips(fired)
    done = run(d, engine.resume(d, through_json(fired), "approved", later), later)
    assert done.status == "completed"
    assert_round_trips(done)
    assert_round_trips(engine.cancel(through_json(inst), later))


def test_engine_retries_failures_and_leases_round_trip():
    def boom(instance, config, context):
        raise RuntimeError("down")

    Flaky = make_step("Flaky", ["ok"], fn=boom, retry=Retry(max_attempts=2, base_delay=5))
    d, inst = start(define("md_retrying", start=Flaky, transitions={Flaky: {"ok": Done}}))
    assert inst.waits["flaky"]["kind"] == "retry" and "last_error" in inst.waits["flaky"]
    assert_round_trips(inst)
    inst, _ = engine.fire_due(d, through_json(inst), NOW + timedelta(seconds=5))
    running = engine.begin(inst, NOW, {"pid": 4242, "host": "box", "since": NOW.isoformat()})
    assert running.status == "running" and running.active[0]["attempt"] == 2
    assert_round_trips(running)
    failed = run(d, running)
    assert failed.status == "failed" and failed.failed["attempt"] == 2 and failed.error["traceback"]
    assert_round_trips(failed)
    retried = engine.retry(d, through_json(failed), NOW)
    assert retried.active[0]["attempt"] == 3
    assert_round_trips(retried)


def test_a_document_of_heph_0_1_without_scope_still_loads():
    for instance_id, scope in (("conf::one", "workflow"), ("conf::one::0a1b2c3d", "none")):
        doc = json.loads(json.dumps(make_instance(instance_id, status="waiting").to_dict()))
        del doc["scope"]
        assert Instance.from_dict(doc).scope == scope == scope_of_id(instance_id)


def test_optional_fields_may_be_missing():
    doc = json.loads(json.dumps(make_instance(status="completed").to_dict()))
    for name in ("next_due_at", "runtime_metadata", "active", "waits", "arrived", "completed", "failed", "error",
                 "lease", "history"):
        del doc[name]
    inst = Instance.from_dict(doc)
    assert (inst.active, inst.waits, inst.arrived, inst.completed, inst.history) == ([], {}, {}, [], [])
    assert inst.failed is None and inst.error is None and inst.lease is None and inst.runtime_metadata == {}


def test_optional_parts_of_nested_values_may_be_missing():
    doc = json.loads(json.dumps(make_instance(status="waiting").to_dict()))
    del doc["waits"]["pause"]["config"], doc["waits"]["pause"]["first_attempt"], doc["waits"]["pause"]["due_at"]
    doc["active"] = [{"step": "a", "attempt": 1}]
    doc["error"] = {"type": "E", "message": "m"}
    doc["history"] = [{"step": "s", "outcome": "async"}]
    inst = Instance.from_dict(doc)
    assert inst.history == [HistoryEntry("s", "async")] and inst.waiting == ["pause"]


def test_unknown_fields_are_ignored():
    doc = json.loads(json.dumps(make_instance(status="waiting").to_dict()))
    doc["later_field"] = {"x": 1}
    doc["waits"]["pause"]["deadline"] = "soon"
    assert Instance.from_dict(doc).waits["pause"]["deadline"] == "soon"


def test_times_in_other_zones_are_read_as_utc():
    doc = json.loads(json.dumps(make_instance(status="completed").to_dict()))
    doc["created_at"] = "2026-03-01T14:00:00+02:00"
    doc["history"][0]["finished_at"] = "2026-03-01T12:00:00Z"
    inst = Instance.from_dict(doc)
    assert inst.created_at == datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    assert inst.created_at.tzinfo is timezone.utc and inst.history[0].finished_at.tzinfo is timezone.utc


# -- valid documents: a property over every valid shape -------------------------------------------

_texts = st.text(max_size=12)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_positive = st.integers(min_value=1, max_value=2**40)
_offsets = st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
_moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.just(timezone.utc) | _offsets)
_stamps = _moments.map(lambda m: m.isoformat())
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _texts
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(_texts, c, max_size=3),
                     max_leaves=8)
_objects = st.dictionaries(_texts, _json, max_size=3)
_configs = st.none() | _objects
_errors = st.fixed_dictionaries({"type": _texts, "message": _texts},
                                optional={"traceback": st.none() | _texts, "step": _keys})
_histories = st.builds(
    HistoryEntry, step=_keys, outcome=st.sampled_from(OUTCOMES), event=st.none() | _texts, attempt=_positive,
    started_at=st.none() | _moments, finished_at=st.none() | _moments,
    duration_ms=st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
    error=st.none() | _errors,
)
_actives = st.fixed_dictionaries({"step": _keys, "attempt": _positive},
                                 optional={"config": _configs, "first_attempt": _positive})
_waits = st.sampled_from(WAIT_KINDS).flatmap(lambda kind: st.fixed_dictionaries(
    {"kind": st.just(kind), "attempt": _positive, "since": _stamps,
     "due_at": (st.none() | _stamps) if kind == "event" else _stamps,
     **({"event": _keys} if kind == "deadline" else {})},
    optional={"config": _configs, "first_attempt": _positive, "last_error": _errors},
))
_ids = st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
                 st.none() | st.from_regex(r"[0-9a-f]{8}", fullmatch=True)).map(
    lambda p: "::".join(x for x in p if x is not None))
VALID_INSTANCES = st.builds(
    Instance,
    id=_ids, workflow=_names, version=_positive, status=st.sampled_from(STATUSES),
    context=st.builds(Context, initial=_objects, steps=st.dictionaries(_keys, _objects, max_size=3)),
    run=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    created_at=_moments, updated_at=_moments, runtime_metadata=_objects,
    active=st.lists(_actives, max_size=3), waits=st.dictionaries(_keys, _waits, max_size=3),
    arrived=st.dictionaries(_keys, _configs, max_size=3), completed=st.lists(_keys, max_size=4),
    failed=st.none() | st.fixed_dictionaries({"step": _keys, "attempt": _positive}, optional={"config": _configs}),
    history=st.lists(_histories, max_size=5), error=st.none() | _errors,
    lease=st.none() | st.fixed_dictionaries({"pid": st.integers(min_value=0, max_value=2**22), "host": _texts,
                                             "since": _stamps}),
    scope=st.sampled_from(SCOPES),
    inbox=st.lists(st.fixed_dictionaries({"event": _keys, "data": _configs.filter(lambda c: c is not None),
                                          "received_at": _stamps}), max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_INSTANCES)
def test_every_valid_shape_round_trips(instance):
    assert_round_trips(instance)
    assert through_json(instance).created_at.utcoffset() == timedelta(0)


@given(_histories)
def test_every_valid_history_entry_round_trips(entry):
    assert HistoryEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


# -- malformed documents: each field, each way it can be wrong ------------------------------------

_DELETE = object()


def _document() -> dict:
    """A document with every part filled in: a waiting run with a timer, an event wait, an
    active step, a join half reached, a lease, an error and a failed step, and a full history."""
    doc = json.loads(json.dumps(make_instance("conf::one", status="waiting", due_at=NOW).to_dict()))
    doc["waits"]["gate"] = {"kind": "event", "config": None, "attempt": 1, "first_attempt": 1,
                            "since": NOW.isoformat(), "due_at": None}
    doc["waits"]["again"] = {"kind": "retry", "config": None, "attempt": 2, "first_attempt": 1,
                             "since": NOW.isoformat(), "due_at": NOW.isoformat(),
                             "last_error": {"type": "E", "message": "m"}}
    doc["waits"]["approve"] = {"kind": "deadline", "config": None, "attempt": 1, "first_attempt": 1,
                               "since": NOW.isoformat(), "due_at": NOW.isoformat(), "event": "expired"}
    doc["inbox"] = [{"event": "paid", "data": {"txn": "t1"}, "received_at": NOW.isoformat()}]
    doc["active"] = [{"step": "next", "config": {"a": 1}, "attempt": 1, "first_attempt": 1}]
    doc["arrived"] = {"join": None}
    doc["lease"] = {"pid": 12, "host": "box", "since": NOW.isoformat()}
    doc["error"] = {"type": "E", "message": "m", "traceback": "tb", "step": "s"}
    doc["failed"] = {"step": "s", "config": None, "attempt": 1}
    doc["history"][0]["error"] = {"type": "E", "message": "m", "traceback": None, "step": "first"}
    assert Instance.from_dict(copy.deepcopy(doc)).waiting == ["pause", "gate", "again", "approve"]
    return doc


def _broken(path: tuple, value: object) -> dict:
    doc = _document()
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


NOT_A_TIME = ["2026-12-03 noon", "yesterday", "", 5, None, "2026-12-03T12:00:00", "2026-12-03"]
WRONG = [
    # (where, value, the path the message must start with)
    (("format",), 2, "format"), (("format",), True, "format"), (("format",), 1.0, "format"),
    (("format",), "1", "format"), (("format",), _DELETE, "format"),
    (("id",), _DELETE, "id"), (("id",), 3, "id"), (("id",), "", "id"), (("id",), "nokey", "id"),
    (("id",), "conf::One", "id"), (("id",), "../../x::y", "id"),
    (("run",), None, "run"), (("run",), _DELETE, "run"), (("run",), "", "run"), (("run",), "a/b", "run"),
    (("run",), "a~b", "run"), (("run",), ".hidden", "run"),
    (("workflow",), _DELETE, "workflow"), (("workflow",), 7, "workflow"), (("workflow",), "Bad-Name", "workflow"),
    (("version",), "1", "version"), (("version",), True, "version"), (("version",), 0, "version"),
    (("version",), -3, "version"), (("version",), 1.0, "version"), (("version",), _DELETE, "version"),
    (("scope",), "planet", "scope"), (("scope",), None, "scope"), (("scope",), 1, "scope"),
    (("status",), "bogus", "status"), (("status",), 5, "status"), (("status",), _DELETE, "status"),
    *[((name,), value, name) for name in ("created_at", "updated_at") for value in NOT_A_TIME],
    (("created_at",), _DELETE, "created_at"),
    (("next_due_at",), "soon", "next_due_at"), (("next_due_at",), 5, "next_due_at"),
    (("context",), [], "context"), (("context",), None, "context"), (("context",), _DELETE, "context"),
    (("context", "initial"), _DELETE, "context.initial"), (("context", "initial"), [1], "context.initial"),
    (("context", "steps"), "x", "context.steps"), (("context", "steps"), _DELETE, "context.steps"),
    (("context", "steps", "first"), 5, "context.steps.first"),
    (("context", "steps", "first"), [1], "context.steps.first"),
    (("runtime_metadata",), [], "runtime_metadata"), (("runtime_metadata",), None, "runtime_metadata"),
    (("active",), {}, "active"), (("active",), None, "active"), (("active",), [5], "active[0]"),
    (("active", 0, "step"), _DELETE, "active[0].step"), (("active", 0, "step"), 5, "active[0].step"),
    (("active", 0, "step"), "", "active[0].step"),
    (("active", 0, "attempt"), "x", "active[0].attempt"), (("active", 0, "attempt"), 0, "active[0].attempt"),
    (("active", 0, "attempt"), _DELETE, "active[0].attempt"),
    (("active", 0, "first_attempt"), None, "active[0].first_attempt"),
    (("active", 0, "config"), [1], "active[0].config"), (("active", 0, "config"), "cfg", "active[0].config"),
    (("waits",), [], "waits"), (("waits",), None, "waits"), (("waits", "gate"), 5, "waits.gate"),
    (("waits", "gate"), None, "waits.gate"),
    (("waits", "gate", "kind"), "alarm", "waits.gate.kind"), (("waits", "gate", "kind"), _DELETE, "waits.gate.kind"),
    (("waits", "gate", "attempt"), "x", "waits.gate.attempt"), (("waits", "gate", "attempt"), 0, "waits.gate.attempt"),
    (("waits", "gate", "attempt"), True, "waits.gate.attempt"),
    (("waits", "gate", "attempt"), _DELETE, "waits.gate.attempt"),
    (("waits", "gate", "first_attempt"), "1", "waits.gate.first_attempt"),
    (("waits", "gate", "config"), 5, "waits.gate.config"),
    *[(("waits", "gate", "since"), value, "waits.gate.since") for value in NOT_A_TIME],
    (("waits", "gate", "since"), _DELETE, "waits.gate.since"),
    *[(("waits", "gate", "due_at"), value, "waits.gate.due_at") for value in NOT_A_TIME if value is not None],
    (("waits", "pause", "due_at"), None, "waits.pause.due_at"),  # a timer needs a due time
    (("waits", "pause", "due_at"), _DELETE, "waits.pause.due_at"),
    (("waits", "again", "due_at"), None, "waits.again.due_at"),  # and so does a retry
    (("waits", "again", "last_error"), "boom", "waits.again.last_error"),
    (("waits", "again", "last_error", "message"), 5, "waits.again.last_error.message"),
    (("waits", "approve", "event"), _DELETE, "waits.approve.event"),  # a deadline names its event
    (("waits", "approve", "event"), 5, "waits.approve.event"),
    (("waits", "approve", "due_at"), None, "waits.approve.due_at"),
    (("inbox",), {}, "inbox"), (("inbox",), [5], "inbox[0]"), (("inbox", 0, "event"), "", "inbox[0].event"),
    (("inbox", 0, "data"), [1], "inbox[0].data"), (("inbox", 0, "data"), _DELETE, "inbox[0].data"),
    (("inbox", 0, "received_at"), "noon", "inbox[0].received_at"),
    (("arrived",), None, "arrived"), (("arrived",), [], "arrived"), (("arrived", "join"), 5, "arrived.join"),
    (("arrived", "join"), "cfg", "arrived.join"),
    (("completed",), "a", "completed"), (("completed",), [5], "completed[0]"), (("completed",), [""], "completed[0]"),
    (("failed",), 5, "failed"), (("failed",), [], "failed"), (("failed", "step"), _DELETE, "failed.step"),
    (("failed", "step"), None, "failed.step"), (("failed", "attempt"), "2", "failed.attempt"),
    (("failed", "attempt"), _DELETE, "failed.attempt"), (("failed", "config"), 5, "failed.config"),
    (("error",), "boom", "error"), (("error",), [], "error"), (("error", "type"), _DELETE, "error.type"),
    (("error", "type"), 5, "error.type"), (("error", "message"), None, "error.message"),
    (("error", "traceback"), 5, "error.traceback"), (("error", "step"), 5, "error.step"),
    (("lease",), "me", "lease"), (("lease",), 5, "lease"), (("lease", "pid"), "12", "lease.pid"),
    (("lease", "pid"), True, "lease.pid"), (("lease", "pid"), -1, "lease.pid"), (("lease", "pid"), _DELETE, "lease.pid"),
    (("lease", "host"), 5, "lease.host"), (("lease", "since"), "noon", "lease.since"),
    (("lease", "since"), _DELETE, "lease.since"),
    (("history",), {}, "history"), (("history",), None, "history"), (("history", 0), "entry", "history[0]"),
    (("history", 0), [], "history[0]"), (("history", 1), 5, "history[1]"),
    (("history", 0, "step"), _DELETE, "history[0].step"), (("history", 0, "step"), None, "history[0].step"),
    (("history", 0, "outcome"), _DELETE, "history[0].outcome"),
    (("history", 0, "outcome"), "exploded", "history[0].outcome"),
    (("history", 0, "event"), 5, "history[0].event"), (("history", 0, "attempt"), False, "history[0].attempt"),
    (("history", 0, "attempt"), "x", "history[0].attempt"), (("history", 0, "attempt"), 0, "history[0].attempt"),
    (("history", 0, "started_at"), "2024-01-01 10:00", "history[0].started_at"),
    (("history", 1, "finished_at"), "noon", "history[1].finished_at"),
    (("history", 0, "duration_ms"), "fast", "history[0].duration_ms"),
    (("history", 0, "duration_ms"), True, "history[0].duration_ms"),
    (("history", 0, "duration_ms"), float("nan"), "history[0].duration_ms"),
    (("history", 0, "duration_ms"), float("inf"), "history[0].duration_ms"),
    (("history", 0, "error"), "boom", "history[0].error"),
    (("history", 0, "error", "type"), _DELETE, "history[0].error.type"),
]


@pytest.mark.parametrize("where, value, path", WRONG, ids=[f"{'.'.join(map(str, w))}={v!r}"[:60] for w, v, _ in WRONG])
def test_a_malformed_field_is_refused_naming_its_path(where, value, path):
    with pytest.raises(MalformedDocument) as caught:
        Instance.from_dict(_broken(where, value))
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.path == path, str(error)
    assert str(error).startswith(f"{path}: "), str(error)
    assert len(str(error)) < 200  # the stores keep the first 200 characters in their StorageError


@pytest.mark.parametrize("document", [None, [], "instance", 3, True])
def test_a_document_must_be_an_object(document):
    with pytest.raises(MalformedDocument, match="must be a JSON object"):
        Instance.from_dict(document)


def test_messages_say_what_was_expected_and_what_was_found():
    def message(where, value):
        with pytest.raises(MalformedDocument) as caught:
            Instance.from_dict(_broken(where, value))
        return str(caught.value)

    assert message(("waits", "gate"), 5) == "waits.gate: expected an object, got 5"
    assert message(("waits", "gate", "due_at"), "2026-12-03 noon") == (
        "waits.gate.due_at: expected an ISO 8601 time with a time zone, got '2026-12-03 noon'")
    assert message(("updated_at",), "2026-11-26T00:00:00") == "updated_at: time '2026-11-26T00:00:00' has no time zone"
    assert message(("active",), [5]) == "active[0]: expected an object, got 5"
    assert message(("waits", "gate", "attempt"), "x") == "waits.gate.attempt: expected an integer >= 1, got 'x'"
    assert message(("status",), "bogus").startswith("status: expected one of pending, running, waiting")
    assert message(("context",), []) == "context: expected an object, got a list"
    assert message(("history", 0, "outcome"), _DELETE) == "history[0].outcome: required field missing"
    assert message(("version",), "1") == "version: expected an integer >= 1, got '1'"
    assert message(("format",), 2) == "format: unsupported format version 2 (this heph reads format 1)"
    assert message(("run",), "x" * 500).startswith("run: expected a run id")
    assert len(message(("run",), "x" * 500)) < 120  # long values are shortened


def test_an_odd_key_is_quoted_in_the_path():
    doc = _document()
    doc["waits"]["a b.c"] = 5
    with pytest.raises(MalformedDocument) as caught:
        Instance.from_dict(doc)
    assert caught.value.path == "waits['a b.c']"


def test_history_entries_are_checked_on_their_own_too():
    assert HistoryEntry.from_dict({"step": "s", "outcome": "async"}) == HistoryEntry("s", "async")
    with pytest.raises(MalformedDocument) as caught:
        HistoryEntry.from_dict({"step": "s", "outcome": "async", "attempt": "x"})
    assert str(caught.value).startswith("attempt: ")
    with pytest.raises(MalformedDocument) as caught:
        HistoryEntry.from_dict({"step": "s"}, "history[4]")
    assert caught.value.path == "history[4].outcome"
    with pytest.raises(MalformedDocument):
        HistoryEntry.from_dict(["s", "async"])


def test_the_error_pickles_with_its_path():
    with pytest.raises(MalformedDocument) as caught:
        Instance.from_dict(_broken(("waits", "gate"), 5))
    twin = pickle.loads(pickle.dumps(caught.value))
    assert (type(twin), twin.path, twin.problem, str(twin)) == (
        MalformedDocument, "waits.gate", "expected an object, got 5", str(caught.value))


def test_from_dict_changes_nothing_in_the_document():
    doc = _document()
    before = copy.deepcopy(doc)
    Instance.from_dict(doc)
    assert doc == before
    broken = _broken(("history", 1, "attempt"), "x")
    before = copy.deepcopy(broken)
    with pytest.raises(MalformedDocument):
        Instance.from_dict(broken)
    assert broken == before


# -- defect 11: a run loaded from a document can always be written back and read again ------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_INSTANCES)
def test_a_cancelled_valid_run_reads_back(instance):
    """`cancel` copies each wait's and active step's attempt into a history entry: whatever a
    valid document holds, the cancelled run must be a valid document too."""
    if instance.is_active:
        assert_round_trips(engine.cancel(through_json(instance), NOW))


def test_a_wait_whose_attempt_is_not_an_int_never_reaches_cancel():
    doc = _document()
    doc["waits"]["gate"]["attempt"] = "x"
    with pytest.raises(MalformedDocument, match=r"^waits\.gate\.attempt: "):
        Instance.from_dict(doc)
