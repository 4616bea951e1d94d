"""The storage contract every adapter keeps (the conformance suite in ``heph.testing`` checks it).

An instance id (``orderid::order42``) may have several *runs* over time: a new
run may start once the previous one has finished. Each run is one record.

Every capability the runtime uses is declared here. The abstract methods are what an
adapter must write; the others have defaults that are correct for a store used from one
host (adapters shared by many workers, such as PostgreSQL, override them).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from heph.core.instance import Instance


@dataclass(frozen=True, order=True)
class RunRef:
    """Points at one run: the instance id and the run's id."""

    id: str
    run: str


class Session(ABC):
    """Exclusive access to every run of one instance id, for one read-modify-write.

    While a session is open no other session of the same id (in any process or
    host) exists, so a check followed by a write is atomic. Every ``insert`` and
    ``update`` is atomic (a crash during it leaves the previous record intact) and
    durable at the latest when the session closes: a crash after the close never
    loses it; a crash before may leave any earlier record of the session instead.
    Closing raises ``StorageError`` if the writes cannot be made durable.

    Uniqueness: ``insert`` and ``update`` refuse, with ``AlreadyRunning`` and nothing
    written, an active run that ``heph.core.uniqueness.conflicts`` with another active run
    of the id (the scope each run stores decides; the adapter needs no workflow).
    """

    @abstractmethod
    def runs(self) -> list[Instance]:
        """Every run of the id, newest first. A corrupt record raises ``StorageError``."""

    @abstractmethod
    def insert(self, instance: Instance) -> None:
        """Store a new run (``instance.run`` not used before for this id: else ``StorageError``);
        ``AlreadyRunning`` if it is active and conflicts with another active run."""

    @abstractmethod
    def update(self, instance: Instance) -> None:
        """Replace the stored run ``instance.run`` with ``instance`` (``StorageError`` if there is
        none); ``AlreadyRunning`` if it is active and conflicts with another active run."""

    def announce(self, note: dict) -> None:
        """Say what the session's holder is doing (the step it runs, since when, its pid and
        host, the run's workflow, version and scope), for ``Storage.busy`` to tell others while
        the session lasts. Not durable: it means nothing once the session has ended. The
        default keeps nothing (``busy`` then answers None)."""
        return None

    def mail(self) -> list[dict]:
        """The messages ``Storage.post`` queued for the id, oldest first (each with its ``id``).
        The default: none."""
        return []

    def drop_mail(self, ids: Iterable[str]) -> None:
        """Delete the queued messages ``ids`` (once what they asked for is written). The default
        keeps none to drop."""
        return None


class ScheduleSession(ABC):
    """Exclusive access to one schedule's state (``Storage.schedule_session``)."""

    @abstractmethod
    def state(self) -> dict | None:
        """The schedule's stored state (a JSON object), or None if it has none yet."""

    @abstractmethod
    def save(self, state: dict) -> None:
        """Replace the state, atomically and durably before this returns."""


