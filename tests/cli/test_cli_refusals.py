"""Refused commands of the real ``heph`` CLI (``python -m heph`` in a subprocess): exit 1 with one
``error:`` line on stderr and no traceback (``--json``: ``{"error": {...}}`` on stdout), usage
errors exit 2, ``heph check`` lists every problem of a broken project with its location — and a
refused command changes nothing on disk: every refusal run against the shared store below is
checked byte for byte (every file and directory under .heph, before and after)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import (
    assert_refused,
    assert_same_snapshot,
    assert_usage_error,
    cli_env,
    heph,
    make_project,
    ok,
    ok_json,
    snapshot,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A sample project with orderid::order42 completed, paymentid::pay1 waiting, a failed
    notification, and a few context files (good and bad) next to heph.yaml."""
    root = make_project(tmp_path_factory.mktemp("refusals") / "shop-project")
    ok("start", "orderflow", "order42", "--context", "contexts/order42.json", cwd=root)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=root)
    ok("start", "notificationflow", "oops", "--context-json", '{"template": "nope"}', cwd=root)
    (root / "bad_syntax.json").write_text('{\n  "items": [1, 2,]\n}\n')
    (root / "bad_utf8.json").write_bytes(b'{"name": "caf\xe9"}')
    (root / "array.json").write_text("[1, 2, 3]")
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "shop-project")


def refused_unchanged(root: Path, *args: str, stdin=None, env=None, storage: str = ".heph"):
    """Run a command that must be refused; assert the storage is byte-identical afterwards."""
    before = snapshot(root / storage)
    run = heph(*args, cwd=root, stdin=stdin, env=env)
    assert_same_snapshot(before, snapshot(root / storage), f"heph {' '.join(args)}")
    return run


