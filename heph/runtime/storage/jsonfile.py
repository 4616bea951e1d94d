"""``JsonFileStorage``: one human-readable JSON file per run, atomic durable writes, file locks.

Layout under the storage directory (directories 0700, files 0600)::

    instances/<key~value>/<run>.json   one file per run of an instance id
    instances/<key~value>/.lock         the id's lock (see ``locking``): every read-modify-write holds it
    index/status/<status>/<run>~<key~value>~<workflow>~<version>   empty marker files
    index/due/<yyyymmddThhmmssffffff>~<key~value>~<run>              timers and retries
    index/FORMAT                        written last by a rebuild: the index is complete
    quarantine/<folder>/<name>          what ``heph doctor --repair`` moved aside (nothing is deleted)

Run ids start with their creation time, so status markers sort newest last by name:
``list --limit N`` takes the N greatest names without parsing the others. An index in
an older format is rebuilt the first time a query needs it.

A write adds the new state's markers, then atomically replaces the instance file
(temporary file, fsync, rename), then removes the old state's markers; closing the
session fsyncs the directory once, making the session's renames durable. The index
is therefore always a superset of the truth: readers re-check every hit against the
instance file, markers cost no fsync, and a missing index is rebuilt from the
instance files. A marker that cannot be created fails the write before anything is written;
one that cannot be removed after the write is only a warning (a stale marker: readers skip it,
``heph doctor`` counts it, ``--repair`` removes it). A failure after the rename (the fsync of
the directory) raises ``MaybeApplied``: the write may be on the disk.

The store is the user's own: a store directory owned by another user, writable by group or
others, not a directory, or a system directory (``/``, ``/etc``, ``/tmp``, ...) is refused
when the store is made. Inside it heph never follows a symbolic link: files are opened with
``O_NOFOLLOW`` (temporary files with ``O_CREAT|O_EXCL|O_NOFOLLOW`` under a fresh name), an id's
directory is opened once per session with ``O_DIRECTORY|O_NOFOLLOW`` and its files are
written and renamed through that descriptor, and the layout's directories are checked with
``lstat`` before first use; a link where a file or directory of the store should be is a
``StorageError`` naming it (``heph doctor`` reports it, ``--repair`` moves the link itself to
quarantine). Every failure of the file system is a ``StorageError`` naming the path and the OS
error, on one line. No document larger than ``MAX_FILE_BYTES`` is ever written (``unstorable``
says so before a step's result is acknowledged): everything written can be read back.

A session holds the id's lock and lists its directory once; ``insert``/``update`` check
uniqueness (``heph.core.uniqueness``) against the runs it knows before writing anything. A
session opened with ``must_exist`` on an id without runs raises ``InstanceNotFound`` and creates
nothing (no directory, no lock file, not the store's layout). ``heph doctor`` works through
the maintenance methods (``index_complete``, ``markers``, ``present_markers``, ``instance_dirs``,
``instance_files``, ``has_instances``, ``links``, ``is_busy``, ``quarantine``, ``rebuild_index``).
"""

from __future__ import annotations

import errno
import functools
import glob
import heapq
import json
import logging
import os
import re
import stat
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from heph.core import uniqueness
from heph.core.ids import check_id
from heph.core.instance import HEAD_FIELDS, STATUSES, Instance
from heph.errors import InstanceBusy, InstanceNotFound, MaybeApplied, StorageError
from heph.runtime.storage.base import RunRef, ScheduleSession, Session, Storage
from heph.runtime.storage.locking import LINK_ADVICE, InstanceLock, LockTimeout, os_error

log = logging.getLogger("heph")

STORE_FORMAT = "heph-json-store 1\n"
INDEX_FORMAT = "heph-index 2\n"
MAX_FILE_BYTES = 64 * 1024 * 1024
_MB = 1024 * 1024
_DUE_FORMAT = "%Y%m%dT%H%M%S%f"
_WORKFLOW_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW  # a directory, never through a link
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW             # a new file, never through a link
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)         # a FIFO planted here cannot block
_SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/var", "/tmp")


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


# -- failures as one line ---------------------------------------------------------------------


def _failure(what: str, path: str | os.PathLike, exc: OSError) -> StorageError:
    """``cannot <what> <path>: [Errno N] <message>`` (a link met through ``O_NOFOLLOW``: said so)."""
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(path)):
        return _link_error(path)
    return StorageError(f"cannot {what} {path}: {os_error(exc)}")


def _link_error(path: str | os.PathLike) -> StorageError:
    return StorageError(f"{path} is a symbolic link, where the store keeps a file or directory of its own; "
                        f"{LINK_ADVICE}")


