"""The per-instance lock: filelock's flock, taken directly when free, through filelock when held.

The holders run in child processes, so the exclusion tested is the kernel's, not Python's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from filelock import FileLock, Timeout

import heph
from heph.errors import InstanceBusy, StorageError
from heph.runtime.storage.jsonfile import JsonFileStorage
from heph.runtime.storage.locking import InstanceLock, LockTimeout

HOLDER = textwrap.dedent("""
    import sys
    from {module} import {cls}
    lock = {cls}(sys.argv[1], {args})
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()   # hold until the test writes a line
    lock.release()
    print("released", flush=True)
""")


class Holder:
    """A child process holding a lock on ``path`` until ``release()``."""

    def __init__(self, path, kind: str):
        module, cls, args = {"filelock": ("filelock", "FileLock", "timeout=5"),
                             "heph": ("heph.runtime.storage.locking", "InstanceLock", "5")}[kind]
        code = HOLDER.format(module=module, cls=cls, args=args)
        self.proc = subprocess.Popen([sys.executable, "-c", code, os.fspath(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(10)


def test_free_lock_is_taken_and_released(tmp_path):
    path = tmp_path / ".lock"
    lock = InstanceLock(path, timeout=0)
    with lock:
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        with pytest.raises(LockTimeout):
            InstanceLock(path, timeout=0).acquire()  # a second descriptor is excluded, even in-process
    with InstanceLock(path, timeout=0):  # released: free again
        pass
    assert path.exists()  # the lock file is kept


def test_lock_object_cannot_be_acquired_twice(tmp_path):
    lock = InstanceLock(tmp_path / ".lock", timeout=0)
    with lock:
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire()


@pytest.mark.parametrize("kind", ["filelock", "heph"])
def test_held_lock_times_out_through_filelock(tmp_path, kind):
    path = tmp_path / ".lock"
    holder = Holder(path, kind)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            InstanceLock(path, timeout=0.3).acquire()
        assert time.monotonic() - started >= 0.25  # it waited for the timeout
    finally:
        holder.release()
    with InstanceLock(path, timeout=0):
        pass


def test_waiter_gets_the_lock_when_the_holder_releases(tmp_path):
    path = tmp_path / ".lock"
    holder = Holder(path, "heph")
    got = threading.Event()

    def wait_for_it() -> None:
        with InstanceLock(path, timeout=60):  # held: waits in filelock's poll until the holder lets go
            got.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not got.wait(0.3)  # the holder still has it
    holder.release()
    assert got.wait(60)
    waiter.join(60)


def test_a_holder_killed_with_sigkill_frees_the_lock(tmp_path):
    path = tmp_path / ".lock"
    holder = Holder(path, "heph")
    with pytest.raises(LockTimeout):
        InstanceLock(path, timeout=0).acquire()
    holder.proc.kill()
    holder.proc.wait(10)
    with InstanceLock(path, timeout=5):  # the kernel dropped the flock with the process
        pass


def test_heph_lock_excludes_filelock(tmp_path):
    path = tmp_path / ".lock"
    holder = Holder(path, "heph")
    try:
        with pytest.raises(Timeout):
            FileLock(path, timeout=0).acquire()
    finally:
        holder.release()
    with FileLock(path, timeout=0):
        pass


def test_store_session_is_busy_while_filelock_holds_the_instance(tmp_path):
    store = JsonFileStorage(tmp_path / "store", lock_timeout=0.2)
    app = heph.Hephaestus(storage=store)
    instance_dir = store.instances / "orderid~o1"
    instance_dir.mkdir(parents=True, mode=0o700)
    holder = Holder(instance_dir / ".lock", "filelock")
    try:
        with pytest.raises(StorageError, match="busy"):
            with store.session("orderid::o1"):
                pass
    finally:
        holder.release()
    with store.session("orderid::o1") as session:
        assert session.runs() == []
    assert app.list() == []


def test_try_acquire_takes_a_free_lock_and_never_waits(tmp_path):
    path = tmp_path / ".lock"
    holder = Holder(path, "filelock")
    try:
        started = time.monotonic()
        assert InstanceLock(path, timeout=60).try_acquire() is False
        assert time.monotonic() - started < 5  # the timeout is for acquire(), not for try_acquire()
    finally:
        holder.release()
    lock = InstanceLock(path, timeout=0)
    assert lock.try_acquire() is True
    with pytest.raises(RuntimeError, match="already held"):
        lock.try_acquire()
    lock.release()


def test_try_acquire_without_create_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        InstanceLock(tmp_path / ".lock", timeout=0).try_acquire(create=False)
    with pytest.raises(FileNotFoundError):
        InstanceLock(tmp_path / "missing" / ".lock", timeout=0).try_acquire(create=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".lock").touch()
    lock = InstanceLock(tmp_path / ".lock", timeout=0)
    assert lock.try_acquire(create=False) is True
    lock.release()


def test_a_held_store_session_raises_instance_busy(tmp_path):
    store = JsonFileStorage(tmp_path / "store", lock_timeout=0.2)
    instance_dir = store.instances / "orderid~o2"
    instance_dir.mkdir(parents=True, mode=0o700)
    holder = Holder(instance_dir / ".lock", "heph")
    try:
        with pytest.raises(InstanceBusy) as busy:
            with store.session("orderid::o2"):
                pass
        assert busy.value.instance_id == "orderid::o2"
    finally:
        holder.release()
