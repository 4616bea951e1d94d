"""An in-memory store, for tests: same contract as the file store, gone when the process ends."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Iterable, Iterator

from heph.core.instance import Instance
from heph.errors import StorageError
from heph.runtime.storage.base import RunRef, Session, Storage


class _MemorySession(Session):
    def __init__(self, store: MemoryStorage, instance_id: str):
        self._store = store
        self._id = instance_id

    def runs(self) -> list[Instance]:
        return self._store.runs(self._id)

    def insert(self, instance: Instance) -> None:
        runs = self._store._docs.setdefault(self._id, {})
        if instance.run in runs:
            raise StorageError(f"run {instance.run} of {self._id} already exists")
        runs[instance.run] = _freeze(instance)

    def update(self, instance: Instance) -> None:
        runs = self._store._docs.get(self._id, {})
        if instance.run not in runs:
            raise StorageError(f"run {instance.run} of {self._id} does not exist")
        runs[instance.run] = _freeze(instance)


def _freeze(instance: Instance) -> str:
    return json.dumps(instance.to_dict())


class MemoryStorage(Storage):
    """Keeps every run as JSON text in a dict; sessions are per-id thread locks."""

    def __init__(self, lock_timeout: float = 30.0):
        self._docs: dict[str, dict[str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.lock_timeout = lock_timeout

    @contextmanager
    def session(self, instance_id: str, timeout: float | None = None) -> Iterator[Session]:
        with self._guard:
            lock = self._locks.setdefault(instance_id, threading.Lock())
        wait = self.lock_timeout if timeout is None else timeout
        acquired = lock.acquire(blocking=False) if wait <= 0 else lock.acquire(timeout=wait)
        if not acquired:
            raise StorageError(f"instance {instance_id} is busy (another command holds it); try again")
        try:
            yield _MemorySession(self, instance_id)
        finally:
            lock.release()

    def runs(self, instance_id: str) -> list[Instance]:
        docs = self._docs.get(instance_id, {})
        return [Instance.from_dict(json.loads(docs[run])) for run in sorted(docs, reverse=True)]

    def exists(self, instance_id: str) -> bool:
        return bool(self._docs.get(instance_id))

    def _all(self) -> list[Instance]:
        out = [Instance.from_dict(json.loads(doc)) for runs in self._docs.values() for doc in runs.values()]
        return sorted(out, key=lambda i: i.run, reverse=True)

    def query(
        self,
        *,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        instance_id: str | None = None,
        version: int | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        wanted = set(statuses) if statuses is not None else None
        found = [
            i
            for i in self._all()
            if (wanted is None or i.status in wanted)
            and (workflow is None or i.workflow == workflow)
            and (instance_id is None or i.id == instance_id)
            and (version is None or i.version == version)
        ]
        return found[:limit] if limit is not None else found

    def due(self, now: datetime) -> list[RunRef]:
        return [RunRef(i.id, i.run) for i in self._all() if i.next_due_at is not None and i.next_due_at <= now]

    def interrupted(self) -> list[RunRef]:
        return [RunRef(i.id, i.run) for i in self._all() if i.status in ("pending", "running")]