class Storage(ABC):
    """Where instances live. Adapters implement sessions (locking) and indexed queries."""

    @abstractmethod
    def session(self, instance_id: str, timeout: float | None = None, *,
                must_exist: bool = False) -> AbstractContextManager[Session]:
        """Open a ``Session`` on ``instance_id``, waiting at most ``timeout`` seconds
        (None: the adapter's default) for other sessions; ``InstanceBusy`` (a ``StorageError``)
        on timeout. With ``must_exist`` the caller only works on existing runs: when the id
        has none, the adapter may raise ``InstanceNotFound`` instead of opening the session,
        and must then leave nothing behind (no lock file, no row)."""

    @abstractmethod
    def runs(self, instance_id: str) -> list[Instance]:
        """Every run of ``instance_id``, newest first, read without locking (each record is
        read whole: never a half-written one). Corrupt records raise ``StorageError``."""

    def exists(self, instance_id: str) -> bool:
        """Whether ``instance_id`` has any run. This default reads the runs; adapters
        override it to answer from their index or directory listing alone."""
        return bool(self.runs(instance_id))

    @abstractmethod
    def query(
        self,
        *,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        instance_id: str | None = None,
        version: int | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        """Runs matching every given filter (AND), newest first, at most ``limit``.

        Must not read every record when ``statuses`` narrows the search (keep an index).
        Corrupt records are skipped with a warning on logger ``heph``.
        """

    @abstractmethod
    def due(self, now: datetime) -> list[RunRef]:
        """Runs with a timer or retry due at or before ``now`` (may include stale hints:
        callers re-check under a session)."""

    @abstractmethod
    def interrupted(self) -> list[RunRef]:
        """Runs stored as pending or running: candidates for recovery (callers re-check
        under a session; a run whose owner is alive is busy)."""

    # -- sharing work among workers (defaults: one host, nothing to share) ----------------

    def claim_due(self, now: datetime, limit: int = 100, owner: str = "") -> list[RunRef]:
        """Up to ``limit`` due runs, claimed for ``owner`` so that concurrent workers get
        disjoint batches. Claims are hints (callers still fire under a session) that expire
        or are dropped by ``release_claims``; a write of a run clears its claim. This default
        claims nothing: it returns the first ``limit`` of ``due(now)``."""
        return self.due(now)[:limit]

    def release_claims(self, owner: str, refs: Iterable[RunRef] | None = None) -> int:
        """Drop the claims ``owner`` still holds (only among ``refs``, if given); return how
        many. The default holds no claims: 0."""
        return 0

    def due_batches(self, now: datetime, batch: int = 100) -> Iterator[RunRef]:
        """Every run due at ``now`` for this caller, as ``tick`` walks them. Adapters shared by
        several workers claim them ``batch`` at a time and release the unused claims at the end;
        this default yields ``due(now)``."""
        yield from self.due(now)

    def wait_for_work(self, timeout: float) -> bool:
        """Sleep at most ``timeout`` seconds; True as soon as a timer or retry may be due (an
        adapter that can be notified wakes early), False when the time ran out. This default
        sleeps the whole ``timeout`` and returns False (the caller polls)."""
        time.sleep(max(0.0, timeout))
        return False

    def unstorable(self, instance: Instance) -> str | None:
        """Why this store could not hold ``instance`` (too large, a character it cannot keep),
        or None if it can. Asked before a step's result is written: the runtime fails the step
        with this message instead of acknowledging a run that could never be read back. The
        default: None (any JSON-safe instance is storable)."""
        return None

    # -- busy instances and their mail (SPEC §6; defaults: nothing is queued) ----------------

    def busy(self, instance_id: str) -> dict | None:
        """The note (``Session.announce``) of the session holding ``instance_id`` right now,
        ``{}`` if it announced nothing, None if no session holds it. Never waits. The default:
        None (callers then wait for the session as before)."""
        return None

    def post(self, instance_id: str, message: dict) -> str:
        """Queue ``message`` (JSON data) for ``instance_id`` durably, without its session; return
        its id (ids sort in posting order). Whoever next holds the id's session applies it. The
        default refuses: ``StorageError``."""
        from heph.errors import StorageError

        raise StorageError(f"{type(self).__name__} cannot queue messages for a busy instance")

    def has_mail(self, instance_id: str) -> bool:
        """Whether messages are queued for ``instance_id`` (a cheap check, without the session)."""
        return False

    def mailboxes(self) -> list[str]:
        """Every instance id with queued messages (``tick`` applies those nobody holds)."""
        return []

    # -- schedules (SPEC §10; defaults: none can be kept) -------------------------------------

    def schedule_session(self, name: str, timeout: float = 0) -> AbstractContextManager[ScheduleSession]:
        """Exclusive access to the state of schedule ``name`` (``[a-z0-9_-]+``) across processes
        and hosts, as ``session`` gives to an id; ``InstanceBusy`` if another holds it after
        ``timeout`` seconds. ``tick`` holds it while it starts a schedule's due slots, so each
        slot starts once. The default refuses: ``StorageError``."""
        from heph.errors import StorageError

        raise StorageError(f"{type(self).__name__} cannot keep schedules")

    def schedule_states(self) -> dict[str, dict]:
        """Every schedule's stored state by name (unlocked; ``heph schedules``, ``storage copy``)."""
        return {}

    def close(self) -> None:
        """Release resources (connections, file handles)."""
        return None
