"""``PostgresStorage`` against a real PostgreSQL server: the conformance suite, the runtime end
to end, uniqueness enforced by the database, racing processes, several ticking workers, the
CLI (`storage: {type: postgres}`, `heph db migrate`, `heph storage copy`).

The server is ``$HEPH_TEST_DATABASE_URL``, else postgresql://postgres@127.0.0.1:5432/test.
Every test works in schemas of its own with random names, dropped at the end. Without a
reachable server, or without psycopg, the whole module is skipped (with the reason), except
when the environment variable ``CI`` is set: then it fails, so CI never passes without
having run these tests (``.ci/run`` starts a throwaway server when none answers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

DSN = os.environ.get("HEPH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
    """Skip the module, or fail it under CI (``$CI`` set), where these tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the machine
    _unavailable("psycopg 3 is not installed (pip install -e '.[test]' installs it)")

_no_server = None
try:
    psycopg.connect(DSN, connect_timeout=3).close()
except psycopg.Error as exc:  # pragma: no cover - depends on the machine
    _no_server = f"no PostgreSQL server at {DSN} (set HEPH_TEST_DATABASE_URL): {str(exc).strip().splitlines()[0]}"
if _no_server:  # pragma: no cover - depends on the machine
    _unavailable(_no_server)

from cli_helpers import assert_refused, cli_env, make_project, ok, ok_json  # noqa: E402
from cli_helpers import heph as run_heph  # noqa: E402

import heph  # noqa: E402
from heph import AlreadyRunning, Done, Retry, Step, StorageError, Unique, Wait, WaitForEvent, Workflow  # noqa: E402
from heph.core.uniqueness import conflicts  # noqa: E402
from heph.runtime.clock import ManualClock  # noqa: E402
from heph.runtime.storage import postgres as pg_module  # noqa: E402
from heph.runtime.storage.base import RunRef  # noqa: E402
from heph.runtime.storage.jsonfile import JsonFileStorage  # noqa: E402
from heph.runtime.storage.postgres import LATEST, PostgresStorage  # noqa: E402
from heph.runtime.storage.transfer import checksums, copy_runs, store_checksum  # noqa: E402
from heph.testing.conformance import StorageConformance, make_instance  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
_SCHEMAS: list[str] = []


def new_schema() -> str:
    name = f"heph_test_{uuid.uuid4().hex[:12]}"
    _SCHEMAS.append(name)
    return name


@pytest.fixture(scope="module", autouse=True)
def drop_schemas():
    yield
    with psycopg.connect(DSN, autocommit=True) as conn:
        for name in _SCHEMAS:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def make_store(**kw) -> PostgresStorage:
    store = PostgresStorage(DSN, schema=new_schema(), **kw)
    store.migrate()
    return store


@pytest.fixture
def pg():
    store = make_store()
    yield store
    store.close()


# -- the contract ------------------------------------------------------------------------------


class TestPostgres(StorageConformance):
    shares_claims = True

    def make_storage(self, tmp_path):
        return make_store()

    def reopen_storage(self, storage):
        return PostgresStorage(DSN, schema=storage.schema)


# -- workflows for the runtime tests ----------------------------------------------------------------


def failures(instance, key: str) -> int:
    return sum(1 for h in instance.history if h.step == key and h.outcome == "failed")


