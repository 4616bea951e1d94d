"""``PostgresStorage`` when the server drops its connections, and with data ``jsonb`` cannot hold.

Connections are killed for real, with ``pg_terminate_backend`` on the backends whose
``application_name`` is the store's (``heph:SCHEMA``): between operations (retried
transparently after reconnecting, with a warning), inside a session (the lock is gone: the
session raises, and a write whose outcome is unknown raises ``MaybeApplied``), under the
listener of ``wait_for_work``, and under a real ``heph worker``. Then the character U+0000,
which ``jsonb`` refuses: ``unstorable`` names where it is, writes refuse it before sending.

Same server and rules as ``test_postgres.py``: ``$HEPH_TEST_DATABASE_URL``, else
postgresql://postgres@127.0.0.1:5432/test; skipped without a server unless ``$CI`` is set;
every test in fresh schemas, dropped at the end.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DSN = os.environ.get("HEPH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
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

from cli_helpers import cli_env, make_project, ok, ok_json  # noqa: E402

import heph  # noqa: E402
from heph import Done, Step, StorageError, Unique, Wait, Workflow  # noqa: E402
from heph.core.instance import HistoryEntry  # noqa: E402
from heph.errors import InvalidContext, MaybeApplied  # noqa: E402
from heph.runtime.clock import ManualClock  # noqa: E402
from heph.runtime.storage import postgres as pg_module  # noqa: E402
from heph.runtime.storage.base import RunRef  # noqa: E402
from heph.runtime.storage.postgres import PostgresStorage  # noqa: E402
from heph.testing.conformance import make_instance  # noqa: E402

_SCHEMAS: list[str] = []
NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


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


def backends(application_name: str) -> list[int]:
    with psycopg.connect(DSN, autocommit=True) as admin:
        return [pid for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,))]


def kill(application_name: str) -> int:
    """Terminate every backend of ``application_name``; return how many, once they are gone."""
    with psycopg.connect(DSN, autocommit=True) as admin:
        pids = [pid for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,))]
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the terminated backends did not go away"
            time.sleep(0.01)
    return len(pids)


def losses(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "heph" and r.levelno == logging.WARNING and "lost the PostgreSQL connection" in r.getMessage()]


def waiting(instance_id: str, seq: int = 0, due_at: datetime = NOW):
    return make_instance(instance_id, seq=seq, status="waiting", workflow="pgf_timer", due_at=due_at)


def two_idle_connections(store: PostgresStorage) -> None:
    """Leave two connections in the store's pool (nested sessions take one each)."""
    with store.session("pgf::pool1"), store.session("pgf::pool2"):
        pass


# -- (a) lost connections between operations --------------------------------------------------------


def test_every_operation_outside_a_session_survives_its_connections_being_killed(pg, caplog):
    caplog.set_level(logging.INFO, logger="heph")
    with pg.session("pgf::a") as session:
        session.insert(waiting("pgf::a"))
    ref = RunRef("pgf::a", pg.runs("pgf::a")[0].run)
    assert backends(pg.application_name), "the store's connections carry application_name heph:SCHEMA"

    operations = [
        ("query", lambda: [r.id for r in pg.query(statuses={"waiting"})], ["pgf::a"]),
        ("runs", lambda: [r.run for r in pg.runs("pgf::a")], [ref.run]),
        ("exists", lambda: pg.exists("pgf::a"), True),
        ("count", pg.count, 1),
        ("due", lambda: pg.due(NOW), [ref]),
        ("claim_due", lambda: pg.claim_due(NOW, 10, "me"), [ref]),
        ("release_claims", lambda: pg.release_claims("me"), 1),
        ("due_batches", lambda: list(pg.due_batches(NOW)), [ref]),
        ("interrupted", pg.interrupted, []),
        ("migrate", pg.migrate, []),
        ("migrations", lambda: len(pg.migrations()), pg_module.LATEST),
    ]
    for name, operation, expected in operations:
        two_idle_connections(pg)
        caplog.clear()
        assert kill(pg.application_name) >= 2, name
        assert operation() == expected, name
        assert len(losses(caplog)) == 1, (name, losses(caplog))       # each loss said once
        assert "; reconnecting" in losses(caplog)[0]

    two_idle_connections(pg)
    kill(pg.application_name)
    with pg.session("pgf::a") as session:                            # a new session: the lock is taken again
        (run,) = session.runs()
        run.status = "cancelled"
        session.update(run)
    assert pg.runs("pgf::a")[0].status == "cancelled"
    assert pg._read(f"SELECT count(*) FROM {pg._s}.runs WHERE claimed_by IS NOT NULL")[0][0] == 0


