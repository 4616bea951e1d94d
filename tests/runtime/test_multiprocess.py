"""Real processes sharing one JSON-file store: start races, resume races, churn, and kill -9 mid-step.

Each child is ``sys.executable worker.py MODE ...`` (the script and a workflow
module are written to a temporary directory). Children that must race wait
for a barrier file that the test creates once every child is ready.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import heph
from heph.core.instance import STATUSES
from heph.runtime.storage.jsonfile import JsonFileStorage, read_instance

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL and POSIX file locks")

REPO = Path(__file__).resolve().parents[2]

FLOWS = '''
"""Workflows for tests/test_multiprocess.py (imported by the children and by the test process)."""
import os
import time
from pathlib import Path

from heph import Done, Step, Unique, Wait, WaitForEvent, Workflow


class MpFirst(Step):
    events = ["ok"]
    key = "mp_first"

    def execute(self, instance, config, context):
        return "ok", {"pid": os.getpid()}


class MpRace(Workflow):
    unique = Unique("race")
    name = "mp_race"
    start = WaitForEvent
    transitions = {WaitForEvent: {"received": Done}}


class MpChain(Workflow):
    unique = Unique("chain")
    name = "mp_chain"
    start = MpFirst
    transitions = {
        MpFirst: {"ok": WaitForEvent},
        WaitForEvent: {"received": (Wait, {"duration": 1, "unit": "second"})},
        Wait: {"timeout": Done},
    }


class MpSlow(Step):
    """Logs each run, says it started, then hangs while the block file exists."""

    events = ["ok"]
    key = "mp_slow"

    def execute(self, instance, config, context):
        scratch = Path(context.initial["dir"])
        with open(scratch / "runs.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        (scratch / "started").touch()
        while (scratch / "block").exists():
            time.sleep(0.05)
        return "ok"


class MpKill(Workflow):
    unique = Unique("kill")
    name = "mp_kill"
    start = MpFirst
    transitions = {MpFirst: {"ok": MpSlow}, MpSlow: {"ok": Done}}
'''

WORKER = '''
import json, os, random, sys, time
import heph
import hephmp_flows as flows
from heph import JsonFileStorage

mode, store, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
app = heph.Hephaestus(storage=JsonFileStorage(store, lock_timeout=60))


def wait_for_barrier(name):
    open(os.path.join(scratch, f"ready-{name}"), "w").close()
    barrier = os.path.join(scratch, "go")
    while not os.path.exists(barrier):
        time.sleep(0.002)


if mode == "start":
    wait_for_barrier(sys.argv[4])
    try:
        app.start(flows.MpRace, "r1")
        print("ok")
    except heph.AlreadyRunning:
        print("already")
elif mode == "resume":
    wait_for_barrier(sys.argv[4])
    try:
        print("ok", app.resume("race::r1", "received").status)
    except heph.InvalidEvent:
        print("invalid")
elif mode == "churn":
    n, count, workers = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    wait_for_barrier(str(n))
    mine = [f"p{n}i{i}" for i in range(count)]
    everyone = [f"chain::p{w}i{i}" for w in range(workers) for i in range(count)]
    random.Random(n).shuffle(everyone)
    for value in mine:
        app.start(flows.MpChain, value)
    accepted = refused = 0
    for number, instance_id in enumerate(everyone):
        try:
            app.resume(instance_id, "received")
            accepted += 1
        except (heph.InvalidEvent, heph.InstanceNotFound):
            refused += 1
        if number % 10 == 0:
            app.tick()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        app.tick()
        if len(app.list(workflow="mp_chain", status="completed")) == len(everyone):
            break
        time.sleep(0.05)
    print(json.dumps({"accepted": accepted, "refused": refused}))
elif mode == "kill":
    app.start(flows.MpKill, "k1", {"dir": scratch})
    print("finished")
'''


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """The workflow module, importable here and in the children; the worker script beside it."""
    where = tmp_path_factory.mktemp("mpmodule")
    (where / "hephmp_flows.py").write_text(FLOWS)
    (where / "worker.py").write_text(textwrap.dedent(WORKER))
    sys.path.insert(0, str(where))
    try:
        yield where, importlib.import_module("hephmp_flows")
    finally:
        sys.path.remove(str(where))


@pytest.fixture
def env(flows):
    where, _ = flows
    paths = [str(where), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def scratch(tmp_path):
    path = tmp_path / "scratch"
    path.mkdir()
    return path


class Children:
    """Spawned workers; every one still alive at the end is killed."""

    def __init__(self, flows, env, store, scratch):
        self.script = flows[0] / "worker.py"
        self.env, self.store, self.scratch = env, store, scratch
        self.procs: list[subprocess.Popen] = []

    def spawn(self, mode: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(self.script), mode, str(self.store), str(self.scratch), *map(str, args)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.procs.append(proc)
        return proc

    def release_when_ready(self, names: list[str], timeout: float = 30) -> None:
        """Wait until every child has reached the barrier, then let them all go at once."""
        deadline = time.monotonic() + timeout
        while not all((self.scratch / f"ready-{n}").exists() for n in names):
            crashed = [p for p in self.procs if p.poll() is not None]
            assert not crashed, crashed[0].communicate()[1]
            assert time.monotonic() < deadline, "the children did not reach the barrier"
            time.sleep(0.01)
        (self.scratch / "go").touch()

    def outputs(self, procs=None, timeout: float = 60) -> list[str]:
        found = []
        for proc in procs or self.procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
            found.append(out.strip())
        return found

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def children(flows, env, store, scratch):
    spawned = Children(flows, env, store, scratch)
    try:
        yield spawned
    finally:
        spawned.kill_all()


def read_all_files(store: Path) -> dict[tuple[str, str], heph.Instance]:
    found = {}
    for path in (store / "instances").glob("*/*.json"):
        instance = read_instance(path)
        found[instance.id, instance.run] = instance
    return found


# -- races ----------------------------------------------------------------------------------------


def test_simultaneous_starts_of_one_key_let_exactly_one_win(children, store):
    workers = [children.spawn("start", n) for n in range(8)]
    children.release_when_ready([str(n) for n in range(8)])
    results = children.outputs(workers)
    assert sorted(results) == ["already"] * 7 + ["ok"]
    runs = JsonFileStorage(store).runs("race::r1")
    assert [r.status for r in runs] == ["waiting"]


def test_simultaneous_resumes_of_one_instance_accept_exactly_one(children, store, flows):
    _, module = flows
    app = heph.Hephaestus(storage=JsonFileStorage(store))
    app.start(module.MpRace, "r1")
    workers = [children.spawn("resume", n) for n in range(8)]
    children.release_when_ready([str(n) for n in range(8)])
    results = children.outputs(workers)
    assert sorted(results) == ["invalid"] * 7 + ["ok completed"]
    (instance,) = app.runs("race::r1")
    assert instance.status == "completed"
    assert [(h.step, h.outcome) for h in instance.history] == [
        ("wait_for_event", "async"), ("wait_for_event", "resumed"), ("done", "completed")]


def test_concurrent_churn_loses_nothing_and_the_index_agrees(children, store, flows):
    workers, count = 4, 50
    procs = [children.spawn("churn", n, count, workers) for n in range(workers)]
    children.release_when_ready([str(n) for n in range(workers)])
    reports = [json.loads(line) for line in children.outputs(procs)]
    assert sum(r["accepted"] for r in reports) == workers * count  # each instance resumed exactly once

    files = read_all_files(store)
    assert len(files) == workers * count
    expected = [("mp_first", "completed"), ("wait_for_event", "async"), ("wait_for_event", "resumed"),
                ("wait", "async"), ("wait", "resumed"), ("done", "completed")]
    for instance in files.values():
        assert instance.status == "completed", instance.id
        assert [(h.step, h.outcome) for h in instance.history] == expected, instance.id
        assert instance.waits == {} and instance.active == [] and instance.lease is None

    app = heph.Hephaestus(storage=JsonFileStorage(store))
    for status in STATUSES:
        listed = {(i.id, i.run) for i in app.list(status=status)}
        assert listed == {key for key, i in files.items() if i.status == status}, status
    # the index holds exactly the markers of the files (nothing stale once every writer is done)
    for status in STATUSES:
        markers = set(os.listdir(store / "index" / "status" / status))
        want = {f"{i.run}~{i.id.replace('::', '~')}~{i.workflow}~{i.version}"
                for i in files.values() if i.status == status}
        assert markers == want, status
    assert os.listdir(store / "index" / "due") == []
    assert app.tick() == []


# -- crashes ---------------------------------------------------------------------------------------


def test_a_step_killed_midway_runs_again_on_tick(children, store, scratch, flows):
    (scratch / "block").touch()
    child = children.spawn("kill")
    deadline = time.monotonic() + 30
    while not (scratch / "started").exists():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.01)

    app = heph.Hephaestus(storage=JsonFileStorage(store))
    assert app.tick() == []  # the owner is alive and holds the lock: busy, not interrupted
    assert app.get("kill::k1").status == "running"

    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL

    (path,) = (store / "instances" / "kill~k1").glob("*.json")
    stuck = read_instance(path)  # readable: the last durable write before the kill
    assert stuck.status == "running"
    assert [a["step"] for a in stuck.active] == ["mp_slow"]
    assert stuck.lease["pid"] == child.pid
    assert [(h.step, h.outcome) for h in stuck.history] == [("mp_first", "completed")]

    (scratch / "block").unlink()
    actions = app.tick()
    assert [(a["id"], a["kind"], a["step"]) for a in actions] == [("kill::k1", "recovered", "mp_slow")]
    done = app.get("kill::k1")
    assert done.status == "completed" and done.lease is None
    assert [(h.step, h.outcome) for h in done.history] == [
        ("mp_first", "completed"), ("mp_slow", "completed"), ("done", "completed")]
    runs = (scratch / "runs.log").read_text().split()
    assert runs == [str(child.pid), str(os.getpid())]  # at-least-once: the step ran twice
    assert app.tick() == []
    assert [i.id for i in app.list(status_in=["pending", "running"])] == []
