"""The JSON-file store when the file system fails (issue #14, defects 3, 5 and 7).

- A failure after an instance file was renamed into place (the fsync of its directory, or
  opening the directory to fsync it) raises ``MaybeApplied``: the write may be on the disk.
- A failure before the rename is a plain ``StorageError``: the old record is intact, the
  temporary file is gone, the index unchanged.
- Index markers are a cache: one that cannot be removed after the write is a warning on logger
  ``heph`` (the command succeeds), which ``heph doctor`` counts and ``--repair`` removes.
- Every failure of an ``os`` call of the store is a ``StorageError`` on one line naming the path
  and the OS error, never a bare ``OSError`` (the CLI calls that an internal error): checked for
  every call of several commands, in-process, and through ``strace`` for the real CLI.
- Nothing larger than the store's read limit is ever acknowledged: ``unstorable`` says so, and
  ``insert``/``update`` refuse it with nothing written.
- ``heph doctor`` checks a full disk; ``doctor --repair`` refuses there with one line.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cli_helpers import cli_env

import heph
from heph import ASYNC, Done, Step, Unique, Wait, Workflow
from heph.core.instance import Context, Instance
from heph.errors import HephError, MaybeApplied, StorageError
from heph.runtime.doctor import diagnose
from heph.runtime.storage import jsonfile
from heph.runtime.storage.jsonfile import JsonFileStorage

STRACE = shutil.which("strace")


class FltBegin(Step):
    events = ["begun"]
    key = "flt_begin"

    def execute(self, instance, config, context):
        return "begun", {"begun": True}


class FltHold(Step):
    events = ["go"]
    key = "flt_hold"

    def execute(self, instance, config, context):
        return ASYNC


class FltFinish(Step):
    events = ["finished"]
    key = "flt_finish"

    def execute(self, instance, config, context):
        return "finished", {"finished": True}


class FltFlow(Workflow):
    """begin -> hold (waits for "go") -> finish -> done."""

    unique = Unique("fltk")
    name = "flt_flow"
    start = FltBegin
    transitions = {FltBegin: {"begun": FltHold}, FltHold: {"go": FltFinish}, FltFinish: {"finished": Done}}


class FltTimer(Workflow):
    """begin -> wait one hour -> finish -> done."""

    unique = Unique("fltt")
    name = "flt_timer"
    start = FltBegin
    transitions = {FltBegin: {"begun": (Wait, {"duration": 1, "unit": "hour"})}, Wait: {"timeout": FltFinish},
                   FltFinish: {"finished": Done}}


class FltBig(Step):
    events = ["ok"]
    key = "flt_big"

    def execute(self, instance, config, context):
        return "ok", {"blob": "x" * context.initial["size"]}


class FltBigFlow(Workflow):
    unique = Unique("fltb")
    name = "flt_big_flow"
    start = FltBig
    transitions = {FltBig: {"ok": Done}}


def make_app(root: Path, clock=None) -> heph.Hephaestus:
    return heph.Hephaestus(storage=JsonFileStorage(root), clock=clock or heph.ManualClock())


def run_files(root: Path) -> dict[str, bytes]:
    """Every instance document under ``instances/`` and ``quarantine/`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for sub in ("instances", "quarantine")
            for p in sorted((root / sub).rglob("*.json*")) if p.is_file() and not p.name.endswith(".tmp")}


def temp_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.tmp"))


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def is_dir_fd(fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    except OSError:
        return False


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


# -- defect 3a: after the rename, MaybeApplied; before it, StorageError and nothing changed ----------


def test_a_failed_fsync_of_the_directory_after_the_rename_is_maybe_applied(root, monkeypatch):
    app = make_app(root)
    app.start(FltFlow, "warm")
    real = os.fsync

    def fsync(fd):
        if is_dir_fd(fd):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(MaybeApplied) as raised:
        app.start(FltFlow, "a")
    assert type(raised.value) is MaybeApplied  # not a plain StorageError: the run may be on the disk
    assert raised.value.instance_id == "fltk::a"
    assert raised.value.path == str(root / "instances" / "fltk~a")
    assert "[Errno 5] Input/output error" in raised.value.reason
    message = str(raised.value)
    assert "\n" not in message and "may have been applied" in message and str(root / "instances") in message
    monkeypatch.setattr(os, "fsync", real)
    assert app.get("fltk::a").status == "waiting"  # it was applied indeed
    with app.storage.session("fltk::a", timeout=0):  # and the lock was released
        pass


def test_emfile_opening_instances_to_make_a_first_run_durable_is_maybe_applied(root, monkeypatch):
    app = make_app(root)
    app.start(FltFlow, "warm")
    real = os.open

    def failing_open(path, flags, *args, **kwargs):
        if os.fspath(path) == str(root / "instances") and flags & os.O_DIRECTORY:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(MaybeApplied, match=r"\[Errno 24\] Too many open files") as raised:
        app.start(FltFlow, "b")  # the id's first run: instances/ is fsynced too
    assert raised.value.path == str(root / "instances")
    monkeypatch.setattr(os, "open", real)
    assert app.get("fltk::b").status == "waiting"


def test_the_store_raises_maybe_applied_at_the_close_of_a_session(root, monkeypatch):
    from heph.testing.conformance import make_instance

    store = JsonFileStorage(root)
    run = make_instance("flts::one", status="waiting")
    store.rebuild_index()  # the store's layout exists
    monkeypatch.setattr(jsonfile, "_fsync_dir", lambda path, fd=None: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    with pytest.raises(MaybeApplied):
        with store.session(run.id) as session:
            session.insert(run)
    monkeypatch.undo()
    assert [r.run for r in store.runs(run.id)] == [run.run]


def _fail_writes_of_temp_files(monkeypatch, which: str) -> None:
    """Make one step of replacing an instance file fail (before its rename)."""
    if which == "open":
        real_open = os.open

        def open_(path, flags, *args, **kwargs):
            if os.fspath(path).endswith(".tmp"):
                raise OSError(errno.EMFILE, "Too many open files")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
    elif which == "write":
        real_write = os.write

        def write(fd, data):
            if fd_path(fd).endswith(".tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)
    elif which == "fsync":
        real_fsync = os.fsync

        def fsync(fd):
            if fd_path(fd).endswith(".tmp"):
                raise OSError(errno.EIO, "Input/output error")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        def replace(src, dst, **kwargs):
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("which", ["open", "write", "fsync", "rename"])
def test_a_failure_before_the_rename_keeps_the_old_record_and_removes_the_temp_file(root, monkeypatch, which):
    app = make_app(root)
    app.start(FltFlow, "a")
    store: JsonFileStorage = app.storage  # type: ignore[assignment]
    before, markers = run_files(root), store.present_markers()
    _fail_writes_of_temp_files(monkeypatch, which)
    with pytest.raises(StorageError) as raised:
        app.resume("fltk::a", "go")
    assert not isinstance(raised.value, MaybeApplied)
    message = str(raised.value)
    assert "\n" not in message and re.search(r"\[Errno \d+\] ", message), message
    assert message.startswith(f"cannot write instance file {root / 'instances' / 'fltk~a'}"), message
    monkeypatch.undo()
    assert run_files(root) == before and temp_files(root) == []
    assert store.present_markers() == markers  # the new state's markers were taken back
    assert app.resume("fltk::a", "go").status == "completed"


# -- defect 3b: index markers are a cache -------------------------------------------------------------


def test_a_marker_that_cannot_be_created_refuses_the_write_before_anything_is_written(root, monkeypatch):
    app = make_app(root)
    app.start(FltFlow, "a")
    store: JsonFileStorage = app.storage  # type: ignore[assignment]
    before, markers = run_files(root), store.present_markers()
    real = os.open

    def open_(path, flags, *args, **kwargs):
        if "/index/status/completed/" in os.fspath(path) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(StorageError, match=r"^cannot create index marker .*/index/status/completed/.*: "
                                           r"\[Errno 28\] No space left on device$") as raised:
        app.resume("fltk::a", "go")
    assert not isinstance(raised.value, MaybeApplied)
    monkeypatch.undo()
    assert run_files(root) == before and store.present_markers() == markers and temp_files(root) == []


def test_a_stale_marker_that_cannot_be_removed_is_a_warning_and_doctor_repairs_it(root, monkeypatch, caplog):
    app = make_app(root)
    app.start(FltFlow, "a")
    store: JsonFileStorage = app.storage  # type: ignore[assignment]
    (waiting,) = [m for m in store.present_markers() if m.startswith("status/waiting/")]
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if "/index/status/waiting/" in os.fspath(path):
            raise OSError(errno.EIO, "Input/output error")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level(logging.WARNING, logger="heph"):
        done = app.resume("fltk::a", "go")  # the write succeeded: the command must not fail
    monkeypatch.undo()
    assert done.status == "completed" and app.get("fltk::a").status == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "heph" and r.levelno == logging.WARNING]
    assert any(str(store.index / waiting) in w and "[Errno 5]" in w for w in warnings), warnings
    # readers tolerate the stale marker: it re-checks against the file
    assert app.list(status="waiting") == [] and [i.id for i in app.list(status="completed")] == ["fltk::a"]
    report = diagnose(store)
    assert report["index"]["stale_markers"] == 1 and not report["healthy"]
    assert diagnose(store, repair=True)["healthy"]
    assert diagnose(store)["index"] == {"complete": True, "missing_markers": 0, "stale_markers": 0}
    assert not (store.index / waiting).exists()


# -- defect 5: every failing os call of the store is one StorageError line (in-process sweep) ---------

_STORE_FILES = {jsonfile.__file__, jsonfile.InstanceLock.__init__.__code__.co_filename,
                diagnose.__code__.co_filename}
_OS_CALLS = ("open", "mkdir", "makedirs", "replace", "rename", "unlink", "fsync", "listdir", "scandir", "write",
             "read", "close", "fstat", "lstat", "stat")
_ERRNOS = {"open": (errno.EMFILE, errno.ENOSPC, errno.EIO, errno.EACCES), "mkdir": (errno.ENOSPC, errno.EIO),
           "write": (errno.ENOSPC, errno.EIO), "fsync": (errno.EIO, errno.ENOSPC)}


class Injector:
    """Counts the os calls made by the store's own code (jsonfile, locking, doctor) and makes the
    ``fail_at``-th one raise ``OSError``."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.failed: str | None = None
        for name in _OS_CALLS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        monkeypatch.setattr(fcntl, "flock", self._wrap("flock", fcntl.flock))

    def _wrap(self, name, real):
        def call(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename in _STORE_FILES:
                self.calls.append(name)
                if len(self.calls) == self.fail_at:
                    choices = _ERRNOS.get(name, (errno.EIO,))
                    code = choices[self.fail_at % len(choices)]
                    self.failed = f"{name} #{self.fail_at} {errno.errorcode[code]}"
                    if name == "close":  # Linux closes the descriptor even when close() fails
                        real(*args, **kwargs)
                    raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        return call


def _template(tmp_path: Path, case: str) -> tuple[Path, heph.ManualClock]:
    """A store for ``case``, made without faults."""
    root = tmp_path / "template"
    clock = heph.ManualClock()
    app = make_app(root, clock)
    app.start(FltFlow, "a")
    app.start(FltFlow, "done")
    app.resume("fltk::done", "go")
    app.start(FltTimer, "t")
    if case == "list-rebuild":
        (root / "index" / "FORMAT").unlink()
    if case.startswith("doctor"):
        (path,) = (root / "instances" / "fltk~done").glob("*.json")
        path.write_bytes(path.read_bytes()[:30])  # torn: quarantined by a repair
        (marker,) = (root / "index" / "status" / "waiting").glob("*~fltk~a~*")
        marker.unlink()  # a missing marker: the repair rebuilds the index
    return root, clock


CASES = {
    "start": lambda app, clock: app.start(FltFlow, "new"),
    "resume": lambda app, clock: app.resume("fltk::a", "go"),
    "cancel": lambda app, clock: app.cancel("fltk::a"),
    "show": lambda app, clock: app.get("fltk::a"),
    "list-rebuild": lambda app, clock: app.list(status="waiting"),
    "tick": lambda app, clock: (clock.advance(hours=2), app.tick()),
    "doctor": lambda app, clock: diagnose(app.storage),
    "doctor-repair": lambda app, clock: diagnose(app.storage, repair=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_failing_os_call_of_a_command_is_one_storage_error_line(tmp_path, monkeypatch, case):
    template, clock0 = _template(tmp_path, case)
    (tmp_path / "work").mkdir()

    def trial(fail_at: int | None) -> tuple[Injector, Path, BaseException | None]:
        root = tmp_path / "work" / f"store{fail_at}"
        shutil.copytree(template, root, symlinks=True)
        clock = heph.ManualClock(clock0.now())
        app = make_app(root, clock)
        with monkeypatch.context() as patch:
            injector = Injector(patch, fail_at)
            try:
                CASES[case](app, clock)
            except BaseException as exc:  # noqa: BLE001 - the point is what escapes
                return injector, root, exc
        return injector, root, None

    fds = len(os.listdir("/proc/self/fd"))
    baseline, _, error = trial(None)
    assert error is None, error
    assert len(baseline.calls) > 5
    problems = []
    for n in range(1, len(baseline.calls) + 1):
        before = run_files(template)
        injector, root, error = trial(n)
        where = injector.failed or f"call #{n} (not reached)"
        if error is not None and not isinstance(error, HephError):
            problems.append(f"{where}: {type(error).__name__}: {error}")
            continue
        if error is not None and "\n" in str(error):
            problems.append(f"{where}: a message of several lines: {error!r}")
        if isinstance(error, StorageError) and not isinstance(error, MaybeApplied):
            if not re.search(r"\[Errno \d+\] |symbolic link|busy", str(error)):
                problems.append(f"{where}: the message names no OS error: {error}")
            after = run_files(root)
            if case == "doctor-repair":  # a repair may stop half-way: what it moved is kept, byte for byte
                if sorted(after.values()) != sorted(before.values()):
                    problems.append(f"{where}: the repair stopped ({error}) and lost a document")
            elif after != before:
                problems.append(f"{where}: refused ({error}), yet the instance files changed")
        if temp_files(root):
            problems.append(f"{where}: temporary files left: {temp_files(root)}")
        store = JsonFileStorage(root, lock_timeout=0)
        for directory in store.instance_dirs():  # no lock left held
            with store.instance_lock(directory, 0):
                pass
        shutil.rmtree(root)
    assert len(os.listdir("/proc/self/fd")) <= fds + 2, "descriptors leaked"
    assert not problems, "\n".join(problems)


# -- defect 7: nothing is acknowledged that cannot be read back --------------------------------------


def _instance_with(blob: str) -> Instance:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return Instance(id="fltb::big", workflow="flt_big_flow", version=1, status="running",
                    context=Context({}, {"flt_big": {"blob": blob}}), run="20260101T000000000000-abcdef",
                    created_at=now, updated_at=now)


def test_unstorable_names_an_instance_over_the_64_mb_limit(root):
    store = JsonFileStorage(root)
    assert store.unstorable(_instance_with("small")) is None
    big = _instance_with("x" * (65 * 1024 * 1024))
    why = store.unstorable(big)
    assert why is not None and re.fullmatch(
        r"the instance would be 65\.0 MB of JSON, more than the store's 64 MB limit", why), why
    with pytest.raises(StorageError, match="more than the store's 64 MB limit"):
        with store.session(big.id) as session:
            session.insert(big)
    assert run_files(root) == {} and temp_files(root) == []
    assert store.present_markers() == set()  # nothing written, not even a marker


def test_unstorable_is_exactly_the_write_limit(root, monkeypatch):
    store = JsonFileStorage(root)
    instance = _instance_with("y" * 1000)
    size = len(jsonfile.encode(instance))
    monkeypatch.setattr(jsonfile, "MAX_FILE_BYTES", size)
    assert store.unstorable(instance) is None
    with store.session(instance.id) as session:
        session.insert(instance)  # exactly at the limit: written, and read back
    assert store.runs(instance.id) == [instance]
    monkeypatch.setattr(jsonfile, "MAX_FILE_BYTES", size - 1)
    assert store.unstorable(instance) is not None
    other = dataclasses.replace(instance, id="fltb::other")
    with pytest.raises(StorageError, match="more than the store's"):
        with store.session(other.id) as session:
            session.insert(other)
    assert not store.exists(other.id)


def test_a_step_returning_more_than_the_limit_fails_and_the_run_stays_readable(root, monkeypatch):
    monkeypatch.setattr(jsonfile, "MAX_FILE_BYTES", 200_000)
    app = make_app(root)
    app.start(FltBigFlow, "b", {"size": 250_000})
    run = app.get("fltb::b")  # readable: what was acknowledged can be read back
    assert run.status == "failed" and "more than the store's" in json.dumps(run.error)
    app.start(FltBigFlow, "ok", {"size": 1000})
    assert app.get("fltb::ok").status == "completed"


def test_unstorable_reuses_the_open_sessions_encoding(root, monkeypatch):
    """A step's updates are encoded once, by ``unstorable``, not again by the write that follows."""
    calls = []
    real = jsonfile._dumps
    monkeypatch.setattr(jsonfile, "_dumps", lambda value: calls.append(value) or real(value))
    app = make_app(root)
    app.start(FltBigFlow, "c", {"size": 10})
    assert sum(1 for value in calls if value == {"blob": "x" * 10}) == 1


# -- the real CLI under strace ------------------------------------------------------------------

FLOWS = '''\
from heph import ASYNC, Done, Step, Unique, Workflow


class Begin(Step):
    events = ["begun"]

    def execute(self, instance, config, context):
        return "begun", {"begun": True}


class Hold(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Finish(Step):
    events = ["finished"]

    def execute(self, instance, config, context):
        return "finished", {"finished": True}


class Flow(Workflow):
    name = "flow"
    unique = Unique("flowid")
    start = Begin
    transitions = {Begin: {"begun": Hold}, Hold: {"go": Finish}, Finish: {"finished": Done}}
'''


def make_cli_project(where: Path, store: str = ".heph") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "heph.yaml").write_text(f"workflows:\n  - faultflows\nstorage:\n  path: {store}\n")
    (where / "faultflows.py").write_text(FLOWS)
    return where


def cli(project: Path, *args: str, strace: list[str] | None = None) -> subprocess.CompletedProcess:
    prefix = [STRACE, "-f", "-qq", "-e", "signal=none", "-o", "/dev/null", *strace] if strace else []
    return subprocess.run([*prefix, sys.executable, "-m", "heph", *args], cwd=project, capture_output=True,
                          text=True, env=cli_env(), timeout=120)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed")


@pytest.fixture
def project(tmp_path) -> Path:
    project = make_cli_project(tmp_path / "project")
    assert cli(project, "start", "flow", "warm").returncode == 0
    return project


@needs_strace
def test_cli_a_failed_directory_fsync_says_the_start_may_have_been_applied(project):
    iddir = project / ".heph" / "instances" / "flowid~a"
    proc = cli(project, "start", "flow", "a", strace=["-P", str(iddir), "-e", "trace=fsync",
                                                      "-e", "inject=fsync:error=EIO"])
    assert proc.returncode in (1, 3), proc  # 3 once the CLI maps MaybeApplied
    line = one_error_line(proc)
    assert "may have been applied" in line and "[Errno 5] Input/output error" in line, line
    shown = cli(project, "show", "flow", "a", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "waiting"


@needs_strace
def test_cli_no_space_for_the_lock_file_is_one_line_and_changes_nothing(project):
    iddir = project / ".heph" / "instances" / "flowid~b"
    # the first openat on the id's directory opens the directory, the second creates its lock file
    proc = cli(project, "start", "flow", "b", strace=["-P", str(iddir), "-e", "trace=openat",
                                                      "-e", "inject=openat:error=ENOSPC:when=2"])
    assert proc.returncode == 1, proc
    assert one_error_line(proc) == f"error: cannot create lock file {iddir}/.lock: [Errno 28] No space left on device"
    assert list(iddir.iterdir()) == []  # no run, no lock file
    assert cli(project, "start", "flow", "b").returncode == 0


def _store_paths(project: Path) -> list[str]:
    """The store's directories and files, for strace -P: what the CLI calls on them can fail."""
    store = project / ".heph"
    paths = [store, store / "FORMAT", store / "instances", store / "index", store / "index" / "FORMAT",
             store / "index" / "status", store / "index" / "due", store / "index" / ".lock"]
    paths += [store / "index" / "status" / s for s in ("pending", "running", "waiting", "completed", "failed",
                                                       "cancelled")]
    for directory in (store / "instances").iterdir():
        paths += [directory, *directory.iterdir()]
    for status in (store / "index" / "status").iterdir():
        paths += list(status.iterdir())
    run = json.loads(next((store / "instances" / "flowid~a").glob("*.json")).read_text())
    paths += [store / "index" / "status" / s / f"{run['run']}~flowid~a~flow~1" for s in ("running", "completed")]
    return sorted({str(p) for p in paths})


# (read, fstat, close and the rest are failed in-process, above: every os call of the store)
_SWEPT = ("openat", "getdents64", "write", "fsync", "flock", "rename", "renameat", "renameat2", "unlink",
          "unlinkat", "mkdir", "newfstatat")


SAMPLE = 14  # call sites failed per command in the default run; HEPH_FULL_SWEEP=1 fails every one


def sampled(points: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every call site with ``HEPH_FULL_SWEEP=1`` (``bench/faults.py`` sweeps them all, too);
    else the first and last call of each system call, and more, evenly spread, up to ``SAMPLE``."""
    if os.environ.get("HEPH_FULL_SWEEP") == "1":
        return points
    last = {name: n for name, n in points}
    chosen = {(name, 1) for name in last} | set(last.items())
    rest = [point for point in points if point not in chosen]
    spare = max(0, SAMPLE - len(chosen))
    if rest and spare:
        chosen |= set(rest[::max(1, -(-len(rest) // spare))])
    return [point for point in points if point in chosen]


@needs_strace
@pytest.mark.slow
@pytest.mark.parametrize("argv", [("resume", "flow", "a", "go"), ("list", "--status", "waiting"),
                                  ("doctor", "--repair")])
def test_cli_every_store_call_that_fails_is_refused_in_one_line(tmp_path, argv):
    """Each system call the CLI makes on the store's files (strace -P), failed once in turn."""
    template = make_cli_project(tmp_path / "template")
    for command in (("start", "flow", "a"), ("start", "flow", "z"), ("resume", "flow", "z", "go")):
        assert cli(template, *command).returncode == 0
    if argv[0] == "list":
        (template / ".heph" / "index" / "FORMAT").unlink()  # list rebuilds the index
    if argv[0] == "doctor":
        (path,) = (template / ".heph" / "instances" / "flowid~z").glob("*.json")
        path.write_bytes(path.read_bytes()[:30])
    paths = _store_paths(template)

    def selection(work: Path) -> list[str]:  # the same files, in the copy the trial runs on
        return [arg for path in paths for arg in ("-P", str(work) + path[len(str(template)):])]

    traced = tmp_path / "trace.log"
    probe_dir = shutil.copytree(template, tmp_path / "probe", symlinks=True)
    probe = subprocess.run([STRACE, "-f", "-qq", "-e", "signal=none", "-o", str(traced), *selection(probe_dir),
                            "-e", f"trace={','.join(_SWEPT)}", sys.executable, "-m", "heph", *argv],
                           cwd=probe_dir, capture_output=True, env=cli_env(), timeout=120)
    assert probe.returncode == 0, probe
    counts: dict[str, int] = {}
    points = []
    for line in traced.read_text().splitlines():
        match = re.match(r"\d+\s+(\w+)\(", line)
        if match and match.group(1) in _SWEPT:
            name = match.group(1)
            counts[name] = counts.get(name, 0) + 1
            points.append((name, counts[name]))
    assert len(points) > 5, traced.read_text()
    points = sampled(points)

    def trial(point: tuple[str, int]) -> list[str]:
        name, n = point
        code = {"openat": "EMFILE" if n % 2 else "ENOSPC", "mkdir": "ENOSPC", "write": "ENOSPC"}.get(name, "EIO")
        work = shutil.copytree(template, tmp_path / f"t-{name}-{n}", symlinks=True)
        before = run_files(work / ".heph")
        proc = cli(work, *argv, strace=[*selection(work), "-e", f"trace={name}",
                                        "-e", f"inject={name}:error={code}:when={n}"])
        where, found = f"{name} #{n} {code}", []
        after = run_files(work / ".heph")
        if proc.returncode not in (0, 1, 3) or "Traceback" in proc.stderr or "internal error" in proc.stderr:
            found.append(f"{where}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        elif proc.returncode:
            errors = proc.stderr.strip().splitlines()
            if len(errors) != 1 or not errors[0].startswith("error: "):
                found.append(f"{where}: not one error line: {proc.stderr!r}")
            elif argv[0] == "doctor":  # a repair may stop half-way: what it moved is kept, byte for byte
                if sorted(after.values()) != sorted(before.values()):
                    found.append(f"{where}: the repair stopped and lost a document: {errors[0]}")
            elif "may have been applied" not in errors[0] and after != before:
                found.append(f"{where}: refused, yet the instance files changed: {errors[0]}")
        if temp_files(work / ".heph"):
            found.append(f"{where}: temporary files left")
        shutil.rmtree(work)
        return found

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        problems = [problem for found in pool.map(trial, points) for problem in found]
    assert not problems, "\n".join(problems)


# -- a full disk: doctor checks, doctor --repair refuses in one line ----------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A tiny tmpfs (root only) holding a store; yields (project, fill) where fill() uses up every
    block and inode left."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=200,mode=0700", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr!r}")

    def fill() -> None:
        n = 0
        while True:
            try:
                (disk / f"filler{n}").touch()
                n += 1
            except OSError:
                break
        with open(disk / "filler0", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass

    try:
        yield make_cli_project(tmp_path / "project", store=str(disk / "store")), disk, fill
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_doctor_checks_a_full_disk_and_its_repair_refuses_in_one_line(full_disk):
    project, disk, fill = full_disk
    for command in (("start", "flow", "a"), ("start", "flow", "z"), ("resume", "flow", "z", "go")):
        assert cli(project, *command).returncode == 0
    store = disk / "store"
    (path,) = (store / "instances" / "flowid~z").glob("*.json")
    path.write_bytes(path.read_bytes()[:30])  # corrupt: to be quarantined
    shutil.rmtree(store / "index")  # gone: to be rebuilt
    fill()
    before = run_files(store)
    check = cli(project, "doctor", "--json")
    assert check.returncode == 1 and "Traceback" not in check.stderr, check
    report = json.loads(check.stdout)
    assert len(report["corrupt"]) == 1 and report["index"]["complete"] is False
    repair = cli(project, "doctor", "--repair")
    line = one_error_line(repair)
    assert line.startswith(f"error: the repair of {store} stopped") and "[Errno 28] No space left on device" in line
    # exit 1 if it changed nothing; 3 if it had moved the corrupt file to quarantine/ first
    assert (repair.returncode, "stopped after moving 1 file(s)" in line) in ((1, False), (3, True)), repair
    assert run_files(store) == before or set(run_files(store).values()) == set(before.values())
    listed = cli(project, "list")  # must rebuild the index first: cannot, and says so
    assert listed.returncode == 1 and "[Errno 28]" in one_error_line(listed)
    shown = cli(project, "show", "flow", "a", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "waiting"
    for filler in disk.glob("filler*"):
        filler.unlink()
    assert cli(project, "doctor", "--repair").returncode == 0
    assert cli(project, "doctor").returncode == 0
