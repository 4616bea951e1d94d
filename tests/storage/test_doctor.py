"""``heph doctor [--repair]``: what it finds in a store, what it repairs, and what it leaves alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import cli_env
from cli_helpers import heph as run_heph

FLOWS = '''\
import os
import time

from heph import ASYNC, Done, Step, Unique, Workflow


class Hold(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Slow(Step):
    """Logs each execution; sleeps while $SLOW_STEP_SECONDS says so (the first run, killed mid-step)."""

    events = ["done"]

    def execute(self, instance, config, context):
        with open(os.environ["STEP_LOG"], "a") as fh:
            fh.write(f"{instance.id} slow {os.getpid()}\\n")
        time.sleep(float(os.environ.get("SLOW_STEP_SECONDS", "0")))
        return "done", {"pid": os.getpid()}


class Held(Workflow):
    unique = Unique("did")
    name = "held"
    start = Hold
    transitions = {Hold: {"go": Done}}


class Quick(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok"


class Sleepy(Workflow):
    """A quick first step, so the run is stored before the slow one starts."""

    unique = Unique("slowid")
    name = "sleepy"
    start = Quick
    transitions = {Quick: {"ok": Slow}, Slow: {"done": Done}}


class Drowsy(Workflow):
    """Slow from its first step: nothing is stored before that step ends."""

    unique = Unique("drowsyid")
    name = "drowsy"
    start = Slow
    transitions = {Slow: {"done": Done}}
'''


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "heph.yaml").write_text("workflows:\n  - doctor_flows\nstorage:\n  path: .heph\n")
    (root / "doctor_flows.py").write_text(FLOWS)
    return root


def env(project: Path, **extra: str) -> dict:
    return cli_env(STEP_LOG=str(project / "steps.log"), **extra)


def heph(project: Path, *args: str, **extra: str):
    return run_heph(*args, cwd=project, env=env(project, **extra))


def doctor(project: Path, *args: str) -> tuple[int, dict]:
    run = heph(project, "doctor", *args, "--json")
    assert "Traceback" not in run.err, run
    return run.code, run.json()


def populated(project: Path) -> Path:
    for value in ("a1", "a2", "a3"):
        assert heph(project, "start", "held", value).code == 0
    assert heph(project, "resume", "held", "a2", "go").code == 0
    assert heph(project, "start", "sleepy", "s1").code == 0
    return project / ".heph"


def run_file(store: Path, dir_name: str) -> Path:
    (path,) = (store / "instances" / dir_name).glob("*.json")
    return path


# -- healthy --------------------------------------------------------------------------------------


def test_doctor_on_a_healthy_store_says_healthy(project):
    populated(project)
    run = heph(project, "doctor")
    assert run.code == 0 and run.out.strip().splitlines()[-1] == "healthy", run
    assert "corrupt:      0" in run.out and "4 readable" in run.out, run
    code, report = doctor(project)
    assert code == 0 and report["healthy"] is True
    assert report["instances"] == 4 and report["corrupt"] == [] and report["temp_files"] == []
    assert report["index"] == {"complete": True, "missing_markers": 0, "stale_markers": 0}
    assert report["interrupted"] == [] and report["busy"] == [] and report["unknown_workflows"] == []


def test_doctor_before_anything_was_stored_is_healthy(project):
    code, report = doctor(project)
    assert code == 0 and report["healthy"] is True and report["instances"] == 0
    assert not (project / ".heph").exists()


# -- problems, counted ---------------------------------------------------------------------------------


def _break_everything(store: Path) -> dict:
    """A corrupt file, a leftover temporary file, a stale and a missing index marker."""
    corrupt = run_file(store, "did~a1")
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    tmp = store / "instances" / "did~a3" / f".{run_file(store, 'did~a3').name}.4242.tmp"
    tmp.write_bytes(b'{"format": 1, "half": ')
    (waiting,) = [p for p in (store / "index" / "status" / "waiting").iterdir() if "~did~a3~" in p.name]
    stale = store / "index" / "status" / "running" / waiting.name
    stale.write_bytes(b"")               # a marker left by a write that never happened
    waiting.unlink()                     # a marker lost (the index is a cache; the file is the truth)
    return {"corrupt": corrupt, "tmp": tmp, "stale": stale, "missing": waiting}


def test_doctor_counts_every_problem_and_exits_1(project):
    store = populated(project)
    broken = _break_everything(store)
    code, report = doctor(project)
    assert code == 1 and report["healthy"] is False
    assert [c["file"] for c in report["corrupt"]] == [str(broken["corrupt"])]
    assert broken["corrupt"].name in report["corrupt"][0]["reason"]
    assert report["temp_files"] == [str(broken["tmp"])]
    assert report["index"] == {"complete": True, "missing_markers": 1, "stale_markers": 2}  # + a1's markers
    assert report["instances"] == 3
    text = heph(project, "doctor")
    assert text.code == 1 and "Traceback" not in text.err, text
    assert "corrupt:      1" in text.out and "temp files:   1" in text.out and "1 missing and 2 stale" in text.out
    assert text.out.strip().splitlines()[-1].startswith("problems found"), text


def test_doctor_reports_a_deleted_index(project):
    store = populated(project)
    shutil.rmtree(store / "index")
    code, report = doctor(project)
    assert code == 1 and report["index"]["complete"] is False
    assert report["index"]["missing_markers"] == 4 and report["index"]["stale_markers"] == 0
    assert not (store / "index").exists()  # diagnosing alone changes nothing


def test_doctor_reports_unknown_workflows(project):
    store = populated(project)
    path = run_file(store, "did~a3")
    doc = json.loads(path.read_bytes())
    doc["version"] = 9
    path.write_text(json.dumps(doc))
    shutil.rmtree(store / "index")
    assert doctor(project, "--repair")[0] == 0
    code, report = doctor(project)
    assert code == 0 and report["unknown_workflows"] == [
        {"id": "did::a3", "run": doc["run"], "workflow": "held", "version": 9}]


# -- repair ---------------------------------------------------------------------------------------------


def test_repair_quarantines_without_deleting_and_rebuilds_the_index(project):
    store = populated(project)
    broken = _break_everything(store)
    corrupt_bytes, tmp_bytes = broken["corrupt"].read_bytes(), broken["tmp"].read_bytes()
    code, report = doctor(project, "--repair")
    assert code == 0 and report["healthy"] is True
    quarantined = sorted(report["repaired"]["quarantined"])
    assert quarantined == sorted([str(store / "quarantine" / "did~a1" / broken["corrupt"].name),
                                  str(store / "quarantine" / "did~a3" / broken["tmp"].name)])
    assert Path(quarantined[0]).read_bytes() == corrupt_bytes
    assert Path(quarantined[1]).read_bytes() == tmp_bytes
    assert not broken["corrupt"].exists() and not broken["tmp"].exists()
    assert broken["missing"].exists() and not broken["stale"].exists()
    code, report = doctor(project)
    assert code == 0 and report["healthy"] is True
    assert report["index"] == {"complete": True, "missing_markers": 0, "stale_markers": 0}
    assert report["corrupt"] == [] and report["temp_files"] == [] and report["instances"] == 3
    # the store works again: a3 resumes, a1 (quarantined) can start afresh
    waiting = heph(project, "list", "--status", "waiting", "--json").json()["instances"]
    assert [i["id"] for i in waiting] == ["did::a3"]
    assert heph(project, "resume", "held", "a3", "go").code == 0
    assert heph(project, "start", "held", "a1").code == 0


def test_repair_rebuilds_a_deleted_index(project):
    store = populated(project)
    shutil.rmtree(store / "index")
    code, report = doctor(project, "--repair")
    assert code == 0 and report["repaired"]["index"]["instances"] == 4
    code, report = doctor(project)
    assert code == 0 and report["healthy"] and report["instances"] == 4
    assert [i["id"] for i in heph(project, "list", "--status", "completed", "--json").json()["instances"]] \
        == ["slowid::s1", "did::a2"]


def test_repeated_quarantine_never_overwrites(project):
    store = populated(project)
    path = run_file(store, "did~a1")
    versions = [b"first garbage", b"second garbage", b"third garbage"]
    for data in versions:
        path.write_bytes(data)
        assert doctor(project, "--repair")[0] == 0
    kept = sorted((store / "quarantine" / "did~a1").iterdir())
    assert [p.name for p in kept] == [path.name, f"{path.name}.1", f"{path.name}.2"]
    assert sorted(p.read_bytes() for p in kept) == sorted(versions)


# -- interrupted runs --------------------------------------------------------------------------------------


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_run_killed_mid_step_is_reported_interrupted_and_tick_finishes_it(project):
    populated(project)
    log = project / "steps.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "heph", "start", "sleepy", "s2"], cwd=project,
                            env=env(project, SLOW_STEP_SECONDS="60"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "slowid::s2 slow" in log.read_text())
        # while the owner lives and holds the lock, the run is busy, not interrupted
        code, report = doctor(project)
        assert [b["id"] for b in report["busy"]] == ["slowid::s2"] and report["interrupted"] == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    code, report = doctor(project)
    assert code == 0 and report["busy"] == []
    (entry,) = report["interrupted"]
    assert entry["id"] == "slowid::s2" and entry["steps"] == ["slow"] and entry["owner_pid"] == proc.pid
    text = heph(project, "doctor")
    assert "interrupted:  1" in text.out and "slowid::s2" in text.out, text
    # repair leaves it for tick (nothing is wrong with its file)
    code, report = doctor(project, "--repair")
    assert code == 0 and len(report["interrupted"]) == 1
    shown = heph(project, "show", "sleepy", "s2", "--json").json()
    assert shown["status"] == "running" and [a["step"] for a in shown["active"]] == ["slow"]
    tick = heph(project, "tick", "--json")
    assert tick.code == 0 and {"id": "slowid::s2", "kind": "recovered"}.items() <= tick.json()["fired"][0].items()
    shown = heph(project, "show", "sleepy", "s2", "--json").json()
    assert shown["status"] == "completed"
    assert [h["outcome"] for h in shown["history"] if h["step"] == "slow"] == ["completed"]
    assert shown["context"]["steps"]["slow"]["pid"] != proc.pid
    executions = [line for line in log.read_text().splitlines() if line.startswith("slowid::s2 slow")]
    assert len(executions) == 2 and executions[0].split()[-1] == str(proc.pid)  # at least once: it ran again
    code, report = doctor(project)
    assert code == 0 and report["interrupted"] == [] and report["healthy"]


def _start_killed_mid_slow_step(project, workflow: str, value: str, instance_id: str, meanwhile=None) -> Path:
    """``heph start WORKFLOW VALUE`` SIGKILLed while its slow step runs (after ``meanwhile()``,
    if given, has looked at the project); returns the step log."""
    log = project / "steps.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "heph", "start", workflow, value], cwd=project,
                            env=env(project, SLOW_STEP_SECONDS="60"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: f"{instance_id} slow" in log.read_text())
        if meanwhile is not None:
            meanwhile()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return log


def test_a_start_killed_in_its_first_step_leaves_no_instance_and_can_be_run_again(project):
    before = heph(project, "list", "--json").json()

    def while_the_first_step_runs() -> None:  # nothing is stored before the first step's result
        refused = heph(project, "show", "drowsy", "d1")
        assert refused.code == 1 and "no instance" in refused.err, refused  # not "busy"
        queued = heph(project, "resume", "--id", "drowsyid::d1", "done")  # for the run being made
        assert queued.code == 0 and queued.out.startswith("queued done for drowsyid::d1"), queued
        assert heph(project, "list", "--json").json() == before

    log = _start_killed_mid_slow_step(project, "drowsy", "d1", "drowsyid::d1", while_the_first_step_runs)
    # the start was never acknowledged: no run, no index entry, nothing for tick or doctor
    assert heph(project, "show", "drowsy", "d1").code == 1
    assert heph(project, "list", "--json").json() == before
    code, report = doctor(project)
    assert code == 0 and report["interrupted"] == [] and report["healthy"]
    ticked = heph(project, "tick", "--json")
    assert ticked.json()["fired"] == [] and "dropping 1 message(s) queued for drowsyid::d1" in ticked.err, ticked
    assert not list((project / ".heph" / "mail").rglob("*.json"))  # the event was for the run never stored
    again = heph(project, "start", "drowsy", "d1", "--json")
    assert again.code == 0 and again.json()["status"] == "completed", again
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["drowsyid::d1", "drowsyid::d1"]


def test_a_refused_resume_after_a_recovery_prints_one_line(project):
    _start_killed_mid_slow_step(project, "sleepy", "s3", "slowid::s3")
    run = heph(project, "resume", "sleepy", "s3", "done")
    assert run.code == 1 and "not waiting" in run.err, run  # refused, after finishing the interrupted step
    assert heph(project, "show", "sleepy", "s3", "--json").json()["status"] == "completed"
    assert len(run.err.strip().splitlines()) == 1, run


# -- the Python API ----------------------------------------------------------------------------------


def test_diagnosing_creates_nothing_not_even_lock_files(tmp_path):
    from heph.runtime.doctor import diagnose
    from heph.runtime.storage.jsonfile import JsonFileStorage
    from heph.testing.conformance import make_instance

    store = JsonFileStorage(tmp_path / "store")
    running = make_instance("doc::r", status="running")
    with store.session(running.id) as session:
        session.insert(running)
    (store.instances / "doc~r" / ".lock").unlink()  # a store copied without its lock files
    before = sorted(p for p in store.root.rglob("*"))
    report = diagnose(store)
    assert report["healthy"] and report["busy"] == []
    assert [(i["id"], i["run"]) for i in report["interrupted"]] == [(running.id, running.run)]
    assert sorted(p for p in store.root.rglob("*")) == before


def test_a_file_that_cannot_be_read_is_reported_unreadable_and_never_quarantined(tmp_path, monkeypatch):
    """An I/O error says nothing about the file's content: it stays where it is."""
    import errno

    from heph.runtime.doctor import diagnose
    from heph.runtime.storage.jsonfile import JsonFileStorage
    from heph.testing.conformance import make_instance

    store = JsonFileStorage(tmp_path / "store")
    for value in ("a", "b"):
        instance = make_instance(f"doc::{value}", status="waiting")
        with store.session(instance.id) as session:
            session.insert(instance)
    (victim,) = (store.instances / "doc~b").glob("*.json")
    real_read = os.read

    def failing_read(fd: int, n: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}") == str(victim):
            raise OSError(errno.EIO, "Input/output error")
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", failing_read)
    for repair in (False, True):
        report = diagnose(store, repair=repair)
        assert report["healthy"] is False and report["corrupt"] == [] and report["instances"] == 1
        assert [u["file"] for u in report["unreadable"]] == [str(victim)]
        assert "Input/output error" in report["unreadable"][0]["reason"]
        assert victim.exists() and not (store.root / "quarantine").exists()


def test_doctor_text_says_a_file_is_unreadable_and_what_to_do(tmp_path):
    from heph.cli.admin import doctor_lines
    from heph.runtime.doctor import diagnose
    from heph.runtime.storage.jsonfile import JsonFileStorage

    report = diagnose(JsonFileStorage(tmp_path / "store"))
    report.update(healthy=False, unreadable=[{"file": "/s/x.json", "reason": "cannot read instance file "
                                              "/s/x.json: [Errno 5] Input/output error"}])
    lines = doctor_lines(report)
    assert "unreadable:   1 (I/O errors reading them; never moved)" in lines
    assert "  unreadable: cannot read instance file /s/x.json: [Errno 5] Input/output error" in lines
    assert lines[-1].startswith("problems found: files the store cannot read") and "--repair" not in lines[-1]
