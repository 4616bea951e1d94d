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
``StorageError`` ("busy") when the id is held. If the network between a worker and the
server breaks, the server frees the lock once it notices the dead connection (set TCP
keepalives in the DSN, e.g. ``?keepalives_idle=30``); the old worker cannot write any
more, since its writes went through that connection.

Uniqueness
----------
The runtime checks the active runs and inserts inside one session (enough on its own).
The database enforces it too, with partial unique indexes over the active statuses
(pending, running, waiting), one per scope, on the ``unique_scope`` column written with
each row (the workflow's ``Unique.scope``, looked up in the workflow registry; ``workflow``
if the workflow is not defined in this process): ``(id, workflow)`` for ``workflow``,
``(id, workflow, version)`` for ``version``, ``(id)`` for ``global``; ``none`` ids carry a
random suffix. A write that would break one raises ``AlreadyRunning``. (Each index sees the
rows of its own scope only: two workflows with different scopes sharing one business key
are kept apart by the runtime's check alone.)

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

``wait_for_work(timeout)`` lets ``heph worker`` sleep until work may be there: a trigger
(migration 2) sends ``NOTIFY`` when a write sets a due time, and the worker wakes when the
earliest known due time arrives instead of polling.

Limits: ``jsonb`` cannot hold the character U+0000 in strings; such a write raises
``StorageError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from heph.core.ids import check_id
from heph.core.instance import STATUSES, Instance
from heph.errors import AlreadyRunning, StorageError
from heph.runtime.storage.base import RunRef, Session, Storage

log = logging.getLogger("heph")

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}\Z")
_ACTIVE_SQL = "status IN ('pending', 'running', 'waiting')"
SCOPES = ("workflow", "version", "global", "none")

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
]
LATEST = MIGRATIONS[-1][0]

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


def unique_scope(workflow: str) -> str:
    """The uniqueness scope of ``workflow`` in this process's registry (``workflow`` if unknown)."""
    from heph.core.workflow import lookup

    cls = lookup(workflow)
    unique = getattr(cls, "__heph_unique__", None) if cls is not None else None
    scope = getattr(unique, "scope", None)
    return scope if scope in SCOPES else "workflow"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class _Pool:
    """A few idle connections kept for reuse (autocommit); one per session or read while in use."""

    def __init__(self, dsn: str, max_idle: int = 4):
        self.dsn = dsn
        self.max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _forked(self) -> None:
        # A child process must not use (or close) the parent's sockets: forget them.
        if os.getpid() != self._pid:
            _ORPHANS.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()

    def connect(self):
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {redact(self.dsn)}: {_first_line(exc)}") from None
        conn.execute("SET synchronous_commit TO on")
        conn._heph_lock_timeout = None  # type: ignore[attr-defined]
        return conn

    def get(self) -> tuple[Any, bool]:
        """A connection, and whether it came from the pool (it may have gone stale)."""
        with self._lock:
            self._forked()
            if self._idle:
                return self._idle.pop(), True
        return self.connect(), False

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
    def __init__(self, store: PostgresStorage, conn, instance_id: str):
        self._store = store
        self._conn = conn
        self._id = instance_id

    def runs(self) -> list[Instance]:
        rows = self._store._execute(
            self._conn, f"SELECT run, doc FROM {self._store._s}.runs WHERE id = %s ORDER BY run DESC", (self._id,)
        ).fetchall()
        return [self._store._load(self._id, run, doc) for run, doc in rows]

    def insert(self, instance: Instance) -> None:
        self._check(instance)
        self._store._write(self._conn, instance, insert=True)

    def update(self, instance: Instance) -> None:
        self._check(instance)
        self._store._write(self._conn, instance, insert=False)

    def _check(self, instance: Instance) -> None:
        if instance.id != self._id:
            raise StorageError(f"a session of {self._id} cannot write run {instance.run} of {instance.id}")