class PgtCharge(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok", {"charged": context.initial.get("amount", 0)}


class PgtFlaky(Step):
    """Fails ``fail_times`` times, then succeeds; retried after 1 s."""

    events = ["ok"]
    retry = Retry(max_attempts=3, backoff="constant", base_delay=1.0)

    def execute(self, instance, config, context):
        if failures(instance, "pgt_flaky") < context.initial.get("fail_times", 0):
            raise RuntimeError("flaky")
        return "ok"


class PgtFragile(Step):
    """No retry policy: fails the instance once, then succeeds (for ``retry``)."""

    events = ["ok"]

    def execute(self, instance, config, context):
        if failures(instance, "pgt_fragile") < 1:
            raise RuntimeError("fragile")
        return "ok"


class PgtFlow(Workflow):
    unique = Unique("pgt")
    name = "pgt_flow"
    start = PgtCharge
    transitions = {
        PgtCharge: {"ok": WaitForEvent},
        WaitForEvent: {"received": (Wait, {"duration": 1, "unit": "hour"})},
        Wait: {"timeout": PgtFlaky},
        PgtFlaky: {"ok": Done},
    }


class PgtFragileFlow(Workflow):
    unique = Unique("pgtf")
    name = "pgt_fragile"
    start = PgtFragile
    transitions = {PgtFragile: {"ok": Done}}


class PgtTimer(Workflow):
    unique = Unique("pgtt")
    name = "pgt_timer"
    start = (Wait, {"duration": 1, "unit": "second"})
    transitions = {Wait: {"timeout": Done}}


class PgtVersionScoped(Workflow):
    unique = Unique("pgtv", scope="version")
    name = "pgt_version"
    version = 3
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class PgtGlobalScoped(Workflow):
    unique = Unique("pgtg", scope="global")
    name = "pgt_global"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


def pg_app(store: PostgresStorage, clock: ManualClock | None = None) -> heph.Hephaestus:
    return heph.Hephaestus(storage=store, clock=clock or ManualClock(datetime(2026, 3, 1, tzinfo=timezone.utc)))


# -- the runtime on PostgreSQL ------------------------------------------------------------------------


def test_runtime_start_resume_timer_retry_end_to_end(pg):
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    app = pg_app(pg, clock)
    instance_id = app.start(PgtFlow, "a1", {"amount": 5, "fail_times": 1})
    assert instance_id == "pgt::a1"
    assert app.get(instance_id).waiting == ["wait_for_event"]
    with pytest.raises(AlreadyRunning):
        app.start(PgtFlow, "a1", {})

    resumed = app.resume(instance_id, "received")
    assert resumed.status == "waiting" and resumed.waiting == ["wait"]
    assert [r.id for r in pg.query(statuses={"waiting"})] == [instance_id]
    assert app.tick() == []                                   # the timer is an hour away

    clock.advance(hours=1)
    fired = app.tick()                                        # timer fires; PgtFlaky fails once
    assert [(f["step"], f["kind"]) for f in fired] == [("wait", "timer")]
    waiting = app.get(instance_id)
    assert waiting.status == "waiting" and waiting.waits["pgt_flaky"]["kind"] == "retry"

    clock.advance(seconds=1)
    assert [(f["step"], f["kind"]) for f in app.tick()] == [("pgt_flaky", "retry")]
    done = app.get(instance_id)
    assert done.status == "completed"
    assert done.context.steps["pgt_charge"] == {"charged": 5}
    assert [h.attempt for h in done.history if h.step == "pgt_flaky"] == [1, 2]
    assert pg.due(clock.now() + timedelta(days=1)) == []

    second = app.start(PgtFlow, "a1", {})                     # finished: a new run of the same id
    assert [r.status for r in app.runs(second)] == ["waiting", "completed"]


class PgEvPack(Step):
    events = ["packed"]
    key = "pgev_pack"

    def execute(self, instance, config, context):
        return heph.ASYNC


class PgEvApprove(Step):
    events = ["approved", "expired"]
    key = "pgev_approve"
    deadline = heph.Deadline(minutes=10, event="expired")

    def execute(self, instance, config, context):
        return heph.ASYNC


class PgEvFlow(Workflow):
    unique = Unique("pgev")
    name = "pgev_flow"
    start = PgEvPack
    transitions = {PgEvPack: {"packed": PgEvApprove}, PgEvApprove: {"approved": Done, "expired": Done}}


def test_events_with_data_buffered_and_deadlines_on_postgres(pg):
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    app = pg_app(pg, clock)
    first = app.start(PgEvFlow, "e1")
    assert app.deliver(first, "approved", {"by": "ann"}, buffer=True).outcome == "buffered"
    assert pg.runs(first)[0].inbox == [{"event": "approved", "data": {"by": "ann"},
                                        "received_at": "2026-03-01T00:00:00+00:00"}]
    done = app.resume(first, "packed", {"crate": 3})
    assert done.status == "completed" and done.inbox == []
    assert done.context.steps == {"pgev_pack": {"crate": 3}, "pgev_approve": {"by": "ann"}}

    second = app.start(PgEvFlow, "e2")
    app.resume(second, "packed")
    assert pg.runs(second)[0].waits["pgev_approve"]["kind"] == "deadline"
    clock.advance(minutes=10)
    assert [(f["id"], f["kind"]) for f in app.tick()] == [(second, "deadline")]
    assert [h.event for h in app.get(second).history if h.step == "pgev_approve"] == [None, "expired"]


PG_GATE = threading.Event()
PG_ENTERED = threading.Event()


class PgBzSlow(Step):
    events = ["done"]
    key = "pgbz_slow"

    def execute(self, instance, config, context):
        PG_ENTERED.set()
        assert PG_GATE.wait(20)
        return "done"


class PgBzFlow(Workflow):
    """pgev_pack's events after a slow step: slow -> approve (approved/expired) -> Done."""

    unique = Unique("pgbz")
    name = "pgbz_flow"
    start = PgBzSlow
    transitions = {PgBzSlow: {"done": PgEvApprove}, PgEvApprove: {"approved": Done, "expired": Done}}


def _held(app, value):
    PG_GATE.clear()
    PG_ENTERED.clear()
    thread = threading.Thread(target=lambda: app.start(PgBzFlow, value), daemon=True)
    thread.start()
    assert PG_ENTERED.wait(10)
    return thread


def test_busy_instances_on_postgres(pg):
    app = pg_app(pg)
    thread = _held(app, "b1")
    try:
        deadline = time.monotonic() + 2  # the note is written a moment after the step began
        while (note := app.running("pgbz::b1")) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert note["step"] == "pgbz_slow" and note["pid"] == os.getpid()
        began = time.monotonic()
        assert app.deliver("pgbz::b1", "approved", {"by": "ann"}).outcome == "queued"
        with pytest.raises(AlreadyRunning):
            app.start(PgBzFlow, "b1")
        assert time.monotonic() - began < 2 * 2
        assert pg.mailboxes() == ["pgbz::b1"]
    finally:
        PG_GATE.set()
        thread.join(20)
    final = app.get("pgbz::b1")
    assert final.status == "completed" and final.context.steps["pgev_approve"] == {"by": "ann"}
    assert app.running("pgbz::b1") is None and pg.mailboxes() == []

    thread = _held(app, "b2")
    try:
        assert app.request_cancel("pgbz::b2").outcome == "cancel requested"
    finally:
        PG_GATE.set()
        thread.join(20)
    assert app.get("pgbz::b2").status == "cancelled"


def test_runtime_cancel_and_retry(pg):
    app = pg_app(pg)
    app.start(PgtFlow, "c1", {})
    cancelled = app.cancel("pgt::c1")
    assert cancelled.status == "cancelled" and app.get("pgt::c1").status == "cancelled"
    with pytest.raises(heph.NotCancellable):
        app.cancel("pgt::c1")

    app.start(PgtFragileFlow, "r1", {})
    failed = app.get("pgtf::r1")
    assert failed.status == "failed" and failed.error["message"] == "fragile"
    retried = app.retry("pgtf::r1")
    assert retried.status == "completed"
    assert pg.query(statuses={"failed"}) == []


def test_tick_recovers_a_run_left_running(pg):
    app = pg_app(pg)
    instance = make_instance("pgtf::crashed", status="running", workflow="pgt_fragile")
    instance.active = [{"step": "pgt_fragile", "config": None, "attempt": 1, "first_attempt": 1}]
    with pg.session(instance.id) as session:
        session.insert(instance)
    actions = app.tick()
    assert [(a["id"], a["kind"]) for a in actions] == [("pgtf::crashed", "recovered")]
    assert app.get("pgtf::crashed").status == "failed"        # the step ran again (and failed: first run)


def test_a_nul_character_is_refused_cleanly_and_nothing_is_written(pg):
    app = pg_app(pg)
    with pytest.raises((StorageError, heph.errors.InvalidContext), match="U\\+0000") as refused:
        app.start(PgtFlow, "nul", {"text": "a\u0000b"})
    assert "\n" not in str(refused.value) and "context.initial.text" in str(refused.value)
    assert pg.runs("pgt::nul") == []
    app.start(PgtFlow, "nul", {"text": "ab"})                 # the id was not left locked
    assert [r.status for r in pg.runs("pgt::nul")] == ["waiting"]


# -- uniqueness, enforced by the database ------------------------------------------------------------


def test_database_refuses_a_second_active_run_in_the_same_scope(pg):
    first = make_instance("pgt::dup", seq=1, status="waiting", workflow="pgt_flow", wait_kind="event")
    second = make_instance("pgt::dup", seq=2, status="running", workflow="pgt_flow")
    with pg.session("pgt::dup") as session:
        session.insert(first)
    with pg.session("pgt::dup") as session:                   # no runtime check: the index refuses
        with pytest.raises(AlreadyRunning):
            session.insert(second)
    assert pg.runs("pgt::dup") == [first]

    finished = make_instance("pgt::dup", seq=3, status="completed", workflow="pgt_flow")
    with pg.session("pgt::dup") as session:                   # finished runs are not limited
        session.insert(finished)
        session.update(make_instance("pgt::dup", seq=1, status="cancelled", workflow="pgt_flow"))
        session.insert(second)                                # the first run is no longer active
    assert len(pg.runs("pgt::dup")) == 3
    with pg.session("pgt::dup") as session:                   # reviving a finished run is refused too
        revived = make_instance("pgt::dup", seq=3, status="waiting", workflow="pgt_flow", wait_kind="event")
        with pytest.raises(AlreadyRunning):
            session.update(revived)


def test_database_uniqueness_follows_the_stored_scope(pg):
    def v(seq, version):
        return make_instance("pgtv::k", seq=seq, status="waiting", workflow="pgt_version", version=version,
                             wait_kind="event", scope="version")

    v3, v3_again, v4 = v(1, 3), v(2, 3), v(3, 4)
    with pg.session("pgtv::k") as session:
        session.insert(v3)
        session.insert(v4)                                    # scope version: another version may run
        with pytest.raises(AlreadyRunning):
            session.insert(v3_again)
    g1 = make_instance("pgtg::k", seq=1, status="waiting", workflow="pgt_global", wait_kind="event", scope="global")
    g2 = make_instance("pgtg::k", seq=2, status="pending", workflow="pgt_global", scope="global")
    with pg.session("pgtg::k") as session:
        session.insert(g1)
        with pytest.raises(AlreadyRunning):
            session.insert(g2)
    rows = dict(pg._read(f"SELECT workflow, unique_scope FROM {pg._s}.runs"))
    assert rows == {"pgt_version": "version", "pgt_global": "global"}


# The scopes, workflows, versions and statuses the agreement test crosses.
_SCOPES = ("workflow", "version", "global", "none")
_STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")


def _facts(n: int, scope: str, workflow: str, version: int, status: str):
    return make_instance("pga::k", seq=n, status=status, workflow=workflow, version=version, scope=scope,
                         wait_kind="event")


def test_the_sql_rule_and_the_python_rule_agree_on_every_combination(pg):
    """``heph_conflicts`` (migration 3) against ``heph.core.uniqueness.conflicts``: every pair
    of scopes, same or different workflow and version, and every pair of statuses."""
    cases = []
    for sa in _SCOPES:
        for sb in _SCOPES:
            for wb in ("wf_a", "wf_b"):
                for vb in (1, 2):
                    for ta in _STATUSES:
                        for tb in _STATUSES:
                            a, b = _facts(1, sa, "wf_a", 1, ta), _facts(2, sb, wb, vb, tb)
                            cases.append((a, b, conflicts(a, b)))
    assert any(c for *_, c in cases) and not all(c for *_, c in cases)
    rows = pg._read(
        f"SELECT n, {pg._s}.heph_conflicts(a_status, a_scope, a_workflow, a_version, "
        f"b_status, b_scope, b_workflow, b_version) "
        f"FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[], "
        f"%s::text[], %s::int[]) AS t(n, a_status, a_scope, a_workflow, a_version, b_status, b_scope, "
        f"b_workflow, b_version) ORDER BY n",
        (list(range(len(cases))), [a.status for a, _, _ in cases], [a.scope for a, _, _ in cases],
         [a.workflow for a, _, _ in cases], [a.version for a, _, _ in cases],
         [b.status for _, b, _ in cases], [b.scope for _, b, _ in cases],
         [b.workflow for _, b, _ in cases], [b.version for _, b, _ in cases]))
    disagree = [(a.scope, a.status, b.scope, b.workflow, b.version, b.status, python)
                for (a, b, python), (_, sql) in zip(cases, rows) if sql is not python]
    assert len(rows) == len(cases) and disagree == []
    # the rule is symmetric in SQL as in Python
    assert all(conflicts(a, b) == conflicts(b, a) for a, b, _ in cases)


def test_the_trigger_enforces_the_python_rule_on_every_scope_pair(pg):
    """Written through heph's sessions (no runtime check): the database refuses exactly what
    ``conflicts`` refuses, across scopes and workflows."""
    n = 0
    for sa in _SCOPES:
        for sb in _SCOPES:
            for wb in ("wf_a", "wf_b"):
                for vb in (1, 2):
                    n += 1
                    instance_id = f"pga::k{n}"
                    a = make_instance(instance_id, seq=1, status="waiting", wait_kind="event", scope=sa,
                                      workflow="wf_a", version=1)
                    b = make_instance(instance_id, seq=2, status="running", scope=sb, workflow=wb, version=vb)
                    with pg.session(instance_id) as session:
                        session.insert(a)
                        if conflicts(a, b):
                            with pytest.raises(AlreadyRunning) as refused:
                                session.insert(b)
                            assert (refused.value.instance_id, refused.value.workflow, refused.value.status) == (
                                instance_id, "wf_a", "waiting")
                        else:
                            session.insert(b)
                    expected = 1 if conflicts(a, b) else 2
                    assert len(pg.runs(instance_id)) == expected, (sa, sb, wb, vb)


def test_global_holds_the_id_across_workflows_and_scopes(pg):
    held = make_instance("pgx::k", seq=1, status="waiting", workflow="pgx_one", wait_kind="event", scope="global")
    other = make_instance("pgx::k", seq=2, status="pending", workflow="pgx_two", scope="workflow")
    with pg.session("pgx::k") as session:
        session.insert(held)
        with pytest.raises(AlreadyRunning, match="pgx_one v1, status waiting"):
            session.insert(other)
    # and the other way round: an active workflow-scoped run blocks a global one of another workflow
    first = make_instance("pgx::j", seq=1, status="waiting", workflow="pgx_two", wait_kind="event", scope="workflow")
    glob = make_instance("pgx::j", seq=2, status="pending", workflow="pgx_one", scope="global")
    with pg.session("pgx::j") as session:
        session.insert(first)
        with pytest.raises(AlreadyRunning):
            session.insert(glob)
    assert dict(pg._read(f"SELECT id, unique_scope FROM {pg._s}.runs")) == {"pgx::k": "global", "pgx::j": "workflow"}


def _raw_insert(conn, store: PostgresStorage, instance) -> None:
    from psycopg.types.json import Jsonb

    conn.execute(
        f"INSERT INTO {store._s}.runs (id, run, workflow, version, status, unique_scope, created_at, updated_at, doc) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (instance.id, instance.run, instance.workflow, instance.version, instance.status, instance.scope,
         instance.created_at, instance.updated_at, Jsonb(instance.to_dict())))


