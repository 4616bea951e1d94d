"""A command resolves its target once: one listing of the id's directory, one lookup of the
workflow, one clock reading for the change it makes (and one per step boundary)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import heph
from heph import Done, Unique, WaitForEvent, Workflow
from heph.core import workflow as workflow_module
from heph.runtime.storage import JsonFileStorage


class OpWait(Workflow):
    unique = Unique("onepath")
    name = "op_wait"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class CountingClock:
    """A clock that stands still and counts how often it is read."""

    def __init__(self) -> None:
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_resume_lists_the_directory_once_looks_the_workflow_up_once_and_reads_the_clock_once(
        tmp_path, monkeypatch):
    clock = CountingClock()
    app = heph.Hephaestus(storage=JsonFileStorage(tmp_path / "store"), clock=clock)
    app.start(OpWait, "a1")
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: object = ".") -> list[str]:  # the store lists a directory it holds open by its fd
        listed.append(os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    looked: list[str] = []
    real_lookup = workflow_module.lookup
    monkeypatch.setattr("heph.runtime.app.lookup", lambda name: looked.append(name) or real_lookup(name))
    clock.reads = 0

    done = app.resume("onepath::a1", "received", workflow=OpWait)

    assert done.status == "completed"
    id_dir = os.fspath(tmp_path / "store" / "instances" / "onepath~a1")
    assert listed.count(id_dir) == 1
    assert looked == ["op_wait"]
    assert clock.reads == 1 + 2  # the resume itself, then Done's start and finish
