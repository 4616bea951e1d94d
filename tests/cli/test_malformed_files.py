"""Instance files edited by hand into malformed-but-parseable JSON (issue #14, defects 1 and 11).

Each file below is valid JSON, but one field has the wrong type or shape (a due time that is
not a time, a wait that is not an object, an attempt that is a string, ...). Such a file used
to stop ``heph list``, ``tick``, ``worker`` and ``doctor`` for the whole store with an internal
error, and ``cancel`` wrote a history entry the loader then rejected. Now the loader rejects
the file when it reads it, naming the field, so that:

- ``list`` exits 0, lists every other instance and warns about the file by name;
- ``tick`` (and ``worker``) skip it and still fire the other instances' due timers;
- ``show``/``resume``/``cancel`` of its id refuse with exit 1 and one line naming the file,
  and change nothing on disk;
- ``doctor`` reports it, and ``doctor --repair`` moves it, byte for byte, to quarantine/.

Every command runs the real CLI in a subprocess against a copy of a small template project.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest
from cli_helpers import assert_refused, assert_same_snapshot, cli_env, snapshot, wait_until_due
from cli_helpers import heph as run_heph

import heph

FLOWS = '''\
from heph import ASYNC, Done, Step, Unique, Wait, Workflow


class Hold(Step):
    events = ["go"]
    key = "hold"

    def execute(self, instance, config, context):
        return ASYNC


class Held(Workflow):
    unique = Unique("mfh")
    name = "mfheld"
    start = Hold
    transitions = {Hold: {"go": Done}}


class Pause(Step):
    events = ["ok"]
    key = "pause"

    def execute(self, instance, config, context):
        return "ok"


class Timed(Workflow):
    unique = Unique("mft")
    name = "mftimed"
    start = Pause
    transitions = {Pause: {"ok": (Wait, {"duration": 1, "unit": "second"})}, Wait: {"timeout": Done}}
'''

CONFIG = "workflows:\n  - malformed_flows\nstorage:\n  path: .heph\n"


# The same workflows as the project's malformed_flows module, to fill the template store in-process.
class HoldMf(heph.Step):
    events = ["go"]
    key = "hold"

    def execute(self, instance, config, context):
        return heph.ASYNC


class HeldMf(heph.Workflow):
    unique = heph.Unique("mfh")
    name = "mfheld"
    start = HoldMf
    transitions = {HoldMf: {"go": heph.Done}}


class PauseMf(heph.Step):
    events = ["ok"]
    key = "pause"

    def execute(self, instance, config, context):
        return "ok"


class TimedMf(heph.Workflow):
    unique = heph.Unique("mft")
    name = "mftimed"
    start = PauseMf
    transitions = {PauseMf: {"ok": (heph.Wait, {"duration": 1, "unit": "second"})}, heph.Wait: {"timeout": heph.Done}}


# -- the malformed files --------------------------------------------------------------------------
# Each edit turns the document of a waiting run of mftimed (waiting on its timer "wait", with a
# due marker in the index, so `tick` reaches it) into a malformed one; the value is the field the
# loader must name.


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def _drop(path: str) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]
    return edit


MALFORMED: dict[str, tuple[Callable[[dict], None], str]] = {
    "due-at-not-a-time": (_set("waits.wait.due_at", "2026-12-03 noon"), "waits.wait.due_at"),
    "due-at-naive": (_set("waits.wait.due_at", "2026-12-03T12:00:00"), "waits.wait.due_at"),
    "wait-not-an-object": (_set("waits.wait", 5), "waits.wait"),
    "waits-not-an-object": (_set("waits", ["wait"]), "waits"),
    "active-int": (_set("active", [5]), "active[0]"),
    "active-entry-without-step": (_set("active", [{"attempt": 1}]), "active[0].step"),
    "attempt-string": (_set("waits.wait.attempt", "x"), "waits.wait.attempt"),
    "attempt-zero": (_set("waits.wait.attempt", 0), "waits.wait.attempt"),
    "since-missing": (_drop("waits.wait.since"), "waits.wait.since"),
    "wait-kind-unknown": (_set("waits.wait.kind", "alarm"), "waits.wait.kind"),
    "status-bogus": (_set("status", "bogus"), "status"),
    "context-list": (_set("context", []), "context"),
    "context-steps-value": (_set("context.steps", {"pause": 5}), "context.steps.pause"),
    "history-entry-missing-outcome": (_drop("history.0.outcome"), "history[0].outcome"),
    "history-time-garbage": (_set("history.1.started_at", "noon"), "history[1].started_at"),
    "history-duration-string": (_set("history.0.duration_ms", "fast"), "history[0].duration_ms"),
    "version-string": (_set("version", "1"), "version"),
    "version-zero": (_set("version", 0), "version"),
    "format-true": (_set("format", True), "format"),
    "failed-int": (_set("failed", 5), "failed"),
    "error-string": (_set("error", "boom"), "error"),
    "lease-string": (_set("lease", "me"), "lease"),
    "completed-int": (_set("completed", [5]), "completed[0]"),
    "arrived-value": (_set("arrived", {"join": 5}), "arrived.join"),
    "runtime-metadata-list": (_set("runtime_metadata", []), "runtime_metadata"),
}
NAMES = sorted(MALFORMED)
# the cases run through every command one at a time (the three reproducers and a few more);
# every case runs through list, show, tick, worker and doctor at once, below
ONE_AT_A_TIME = ["due-at-not-a-time", "wait-not-an-object", "active-int", "attempt-string",
                 "history-time-garbage", "version-string", "lease-string"]


# -- project set-up ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project with mfh::keep (waiting on an event), mft::good (a due timer) and one mftimed
    run with a due timer per malformed case (mft::b00, ...), copied for each test."""
    root = tmp_path_factory.mktemp("malformed-template")
    (root / "heph.yaml").write_text(CONFIG)
    (root / "malformed_flows.py").write_text(FLOWS)
    app = heph.Hephaestus(storage=heph.JsonFileStorage(root / ".heph"))
    app.start(HeldMf, "keep")
    app.start(TimedMf, "good")
    for n in range(len(NAMES)):
        app.start(TimedMf, f"b{n:02d}")
    shown = run_heph("show", "mftimed", "good", "--json", cwd=root)
    assert shown.code == 0 and shown.json()["status"] == "waiting", shown
    return root


