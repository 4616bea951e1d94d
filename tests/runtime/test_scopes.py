"""Uniqueness across workflows with different scopes: an active ``global`` run blocks every
start of its id, whatever the other workflow's scope, and the other way round; the scope a
run was created with is stored with it."""

from __future__ import annotations

import pytest

import heph
from heph import Done, Unique, WaitForEvent, Workflow
from heph.runtime.storage import JsonFileStorage, MemoryStorage


class ScGlobal(Workflow):
    unique = Unique("shared", scope="global")
    name = "sc_global"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class ScWorkflow(Workflow):
    unique = Unique("shared", scope="workflow")
    name = "sc_workflow"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class ScVersion(Workflow):
    unique = Unique("shared", scope="version")
    name = "sc_version"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


@pytest.fixture(params=["json", "memory"])
def app(request, tmp_path):
    storage = JsonFileStorage(tmp_path / "store") if request.param == "json" else MemoryStorage()
    yield heph.Hephaestus(storage=storage, clock=heph.ManualClock())


@pytest.mark.parametrize("other", [ScWorkflow, ScVersion])
def test_an_active_global_run_blocks_every_other_workflow(app, other):
    app.start(ScGlobal, "frank")
    with pytest.raises(heph.AlreadyRunning, match="sc_global"):
        app.start(other, "frank")
    assert [r.workflow for r in app.runs("shared::frank")] == ["sc_global"]


@pytest.mark.parametrize("other", [ScWorkflow, ScVersion])
def test_a_global_start_is_blocked_by_any_active_run_of_its_id(app, other):
    app.start(other, "frank")
    with pytest.raises(heph.AlreadyRunning, match=other.__heph_workflow_name__):
        app.start(ScGlobal, "frank")
    app.resume("shared::frank", "received", workflow=other)
    assert app.start(ScGlobal, "frank") == "shared::frank"  # finished: the id is free again


def test_each_run_stores_the_scope_it_was_created_with(app):
    app.start(ScVersion, "a")
    app.start(ScWorkflow, "b")
    assert app.get("shared::a").scope == "version"
    assert app.get("shared::b").scope == "workflow"
    assert app.get("shared::a").to_dict()["scope"] == "version"
