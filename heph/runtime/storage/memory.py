"""An in-memory store, for tests: same contract as the file store, gone when the process ends.

Runs are kept as JSON text, so no caller can change stored data through an ``Instance`` it
got back. Beside the text, an index of each run's facts (status, workflow, version, scope,
due time) answers ``exists``, the uniqueness rule and which runs a query wants without
decoding anything: ``query``, ``due`` and ``interrupted`` decode only the runs they return.
Sessions are per-id thread locks; the documents and the index have their own guard.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator

from heph.core import uniqueness
from heph.core.instance import Instance
from heph.errors import InstanceBusy, InstanceNotFound, StorageError
from heph.runtime.storage.base import RunRef, ScheduleSession, Session, Storage

_Key = tuple[str, str]  # (run, id): sorts newest first when reversed, like the runs themselves


@dataclass(slots=True)
class _Facts:
    """What the index keeps of a run (``uniqueness.RunFacts``, and the due time)."""

    id: str
    run: str
    workflow: str
    version: int
    status: str
    scope: str
    due: datetime | None


def _facts(instance: Instance) -> _Facts:
    return _Facts(instance.id, instance.run, instance.workflow, instance.version, instance.status,
                  instance.scope, instance.next_due_at)


class _MemorySession(Session):
    def __init__(self, store: MemoryStorage, instance_id: str):
        self._store = store
        self._id = instance_id

    def runs(self) -> list[Instance]:
        return self._store.runs(self._id)

    def insert(self, instance: Instance) -> None:
        self._store._write(self._id, instance, insert=True)

    def update(self, instance: Instance) -> None:
        self._store._write(self._id, instance, insert=False)

    def announce(self, note: dict) -> None:
        self._store._notes[self._id] = json.loads(json.dumps(note))

    def mail(self) -> list[dict]:
        with self._store._data_guard:
            return [json.loads(m) for m in self._store._mail.get(self._id, [])]

    def drop_mail(self, ids: Iterable[str]) -> None:
        gone = set(ids)
        with self._store._data_guard:
            kept = [m for m in self._store._mail.get(self._id, []) if json.loads(m)["id"] not in gone]
            if kept:
                self._store._mail[self._id] = kept
            else:
                self._store._mail.pop(self._id, None)


class _MemoryScheduleSession(ScheduleSession):
    def __init__(self, store: MemoryStorage, name: str):
        self._store, self._name = store, name

    def state(self) -> dict | None:
        text = self._store._schedules.get(self._name)
        return json.loads(text) if text is not None else None

    def save(self, state: dict) -> None:
        self._store._schedules[self._name] = json.dumps(state)


def _freeze(instance: Instance) -> str:
    return json.dumps(instance.to_dict())


def _thaw(doc: str) -> Instance:
    return Instance.from_dict(json.loads(doc))


class MemoryStorage(Storage):
    """Keeps every run as JSON text in a dict, with an index by status, workflow and due time;
    sessions are per-id thread locks."""

    def __init__(self, lock_timeout: float = 30.0):
        self._docs: dict[str, dict[str, str]] = {}  # id -> run -> JSON text
        self._facts: dict[_Key, _Facts] = {}
        self._by_status: dict[str, set[_Key]] = {}
        self._by_workflow: dict[str, set[_Key]] = {}
        self._due: dict[_Key, datetime] = {}
        self._data_guard = threading.Lock()  # guards the documents and the index
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()  # guards _locks
        self._notes: dict[str, dict] = {}  # id -> the note of its session's holder
        self._mail: dict[str, list[str]] = {}  # id -> queued messages (JSON text), oldest first
        self._posted = 0
        self._schedules: dict[str, str] = {}  # schedule name -> its state (JSON text)
        self.lock_timeout = lock_timeout

    @contextmanager
    def session(self, instance_id: str, timeout: float | None = None, *,
                must_exist: bool = False) -> Iterator[Session]:
        """A session holding the id's thread lock; with ``must_exist``, ``InstanceNotFound`` (and
        no lock made) if the id has no run. Runs are never removed, so the check needs no lock."""
        if must_exist and not self.exists(instance_id):
            raise InstanceNotFound(instance_id=instance_id)
        with self._guard:
            lock = self._locks.setdefault(instance_id, threading.Lock())
        wait = self.lock_timeout if timeout is None else timeout
        acquired = lock.acquire(blocking=False) if wait <= 0 else lock.acquire(timeout=wait)
        if not acquired:
            raise InstanceBusy(instance_id=instance_id)
        try:
            yield _MemorySession(self, instance_id)
        finally:
            self._notes.pop(instance_id, None)
            lock.release()

    @contextmanager
    def schedule_session(self, name: str, timeout: float = 0) -> Iterator[ScheduleSession]:
        with self._guard:
            lock = self._locks.setdefault(f"schedule:{name}", threading.Lock())
        if not (lock.acquire(blocking=False) if timeout <= 0 else lock.acquire(timeout=timeout)):
            raise InstanceBusy(f"schedule {name} is busy (another tick holds it)", instance_id=name)
        try:
            yield _MemoryScheduleSession(self, name)
        finally:
            lock.release()

    def schedule_states(self) -> dict[str, dict]:
        return {name: json.loads(text) for name, text in sorted(self._schedules.items())}

    def busy(self, instance_id: str) -> dict | None:
        lock = self._locks.get(instance_id)
        if lock is None or not lock.locked():
            return None
        note = self._notes.get(instance_id)
        return dict(note) if note is not None else {}

    def post(self, instance_id: str, message: dict) -> str:
        with self._data_guard:
            self._posted += 1
            message_id = f"{self._posted:012d}"
            self._mail.setdefault(instance_id, []).append(json.dumps({**message, "id": message_id}))
        return message_id

    def has_mail(self, instance_id: str) -> bool:
        return bool(self._mail.get(instance_id))

    def mailboxes(self) -> list[str]:
        with self._data_guard:
            return sorted(self._mail)

    def _write(self, instance_id: str, instance: Instance, *, insert: bool) -> None:
        """Store ``instance`` (its id's session is held): refused, with nothing written, if the run
        exists (insert) or does not (update), or if it breaks uniqueness."""
        if instance.id != instance_id:
            raise StorageError(f"a session of {instance_id} cannot write run {instance.run} of {instance.id}")
        doc = _freeze(instance)
        new = _facts(instance)
        key = (instance.run, instance_id)
        with self._data_guard:
            runs = self._docs.get(instance_id, {})
            if insert and instance.run in runs:
                raise StorageError(f"run {instance.run} of {instance_id} already exists")
            if not insert and instance.run not in runs:
                raise StorageError(f"run {instance.run} of {instance_id} does not exist")
            if instance.status in uniqueness.ACTIVE:
                uniqueness.check(new, (self._facts[(run, instance_id)] for run in runs))
            self._docs.setdefault(instance_id, {})[instance.run] = doc
            old = self._facts.get(key)
            if old is not None:
                self._by_status[old.status].discard(key)
                self._by_workflow[old.workflow].discard(key)
                self._due.pop(key, None)
            self._facts[key] = new
            self._by_status.setdefault(new.status, set()).add(key)
            self._by_workflow.setdefault(new.workflow, set()).add(key)
            if new.due is not None:
                self._due[key] = new.due

    def runs(self, instance_id: str) -> list[Instance]:
        with self._data_guard:
            docs = sorted(self._docs.get(instance_id, {}).items(), reverse=True)
        return [_thaw(doc) for _, doc in docs]

    def exists(self, instance_id: str) -> bool:
        return bool(self._docs.get(instance_id))

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
        with self._data_guard:
            keys: Iterable[_Key]
            if instance_id is not None:
                keys = [(run, instance_id) for run in self._docs.get(instance_id, {})]
            elif wanted is not None:
                keys = [key for status in wanted for key in self._by_status.get(status, ())]
            elif workflow is not None:
                keys = list(self._by_workflow.get(workflow, ()))
            else:
                keys = list(self._facts)
            matching = sorted((key for key in keys if self._matches(self._facts[key], wanted, workflow, version)),
                              reverse=True)[:limit]
            docs = [self._docs[key[1]][key[0]] for key in matching]
        return [_thaw(doc) for doc in docs]

    @staticmethod
    def _matches(facts: _Facts, wanted: set[str] | None, workflow: str | None, version: int | None) -> bool:
        return ((wanted is None or facts.status in wanted) and (workflow is None or facts.workflow == workflow)
                and (version is None or facts.version == version))

    def due(self, now: datetime) -> list[RunRef]:
        with self._data_guard:
            keys = sorted((key for key, at in self._due.items() if at <= now), reverse=True)
        return [RunRef(instance_id, run) for run, instance_id in keys]

    def interrupted(self) -> list[RunRef]:
        with self._data_guard:
            keys = sorted(self._by_status.get("pending", set()) | self._by_status.get("running", set()),
                          reverse=True)
        return [RunRef(instance_id, run) for run, instance_id in keys]
