"""``PostgresStorage``: every run as one row of a PostgreSQL table, for many workers on many hosts.

Needs psycopg 3 (``pip install 'heph[postgres]'``), imported on first use. Tables live in
one schema (default ``heph``) created by ``heph db migrate`` (``PostgresStorage.migrate()``)::

    runs(id, run, workflow, version, status, unique_scope, next_due_at, claimed_until,
         claimed_by, created_at, updated_at, doc jsonb)  primary key (id, run)
    schema_migrations(version, applied_at)

``doc`` is the instance's ``Instance.to_dict()`` document; the other columns are copies of
its fields that the indexes use.

Locking and durability
----------------------
A session holds a *session-level* advisory lock on its own connection:
``pg_advisory_lock(hashtextextended(id, seed))`` where ``seed`` is derived from the schema
name, so two heph schemas in one database never block each other. The connection is in
autocommit mode, so

- the lock is held for the whole session, including the steps that run between writes
  (two processes never run one instance's steps at once), and is released by
  ``pg_advisory_unlock`` at the end of the session, or by the server when the connection
  dies with its process (a crashed worker never leaves an instance locked, like a file lock);
- every ``insert``/``update`` is one statement, committed before it returns (durable with
  PostgreSQL's default ``synchronous_commit = on``, which each connection sets explicitly);
  a crash leaves either the old or the new row, never a mix.

The alternative, one transaction per session around ``pg_advisory_xact_lock``, would make
the writes of a session durable only at its end: a crash after three steps would lose all
three, breaking the contract that each write is durable when it returns. ``Session.runs()``
is therefore a plain ``SELECT`` (a ``FOR UPDATE`` row lock would end with its own
autocommitted statement; the advisory lock is what excludes other sessions).

A session waits for the lock with PostgreSQL's ``lock_timeout`` set to ``timeout`` (a
queued, fair wait); ``timeout=0`` tries once (``pg_try_advisory_lock``). Both raise
``InstanceBusy`` (a ``StorageError``, "busy") when the id is held. If the network between a
worker and the server breaks, the server frees the lock once it notices the dead connection
(set TCP keepalives in the DSN, e.g. ``?keepalives_idle=30``); the old worker cannot write any
more, since its writes went through that connection (see "Lost connections").

``session(..., must_exist=True)`` is accepted and changes nothing: a PostgreSQL session
creates nothing (no row, no file), so a session on an id without runs simply sees
``runs() == []`` and the caller reports the id as not found.

Uniqueness
----------
The database enforces the one rule of ``heph.core.uniqueness.conflicts`` by itself, whatever
the writing process imported: every row stores ``unique_scope``, copied from
``instance.scope`` (the scope of its workflow when the run was created), and
``BEFORE INSERT``/``BEFORE UPDATE`` row triggers (migration 3) check every write that can
create a conflict: the insert of an active row (pending, running, waiting), and an update that
makes a row active or changes its id, run, workflow, version or scope while it is active
(an update of claims, or of an active run's document between steps, cannot; it is not
checked, and never waits for the id's lock):

1. the check takes ``pg_advisory_xact_lock(hashtextextended(id, seed))``, the key of the session
   lock. heph's sessions already hold that lock (advisory locks are re-entrant for the
   holder), so they never wait; a writer that skipped heph's session waits for the session
   holding the id, and two such writers are serialised until their transactions end;
2. it looks for another active row of the id that ``heph_conflicts`` (the rule in SQL, a
   function of the schema) says the new row conflicts with, and raises ``unique_violation``
   with constraint ``heph_runs_unique`` and the blocker's facts as JSON detail, which heph
   turns into ``AlreadyRunning`` (nothing is written).

So ``global`` holds an id across every workflow (whatever the other run's scope), ``none``
runs of one id always conflict, and otherwise runs of one workflow conflict unless both are
``version``-scoped with different versions. The check reads committed rows with a fresh
snapshot after taking the lock, which needs ``READ COMMITTED`` (heph's connections set it) or
``SERIALIZABLE``; a ``REPEATABLE READ`` transaction making such a write is refused. Each
checked write holds one advisory lock until its transaction ends: a bulk load of many active
rows in one transaction should commit every few thousand rows (``max_locks_per_transaction``).

Migration 3 also sets ``unique_scope`` of rows written before runs carried a scope to what
their documents read as (``heph.core.uniqueness.scope_of_id``: ``none`` for a suffixed id,
else ``workflow``), so the database and ``Instance.scope`` agree on every stored run, and
drops the per-scope partial unique indexes of migration 1 (they could not see across scopes).

Timers and several workers
--------------------------
``due(now)`` is a plain indexed read (``next_due_at <= now``); it does not skip ids whose
advisory lock is held (that means reading ``pg_locks``, and the holder may be gone by the
time the caller gets there: callers re-check under a session anyway). For several
``heph worker`` processes, ``claim_due(now, limit, owner)`` hands out *disjoint* batches:
one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`` stamps ``claimed_until`` (a
lease of ``claim_ttl`` seconds) and ``claimed_by`` on the rows it returns, so concurrent
workers take different rows without waiting for each other. Every write of a run clears
its claim. The runtime's ``tick`` iterates ``due_batches(now)`` when the store has it:
batch after batch of claims, and at the end the claims it did not use (runs skipped as
busy) are released, so the next tick gets them (a worker that dies holding claims delays
those timers by at most ``claim_ttl``). No timer fires twice whatever the claims do:
firing happens under the id's session, after re-reading the row.

``claim_due``, ``release_claims``, ``due_batches`` and ``wait_for_work`` override the
single-host defaults of ``heph.runtime.storage.base.Storage``.

``wait_for_work(timeout)`` lets ``heph worker`` sleep until work may be there: a trigger
(migration 2) sends ``NOTIFY`` when a write sets a due time, and the worker wakes when the
earliest known due time arrives instead of polling.

Lost connections
----------------
The server may end a connection at any time (``pg_terminate_backend``, a restart, a failover,
a network break). Outside a session, every operation (``runs``, ``query``, ``due``,
``claim_due``, ``release_claims``, ``interrupted``, ``migrate``, taking a session's lock, ...)
is safe to run again, so a lost connection is retried transparently on a new one: the loss is
logged once as a warning on logger ``heph`` (``lost the PostgreSQL connection (...);
reconnecting``), the first retry is immediate, then attempts back off from 0.1 s doubling to
5 s; after ``reconnect_timeout`` seconds (default 30) without success the operation raises
``StorageError`` (``cannot reach PostgreSQL at DSN: ...``, one line). A store that has never
connected fails at once instead (a wrong DSN is not an outage). Idle pooled connections are
checked with one ``poll`` before use, so those the server ended while idle are dropped without
a round trip. Each connection attempt is limited to 10 s (``connect_timeout``) unless the DSN
or ``$PGCONNECT_TIMEOUT`` sets one. Connections carry ``application_name`` ``heph:SCHEMA``
(unless the DSN or ``$PGAPPNAME`` sets one), which ``pg_stat_activity`` shows.

Inside a session a lost connection is never retried: the advisory lock went with it, so the
session raises ``StorageError`` and every later call of it does too (nothing is written
without the lock). A write whose connection is seen dead before it is sent raises
``StorageError`` saying nothing was written; a connection lost while a write was on the
wire raises ``MaybeApplied`` (the server may have committed it before the answer was lost).
The caller (the runtime) re-reads under a new session.

``claim_due`` that loses its answer may have claimed rows its caller never saw; after any
loss ``due_batches`` releases every claim of its owner, not only those it got.
``wait_for_work`` reconnects its listening connection the same way and then returns True
(NOTIFYs were missed meanwhile: there may be work).

Limits
------
``jsonb`` cannot hold the character U+0000 in a string (a key or a value).
``unstorable(instance)`` says so and names the first place (``PostgreSQL cannot store the
character U+0000 (at context.steps.note.text)``), so the runtime can fail the step that
produced it; ``insert``/``update`` refuse such a document with ``StorageError`` before
sending anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import threading
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, NoReturn

from heph.core.ids import check_id
from heph.core.instance import STATUSES, Instance
from heph.errors import AlreadyRunning, InstanceBusy, MaybeApplied, StorageError
from heph.runtime.storage.base import RunRef, ScheduleSession, Session, Storage

log = logging.getLogger("heph")

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}\Z")
_ACTIVE_SQL = "status IN ('pending', 'running', 'waiting')"
_UNIQUE_CONSTRAINT = "heph_runs_unique"

# Numbered, idempotent migrations. ``{s}`` is the (validated, quoted) schema name.
MIGRATIONS: list[tuple[int, str]] = [
    (1, f"""
