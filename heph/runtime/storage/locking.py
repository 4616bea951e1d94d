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

from heph.errors import LockTimeout

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
        self._waited = None  # the filelock.FileLock that waited for the lock, while held

    def acquire(self) -> None:
        if self._fd is not None or self._waited is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
            except BaseException:
                os.close(fd)
                raise
            else:
                self._fd = fd
                return
        from filelock import FileLock, Timeout

        waiting = FileLock(self.path, timeout=self.timeout, mode=0o600, preserve_lock_file=True,
                           poll_interval=0.005)
        try:
            waiting.acquire()
        except Timeout:
            raise LockTimeout(path=self.path) from None
        self._waited = waiting

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
