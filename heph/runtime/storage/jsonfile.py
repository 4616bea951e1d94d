"""``JsonFileStorage``: one human-readable JSON file per run, atomic durable writes, file locks.

Layout under the storage directory (directories 0700, files 0600)::

    instances/<key~value>/<run>.json   one file per run of an instance id
    instances/<key~value>/.lock         the id's lock (see ``locking``): every read-modify-write holds it
    index/status/<status>/<run>~<key~value>~<workflow>~<version>   empty marker files
    index/due/<yyyymmddThhmmssffffff>~<key~value>~<run>              timers and retries
    index/FORMAT                        written last by a rebuild: the index is complete

Run ids start with their creation time, so status markers sort newest last by name:
``list --limit N`` takes the N greatest names without parsing the others. An index in
an older format is rebuilt the first time a query needs it.

A write adds the new state's markers, then atomically replaces the instance file
(temporary file, fsync, rename), then removes the old state's markers; closing the
session fsyncs the directory once, making the session's renames durable. The index
is therefore always a superset of the truth: readers re-check every hit against the
instance file, markers cost no fsync, and a missing index is rebuilt from the
instance files.

A session holds the id's lock and lists its directory once; ``insert``/``update`` check
uniqueness (``heph.core.uniqueness``) against the runs it knows before writing anything. A
session opened with ``must_exist`` on an id without runs raises ``InstanceNotFound`` and creates
nothing (no directory, no lock file, not the store's layout). ``heph doctor`` works through
the maintenance methods (``index_complete``, ``markers``, ``present_markers``, ``instance_dirs``,
``instance_files``, ``is_busy``, ``quarantine``, ``rebuild_index``).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from heph.core import uniqueness
from heph.core.ids import check_id
from heph.core.instance import HEAD_FIELDS, STATUSES, Instance
from heph.errors import InstanceBusy, InstanceNotFound, StorageError
from heph.runtime.storage.base import RunRef, Session, Storage
from heph.runtime.storage.locking import InstanceLock, LockTimeout

log = logging.getLogger("heph")

STORE_FORMAT = "heph-json-store 1\n"
INDEX_FORMAT = "heph-index 2\n"
MAX_FILE_BYTES = 64 * 1024 * 1024
_DUE_FORMAT = "%Y%m%dT%H%M%S%f"
_WORKFLOW_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def id_dir_name(instance_id: str) -> str:
    """The directory name of an id: ``orderid::order42`` -> ``orderid~order42``."""
    return check_id(instance_id).replace("::", "~")


def _id_from_dir(name: str) -> str:
    return name.replace("~", "::")


def _due_name(due_at: str) -> str:
    return datetime.fromisoformat(due_at).astimezone(timezone.utc).strftime(_DUE_FORMAT)


def _status_marker(name: str) -> tuple[str, str, str, str] | None:
    """``(run, id dir, workflow, version)`` of a status marker's name; None for a stray file."""
    run, _, rest = name.partition("~")
    parts = rest.rsplit("~", 2)
    return (run, *parts) if len(parts) == 3 and run else None  # type: ignore[return-value]


def _marker_matches(name: str, workflow: str | None, version: int | None) -> bool:
    parsed = _status_marker(name)
    return parsed is not None and (workflow is None or parsed[2] == workflow) and \
        (version is None or parsed[3] == str(version))