def _json_error_position(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"line {exc.lineno}, column {exc.colno}"
    raise AssertionError("valid JSON")


# -- refusals against the shared store: one line, exit 1, nothing changed on disk ---------------

REFUSALS = [
    # bad contexts
    ("context-file-missing", ["start", "orderflow", "o1", "--context", "missing.json"], None, ["missing.json"]),
    ("context-invalid-json-inline", ["start", "orderflow", "o1", "--context-json", '{"a": 1,\n "b": }'], None,
     ["not valid JSON", _json_error_position('{"a": 1,\n "b": }')]),
    ("context-invalid-json-file", ["start", "orderflow", "o1", "--context", "bad_syntax.json"], None,
     ["bad_syntax.json", "not valid JSON", _json_error_position('{\n  "items": [1, 2,]\n}\n')]),
    ("context-invalid-json-stdin", ["start", "orderflow", "o1", "--context", "-"], b'{"items": [}', ["standard input", "line 1"]),
    ("context-empty-stdin", ["start", "orderflow", "o1", "--context", "-"], b"", ["not valid JSON"]),
    ("context-top-level-array", ["start", "orderflow", "o1", "--context-json", "[1, 2]"], None, ["JSON object"]),
    ("context-top-level-array-file", ["start", "orderflow", "o1", "--context", "array.json"], None, ["JSON object"]),
    ("context-top-level-string", ["start", "orderflow", "o1", "--context-json", '"hi"'], None, ["JSON object"]),
    ("context-nan", ["start", "orderflow", "o1", "--context-json", '{"amount": NaN}'], None, ["NaN"]),
    ("context-infinity", ["start", "orderflow", "o1", "--context-json", '{"amount": -Infinity}'], None, ["Infinity"]),
    ("context-duplicate-keys", ["start", "orderflow", "o1", "--context-json", '{"a": 1, "b": 2, "a": 3}'], None,
     ["duplicate key 'a'"]),
    ("context-nested-duplicate-keys", ["start", "orderflow", "o1", "--context-json", '{"x": {"k": 1, "k": 1}}'], None,
     ["duplicate key 'k'"]),
    ("context-invalid-utf8-file", ["start", "orderflow", "o1", "--context", "bad_utf8.json"], None, ["UTF-8"]),
    ("context-invalid-utf8-stdin", ["start", "orderflow", "o1", "--context", "-"], b'{"a": "\xff\xfe"}', ["UTF-8"]),
    ("context-nested-too-deeply", ["start", "orderflow", "o1", "--context", "-"], b"[" * 200_000, ["too deeply"]),
    ("context-file-and-json", ["start", "orderflow", "o1", "--context", "contexts/order42.json", "--context-json", "{}"],
     None, ["--context", "--context-json"]),
    # start
    ("start-unknown-workflow", ["start", "nope", "o1"], None, ["unknown workflow 'nope'", "orderflow", "paymentflow"]),
    ("start-uppercase-value", ["start", "orderflow", "Order42"], None, ["Order42"]),
    ("start-path-value", ["start", "orderflow", "../x"], None, ["../x"]),
    ("start-reserved-separator", ["start", "orderflow", "a::b"], None, ["a::b"]),
    ("start-space-value", ["start", "orderflow", "a b"], None, ["a b"]),
    ("start-non-ascii-value", ["start", "orderflow", "caf\u00e9"], None, ["caf\u00e9"]),
    ("start-id-of-another-key", ["start", "orderflow", "--id", "paymentid::x"], None, ["orderid"]),
    ("start-already-running", ["start", "paymentflow", "pay1", "--context", "contexts/payment.json"], None,
     ["paymentid::pay1", "already running"]),
    ("start-unknown-version", ["start", "createuser", "bob", "--version", "7"], None, ["no version 7", "1, 2"]),
    ("start-version-of-unversioned", ["start", "orderflow", "o1", "--version", "2"], None, ["version 2"]),
    # resume
    ("resume-not-waiting", ["resume", "orderflow", "order42", "sent"], None, ["orderid::order42", "not waiting"]),
    ("resume-failed-instance", ["resume", "--id", "__failed__", "rendered"], None, ["not waiting"]),
    ("resume-unknown-event", ["resume", "paymentflow", "pay1", "shipped"], None,
     ["'shipped'", "payment_confirmed", "payment_failed"]),
    ("resume-unknown-step", ["resume", "paymentflow", "pay1", "payment_confirmed", "--step", "nope"], None, ["nope"]),
    ("resume-unknown-workflow", ["resume", "nope", "pay1", "payment_confirmed"], None, ["unknown workflow"]),
    ("resume-invalid-value", ["resume", "paymentflow", "Pay1", "payment_confirmed"], None, ["Pay1"]),
    # show, list, graph
    ("show-unknown-instance", ["show", "orderflow", "nope"], None, ["orderid::nope"]),
    ("show-invalid-id", ["show", "--id", "orderid::Nope"], None, ["Nope"]),
    ("show-malformed-id", ["show", "--id", "nocolons"], None, ["nocolons"]),
    ("show-scope-none-without-suffix", ["show", "notificationflow", "oops"], None, ["--id"]),
    ("show-unknown-run", ["show", "orderflow", "order42", "--run", "nope"], None, ["nope"]),
    ("list-unknown-workflow", ["list", "--workflow", "nope"], None, ["unknown workflow 'nope'"]),
    ("graph-unknown-workflow", ["graph", "nope"], None, ["unknown workflow 'nope'"]),
    ("graph-unknown-instance", ["graph", "orderflow", "--instance", "nope"], None, ["orderid::nope"]),
    ("graph-unknown-version", ["graph", "createuser", "--version", "9"], None, ["9"]),
    # cancel, retry
    ("cancel-completed", ["cancel", "orderflow", "order42"], None, ["orderid::order42", "completed"]),
    ("cancel-failed", ["cancel", "--id", "__failed__"], None, ["failed"]),
    ("retry-completed", ["retry", "orderflow", "order42"], None, ["orderid::order42", "failed"]),
    ("retry-waiting", ["retry", "paymentflow", "pay1"], None, ["paymentid::pay1", "waiting"]),
    ("retry-invalid-id", ["retry", "orderflow", "../etc"], None, ["../etc"]),
    # unknown instances: refused before any lock file or directory is created for them
    ("resume-unknown-instance", ["resume", "paymentflow", "zzz", "payment_confirmed"], None, ["paymentid::zzz"]),
    ("cancel-unknown-instance", ["cancel", "orderflow", "zzz"], None, ["orderid::zzz"]),
    ("retry-unknown-instance", ["retry", "orderflow", "zzz"], None, ["orderid::zzz"]),
    ("cancel-unknown-full-id", ["cancel", "--id", "orderid::zzz"], None, ["orderid::zzz"]),
]


def _failed_notification(store: Path) -> str:
    return ok_json("list", "--workflow", "notificationflow", cwd=store)["instances"][0]["id"]


@pytest.mark.parametrize(("args", "stdin", "fragments"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_command_changes_nothing(store, args, stdin, fragments):
    if "__failed__" in args:  # the failed notification's id has a random suffix
        args = [_failed_notification(store) if a == "__failed__" else a for a in args]
    assert_refused(refused_unchanged(store, *args, stdin=stdin), *fragments)


def test_refusals_in_a_project_without_storage_create_none(project):
    for args in (["start", "orderflow", "Order42"], ["start", "orderflow", "o1", "--context-json", "[]"],
                 ["start", "nope", "o1"], ["show", "orderflow", "nope"], ["graph", "orderflow", "--instance", "nope"],
                 ["resume", "paymentflow", "zzz", "payment_confirmed"],
                 ["cancel", "orderflow", "zzz"], ["retry", "orderflow", "zzz"]):
        assert_refused(heph(*args, cwd=project))
    assert not (project / ".heph").exists()


USAGE_ERRORS = [
    ["resume", "paymentflow", "pay1"],
    ["resume", "paymentflow", "pay1", "payment_confirmed", "extra"],
    ["resume", "--id", "paymentid::pay1"],
    ["start"],
    ["start", "orderflow"],
    ["start", "orderflow", "o1", "--version", "two"],
    ["show", "orderflow", "order42", "--id", "orderid::order42"],
    ["graph", "paymentflow", "--format", "svg"],
    ["list", "--limit", "0"],
    ["no-such-command"],
    ["list", "--no-such-option"],
    ["list", "--status", "bogus"],
    ["start", "orderflow", "o1", "-o", "legacy=true"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_usage_errors_exit_2(store, args):
    run = refused_unchanged(store, *args)
    assert_usage_error(run)
    assert run.err.startswith("Usage error: ") and run.err.rstrip().endswith("--help)"), run  # one style


# -- --json errors ---------------------------------------------------------------------------

JSON_ERRORS = [
    (["show", "orderflow", "nope"], "not_found"),
    (["start", "paymentflow", "pay1"], "already_running"),
    (["resume", "paymentflow", "pay1", "shipped"], "invalid_event"),
    (["cancel", "orderflow", "order42"], "not_cancellable"),
    (["retry", "orderflow", "order42"], "not_retryable"),
    (["start", "orderflow", "Order42"], "invalid_id"),
    (["start", "orderflow", "o1", "--context-json", "{"], None),
    (["start", "nope", "o1"], None),
    (["graph", "orderflow", "--instance", "nope"], "not_found"),
]


@pytest.mark.parametrize(("args", "code"), JSON_ERRORS, ids=[" ".join(a[:3]) for a, _ in JSON_ERRORS])
def test_json_error_shape(store, args, code):
    run = refused_unchanged(store, *args, "--json")
    line = assert_refused(run)
    data = run.json()
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    assert isinstance(data["error"]["code"], str) and data["error"]["code"]
    if code is not None:
        assert data["error"]["code"] == code
    assert line == f"error: {data['error']['message']}"
    assert run.out.count("\n") == 1  # one JSON document, one line


def test_json_error_without_a_project(tmp_path):
    run = heph("list", "--json", cwd=tmp_path)
    assert_refused(run, "heph.yaml")
    assert "heph.yaml" in run.json()["error"]["message"]


# -- config discovery refusals ------------------------------------------------------------------


def test_no_config_found(tmp_path):
    (tmp_path / "deeper").mkdir()
    assert_refused(heph("list", cwd=tmp_path / "deeper"), "heph.yaml", "--config")


def test_config_option_pointing_nowhere(store):
    assert_refused(refused_unchanged(store, "--config", "nowhere/heph.yaml", "list"), "nowhere", "--config")


def test_heph_config_pointing_nowhere(store):
    run = refused_unchanged(store, "list", env=cli_env(HEPH_CONFIG=str(store / "missing.yaml")))
    assert_refused(run, "missing.yaml", "HEPH_CONFIG")


@pytest.mark.parametrize(("text", "fragments"), [
    ("workflows: [shop.orders\nstorage: {path: .heph}\n", ["not valid YAML", "line"]),
    ("workflows: [shop.orders]\nstorge: {path: .heph}\n", ["storge"]),
    ("workflows: shop.orders\n", ["workflows"]),
    ("- shop.orders\n", ["mapping"]),
    ("workflows: [shop.orders]\nstorage: {path: .heph, type: sqlite}\n", ["sqlite"]),
], ids=["bad-yaml", "unknown-key", "workflows-not-a-list", "not-a-mapping", "unknown-storage-type"])
def test_invalid_heph_yaml(project, text, fragments):
    (project / "heph.yaml").write_text(text)
    assert_refused(heph("list", cwd=project), "heph.yaml", *fragments)


# -- heph check on a broken project ------------------------------------------------------------

BAD_WORKFLOWS = '''\
from heph import Done, Step, Unique, Workflow


class Ping(Step):
    events = ["ok", "extra"]

    def execute(self, instance, config, context):
        return "ok"


class NoUnique(Workflow):
    start = Ping
    transitions = {Ping: {"ok": Done}}


class Cyclic(Workflow):
    unique = Unique("loop")
    start = Ping
    transitions = {Ping: {"ok": Ping, "extra": Done}}
'''


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """The sample project plus: a module with two invalid workflows, a module that does not
    exist, one with a syntax error, one that raises on import, one importing a missing package."""
    root = make_project(tmp_path_factory.mktemp("broken") / "shop-project")
    pkg = root / "broken"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "invalid.py").write_text(BAD_WORKFLOWS)
    (pkg / "syntax.py").write_text("x = 1\n\ndef oops(:\n    pass\n")
    (pkg / "raises.py").write_text('"""Raises."""\n\nLIMIT = 3\nraise RuntimeError("no database configured")\n')
    (pkg / "needs.py").write_text("import json\nimport no_such_package_zz  # not installed\n")
    config = (root / "heph.yaml").read_text()
    extra = "".join(f"  - broken.{m}\n" for m in ("invalid", "missing", "syntax", "raises", "needs"))
    (root / "heph.yaml").write_text(config.replace("  - shop.notifications\n", "  - shop.notifications\n" + extra))
    return root


def _expected_problems(root: Path) -> list[tuple[str, int, str]]:
    """(file name, line, message fragment) of every problem of the broken project."""
    source = BAD_WORKFLOWS.splitlines()
    no_unique = source.index("class NoUnique(Workflow):") + 1
    cyclic = source.index("class Cyclic(Workflow):") + 1
    config_line = (root / "heph.yaml").read_text().splitlines().index("  - broken.missing") + 1
    return [
        ("invalid.py", no_unique, "unique"),
        ("invalid.py", no_unique, "'extra'"),
        ("invalid.py", cyclic, "cycle"),
        ("heph.yaml", config_line, "broken.missing"),
        ("syntax.py", 3, "syntax error"),
        ("raises.py", 4, "no database configured"),
        ("needs.py", 2, "no_such_package_zz"),
    ]


def test_check_lists_every_problem_with_its_location(broken):
    run = heph("check", cwd=broken)
    assert run.code == 1, run
    assert "Traceback" not in run.out + run.err
    assert run.err.strip().splitlines() == [f"error: {len(_expected_problems(broken))} definition problem(s) found"]
    lines = [line for line in run.out.splitlines() if line.startswith("error ")]
    assert len(lines) == len(_expected_problems(broken)), run
    for (name, line, fragment), text in zip(_expected_problems(broken), lines):
        assert f"{name}:{line}: " in text and fragment in text, (name, line, fragment, text)
    assert "[a-z0-9]+" in run.out  # messages are printed verbatim, not eaten as rich markup
    for name in ("orderflow", "notificationflow"):  # the valid workflows are still listed
        assert name in run.out
    assert "8 workflow(s), 7 error(s)" in run.out


def test_check_json_of_a_broken_project(broken):
    run = heph("check", "--json", cwd=broken)
    assert run.code == 1, run
    data = run.json()
    assert set(data) == {"workflows", "errors", "ok"} and data["ok"] is False
    assert len(data["workflows"]) == 8
    assert all({"module", "file", "line", "message"} <= set(e) for e in data["errors"])
    got = [(Path(e["file"]).name, e["line"], e["message"]) for e in data["errors"]]
    assert len(got) == len(_expected_problems(broken))
    for (name, line, fragment), (gname, gline, message) in zip(_expected_problems(broken), got):
        assert (gname, gline) == (name, line) and fragment in message, (name, line, fragment, message)
    assert {e.get("workflow") for e in data["errors"][:3]} == {"NoUnique", "Cyclic"}
    assert all(Path(e["file"]).is_absolute() for e in data["errors"])


def test_other_commands_refuse_a_broken_project(broken):
    run = refused_unchanged(broken, "start", "orderflow", "o1")
    line = assert_refused(run, "invalid.py:", "heph check")
    assert "more problems" in line


# -- corrupt instance files --------------------------------------------------------------------


def test_a_corrupt_instance_file_is_reported_by_name_and_left_alone(project):
    ok("start", "orderflow", "order42", cwd=project)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    [victim] = [p for p in (project / ".heph" / "instances").rglob("*.json") if "order42" in p.parent.name]
    victim.write_bytes(b'{"format": 1, "id": ')
    line = assert_refused(refused_unchanged(project, "show", "orderflow", "order42"), victim.name, "corrupt")
    assert str(victim) in line
    assert_refused(refused_unchanged(project, "start", "orderflow", "order42"), victim.name)
    # the other instance stays usable
    assert [i["id"] for i in ok_json("list", cwd=project)["instances"]] == ["paymentid::pay1"]
    assert ok_json("resume", "paymentflow", "pay1", "payment_confirmed", cwd=project)["status"] == "completed"
    assert victim.read_bytes() == b'{"format": 1, "id": '