def test_reconnecting_gives_up_after_the_bound_with_one_line(monkeypatch):
    dsn = DSN.replace("postgres@", "postgres:hunter2@", 1) if "postgres@" in DSN else DSN
    store = PostgresStorage(dsn, schema=new_schema(), reconnect_timeout=1.0)
    store.migrate()
    try:
        store._pool.dsn = "postgresql://postgres@127.0.0.1:1/test"    # the server is gone for good
        kill(store.application_name)
        started = time.monotonic()
        with pytest.raises(StorageError, match="cannot reach PostgreSQL at") as caught:
            store.runs("pgf::gone")
        took = time.monotonic() - started
        assert 1.0 <= took < 5, took                                  # backed off until the bound, no longer
        message = str(caught.value)
        assert "\n" not in message and "hunter2" not in message and "Connection refused" in message, message
        store._pool.dsn = dsn                                         # the server is back
        assert store.runs("pgf::gone") == []
    finally:
        store.close()


def test_a_store_that_never_connected_fails_at_once():
    store = PostgresStorage("postgresql://postgres@127.0.0.1:1/test", schema=new_schema())
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL at") as caught:
        store.runs("pgf::x")
    assert time.monotonic() - started < 5 and "\n" not in str(caught.value)


def test_a_failing_set_up_statement_is_a_storage_error_with_one_line(monkeypatch):
    monkeypatch.setattr(pg_module, "_SETUP_SQL", "SET synchronous_commit TO sometimes")
    store = PostgresStorage(DSN, schema=new_schema())
    with pytest.raises(StorageError, match="cannot set up a connection to PostgreSQL") as caught:
        store.runs("pgf::x")
    assert "\n" not in str(caught.value) and "synchronous_commit" in str(caught.value)
    store.close()


# -- (b) lost connections inside a session -------------------------------------------------------------


def test_a_session_that_loses_its_connection_raises_and_the_next_session_works(pg):
    with pg.session("pgf::b") as session:
        session.insert(waiting("pgf::b"))
        assert kill(pg.application_name) >= 1
        changed = waiting("pgf::b")
        changed.status = "cancelled"
        with pytest.raises(StorageError) as caught:                   # never written without the lock
            session.update(changed)
        assert not isinstance(caught.value, MaybeApplied)             # known before sending: nothing written
        message = str(caught.value)
        assert "\n" not in message and "lock" in message and "nothing was written" in message, message
        with pytest.raises(StorageError, match="lock"):
            session.runs()                                            # the session stays over
    assert [r.status for r in pg.runs("pgf::b")] == ["waiting"]
    with pg.session("pgf::b", timeout=1) as session:                  # the lock went with the connection
        (run,) = session.runs()
        run.status = "cancelled"
        session.update(run)
    assert [r.status for r in pg.runs("pgf::b")] == ["cancelled"]


def test_a_read_inside_a_session_that_loses_its_connection_raises(pg):
    with pytest.raises(StorageError, match="during the session of pgf::r") as caught:
        with pg.session("pgf::r") as session:
            kill(pg.application_name)
            session.runs()
    assert "\n" not in str(caught.value)
    with pg.session("pgf::r", timeout=1) as session:
        assert session.runs() == []


def test_a_connection_lost_during_a_write_raises_maybe_applied(pg):
    # a trigger that makes the insert slow, so that the connection dies while it runs
    pg._with_conn(lambda conn: conn.execute(
        f"CREATE FUNCTION {pg._s}.pgf_slow() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$"))
    pg._with_conn(lambda conn: conn.execute(
        f"CREATE TRIGGER pgf_slow BEFORE INSERT ON {pg._s}.runs FOR EACH ROW EXECUTE FUNCTION {pg._s}.pgf_slow()"))

    def killer() -> None:
        deadline = time.monotonic() + 10
        with psycopg.connect(DSN, autocommit=True) as admin:
            while time.monotonic() < deadline:
                pids = [p for (p,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'INSERT%%' "
                    "AND state = 'active'", (pg.application_name,))]
                if pids:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(MaybeApplied) as caught:
            with pg.session("pgf::w") as session:
                session.insert(waiting("pgf::w"))
    finally:
        thread.join()
    error = caught.value
    assert error.instance_id == "pgf::w" and error.path == f"{pg.schema}.runs" and "lost" in error.reason
    assert "\n" not in str(error) and "may have been applied" in str(error)
    pg._with_conn(lambda conn: conn.execute(f"DROP TRIGGER pgf_slow ON {pg._s}.runs"))
    with pg.session("pgf::w", timeout=1) as session:                  # the lock is free again
        assert session.runs() == []                                   # (this write was in fact rolled back)