def _as_ids(names: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Status markers' names as ``(instance id, run)``, each run once, skipping stray files."""
    seen = set()
    for name in names:
        parsed = _status_marker(name)
        if parsed is None or parsed[:2] in seen:
            continue
        seen.add(parsed[:2])
        instance_id = _id_from_dir(parsed[1])
        if _valid_id(instance_id):  # a stray file in the index is no hit
            yield instance_id, parsed[0]


def _is_run_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def _crash_points() -> dict[str, float]:
    """Test hook for crash injection: ``HEPH_CRASH_POINTS="before-rename:0.05,after-rename:0.05"``
    makes this process SIGKILL itself at those points with those probabilities."""
    spec = os.environ.get("HEPH_CRASH_POINTS", "")
    points = {}
    for item in filter(None, spec.split(",")):
        name, _, chance = item.partition(":")
        points[name.strip()] = float(chance or 1)
    return points


_CRASH = _crash_points()


def crash_point(name: str) -> None:
    """SIGKILL this process at ``name`` if the crash-injection hook asks for it (tests only)."""
    if _CRASH and name in _CRASH:
        import random
        import signal

        if random.random() < _CRASH[name]:
            os.kill(os.getpid(), signal.SIGKILL)


def replace_file(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename. A crash leaves the old
    content or the new one, never a mix; the rename itself is durable once the directory is
    fsynced (``write_durably``, or a session's close)."""
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    crash_point("before-rename")
    os.replace(tmp, path)
    crash_point("after-rename")


def write_durably(path: Path, data: bytes) -> None:
    """``replace_file``, then an fsync of the directory: durable when it returns."""
    replace_file(path, data)
    _fsync_dir(os.path.dirname(path))


def _make_dirs(directory: Path, top: Path) -> None:
    """``mkdir -p`` that gives every directory it creates from ``top`` down mode 0700
    (``Path.mkdir(parents=True)`` would give the parents the default mode, 0755 under umask 022)."""
    if directory == top:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    if not directory.parent.is_dir():
        _make_dirs(directory.parent, top)
    directory.mkdir(mode=0o700, exist_ok=True)


def _write_index_format(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, INDEX_FORMAT.encode())
    finally:
        os.close(fd)


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Every instance file is written by the standard library's encoder, built once (``json.dumps``
# would build one per call); with no ``indent`` it runs in C. ``check_circular=False``: the data
# is plain JSON data, with no cycles to look for.
_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(", ", ": ")).encode


def _dumps_field(value) -> str:
    """``_dumps``, with the ints, None and empty containers most fields hold encoded directly."""
    kind = value.__class__
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if not value and (kind is dict or kind is list):
        return "{}" if kind is dict else "[]"
    return _dumps(value)


_PREFIXES = tuple(f" {_dumps(field)}: " for field in HEAD_FIELDS)  # each field's line starts so
_CONTEXT = HEAD_FIELDS.index("context")
_BEFORE_CONTEXT, _AFTER_CONTEXT = _PREFIXES[:_CONTEXT], _PREFIXES[_CONTEXT + 1:]


def encode(instance: Instance, cache: dict | None = None) -> bytes:
    """The file content of a run: UTF-8 JSON with one field per line and one history entry
    per line — readable, diffable, and written by the standard library's C encoder (``indent=``
    would fall back to the pure-Python one, several times slower). ``cache`` keeps, by identity, what a
    session writes again and again: the lines of history entries (frozen), the initial
    context and each step's updates (replaced by the engine, never changed in place)."""
    head = instance.head()
    lines = [prefix + _dumps_field(value) for prefix, value in zip(_BEFORE_CONTEXT, head)]
    context = _context_json(instance.context, cache) if cache is not None else _dumps(head[_CONTEXT])
    lines.append(_PREFIXES[_CONTEXT] + context)
    lines += [prefix + _dumps_field(value) for prefix, value in zip(_AFTER_CONTEXT, head[_CONTEXT + 1:])]
    entries = ",\n".join(_history_line(entry, cache) for entry in instance.history)
    lines.append(f' "history": [\n{entries}\n ]' if instance.history else ' "history": []')
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def _context_json(context, cache: dict) -> str:
    """``_dumps`` of the context, with the initial context and each step's updates encoded once
    per session: the engine replaces them, never changes them in place, so they are cached by
    identity like history entries (a large start context is not encoded again at every step)."""
    steps = ", ".join(f"{_dumps(key)}: {_cached_json(value, cache)}"
                      for key, value in context.steps.items())
    return f'{{"initial": {_cached_json(context.initial, cache)}, "steps": {{{steps}}}}}'


def _cached_json(value, cache: dict) -> str:
    hit = cache.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = _dumps(value)
    cache[id(value)] = (value, text)  # the value is kept, so its id is not reused
    return text


def _history_line(entry, cache: dict | None) -> str:
    if cache is None or entry.error is not None:  # an error is a dict: it could change in place
        return f"  {_dumps(entry.to_dict())}"
    hit = cache.get(id(entry))
    if hit is not None and hit[0] is entry:
        return hit[1]
    line = f"  {_dumps(entry.to_dict())}"
    cache[id(entry)] = (entry, line)  # the entry is kept, so its id is not reused
    return line


def read_instance(path: Path) -> Instance:
    """Parse one instance file; ``StorageError`` naming the file if it is unreadable or corrupt."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StorageError(f"cannot read instance file {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise StorageError(f"instance file {path} is larger than {MAX_FILE_BYTES} bytes; refusing to load it")
    try:
        instance = Instance.from_dict(json.loads(data))
    except (ValueError, RecursionError) as exc:
        raise StorageError(
            f"instance file {path} is corrupt ({str(exc)[:200]}); it was left untouched: "
            f"move it aside or run `heph doctor --repair`"
        ) from None
    if path.stem != instance.run or path.parent.name != instance.id.replace("::", "~"):
        raise StorageError(f"instance file {path} holds run {instance.run} of {instance.id}, which belongs elsewhere")
    if not (_WORKFLOW_NAME.match(instance.workflow) and _valid_id(instance.id)):  # both end up in index file names
        raise StorageError(f"instance file {path} is corrupt (id {instance.id[:60]!r} or workflow "
                           f"{instance.workflow[:60]!r} is malformed); it was left untouched: move it aside "
                           f"or run `heph doctor --repair`")
    return instance


def _valid_id(instance_id: str) -> bool:
    try:
        check_id(instance_id)
    except ValueError:
        return False
    return True


def _run_names_in(directory: str | os.PathLike) -> set[str]:
    """The runs stored in an id's directory (file names without ``.json``); none if it is missing."""
    try:
        return {name[:-5] for name in os.listdir(directory) if _is_run_name(name)}
    except FileNotFoundError:
        return set()


class _FileSession(Session):
    """Writes replace the run's file atomically (data fsynced); ``close`` fsyncs the directory once,
    making every rename of the session durable before the command that opened it returns.

    The id's directory is listed at most once per session (no other process adds a run while the
    lock is held): ``names`` is that listing, when the session was opened with one."""

    def __init__(self, store: JsonFileStorage, instance_id: str, directory: Path, names: set[str] | None = None):
        self._store = store
        self._id = instance_id
        self._dir = directory
        self._prefix = f"{directory}{os.sep}"  # run files' paths are built as text: pathlib costs more
        self._first_run = False  # writes the id's first run: the directory's own entry must be durable
        self._names = names  # every run of the id (listed under the lock, plus the runs inserted since)
        self._known: dict[str, Instance] = {}  # run -> as stored
        self._complete = False  # _known holds every run
        self._lines: dict = {}  # encode's cache: history lines, initial context, steps' updates
        self._renamed = False

    def close(self) -> None:
        if not self._renamed:
            return
        try:
            _fsync_dir(self._dir)
            if self._first_run:  # even if an earlier process made the directory (and died before its fsync)
                _fsync_dir(self._dir.parent)
        except OSError as exc:
            raise StorageError(f"cannot make the writes to {self._dir} durable: {exc.strerror}") from None
        self._renamed = False

    def _listing(self) -> set[str]:
        if self._names is None:
            self._names = _run_names_in(self._dir)
        return self._names

    def runs(self) -> list[Instance]:
        found = [read_instance(Path(f"{self._prefix}{run}.json")) for run in sorted(self._listing(), reverse=True)]
        self._known = {r.run: r for r in found}
        self._complete = True
        return found

    def _others(self) -> Iterable[Instance]:
        """Every run of the id as stored (read once per session), for the uniqueness rule."""
        return self._known.values() if self._complete else self.runs()

    def insert(self, instance: Instance) -> None:
        path = self._path(instance)
        names = self._listing()
        if instance.run in names:
            raise StorageError(f"run {instance.run} of {self._id} already exists")
        if instance.status in uniqueness.ACTIVE:
            uniqueness.check(instance, self._others())
        if not names:  # the id's first run
            self._first_run = True
        self._store._touch(self._markers(instance))
        self._replace(path, instance)
        names.add(instance.run)

    def update(self, instance: Instance) -> None:
        path = self._path(instance)
        stored = self._known.get(instance.run)
        if stored is None:
            if self._names is not None and instance.run not in self._names:
                raise StorageError(f"run {instance.run} of {self._id} does not exist")
            stored = read_instance(Path(path))
        if instance.status in uniqueness.ACTIVE:
            uniqueness.check(instance, self._others())
        old = self._markers(stored)
        new = self._markers(instance)
        self._store._touch(new - old)
        self._replace(path, instance)
        crash_point("before-marker-cleanup")
        self._store._remove(old - new)

    def _path(self, instance: Instance) -> str:
        if instance.id != self._id:
            raise StorageError(f"a session of {self._id} cannot write run {instance.run} of {instance.id}")
        return f"{self._prefix}{instance.run}.json"

    def _markers(self, instance: Instance) -> set[str]:
        return self._store._markers(instance, self._dir.name)

    def _replace(self, path: str, instance: Instance) -> None:
        try:
            replace_file(path, encode(instance, self._lines))
        except OSError as exc:
            raise StorageError(f"cannot write instance file {path}: {exc.strerror}") from None
        self._renamed = True
        self._known[instance.run] = instance


class JsonFileStorage(Storage):
    """The default store: a directory of JSON files (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike, lock_timeout: float = 30.0):
        self.root = Path(path)
        self.instances = self.root / "instances"
        self.index = self.root / "index"
        self._format = os.path.join(self.root, "FORMAT")
        self.lock_timeout = lock_timeout

    # -- layout -----------------------------------------------------------------

    def _ensure_layout(self) -> None:
        if os.path.exists(self._format):
            return
        for directory in (self.root, self.instances, self.index / "due"):
            _make_dirs(directory, self.root)
        for status in STATUSES:
            _make_dirs(self.index / "status" / status, self.root)
        if not (self.index / "FORMAT").exists():
            _write_index_format(self.index / "FORMAT")
        write_durably(self.root / "FORMAT", STORE_FORMAT.encode())

    def markers(self, instance: Instance) -> set[str]:
        """The index markers ``instance`` should have, as paths under ``index/``
        (``status/<status>/<name>``, and ``due/<name>`` for each timer or retry)."""
        return self._markers(instance)

    def _markers(self, instance: Instance, dir_name: str | None = None) -> set[str]:
        """``markers(instance)`` (``dir_name``: its id's directory name, if known)."""
        head = dir_name or id_dir_name(instance.id)
        found = {f"status/{instance.status}/{instance.run}~{head}~{instance.workflow}~{instance.version}"}
        if instance.status in ("waiting", "running"):
            for wait in instance.waits.values():
                if wait.get("due_at"):
                    found.add(f"due/{_due_name(wait['due_at'])}~{head}~{instance.run}")
        return found

    def _touch(self, markers: Iterable[str]) -> None:
        prefix = f"{self.index}{os.sep}"
        for marker in markers:
            try:
                os.close(os.open(prefix + marker, os.O_CREAT | os.O_WRONLY, 0o600))
            except FileNotFoundError:
                _make_dirs((self.index / marker).parent, self.root)
                os.close(os.open(prefix + marker, os.O_CREAT | os.O_WRONLY, 0o600))

    def _remove(self, markers: Iterable[str]) -> None:
        prefix = f"{self.index}{os.sep}"
        for marker in markers:
            try:
                os.unlink(prefix + marker)
            except FileNotFoundError:
                continue

    def instance_lock(self, directory: str | os.PathLike, timeout: float) -> InstanceLock:
        """The lock of an id's directory (``<directory>/.lock``), not yet taken: every
        read-modify-write of the id's runs holds it."""
        return InstanceLock(os.path.join(directory, ".lock"), timeout)

    def is_busy(self, directory: str | os.PathLike) -> bool:
        """Whether another process holds the lock of an id's directory right now (creates nothing:
        a missing lock file is a free lock)."""
        lock = self.instance_lock(directory, 0)
        try:
            if not lock.try_acquire(create=False):
                return True
        except FileNotFoundError:
            return False
        lock.release()
        return False

    # -- the contract -------------------------------------------------------------

    @contextmanager
    def session(self, instance_id: str, timeout: float | None = None, *,
                must_exist: bool = False) -> Iterator[Session]:
        """A session holding the id's lock. With ``must_exist``, an id without runs raises
        ``InstanceNotFound`` and nothing is created (no directory, no lock file); otherwise the
        directory is listed once, under the lock (twice when the lock is held by someone else:
        once to tell "not found" from "busy" without waiting, once when it is ours)."""
        directory = self.instances / id_dir_name(instance_id)
        wait = self.lock_timeout if timeout is None else timeout
        names: set[str] | None = None
        if must_exist:
            lock, names = self._lock_existing(instance_id, directory, wait)
            self._ensure_layout()
        else:
            self._ensure_layout()
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, 0o700)
            lock = self.instance_lock(directory, wait)
            self._acquire(lock, instance_id)
        session = _FileSession(self, instance_id, directory, names)
        try:
            yield session
        finally:
            try:
                session.close()
            finally:
                lock.release()

    def _acquire(self, lock: InstanceLock, instance_id: str) -> None:
        try:
            lock.acquire()
        except LockTimeout:
            raise InstanceBusy(instance_id=instance_id) from None

    def _lock_existing(self, instance_id: str, directory: Path, wait: float) -> tuple[InstanceLock, set[str]]:
        """The id's lock, taken, and its runs listed under it; ``InstanceNotFound`` (nothing
        created, the lock not held) if it has none."""
        lock = self.instance_lock(directory, wait)
        try:
            free = lock.try_acquire(create=False)
        except FileNotFoundError:  # no directory, or one without a lock file (made by hand, copied)
            free = False
        if free:
            names = _run_names_in(directory)
            if names:
                return lock, names
            lock.release()
            raise InstanceNotFound(instance_id=instance_id)
        # held (perhaps by a start still in its first step, which has stored nothing), or no lock
        # file: not found needs no wait
        if not _run_names_in(directory):
            raise InstanceNotFound(instance_id=instance_id)
        self._acquire(lock, instance_id)
        return lock, _run_names_in(directory)  # the holder may have added a run meanwhile

    def runs(self, instance_id: str) -> list[Instance]:
        directory = self.instances / id_dir_name(instance_id)
        return [read_instance(directory / f"{run}.json") for run in sorted(_run_names_in(directory), reverse=True)]

    def _index_ready(self) -> bool:
        if not self.instances.exists():
            return False
        if not self.index_complete():
            log.warning("the index of %s is missing or in an older format; rebuilding it from the instance files",
                        self.root)
            self.rebuild_index()
        return True

    def index_complete(self) -> bool:
        """Whether ``index/FORMAT`` says the index is complete and in this version's format."""
        try:
            return (self.index / "FORMAT").read_text() == INDEX_FORMAT
        except (OSError, UnicodeDecodeError):
            return False

    def _listdir(self, directory: Path) -> list[str]:
        try:
            return os.listdir(directory)
        except FileNotFoundError:
            return []

    def query(
        self,
        *,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        instance_id: str | None = None,
        version: int | None = None,
        limit: int | None = None,
    ) -> list[Instance]:
        wanted = set(statuses) if statuses is not None else set(STATUSES)
        if instance_id is not None:
            return self._verified(((instance_id, run) for run in self._run_names(instance_id)),
                                  wanted, workflow, version, limit)
        if not self._index_ready():
            return []
        names: list[str] = []
        for status in wanted & set(STATUSES):
            names += self._listdir(self.index / "status" / status)
        if workflow is not None or version is not None:
            names = [n for n in names if _marker_matches(n, workflow, version)]
        if limit is not None and len(names) > 4 * limit + 64:
            # names sort by run, i.e. by creation time: the greatest few are enough, unless stale
            # markers hide too many of them
            found = self._verified(_as_ids(heapq.nlargest(2 * limit + 32, names)), wanted, workflow, version, limit)
            if len(found) >= limit:
                return found
        return self._verified(_as_ids(sorted(names, reverse=True)), wanted, workflow, version, limit)

    def _verified(self, candidates: Iterable[tuple[str, str]], wanted: set[str], workflow: str | None,
                  version: int | None, limit: int | None) -> list[Instance]:
        """Read the candidate runs in order; keep those whose file really matches, up to ``limit``."""
        found: list[Instance] = []
        for cid, run in candidates:
            path = self.instances / id_dir_name(cid) / f"{run}.json"
            try:
                instance = read_instance(path)
            except StorageError as exc:
                if path.exists():
                    log.warning("skipping: %s", exc)
                continue
            if (
                instance.status in wanted
                and (workflow is None or instance.workflow == workflow)
                and (version is None or instance.version == version)
            ):
                found.append(instance)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def exists(self, instance_id: str) -> bool:
        """Whether the id's directory holds a run file (its listing alone: no file is read)."""
        try:
            with os.scandir(self.instances / id_dir_name(instance_id)) as entries:
                return any(_is_run_name(entry.name) for entry in entries)
        except FileNotFoundError:
            return False

    def _run_names(self, instance_id: str) -> list[str]:
        return sorted(_run_names_in(self.instances / id_dir_name(instance_id)), reverse=True)

    def due(self, now: datetime) -> list[RunRef]:
        if not self._index_ready():
            return []
        limit = now.astimezone(timezone.utc).strftime(_DUE_FORMAT)
        refs = set()
        for name in self._listdir(self.index / "due"):
            stamp, _, rest = name.partition("~")
            if stamp <= limit and "~" in rest:
                id_part, _, run = rest.rpartition("~")
                if _valid_id(_id_from_dir(id_part)):
                    refs.add(RunRef(_id_from_dir(id_part), run))
        return sorted(refs)

    def interrupted(self) -> list[RunRef]:
        if not self._index_ready():
            return []
        names = [name for status in ("pending", "running") for name in self._listdir(self.index / "status" / status)]
        return sorted(RunRef(instance_id, run) for instance_id, run in _as_ids(names))

    # -- maintenance (``heph doctor``) ----------------------------------------------

    def instance_dirs(self) -> list[Path]:
        """Every id's directory under ``instances/``, sorted by name (none before the first write)."""
        return [self.instances / name for name in sorted(self._listdir(self.instances))
                if (self.instances / name).is_dir()]

    def instance_files(self, directory: str | os.PathLike) -> tuple[list[Path], list[Path]]:
        """The files of an id's directory, sorted by name: its run files, and the temporary files
        left by interrupted writes (``.<run>.json.<pid>.tmp``). The lock file is neither."""
        names = sorted(self._listdir(Path(directory)))
        return ([Path(directory, name) for name in names if _is_run_name(name)],
                [Path(directory, name) for name in names if name.endswith(".tmp")])

    def present_markers(self) -> set[str]:
        """Every marker file in the index, as paths under ``index/`` (the form ``markers`` returns)."""
        return {f"{sub}/{name}" for sub in ["due"] + [f"status/{s}" for s in STATUSES]
                for name in self._listdir(self.index / sub)}

    def quarantine(self, path: str | os.PathLike) -> str | None:
        """Move a file of an id's directory to ``quarantine/<id dir>/``, under the id's lock (never
        under a live writer's feet) and a name that overwrites nothing (``<name>.1``, ...); return
        where it went, None if the file was gone. Nothing is deleted."""
        path = Path(path)
        folder = self.root / "quarantine" / path.parent.name
        with self.instance_lock(path.parent, self.lock_timeout):
            if not path.exists():
                return None
            _make_dirs(folder, self.root)  # 0700 for quarantine/ too, whatever the umask
            target = folder / path.name
            counter = 1
            while target.exists():
                target = folder / f"{path.name}.{counter}"
                counter += 1
            shutil.move(str(path), str(target))
            return str(target)


    def rebuild_index(self) -> dict:
        """Make the index match the instance files (each id under its lock); return counts."""
        self._ensure_layout()
        for status in STATUSES:
            _make_dirs(self.index / "status" / status, self.root)
        _make_dirs(self.index / "due", self.root)
        stats = {"instances": 0, "added": 0, "removed": 0, "corrupt": 0}
        with InstanceLock(self.index / ".lock", timeout=-1):  # one rebuild at a time; wait as long as it takes
            existing: dict[str, set[str]] = {}  # id dir -> its markers; older formats' names own nothing
            strays: list[str] = []
            for sub in ["due"] + [f"status/{s}" for s in STATUSES]:
                for name in self._listdir(self.index / sub):
                    if sub == "due":
                        owner = name.partition("~")[2].rpartition("~")[0]
                    else:
                        parsed = _status_marker(name)
                        owner = parsed[1] if parsed is not None else ""
                    if owner and _valid_id(_id_from_dir(owner)):
                        existing.setdefault(owner, set()).add(f"{sub}/{name}")
                    else:
                        strays.append(f"{sub}/{name}")
            self._remove(strays)
            stats["removed"] += len(strays)
            dirs = set(self._listdir(self.instances)) | set(existing)
            for dir_name in sorted(dirs):
                directory = self.instances / dir_name
                if not directory.is_dir():
                    self._remove(existing.get(dir_name, ()))
                    stats["removed"] += len(existing.get(dir_name, ()))
                    continue
                with self.instance_lock(directory, self.lock_timeout):
                    wanted: set[str] = set()
                    for name in self._listdir(directory):
                        if not _is_run_name(name):
                            continue
                        try:
                            wanted |= self._markers(read_instance(directory / name))
                            stats["instances"] += 1
                        except StorageError:
                            stats["corrupt"] += 1
                    have = existing.get(dir_name, set())
                    self._touch(wanted - have)
                    self._remove(have - wanted)
                    stats["added"] += len(wanted - have)
                    stats["removed"] += len(have - wanted)
            _write_index_format(self.index / "FORMAT")
        return stats
