"""Shared helpers of the benchmark scripts (not a benchmark itself).

The scripts are run from the repository root with the project venv, e.g.
``python bench/throughput.py``; Python puts ``bench/`` on ``sys.path``, so
they ``import _common``. Nothing here asserts wall-clock times: the scripts
print figures and ratios against baselines measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PROJECT = REPO / "sample_project"
VENV_BIN = Path(sys.executable).parent
NO_DBOS = "DBOS not installed (pip install -e '.[bench]')"

if str(REPO) not in sys.path:  # so `python bench/x.py` works without `pip install -e .` too
    sys.path.insert(1, str(REPO))

from heph import ASYNC, Done, Step, Unique, Workflow  # noqa: E402

# -- workflows used by the benchmarks ----------------------------------------------


def _linear_step(number: int) -> type:
    def execute(self, instance, config, context):
        return "ok", {"step": number, "n": context.initial.get("n"), "ok": True}

    return type(f"Linear{number}", (Step,), {"events": ["ok"], "key": f"linear{number}", "execute": execute})


LINEAR_STEPS = [_linear_step(i) for i in range(1, 6)]


class BenchLinear(Workflow):
    """B1: five synchronous steps, each returning a small dict."""

    unique = Unique("benchid")
    name = "benchlinear"
    start = LINEAR_STEPS[0]
    transitions = {
        LINEAR_STEPS[0]: {"ok": LINEAR_STEPS[1]},
        LINEAR_STEPS[1]: {"ok": LINEAR_STEPS[2]},
        LINEAR_STEPS[2]: {"ok": LINEAR_STEPS[3]},
        LINEAR_STEPS[3]: {"ok": LINEAR_STEPS[4]},
        LINEAR_STEPS[4]: {"ok": Done},
    }


class Prepare(Step):
    events = ["prepared"]

    def execute(self, instance, config, context):
        return "prepared", {"n": context.initial.get("n"), "pid": os.getpid()}


class AwaitGo(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Finish(Step):
    events = ["finished"]

    def execute(self, instance, config, context):
        return "finished", {"ok": True, "pid": os.getpid()}


class BenchEvent(Workflow):
    """B2 and B5: a step, a wait for the external event ``go``, a step."""

    unique = Unique("benchev")
    name = "benchevent"
    start = Prepare
    transitions = {
        Prepare: {"prepared": AwaitGo},
        AwaitGo: {"go": Finish},
        Finish: {"finished": Done},
    }


# -- environment ---------------------------------------------------------------------


def use_dbos(skip: bool) -> bool:
    """Whether to run the DBOS side (``skip``: ``--no-dbos``); prints why not when it is left out."""
    if skip:
        print("   DBOS skipped (--no-dbos)")
        return False
    if not dbos_available():
        print(f"   {NO_DBOS}")
        return False
    return True


def dbos_available() -> bool:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return False
    return True


def dbos_version() -> str:
    try:
        from importlib.metadata import version

        return version("dbos")
    except Exception:  # pragma: no cover - best effort
        return "?"


def header(title: str) -> None:
    print(f"== {title}")
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"   python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.system()} {platform.release()}, "
          f"load average {load} (other processes skew the figures), {time.strftime('%Y-%m-%d %H:%M')}")


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp (local disk), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"heph-bench-{prefix}-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- measuring -------------------------------------------------------------------------


def fsync_floor(directory: Path, count: int = 200, size: int = 1024) -> dict[str, float]:
    """Durable-write ops/s on this disk: write+fsync+rename of a ``size``-byte file, without
    and with an fsync of the directory afterwards (what every heph write does); and, for
    comparison, an in-place ``pwrite``+``fdatasync`` of ``size`` bytes of an existing file
    (the kind of write SQLite makes: no new file, no rename). Callers interleave calls with
    what they measure, so that drift in the disk's speed hits both alike."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    target, tmp = directory / "floor.json", directory / ".floor.json.tmp"
    spent = {"in-place": _in_place_writes(directory / "in-place.bin", data, count)}
    for label, dir_sync in (("file", False), ("file+dir", True)):
        start = time.perf_counter()
        for _ in range(count):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            if dir_sync:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        spent[label] = time.perf_counter() - start
    return {label: count / seconds for label, seconds in spent.items()}