def test_taking_a_lock_is_retried_after_a_lost_connection(pg, caplog):
    # the holder is not killed with the waiter (its lock, released first, would go to the doomed waiter)
    holder = PostgresStorage(psycopg.conninfo.make_conninfo(DSN, application_name="heph-test-holder"),
                             schema=pg.schema)
    got: list[object] = []
    try:
        with holder.session("pgf::l"):
            def wait_for_it() -> None:
                try:
                    with pg.session("pgf::l", timeout=10) as session:
                        got.append(session.runs())
                except BaseException as exc:  # noqa: BLE001
                    got.append(exc)

            thread = threading.Thread(target=wait_for_it)
            thread.start()
            deadline = time.monotonic() + 10
            while not [p for p in backends(pg.application_name)]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.2)                                           # waiting in pg_advisory_lock
            kill(pg.application_name)
            time.sleep(0.3)
        thread.join(15)
    finally:
        holder.close()
    assert got == [[]]                                                # reconnected, waited again, got it
    assert len(losses(caplog)) == 1


# -- LISTEN/NOTIFY --------------------------------------------------------------------------------


def test_a_lost_listener_reconnects_and_says_there_may_be_work(pg, caplog):
    assert pg.wait_for_work(0.05) is False                            # listening now
    answers: list[object] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            answers.append(pg.wait_for_work(10))
        except BaseException as exc:  # noqa: BLE001
            answers.append(exc)
        answers.append(time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert kill(pg.application_name) >= 1                             # the listener (and an idle one)
    thread.join(15)
    assert answers[0] is True and answers[1] < 5, answers
    assert len(losses(caplog)) == 1

    soon = datetime.now(timezone.utc) + timedelta(milliseconds=300)
    def later() -> None:
        time.sleep(0.2)
        with pg.session("pgf::soon") as session:
            session.insert(waiting("pgf::soon", due_at=soon))

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    assert pg.wait_for_work(10) is True                               # listening again: woken by the new timer
    thread.join()
    assert time.monotonic() - started < 3


# -- (c) a real worker -----------------------------------------------------------------------------------


def pg_project(tmp_path: Path) -> tuple[Path, str]:
    project = make_project(tmp_path / "pgfaults")
    schema = new_schema()
    before, _, _ = (project / "heph.yaml").read_text().partition("storage:")
    (project / "heph.yaml").write_text(before + f"storage:\n  type: postgres\n  dsn: {DSN}\n  schema: {schema}\n")
    return project, schema


def test_a_worker_survives_its_backends_being_killed_and_still_fires_timers(tmp_path):
    project, schema = pg_project(tmp_path)
    ok("db", "migrate", cwd=project)
    name = f"heph:{schema}"
    proc = subprocess.Popen([sys.executable, "-m", "heph", "worker", "--interval", "0.1"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        for _ in range(2):
            deadline = time.monotonic() + 20
            while not backends(name):                                 # connected (listening, ticking)
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            time.sleep(0.3)
            killed = set(backends(name))
            kill(name)
            deadline = time.monotonic() + 20
            while not set(backends(name)) - killed:                   # and back again
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None
        start = ok_json("start", "fulfilment", "ship1", "--context", "contexts/fulfilment.json", cwd=project)
        assert start["status"] == "waiting"                           # the printer jammed once; a retry in 1 s
        while not any("shipment::ship1" in line for line in seen):
            seen.append(lines.get(timeout=30))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    err = proc.stderr.read()
    assert proc.returncode == 0, (seen, err)
    assert "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    lost = [line for line in warnings if "lost the PostgreSQL connection" in line]
    assert 2 <= len(lost) <= 4, warnings                              # each loss said once
    assert lost == warnings, warnings                                 # and no tick failed
    assert ok_json("show", "fulfilment", "ship1", cwd=project)["status"] == "completed"


# -- (d) U+0000 ----------------------------------------------------------------------------------------------


def test_unstorable_names_where_a_nul_character_is(pg):
    clean = make_instance("pgf::n", status="waiting", workflow="pgf_timer", due_at=NOW)
    assert pg.unstorable(clean) is None
    literal = make_instance("pgf::n")
    literal.context.initial["text"] = "a backslash and u0000: \\u0000"      # not the character
    assert pg.unstorable(literal) is None

    def with_(change) -> str | None:
        instance = make_instance("pgf::n")
        change(instance)
        return pg.unstorable(instance)

    prefix = "PostgreSQL cannot store the character U+0000 (at "
    assert with_(lambda i: i.context.initial.update(note="a\x00b")) == prefix + "context.initial.note)"
    assert with_(lambda i: i.context.steps.update(first={"deep": [1, {"x": "\x00"}]})) == \
        prefix + "context.steps.first.deep[1].x)"
    assert with_(lambda i: i.context.initial.update({"a\x00b": 1})) == prefix + "context.initial['a\\x00b'])"
    assert with_(lambda i: i.history.append(HistoryEntry("second", "failed", error={"message": "bad\x00"}))) == \
        prefix + "history[2].error.message)"
    assert with_(lambda i: setattr(i, "error", {"type": "X", "message": "\x00"})) == prefix + "error.message)"
    assert with_(lambda i: i.runtime_metadata.update(k=("t", "\x00"))) == prefix + "runtime_metadata.k[1])"
    assert heph.MemoryStorage().unstorable(literal) is None


def test_writes_refuse_a_nul_character_before_sending_it(pg):
    bad = make_instance("pgf::nul", status="waiting", workflow="pgf_timer", due_at=NOW)
    bad.context.steps["first"] = {"note": "a\x00b"}
    with pg.session("pgf::nul") as session:
        with pytest.raises(StorageError, match=r"U\+0000 \(at context.steps.first.note\); nothing was written"):
            session.insert(bad)
        good = make_instance("pgf::nul", status="waiting", workflow="pgf_timer", due_at=NOW)
        session.insert(good)                                          # the session goes on
        bad.run = good.run
        with pytest.raises(StorageError, match=r"U\+0000"):
            session.update(bad)
    assert pg.runs("pgf::nul") == [good]
    literal = make_instance("pgf::lit")
    literal.context.initial["text"] = "\\u0000"
    with pg.session("pgf::lit") as session:
        session.insert(literal)
    assert pg.runs("pgf::lit")[0].context.initial["text"] == "\\u0000"


class PgfNul(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok", {"note": "before\x00after"}


class PgfNulFlow(Workflow):
    unique = Unique("pgfnul")
    name = "pgf_nul"
    start = PgfNul
    transitions = {PgfNul: {"ok": Done}}


class PgfNulError(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        raise ValueError("bad\x00input")


class PgfNulErrorFlow(Workflow):
    unique = Unique("pgfnulerr")
    name = "pgf_nul_error"
    start = PgfNulError
    transitions = {PgfNulError: {"ok": Done}}


class PgfLater(Workflow):
    unique = Unique("pgflater")
    name = "pgf_later"
    start = (Wait, {"duration": 1, "unit": "second"})
    transitions = {Wait: {"timeout": PgfNul}, PgfNul: {"ok": Done}}


def test_a_step_returning_a_nul_character_fails_instead_of_running_forever(pg):
    clock = ManualClock(NOW)
    app = heph.Hephaestus(storage=pg, clock=clock)
    app.start(PgfNulFlow, "one", {})
    failed = app.get("pgfnul::one")
    assert failed.status == "failed" and "U+0000" in failed.error["message"], failed.error
    assert "context.steps.pgf_nul.note" in failed.error["message"]

    app.start(PgfLater, "two", {})                                    # the same step, run by a tick
    clock.advance(seconds=1)
    app.tick()
    assert app.get("pgflater::two").status == "failed"
    assert app.tick() == [] and pg.due(clock.now() + timedelta(days=1)) == []


def test_a_start_context_with_a_nul_character_is_refused_and_nothing_is_written(pg):
    app = heph.Hephaestus(storage=pg, clock=ManualClock(NOW))
    with pytest.raises((InvalidContext, StorageError), match=r"U\+0000") as caught:
        app.start(PgfNulFlow, "ctx", {"text": "a\x00b"})
    assert "\n" not in str(caught.value)
    assert pg.runs("pgfnul::ctx") == []


def test_a_step_failing_with_a_nul_character_in_its_message_fails_cleanly(pg):
    app = heph.Hephaestus(storage=pg, clock=ManualClock(NOW))
    app.start(PgfNulErrorFlow, "one", {})
    failed = app.get("pgfnulerr::one")
    assert failed.status == "failed" and "\x00" not in failed.error["message"], failed.error
    assert pg.unstorable(failed) is None