@pytest.fixture
def project(template, tmp_path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(template, dest, symlinks=True)
    return dest


def store(project: Path) -> Path:
    return project / ".heph"


def run_file(project: Path, value: str, key: str = "mft") -> Path:
    (path,) = (store(project) / "instances" / f"{key}~{value}").glob("*.json")
    return path


def doc_of(project: Path, value: str, key: str = "mft") -> dict:
    return json.loads(run_file(project, value, key).read_bytes())


def corrupt(project: Path, name: str) -> tuple[str, Path]:
    """Apply the malformed case ``name`` to its run's file; return (its value, its path)."""
    value = f"b{NAMES.index(name):02d}"
    path = run_file(project, value)
    doc = json.loads(path.read_bytes())
    MALFORMED[name][0](doc)
    path.write_bytes(json.dumps(doc, indent=1).encode())
    return value, path


def run_all(project: Path, calls: list[tuple[str, ...]], workers: int = 4) -> list:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: run_heph(*args, cwd=project), calls))


def assert_clean(run) -> None:
    """Exit 0, no internal error, no traceback."""
    assert run.code == 0, run
    for text in (run.out, run.err):
        assert "Traceback" not in text and "internal error" not in text, run


def assert_refused_naming(run, path: Path, field: str) -> None:
    line = assert_refused(run, path.name)
    assert "internal error" not in line, run
    assert field in line, (field, run)


