"""The per-instance file lock.

The lock is `filelock`'s: an exclusive ``flock`` on a lock file that is never deleted. When the
lock is free, heph takes it with one ``flock`` call on its own descriptor; only when it is held
does it hand over to ``filelock.FileLock``, which waits (polling every 5 ms) up to the timeout.
filelock 4's bookkeeping (fork tracking, a singleton registry, path resolution) costs ~0.4 ms
per acquire and release, a quarter of heph's CPU time per instance, and its import ~10 ms of a
CLI command: the uncontended path skips both. Both paths hold the same kind of lock on the
same file, so heph processes, and any tool that takes ``filelock.FileLock(path)``, exclude
each other. Platforms without ``fcntl`` always use filelock.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from heph.errors import LockTimeout

if TYPE_CHECKING:
    from filelock import BaseFileLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class InstanceLock:
    """An exclusive lock on ``path`` (created 0600 if missing); ``acquire`` raises
    ``LockTimeout`` when it is still held by someone else after ``timeout`` seconds."""

    def __init__(self, path: str | os.PathLike, timeout: float):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._fd: int | None = None
        self._waited: BaseFileLock | None = None  # the filelock.FileLock that waited for the lock, while held

    def try_acquire(self, create: bool = True) -> bool:
        """Take the lock if it is free, without waiting: True if taken, False if someone else
        holds it. With ``create=False`` a missing lock file (or directory) raises
        ``FileNotFoundError`` and nothing is created."""
        if self._fd is not None or self._waited is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        if fcntl is None:  # pragma: no cover - Windows
            if not create and not os.path.exists(self.path):
                raise FileNotFoundError(2, "No such file or directory", self.path)
            return self._wait(0)
        fd = os.open(self.path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def acquire(self) -> None:
        if not self.try_acquire() and not self._wait(self.timeout):
            raise LockTimeout(path=self.path)

    def _wait(self, timeout: float) -> bool:
        """Take the lock through ``filelock``, waiting at most ``timeout`` seconds."""
        from filelock import FileLock, Timeout

        waiting = FileLock(self.path, timeout=timeout, mode=0o600, preserve_lock_file=True,
                           poll_interval=0.005)
        try:
            waiting.acquire()
        except Timeout:
            return False
        self._waited = waiting
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:  # unlock explicitly: a forked child may still share the descriptor
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        elif self._waited is not None:
            waited, self._waited = self._waited, None
            waited.release()

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