CREATE TABLE IF NOT EXISTS {{s}}.runs (
    id            text        NOT NULL,
    run           text        NOT NULL,
    workflow      text        NOT NULL,
    version       integer     NOT NULL,
    status        text        NOT NULL,
    unique_scope  text        NOT NULL DEFAULT 'workflow',
    next_due_at   timestamptz NULL,
    claimed_until timestamptz NULL,
    claimed_by    text        NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    doc           jsonb       NOT NULL,
    CONSTRAINT runs_pkey PRIMARY KEY (id, run)
);
CREATE INDEX IF NOT EXISTS runs_status ON {{s}}.runs (status);
CREATE INDEX IF NOT EXISTS runs_next_due_at ON {{s}}.runs (next_due_at) WHERE next_due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_workflow_status ON {{s}}.runs (workflow, status);
CREATE INDEX IF NOT EXISTS runs_run ON {{s}}.runs (run DESC);
CREATE UNIQUE INDEX IF NOT EXISTS runs_unique_workflow ON {{s}}.runs (id, workflow)
    WHERE {_ACTIVE_SQL} AND unique_scope = 'workflow';
CREATE UNIQUE INDEX IF NOT EXISTS runs_unique_version ON {{s}}.runs (id, workflow, version)
    WHERE {_ACTIVE_SQL} AND unique_scope = 'version';
CREATE UNIQUE INDEX IF NOT EXISTS runs_unique_global ON {{s}}.runs (id)
    WHERE {_ACTIVE_SQL} AND unique_scope = 'global';
"""),
    (2, """
CREATE OR REPLACE FUNCTION {s}.heph_notify_due() RETURNS trigger LANGUAGE plpgsql AS $heph$
BEGIN
    IF NEW.next_due_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.next_due_at IS DISTINCT FROM NEW.next_due_at) THEN
        PERFORM pg_notify('heph_due_' || TG_TABLE_SCHEMA, extract(epoch FROM NEW.next_due_at)::text);
    END IF;
    RETURN NULL;
END
$heph$;
DROP TRIGGER IF EXISTS runs_notify_due ON {s}.runs;
CREATE TRIGGER runs_notify_due AFTER INSERT OR UPDATE ON {s}.runs
    FOR EACH ROW EXECUTE FUNCTION {s}.heph_notify_due();
"""),
    (3, """
-- Uniqueness: the one rule of heph/core/uniqueness.py (``conflicts``), in SQL. Keep the two in
-- step: tests/storage/test_postgres.py checks they agree on every combination.
CREATE OR REPLACE FUNCTION {s}.heph_conflicts(
    a_status text, a_scope text, a_workflow text, a_version integer,
    b_status text, b_scope text, b_workflow text, b_version integer
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $heph$
    SELECT a_status IN ('pending', 'running', 'waiting') AND b_status IN ('pending', 'running', 'waiting')
       AND (a_scope IN ('global', 'none') OR b_scope IN ('global', 'none')
            OR (a_workflow = b_workflow
                AND (a_scope = 'workflow' OR b_scope = 'workflow' OR a_version = b_version)))
$heph$;

CREATE OR REPLACE FUNCTION {s}.heph_check_unique() RETURNS trigger LANGUAGE plpgsql AS $heph$
DECLARE
    other record;
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'heph: active runs in %.runs are written in READ COMMITTED or SERIALIZABLE, '
                        'not REPEATABLE READ (the uniqueness check must see committed rows)', TG_TABLE_SCHEMA
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- the key of heph's session lock of the id: heph's sessions hold it already (re-entrant)
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.id, {seed}));
    SELECT r.workflow, r.version, r.status INTO other FROM {s}.runs AS r
     WHERE r.id = NEW.id AND r.run <> NEW.run AND r.status IN ('pending', 'running', 'waiting')
       AND {s}.heph_conflicts(NEW.status, NEW.unique_scope, NEW.workflow, NEW.version,
                              r.status, r.unique_scope, r.workflow, r.version)
     ORDER BY r.run DESC LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % of % conflicts with its active run of % v% (%)',
                        NEW.run, NEW.id, other.workflow, other.version, other.status
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'heph_runs_unique',
                  DETAIL = json_build_object('instance_id', NEW.id, 'workflow', other.workflow,
                                             'version', other.version, 'status', other.status)::text;
    END IF;
    RETURN NEW;
