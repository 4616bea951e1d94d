"""What only the JSON-file store promises: the file format, permissions, corrupt files, the index."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heph
from heph import Done, Step, Unique, Wait, WaitForEvent, Workflow
from heph.errors import MaybeApplied
from heph.runtime.storage import jsonfile
from heph.runtime.storage.jsonfile import JsonFileStorage


class JsFirst(Step):
    events = ["ok"]
    key = "js_first"

    def execute(self, instance, config, context):
        return "ok", {"seen": context.initial.get("n", 0)}


class JsFlow(Workflow):
    """first -> wait for an event -> wait one hour -> done."""

    unique = Unique("jsk")
    name = "js_flow"
    start = JsFirst
    transitions = {
        JsFirst: {"ok": WaitForEvent},
        WaitForEvent: {"received": (Wait, {"duration": 1, "unit": "hour"})},
        Wait: {"timeout": Done},
    }


class JsQuick(Workflow):
    """first -> done: completes at once."""

    unique = Unique("jsq")
    name = "js_quick"
    start = JsFirst
    transitions = {JsFirst: {"ok": Done}}


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def clock():
    return heph.ManualClock()


@pytest.fixture
def app(root, clock):
    return heph.Hephaestus(storage=JsonFileStorage(root), clock=clock)


def run_file(root: Path, instance) -> Path:
    return root / "instances" / instance.id.replace("::", "~") / f"{instance.run}.json"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def by_status(app) -> dict[str, list[tuple[str, str]]]:
    return {s: sorted((i.id, i.run) for i in app.list(status=s)) for s in
            ("pending", "running", "waiting", "completed", "failed", "cancelled")}


def populate(app, clock):
    """q1 completed, a waiting for an event, b waiting on a timer, c cancelled."""
    app.start(JsQuick, "q1")
    app.start(JsFlow, "a")
    app.start(JsFlow, "b")
    app.resume("jsk::b", "received")
    app.start(JsFlow, "c")
    app.cancel("jsk::c")
    return {name: app.get(iid) for name, iid in
            (("q1", "jsq::q1"), ("a", "jsk::a"), ("b", "jsk::b"), ("c", "jsk::c"))}


# -- the file format -------------------------------------------------------------------


def test_file_is_indented_json_with_a_format_version(app, root, clock):
    app.start(JsFlow, "a", {"n": 7, "text": "grüße"})
    instance = app.get("jsk::a")
    path = run_file(root, instance)
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["format"] == 1
    assert data["id"] == "jsk::a" and data["run"] == instance.run and data["status"] == "waiting"
    assert data["context"]["initial"] == {"n": 7, "text": "grüße"}
    assert "grüße" in text  # human-readable: no \u escapes
    assert text.startswith("{\n ") and text.count("\n") > 10  # indented, one field per line
    assert (root / "FORMAT").read_text().startswith("heph-json-store 1")


def test_files_are_0600_and_directories_0700(app, root, clock):
    old = os.umask(0o022)
    try:
        populate(app, clock)
        check_modes(root)
        shutil.rmtree(root / "index")
        app.list()  # rebuilds the index
        app.start(JsQuick, "q2")
        check_modes(root)
    finally:
        os.umask(old)


def check_modes(root: Path) -> None:
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong.append(f"{path.relative_to(root.parent)}: {mode:o}")
    assert wrong == []


def test_leftover_temporary_files_are_ignored(app, root, clock):
    app.start(JsFlow, "a")
    instance = app.get("jsk::a")
    path = run_file(root, instance)
    (path.parent / f".{path.name}.99999.tmp").write_bytes(b"{half a wr")
    assert app.runs("jsk::a") == [instance]
    assert app.list() == [instance]


# -- corrupt files ----------------------------------------------------------------------------


def foreign(root: Path, instances: dict) -> bytes:
    """A valid file of another instance, copied to the wrong place."""
    return run_file(root, instances["q1"]).read_bytes()


CORRUPTIONS = {
    "empty": lambda root, made: b"",
    "truncated": lambda root, made: run_file(root, made["b"]).read_bytes()[:40],
    "not json": lambda root, made: b"{not json",
    "array": lambda root, made: b"[]",
    "future format": lambda root, made: json.dumps({**json.loads(run_file(root, made["b"]).read_bytes()),
                                                    "format": 99}).encode(),
    "missing field": lambda root, made: json.dumps({"format": 1, "id": "jsk::b"}).encode(),
    "bad status": lambda root, made: json.dumps({**json.loads(run_file(root, made["b"]).read_bytes()),
                                                 "status": "exploded"}).encode(),
    "someone else's": foreign,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_file_is_reported_by_name_and_never_touched(app, root, clock, caplog, corruption):
    made = populate(app, clock)
    bad = made["b"]  # waiting on a timer: tick will look at it
    path = run_file(root, bad)
    path.write_bytes(CORRUPTIONS[corruption](root, made))
    before = path.read_bytes()

    with pytest.raises(heph.StorageError, match=str(path)):
        app.storage.runs(bad.id)
    with pytest.raises(heph.StorageError, match=str(path)):
        app.get(bad.id)
    with pytest.raises(heph.StorageError, match=str(path)):
        app.runs(bad.id)

    with caplog.at_level(logging.WARNING, logger="heph"):
        listed = app.list()
    assert {i.id for i in listed} == {"jsq::q1", "jsk::a", "jsk::c"}
    warnings = [r for r in caplog.records if r.name == "heph" and r.levelno == logging.WARNING]
    assert any(str(path) in r.getMessage() for r in warnings)
    assert [i.id for i in app.list(status="waiting")] == ["jsk::a"]

    # commands on the corrupt instance are refused without writing
    for command in (lambda: app.resume(bad.id, "received"), lambda: app.cancel(bad.id),
                    lambda: app.retry(bad.id), lambda: app.start(JsFlow, "b")):
        with pytest.raises(heph.StorageError):
            command()
    clock.advance(hours=2)
    app.tick()
    stats = app.storage.rebuild_index()
    assert stats["corrupt"] == 1
    assert path.read_bytes() == before

    # the other instances stay usable
    app.resume("jsk::a", "received")
    clock.advance(hours=2)
    fired = app.tick()
    assert [(f["id"], f["kind"]) for f in fired] == [("jsk::a", "timer")]
    assert app.get("jsk::a").status == "completed"
    app.start(JsQuick, "q1")
    assert [r.status for r in app.runs("jsq::q1")] == ["completed", "completed"]
    assert path.read_bytes() == before


# -- the index ------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["list", "write", "new handle"])
def test_missing_index_is_rebuilt(app, root, clock, caplog, first):
    populate(app, clock)
    expected = by_status(app)
    shutil.rmtree(root / "index")
    if first == "new handle":  # as another process would see it
        app = heph.Hephaestus(storage=JsonFileStorage(root), clock=clock)
    with caplog.at_level(logging.WARNING, logger="heph"):
        if first == "write":
            app.start(JsQuick, "q2")
            expected["completed"] = sorted(expected["completed"] + [("jsq::q2", app.get("jsq::q2").run)])
        assert by_status(app) == expected
    assert any("rebuilding" in r.getMessage() for r in caplog.records if r.name == "heph")
    assert (root / "index" / "FORMAT").exists()
    clock.advance(hours=2)
    assert [(f["id"], f["kind"]) for f in app.tick()] == [("jsk::b", "timer")]
    assert app.get("jsk::b").status == "completed"


def test_missing_index_then_tick_fires_due_timers(app, root, clock, caplog):
    populate(app, clock)
    shutil.rmtree(root / "index")
    clock.advance(hours=2)
    fresh = heph.Hephaestus(storage=JsonFileStorage(root), clock=clock)
    with caplog.at_level(logging.WARNING, logger="heph"):
        assert [(f["id"], f["kind"]) for f in fresh.tick()] == [("jsk::b", "timer")]
    assert any("rebuilding" in r.getMessage() for r in caplog.records if r.name == "heph")
    assert sorted(i.id for i in fresh.list(status="completed")) == ["jsk::b", "jsq::q1"]
    assert [i.id for i in fresh.list(status="waiting")] == ["jsk::a"]
    assert fresh.tick() == []


def marker(instance) -> str:
    return f"{instance.run}~{instance.id.replace('::', '~')}~{instance.workflow}~{instance.version}"


def _reads(monkeypatch) -> list[Path]:
    """The instance files read from now on (``read_instance`` calls), in order."""
    reads: list[Path] = []
    real = jsonfile.read_instance

    def counting(path):
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(jsonfile, "read_instance", counting)
    return reads


def test_stale_markers_are_not_believed(app, root, clock):
    made = populate(app, clock)
    done = made["q1"]
    name = marker(done)
    stale = [root / "index" / "status" / "waiting" / name,
             root / "index" / "status" / "running" / name,
             root / "index" / "due" / f"20000101T000000000000~{done.id.replace('::', '~')}~{done.run}"]
    for path in stale:
        path.touch()
    before = snapshot(root / "instances")

    assert sorted(i.id for i in app.list(status="waiting")) == ["jsk::a", "jsk::b"]
    assert [i.id for i in app.list(status_in=["running", "pending"])] == []
    assert [i.id for i in app.list(id="jsq::q1")] == ["jsq::q1"]
    assert sorted(i.id for i in app.list()) == ["jsk::a", "jsk::b", "jsk::c", "jsq::q1"]  # once each
    assert app.tick() == []
    assert snapshot(root / "instances") == before

    stats = app.storage.rebuild_index()
    assert stats == {"instances": 4, "added": 0, "removed": 3, "corrupt": 0}
    assert not any(path.exists() for path in stale)


def test_markers_of_a_vanished_instance_are_skipped_quietly(app, root, clock, caplog):
    made = populate(app, clock)
    shutil.rmtree(root / "instances" / "jsk~a")
    with caplog.at_level(logging.WARNING, logger="heph"):
        assert [i.id for i in app.list(status="waiting")] == ["jsk::b"]
    assert not [r for r in caplog.records if r.name == "heph"]
    with pytest.raises(heph.InstanceNotFound):
        app.get(made["a"].id)
    assert app.storage.rebuild_index()["removed"] == 1


def test_rebuild_index_counts(app, root, clock):
    populate(app, clock)
    app.start(JsQuick, "q1")  # a second run of q1
    assert app.storage.rebuild_index() == {"instances": 5, "added": 0, "removed": 0, "corrupt": 0}
    shutil.rmtree(root / "index")
    # one status marker per run, plus the due marker of b's timer
    assert app.storage.rebuild_index() == {"instances": 5, "added": 6, "removed": 0, "corrupt": 0}
    (root / "index" / "status" / "failed" / "20000101T000000000000-000000~jsk~zzz~js_flow~1").touch()
    assert app.storage.rebuild_index() == {"instances": 5, "added": 0, "removed": 1, "corrupt": 0}
    assert app.storage.rebuild_index() == {"instances": 5, "added": 0, "removed": 0, "corrupt": 0}


def test_status_queries_read_only_matching_files(app, root, clock, monkeypatch):
    for n in range(20):
        app.start(JsQuick, f"q{n}")
    app.start(JsFlow, "a")
    reads = _reads(monkeypatch)
    assert [i.id for i in app.list(status="waiting")] == ["jsk::a"]
    assert len(reads) == 1
    reads.clear()
    assert [i.id for i in app.list(workflow=JsFlow)] == ["jsk::a"]
    assert len(reads) == 1
    reads.clear()
    assert len(app.list(status="completed", limit=3)) == 3
    assert len(reads) == 3


def test_a_limited_list_of_a_large_store_reads_only_the_newest(app, root, clock, monkeypatch):
    for n in range(100):
        app.start(JsQuick, f"big{n}")
        clock.advance(seconds=1)
    app.start(JsFlow, "old")  # the only waiting instance is the newest here...
    newest = [i.id for i in app.list(limit=5)]
    assert newest == ["jsk::old"] + [f"jsq::big{n}" for n in (99, 98, 97, 96)]
    read = _reads(monkeypatch)
    assert [i.id for i in app.list(limit=5)] == newest
    assert len(read) == 5  # the index names sort by run: no need to read the other 96 files


def test_stale_markers_hiding_the_newest_fall_back_to_the_whole_index(app, root, clock):
    app.start(JsFlow, "first")  # waiting, and the oldest run
    for n in range(100):
        clock.advance(seconds=1)
        done = app.get(app.start(JsQuick, f"s{n}"))
        (root / "index" / "status" / "waiting" / marker(done)).touch()  # a stale "waiting" marker
    assert [i.id for i in app.list(status="waiting", limit=5)] == ["jsk::first"]


def test_an_index_in_the_previous_format_is_rebuilt_by_the_first_query(app, root, clock):
    made = populate(app, clock)
    status_dir = root / "index" / "status"
    for path in list(status_dir.glob("*/*")):  # heph-index 1 named status markers <id dir>~<run>~<workflow>~<version>
        run, head, workflow, version = path.name.split("~", 1)[0], *path.name.split("~", 1)[1].rsplit("~", 2)
        path.rename(path.with_name(f"{head}~{run}~{workflow}~{version}"))
    (root / "index" / "FORMAT").write_text("heph-index 1\n")
    old_names = {p.name for p in status_dir.glob("*/*")}

    assert sorted(i.id for i in app.list(status="waiting")) == ["jsk::a", "jsk::b"]
    assert (root / "index" / "FORMAT").read_text() == "heph-index 2\n"
    now = {p.name for p in status_dir.glob("*/*")}
    assert now.isdisjoint(old_names)
    assert now == {marker(i) for i in made.values()}
    assert sorted(i.id for i in app.list()) == ["jsk::a", "jsk::b", "jsk::c", "jsq::q1"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_the_prebuilt_encoder_writes_what_json_dumps_writes(value):
    assert jsonfile._dumps(value) == json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def test_a_session_that_cannot_make_its_writes_durable_fails_and_releases_the_lock(app, root, monkeypatch):
    app.start(JsQuick, "warm")  # the store's layout exists
    real = jsonfile._fsync_dir

    def failing(path, fd=None):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(jsonfile, "_fsync_dir", failing)
    # the file was renamed into place: the write may be on the disk, so the store cannot say "refused"
    with pytest.raises(MaybeApplied, match=r"may have been applied .*\[Errno 5\] Input/output error"):
        app.start(JsQuick, "q1")
    monkeypatch.setattr(jsonfile, "_fsync_dir", real)
    # the lock was released: the next command on the id runs (and sees what was renamed in place)
    assert app.get("jsq::q1").status == "completed"
    with app.storage.session("jsq::q1", timeout=0) as session:
        assert [r.status for r in session.runs()] == ["completed"]


def _fsyncs(monkeypatch) -> list[str]:
    synced: list[str] = []
    real = jsonfile._fsync_dir

    def recording(path, fd=None):
        synced.append(os.path.basename(os.fspath(path)))
        real(path, fd)

    monkeypatch.setattr(jsonfile, "_fsync_dir", recording)
    return synced


@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=4),
       st.dictionaries(st.text(min_size=1, max_size=8), st.dictionaries(st.text(max_size=8), _json_values,
                                                                          max_size=3), max_size=4))
@settings(max_examples=200, deadline=None)
def test_the_session_cache_encodes_exactly_what_a_fresh_encode_does(initial, steps):
    from heph.core.instance import Context, Instance

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    inst = Instance(id="k::v", workflow="w", version=1, status="running", context=Context(initial, steps),
                    run="20260101T000000000000-abcdef", created_at=now, updated_at=now)
    cache: dict = {}
    assert jsonfile.encode(inst, cache) == jsonfile.encode(inst) == jsonfile.encode(inst, cache)
    json.loads(jsonfile.encode(inst, cache))


def test_a_large_start_context_is_encoded_once_per_session(app, monkeypatch):
    calls = []
    real = jsonfile._dumps
    monkeypatch.setattr(jsonfile, "_dumps", lambda value: calls.append(value) or real(value))
    order = {"items": [{"sku": f"s{i}", "qty": i} for i in range(100)]}
    app.start(JsQuick, "big", {"order": order})
    assert sum(1 for value in calls if value == {"order": order}) == 1  # not once per write
    assert app.get("jsq::big").context.initial == {"order": order}


def test_the_first_run_of_an_id_makes_its_directory_entry_durable(app, root, monkeypatch):
    app.start(JsQuick, "warm")
    synced = _fsyncs(monkeypatch)
    app.start(JsQuick, "fresh")
    assert synced == ["jsq~fresh", "instances"]  # the new directory, then its entry in instances/
    synced.clear()
    app.start(JsQuick, "fresh")  # a second run of the id (the first completed): the entry is durable already
    assert synced == ["jsq~fresh"]


def test_a_directory_left_by_a_dead_process_is_made_durable_by_the_first_run(app, root, monkeypatch):
    app.start(JsQuick, "warm")
    (root / "instances" / "jsq~orphan").mkdir(mode=0o700)  # made, then its process died before any fsync
    (root / "instances" / "jsq~orphan" / ".lock").touch()
    synced = _fsyncs(monkeypatch)
    app.start(JsQuick, "orphan")
    assert synced == ["jsq~orphan", "instances"]


# -- sessions: must_exist, uniqueness, busy ------------------------------------------------


def _listings(monkeypatch, directory: Path) -> list[str]:
    """Every listing of ``directory`` from now on (``os.listdir``/``os.scandir`` calls)."""
    seen: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def named(path) -> Path:  # a directory listed through its open descriptor, or by its path
        return Path(os.readlink(f"/proc/self/fd/{path}")) if isinstance(path, int) else Path(path)

    def listdir(path="."):
        if named(path) == directory:
            seen.append("listdir")
        return real_listdir(path)

    def scandir(path="."):
        if named(path) == directory:
            seen.append("scandir")
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    return seen


@pytest.mark.parametrize("store_made", [False, True])
def test_must_exist_on_an_unknown_id_creates_nothing(root, store_made):
    store = JsonFileStorage(root)
    if store_made:
        with store.session("jsq::warm") as session:
            session.runs()
    before = snapshot(root) if store_made else None
    with pytest.raises(heph.InstanceNotFound) as refused:
        with store.session("jsq::ghost", must_exist=True):
            pass
    assert refused.value.instance_id == "jsq::ghost"
    assert not (root / "instances" / "jsq~ghost").exists()
    if store_made:
        assert snapshot(root) == before
    else:
        assert not root.exists()  # not even the store's layout


def test_must_exist_on_a_directory_without_runs_leaves_no_lock_file(root):
    store = JsonFileStorage(root)
    with store.session("jsq::warm"):
        pass
    empty = root / "instances" / "jsq~empty"
    empty.mkdir(mode=0o700)  # made by hand, or left by a copy: no lock file in it
    with pytest.raises(heph.InstanceNotFound):
        with store.session("jsq::empty", must_exist=True):
            pass
    assert list(empty.iterdir()) == []
    (empty / ".lock").touch()  # left by a start that died before storing anything
    with pytest.raises(heph.InstanceNotFound):
        with store.session("jsq::empty", must_exist=True):
            pass
    assert [p.name for p in empty.iterdir()] == [".lock"]


def test_must_exist_while_a_first_start_holds_the_lock_is_not_found_at_once(root):
    store = JsonFileStorage(root, lock_timeout=30)
    with store.session("jsq::starting"):  # a start in its first step: nothing stored yet
        started = datetime.now()
        with pytest.raises(heph.InstanceNotFound):
            with store.session("jsq::starting", must_exist=True):
                pass
        assert (datetime.now() - started).total_seconds() < 5  # not "busy" after the lock timeout


def test_must_exist_lists_the_directory_once(app, root, monkeypatch):
    app.start(JsFlow, "a")
    directory = root / "instances" / "jsk~a"
    seen = _listings(monkeypatch, directory)
    store = app.storage
    with store.session("jsk::a", must_exist=True) as session:
        (run,) = session.runs()
        session.update(dataclasses.replace(run, status="cancelled"))
    assert seen == ["listdir"]
    app.start(JsFlow, "a")  # a second run (the first was cancelled)
    seen.clear()
    app.resume("jsk::a", "received")  # the runtime's resume goes through must_exist too
    assert len(seen) == 1, seen


def test_a_held_lock_raises_instance_busy(root):
    from heph.testing.conformance import make_instance

    store = JsonFileStorage(root, lock_timeout=0)
    with store.session("jsq::held") as session:
        session.insert(make_instance("jsq::held"))
    with store.session("jsq::held"):
        for must_exist in (False, True):
            with pytest.raises(heph.errors.InstanceBusy) as busy:
                with store.session("jsq::held", must_exist=must_exist):
                    pass
            assert busy.value.instance_id == "jsq::held"
            assert str(busy.value) == ("instance jsq::held is busy (another heph process holds its lock); "
                                       "try again later")


def _active_pair():
    from heph.testing.conformance import make_instance

    first = make_instance("jsk::u", seq=1, status="waiting", wait_kind="event", workflow="js_flow")
    second = make_instance("jsk::u", seq=2, status="running", workflow="js_flow")
    return first, second


def test_a_conflicting_insert_is_refused_and_writes_nothing(root):
    store = JsonFileStorage(root)
    first, second = _active_pair()
    with store.session(first.id) as session:
        session.insert(first)
    before = snapshot(root)
    for listed in (False, True):  # whether or not the session read the runs first
        with store.session(first.id) as session:
            if listed:
                session.runs()
            with pytest.raises(heph.AlreadyRunning) as refused:
                session.insert(second)
        assert refused.value.instance_id == first.id and refused.value.status == "waiting"
        assert snapshot(root) == before


def test_a_conflicting_update_is_refused_and_writes_nothing(root):
    from heph.testing.conformance import finish

    store = JsonFileStorage(root)
    first, second = _active_pair()
    with store.session(first.id) as session:
        session.insert(finish(second))
        session.insert(first)
    before = snapshot(root)
    with store.session(first.id, must_exist=True) as session:
        with pytest.raises(heph.AlreadyRunning):
            session.update(second)  # the finished run made active again, beside the waiting one
    assert snapshot(root) == before
    assert [r.status for r in store.runs(first.id)] == ["completed", "waiting"]


def test_exists_reads_no_run_file(app, root, monkeypatch):
    app.start(JsFlow, "a")
    reads = _reads(monkeypatch)
    assert app.storage.exists("jsk::a") and not app.storage.exists("jsk::nobody")
    assert reads == []


# -- the maintenance API heph doctor uses ---------------------------------------------------


def test_the_doctor_api(app, root, clock):
    made = populate(app, clock)
    store = app.storage
    assert store.index_complete()
    dirs = store.instance_dirs()
    assert [d.name for d in dirs] == ["jsk~a", "jsk~b", "jsk~c", "jsq~q1"]
    b = root / "instances" / "jsk~b"
    tmp = b / f".{made['b'].run}.json.4242.tmp"
    tmp.write_bytes(b"{half")
    assert store.instance_files(b) == ([run_file(root, made["b"])], [tmp])
    wanted = set().union(*(store.markers(i) for i in made.values()))
    assert f"status/waiting/{marker(made['b'])}" in store.markers(made["b"])
    assert any(m.startswith("due/") for m in store.markers(made["b"]))  # b waits on a timer
    assert store.present_markers() == wanted
    assert not store.is_busy(b)
    with store.session("jsk::b"):
        assert store.is_busy(b)
    assert not store.is_busy(root / "instances" / "jsk~nobody")  # creates nothing
    assert not (root / "instances" / "jsk~nobody").exists()
    moved = store.quarantine(tmp)
    assert moved == str(root / "quarantine" / "jsk~b" / tmp.name) and not tmp.exists()
    tmp.write_bytes(b"{again")
    assert store.quarantine(tmp) == f"{moved}.1"  # overwrites nothing
    assert store.quarantine(tmp) is None  # gone already
    (root / "index" / "FORMAT").unlink()
    assert not store.index_complete()


def test_doctor_imports_no_private_name():
    import ast

    import heph.runtime.doctor as doctor

    tree = ast.parse(Path(doctor.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names]
    used = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    assert not [name for name in imported + used if name.startswith("_")]


def test_the_encoder_is_the_standard_librarys_public_one():
    source = Path(jsonfile.__file__).read_text()
    assert "c_make_encoder" not in source and "encode_basestring" not in source
    big = {"n": 2**200, "neg": -(2**70), "f": 1e16, "nan": float("nan"), "text": "grüße ✓\u2028"}
    assert jsonfile._dumps(big) == json.dumps(big, ensure_ascii=False, separators=(", ", ": "))


# -- the in-memory store's index -------------------------------------------------------------


def test_memory_queries_decode_only_the_runs_they_return(monkeypatch):
    from heph.runtime.storage import memory

    app = heph.Hephaestus(storage=memory.MemoryStorage(), clock=heph.ManualClock())
    for n in range(20):
        app.start(JsQuick, f"q{n}")
    app.start(JsFlow, "a")
    app.start(JsFlow, "b")
    app.resume("jsk::b", "received")  # waits one hour
    decoded: list[str] = []
    real = memory._thaw
    monkeypatch.setattr(memory, "_thaw", lambda doc: decoded.append(doc) or real(doc))
    store = app.storage
    assert sorted(i.id for i in store.query(statuses=["waiting"])) == ["jsk::a", "jsk::b"]
    assert len(decoded) == 2
    decoded.clear()
    assert [i.id for i in store.query(workflow="js_flow", limit=1)] == ["jsk::b"]
    assert len(store.query(statuses=["completed"], limit=3)) == 3
    assert len(decoded) == 4
    decoded.clear()
    assert store.interrupted() == [] and store.due(datetime(2000, 1, 1, tzinfo=timezone.utc)) == []
    assert [r.id for r in store.due(datetime(3000, 1, 1, tzinfo=timezone.utc))] == ["jsk::b"]
    assert store.exists("jsk::a") and not store.exists("jsk::zzz")
    assert decoded == []
    with pytest.raises(heph.InstanceNotFound):
        with store.session("jsk::zzz", must_exist=True):
            pass
    assert "jsk::zzz" not in store._locks  # nothing left behind
