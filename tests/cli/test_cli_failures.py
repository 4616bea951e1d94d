"""Exit statuses when the disk fails under a command (faults injected with strace): 1 means
nothing changed, 3 means the change may have been applied, and tick tells a timer it could
not fire from one it fired."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import Run, cli_env, make_project, ok_json, wait_until_due

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def faulty(*args: str, cwd: Path, inject: str) -> Run:
    """``heph ARGS`` with one system call failing, as ``strace -e inject=...`` makes it."""
    call, _, how = inject.partition(":")
    if call == "rename":  # whichever the store uses (counted per system call, and only one is)
        call = "rename,renameat,renameat2"
    proc = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={call}", "-e",
                           f"inject={call}:{how}", sys.executable, "-m", "heph", *args],
                          cwd=cwd, capture_output=True, env=cli_env(), timeout=60)
    return Run(list(args), proc)


def instance_files(project: Path) -> dict[str, bytes]:
    root = project / ".heph" / "instances"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


@pytest.fixture
def due(tmp_path) -> Path:
    """A project whose fulfilment instance has a retry due now."""
    project = make_project(tmp_path / "p")
    started = ok_json("start", "fulfilment", "ship1", "--context", "contexts/fulfilment.json", cwd=project)
    wait_until_due(started)
    return project


def test_tick_whose_first_write_fails_exits_1_names_the_run_and_changes_nothing(due):
    before = instance_files(due)
    run = faulty("tick", "--json", cwd=due, inject="rename:error=EIO:when=1")
    assert run.code == 1, run
    report = json.loads(run.out)
    assert report["fired"] == []
    assert [(f["id"], f["code"]) for f in report["failed"]] == [("shipment::ship1", "storage_error")]
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not fire the due work of shipment::ship1"), run
    assert "Traceback" not in run.err
    assert "internal error" not in run.err
    assert instance_files(due) == before
    assert ok_json("tick", cwd=due)["fired"][0]["id"] == "shipment::ship1"   # the next tick fires it


def test_tick_whose_later_write_fails_exits_3_may_have_been_applied(due):
    run = faulty("tick", cwd=due, inject="rename:error=EIO:when=2")
    assert run.code == 3, run
    assert "may have been applied" in run.err and "fired 0, failed 1" in run.out


@pytest.fixture
def store(tmp_path) -> Path:
    """A project whose store exists (so that a start's first rename is its instance file's)."""
    project = make_project(tmp_path / "p")
    ok_json("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    return project


def test_start_whose_later_write_fails_exits_3_and_says_to_check(store):
    project = store
    run = faulty("start", "fulfilment", "ship2", "--context", "contexts/fulfilment.json", cwd=project,
                 inject="rename:error=EIO:when=2")
    assert run.code == 3, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run
    assert "may have been applied" in lines[0] and "heph show shipment::ship2" in lines[0]


def test_start_whose_first_write_fails_exits_1_and_leaves_no_run(store):
    project = store
    before = instance_files(project)
    run = faulty("start", "fulfilment", "ship3", "--context", "contexts/fulfilment.json", cwd=project,
                 inject="rename:error=EIO:when=1")
    assert run.code == 1, run
    assert "may have been applied" not in run.err
    assert instance_files(project) == before


def test_an_answer_that_cannot_be_written_after_a_change_exits_3(store):
    """(with --json too: the refusal cannot be printed on stdout either, the stderr line still is)"""
    with open("/dev/full", "wb") as full:              # every write to stdout fails: ENOSPC
        proc = subprocess.run([sys.executable, "-m", "heph", "start", "paymentflow", "pay2", "--context",
                               "contexts/payment.json"], cwd=store, stdout=full, stderr=subprocess.PIPE,
                              env=cli_env(), timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert err.count("\n") == 1 and err.startswith("error:") and "its answer could not be" in err, err
    assert ok_json("show", "paymentflow", "pay2", cwd=store)["status"] == "waiting"   # it was applied


def test_a_read_only_command_whose_answer_cannot_be_written_exits_1(store):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "heph", "list"], cwd=store, stdout=full,
                              stderr=subprocess.PIPE, env=cli_env(), timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.startswith("error: cannot write the output"), err