END
$heph$;

-- rows written before runs carried a scope: the scope their documents read as
UPDATE {s}.runs SET unique_scope = COALESCE(doc->>'scope',
        CASE WHEN length(id) - length(replace(id, '::', '')) = 4 THEN 'none' ELSE 'workflow' END)
 WHERE unique_scope IS DISTINCT FROM COALESCE(doc->>'scope',
        CASE WHEN length(id) - length(replace(id, '::', '')) = 4 THEN 'none' ELSE 'workflow' END);

-- Checked: every insert of an active row, and every update that makes a row active or changes
-- what the rule reads of an active one. Other updates (claims, a run's document between steps)
-- cannot create a conflict, and must not wait for the id's session lock (claim_due runs while
-- sessions hold their ids).
DROP TRIGGER IF EXISTS runs_unique_insert ON {s}.runs;
CREATE TRIGGER runs_unique_insert BEFORE INSERT ON {s}.runs
    FOR EACH ROW WHEN (NEW.status IN ('pending', 'running', 'waiting'))
    EXECUTE FUNCTION {s}.heph_check_unique();
DROP TRIGGER IF EXISTS runs_unique_update ON {s}.runs;
CREATE TRIGGER runs_unique_update BEFORE UPDATE ON {s}.runs
    FOR EACH ROW WHEN (NEW.status IN ('pending', 'running', 'waiting')
                       AND (OLD.status NOT IN ('pending', 'running', 'waiting')
                            OR (OLD.id, OLD.run, OLD.workflow, OLD.version, OLD.unique_scope)
                               IS DISTINCT FROM (NEW.id, NEW.run, NEW.workflow, NEW.version, NEW.unique_scope)))
    EXECUTE FUNCTION {s}.heph_check_unique();
DROP INDEX IF EXISTS {s}.runs_unique_workflow;
DROP INDEX IF EXISTS {s}.runs_unique_version;
DROP INDEX IF EXISTS {s}.runs_unique_global;
"""),
    (4, """
