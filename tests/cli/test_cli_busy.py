"""Busy instances on the command line (SPEC §6): while `heph resume` runs a slow step in one
process, `resume`, `cancel`, `start`, `show` and `list` in others answer within 2 s.

The slow step waits for a gate file (its path in the context), so the test decides when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from cli_helpers import assert_refused, cli_env, make_project, ok, ok_json
from cli_helpers import heph as run_heph

FLOWS = '''\
import pathlib
import time

from heph import ASYNC, Done, Step, Unique, Workflow


class Go(Step):
    events = ["go"]
    key = "go"

    def execute(self, instance, config, context):
        return ASYNC


class Charge(Step):
    """Waits (up to 60 s) for the gate file named in the context: the test's "slow HTTP call"."""

    events = ["charged"]
    key = "charge"

    def execute(self, instance, config, context):
        gate = pathlib.Path(context.initial["gate"])
        pathlib.Path(context.initial["gate"] + ".entered").touch()
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return "charged", {"charged": True}


class Confirm(Step):
    events = ["confirmed", "refused"]
    key = "confirm"

    def execute(self, instance, config, context):
        return ASYNC


class Busy(Workflow):
    unique = Unique("busy")
    name = "busyflow"
    start = Go
    transitions = {Go: {"go": Charge}, Charge: {"charged": Confirm},
                   Confirm: {"confirmed": Done, "refused": Done}}
'''


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("busy") / "shop")
    (project / "busy_flows.py").write_text(FLOWS)
    config = project / "heph.yaml"
    config.write_text(config.read_text().replace("workflows:\n", "workflows:\n  - busy_flows\n"))
    return project


@pytest.fixture
def project(template, tmp_path):
    import shutil

    return shutil.copytree(template, tmp_path / "shop")


class Charging:
    """`heph resume busyflow VALUE go` in a background process, held in its charge step."""

    def __init__(self, project, value="b1"):
        self.gate = project / f"gate-{value}"
        ok("start", "busyflow", value, "--context-json", json.dumps({"gate": str(self.gate)}), cwd=project)
        self.proc = subprocess.Popen([sys.executable, "-m", "heph", "resume", "busyflow", value, "go", "--json"],
                                     cwd=project, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        entered = project / f"gate-{value}.entered"
        deadline = time.monotonic() + 30
        while not entered.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the charge step never started"
            time.sleep(0.02)

    def release(self) -> dict:
        self.gate.touch()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return json.loads(out)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def timed(*args, cwd):
    began = time.monotonic()
    run = run_heph(*args, cwd=cwd)
    return run, time.monotonic() - began


def test_resume_of_a_busy_instance_is_queued_and_applied_after_the_step(project):
    charging = Charging(project)
    try:
        run, took = timed("resume", "busyflow", "b1", "confirmed", "--data", '{"by": "ann"}', "--json", cwd=project)
        assert run.code == 0, run
        assert took < 2 + 1.5  # 2 s, plus a cold interpreter's start
        answer = run.json()
        assert answer["outcome"] == "queued" and answer["busy"]["step"] == "charge"
        text, _ = timed("resume", "busyflow", "b1", "refused", cwd=project)
        assert text.code == 0 and text.out.startswith("queued refused for busy::b1"), text
        assert "charge" in text.out and "pid" in text.out
    finally:
        charging.release()
    shown = ok_json("show", "busyflow", "b1", cwd=project)
    assert shown["status"] == "completed" and shown["busy"] is None
    assert shown["context"]["steps"]["confirm"] == {"by": "ann"}
    rejected = [h for h in shown["history"] if h["outcome"] == "rejected"]
    assert [h["event"] for h in rejected] == ["refused"]


def test_an_event_no_step_declares_is_refused_at_once(project):
    charging = Charging(project)
    try:
        run, took = timed("resume", "busyflow", "b1", "nonsense", cwd=project)
        assert_refused(run, "nonsense")
        assert took < 3.5
    finally:
        charging.release()


def test_show_and_list_report_the_running_step_and_its_owner(project):
    charging = Charging(project)
    try:
        shown = ok_json("show", "busyflow", "b1", cwd=project)
        assert shown["status"] == "running"
        assert shown["busy"]["step"] == "charge" and shown["busy"]["pid"] == charging.proc.pid
        text = ok("show", "busyflow", "b1", cwd=project).out
        assert "running" in text and f"pid {charging.proc.pid}" in text
        listed = ok_json("list", cwd=project)["instances"]
        assert [(i["status"], i["busy"]["step"]) for i in listed if i["id"] == "busy::b1"] == [("running", "charge")]
        assert "running (charge)" in ok("list", cwd=project).out
    finally:
        charging.release()
    listed = ok_json("list", cwd=project)["instances"]
    assert [i.get("busy") for i in listed if i["id"] == "busy::b1"] == [None]


def test_cancel_of_a_busy_instance_is_requested_then_applied(project):
    charging = Charging(project)
    try:
        run, took = timed("cancel", "busyflow", "b1", "--json", cwd=project)
        assert run.code == 0 and took < 3.5, run
        assert run.json()["outcome"] == "cancel requested"
    finally:
        done = charging.release()
    assert done["status"] == "cancelled"
    shown = ok_json("show", "busyflow", "b1", cwd=project)
    assert shown["status"] == "cancelled" and shown["context"]["steps"]["charge"] == {"charged": True}
    assert not any(h["outcome"] == "async" and h["step"] == "confirm" for h in shown["history"])


def test_cancel_wait_returns_once_cancelled(project):
    charging = Charging(project)
    waiter = subprocess.Popen([sys.executable, "-m", "heph", "cancel", "busyflow", "b1", "--wait"], cwd=project,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    assert waiter.poll() is None  # waiting for the step
    charging.release()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.decode().startswith("cancelled busy::b1"), out


def test_start_of_a_busy_key_is_already_running_at_once(project):
    charging = Charging(project)
    try:
        run, took = timed("start", "busyflow", "b1", "--context-json", '{"gate": "x"}', cwd=project)
        assert_refused(run, "already")
        assert took < 3.5
    finally:
        charging.release()


def test_a_killed_owner_leaves_its_queued_event_to_the_next_tick(project):
    charging = Charging(project)
    run = run_heph("resume", "busyflow", "b1", "confirmed", "--json", cwd=project)
    assert run.json()["outcome"] == "queued"
    charging.kill()  # its resume of "go" never answered, so nothing of it was promised
    ticked = ok_json("tick", cwd=project)
    assert [a["kind"] for a in ticked["fired"]] == ["mail"], ticked
    shown = ok_json("show", "busyflow", "b1", cwd=project)
    assert shown["status"] == "waiting" and list(shown["waits"]) == ["go"]
    # the queued event was applied to what is stored: no step took it, so it is in the history
    assert [(h["outcome"], h["event"]) for h in shown["history"][-1:]] == [("rejected", "confirmed")]
    charging.gate.touch()
    assert ok_json("resume", "busyflow", "b1", "go", cwd=project)["waiting"] == ["confirm"]
