"""Security: file modes, no way out of the storage directory, safe YAML, data that is only data."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_refused, assert_same_snapshot, cli_env, snapshot
from cli_helpers import heph as run_heph

import heph

REPO = Path(__file__).resolve().parent.parent
FLOWS = '''\
from heph import ASYNC, Done, Error, Step, Unique, Workflow


class Hold(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Boom(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return Error("boom")


class Secure(Workflow):
    unique = Unique("sid")
    name = "secure"
    start = Hold
    transitions = {Hold: {"go": Done}}


class Failing(Workflow):
    unique = Unique("fid")
    name = "failing"
    start = Boom
    transitions = {Boom: {"ok": Done}}
'''


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "heph.yaml").write_text("workflows:\n  - secure_flows\nstorage:\n  path: .heph\n")
    (root / "secure_flows.py").write_text(FLOWS)
    return root


def cli(project: Path, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heph", *args], cwd=project, capture_output=True, env=cli_env(),
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None, timeout=60)


def bad_modes(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            found.append(f"{path.relative_to(root.parent)}: {oct(mode)}")
    return found


def outside_snapshot(tmp_path: Path) -> dict:
    """Everything under tmp_path except the store itself."""
    return {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("project/.heph")}


# -- file modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o002])
def test_every_file_is_0600_and_every_directory_0700(project, umask):
    for args in (("start", "secure", "a1"), ("start", "secure", "a2"), ("resume", "secure", "a2", "go"),
                 ("start", "failing", "f1"), ("cancel", "secure", "a1"), ("tick",), ("start", "secure", "a1")):
        proc = cli(project, *args, umask=umask)
        assert proc.returncode == 0, proc
    store = project / ".heph"
    # a corrupt file and a leftover temporary file, as a crash would leave them; then repair
    (victim,) = (store / "instances" / "sid~a2").glob("*.json")
    with open(victim, "r+b") as fh:
        fh.truncate(10)
    fd = os.open(store / "instances" / "sid~a2" / f".{victim.name}.999.tmp", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    shutil.rmtree(store / "index")
    proc = cli(project, "doctor", "--repair", umask=umask)
    assert proc.returncode == 0, proc
    assert (store / "quarantine").is_dir()
    assert cli(project, "list", umask=umask).returncode == 0
    assert bad_modes(store) == []


def test_the_python_api_creates_private_files_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        app = heph.Hephaestus(storage=heph.JsonFileStorage(tmp_path / "deep" / "store"))
        app.start(SecureApi, "m1")
        app.resume("sapi::m1", "go")
        app.start(SecureApi, "m1")
        app.storage.rebuild_index()
    finally:
        os.umask(old)
    assert bad_modes(tmp_path / "deep" / "store") == []


# -- nothing outside the storage directory ----------------------------------------------------------


class HoldApi(heph.Step):
    events = ["go"]
    key = "hold"

    def execute(self, instance, config, context):
        return heph.ASYNC


class SecureApi(heph.Workflow):
    unique = heph.Unique("sapi")
    name = "secureapi"
    start = HoldApi
    transitions = {HoldApi: {"go": heph.Done}}


ESCAPES = [
    "../../outside", "..", "/etc/passwd", "/tmp", "~", "~/outside", "~root", "$HOME", "outside/../..",
    "a::b::c::d", "::", "m1::..", "m1::../..", "m1::/etc", "m1::deadbeef/..", "m1~..", "%2e%2e", "..\\..",
    "m1\x00../../x", "ｍ１",
]


def _plant_decoy(tmp_path: Path) -> None:
    """A look-alike store outside the project, where a traversal would land."""
    decoy = tmp_path / "outside" / "instances"
    decoy.mkdir(parents=True)
    (decoy / "secret.json").write_text('{"format": 1, "secret": true}')
    (tmp_path / "project" / "outside~1").write_text("not an index marker")


@pytest.mark.parametrize("value", [e for e in ESCAPES if "\x00" not in e])
def test_cli_ids_cannot_point_outside_the_store(project, tmp_path, value):
    assert cli(project, "start", "secure", "m1").returncode == 0
    _plant_decoy(tmp_path)
    before = outside_snapshot(tmp_path)
    store_before = snapshot(project / ".heph")
    full = value if "::" in value else f"sid::{value}"
    runs = [run_heph(*args, cwd=project) for args in (
        ("start", "secure", value), ("show", "secure", value), ("resume", "--id", full, "go"),
        ("cancel", "--id", full), ("list", "--id", full, "--json"),
    )]
    for run in runs:
        assert_refused(run)
    assert json.loads(runs[-1].out)["error"]["code"] in ("invalid_id", "not_found"), runs[-1]
    assert_same_snapshot(before, outside_snapshot(tmp_path), value)
    assert_same_snapshot(store_before, snapshot(project / ".heph"), value)


@pytest.mark.parametrize("value", ESCAPES)
def test_api_ids_cannot_point_outside_the_store(tmp_path, value):
    app = heph.Hephaestus(storage=heph.JsonFileStorage(tmp_path / "project" / ".heph"))
    app.start(SecureApi, "m1")
    _plant_decoy(tmp_path)
    before = snapshot(tmp_path)
    full = value if "::" in value else f"sapi::{value}"
    with pytest.raises(heph.InvalidId):
        app.start(SecureApi, value)
    for call in (app.get, app.runs, app.cancel, app.retry, lambda i: app.resume(i, "go"),
                 lambda i: app.list(id=i), lambda i: app.start_instance(SecureApi, {}, id=i)):
        with pytest.raises(heph.InvalidId):
            call(full)
    assert_same_snapshot(before, snapshot(tmp_path), repr(value))


def test_events_steps_and_runs_are_never_paths(project, tmp_path):
    assert cli(project, "start", "secure", "m1").returncode == 0
    _plant_decoy(tmp_path)
    before = snapshot(tmp_path)
    for args in (("resume", "secure", "m1", "../../outside"), ("resume", "secure", "m1", "/etc/passwd"),
                 ("resume", "secure", "m1", "go", "--step", "../../outside"),
                 ("show", "secure", "m1", "--run", "../../../outside/instances/secret"),
                 ("show", "secure", "m1", "--run", "/etc/passwd"),
                 ("graph", "secure", "--instance", "../../outside")):
        assert_refused(run_heph(*args, cwd=project))
    assert_same_snapshot(before, snapshot(tmp_path), "events, steps, runs")


def test_a_crafted_workflow_name_in_an_instance_file_cannot_write_outside(project, tmp_path):
    """The workflow name ends up in index file names: a crafted one used to create files (and
    directories) outside the store when the index was rebuilt, and could unlink `*~1` files."""
    assert cli(project, "start", "secure", "m1").returncode == 0
    assert cli(project, "start", "secure", "m2").returncode == 0
    (path,) = (project / ".heph" / "instances" / "sid~m1").glob("*.json")
    doc = json.loads(path.read_bytes())
    doc["workflow"] = "../" * 12 + str(tmp_path / "escaped" / "owned").lstrip("/")
    path.write_text(json.dumps(doc))
    (tmp_path / "escaped").mkdir()
    (tmp_path / "escaped" / "owned~1").write_text("keep me")
    shutil.rmtree(project / ".heph" / "index")  # force a rebuild from the files
    before = outside_snapshot(tmp_path)
    assert cli(project, "list").returncode == 0  # rebuilds the index (leaving the bad file out)
    for args in (("show", "secure", "m1"), ("resume", "--id", "sid::m1", "go"), ("cancel", "--id", "sid::m1")):
        assert_refused(run_heph(*args, cwd=project), path.name)
    assert cli(project, "tick").returncode == 0
    report = json.loads(cli(project, "doctor", "--json").stdout)
    assert [c["file"] for c in report["corrupt"]] == [str(path)]
    assert cli(project, "doctor", "--repair").returncode == 0
    assert cli(project, "resume", "secure", "m2", "go").returncode == 0
    assert_same_snapshot(before, outside_snapshot(tmp_path), "crafted workflow name")
    assert (tmp_path / "escaped" / "owned~1").read_text() == "keep me"
    assert not [p for p in (project / ".heph" / "index").rglob("*") if ".." in p.name]


def test_junk_files_in_the_index_are_ignored(project):
    assert cli(project, "start", "secure", "m1").returncode == 0
    index = project / ".heph" / "index"
    for junk in ("status/waiting/..~x~y~z", "status/running/junk~a~b~c", "due/20000101T000000000000~..~x",
                 "due/20000101T000000000000~sid~m9~nope", "status/waiting/notamarker"):
        (index / junk).write_text("")
    listing = run_heph("list", "--json", cwd=project)
    assert listing.code == 0 and [i["id"] for i in listing.json()["instances"]] == ["sid::m1"], listing
    assert run_heph("tick", "--json", cwd=project).code == 0
    assert cli(project, "doctor", "--repair").returncode == 0
    assert json.loads(cli(project, "doctor", "--json").stdout)["index"]["stale_markers"] == 0


# -- YAML ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.system ['touch {pwned}']",
    "!!python/object/apply:subprocess.call [['touch', '{pwned}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{pwned}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "[!!python/object/apply:os.system ['touch {pwned}']]",
])
def test_heph_yaml_python_tags_are_refused_and_never_run(project, tmp_path, payload):
    pwned = tmp_path / "pwned"
    (project / "heph.yaml").write_text(f"workflows: {payload.format(pwned=pwned)}\nstorage: {{path: .heph}}\n")
    for args in (("list",), ("check",), ("start", "secure", "m1")):
        assert_refused(run_heph(*args, cwd=project))
    assert not pwned.exists()
    assert not (project / ".heph").exists()


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "jsonpickle", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all",
                  "Loader", "UnsafeLoader", "FullLoader"}


def test_heph_source_never_unpickles_evaluates_or_loads_yaml_unsafely():
    problems = []
    sources = sorted((REPO / "heph").rglob("*.py"))
    assert len(sources) > 10
    yaml_loaders = 0
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        where = lambda node, path=path: f"{path.relative_to(REPO)}:{node.lineno}"  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{where(node)} imports {a.name}" for a in node.names
                             if a.name.split(".")[0] in FORBIDDEN_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{where(node)} imports from {node.module}")
            elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
                problems += [f"{where(node)} imports yaml.{a.name}" for a in node.names if a.name in FORBIDDEN_YAML]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                problems.append(f"{where(node)} calls {node.func.id}()")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "yaml" and node.attr in FORBIDDEN_YAML:
                    problems.append(f"{where(node)} uses yaml.{node.attr}")
                if node.value.id == "yaml" and node.attr == "safe_load":
                    yaml_loaders += 1
                if node.value.id in FORBIDDEN_MODULES or node.value.id == "builtins" and node.attr in FORBIDDEN_CALLS:
                    problems.append(f"{where(node)} uses {node.value.id}.{node.attr}")
            elif isinstance(node, ast.keyword) and node.arg == "shell" and \
                    isinstance(node.value, ast.Constant) and node.value.value is True:
                problems.append(f"{where(node)} runs a shell")
    assert problems == []
    assert yaml_loaders >= 1  # heph.yaml is read, and only ever with a safe loader (CSafeLoader or SafeLoader)


# -- stored data is only data -----------------------------------------------------------------------


PAYLOADS = {
    "yaml_tag": "!!python/object/apply:os.system ['touch {pwned}']",
    "reduce": {"__reduce__": ["os.system", ["touch {pwned}"]], "__class__": "os._wrap_close"},
    "jsonpickle": {"py/object": "subprocess.Popen", "py/reduce": [{"py/function": "os.system"}, ["touch {pwned}"]]},
    "pickle_bytes": "cos\nsystem\n(S'touch {pwned}'\ntR.",
    "template": "{{{{ __import__('os').system('touch {pwned}') }}}} ${{touch {pwned}}} $(touch {pwned}) `touch {pwned}`",
    "markup": "[bold red]not markup[/] [link=file:///etc/passwd]x[/link] \x1b[31mnot a colour\x1b[0m",
}


def test_crafted_payloads_in_an_instance_file_are_just_data(project, tmp_path):
    pwned = tmp_path / "pwned"
    payloads = json.loads(json.dumps(PAYLOADS).replace("{pwned}", str(pwned)).replace("{{", "{").replace("}}", "}"))
    assert cli(project, "start", "secure", "m1").returncode == 0
    (path,) = (project / ".heph" / "instances" / "sid~m1").glob("*.json")
    doc = json.loads(path.read_bytes())
    doc["context"]["initial"] = payloads
    doc["runtime_metadata"] = {"__reduce__": payloads["reduce"], "!!python/object": "os.system"}
    path.write_text(json.dumps(doc))
    shown = run_heph("show", "secure", "m1", "--json", cwd=project)
    assert shown.code == 0, shown
    assert shown.json()["context"]["initial"] == payloads
    text = run_heph("show", "secure", "m1", cwd=project)
    assert text.code == 0 and "\x1b" not in text.out and "[bold red]not markup[/]" in text.out, text
    assert run_heph("list", cwd=project).code == 0
    resumed = run_heph("resume", "secure", "m1", "go", "--json", cwd=project)
    assert resumed.code == 0 and resumed.json()["status"] == "completed", resumed
    after = json.loads(path.read_bytes())
    assert after["context"]["initial"] == payloads and after["runtime_metadata"] == doc["runtime_metadata"]
    assert not pwned.exists()


def test_crafted_payloads_in_a_context_are_stored_as_plain_json(project, tmp_path):
    pwned = tmp_path / "pwned"
    payloads = json.loads(json.dumps(PAYLOADS).replace("{pwned}", str(pwned)))
    run = run_heph("start", "secure", "m1", "--context", "-", "--json", cwd=project, stdin=json.dumps(payloads))
    assert run.code == 0, run
    (path,) = (project / ".heph" / "instances" / "sid~m1").glob("*.json")
    assert json.loads(path.read_bytes())["context"]["initial"] == payloads
    assert b"!!python" in path.read_bytes()  # kept verbatim, as a string
    assert not pwned.exists()
