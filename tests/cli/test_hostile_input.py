"""Hostile input: ids, events, contexts, heph.yaml files and hand-edited instance files.

Every refused case must exit 1 with exactly one line on stderr and no traceback,
and leave the storage directory byte-for-byte as it was. Big inputs (a 50 MB
context, a YAML alias bomb, a 70 MB instance file) run in a child process whose
peak memory is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import assert_refused, assert_same_snapshot, assert_usage_error, cli_env, snapshot, wait_until_due
from cli_helpers import heph as run_heph
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import heph
from heph.core.ids import _PLAIN_VALUE_RE, _UUID_RE, parse_id

FLOWS = '''\
from heph import ASYNC, Done, Step, Unique, Wait, Workflow


class Hold(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Hostile(Workflow):
    unique = Unique("hid")
    name = "hostile"
    start = Hold
    transitions = {Hold: {"go": Done}}


class Pause(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok"


class HostileTimed(Workflow):
    unique = Unique("htid")
    name = "hostiletimed"
    start = Pause
    transitions = {Pause: {"ok": (Wait, {"duration": 1, "unit": "second"})}, Wait: {"timeout": Done}}
'''

CONFIG = "workflows:\n  - hostile_flows\nstorage:\n  path: .heph\n"
MEMORY_LIMIT_KB = 500 * 1024

# Values that must never become an instance: path tricks, separators, case, unicode look-alikes,
# whitespace, shell syntax, and one of 10,000 characters.
HOSTILE_VALUES = [
    "..", ".", "../w1", "../../../etc/passwd", "/etc/passwd", "a/b", "~", "~root", "w1~x", "w1::x",
    "W1", "ünïcödé", "ｗ１", "w1 ", "w1\n", "", "\t", "$(id)", "%2e%2e%2f", "w1\\..\\x", "x" * 10_000,
]
HOSTILE_IDS = [
    "../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", "hid::../../x", "hid::..", "hid::w1/../w1",
    "hid::w1::../../x", "hid::w1::", "::", "hid::", "::w1", "hid:::w1", "hid::w1::deadbeef::x",
    "HID::w1", "hid~w1", "hid::w1\x7f", "hid::" + "a" * 10_000,
]
HOSTILE_EVENTS = ["../x", "go/../go", "GO", "gö", "x" * 10_000, "", "go\n", "timeout", "go go", "{}"]


# -- project set-up ---------------------------------------------------------------------------


class HoldCli(heph.Step):
    events = ["go"]
    key = "hold"

    def execute(self, instance, config, context):
        return heph.ASYNC


class HostileCli(heph.Workflow):
    """The same workflow as the project's hostile_flows.Hostile, to fill the template store quickly."""

    unique = heph.Unique("hid")
    name = "hostile"
    start = HoldCli
    transitions = {HoldCli: {"go": heph.Done}}


class PauseCli(heph.Step):
    events = ["ok"]
    key = "pause"

    def execute(self, instance, config, context):
        return "ok"


