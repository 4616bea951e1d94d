"""The storage contract every adapter keeps (the conformance suite in ``heph.testing`` checks it).

An instance id (``orderid::order42``) may have several *runs* over time: a new
run may start once the previous one has finished. Each run is one record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

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
    """

    @abstractmethod
    def runs(self) -> list[Instance]:
        """Every run of the id, newest first. A corrupt record raises ``StorageError``."""

    @abstractmethod
    def insert(self, instance: Instance) -> None:
        """Store a new run (``instance.run`` not used before for this id)."""

    @abstractmethod
    def update(self, instance: Instance) -> None:
        """Replace the stored run ``instance.run`` with ``instance``."""


class Storage(ABC):
    """Where instances live. Adapters implement sessions (locking) and indexed queries."""

    @abstractmethod
    def session(self, instance_id: str, timeout: float | None = None) -> AbstractContextManager[Session]:
        """Open a ``Session`` on ``instance_id``, waiting at most ``timeout`` seconds
        (None: the adapter's default) for other sessions; ``StorageError`` on timeout."""

    @abstractmethod
    def runs(self, instance_id: str) -> list[Instance]:
        """Every run of ``instance_id``, newest first, read without locking (each record is
        read whole: never a half-written one). Corrupt records raise ``StorageError``."""

    def exists(self, instance_id: str) -> bool:
        """Whether ``instance_id`` has any run (adapters answer without reading the runs)."""
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

    def close(self) -> None:
        """Release resources (connections, file handles)."""
        return None