def _in_place_writes(path: Path, data: bytes, count: int) -> float:
    """Seconds for ``count`` × (``pwrite`` of ``data`` at offset 0 + ``fdatasync``) of one file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        start = time.perf_counter()
        for _ in range(count):
            os.pwrite(fd, data, 0)
            os.fdatasync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


TIME_BIN = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def run_measured(argv: Sequence[str], cwd: Path | None = None, env: dict | None = None,
                 tty: bool = False) -> tuple[float, int | None, int, str]:
    """Run ``argv`` as a child; return (wall seconds, peak RSS in KiB or None, exit code, stderr).

    Its stdout goes to /dev/null, or with ``tty`` to a pseudo-terminal (drained by a thread),
    which is what a person at a terminal gets.

    The peak RSS comes from ``/usr/bin/time -f %M`` (GNU time), which forks the
    command from its own small process: the ``ru_maxrss`` that ``os.wait4`` or
    ``RUSAGE_CHILDREN`` report for a direct child of this (large) Python process
    would include this process's own RSS, inherited at fork/vfork time. The wall
    time is measured here and includes the ~1 ms of ``time`` itself.
    """
    with tempfile.TemporaryDirectory(prefix="heph-bench-run-") as scratch:
        rss_file = Path(scratch) / "rss"
        full = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *argv] if TIME_BIN else list(argv)
        with open(Path(scratch) / "err", "w+b") as err, _stdout(tty) as out:
            start = time.perf_counter()
            code = subprocess.call(full, cwd=cwd, env=env, stdout=out, stderr=err)
            wall = time.perf_counter() - start
            err.seek(0)
            text = err.read().decode(errors="replace")
        peak = None
        if TIME_BIN:
            try:
                peak = int(rss_file.read_text().split()[-1])
            except (OSError, ValueError, IndexError):
                peak = None
    return wall, peak, code, text


@contextlib.contextmanager
def _stdout(tty: bool) -> Iterator[int]:
    """/dev/null, or the child end of a pseudo-terminal whose output a thread reads and drops."""
    if not tty:
        yield subprocess.DEVNULL
        return
    import pty
    import threading

    main, child = pty.openpty()

    def drain() -> None:
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while os.read(main, 65536):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield child
    finally:
        os.close(child)
        reader.join(5)
        os.close(main)


def layout_floor(directory: Path, instances: int, steps: int = 5, size: int = 1500, dir_fsyncs: bool = True) -> float:
    """Steps/s of the system calls a ``JsonFileStorage`` makes for one ``steps``-step instance,
    with none of heph's Python work: a new instance directory and lock file (``flock``), a
    ``running`` index marker, ``steps`` × (temporary file, write, fsync, rename) of the run
    file, a ``completed`` marker in place of the ``running`` one, then the fsyncs of the
    instance directory and of ``instances/`` (the session's close). ``dir_fsyncs=False`` leaves
    out those two fsyncs (the instance would not be durable): it splits the cost, nothing more."""
    import fcntl

    home, running, completed = directory / "instances", directory / "running", directory / "completed"
    for path in (home, running, completed):
        path.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    start = time.perf_counter()
    for n in range(instances):
        name = f"layout~{os.getpid()}-{time.time_ns()}-{n}"
        instance = home / name
        os.mkdir(instance, 0o700)
        lock = os.open(instance / ".lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.close(os.open(running / name, os.O_CREAT | os.O_WRONLY, 0o600))
        run_file, tmp = instance / "run.json", instance / ".run.json.tmp"
        for _ in range(steps):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.replace(tmp, run_file)
        os.close(os.open(completed / name, os.O_CREAT | os.O_WRONLY, 0o600))
        os.unlink(running / name)
        for synced in (instance, home) if dir_fsyncs else ():
            fd = os.open(synced, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    return instances * steps / (time.perf_counter() - start)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Print a plain left-aligned table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("   " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("   " + "  ".join("-" * w for w in widths))


def heph_exe() -> str:
    """The ``heph`` console script of this venv, or "" if it has none (``heph_cmd`` then
    runs ``python -m heph``)."""
    exe = VENV_BIN / "heph"
    return str(exe) if exe.exists() else ""


def heph_cmd(*args: str) -> list[str]:
    exe = heph_exe()
    return [exe, *args] if exe else [sys.executable, "-m", "heph", *args]
