"""The busy-note writer (heph.runtime.announcer): only steps that run a while get a note."""

from __future__ import annotations

import time

from heph.runtime.announcer import Announcer


class Recorder:
    def __init__(self):
        self.notes = []

    def announce(self, note):
        self.notes.append(note)


def _note(since):
    return {"step": "s", "since": since}


def test_a_short_step_writes_no_note_and_a_long_one_writes_one():
    announcer = Announcer(delay=0.05)
    quick, slow = Recorder(), Recorder()
    announcer.running(quick, _note)
    announcer.clear(quick)
    announcer.running(slow, _note)
    time.sleep(0.3)
    assert quick.notes == []
    assert len(slow.notes) == 1 and slow.notes[0]["since"].endswith("+00:00")
    announcer.clear(slow)


def test_a_cleared_session_is_never_written_and_the_thread_wakes_from_sleep():
    announcer = Announcer(delay=0.02)
    first = Recorder()
    announcer.running(first, _note)
    time.sleep(0.1)
    announcer.clear(first)
    time.sleep(0.4)  # idle long enough for the thread to sleep without a timeout
    assert len(first.notes) == 1
    second = Recorder()
    announcer.running(second, _note)
    time.sleep(0.2)
    assert len(second.notes) == 1 and len(first.notes) == 1
    announcer.clear(second)