def _is_link(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _close(fd: int) -> None:
    """Close a descriptor heph only read from (an error closing it loses nothing)."""
    with suppress(OSError):
        os.close(fd)


# -- the file system, without following links ----------------------------------------------------

_pid = os.getpid()  # in temporary files' names; os.getpid() is a system call


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def replace_file(path: str | os.PathLike, data: bytes, dir_fd: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename. A crash leaves the old
    content or the new one, never a mix; the rename itself is durable once the directory is
    fsynced (``write_durably``, or a session's close). ``dir_fd``: the open directory of ``path``,
    through which the temporary file is made and renamed.

    The temporary file is new (``O_CREAT|O_EXCL|O_NOFOLLOW``: never a file or link already
    there; a name left by a dead process with the same pid is skipped). Raises ``OSError`` only
    when nothing was replaced, with the temporary file removed."""
    head, name = os.path.split(os.fspath(path))
    base = "" if dir_fd is not None else head + os.sep if head else ""
    for attempt in range(1000):
        tmp = f"{base}.{name}.{_pid}.tmp" if not attempt else f"{base}.{name}.{_pid}-{attempt}.tmp"
        try:
            fd = os.open(tmp, _CREATE, 0o600, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary file name", tmp)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("before-rename")
        os.replace(tmp, name if dir_fd is not None else path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    crash_point("after-rename")


def write_durably(path: Path, data: bytes) -> None:
    """``replace_file``, then an fsync of the directory: durable when it returns."""
    replace_file(path, data)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str | os.PathLike, fd: int | None = None) -> None:
    """fsync the directory ``path`` (through ``fd``, if it is open already; else opened without
    following a link)."""
    if fd is not None:
        os.fsync(fd)
        return
    fd = os.open(path, _OPEN_DIR)
    try:
        os.fsync(fd)
    finally:
        _close(fd)


def _check_dir(path: str | os.PathLike) -> None:
    """``StorageError`` unless ``path`` is a directory itself (not a link to one)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise _failure("inspect", path, exc) from None
    if stat.S_ISLNK(mode):
        raise _link_error(path)
    if not stat.S_ISDIR(mode):
        raise StorageError(f"{path} should be a directory of the store but is not; move it aside "
                           f"or run `heph doctor --repair`")


def _made(path: Path) -> bool:
    """Create the directory ``path`` (0700); False if something is there already (checked by the caller)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def _make_dirs(directory: Path, top: Path) -> None:
    """``mkdir -p`` of ``directory`` under the store's root ``top``: every directory it creates gets
    mode 0700 (``Path.mkdir(parents=True)`` would give the parents the default mode, 0755 under umask
    022), and every one that exists already, from ``top`` down, must be a directory itself: a link
    is never followed. The root's own parents (outside the store) are made as ``mkdir -p`` would."""
    try:
        relative = directory.relative_to(top)
    except ValueError:
        raise StorageError(f"{directory} is not inside the store {top}") from None
    path = top
    for part in ("", *relative.parts):
        path = path / part if part else path
        try:
            if _made(path):
                continue
        except FileNotFoundError as exc:
            if part:
                raise _failure("create directory", path, exc) from None
            try:  # the root's parents: the user's own path
                os.makedirs(top.parent, exist_ok=True)
                if _made(path):
                    continue
            except OSError as again:
                raise _failure("create directory", path, again) from None
        except OSError as exc:
            raise _failure("create directory", path, exc) from None
        if part:
            _check_dir(path)
        elif not os.path.isdir(path):  # the root may be the user's link to a directory
            raise StorageError(f"storage path {path} is not a directory")


def _names(path: str | os.PathLike) -> list[str]:
    """The names in the directory ``path`` (opened without following a link); none if it is missing."""
    try:
        fd = os.open(path, _OPEN_DIR)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _failure("list directory", path, exc) from None
    try:
        return os.listdir(fd)
    except OSError as exc:
        raise _failure("list directory", path, exc) from None
    finally:
        _close(fd)


def _entries(path: str | os.PathLike) -> list[tuple[str, str]] | None:
    """``(name, kind)`` of every entry of the directory ``path``, kind ``dir``, ``link`` or
    ``file`` (``file``: anything else), sorted by name; None if ``path`` is missing or is a link."""
    try:
        fd = os.open(path, _OPEN_DIR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_link(path):
            return None
        raise _failure("list directory", path, exc) from None
    try:
        with os.scandir(fd) as scan:
            return sorted((entry.name, "link" if entry.is_symlink() else
                           "dir" if entry.is_dir(follow_symlinks=False) else "file") for entry in scan)
    except OSError as exc:
        raise _failure("list directory", path, exc) from None
    finally:
        _close(fd)


def _read_small(path: str | os.PathLike, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a regular file (never through a link); None if it is missing."""
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _failure("read", path, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StorageError(f"{path} should be a regular file but is not; move it aside "
                               f"or run `heph doctor --repair`")
        return os.read(fd, limit)
    except OSError as exc:
        raise _failure("read", path, exc) from None
    finally:
        _close(fd)


@functools.lru_cache(maxsize=1)
def _system_dirs() -> frozenset[str]:
    found = set()
    for path in (*_SYSTEM_DIRS, *glob.glob("/lib*")):
        found |= {path, os.path.realpath(path)}
    return frozenset(found)


def check_store_path(path: str | os.PathLike) -> None:
    """Refuse (``StorageError``) a store path heph must not use: a system directory, something
    that is not a directory, or a directory owned by another user or writable by group or
    others. A path that does not exist yet is fine: heph makes it, 0700."""
    text = os.fspath(path)
    where = os.path.abspath(text)
    if where in _system_dirs() or os.path.realpath(where) in _system_dirs():
        raise StorageError(f"refusing to use {where} as a heph store: it is a system directory; "
                           f"give the store a directory of its own (storage.path in heph.yaml, e.g. .heph)")
    try:
        info = os.stat(text)  # the root may be the user's own link to a directory
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise StorageError(f"storage path {text} is not a directory: a part of it is a file") from None
    except OSError as exc:
        raise _failure("inspect the store directory", text, exc) from None
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"storage path {text} is not a directory: give the store a directory of its own "
                           f"(storage.path in heph.yaml, e.g. .heph)")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise StorageError(f"store directory {text} belongs to uid {info.st_uid}, not to you (uid {uid}); "
                           f"heph only uses a store it owns: run heph as its owner, or copy the store")
    if info.st_mode & 0o022:
        raise StorageError(f"store directory {text} is writable by group or others (mode "
                           f"{stat.S_IMODE(info.st_mode):04o}); heph only uses a private store: "
                           f"run chmod go-w {text}")


def _write_index_format(path: Path) -> None:
    """Write ``index/FORMAT`` (atomically, replacing a link rather than writing through it)."""
    try:
        replace_file(path, INDEX_FORMAT.encode())
    except OSError as exc:
        raise _failure("write", path, exc) from None
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


class CorruptFile(StorageError):
    """An instance file that holds no valid instance document (``problem`` says why); an I/O
    error while reading one is a plain ``StorageError``: the file may be fine."""

    path: str = ""
    problem: str = ""

    def describe(self) -> str:
        return (f"instance file {self.path} {self.problem}; it was left untouched: move it aside or run "
                f"`heph doctor --repair`")


def read_instance(path: Path, dir_fd: int | None = None) -> Instance:
    """Parse one instance file; ``CorruptFile`` if it is corrupt, ``StorageError`` if it cannot be read
    (a link, a FIFO or a directory in its place included: it is never followed nor waited on).
    The file is opened through its directory, itself opened without following a link (``dir_fd``:
    that directory, already open)."""
    if dir_fd is None:
        try:
            parent = os.open(path.parent, _OPEN_DIR)
        except OSError as exc:
            raise _failure("read instance file", path, exc) if exc.errno != errno.ENOTDIR or \
                not _is_link(path.parent) else _link_error(path.parent) from None
        try:
            return _read_instance_at(path, parent)
        finally:
            _close(parent)
    return _read_instance_at(path, dir_fd)


def _read_instance_at(path: Path, dir_fd: int) -> Instance:
    try:
        fd = os.open(path.name, _READ, dir_fd=dir_fd)
    except OSError as exc:
        raise _failure("read instance file", path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptFile(path=str(path), problem="is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise CorruptFile(path=str(path), problem=f"is larger than {MAX_FILE_BYTES} bytes")
        data = os.read(fd, info.st_size + 1)
        while len(data) <= info.st_size:  # a short read (or a file growing under an outside writer)
            more = os.read(fd, MAX_FILE_BYTES + 1 - len(data))
            if not more:
                break
            data += more
    except OSError as exc:
        raise _failure("read instance file", path, exc) from None
    finally:
        _close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise CorruptFile(path=str(path), problem=f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        instance = Instance.from_dict(json.loads(data))
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(path=str(path), problem=f"is corrupt ({str(exc)[:200]})") from None
    if path.stem != instance.run or path.parent.name != instance.id.replace("::", "~"):
        raise CorruptFile(path=str(path), problem=f"holds run {instance.run} of {instance.id}, which belongs elsewhere")
    if not (_WORKFLOW_NAME.match(instance.workflow) and _valid_id(instance.id)):  # both end up in index file names
        raise CorruptFile(path=str(path), problem=f"is corrupt (id {instance.id[:60]!r} or workflow "
                                                  f"{instance.workflow[:60]!r} is malformed)")
    return instance


def too_large(size: int) -> str | None:
    """Why a document of ``size`` bytes cannot be stored (None if it can)."""
    if size <= MAX_FILE_BYTES:
        return None
    return (f"the instance would be {size / _MB:.1f} MB of JSON, more than the store's "
            f"{MAX_FILE_BYTES // _MB} MB limit")


def _valid_id(instance_id: str) -> bool:
    try:
        check_id(instance_id)
    except ValueError:
        return False
    return True


def _run_names_in(directory: str | os.PathLike | int, path: str | os.PathLike | None = None) -> set[str]:
    """The runs stored in an id's directory (file names without ``.json``); none if it is missing.
    ``directory``: its path, or its open descriptor (then ``path`` names it in errors)."""
    if isinstance(directory, int):
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise _failure("list directory", path or "?", exc) from None
    else:
        names = _names(directory)
    return {name[:-5] for name in names if _is_run_name(name)}


_SCHEDULE_NAME_RE = re.compile(r"[a-z0-9_-]{1,200}\Z")


def _read_state(path: Path) -> dict | None:
    """A schedule's state file: None if there is none; ``CorruptFile`` if it is not one."""
    raw = _read_small(path, 1 << 20)
    if raw is None:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise CorruptFile(f"schedule state {path} is corrupt: not a JSON object", path=str(path),
                          problem="not a JSON object")
    return state


class _FileScheduleSession(ScheduleSession):
    def __init__(self, directory: Path, dir_fd: int):
        self._dir, self._fd = directory, dir_fd

    def state(self) -> dict | None:
        return _read_state(self._dir / "state.json")

    def save(self, state: dict) -> None:
        path = self._dir / "state.json"
        try:
            replace_file(path, json.dumps(state, ensure_ascii=False).encode(), dir_fd=self._fd)
        except OSError as exc:
            raise _failure("write schedule state", path, exc) from None
        try:
            _fsync_dir(self._dir, self._fd)
        except OSError as exc:
            raise MaybeApplied(path=str(path), instance_id=self._dir.name,
                               reason=f"the state is in place, but the fsync of its directory failed "
                                      f"({os_error(exc)})") from None


class _FileSession(Session):
    """Writes replace the run's file atomically (data fsynced); ``close`` fsyncs the directory once,
    making every rename of the session durable before the command that opened it returns.

    The id's directory is opened once (``dir_fd``, without following a link): its listing, the
    writes and renames of its files and its fsync go through that descriptor. It is listed at
    most once per session (no other process adds a run while the lock is held): ``names`` is that
    listing, when the session was opened with one."""

    def __init__(self, store: JsonFileStorage, instance_id: str, directory: Path, dir_fd: int,
                 names: set[str] | None = None):
        self._store = store
        self._id = instance_id
        self._dir = directory
        self._fd = dir_fd
        self._prefix = f"{directory}{os.sep}"  # run files' paths are built as text: pathlib costs more
        self._first_run = False  # writes the id's first run: the directory's own entry must be durable
        self._names = names  # every run of the id (listed under the lock, plus the runs inserted since)
        self._known: dict[str, Instance] = {}  # run -> as stored
        self._complete = False  # _known holds every run
        self._lines: dict = {}  # encode's cache: history lines, initial context, steps' updates
        self._renamed = False
        self._announced = False  # .busy holds this session's note (emptied when it ends)

    def close(self) -> None:
        """Make the session's renames durable; ``MaybeApplied`` if that fails (they may be on disk)."""
        if not self._renamed:
            return
        self._renamed = False
        synced = self._dir
        try:
            _fsync_dir(synced, self._fd)
            if self._first_run:  # even if an earlier process made the directory (and died before its fsync)
                synced = self._dir.parent
                _fsync_dir(synced)
        except OSError as exc:
            raise MaybeApplied(instance_id=self._id, path=str(synced),
                               reason=f"the write is in place, but the fsync of its directory failed "
                                      f"({os_error(exc)})") from None

    def announce(self, note: dict) -> None:
        """Write the note into ``.busy`` in the id's directory (no fsync: a note means nothing
        after a crash, when the lock is free again). The file is made once and then only
        rewritten and emptied, never removed: the directory, which the session fsyncs, does not
        change. A note that cannot be written is only not shown."""
        data = json.dumps(note, ensure_ascii=False).encode("utf-8", "backslashreplace")
        try:
            fd = os.open(".busy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600, dir_fd=self._fd)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("could not write the busy note of %s: %s", self._id, os_error(exc))
            return
        self._announced = True

    def forget_stale_note(self) -> None:
        """Empty a note a killed holder left (``.busy`` must speak for this session only)."""
        try:
            left = os.stat(".busy", dir_fd=self._fd, follow_symlinks=False).st_size
        except OSError:
            return
        if left:
            self._announced = True
            self.withdraw()

    def withdraw(self) -> None:
        """Empty this session's note, if it wrote one (an empty ``.busy`` says nothing)."""
        if self._announced:
            self._announced = False
            with suppress(OSError):
                os.close(os.open(".busy", os.O_WRONLY | os.O_TRUNC | _NOFOLLOW, dir_fd=self._fd))

    def mail(self) -> list[dict]:
        return self._store._mail_of(self._dir.name)

    def drop_mail(self, ids: Iterable[str]) -> None:
        self._store._drop_mail(self._dir.name, ids)

    def _listing(self) -> set[str]:
        if self._names is None:
            self._names = _run_names_in(self._fd, self._dir)
        return self._names

    def runs(self) -> list[Instance]:
        found = [read_instance(Path(f"{self._prefix}{run}.json"), self._fd)
                 for run in sorted(self._listing(), reverse=True)]
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
        data = self._encode(path, instance)
        created = self._store._touch(self._markers(instance))
        try:
            self._replace(path, instance, data)
        except BaseException:
            self._store._untouch(created)
            raise
        if not names:  # the id's first run
            self._first_run = True
        names.add(instance.run)

    def update(self, instance: Instance) -> None:
        path = self._path(instance)
        stored = self._known.get(instance.run)
        if stored is None:
            if self._names is not None and instance.run not in self._names:
                raise StorageError(f"run {instance.run} of {self._id} does not exist")
            stored = read_instance(Path(path), self._fd)
        if instance.status in uniqueness.ACTIVE:
            uniqueness.check(instance, self._others())
        data = self._encode(path, instance)
        old = self._markers(stored)
        new = self._markers(instance)
        created = self._store._touch(new - old)
        try:
            self._replace(path, instance, data)
        except BaseException:
            self._store._untouch(created)
            raise
        crash_point("before-marker-cleanup")
        self._store._remove(old - new)  # the write is done: a marker left behind is only stale

    def _path(self, instance: Instance) -> str:
        if instance.id != self._id:
            raise StorageError(f"a session of {self._id} cannot write run {instance.run} of {instance.id}")
        return f"{self._prefix}{instance.run}.json"

    def _markers(self, instance: Instance) -> set[str]:
        return self._store._markers(instance, self._dir.name)

    def _encode(self, path: str, instance: Instance) -> bytes:
        """The file content of ``instance``; ``StorageError`` (nothing written) if it is too large
        to be read back."""
        data = encode(instance, self._lines)
        why = too_large(len(data))
        if why is not None:
            raise StorageError(f"cannot write instance file {path}: {why}")
        return data

    def _replace(self, path: str, instance: Instance, data: bytes) -> None:
        try:
            replace_file(path, data, self._fd)
        except OSError as exc:
            raise _failure("write instance file", path, exc) from None
        self._renamed = True
        self._known[instance.run] = instance


class JsonFileStorage(Storage):
    """The default store: a directory of JSON files (see the module docstring for the layout).

    ``StorageError`` at once if ``path`` is no place for a store (``check_store_path``)."""

    def __init__(self, path: str | os.PathLike, lock_timeout: float = 30.0):
        check_store_path(path)
        self.root = Path(path)
        self.instances = self.root / "instances"
        self._mail_root = os.path.join(self.root, "mail")  # text: checked between every two steps
        self.index = self.root / "index"
        self._format = os.path.join(self.root, "FORMAT")
        self.lock_timeout = lock_timeout
        self._checked = False  # the layout was checked for links (once per store object)
        self._caches: dict[str, dict] = {}  # id -> the encode cache of its open session

    # -- layout -----------------------------------------------------------------

    def _layout_dirs(self) -> list[Path]:
        return [self.instances, self.index, self.index / "status",
                *(self.index / "status" / status for status in STATUSES), self.index / "due",
                self.root / "quarantine"]

    def _check_layout(self) -> None:
        """Once per store object: the store is still ours, and none of its layout's directories
        and files is a link (``StorageError`` naming it). Whatever is made later, heph makes
        without following links."""
        if self._checked:
            return
        check_store_path(self.root)
        for path in self._layout_dirs():
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _failure("inspect", path, exc) from None
            if not stat.S_ISDIR(mode):
                _check_dir(path)  # raises, naming a link or a file
        for file in (Path(self._format), self.index / "FORMAT"):
            if _is_link(file):
                raise _link_error(file)
        self._checked = True

    def _ensure_layout(self) -> None:
        self._check_layout()
        try:
            mode = os.lstat(self._format).st_mode
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _failure("inspect", self._format, exc) from None
        else:
            if stat.S_ISREG(mode):
                return
            raise _link_error(self._format) if stat.S_ISLNK(mode) else \
                StorageError(f"{self._format} should be a regular file but is not; move it aside")
        for directory in (self.root, self.instances, self.index / "due"):
            _make_dirs(directory, self.root)
        for status in STATUSES:
            _make_dirs(self.index / "status" / status, self.root)
        if not os.path.lexists(self.index / "FORMAT"):
            _write_index_format(self.index / "FORMAT")
        try:
            write_durably(self.root / "FORMAT", STORE_FORMAT.encode())
        except OSError as exc:
            raise _failure("write", self.root / "FORMAT", exc) from None

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

    def _touch(self, markers: Iterable[str]) -> list[str]:
        """Create the markers (new files, never through a link); return the paths it created.
        ``StorageError`` if one cannot be made, with the ones it made removed again."""
        prefix = f"{self.index}{os.sep}"
        created: list[str] = []
        for marker in markers:
            path = prefix + marker
            try:
                try:
                    fd = os.open(path, _CREATE, 0o600)
                except FileNotFoundError:
                    _make_dirs(Path(path).parent, self.root)
                    fd = os.open(path, _CREATE, 0o600)
            except FileExistsError:
                if _is_link(path):
                    self._untouch(created)
                    raise _link_error(path) from None
                continue  # there already (a stale marker now true again)
            except OSError as exc:
                self._untouch(created)
                raise _failure("create index marker", path, exc) from None
            except BaseException:
                self._untouch(created)
                raise
            created.append(path)
            try:
                os.close(fd)
            except OSError as exc:
                self._untouch(created)
                raise _failure("create index marker", path, exc) from None
        return created

    def _untouch(self, created: Iterable[str]) -> None:
        """Remove markers ``_touch`` made for a write that did not happen (best effort: a marker
        left behind is only stale)."""
        for path in created:
            with suppress(OSError):
                os.unlink(path)

    def _remove(self, markers: Iterable[str], strict: bool = False) -> None:
        """Remove markers. A failure is a warning on logger ``heph`` (the marker is stale: readers
        skip it, ``heph doctor`` counts it, ``--repair`` removes it), a ``StorageError`` if ``strict``."""
        prefix = f"{self.index}{os.sep}"
        for marker in markers:
            path = prefix + marker
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if strict:
                    raise _failure("remove index marker", path, exc) from None
                log.warning("cannot remove the stale index marker %s (%s); readers skip it, and "
                            "`heph doctor --repair` removes it", path, os_error(exc))

    def instance_lock(self, directory: str | os.PathLike, timeout: float, dir_fd: int | None = None) -> InstanceLock:
        """The lock of an id's directory (``<directory>/.lock``), not yet taken: every
        read-modify-write of the id's runs holds it. ``dir_fd``: the directory, open."""
        return InstanceLock(os.path.join(directory, ".lock"), timeout, dir_fd)

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
            self._check_layout()
            lock, dir_fd, names = self._lock_existing(instance_id, directory, wait)
            try:
                self._ensure_layout()
            except BaseException:
                lock.release()
                _close(dir_fd)
                raise
        else:
            self._ensure_layout()
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except FileNotFoundError:  # instances/ itself is gone
                _make_dirs(directory, self.root)
            except OSError as exc:
                raise _failure("create directory", directory, exc) from None
            dir_fd = self._open_dir(directory)
            lock = self.instance_lock(directory, wait, dir_fd)
            try:
                self._acquire(lock, instance_id)
            except BaseException:
                _close(dir_fd)
                raise
        session = _FileSession(self, instance_id, directory, dir_fd, names)
        self._caches[instance_id] = session._lines
        try:
            session.forget_stale_note()
            yield session
        finally:
            if self._caches.get(instance_id) is session._lines:
                del self._caches[instance_id]
            try:
                session.withdraw()
                session.close()
            finally:
                lock.release()
                _close(dir_fd)

    # -- schedules (SPEC §10) ---------------------------------------------------------
    # ``schedules/<name>/`` holds the schedule's lock (``.lock``, as an id's) and its state
    # (``state.json``, replaced atomically and fsynced with its directory).

    @contextmanager
    def schedule_session(self, name: str, timeout: float = 0) -> Iterator[ScheduleSession]:
        if not _SCHEDULE_NAME_RE.match(name):
            raise StorageError(f"invalid schedule name {name!r}")
        directory = self.root / "schedules" / name
        self._check_layout()
        _make_dirs(directory, self.root)
        dir_fd = self._open_dir(directory)
        lock = self.instance_lock(directory, timeout, dir_fd)
        try:
            self._acquire(lock, name, f"schedule {name} is busy (another tick holds it)")
        except BaseException:
            _close(dir_fd)
            raise
        try:
            yield _FileScheduleSession(directory, dir_fd)
        finally:
            lock.release()
            _close(dir_fd)

    def schedule_states(self) -> dict[str, dict]:
        top = self.root / "schedules"
        states = {}
        for name, kind in sorted(_entries(top) or ()):
            if kind == "dir" and _SCHEDULE_NAME_RE.match(name):
                state = _read_state(top / name / "state.json")
                if state is not None:
                    states[name] = state
        return states

    # -- busy notes and mail (SPEC §6) ------------------------------------------------
    # A session's holder announces what it runs in ``instances/<id>/.busy``; ``busy`` reads it
    # while the id's lock is held. ``post`` queues a message as ``mail/<id>/<message id>.json``
    # (written durably, without the lock); the next holder of the id's session reads and drops it.

    def busy(self, instance_id: str) -> dict | None:
        directory = self.instances / id_dir_name(instance_id)
        if not self.is_busy(directory):
            return None
        try:
            raw = _read_small(directory / ".busy", 65536)
            note = json.loads(raw) if raw else {}
        except (StorageError, ValueError):  # half written, or not heph's: busy, doing we know not what
            return {}
        return note if isinstance(note, dict) else {}

    def post(self, instance_id: str, message: dict) -> str:
        box = self.root / "mail" / id_dir_name(instance_id)
        message_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{os.urandom(4).hex()}"
        data = json.dumps({**message, "id": message_id}, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if len(data) > MAX_FILE_BYTES:
            raise StorageError(f"the message for {instance_id} is larger than {MAX_FILE_BYTES} bytes")
        path = box / f"{message_id}.json"
        for _ in range(10):
            _make_dirs(box, self.root)
            try:
                replace_file(path, data)
                break
            except FileNotFoundError:  # the box was emptied and removed meanwhile: make it again
                continue
            except OSError as exc:
                raise _failure("write message file", path, exc) from None
        else:
            raise StorageError(f"cannot write message file {path}: its directory keeps disappearing")
        try:
            _fsync_dir(box)
            _fsync_dir(box.parent)
        except OSError as exc:
            raise MaybeApplied(instance_id=instance_id, path=str(path),
                               reason=f"the message is in place, but the fsync of its directory failed "
                                      f"({os_error(exc)})") from None
        return message_id

    def has_mail(self, instance_id: str) -> bool:
        return any(name.endswith(".json") for name in _names(f"{self._mail_root}/{id_dir_name(instance_id)}"))

    def mailboxes(self) -> list[str]:
        mail = self.root / "mail"
        return [_id_from_dir(name) for name, kind in _entries(mail) or ()
                if kind == "dir" and _valid_id(_id_from_dir(name))
                and any(n.endswith(".json") for n in _names(mail / name))]

    def _mail_of(self, dir_name: str) -> list[dict]:
        names = _names(f"{self._mail_root}/{dir_name}")
        if not names:
            return []
        box = self.root / "mail" / dir_name
        found = []
        for name in sorted(n for n in names if n.endswith(".json") and not n.startswith(".")):
            raw = _read_small(box / name, MAX_FILE_BYTES + 1)
            try:
                message = json.loads(raw) if raw is not None else None
            except ValueError:
                message = None
            if raw is None:
                continue  # dropped meanwhile
            if not isinstance(message, dict) or message.get("id") != name[:-5]:
                log.warning("skipping message file %s: not a message heph wrote", box / name)
                continue
            found.append(message)
        return found

    def _drop_mail(self, dir_name: str, ids: Iterable[str]) -> None:
        box = self.root / "mail" / dir_name
        for message_id in ids:
            path = box / f"{message_id}.json"
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # applied already (the instance records it): a later drain drops it
                log.warning("could not remove message file %s: %s", path, os_error(exc))
        with suppress(OSError):
            os.rmdir(box)  # fails while another message waits there

    def _open_dir(self, directory: Path) -> int:
        try:
            return os.open(directory, _OPEN_DIR)
        except OSError as exc:
            raise _failure("open directory", directory, exc) from None

    def _acquire(self, lock: InstanceLock, instance_id: str, busy: str = "") -> None:
        """Take ``lock``; ``InstanceBusy`` (message ``busy``, else the default) when it times out."""
        try:
            lock.acquire()
        except LockTimeout:
            raise InstanceBusy(busy, instance_id=instance_id) from None

    def _lock_existing(self, instance_id: str, directory: Path, wait: float) -> tuple[InstanceLock, int, set[str]]:
        """The id's lock, taken, its directory open and its runs listed under the lock;
        ``InstanceNotFound`` (nothing created, the lock not held) if it has none."""
        try:
            dir_fd = os.open(directory, _OPEN_DIR)
        except FileNotFoundError:
            raise InstanceNotFound(instance_id=instance_id) from None
        except OSError as exc:
            raise _failure("open directory", directory, exc) from None
        lock = self.instance_lock(directory, wait, dir_fd)
        held = False
        try:
            try:
                held = lock.try_acquire(create=False)
            except FileNotFoundError:  # a directory without a lock file (made by hand, copied)
                held = False
            if held:
                names = _run_names_in(dir_fd, directory)
                if names:
                    return lock, dir_fd, names
                raise InstanceNotFound(instance_id=instance_id)
            # held (perhaps by a start still in its first step, which has stored nothing), or no lock
            # file: not found needs no wait
            if not _run_names_in(dir_fd, directory):
                raise InstanceNotFound(instance_id=instance_id)
            self._acquire(lock, instance_id)
            held = True
            return lock, dir_fd, _run_names_in(dir_fd, directory)  # the holder may have added a run meanwhile
        except BaseException:
            if held:
                lock.release()
            _close(dir_fd)
            raise

    def runs(self, instance_id: str) -> list[Instance]:
        self._check_layout()
        directory = self.instances / id_dir_name(instance_id)
        return [read_instance(directory / f"{run}.json") for run in sorted(_run_names_in(directory), reverse=True)]

    def unstorable(self, instance: Instance) -> str | None:
        """Too large for ``MAX_FILE_BYTES`` once encoded. The encoding shares the open session's
        cache: the pieces it encodes (a step's updates, history lines) are not encoded again by
        the write that follows."""
        cache = self._caches.get(instance.id)
        return too_large(len(encode(instance, cache if cache is not None else {})))

    def _index_ready(self) -> bool:
        self._check_layout()
        if not os.path.isdir(self.instances):
            return False
        if not self.index_complete():
            log.warning("the index of %s is missing or in an older format; rebuilding it from the instance files",
                        self.root)
            self.rebuild_index()
        return True

    def index_complete(self) -> bool:
        """Whether ``index/FORMAT`` says the index is complete and in this version's format."""
        try:
            return _read_small(self.index / "FORMAT", 64) == INDEX_FORMAT.encode()
        except StorageError:
            return False

    def _listdir(self, directory: Path) -> list[str]:
        return _names(directory)

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
            self._check_layout()
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
                if os.path.lexists(path):
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
        self._check_layout()
        return any(_is_run_name(name) for name in _names(self.instances / id_dir_name(instance_id)))

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
    # None of these follows a link: ``links`` lists them, the others skip them.

    def has_instances(self) -> bool:
        """Whether ``instances/`` is there, a directory itself (not a link)."""
        try:
            return stat.S_ISDIR(os.lstat(self.instances).st_mode)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _failure("inspect", self.instances, exc) from None

    def instance_dirs(self) -> list[Path]:
        """Every id's directory under ``instances/``, sorted by name (none before the first write)."""
        return [self.instances / name for name, kind in _entries(self.instances) or () if kind == "dir"]

    def instance_files(self, directory: str | os.PathLike) -> tuple[list[Path], list[Path]]:
        """The files of an id's directory, sorted by name: its run files, and the temporary files
        left by interrupted writes (``.<run>.json.<pid>.tmp``). The lock file is neither; links
        are not files of the store (``links``)."""
        entries = [(name, kind) for name, kind in _entries(directory) or () if kind != "link"]
        return ([Path(directory, name) for name, _ in entries if _is_run_name(name)],
                [Path(directory, name) for name, kind in entries if kind == "file" and name.endswith(".tmp")])

    def present_markers(self) -> set[str]:
        """Every marker file in the index, as paths under ``index/`` (the form ``markers`` returns)."""
        if _is_link(self.index) or _is_link(self.index / "status"):
            return set()  # reported by ``links``: never listed through
        return {f"{sub}/{name}" for sub in ["due"] + [f"status/{s}" for s in STATUSES]
                for name, kind in _entries(self.index / sub) or () if kind == "file"}

    def links(self) -> list[Path]:
        """Every symbolic link where the store keeps a file or directory, sorted: in the store's
        directory, ``instances/`` and each id's directory, the index and its directories, and
        ``quarantine/`` itself (what was moved into ``quarantine/<folder>/`` stays there). heph
        never follows one; ``quarantine`` moves the link itself."""
        found: list[Path] = []

        def scan(directory: Path, depth: int) -> None:
            for name, kind in _entries(directory) or ():
                if kind == "link":
                    found.append(directory / name)
                elif kind == "dir" and depth > 0:
                    scan(directory / name, depth - 1)

        for name, kind in _entries(self.root) or ():
            if kind == "link":
                found.append(self.root / name)
            elif kind == "dir" and name in ("instances", "index", "quarantine"):
                scan(self.root / name, {"instances": 1, "index": 2, "quarantine": 0}[name])
        return sorted(found)

    def quarantine(self, path: str | os.PathLike) -> str | None:
        """Move a file of the store (or a link, itself: never its target) to
        ``quarantine/<folder>/`` (``<folder>``: the name of the directory it was in), under the
        id's lock for a file of an id's directory (never under a live writer's feet), and under a
        name that overwrites nothing (``<name>.1``, ...); return where it went, None if it was
        gone. Nothing is deleted; nothing is moved into or through a link (``StorageError``)."""
        path = Path(path)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise StorageError(f"{path} is not inside the store {self.root}") from None
        if not relative.parts or relative.parts[0] == "quarantine":
            raise StorageError(f"{path} is in quarantine/ already; heph does not move it (remove it "
                               f"yourself if it is a link) and never follows a link there")
        ancestor = self.root
        for part in relative.parts[:-1]:  # every directory on the way is a directory itself
            ancestor = ancestor / part
            _check_dir(ancestor)
        folder = self.root / "quarantine" / path.parent.name
        locked = (len(relative.parts) == 3 and relative.parts[0] == "instances" and not _is_link(path)
                  and not _is_link(path.parent / ".lock"))  # no writer ever works through a link
        lock = self.instance_lock(path.parent, self.lock_timeout) if locked else None
        if lock is not None:
            lock.acquire()
        try:
            if not os.path.lexists(path):
                return None
            _make_dirs(folder, self.root)  # 0700 for quarantine/ too, whatever the umask; never a link
            target = folder / path.name
            counter = 1
            while os.path.lexists(target):
                target = folder / f"{path.name}.{counter}"
                counter += 1
            try:
                os.rename(path, target)  # the entry itself: a link moves as a link
            except OSError as exc:
                raise StorageError(f"cannot move {path} to {target}: {os_error(exc)}") from None
            return str(target)
        finally:
            if lock is not None:
                lock.release()

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
                for name, kind in _entries(self.index / sub) or ():
                    if kind == "dir":
                        continue  # not a marker, not heph's: left alone
                    if kind == "link":  # never a marker: the link goes (its target is untouched)
                        strays.append(f"{sub}/{name}")
                        continue
                    if sub == "due":
                        owner = name.partition("~")[2].rpartition("~")[0]
                    else:
                        parsed = _status_marker(name)
                        owner = parsed[1] if parsed is not None else ""
                    if owner and _valid_id(_id_from_dir(owner)):
                        existing.setdefault(owner, set()).add(f"{sub}/{name}")
                    else:
                        strays.append(f"{sub}/{name}")
            self._remove(strays, strict=True)
            stats["removed"] += len(strays)
            dirs = {name for name, kind in _entries(self.instances) or () if kind == "dir"} | set(existing)
            for dir_name in sorted(dirs):
                directory = self.instances / dir_name
                try:
                    is_dir = stat.S_ISDIR(os.lstat(directory).st_mode)
                except FileNotFoundError:
                    is_dir = False
                except OSError as exc:
                    raise _failure("inspect", directory, exc) from None
                if not is_dir:
                    self._remove(existing.get(dir_name, ()), strict=True)
                    stats["removed"] += len(existing.get(dir_name, ()))
                    continue
                with self.instance_lock(directory, self.lock_timeout):
                    wanted: set[str] = set()
                    for name in _names(directory):
                        if not _is_run_name(name):
                            continue
                        try:
                            wanted |= self._markers(read_instance(directory / name))
                            stats["instances"] += 1
                        except StorageError:
                            stats["corrupt"] += 1
                    have = existing.get(dir_name, set())
                    self._touch(wanted - have)
                    self._remove(have - wanted, strict=True)
                    stats["added"] += len(wanted - have)
                    stats["removed"] += len(have - wanted)
            _write_index_format(self.index / "FORMAT")
        return stats