class HostileTimedCli(heph.Workflow):
    unique = heph.Unique("htid")
    name = "hostiletimed"
    start = PauseCli
    transitions = {PauseCli: {"ok": (heph.Wait, {"duration": 1, "unit": "second"})}, heph.Wait: {"timeout": heph.Done}}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project with waiting instances hid::w1, hid::w2 and hid::c00.. (copied for each test)."""
    root = tmp_path_factory.mktemp("hostile-template")
    (root / "heph.yaml").write_text(CONFIG)
    (root / "hostile_flows.py").write_text(FLOWS)
    app = heph.Hephaestus(storage=heph.JsonFileStorage(root / ".heph"))
    for value in ["w1", "w2"] + [f"c{n:02d}" for n in range(len(CORRUPTIONS))]:
        app.start(HostileCli, value)
    for value in ("t1", "t2"):
        app.start(HostileTimedCli, value)
    run = run_heph("show", "hostile", "w1", "--json", cwd=root)
    assert run.code == 0 and run.json()["status"] == "waiting", run
    return root


@pytest.fixture
def project(template, tmp_path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(template, dest, symlinks=True)
    return dest


def store(project: Path) -> Path:
    return project / ".heph"


def run_file(project: Path, value: str = "w1", key: str = "hid") -> Path:
    (path,) = (store(project) / "instances" / f"{key}~{value}").glob("*.json")
    return path


def run_all(project: Path, calls: list[tuple], workers: int = 4) -> list:
    """Run many ``heph`` calls at once: each call is (args tuple[, stdin bytes])."""
    def one(call):
        args, stdin = (call[0], call[1]) if len(call) == 2 and isinstance(call[1], (bytes, type(None))) else (call, None)
        return run_heph(*args, cwd=project, stdin=stdin)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, calls))


def assert_all_refused(project: Path, calls: list, *fragments: str) -> None:
    before = snapshot(store(project))
    for run in run_all(project, calls):
        assert_refused(run, *fragments)
    assert_same_snapshot(before, snapshot(store(project)), "refused commands")


def peak_memory_kb(argv: list[str], cwd: Path, stdin_path: Path | None = None) -> tuple[int, int, str]:
    """(exit code, peak RSS in KB, stderr) of ``argv`` run in a fresh child of a fresh Python,
    so RUSAGE_CHILDREN sees that one process only."""
    probe = textwrap.dedent("""
        import json, resource, subprocess, sys
        argv, stdin = json.loads(sys.argv[1]), sys.argv[2]
        with open(stdin or "/dev/null", "rb") as fh:
            proc = subprocess.run(argv, stdin=fh, capture_output=True)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps([proc.returncode, rss, proc.stderr.decode("utf-8", "replace")]))
    """)
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(argv), str(stdin_path or "")], cwd=cwd,
                         capture_output=True, env=cli_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    code, rss, err = json.loads(out.stdout)
    return code, rss, err


# -- ids and events through the CLI -----------------------------------------------------------


def test_hostile_values_are_refused_by_start_show_and_resume(project):
    calls = []
    for n, value in enumerate(HOSTILE_VALUES):
        calls += [("start", "hostile", value),
                  ("show", "hostile", value) if n % 2 else ("resume", "hostile", value, "go")]
    assert_all_refused(project, calls)


def test_hostile_values_are_refused_by_cancel_retry_graph_and_list(project):
    values = ["..", "../w1", "/etc/passwd", "a/b", "~", "W1", "x" * 10_000, "w1~x"]
    commands = [("cancel", "hostile"), ("retry", "hostile"), ("graph", "hostile", "--instance"), ("list", "--id")]
    assert_all_refused(project, [commands[n % 4] + (value,) for n, value in enumerate(values)])


def test_hostile_full_ids_are_refused(project):
    calls = []
    for n, full_id in enumerate(HOSTILE_IDS):
        calls += [("show", "--id", full_id), [("resume", "--id", full_id, "go"), ("cancel", "--id", full_id),
                                              ("start", "hostile", "--id", full_id)][n % 3]]
    assert_all_refused(project, calls)


def test_hostile_events_and_steps_are_refused(project):
    calls = [("resume", "hostile", "w1", event) for event in HOSTILE_EVENTS]
    calls += [("resume", "hostile", "w1", "go", "--step", step) for step in ("../hold", "HOLD", "x" * 10_000, "")]
    assert_all_refused(project, calls)
    assert json.loads(run_heph("show", "hostile", "w1", "--json", cwd=project).out)["status"] == "waiting"


def test_hostile_workflow_names_versions_and_statuses_are_refused(project):
    assert_all_refused(project, [
        ("start", "../hostile", "v1"), ("start", "/etc/passwd", "v1"), ("show", "hostile/../x", "w1"),
        ("graph", "../../x"), ("list", "--workflow", "../x"),
        ("start", "hostile", "v1", "--version", "-1"), ("start", "hostile", "v1", "--version", "0"),
        ("start", "hostile", "v1", "--version", "9" * 40), ("graph", "hostile", "--version", "9" * 40),
        ("show", "hostile", "w1", "--run", "../../../etc/passwd"),
    ])
    assert_usage_error(run_heph("list", "--status", "../waiting", cwd=project))  # not a status: a bad option value


def _not_a_value(text: str) -> bool:
    return not (_PLAIN_VALUE_RE.match(text) or _UUID_RE.match(text)) and "::" not in text


argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=argv_text, command=st.sampled_from(["start", "show"]))
def test_random_values_through_the_cli_are_refused(project, value, command):
    assume(_not_a_value(value) and not value.startswith("-"))
    assert_all_refused(project, [(command, "hostile", value)])


# -- ids and events through the Python API -----------------------------------------------------


class HostileApi(heph.Workflow):
    unique = heph.Unique("hapi")
    name = "hostileapi"
    start = type("HoldApi", (heph.Step,), {"events": ["go"], "key": "hold",
                                           "execute": lambda self, i, c, x: heph.ASYNC})
    transitions = {start: {"go": heph.Done}}


@pytest.fixture(scope="module")
def api_store():
    root = Path(tempfile.mkdtemp(prefix="heph-hostile-api-"))
    app = heph.Hephaestus(storage=heph.JsonFileStorage(root / ".heph"))
    app.start(HostileApi, "w1")
    yield app, root / ".heph"
    shutil.rmtree(root, ignore_errors=True)


API_IDS = HOSTILE_IDS + ["hapi::" + v for v in HOSTILE_VALUES] + [
    "hapi::w1\x00", "\x00", "hapi::\x00/../x", "hapi::\ud800", "hapi::w1::\ud800", None, 42, b"hapi::w1", ["hapi::w1"],
]


def _api_calls(app, instance_id, event="go"):
    yield lambda: app.get(instance_id)
    yield lambda: app.runs(instance_id)
    yield lambda: app.resume(instance_id, event)
    yield lambda: app.cancel(instance_id)
    yield lambda: app.retry(instance_id)
    if instance_id is not None:  # list(id=None) means "no id filter"
        yield lambda: app.list(id=instance_id)
    yield lambda: app.start_instance(HostileApi, {}, id=instance_id)


@pytest.mark.parametrize("instance_id", API_IDS, ids=lambda v: repr(v)[:30])
def test_hostile_ids_through_the_api_raise_invalid_id(api_store, instance_id):
    app, root = api_store
    before = snapshot(root)
    for call in _api_calls(app, instance_id):
        with pytest.raises(heph.InvalidId):
            call()
    assert_same_snapshot(before, snapshot(root), repr(instance_id))


@pytest.mark.parametrize("value", HOSTILE_VALUES + ["w1\x00", "\ud800", "w\u0131"], ids=lambda v: repr(v)[:30])
def test_hostile_values_through_the_facade_raise_invalid_id(api_store, value):
    app, root = api_store
    before = snapshot(root)
    with pytest.raises(heph.InvalidId):
        app.start(HostileApi, value)
    assert_same_snapshot(before, snapshot(root), repr(value))


@settings(max_examples=300, deadline=None)
@given(instance_id=st.text(max_size=60) | st.text(max_size=20).map(lambda s: "hapi::" + s))
def test_random_ids_through_the_api_are_refused_or_unknown(api_store, instance_id):
    app, root = api_store
    try:
        parse_id(instance_id)
        well_formed = True
    except heph.InvalidId:
        well_formed = False
    assume(instance_id != "hapi::w1")
    before = snapshot(root)
    if well_formed:  # an id nobody started: found nowhere, and nothing written
        for call in list(_api_calls(app, instance_id))[2:5] + [lambda: app.get(instance_id)]:
            with pytest.raises(heph.InstanceNotFound):
                call()
        assert app.runs(instance_id) == [] and app.list(id=instance_id) == []
    else:
        for call in _api_calls(app, instance_id):
            with pytest.raises(heph.InvalidId):
                call()
    assert_same_snapshot(before, snapshot(root), repr(instance_id))


@settings(max_examples=150, deadline=None)
@given(event=st.text(max_size=30) | st.sampled_from(["", "go\x00", "../go", "\ud800", "GO"]),
       step=st.none() | st.text(max_size=12))
def test_random_events_through_the_api_are_refused(api_store, event, step):
    app, root = api_store
    assume(not (event == "go" and step in (None, "hold")))
    before = snapshot(root)
    with pytest.raises(heph.HephError):
        app.resume("hapi::w1", event, step=step)
    assert_same_snapshot(before, snapshot(root), repr((event, step)))


def test_non_string_events_through_the_api_are_refused(api_store):
    app, root = api_store
    before = snapshot(root)
    for event in (None, 5, b"go", ["go"], {"go": 1}):
        with pytest.raises(heph.HephError):
            app.resume("hapi::w1", event)
    assert_same_snapshot(before, snapshot(root), "non-string events")


@pytest.mark.parametrize("context", [
    {"a": float("nan")}, {"a": float("inf")}, {"a": {1, 2}}, {1: "int key"}, {"a": object()},
    {"a": "\ud800"}, {"\udc80": 1}, {"a": 10 ** 5000}, ["not", "a", "dict"], "text",
], ids=["nan", "inf", "set", "int-key", "object", "surrogate", "surrogate-key", "huge-int", "list", "str"])
def test_unstorable_contexts_through_the_api_raise_invalid_context(api_store, context):
    app, root = api_store
    before = snapshot(root)
    with pytest.raises(heph.InvalidContext):
        app.start(HostileApi, "ctx1", context)
    assert_same_snapshot(before, snapshot(root), "unstorable context")


def test_deep_context_through_the_api_raises_invalid_context(api_store):
    app, root = api_store
    deep: dict = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    before = snapshot(root)
    with pytest.raises(heph.InvalidContext):
        app.start(HostileApi, "ctx2", deep)
    assert_same_snapshot(before, snapshot(root), "deep context")


# -- context JSON through the CLI -------------------------------------------------------------


DEEP = ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}").encode()
BAD_CONTEXTS = {
    "deep-10k": DEEP,
    "deep-250": ('{"a": ' + "[" * 250 + "]" * 250 + "}").encode(),
    "nan": b'{"a": NaN}',
    "infinity": b'{"a": Infinity}',
    "minus-infinity": b'{"a": [-Infinity]}',
    "overflow-to-inf": b'{"a": 1e999}',
    "huge-int": b'{"a": 1' + b"0" * 5000 + b"}",
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "overlong-utf8": b'{"a": "\xc0\xaf"}',
    "duplicate-keys": b'{"a": 1, "a": 2}',
    "nested-duplicate-keys": b'{"a": {"b": 1, "b": 1}}',
    "top-level-array": b"[1, 2]",
    "top-level-string": b'"x"',
    "top-level-number": b"3",
    "top-level-null": b"null",
    "empty": b"",
    "whitespace": b" \n\t ",
    "truncated": b'{"a": [1, 2',
    "trailing-garbage": b'{"a": 1} {"b": 2}',
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "lone-surrogate": b'{"a": "\\ud800"}',
    "lone-surrogate-key": b'{"\\udfff": 1}',
    "single-quotes": b"{'a': 1}",
}


STDIN_SAMPLE = ["deep-10k", "nan", "invalid-utf8", "duplicate-keys", "top-level-array", "empty", "lone-surrogate"]


def test_bad_context_documents_are_refused(project):
    calls = []
    for name, data in list(BAD_CONTEXTS.items()) + [(n, BAD_CONTEXTS[n]) for n in STDIN_SAMPLE]:
        if len(calls) < len(BAD_CONTEXTS):
            path = project / f"ctx-{name}.json"
            path.write_bytes(data)
            calls.append(("start", "hostile", f"x{len(calls)}", "--context", str(path)))
        else:
            calls.append((("start", "hostile", f"x{len(calls)}", "--context", "-"), data))
    assert_all_refused(project, calls)


def test_bad_inline_contexts_are_refused(project):
    sample = STDIN_SAMPLE + ["deep-250", "huge-int", "bom", "overflow-to-inf"]
    calls = [("start", "hostile", f"i{n}", "--context-json", BAD_CONTEXTS[name].decode("utf-8", "surrogateescape"))
             for n, name in enumerate(sample)]
    assert_all_refused(project, calls)
    # raw invalid UTF-8 bytes in argv
    before = snapshot(store(project))
    proc = subprocess.run([sys.executable.encode(), b"-m", b"heph", b"start", b"hostile", b"raw1",
                           b"--context-json", b'{"a": "\xff"}'], cwd=project, capture_output=True, env=cli_env())
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1 and b"Traceback" not in proc.stderr, proc
    assert_same_snapshot(before, snapshot(store(project)), "invalid UTF-8 argv")


def test_context_option_misuse_is_refused(project):
    (project / "ok.json").write_text("{}")
    assert_all_refused(project, [
        ("start", "hostile", "m1", "--context", "ok.json", "--context-json", "{}"),
        ("start", "hostile", "m2", "--context", "does-not-exist.json"),
        ("start", "hostile", "m3", "--context", str(project)),           # a directory
        ("start", "hostile", "m4", "--context", "/etc/shadow"),          # unreadable (or absent)
    ])


def test_a_50_mb_context_is_refused_in_bounded_memory(project):
    big = project / "big.json"
    with open(big, "wb") as fh:
        fh.write(b'{"a": "')
        fh.write(b"x" * (50 * 1024 * 1024))
        fh.write(b'"}')
    before = snapshot(store(project))
    argv = [sys.executable, "-m", "heph", "start", "hostile", "big1", "--context"]
    for extra, stdin in (([str(big)], None), (["-"], big)):
        code, rss, err = peak_memory_kb(argv + extra, project, stdin)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "2 MB" in err, err
        assert rss < MEMORY_LIMIT_KB, f"peak RSS {rss} KB"
    assert_same_snapshot(before, snapshot(store(project)), "50 MB context")


def test_context_edge_values_that_are_valid_are_stored_exactly(project):
    data = {"nul": "a\u0000b", "unicode": "ünïcödé 𝄞 \u202e", "big": 10 ** 300, "neg0": -0.0,
            "path": "../../etc/passwd", "deep": [[[[[[[[[[1]]]]]]]]]], "empty": {}, "long": "y" * 100_000}
    run = run_heph("start", "hostile", "edge1", "--context-json", json.dumps(data), "--json", cwd=project)
    assert run.code == 0, run
    shown = run_heph("show", "hostile", "edge1", "--json", cwd=project)
    assert shown.code == 0, shown
    assert shown.json()["context"]["initial"] == data
    assert not (project / "etc").exists()


# -- heph.yaml ----------------------------------------------------------------------------------


ALIAS_BOMB = "\n".join(
    [f'{chr(97 + i)}: &{chr(97 + i)} [' + ", ".join([f"*{chr(96 + i)}"] * 9 if i else ['"lol"'] * 9) + "]"
     for i in range(10)] + ["workflows: *j", "storage: {path: .heph}"]) + "\n"

BAD_CONFIGS = {
    "workflows-string": "workflows: hostile_flows\n",
    "workflows-ints": "workflows: [1, 2]\n",
    "workflows-mapping": "workflows: {a: 1}\n",
    "workflows-null": "workflows:\n",
    "workflows-path": "workflows: ['../hostile_flows']\n",
    "workflows-shell": "workflows: ['os; rm -rf /']\n",
    "workflows-nested": "workflows: [[hostile_flows]]\n",
    "storage-scalar": "workflows: [hostile_flows]\nstorage: 5\n",
    "storage-path-int": "workflows: [hostile_flows]\nstorage: {path: 5}\n",
    "storage-path-empty": "workflows: [hostile_flows]\nstorage: {path: ''}\n",
    "storage-path-list": "workflows: [hostile_flows]\nstorage: {path: [.heph]}\n",
    "lock-timeout-text": "workflows: [hostile_flows]\nstorage: {lock_timeout: soon}\n",
    "lock-timeout-negative": "workflows: [hostile_flows]\nstorage: {lock_timeout: -1}\n",
    "lock-timeout-nan": "workflows: [hostile_flows]\nstorage: {lock_timeout: .nan}\n",
    "lock-timeout-bool": "workflows: [hostile_flows]\nstorage: {lock_timeout: true}\n",
    "storage-type": "workflows: [hostile_flows]\nstorage: {type: redis}\n",
    "unknown-key": "workflows: [hostile_flows]\ncolour: red\n",
    "unknown-storage-key": "workflows: [hostile_flows]\nstorage: {path: .heph, owner: root}\n",
    "top-level-list": "- hostile_flows\n",
    "top-level-scalar": "hostile_flows\n",
    "invalid-yaml": "workflows: [hostile_flows\n",
    "tabs": "workflows:\n\t- hostile_flows\n",
    "duplicate-anchor-alias-missing": "workflows: *nothing\n",
    "alias-bomb": ALIAS_BOMB,
    "python-tag": "workflows: !!python/object/apply:os.system ['touch pwned']\n",
    "missing-module": "workflows: [no_such_module_here]\n",
    "missing-submodule": "workflows: [hostile_flows.nothing]\n",
    "raising-module": "workflows: [raises_on_import]\n",
    "syntax-error-module": "workflows: [syntax_error]\n",
    "exiting-module": "workflows: [exits_on_import]\n",
    "broken-import-module": "workflows: [imports_missing]\n",
}
MODULES = {
    "raises_on_import.py": "raise RuntimeError('boom on import')\n",
    "syntax_error.py": "def broken(:\n    pass\n",
    "exits_on_import.py": "import sys\nsys.exit(0)\n",
    "imports_missing.py": "import no_such_dependency_xyz\n",
}


def _config_project(project: Path, name: str, text: str | bytes) -> Path:
    for module, source in MODULES.items():
        (project / module).write_text(source)
    if isinstance(text, bytes):
        (project / "heph.yaml").write_bytes(text)
    else:
        (project / "heph.yaml").write_text(text)
    return project


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_heph_yaml_is_refused(project, name):
    _config_project(project, name, BAD_CONFIGS[name])
    calls = [("start", "hostile", "y1")] if name.endswith("module") else [("list",)]
    assert_all_refused(project, calls)
    assert not (project / "pwned").exists()


@pytest.mark.parametrize("text", [
    b"", b"{}\n", b"storage: {path: .heph}\n", b"# nothing but a comment\n",
], ids=["empty", "empty-mapping", "no-workflows", "comment"])
def test_heph_yaml_without_workflows_refuses_starts(project, text):
    (project / "heph.yaml").write_bytes(text)
    assert_all_refused(project, [("resume", "hostile", "w1", "go")], "unknown workflow")


def test_unreadable_or_huge_heph_yaml_is_refused(project):
    (project / "big.yaml").write_text("workflows: [hostile_flows]\n" + "# padding\n" * 200_000)
    (project / "latin1.yaml").write_bytes(b"workflows: [hostile_flows]\n# caf\xe9\n")
    assert_all_refused(project, [("--config", "big.yaml", "list"), ("--config", "latin1.yaml", "list"),
                                 ("--config", "/dev/zero", "list"), ("--config", "nope.yaml", "list")])


def test_alias_bomb_is_refused_in_bounded_memory(project):
    (project / "heph.yaml").write_text(ALIAS_BOMB)
    before = snapshot(store(project))
    code, rss, err = peak_memory_kb([sys.executable, "-m", "heph", "list"], project)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert rss < MEMORY_LIMIT_KB, f"peak RSS {rss} KB"
    assert_same_snapshot(before, snapshot(store(project)), "alias bomb")


# -- instance files edited by hand ----------------------------------------------------------------


def _edit(doc: dict, **changes) -> bytes:
    return json.dumps({**doc, **changes}).encode()


def _nested(doc: dict, **changes) -> bytes:
    copy = json.loads(json.dumps(doc))
    for dotted, value in changes.items():
        node = copy
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return json.dumps(copy).encode()


CORRUPTIONS = {
    "truncated": lambda raw, doc: raw[: len(raw) // 2],
    "empty": lambda raw, doc: b"",
    "whitespace": lambda raw, doc: b"   \n",
    "not-utf8": lambda raw, doc: raw.replace(b'"w', b'"\xff', 1),
    "array": lambda raw, doc: b"[]",
    "format-2": lambda raw, doc: _edit(doc, format=2),
    "format-missing": lambda raw, doc: json.dumps({k: v for k, v in doc.items() if k != "format"}).encode(),
    "format-string": lambda raw, doc: _edit(doc, format="1"),
    "version-string": lambda raw, doc: _edit(doc, version="1"),
    "status-unknown": lambda raw, doc: _edit(doc, status="paused"),
    "status-int": lambda raw, doc: _edit(doc, status=5),
    "history-object": lambda raw, doc: _edit(doc, history={}),
    "history-bad-entry": lambda raw, doc: _edit(doc, history=[{"step": 1}]),
    "context-list": lambda raw, doc: _edit(doc, context=[]),
    "context-initial-missing": lambda raw, doc: _nested(doc, context={"steps": {}}),
    "waits-list": lambda raw, doc: _edit(doc, waits=[]),
    "timestamp-garbage": lambda raw, doc: _edit(doc, created_at="yesterday"),
    "timestamp-naive": lambda raw, doc: _edit(doc, updated_at="2026-11-26T00:00:00"),
    "id-elsewhere": lambda raw, doc: _edit(doc, id="hid::w2"),
    "run-elsewhere": lambda raw, doc: _edit(doc, run="20200101T000000000000-000000"),
    "deep-nesting": lambda raw, doc: b'{"format": 1, "context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def test_hand_corrupted_instance_files_are_refused_and_listed_with_a_warning(project):
    paths = {}
    for n, name in enumerate(sorted(CORRUPTIONS)):
        value = f"c{n:02d}"
        path = run_file(project, value)
        raw = path.read_bytes()
        path.write_bytes(CORRUPTIONS[name](raw, json.loads(raw)))
        paths[value] = path
    before = snapshot(store(project))
    calls = []
    for n, value in enumerate(paths):
        calls += [("show", "hostile", value),
                  [("resume", "hostile", value, "go"), ("cancel", "hostile", value),
                   ("show", "--id", f"hid::{value}", "--json"), ("retry", "hostile", value)][n % 4]]
    calls += [("list",), ("list", "--status", "waiting", "--json"), ("show", "hostile", "w2")]
    runs = run_all(project, calls)
    for n, value in enumerate(paths):
        for run in runs[2 * n: 2 * n + 2]:
            assert_refused(run, paths[value].name)
    listing, waiting, other = runs[-3:]
    for run in (listing, waiting, other):
        assert run.code == 0 and "Traceback" not in run.err, run
    for value, path in paths.items():
        assert path.name in listing.err and path.name in waiting.err, (value, listing)
    assert "hid::w1" in listing.out and "hid::w2" in listing.out, listing
    assert sorted(i["id"] for i in waiting.json()["instances"]) == ["hid::w1", "hid::w2", "htid::t1", "htid::t2"]
    assert_same_snapshot(before, snapshot(store(project)), "corrupt instance files")


@pytest.mark.parametrize("change", [{"workflow": "nosuchflow"}, {"version": 7}], ids=["workflow", "version"])
def test_instance_of_an_unknown_workflow_or_version_cannot_be_resumed(project, change):
    path = run_file(project)
    path.write_bytes(_edit(json.loads(path.read_bytes()), **change))
    before = snapshot(store(project))
    runs = run_all(project, [("resume", "--id", "hid::w1", "go"), ("resume", "hostile", "w1", "go"),
                             ("retry", "--id", "hid::w1"), ("list",), ("show", "--id", "hid::w1")])
    for run in runs[:3]:
        assert_refused(run)
    for run in runs[3:]:
        assert run.code == 0 and "Traceback" not in run.err, run
    assert_same_snapshot(before, snapshot(store(project)), str(change))


@pytest.mark.parametrize("change", [{"workflow": "nosuchflow"}, {"version": 7}], ids=["workflow", "version"])
def test_tick_skips_an_instance_of_an_unknown_workflow_and_fires_the_others(project, change):
    """A waiting run whose workflow (or version) the project no longer defines used to make
    `heph tick` (and so `heph worker`) stop at it, so no later timer ever fired."""
    path = run_file(project, "t1", key="htid")
    doc = json.loads(path.read_bytes())
    path.write_bytes(_edit(doc, **change))
    wait_until_due(doc)
    tick = run_heph("tick", "--json", cwd=project)
    assert tick.code == 0 and [(a["id"], a["kind"]) for a in tick.json()["fired"]] == [("htid::t2", "timer")], tick
    assert json.loads(path.read_bytes()) == {**doc, **change}
    shown = run_heph("show", "hostiletimed", "t2", "--json", cwd=project)
    assert shown.json()["status"] == "completed", shown


def test_a_70_mb_instance_file_is_refused_in_bounded_memory(project):
    path = run_file(project)
    doc = json.loads(path.read_bytes())
    doc["context"]["initial"] = {"pad": "z" * (70 * 1024 * 1024)}
    path.write_bytes(json.dumps(doc).encode())
    before_names = sorted(p.name for p in store(project).rglob("*"))
    code, rss, err = peak_memory_kb([sys.executable, "-m", "heph", "show", "hostile", "w1"], project)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "larger than" in err, err
    assert rss < MEMORY_LIMIT_KB, f"peak RSS {rss} KB"
    assert sorted(p.name for p in store(project).rglob("*")) == before_names
    assert os.path.getsize(path) > 70 * 1024 * 1024