class PostgresStorage(Storage):
    """Runs in a PostgreSQL table; sessions are advisory locks (see the module docstring)."""

    def __init__(self, dsn: str, schema: str = "heph", lock_timeout: float = 30.0, claim_ttl: float = 30.0):
        if not isinstance(dsn, str) or not dsn:
            raise StorageError("PostgresStorage needs a DSN such as postgresql://user@host:5432/dbname")
        if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
            raise StorageError(f"invalid PostgreSQL schema name {schema!r}: use [a-z_][a-z0-9_]*, at most 40 characters")
        self.dsn = dsn
        self.schema = schema
        self.lock_timeout = lock_timeout
        self.claim_ttl = claim_ttl
        self._s = f'"{schema}"'
        self._seed = zlib.crc32(schema.encode())
        self._pool = _Pool(dsn)
        self._listener = None
        self._hint: float | None = None
        self._hint_fresh = False

    def __repr__(self) -> str:
        return f"PostgresStorage({redact(self.dsn)!r}, schema={self.schema!r})"

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's due times."""
        return f"heph_due_{self.schema}"

    # -- plumbing ---------------------------------------------------------------------

    def _raise(self, exc: BaseException) -> None:
        """Turn a psycopg error into heph's: ``AlreadyRunning`` for a uniqueness index, else ``StorageError``."""
        errors = _psycopg().errors
        if isinstance(exc, errors.UniqueViolation):
            constraint = getattr(exc.diag, "constraint_name", None)
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
            raise StorageError("PostgreSQL jsonb cannot store the character U+0000 in a string") from None
        raise StorageError(f"PostgreSQL error: {_first_line(exc)}") from None

    def _execute(self, conn, sql: str, params: Iterable[Any] = ()):
        try:
            return conn.execute(sql, tuple(params))
        except _psycopg().Error as exc:
            self._raise(exc)

    def _with_conn(self, work):
        """``work(conn)`` on a pooled connection; once more on a fresh one if the pooled one is dead."""
        psycopg = _psycopg()
        for attempt in (0, 1):
            conn, pooled = self._pool.get()
            try:
                result = work(conn)
            except psycopg.Error as exc:
                if not conn.broken:
                    self._pool.put(conn)
                    self._raise(exc)
                self._pool.discard(conn)
                if pooled and attempt == 0:
                    continue
                raise StorageError(f"lost the connection to PostgreSQL at {redact(self.dsn)}: {_first_line(exc)}") from None
            except BaseException:
                self._pool.put(conn)
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")

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
            raise StorageError(f"the row ({instance_id}, {run}) in {self.schema}.runs holds run {instance.run} of {instance.id}")
        return instance

    def _write(self, conn, instance: Instance, *, insert: bool) -> None:
        from psycopg.types.json import Jsonb

        doc = Jsonb(instance.to_dict(), dumps=_dumps)
        due = instance.next_due_at if instance.status in ("waiting", "running") else None
        if insert:
            cursor = self._execute(conn, (
                f"INSERT INTO {self._s}.runs (id, run, workflow, version, status, unique_scope, next_due_at, "
                f"created_at, updated_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (id, run) DO NOTHING"
            ), (instance.id, instance.run, instance.workflow, instance.version, instance.status,
                unique_scope(instance.workflow), due, instance.created_at, instance.updated_at, doc))
            if cursor.rowcount == 0:
                raise StorageError(f"run {instance.run} of {instance.id} already exists")
        else:
            cursor = self._execute(conn, (
                f"UPDATE {self._s}.runs SET workflow = %s, version = %s, status = %s, next_due_at = %s, "
                f"claimed_until = NULL, claimed_by = NULL, updated_at = %s, doc = %s WHERE id = %s AND run = %s"
            ), (instance.workflow, instance.version, instance.status, due, instance.updated_at, doc,
                instance.id, instance.run))
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
                        conn.execute(sql.replace("{s}", self._s))
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
    def session(self, instance_id: str, timeout: float | None = None) -> Iterator[Session]:
        check_id(instance_id)
        wait = self.lock_timeout if timeout is None else timeout
        psycopg = _psycopg()
        for attempt in (0, 1):
            conn, pooled = self._pool.get()
            try:
                got = self._lock(conn, instance_id, wait)
            except psycopg.Error as exc:
                if not conn.broken:
                    self._pool.put(conn)
                    self._raise(exc)
                self._pool.discard(conn)
                if pooled and attempt == 0:
                    continue
                raise StorageError(f"lost the connection to PostgreSQL at {redact(self.dsn)}: {_first_line(exc)}") from None
            except BaseException:  # interrupted while waiting: closing the connection drops any lock
                self._pool.discard(conn)
                raise
            break
        if not got:
            self._pool.put(conn)
            raise StorageError(f"instance {instance_id} is busy (another heph process holds it); try again later")
        try:
            yield _PgSession(self, conn, instance_id)
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, %s))", (instance_id, self._seed))
            except Exception:  # noqa: BLE001 - closing the connection releases the lock
                self._pool.discard(conn)
            else:
                self._pool.put(conn)

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
        where, params = [], []
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
        """Up to ``limit`` due runs that no one has claimed in the last ``claim_ttl`` seconds,
        now claimed by ``owner`` (``FOR UPDATE SKIP LOCKED``: concurrent claimers get disjoint
        batches without waiting for each other). Callers still fire under a session; a write
        of the run clears its claim."""
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
        """Drop the claims ``owner`` still holds (runs it claimed but did not write); with
        ``refs``, look only at those rows (by primary key, no scan of the table)."""
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
        """Every due run, claimed ``batch`` at a time for this caller (what ``tick`` uses: several
        workers share the due runs instead of each trying all of them). The claims left at the
        end (runs skipped as busy) are released, so the next tick gets them."""
        owner = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(6).hex()}"
        claimed: list[RunRef] = []
        try:
            while True:
                refs = self.claim_due(now, batch, owner)
                if not refs:
                    return
                claimed.extend(refs)
                yield from refs
        finally:
            try:
                self.release_claims(owner, claimed)
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
        """Sleep at most ``timeout`` seconds, returning True early once a timer or retry may be
        due: the earliest future due time stored (read again after each ``due``/``claim_due``)
        or one announced since by a NOTIFY has arrived. False on timeout. For ``heph worker``
        between ticks (runs already due but skipped as busy do not wake it: the next regular
        tick retries them)."""
        psycopg = _psycopg()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._pool.connect()
                self._listener.execute(f'LISTEN "{self.channel}"')
                self._hint_fresh = False
            if not self._hint_fresh:
                (earliest,) = self._listener.execute(
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
                for note in self._listener.notifies(timeout=left, stop_after=1):
                    try:
                        due = float(note.payload)
                    except ValueError:
                        continue
                    self._hint = due if self._hint is None else min(self._hint, due)
        except psycopg.Error as exc:
            if self._listener is not None:
                self._pool.discard(self._listener)
                self._listener = None
            raise StorageError(f"PostgreSQL error while waiting for work: {_first_line(exc)}") from None

    def close(self) -> None:
        self._pool.close()
        if self._listener is not None:
            self._pool.discard(self._listener)
            self._listener = None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


__all__ = ["LATEST", "MIGRATIONS", "PostgresStorage", "redact", "unique_scope"]