def test_writers_that_skip_heph_sessions_are_serialised_by_the_trigger(pg):
    first = make_instance("pgr::k", seq=1, status="waiting", wait_kind="event")
    second = make_instance("pgr::k", seq=2, status="waiting", wait_kind="event", workflow=first.workflow)
    one = psycopg.connect(DSN)                                    # a transaction: not committed yet
    two = psycopg.connect(DSN, autocommit=True)
    outcome: list[BaseException | None] = []

    def racer() -> None:
        try:
            _raw_insert(two, pg, second)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    try:
        _raw_insert(one, pg, first)
        thread = threading.Thread(target=racer)
        thread.start()
        thread.join(0.5)
        assert outcome == []                                      # waits for the first transaction
        one.commit()
        thread.join(10)
        (error,) = outcome
        assert isinstance(error, psycopg.errors.UniqueViolation), error
        assert error.diag.constraint_name == "heph_runs_unique"
    finally:
        one.close()
        two.close()
    assert pg.runs("pgr::k") == [first]
    with pytest.raises(AlreadyRunning):                           # heph maps it, facts included
        pg._with_conn(lambda conn: pg._raise(error))


def test_a_repeatable_read_writer_of_an_active_run_is_refused(pg):
    instance = make_instance("pgr::rr", status="waiting", wait_kind="event")
    with psycopg.connect(DSN) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
            _raw_insert(conn, pg, instance)
    assert pg.runs("pgr::rr") == []


