"""Busy notes for steps that take a while (SPEC §6, ``Storage.busy``).

A process running a step says so through ``Session.announce``, so that other processes can
answer at once instead of waiting for its lock. Writing a note before every step would cost a
file write (or a round trip) per step, more than a tenth of a short step's time; most steps
end sooner than anyone could ask. So the runtime only marks the step as running (two
assignments under a lock) and one daemon thread per process writes the note of a step still
running ``DELAY`` seconds after it began. The runtime clears the mark before the session
ends, under the same lock, so a note is never written for a session that has closed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger("heph")

DELAY = 0.1  # seconds a step runs before its note is written


class Announcer:
    """Writes the busy notes of the steps of this process that run longer than ``delay``."""

    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self._cond = threading.Condition()
        self._running: dict[int, list] = {}  # id(session) -> [session, make_note, began, wall, written]
        self._started = False  # the thread runs (in this process: a fork starts its own)
        os.register_at_fork(after_in_child=self._forked)
        self._asleep = False  # the thread waits without a timeout (nothing ran for a while)
        self._last = 0.0  # when a step last began

    def running(self, session: Any, make_note: Callable[[str], dict]) -> None:
        """A step of ``session``'s instance begins now; ``make_note(since)`` builds its note.
        Cheap: the thread is woken only if it sleeps (it looks every ``delay`` while steps run)."""
        with self._cond:
            if not self._started:
                self._started, self._asleep = True, False
                threading.Thread(target=self._loop, name="heph-announcer", daemon=True).start()
            self._last = time.monotonic()
            self._running[id(session)] = [session, make_note, self._last, time.time(), False]
            if self._asleep:
                self._asleep = False
                self._cond.notify()

    def _forked(self) -> None:
        """In a forked child: no thread yet, and nothing of the parent's runs here."""
        self._cond = threading.Condition()
        self._running, self._started, self._asleep = {}, False, False

    def clear(self, session: Any) -> None:
        """No step of ``session`` runs any more (call before the session ends)."""
        with self._cond:
            self._running.pop(id(session), None)

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry in self._running.values():
                    if not entry[4] and now - entry[2] >= self.delay:
                        entry[4] = True
                        self._write(entry)
                pending = [e[2] for e in self._running.values() if not e[4]]
                if pending:
                    self._cond.wait(max(0.0, min(pending) + self.delay - now))
                elif now - self._last > 10 * self.delay:
                    self._asleep = True
                    self._cond.wait()
                else:
                    self._cond.wait(self.delay)

    @staticmethod
    def _write(entry: list) -> None:
        session, make_note, _, wall = entry[:4]
        try:
            session.announce(make_note(datetime.fromtimestamp(wall, timezone.utc).isoformat()))
        except Exception as exc:  # noqa: BLE001 - a note that cannot be written is only not shown
            log.debug("could not write a busy note: %s", exc)


ANNOUNCER = Announcer()
