"""The one uniqueness rule (``heph.core.uniqueness``): which two active runs of one id conflict."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from heph import AlreadyRunning
from heph.core.uniqueness import blocker, check, conflicts, scope_of_id


@dataclass
class Run:
    workflow: str
    scope: str
    version: int = 1
    status: str = "waiting"
    id: str = "k::v"
    run: str = "r1"


def pair(a: Run, b: Run) -> bool:
    b.run = "r2"
    return conflicts(a, b)


@pytest.mark.parametrize(("a", "b", "expected"), [
    (Run("w1", "workflow"), Run("w1", "workflow"), True),
    (Run("w1", "workflow"), Run("w2", "workflow"), False),
    (Run("w1", "version", 1), Run("w1", "version", 1), True),
    (Run("w1", "version", 1), Run("w1", "version", 2), False),
    (Run("w1", "version", 1), Run("w2", "version", 1), False),
    (Run("w1", "workflow", 1), Run("w1", "version", 2), True),  # workflow scope on either side
    (Run("w1", "global"), Run("w2", "global"), True),
    (Run("w1", "global"), Run("w2", "workflow"), True),  # global holds the id whatever the other's scope
    (Run("w1", "workflow"), Run("w2", "global"), True),  # ... and the other way round
    (Run("w1", "global"), Run("w2", "version"), True),
    (Run("w1", "none", id="k::v::0badcafe"), Run("w1", "none", id="k::v::0badcafe"), True),
])
def test_conflicts_follows_the_scopes_both_ways(a, b, expected):
    assert pair(a, b) is expected
    a.run, b.run = "r2", "r1"
    assert conflicts(b, a) is expected


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_finished_runs_never_conflict(status):
    assert not pair(Run("w1", "global"), Run("w1", "global", status=status))
    assert not pair(Run("w1", "global", status=status), Run("w1", "global"))


def test_runs_of_other_ids_and_a_run_with_itself_never_conflict():
    assert not pair(Run("w1", "global"), Run("w1", "global", id="k::other"))
    same = Run("w1", "global")
    assert not conflicts(same, same)


def test_check_names_the_run_that_blocks():
    new = Run("w2", "workflow", run="new")
    held = Run("w1", "global", version=3, status="running")
    assert blocker(new, [Run("w2", "workflow", status="completed", run="old"), held]) is held
    with pytest.raises(AlreadyRunning) as caught:
        check(new, [held])
    assert (caught.value.instance_id, caught.value.workflow, caught.value.version, caught.value.status) == (
        "k::v", "w1", 3, "running")
    check(new, [Run("w2", "workflow", status="failed", run="old")])  # nothing active: no error


def test_runs_stored_without_a_scope_read_as_workflow_or_none():
    assert scope_of_id("k::v") == "workflow"
    assert scope_of_id("k::v::0badcafe") == "none"