def test_a_session_on_a_busy_id_raises_instance_busy(pg):
    with pg.session("pgt::busy"):
        for wait in (0, 0.1):
            other = PostgresStorage(DSN, schema=pg.schema)
            try:
                with pytest.raises(heph.errors.InstanceBusy) as busy:
                    with other.session("pgt::busy", timeout=wait):
                        pass
            finally:
                other.close()
            assert busy.value.instance_id == "pgt::busy"
            assert str(busy.value) == "instance pgt::busy is busy (another heph process holds it); try again later"


def test_must_exist_is_accepted_and_creates_nothing(pg):
    with pg.session("pgt::ghost", must_exist=True) as session:
        assert session.runs() == []
    assert pg.count() == 0


def test_migration_3_aligns_old_rows_and_replaces_the_indexes(monkeypatch):
    store = PostgresStorage(DSN, schema=new_schema())
    monkeypatch.setattr(pg_module, "MIGRATIONS", pg_module.MIGRATIONS[:2])
    assert store.migrate() == [1, 2]
    monkeypatch.undo()
    # rows as heph 0.2 wrote them: no scope in the document, unique_scope from the registry
    old_docs = []
    for n, (instance_id, registry_scope) in enumerate([("pgm::a", "global"), ("pgm::b::0badcafe", "workflow"),
                                                        ("pgm::c", "version")]):
        instance = make_instance(instance_id, seq=n, status="waiting", wait_kind="event")
        doc = instance.to_dict()
        doc.pop("scope")
        old_docs.append((instance, doc, registry_scope))
    from psycopg.types.json import Jsonb

    with psycopg.connect(DSN, autocommit=True) as conn:
        for instance, doc, registry_scope in old_docs:
            conn.execute(
                f'INSERT INTO "{store.schema}".runs (id, run, workflow, version, status, unique_scope, created_at, '
                f"updated_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (instance.id, instance.run, instance.workflow, instance.version, instance.status, registry_scope,
                 instance.created_at, instance.updated_at, Jsonb(doc)))
    assert store.migrate() == list(range(3, LATEST + 1))
    assert store.migrate() == []
    scopes = dict(store._read(f"SELECT id, unique_scope FROM {store._s}.runs"))
    assert scopes == {"pgm::a": "workflow", "pgm::b::0badcafe": "none", "pgm::c": "workflow"}
    assert {r.id: r.scope for r in store.query()} == scopes                   # the column agrees with the runs
    indexes = {name for (name,) in store._read("SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                                               (store.schema,))}
    assert not indexes & {"runs_unique_workflow", "runs_unique_version", "runs_unique_global"}
    store.close()


RACE_FLOWS = '''
from heph import Done, Unique, WaitForEvent, Workflow


class PgRace(Workflow):
    unique = Unique("pgrace")
    name = "pg_race"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}
'''

RACER = '''
import os, sys, time
sys.path.insert(0, sys.argv[1])
import pg_race_flows  # noqa: F401
import heph
from heph.runtime.storage.postgres import PostgresStorage
from heph.testing.conformance import make_instance

dsn, schema, barrier, mode = sys.argv[2:6]
store = PostgresStorage(dsn, schema=schema, lock_timeout=60)
app = heph.Hephaestus(storage=store)
store.runs("pgrace::k")  # connect before the race
print("ready", flush=True)
while not os.path.exists(barrier):
    time.sleep(0.002)
try:
    if mode == "runtime":
        app.start("pg_race", "k", {})
    else:  # no runtime check at all: only the database stands in the way
        instance = make_instance("pgrace::k", seq=os.getpid(), status="waiting", workflow="pg_race", wait_kind="event")
        with store.session("pgrace::k") as session:
            session.insert(instance)
    print("won", flush=True)
except heph.AlreadyRunning:
    print("lost", flush=True)
'''


@pytest.mark.parametrize("mode", ["runtime", "bare-insert"])
def test_eight_processes_start_one_key_and_exactly_one_wins(tmp_path, mode):
    store = make_store()
    (tmp_path / "pg_race_flows.py").write_text(RACE_FLOWS)
    (tmp_path / "racer.py").write_text(RACER)
    barrier = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), str(tmp_path), DSN, store.schema,
                               str(barrier), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(8)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
        barrier.touch()
        outcomes = [proc.communicate(timeout=60)[0].decode().split() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert sorted(o[-1] for o in outcomes) == ["lost"] * 7 + ["won"]
    assert [r.status for r in store.runs("pgrace::k")] == ["waiting"]
    store.close()


HOLDER = '''
import sys, time
from heph.runtime.storage.postgres import PostgresStorage
store = PostgresStorage(sys.argv[1], schema=sys.argv[2])
with store.session("pgt::held"):
    print("locked", flush=True)
    time.sleep(60)
'''


def test_a_killed_process_never_leaves_an_id_locked(pg, tmp_path):
    (tmp_path / "holder.py").write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "holder.py"), DSN, pg.schema], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(StorageError, match="busy"):
            with pg.session("pgt::held", timeout=0):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with pg.session("pgt::held", timeout=10) as session:  # the server dropped the lock with the connection
            assert session.runs() == []
    finally:
        if proc.poll() is None:
            proc.kill()


