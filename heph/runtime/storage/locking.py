"""The per-instance lock.

The lock is `filelock`'s: an exclusive ``flock`` on a lock file that is never deleted. When the
lock is free, heph takes it with one ``flock`` call on its own descriptor; only when it is held
does it hand over to ``filelock.FileLock``, which waits (polling every 5 ms) up to the timeout.
filelock 4's bookkeeping (fork tracking, a singleton registry, path resolution) costs ~0.4 ms
per acquire and release, a quarter of heph's CPU time per instance, and its import ~10 ms of a
CLI command: the uncontended path skips both. Both paths hold the same kind of lock on the
same file, so heph processes, and any tool that takes ``filelock.FileLock(path)``, exclude
each other. Platforms without ``fcntl`` always use filelock.

The lock file is opened without following a symbolic link (``O_NOFOLLOW``): a link planted at
its name is refused (``StorageError``), never followed, and filelock is handed only a file heph
has just opened itself. Every failure of the file system is a ``StorageError`` naming the lock
file and the OS error; only ``try_acquire(create=False)`` lets ``FileNotFoundError`` through.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from typing import TYPE_CHECKING

from heph.errors import LockTimeout, StorageError

if TYPE_CHECKING:
    from filelock import BaseFileLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
LINK_ADVICE = "heph never follows links inside its store: run `heph doctor --repair` to move it to quarantine/"


def os_error(exc: OSError) -> str:
    """An OS error as one short text: ``[Errno 28] No space left on device``."""
    if exc.errno is None:
        return str(exc)
    return f"[Errno {exc.errno}] {exc.strerror or os.strerror(exc.errno)}"


class InstanceLock:
    """An exclusive lock on ``path`` (created 0600 if missing); ``acquire`` raises
    ``LockTimeout`` when it is still held by someone else after ``timeout`` seconds.
    ``dir_fd``: an open descriptor of the lock file's directory, which the file is then
    opened through (the directory cannot be swapped for a link under the caller's feet)."""

    def __init__(self, path: str | os.PathLike, timeout: float, dir_fd: int | None = None):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._dir_fd = dir_fd
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
        flags = (os.O_RDWR | os.O_CREAT | _NOFOLLOW) if create else (os.O_RDWR | _NOFOLLOW)
        try:
            if self._dir_fd is None:
                fd = os.open(self.path, flags, 0o600)
            else:
                fd = os.open(os.path.basename(self.path), flags, 0o600, dir_fd=self._dir_fd)
        except FileNotFoundError as exc:
            if not create:
                raise
            raise self._failure("create", exc) from None
        except OSError as exc:
            raise self._failure("create" if create else "open", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {os_error(exc)}") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _failure(self, verb: str, exc: OSError) -> StorageError:
        if exc.errno == errno.ELOOP:
            return StorageError(f"lock file {self.path} is a symbolic link; {LINK_ADVICE}")
        return StorageError(f"cannot {verb} lock file {self.path}: {os_error(exc)}")

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
        except OSError as exc:
            raise StorageError(f"cannot lock {self.path}: {os_error(exc)}") from None
        self._waited = waiting
        return True

    def release(self) -> None:
        """Let the lock go. Never fails: closing the descriptor drops the lock whatever happens."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):  # unlock explicitly: a forked child may still share the descriptor
                fcntl.flock(fd, fcntl.LOCK_UN)
            with suppress(OSError):
                os.close(fd)
        elif self._waited is not None:
            waited, self._waited = self._waited, None
            with suppress(OSError):
                waited.release()

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