-- Busy instances (SPEC §6). ``busy``: what the holder of an id's session lock runs (a note per
-- id, written by that backend; unlogged: it means nothing once the lock is gone, and ``busy()``
-- only believes the row of the backend holding the lock). ``mail``: messages queued for a busy
-- id (``post``), applied and deleted by the next holder of its session.
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.busy (
    id        text        PRIMARY KEY,
    backend   integer     NOT NULL,
    note      jsonb       NOT NULL,
    noted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.mail (
    id          text        NOT NULL,
    message_id  text        NOT NULL,
    message     jsonb       NOT NULL,
    posted_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mail_pkey PRIMARY KEY (id, message_id)
);
"""),
    (5, """
-- Schedules (SPEC §10): one row per schedule, its state; the row's session is an advisory lock
-- on 'schedule:' || name (``schedule_session``).
CREATE TABLE IF NOT EXISTS {s}.schedules (
    name        text        PRIMARY KEY,
    state       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"""),
]
LATEST = MIGRATIONS[-1][0]

# Migration 1's per-scope indexes (a schema not yet at migration 3 still has them).
_UNIQUE_INDEXES = {"runs_unique_workflow", "runs_unique_version", "runs_unique_global"}


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StorageError(
            "PostgreSQL storage needs psycopg 3: pip install 'heph[postgres]' (or 'psycopg[binary]')"
        ) from None
    return psycopg


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# Reconnecting after a lost connection (see "Lost connections" in the module docstring).
RECONNECT_TIMEOUT = 30.0  # seconds of failed reconnecting before an operation gives up
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0  # seconds between attempts: 0.1, 0.2, 0.4, ... 5, 5, ...
CONNECT_TIMEOUT = 10  # seconds per connection attempt, unless the DSN or $PGCONNECT_TIMEOUT sets one
# SQLSTATEs of a connection the server ends: admin_shutdown (pg_terminate_backend, a fast
# shutdown), crash_shutdown, cannot_connect_now; class 08 is connection_exception.
_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# Set on every connection: durable commits; READ COMMITTED, which the uniqueness trigger needs.
_SETUP_SQL = "SET synchronous_commit TO on; SET default_transaction_isolation TO 'read committed'"


def _is_lost(conn: Any, exc: BaseException) -> bool:
    """Whether ``exc``, raised by a statement on ``conn``, means that the connection is gone (the
    server ended it, restarted, or the network broke) rather than that the statement failed."""
    if conn is not None and conn.closed:  # psycopg closes a broken connection
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state in _GONE_SQLSTATES or state.startswith("08")


def _readable(fd: int, timeout: float = 0.0) -> bool:
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return bool(select.select([fd], [], [], timeout)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(int(timeout * 1000)))


def _dead(conn: Any) -> str | None:
    """Why an *idle* connection is known to be dead, else None. A connection the server ended
    (``pg_terminate_backend``, a restart) has said so, or closed its socket: the socket is
    readable although nothing was asked. One ``poll``, no round trip; only when something did
    arrive (the server's last words, or a rare notice) it waits up to 0.1 s for the end of the
    stream, which follows the last words. A live connection stays alive (the notice is read)."""
    if conn.closed:
        return "the connection is closed"
    try:
        wait = 0.0
        for _ in range(3):  # the server's last message, then the end of the stream
            if not _readable(conn.fileno(), wait):
                break
            conn.pgconn.consume_input()
            wait = 0.05
    except Exception as exc:  # noqa: BLE001 - psycopg's or the socket's error: dead either way
        return _first_line(exc)
    if conn.pgconn.status != _psycopg().pq.ConnStatus.OK:
        return "the server closed the connection"
    return None


class _ConnectFailed(StorageError):
    """No connection could be made. To a store that was connected before, a lost connection
    (retried); to one that never was, the caller's error (a wrong DSN fails at once)."""

    reason: str = ""


class _Pool:
    """A few idle connections kept for reuse (autocommit); one per session or read while in use."""

    def __init__(self, dsn: str, max_idle: int = 4, application_name: str = "heph"):
        self.dsn = dsn
        self.max_idle = max_idle
        self.application_name = application_name
        self.connected = False  # a connection was made: failing to make another is then a loss
        self._options: dict[str, Any] | None = None
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _forked(self) -> None:
        # A child process must not use (or close) the parent's sockets: forget them.
        if os.getpid() != self._pid:
            _ORPHANS.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()

    def _connect_options(self) -> dict[str, Any]:
        if self._options is None:
            psycopg = _psycopg()
            from psycopg.conninfo import conninfo_to_dict

            try:
                given = conninfo_to_dict(self.dsn)
            except psycopg.Error as exc:
                raise StorageError(
                    f"cannot connect to PostgreSQL at {redact(self.dsn)}: invalid DSN ({_first_line(exc)})") from None
            # application_name only if the DSN (or $PGAPPNAME) sets none: pg_stat_activity shows whose it is
            options: dict[str, Any] = {"autocommit": True, "fallback_application_name": self.application_name}
            if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
                options["connect_timeout"] = CONNECT_TIMEOUT
            self._options = options
        return self._options

    def connect(self):
        """A new connection, set up (``_SETUP_SQL``). ``_ConnectFailed`` if none can be made;
        ``StorageError`` if the server refuses the set-up."""
        psycopg = _psycopg()
        options = self._connect_options()
        try:
            conn = psycopg.connect(self.dsn, **options)
        except psycopg.Error as exc:
            raise _ConnectFailed(f"cannot connect to PostgreSQL at {redact(self.dsn)}: {_first_line(exc)}",
                                 reason=_first_line(exc)) from None
        try:
            conn.execute(_SETUP_SQL)
        except psycopg.Error as exc:
            lost = _is_lost(conn, exc)
            self.discard(conn)
            if lost:
                raise _ConnectFailed(f"cannot connect to PostgreSQL at {redact(self.dsn)}: {_first_line(exc)}",
                                     reason=_first_line(exc)) from None
            raise StorageError(f"cannot set up a connection to PostgreSQL at {redact(self.dsn)} "
                               f"({_SETUP_SQL}): {_first_line(exc)}") from None
        conn._heph_lock_timeout = None
        self.connected = True
        return conn

    def get(self) -> tuple[Any, str | None]:
        """A connection (an idle one, else a new one), and why idle ones were found dead (the
        server ended them while they were idle: a lost connection to report), or None."""
        dead = None
        while True:
            with self._lock:
                self._forked()
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self.connect(), dead
            why = _dead(conn)
            if why is None:
                return conn, dead
            self.discard(conn)
            dead = why

    def put(self, conn) -> None:
        psycopg = _psycopg()
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.discard(conn)
            return
        with self._lock:
            self._forked()
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    @staticmethod
    def discard(conn) -> None:
        if conn is None:
            return
        with contextlib.suppress(Exception):  # already broken
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._forked()
            idle, self._idle = self._idle, []
        for conn in idle:
            self.discard(conn)


_ORPHANS: list[Any] = []  # connections inherited over fork: never used, never closed by the child


class _PgSession(Session):
    """One id's session: its connection holds the id's advisory lock. Once that connection is
    lost, so is the lock: every later call raises ``StorageError`` (nothing is retried)."""

    def __init__(self, store: PostgresStorage, conn, instance_id: str):
        self._store = store
        self._conn = conn
        self._id = instance_id
        self.lost: str | None = None  # why the connection, and the lock with it, is gone
        self.announced = False  # this backend wrote the id's row in ``busy``

    def runs(self) -> list[Instance]:
        rows = self._execute(
            f"SELECT run, doc FROM {self._store._s}.runs WHERE id = %s ORDER BY run DESC", (self._id,)
        ).fetchall()
        return [self._store._load(self._id, run, doc) for run, doc in rows]

    def insert(self, instance: Instance) -> None:
        self._check(instance)
        self._store._write(self, instance, insert=True)

    def update(self, instance: Instance) -> None:
        self._check(instance)
        self._store._write(self, instance, insert=False)

    def announce(self, note: dict) -> None:
        """Upsert the id's row in ``busy`` as this backend's (a note that cannot be written is
        only not shown; a lost connection shows at the next write)."""
        from psycopg.types.json import Jsonb

        if self.lost is not None:
            return
        try:
            self._conn.execute(
                f"INSERT INTO {self._store._s}.busy (id, backend, note) VALUES (%s, pg_backend_pid(), %s) "
                f"ON CONFLICT (id) DO UPDATE SET backend = EXCLUDED.backend, note = EXCLUDED.note, noted_at = now()",
                (self._id, Jsonb(note)))
            self.announced = True
        except _psycopg().Error as exc:
            if _is_lost(self._conn, exc):
                self.lost = _first_line(exc)
            log.debug("could not write the busy note of %s: %s", self._id, _first_line(exc))

    def withdraw(self) -> None:
        """Delete this backend's note of the id, if it wrote one."""
        if self.announced and self.lost is None:
            self.announced = False
            self._conn.execute(f"DELETE FROM {self._store._s}.busy WHERE id = %s AND backend = pg_backend_pid()",
                               (self._id,))

    def mail(self) -> list[dict]:
        rows = self._execute(f"SELECT message FROM {self._store._s}.mail WHERE id = %s ORDER BY message_id",
                             (self._id,)).fetchall()
        return [message for (message,) in rows if isinstance(message, dict)]

    def drop_mail(self, ids: Iterable[str]) -> None:
        self._execute(f"DELETE FROM {self._store._s}.mail WHERE id = %s AND message_id = ANY(%s)",
                      (self._id, list(ids)))

    def _check(self, instance: Instance) -> None:
        if instance.id != self._id:
            raise StorageError(f"a session of {self._id} cannot write run {instance.run} of {instance.id}")

    def _execute(self, sql: str, params: tuple, writing: Instance | None = None):
        """One statement on the session's connection. A lost connection is the end of the
        session: ``StorageError``, or ``MaybeApplied`` when it was lost while ``writing`` (the
        server may have committed the write before the answer was lost)."""
        if self.lost is None and writing is not None:
            self.lost = _dead(self._conn)  # ended while a step ran: known before anything is sent
            if self.lost is not None:
                raise StorageError(f"{self._lost_message()}; nothing was written")
        if self.lost is not None:
            raise StorageError(self._lost_message())
        try:
            return self._conn.execute(sql, params)
        except _psycopg().Error as exc:
            if not _is_lost(self._conn, exc):
                self._store._raise(exc)
            self.lost = _first_line(exc)
        if writing is None:
            raise StorageError(self._lost_message())
        raise MaybeApplied(
            instance_id=self._id, path=f"{self._store.schema}.runs",
            reason=f"the connection to PostgreSQL, and the session's lock with it, was lost while run "
                   f"{writing.run} was being written ({self.lost}), so the write may or may not have been "
                   f"committed")

    def _lost_message(self) -> str:
        return (f"lost the connection to PostgreSQL at {redact(self._store.dsn)} during the session of "
                f"{self._id}, and with it the session's lock ({self.lost})")


class _PgScheduleSession(ScheduleSession):
    """A schedule's session: its connection holds the schedule's advisory lock."""

    def __init__(self, store: PostgresStorage, conn, name: str):
        self._store, self._conn, self._name = store, conn, name

    def state(self) -> dict | None:
        rows = self._run(f"SELECT state FROM {self._store._s}.schedules WHERE name = %s", (self._name,)).fetchall()
        return rows[0][0] if rows and isinstance(rows[0][0], dict) else None

    def save(self, state: dict) -> None:
        from psycopg.types.json import Jsonb

        self._run(f"INSERT INTO {self._store._s}.schedules (name, state) VALUES (%s, %s) ON CONFLICT (name) "
                  f"DO UPDATE SET state = EXCLUDED.state, updated_at = now()", (self._name, Jsonb(state)))

    def _run(self, sql: str, params: tuple):
        try:
            return self._conn.execute(sql, params)
        except _psycopg().Error as exc:
            self._store._raise(exc)


class PostgresStorage(Storage):
    """Runs in a PostgreSQL table; sessions are advisory locks (see the module docstring)."""

    def __init__(self, dsn: str, schema: str = "heph", lock_timeout: float = 30.0, claim_ttl: float = 30.0,
                 reconnect_timeout: float = RECONNECT_TIMEOUT):
        if not isinstance(dsn, str) or not dsn:
            raise StorageError("PostgresStorage needs a DSN such as postgresql://user@host:5432/dbname")
        if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
            raise StorageError(
                f"invalid PostgreSQL schema name {schema!r}: use [a-z_][a-z0-9_]*, at most 40 characters")
        self.dsn = dsn
        self.schema = schema
        self.lock_timeout = lock_timeout
        self.claim_ttl = claim_ttl
        self.reconnect_timeout = reconnect_timeout
        self._s = f'"{schema}"'
        self._seed = zlib.crc32(schema.encode())
        self._pool = _Pool(dsn, application_name=self.application_name)
        self._listener: Any = None
        self._hint: float | None = None
        self._hint_fresh = False
        self._losses = 0  # connections lost so far

    def __repr__(self) -> str:
        return f"PostgresStorage({redact(self.dsn)!r}, schema={self.schema!r})"

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's due times."""
        return f"heph_due_{self.schema}"

    @property
    def application_name(self) -> str:
        """The ``application_name`` of this store's connections (unless the DSN or ``$PGAPPNAME``
        sets one): ``heph:SCHEMA``, how ``pg_stat_activity`` tells them apart."""
        return f"heph:{self.schema}"

    # -- plumbing ---------------------------------------------------------------------

    def _raise(self, exc: BaseException) -> NoReturn:
        """Turn a psycopg error into heph's: ``AlreadyRunning`` for the uniqueness trigger (or a
        uniqueness index of a schema before migration 3), else ``StorageError``."""
        errors = _psycopg().errors
        if isinstance(exc, errors.UniqueViolation):
            constraint = getattr(exc.diag, "constraint_name", None)
            if constraint == _UNIQUE_CONSTRAINT:
                try:
                    facts = json.loads(exc.diag.message_detail or "{}")
                except ValueError:
                    facts = {}
                raise AlreadyRunning(**{k: facts.get(k) for k in ("instance_id", "workflow", "version",
                                                                    "status")}) from None
            if constraint in _UNIQUE_INDEXES:
                raise AlreadyRunning(
                    f"the database refused a second active run in the same uniqueness scope ({constraint}); "
                    f"cancel the active one or wait until it finishes"
                ) from None
            raise StorageError(f"PostgreSQL refused a duplicate row: {_first_line(exc)}") from None
        if isinstance(exc, (errors.UndefinedTable, errors.InvalidSchemaName, errors.UndefinedColumn,
                            errors.UndefinedFunction)):
            raise StorageError(
                f"the PostgreSQL schema {self.schema} is missing or out of date ({_first_line(exc)}): "
                f"run `heph db migrate`"
            ) from None
        if isinstance(exc, errors.UntranslatableCharacter):
            raise StorageError("PostgreSQL cannot store the character U+0000 (jsonb refuses it)") from None
        raise StorageError(f"PostgreSQL error: {_first_line(exc)}") from None

    def _outage(self, outage: list[float] | None, reason: str) -> list[float]:
        """Account for one failed attempt of an operation whose connection was lost: the first
        is logged (a warning) and retried at once; later ones wait (``BACKOFF_FIRST`` doubling to
        ``BACKOFF_MAX``) until ``reconnect_timeout`` has passed since the loss: then
        ``StorageError``. ``outage`` is ``[since, delay]``, None before the first failure."""
        now = time.monotonic()
        if outage is None:
            self._losses += 1
            log.warning("lost the PostgreSQL connection (%s); reconnecting", reason)
            return [now, 0.0]
        since, delay = outage
        left = since + self.reconnect_timeout - now
        if left <= 0:
            raise StorageError(f"cannot reach PostgreSQL at {redact(self.dsn)}: {reason}")
        delay = min(BACKOFF_MAX, delay * 2 if delay else BACKOFF_FIRST)
        time.sleep(min(delay, left))
        return [since, delay]

    def _retrying(self, work: Callable[[Any], Any], *, keep: bool = False, fresh: bool = False,
                  outage: list[float] | None = None) -> Any:
        """``work(conn)`` on a live connection, pooled (``fresh``: a new one), and back to the pool
        afterwards, unless ``keep``: then ``(conn, result)``, the caller's to put back.

        A lost connection does not fail the call: ``work`` runs again on a new connection,
        reconnecting with backoff (``_outage``) until ``reconnect_timeout``. So ``work`` must be
        safe to run again after it may have run: reads, idempotent writes, taking a lock (which
        the server drops with the connection). Other psycopg errors become heph's (``_raise``)."""
        psycopg = _psycopg()
        while True:
            try:
                conn, dead = (self._pool.connect(), None) if fresh else self._pool.get()
            except _ConnectFailed as exc:
                if outage is None and not self._pool.connected:
                    raise  # never connected: a wrong DSN, or no server, fails at once
                outage = self._outage(outage, exc.reason)
                continue
            if dead is not None and outage is None:
                outage = self._outage(None, dead)
            try:
                result = work(conn)
            except psycopg.Error as exc:
                lost = _is_lost(conn, exc)
                if lost or fresh:
                    self._pool.discard(conn)
                else:
                    self._pool.put(conn)
                if not lost:
                    self._raise(exc)
                outage = self._outage(outage, _first_line(exc))
                continue
            except BaseException:  # interrupted: closing the connection drops any lock it took
                if keep or fresh:
                    self._pool.discard(conn)
                else:
                    self._pool.put(conn)
                raise
            if outage is not None:
                log.info("reconnected to PostgreSQL at %s", redact(self.dsn))
            if keep:
                return conn, result
            self._pool.put(conn)
            return result

    def _with_conn(self, work: Callable[[Any], Any]) -> Any:
        """``work(conn)`` on a pooled connection, retried after a lost connection (``_retrying``)."""
        return self._retrying(work)

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._with_conn(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    def _load(self, instance_id: str, run: str, doc: Any) -> Instance:
        try:
            instance = Instance.from_dict(doc)
        except (ValueError, RecursionError) as exc:
            raise StorageError(
                f"run {run} of {instance_id} in PostgreSQL ({self.schema}.runs) is corrupt: {str(exc)[:200]}"
            ) from None
        if instance.id != instance_id or instance.run != run:
            raise StorageError(
                f"the row ({instance_id}, {run}) in {self.schema}.runs holds run {instance.run} of {instance.id}")
        return instance

    def _encode(self, instance: Instance) -> bytes:
        """The document of ``instance`` as UTF-8 JSON, or ``StorageError`` if PostgreSQL cannot
        store it (before anything is sent)."""
        try:
            text = _dumps(instance.to_dict())
        except (ValueError, TypeError, RecursionError) as exc:
            raise StorageError(
                f"run {instance.run} of {instance.id} cannot be stored as JSON: {_first_line(exc)}") from None
        if "\\u0000" in text:  # the escape of U+0000, or a string holding a backslash and "u0000"
            problem = self.unstorable(instance)
            if problem:
                raise StorageError(f"{problem}; nothing was written")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise StorageError(f"run {instance.run} of {instance.id} holds a lone surrogate, which UTF-8 "
                               f"cannot store; nothing was written") from None

    def _write(self, session: _PgSession, instance: Instance, *, insert: bool) -> None:
        from psycopg.types.json import Jsonb

        doc = Jsonb(self._encode(instance), dumps=_as_is)
        due = instance.next_due_at if instance.status in ("waiting", "running") else None
        if insert:
            cursor = session._execute((
                f"INSERT INTO {self._s}.runs (id, run, workflow, version, status, unique_scope, next_due_at, "
                f"created_at, updated_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (id, run) DO NOTHING"
            ), (instance.id, instance.run, instance.workflow, instance.version, instance.status,
                instance.scope, due, instance.created_at, instance.updated_at, doc), writing=instance)
            if cursor.rowcount == 0:
                raise StorageError(f"run {instance.run} of {instance.id} already exists")
        else:
            cursor = session._execute((
                f"UPDATE {self._s}.runs SET workflow = %s, version = %s, status = %s, unique_scope = %s, "
                f"next_due_at = %s, claimed_until = NULL, claimed_by = NULL, updated_at = %s, doc = %s "
                f"WHERE id = %s AND run = %s"
            ), (instance.workflow, instance.version, instance.status, instance.scope, due, instance.updated_at, doc,
                instance.id, instance.run), writing=instance)
            if cursor.rowcount == 0:
                raise StorageError(f"run {instance.run} of {instance.id} does not exist")

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this schema lacks, in one transaction under a lock (concurrent
        migrators wait for each other, then find nothing to do); return the versions applied."""

        def work(conn) -> list[int]:
            applied: list[int] = []
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (self._seed - 2**31,))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self._s}.schema_migrations ("
                             f"version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {v for (v,) in conn.execute(f"SELECT version FROM {self._s}.schema_migrations")}
                for version, sql in MIGRATIONS:
                    if version not in done:
                        conn.execute(sql.replace("{s}", self._s).replace("{seed}", str(self._seed)))
                        conn.execute(f"INSERT INTO {self._s}.schema_migrations (version) VALUES (%s)", (version,))
                        applied.append(version)
            return applied

        return self._with_conn(work)

    def migrations(self) -> list[dict]:
        """The applied migrations: ``[{"version", "applied_at"}]`` (empty if none)."""
        exists = self._read("SELECT to_regclass(%s)", (f"{self._s}.schema_migrations",))[0][0]
        if exists is None:
            return []
        rows = self._read(f"SELECT version, applied_at FROM {self._s}.schema_migrations ORDER BY version")
        return [{"version": v, "applied_at": at.astimezone(timezone.utc).isoformat()} for v, at in rows]

    def drop_schema(self) -> None:
        """Drop the schema and everything in it (tests and tooling)."""
        self._with_conn(lambda conn: conn.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE"))

    # -- the contract -----------------------------------------------------------------------

    def _lock(self, conn, instance_id: str, wait: float) -> bool:
        key = (instance_id, self._seed)
        if wait <= 0:
            return conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, %s))", key).fetchone()[0]
        millis = max(1, int(wait * 1000))
        if getattr(conn, "_heph_lock_timeout", None) != millis:
            conn.execute(f"SET lock_timeout = {millis}")
            conn._heph_lock_timeout = millis
        try:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, %s))", key)
        except _psycopg().errors.LockNotAvailable:
            return False
        return True

    @contextmanager
    def session(self, instance_id: str, timeout: float | None = None, *,
                must_exist: bool = False) -> Iterator[Session]:
        """A session holding the id's advisory lock (see the module docstring). ``must_exist``
        is accepted and ignored: a PostgreSQL session creates nothing, so on an id without
        runs it opens and ``runs()`` is empty. Taking the lock is retried after a lost
        connection; once it is held, losing the connection ends the session (``StorageError``)."""
        check_id(instance_id)
        wait = self.lock_timeout if timeout is None else timeout
        conn = self._held(instance_id, wait, f"instance {instance_id} is busy (another heph process holds it); "
                                             f"try again later", instance_id)
        session = _PgSession(self, conn, instance_id)
        try:
            yield session
        finally:
            with contextlib.suppress(_psycopg().Error):
                session.withdraw()
            self._release(conn, instance_id, session.lost)

    def _held(self, key: str, wait: float, busy: str, instance_id: str) -> Any:
        """A connection holding the advisory lock ``key`` (taking it is retried after a lost
        connection); ``InstanceBusy`` with the message ``busy`` if another holds it after ``wait``."""
        conn, got = self._retrying(lambda conn: self._lock(conn, key, wait), keep=True)
        if not got:
            self._pool.put(conn)
            raise InstanceBusy(busy, instance_id=instance_id)
        return conn

    def _release(self, conn: Any, key: str, lost: str | None) -> None:
        """Let the advisory lock ``key`` go and the connection back to the pool (closed instead,
        which releases the lock too, if it was lost or is not idle)."""
        if lost is not None or conn.closed or conn.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE:
            self._pool.discard(conn)
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, %s))", (key, self._seed))
        except Exception:  # noqa: BLE001 - closing the connection releases the lock
            self._pool.discard(conn)
        else:
            self._pool.put(conn)

    # -- schedules (SPEC §10; migration 5) ------------------------------------------------------

    @contextmanager
    def schedule_session(self, name: str, timeout: float = 0) -> Iterator[ScheduleSession]:
        key = f"schedule:{name}"
        conn = self._held(key, timeout, f"schedule {name} is busy (another tick holds it)", name)
        try:
            yield _PgScheduleSession(self, conn, name)
        finally:
            self._release(conn, key, None)

    def schedule_states(self) -> dict[str, dict]:
        rows = self._read(f"SELECT name, state FROM {self._s}.schedules ORDER BY name")
        return {name: state for name, state in rows if isinstance(state, dict)}

    # -- busy instances and their mail (SPEC §6; migration 4) --------------------------------

    def busy(self, instance_id: str) -> dict | None:
        """The note of the backend holding the id's advisory lock (``pg_locks``), ``{}`` if it
        wrote none, None if no backend holds it."""
        rows = self._read(
            f"WITH k AS (SELECT hashtextextended(%s, %s) AS key), "
            f"holder AS (SELECT l.pid FROM pg_locks AS l, k WHERE l.locktype = 'advisory' AND l.granted "
            f"  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"  AND l.objsubid = 1 AND l.classid = ((k.key >> 32) & 4294967295)::oid "
            f"  AND l.objid = (k.key & 4294967295)::oid) "
            f"SELECT holder.pid, b.note FROM holder LEFT JOIN {self._s}.busy AS b "
            f"  ON b.id = %s AND b.backend = holder.pid LIMIT 1",
            (instance_id, self._seed, instance_id))
        if not rows:
            return None
        note = rows[0][1]
        return note if isinstance(note, dict) else {}

    def post(self, instance_id: str, message: dict) -> str:
        from psycopg.types.json import Jsonb

        check_id(instance_id)
        message_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{os.urandom(4).hex()}"
        self._with_conn(lambda conn: conn.execute(
            f"INSERT INTO {self._s}.mail (id, message_id, message) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (instance_id, message_id, Jsonb({**message, "id": message_id}))))
        return message_id

    def has_mail(self, instance_id: str) -> bool:
        return bool(self._read(f"SELECT 1 FROM {self._s}.mail WHERE id = %s LIMIT 1", (instance_id,)))

    def mailboxes(self) -> list[str]:
        return [i for (i,) in self._read(f"SELECT DISTINCT id FROM {self._s}.mail ORDER BY id")]

    def runs(self, instance_id: str) -> list[Instance]:
        rows = self._read(f"SELECT run, doc FROM {self._s}.runs WHERE id = %s ORDER BY run DESC", (instance_id,))
        return [self._load(instance_id, run, doc) for run, doc in rows]

    def exists(self, instance_id: str) -> bool:
        return bool(self._read(f"SELECT 1 FROM {self._s}.runs WHERE id = %s LIMIT 1", (instance_id,)))

    def query(
        self,
        *,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        instance_id: str | None = None,
        version: int | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            wanted = sorted(set(statuses) & set(STATUSES))
            if not wanted:
                return []
            where.append("status = ANY(%s)")
            params.append(wanted)
        for column, value in (("workflow", workflow), ("id", instance_id), ("version", version)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        sql = f"SELECT id, run, doc FROM {self._s}.runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY run DESC, id DESC"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(max(0, int(limit)))
        found = []
        for rid, run, doc in self._read(sql, params):
            try:
                found.append(self._load(rid, run, doc))
            except StorageError as exc:
                log.warning("skipping: %s", exc)
        return found

    def due(self, now: datetime) -> list[RunRef]:
        rows = self._read(
            f"SELECT id, run FROM {self._s}.runs WHERE next_due_at <= %s ORDER BY next_due_at, id, run", (now,))
        self._hint_fresh = False
        return [RunRef(i, r) for i, r in rows]

    def claim_due(self, now: datetime, limit: int = 100, owner: str = "") -> list[RunRef]:
        """Overrides ``Storage.claim_due``: up to ``limit`` due runs that no one has claimed in
        the last ``claim_ttl`` seconds, now claimed by ``owner`` (``FOR UPDATE SKIP LOCKED``:
        concurrent claimers get disjoint batches without waiting for each other). Callers still
        fire under a session; a write of the run clears its claim."""
        rows = self._read(
            f"UPDATE {self._s}.runs AS r SET claimed_until = clock_timestamp() + make_interval(secs => %s), "
            f"claimed_by = %s "
            f"FROM (SELECT id, run FROM {self._s}.runs WHERE next_due_at <= %s "
            f"AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) "
            f"ORDER BY next_due_at LIMIT %s FOR UPDATE SKIP LOCKED) AS c "
            f"WHERE r.id = c.id AND r.run = c.run RETURNING r.id, r.run",
            (float(self.claim_ttl), owner, now, int(limit)))
        self._hint_fresh = False
        return [RunRef(i, r) for i, r in rows]

    def release_claims(self, owner: str, refs: Iterable[RunRef] | None = None) -> int:
        """Overrides ``Storage.release_claims``: drop the claims ``owner`` still holds (runs it
        claimed but did not write) and return how many; with ``refs``, look only at those rows
        (by primary key, no scan of the table)."""
        sql = f"UPDATE {self._s}.runs SET claimed_until = NULL, claimed_by = NULL WHERE claimed_by = %s"
        params: list[Any] = [owner]
        if refs is not None:
            refs = list(refs)
            if not refs:
                return 0
            sql += " AND (id, run) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            params += [[r.id for r in refs], [r.run for r in refs]]
        return len(self._read(sql + " RETURNING 1", params))

    def due_batches(self, now: datetime, batch: int = 100) -> Iterator[RunRef]:
        """Overrides ``Storage.due_batches``: every due run, claimed ``batch`` at a time for this
        caller (what ``tick`` uses: several workers share the due runs instead of each trying
        all of them). The claims left at the end (runs skipped as busy) are released, so the
        next tick gets them."""
        owner = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(6).hex()}"
        claimed: list[RunRef] = []
        losses = self._losses
        try:
            while True:
                refs = self.claim_due(now, batch, owner)
                if not refs:
                    return
                claimed.extend(refs)
                yield from refs
        finally:
            try:
                # after a lost connection, a claim_due whose answer was lost may have claimed rows
                # this loop never saw: release every claim of this owner, not only the ones it got
                self.release_claims(owner, claimed if self._losses == losses else None)
            except StorageError as exc:  # they expire after claim_ttl anyway
                log.info("could not release claims of %s: %s", owner, exc)

    def interrupted(self) -> list[RunRef]:
        rows = self._read(f"SELECT id, run FROM {self._s}.runs WHERE status IN ('pending', 'running') ORDER BY id, run")
        return [RunRef(i, r) for i, r in rows]

    def count(self) -> int:
        """How many runs the store holds."""
        return self._read(f"SELECT count(*) FROM {self._s}.runs")[0][0]

    # -- waiting for work (LISTEN/NOTIFY) --------------------------------------------------

    def wait_for_work(self, timeout: float) -> bool:
        """Overrides ``Storage.wait_for_work``: sleep at most ``timeout`` seconds, returning True
        early once a timer or retry may be due: the earliest future due time stored (read again
        after each ``due``/``claim_due``) or one announced since by a NOTIFY has arrived. False
        on timeout. For ``heph worker`` between ticks (runs already due but skipped as busy do
        not wake it: the next regular tick retries them).

        A lost listening connection is reconnected (with the backoff of ``_retrying``, so this
        may take longer than ``timeout``), then True: NOTIFYs sent meanwhile were missed, so
        there may be work (``StorageError`` once reconnecting fails for ``reconnect_timeout``)."""
        psycopg = _psycopg()
        deadline = time.monotonic() + max(0.0, timeout)
        listener = self._listener
        if listener is not None and listener.closed:
            return self._relisten("the connection is closed")
        try:
            if listener is None:
                listener = self._listen()
            if not self._hint_fresh:
                (earliest,) = listener.execute(
                    f"SELECT extract(epoch FROM min(next_due_at))::float8 FROM {self._s}.runs "
                    f"WHERE next_due_at > clock_timestamp()"
                ).fetchone()
                self._hint = earliest
                self._hint_fresh = True
            while True:
                if self._hint is not None and self._hint <= time.time():
                    self._hint = None
                    return True
                left = deadline - time.monotonic()
                if self._hint is not None:
                    left = min(left, self._hint - time.time())
                if left <= 0:
                    return self._hint is not None and self._hint <= time.time()
                for note in listener.notifies(timeout=left, stop_after=1):
                    try:
                        due = float(note.payload)
                    except ValueError:
                        continue
                    self._hint = due if self._hint is None else min(self._hint, due)
        except psycopg.Error as exc:
            if listener is None or not _is_lost(listener, exc):
                self._forget_listener()
                self._raise(exc)
            return self._relisten(_first_line(exc))

    def _listen(self, outage: list[float] | None = None):
        """A new connection listening on ``channel`` (retried like any operation): the listener."""
        listen = f'LISTEN "{self.channel}"'
        self._listener, _ = self._retrying(lambda conn: conn.execute(listen), keep=True, fresh=True, outage=outage)
        self._hint_fresh = False  # the due times may have changed while no one listened
        return self._listener

    def _relisten(self, reason: str) -> bool:
        self._forget_listener()
        self._listen(self._outage(None, reason))
        return True

    def _forget_listener(self) -> None:
        if self._listener is not None:
            self._pool.discard(self._listener)
            self._listener = None

    def unstorable(self, instance: Instance) -> str | None:
        """Overrides ``Storage.unstorable``: PostgreSQL's ``jsonb`` cannot hold the character
        U+0000 in a string (a key or a value); the message names the first place that does
        (``context.steps.note.text``). A walk of the instance's strings, a few microseconds for
        a small one; the path is only looked for when there is one."""
        if not _has_nul(instance):
            return None
        where = _nul_path(instance.to_dict(), "")
        return "PostgreSQL cannot store the character U+0000" + (f" (at {where})" if where else "")

    def close(self) -> None:
        self._pool.close()
        self._forget_listener()


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False).encode


def _as_is(data: Any) -> Any:
    """The ``dumps`` of a document encoded already (``_encode``)."""
    return data


_SCALARS = (int, float, type(None), datetime)


def _has_nul(value: Any) -> bool:
    """Whether a string in ``value`` (JSON data, or a dataclass such as an ``Instance``: its
    fields), or a key of one of its objects, holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return True
            if isinstance(item, str):
                if "\x00" in item:
                    return True
            elif not isinstance(item, _SCALARS) and _has_nul(item):
                return True
        return False
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, str):
                if "\x00" in item:
                    return True
            elif not isinstance(item, _SCALARS) and _has_nul(item):
                return True
        return False
    if hasattr(type(value), "__dataclass_fields__"):
        return _has_nul(vars(value))
    return False


def _nul_path(value: Any, path: str) -> str | None:
    """Where in the JSON data ``value`` the first string or key holding U+0000 is
    (``context.initial.note``, ``history[2].error.message``, ``waits['a\\x00']``), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            here = (f"{path}.{name}" if path else name) if name.isidentifier() else f"{path}[{name!r}]"
            if "\x00" in name:
                return here
            found = _nul_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            found = _nul_path(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


__all__ = ["LATEST", "MIGRATIONS", "PostgresStorage", "redact"]