# -- several workers ------------------------------------------------------------------------------------


def test_concurrent_tickers_fire_every_timer_exactly_once(pg):
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    count = 120
    for n in range(count):
        instance = make_instance(f"pgtt::n{n}", seq=n, status="waiting", workflow="pgt_timer", due_at=now)
        instance.waits = {"wait": {**instance.waits.pop("pause"), "config": {"duration": 1, "unit": "second"}}}
        with pg.session(instance.id) as session:
            session.insert(instance)
    assert len(pg.due(now)) == count

    results: list[list[dict]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        store = PostgresStorage(DSN, schema=pg.schema)
        try:
            results.append(pg_app(store, ManualClock(now)).tick())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    fired = [a["id"] for batch in results for a in batch]
    assert sorted(fired) == sorted(f"pgtt::n{n}" for n in range(count))     # each exactly once
    assert pg.query(statuses={"waiting"}) == []
    for instance in pg.query():
        assert [h.outcome for h in instance.history if h.step == "wait"].count("resumed") == 1
    assert pg._read(f"SELECT count(*) FROM {pg._s}.runs WHERE claimed_by IS NOT NULL")[0][0] == 0


def test_claims_hand_out_disjoint_batches_and_a_busy_run_comes_back_next_tick(pg):
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    for n in range(5):
        instance = make_instance(f"pgtt::c{n}", seq=n, status="waiting", workflow="pgt_timer", due_at=now)
        with pg.session(instance.id) as session:
            session.insert(instance)
    first = pg.claim_due(now, 3, "one")
    second = pg.claim_due(now, 3, "two")
    assert len(first) == 3 and len(second) == 2 and not set(first) & set(second)
    assert pg.claim_due(now, 3, "three") == []
    assert pg.release_claims("one") == 3 and pg.release_claims("two") == 2
    with pg.session("pgtt::c0"):                                  # busy while tick runs
        assert sorted(ref.id for ref in pg.due_batches(now, 2)) == [f"pgtt::c{n}" for n in range(5)]
    assert len(pg.claim_due(now, 10, "four")) == 5                # every claim was released


def test_wait_for_work_wakes_up_on_a_new_due_time(pg):
    assert pg.wait_for_work(0.05) is False
    soon = datetime.now(timezone.utc) + timedelta(milliseconds=300)

    def later() -> None:
        time.sleep(0.2)
        instance = make_instance("pgtt::soon", status="waiting", workflow="pgt_timer", due_at=soon)
        with pg.session(instance.id) as session:
            session.insert(instance)

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    assert pg.wait_for_work(10) is True                       # woken by NOTIFY, then by the due time
    waited = time.monotonic() - started
    thread.join()
    assert 0.25 <= waited < 3, waited
    assert pg.due(datetime.now(timezone.utc)) == [RunRef("pgtt::soon", pg.runs("pgtt::soon")[0].run)]


def test_migrations_are_idempotent_and_recorded(pg):
    assert pg.migrate() == []
    assert [m["version"] for m in pg.migrations()] == list(range(1, LATEST + 1))
    fresh = PostgresStorage(DSN, schema=new_schema())
    assert fresh.migrations() == []
    with pytest.raises(StorageError, match="heph db migrate"):
        fresh.runs("pgt::x")
    fresh.close()


def test_copy_between_stores_in_python(pg, tmp_path):
    source = JsonFileStorage(tmp_path / "store")
    app = heph.Hephaestus(storage=source, clock=ManualClock(datetime(2026, 3, 1, tzinfo=timezone.utc)))
    app.start(PgtFlow, "p1", {"text": "grüße ✓", "n": [1, 2.5, None]})
    app.start(PgtFragileFlow, "p2", {})
    report = copy_runs(source, pg)
    assert (report["runs"], report["copied"], report["verified"]) == (2, 2, 2)
    assert checksums(pg) == checksums(source)
    assert store_checksum(checksums(pg)) == report["checksum"]
    assert copy_runs(source, pg)["already_present"] == 2      # again: nothing to do


# -- the command line -----------------------------------------------------------------------------------


def pg_project(tmp_path: Path, name: str = "pgproject", dsn: str | None = DSN, schema: str | None = None,
               extra: str = "") -> tuple[Path, str]:
    project = make_project(tmp_path / name)
    schema = schema or new_schema()
    config = (project / "heph.yaml").read_text()
    storage = "storage:\n  type: postgres\n" + (f"  dsn: {dsn}\n" if dsn else "") + f"  schema: {schema}\n" + extra
    before, _, _ = config.partition("storage:")
    (project / "heph.yaml").write_text(before + storage)
    return project, schema


def test_cli_on_postgres_migrate_start_resume_tick_list(tmp_path):
    project, schema = pg_project(tmp_path)
    assert_refused(run_heph("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project),
                   "heph db migrate")
    assert ok_json("db", "migrate", cwd=project)["applied"] == list(range(1, LATEST + 1))
    again = ok_json("db", "migrate", cwd=project)
    assert again["applied"] == [] and again["versions"] == list(range(1, LATEST + 1))
    assert "up to date" in ok("db", "migrate", cwd=project).out

    started = ok_json("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    assert started["status"] == "waiting"
    assert_refused(run_heph("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project),
                   "already running")
    assert ok_json("resume", "paymentflow", "pay1", "payment_confirmed", cwd=project)["status"] == "completed"
    ship = ok_json("start", "fulfilment", "ship1", "--context", "contexts/fulfilment.json", cwd=project)
    assert ship["status"] == "waiting"
    time.sleep(max(0.0, (datetime.fromisoformat(ship["next_due_at"]) - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    assert [f["kind"] for f in ok_json("tick", cwd=project)["fired"]] == ["retry"]
    listed = ok_json("list", cwd=project)["instances"]
    assert {(i["id"], i["status"]) for i in listed} == {("paymentid::pay1", "completed"), ("shipment::ship1", "completed")}
    assert not (project / ".heph").exists()
    assert_refused(run_heph("doctor", cwd=project), "PostgreSQL")

    store = PostgresStorage(DSN, schema=schema)
    assert store.count() == 2
    store.close()


def test_cli_postgres_configuration_is_checked(tmp_path):
    no_dsn, _ = pg_project(tmp_path, "nodsn", dsn=None)
    assert_refused(run_heph("list", cwd=no_dsn), "storage.dsn", "HEPH_DATABASE_URL")
    with_path, _ = pg_project(tmp_path, "withpath", extra="  path: .heph\n")
    assert_refused(run_heph("list", cwd=with_path), "unknown storage key", "path")
    bad_schema, _ = pg_project(tmp_path, "badschema", schema="Robert'); DROP")
    assert_refused(run_heph("list", cwd=bad_schema), "storage.schema")
    unreachable, _ = pg_project(tmp_path, "unreachable", dsn="postgresql://postgres@127.0.0.1:1/test")
    assert_refused(run_heph("list", cwd=unreachable), "cannot connect to PostgreSQL")
    json_project = make_project(tmp_path / "jsononly")
    assert_refused(run_heph("db", "migrate", cwd=json_project), "JSON files")


def test_heph_database_url_selects_postgres_over_heph_yaml(tmp_path, monkeypatch):
    from heph.cli.project import load_project

    json_project = make_project(tmp_path / "envproject")
    monkeypatch.setenv("HEPH_DATABASE_URL", DSN)
    project = load_project(json_project / "heph.yaml")
    assert (project.storage_type, project.dsn, project.schema) == ("postgres", DSN, "heph")
    assert load_project(json_project / "heph.yaml", use_env=False).storage_type == "json"
    monkeypatch.delenv("HEPH_DATABASE_URL")

    no_dsn, schema = pg_project(tmp_path, "envdsn", dsn=None)   # type postgres, the URL from the variable
    env = cli_env(HEPH_DATABASE_URL=DSN)
    ok("db", "migrate", cwd=no_dsn, env=env)
    ok("start", "orderflow", "order42", "--context", "contexts/order42.json", cwd=no_dsn, env=env)
    assert [i["id"] for i in ok_json("list", cwd=no_dsn, env=env)["instances"]] == ["orderid::order42"]
    store = PostgresStorage(DSN, schema=schema)
    assert [r.id for r in store.query()] == ["orderid::order42"]
    store.close()


def test_cli_storage_copy_json_to_postgres_and_back(tmp_path):
    source = make_project(tmp_path / "source")
    ok("start", "orderflow", "order42", "--context", "contexts/order42.json", cwd=source)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=source)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=source)
    ok("resume", "paymentflow", "pay1", "payment_confirmed", cwd=source)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=source)  # a second run
    ok("start", "notificationflow", "welcome", "--context", "contexts/notification.json", cwd=source)

    middle, schema = pg_project(tmp_path, "middle")
    ok("db", "migrate", cwd=middle)
    back = make_project(tmp_path / "back")

    there = ok_json("storage", "copy", "--to", str(middle / "heph.yaml"), cwd=source)
    assert (there["runs"], there["copied"], there["verified"], there["ids"]) == (5, 5, 5, 4)
    home = ok_json("storage", "copy", "--to", str(back), cwd=middle)
    assert (home["runs"], home["copied"], home["verified"]) == (5, 5, 5)
    assert there["checksum"] == home["checksum"]
    assert checksums(JsonFileStorage(source / ".heph")) == checksums(JsonFileStorage(back / ".heph"))
    text = ok("storage", "copy", "--to", str(middle / "heph.yaml"), cwd=source).out
    assert "copied 0 run(s)" in text and "5 already there" in text and "verified 5/5" in text

    ok("resume", "paymentflow", "pay1", "payment_failed", cwd=back)  # now the stores disagree
    assert_refused(run_heph("storage", "copy", "--to", str(middle / "heph.yaml"), cwd=back), "differs")
    assert_refused(run_heph("storage", "copy", "--to", str(source), cwd=source), "same store")
    # the migrated, filled store works from the CLI: the copied reminder's timer is there
    assert "reminderid::user7" in [i["id"] for i in ok_json("list", "--status", "waiting", cwd=middle)["instances"]]
    assert json.loads(run_heph("show", "reminderflow", "user7", "--json", cwd=middle).out)["waits"]["wait"]["kind"] == "timer"


def test_schedules_start_each_slot_once_across_racing_ticks(pg):
    from heph.core import workflow as workflow_module

    class PgBeat(Step):
        events = ["ok"]
        key = "pg_beat"

        def execute(self, instance, config, context):
            return "ok"

    class PgMinutely(Workflow):
        unique = Unique("pgmin")
        name = "pg_minutely"
        start = PgBeat
        transitions = {PgBeat: {"ok": Done}}
        schedules = [heph.Schedule("* * * * *", value="m{slot}", catchup="all")]

    try:
        name = PgMinutely.schedules[0].name("pg_minutely")
        since = datetime(2026, 3, 1, 9, 0, 30, tzinfo=timezone.utc)
        with pg.schedule_session(name) as held:
            held.save({"since": since.isoformat(), "last": None})
        errors: list = []

        def tick() -> None:
            store = PostgresStorage(DSN, schema=pg.schema)
            try:
                heph.Hephaestus(storage=store, clock=ManualClock(since + timedelta(minutes=10))).tick()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                store.close()

        threads = [threading.Thread(target=tick) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        runs = [r for r in pg.query() if r.id.startswith("pgmin::")]
        assert sorted(r.id for r in runs) == [f"pgmin::m20260301{9 + (m // 60):02d}{m % 60:02d}" for m in range(1, 11)]
        assert pg.schedule_states()[name]["last"] == "2026-03-01T09:10:00+00:00"
    finally:
        workflow_module._REGISTRY.pop("pg_minutely", None)