# -- one malformed file at a time ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_AT_A_TIME)
def test_a_malformed_file_is_refused_reported_skipped_and_quarantined(project, name):
    value, path = corrupt(project, name)
    field = MALFORMED[name][1]
    raw = path.read_bytes()
    before = snapshot(store(project))

    listing, listed, shown, shown_json, resumed, cancelled, retried, doctor = run_all(project, [
        ("list",), ("list", "--json"),
        ("show", "mftimed", value), ("show", "--id", f"mft::{value}", "--json"),
        ("resume", "mftimed", value, "timeout"), ("cancel", "mftimed", value), ("retry", "mftimed", value),
        ("doctor",),
    ])
    # list: exit 0, every other instance listed, a warning naming the file (and its field)
    assert_clean(listing)
    assert path.name in listing.err and field in listing.err, listing
    assert "mfh::keep" in listing.out and "mft::good" in listing.out, listing
    assert_clean(listed)
    ids = {i["id"] for i in listed.json()["instances"]}
    assert {"mfh::keep", "mft::good"} <= ids and f"mft::{value}" not in ids, listed
    assert len(ids) == len(NAMES) + 1, listed
    # show / resume / cancel / retry of the bad id: one line naming the file, no internal error
    for run in (shown, resumed, cancelled, retried):
        assert_refused_naming(run, path, field)
    assert shown_json.code == 1, shown_json
    error = json.loads(shown_json.out)["error"]
    assert error["code"] == "storage_error" and path.name in error["message"], shown_json
    # doctor: reports the file, exit 1
    assert doctor.code == 1 and "Traceback" not in doctor.err and "internal error" not in doctor.err, doctor
    assert f"corrupt: instance file {path}" in doctor.out and field in doctor.out, doctor
    # none of them changed anything
    assert path.read_bytes() == raw
    assert_same_snapshot(before, snapshot(store(project)), name)

    # tick: skips the file, fires the good timer (and every other valid due one)
    wait_until_due(doc_of(project, "good"))
    tick = run_heph("tick", "--json", cwd=project)
    assert_clean(tick)
    fired = {a["id"] for a in tick.json()["fired"]}
    assert "mft::good" in fired and f"mft::{value}" not in fired, tick
    assert len(fired) == len(NAMES), tick
    assert path.read_bytes() == raw
    assert doc_of(project, "good")["status"] == "completed"

    # doctor --repair: the file goes to quarantine, byte for byte; the store is healthy after
    repaired = run_heph("doctor", "--repair", "--json", cwd=project)
    assert_clean(repaired)
    report = repaired.json()
    assert [c["file"] for c in report["corrupt"]] == [str(path)], repaired
    quarantined = store(project) / "quarantine" / path.parent.name / path.name
    assert report["repaired"]["quarantined"] == [str(quarantined)], repaired
    assert not path.exists() and quarantined.read_bytes() == raw
    after = run_heph("doctor", cwd=project)
    assert_clean(after)
    assert "healthy" in after.out, after
    relisted = run_heph("list", cwd=project)
    assert_clean(relisted)
    assert "warning" not in relisted.err, relisted


# -- every malformed file at once -----------------------------------------------------------------------


def test_tick_and_worker_carry_on_past_every_malformed_file_at_once(project):
    paths = {name: corrupt(project, name)[1] for name in NAMES}
    raws = {name: path.read_bytes() for name, path in paths.items()}
    listing = run_heph("list", "--json", cwd=project)
    assert_clean(listing)
    assert {i["id"] for i in listing.json()["instances"]} == {"mfh::keep", "mft::good"}, listing
    for name, path in paths.items():
        assert path.name in listing.err, (name, listing)
    names = list(paths)
    shown = run_all(project, [("show", "--id", f"mft::{paths[name].parent.name.split('~')[1]}") for name in names])
    for name, run in zip(names, shown):
        assert_refused_naming(run, paths[name], MALFORMED[name][1])

    wait_until_due(doc_of(project, "good"))
    worker = subprocess.Popen([sys.executable, "-m", "heph", "worker", "--interval", "0.1"], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        deadline = time.monotonic() + 30
        while doc_of(project, "good")["status"] != "completed":
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker never fired mft::good's timer"
            time.sleep(0.1)
        time.sleep(0.5)  # a few more ticks over the malformed files
        assert worker.poll() is None, worker.communicate()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=30)
    text = out.decode() + err.decode()
    assert worker.returncode == 0, text
    assert "Traceback" not in text and "internal error" not in text, text
    for name, path in paths.items():
        assert path.read_bytes() == raws[name], name

    doctor = run_heph("doctor", "--json", cwd=project)
    assert doctor.code == 1, doctor
    assert sorted(c["file"] for c in doctor.json()["corrupt"]) == sorted(str(p) for p in paths.values()), doctor
    repaired = run_heph("doctor", "--repair", "--json", cwd=project)
    assert_clean(repaired)
    assert len(repaired.json()["repaired"]["quarantined"]) == len(NAMES), repaired
    for name, path in paths.items():
        assert not path.exists(), name
        assert (store(project) / "quarantine" / path.parent.name / path.name).read_bytes() == raws[name], name


def test_cancel_of_a_wait_with_a_string_attempt_writes_nothing(project):
    """Defect 11: `cancel` of a run whose wait has "attempt": "x" used to write a history entry
    with that attempt, which the loader then rejected: the run became unreadable."""
    value, path = corrupt(project, "attempt-string")
    raw = path.read_bytes()
    assert_refused_naming(run_heph("cancel", "--id", f"mft::{value}", cwd=project), path, "waits.wait.attempt")
    assert path.read_bytes() == raw
    assert [p.name for p in path.parent.glob("*.json")] == [path.name]
