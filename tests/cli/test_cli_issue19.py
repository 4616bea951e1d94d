"""Issue #19, the command-line items: hints that name real commands, --to named in its error,
pipes never wrapped, a closed pipe quiet with exit 1 on every path, doctor's text, usage
errors in one style (exit 2), created and UTC times, durations, narrow terminals, workflow
metadata, a failure said once with its type, --version, -h, completion, an empty check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from cli_helpers import assert_refused, assert_usage_error, cli_env, heph, make_project, ok

from heph.cli import text

PLAIN = re.compile(r"\x1b\[[0-9;]*m")

FLOWS = '''\
from heph import ASYNC, Done, Step, Unique, Workflow


class NeedsAmount(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok", {"amount": context.initial["amount"]}


class Boom(Workflow):
    unique = Unique(key="boom")
    start = NeedsAmount
    transitions = {NeedsAmount: {"ok": Done}}


class Hold(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class SharedOne(Workflow):
    unique = Unique(key="shared")
    start = Hold
    transitions = {Hold: {"go": Done}}


class SharedTwo(Workflow):
    unique = Unique(key="shared")
    start = Hold
    transitions = {Hold: {"go": Done}}
'''


def with_module(root: Path, name: str, source: str) -> Path:
    """Add module ``name`` (``source``) to the project's heph.yaml workflows."""
    (root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    config = root / "heph.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("workflows:\n", f"workflows:\n  - {name}\n", 1),
                      encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "shop")


def usage(run) -> str:
    """A usage error in heph's one style: exit 2, one line ``Usage error: ... (see heph X --help)``."""
    assert_usage_error(run)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Usage error: ") and re.search(r"\(see heph[ a-z]* --help\)$",
                                                                                 lines[0]), run
    return lines[0]


def colour_env(**extra: str) -> dict[str, str]:
    return cli_env(FORCE_COLOR="1", **extra)


def body_rows(out: str) -> list[str]:
    return [line for line in PLAIN.sub("", out).splitlines() if line.startswith("│")]


# -- 2: hints name commands that exist ------------------------------------------------------------


def test_graph_of_a_scope_none_instance_takes_the_id_its_hint_names(project):
    full_id = json.loads(ok("start", "notificationflow", "welcome", "--context", "contexts/notification.json",
                            "--json", cwd=project).out)["id"]
    line = assert_refused(heph("graph", "notificationflow", "--instance", "welcome", cwd=project), "--id")
    assert "graph" not in line or "--id" in line
    drawn = json.loads(ok("graph", "notificationflow", "--id", full_id, "--json", cwd=project).out)
    assert {node["state"] for node in drawn["nodes"]} == {"completed"}
    assert "completed" in ok("graph", "notificationflow", "--id", full_id, cwd=project).out
    usage(heph("graph", "notificationflow", "--id", full_id, "--instance", "welcome", cwd=project))


def test_an_ambiguous_id_names_a_resume_that_works(project):
    with_module(project, "issue19flows", FLOWS)
    ok("start", "sharedone", "x", cwd=project)
    ok("start", "sharedtwo", "x", cwd=project)
    line = assert_refused(heph("resume", "--id", "shared::x", "go", cwd=project), "several workflows")
    assert "heph resume WORKFLOW --id shared::x EVENT" in line
    assert "heph show WORKFLOW VALUE" not in line
    done = json.loads(ok("resume", "sharedone", "--id", "shared::x", "go", "--json", cwd=project).out)
    assert done["workflow"] == "sharedone" and done["status"] == "completed"


# -- 4: storage copy --to ------------------------------------------------------------------------


def test_storage_copy_to_a_missing_config_names_to(project):
    line = assert_refused(heph("storage", "copy", "--to", "MISSING", cwd=project), "MISSING", "--to")
    assert "--config" not in line


# -- 5, 6: pipes ------------------------------------------------------------------------------------


def test_a_pipe_in_colour_is_never_wrapped(project):
    value = "a" * 70
    ok("start", "orderflow", value, "--context", "contexts/order42.json", cwd=project)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    out = ok("list", cwd=project, env=colour_env()).out
    assert "\x1b[" in out
    rows = body_rows(out)
    assert len(rows) == 2 and f"orderid::{value}" in rows[1], out
    assert max(len(row) for row in rows) > 100
    shown = PLAIN.sub("", ok("show", "orderflow", value, cwd=project, env=colour_env()).out)
    assert f"orderid::{value}" in shown


FILL = """
from heph.cli.project import find_config, import_workflows, load_project, open_storage
from heph.core.workflow import lookup
from heph.runtime.app import Hephaestus

project = load_project(find_config(None))
import_workflows(project)
app = Hephaestus(storage=open_storage(project))
for n in range({n}):
    app.start_run(lookup("orderflow"), {{"items": ["a"]}}, id=f"orderid::fill{{n}}{{'x' * 80}}")
"""


def _read_100_then_close(project: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "heph", *args], cwd=project, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace")
    return proc.wait(60), err


def test_a_reader_that_leaves_early_gets_exit_1_and_silence_on_every_path(project):
    subprocess.run([sys.executable, "-c", FILL.format(n=350)], cwd=project, env=cli_env(), check=True, timeout=120)
    for args in (["list", "--json", "--limit", "1000"], ["list", "--limit", "1000"]):
        assert len(ok(*args, cwd=project).out.encode()) > 70_000  # more than a pipe holds
        code, err = _read_100_then_close(project, *args)
        assert (code, err) == (1, ""), (args, code, err)


# -- 7: doctor ------------------------------------------------------------------------------------


def test_doctor_text_is_consistent_and_human(project):
    fresh = ok("doctor", cwd=project).out
    assert "INCOMPLETE" not in fresh and re.search(r"^index:\s+none yet", fresh, re.M) and "healthy" in fresh
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)
    assert re.search(r"^index:\s+complete$", ok("doctor", cwd=project).out, re.M)
    markers = [p for p in (project / ".heph" / "index").rglob("*") if p.is_file() and p.name != "FORMAT"]
    assert markers
    for marker in markers:
        marker.unlink()
    broken = heph("doctor", cwd=project)
    assert broken.code == 1, broken
    line = re.search(r"^index:\s+(.*)$", broken.out, re.M)
    assert line and line.group(1) == (f"{len(markers)} missing marker{'s' if len(markers) > 1 else ''} "
                                      f"(heph doctor --repair rebuilds it)"), broken
    assert "complete" not in line.group(1)
    repaired = ok("doctor", "--repair", cwd=project).out
    assert "{" not in repaired and "'" not in repaired, repaired
    assert re.search(r"^index rebuilt: 1 instance, \d+ markers? added", repaired, re.M), repaired


# -- 10: options and usage errors -------------------------------------------------------------------


def test_an_option_nothing_reads_is_a_usage_error(project):
    line = usage(heph("start", "orderflow", "o1", "-o", "legacy=true", "--context", "contexts/order42.json",
                      cwd=project))
    assert "--option legacy" in line and "orderflow" in line
    assert not (project / ".heph" / "instances").exists() or "orderid" not in str(
        list((project / ".heph" / "instances").iterdir()))
    line = usage(heph("start", "createuser", "bob", "-o", "legacy=true", "--version", "2",
                      "--context", "contexts/user.json", cwd=project))
    assert "--version" in line
    started = json.loads(ok("start", "createuser", "bob", "-o", "legacy=true", "--context", "contexts/user.json",
                            "--json", cwd=project).out)
    assert started["version"] == 1  # version_for read it


@pytest.mark.parametrize("args", [
    ["list", "--status", "bogus"], ["list", "-s", "bogus", "--json"], ["graph", "orderflow", "--format", "svg"],
    ["list", "--limit", "0"], ["list", "--bogus"], ["worker", "--interval", "x"], ["show", "a", "b", "c"],
    ["nope"], ["db", "nope"], ["storage", "copy"], ["start", "orderflow"],
])
def test_usage_errors_exit_2_in_one_style(project, args):
    run = heph(*args, cwd=project)
    usage(run)
    assert run.out == ""


# -- 11, 12: created, UTC, durations ----------------------------------------------------------------


def test_list_shows_created_in_utc_and_sorts_by_it(project):
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)
    ok("resume", "paymentflow", "pay1", "payment_confirmed", cwd=project)  # pay1 is updated last
    listed = json.loads(ok("list", "--json", cwd=project).out)["instances"]
    out = ok("list", cwd=project).out
    header = out.splitlines()[1]
    assert "created (UTC)" in header and "updated" not in header and "next due (UTC)" in header
    rows = body_rows(out)
    assert [r.split("│")[1].strip() for r in rows] == ["orderid::o1", "paymentid::pay1"]
    for row, inst in zip(rows, listed):
        assert inst["created_at"][:19].replace("T", " ") in row


def test_show_labels_every_time_utc(project):
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    out = ok("show", "paymentflow", "pay1", cwd=project).out
    assert re.search(r"^created\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", out, re.M), out
    assert re.search(r"^updated\s+.* UTC$", out, re.M)
    assert "since (UTC)" in out and "due (UTC)" in out and "finished (UTC)" in out
    assert re.search(r"\d ms │", out)


@pytest.mark.parametrize(("ms", "shown"), [(0.42, "0.4 ms"), (850.2, "850 ms"), (4606.9, "4.6 s"),
                                          (72_000, "1.2 min"), (12_600_000, "3.5 h"), (None, "-")])
def test_durations_in_the_unit_that_fits(ms, shown):
    assert text.duration(ms) == shown


def test_history_times_carry_the_date_when_it_is_not_today():
    moment = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)
    assert text.finished_time(moment, today=date(2026, 3, 4)) == "05:06:07.890"
    assert text.finished_time(moment, today=date(2026, 3, 5)) == "2026-03-04 05:06:07.890"


# -- 13: narrow terminals -------------------------------------------------------------------------


def test_a_narrow_terminal_drops_columns_instead_of_wrapping_ids(project):
    full_id = json.loads(ok("start", "notificationflow", "welcome", "--context", "contexts/notification.json",
                            "--json", cwd=project).out)["id"]
    ok("start", "fulfilment", "ship1", "--context", "contexts/fulfilment.json", cwd=project)
    env = colour_env(COLUMNS="60")
    out = PLAIN.sub("", ok("list", cwd=project, env=env).out)
    rows = body_rows(out)
    assert len(rows) == 2 and full_id in rows[1] and "shipment::ship1" in rows[0], out
    assert all(len(line) <= 60 for line in out.splitlines()), out
    assert "status" in out  # the important columns stay
    shown = PLAIN.sub("", ok("show", "fulfilment", "ship1", cwd=project, env=env).out)
    steps = [e["step"] for e in json.loads(ok("show", "fulfilment", "ship1", "--json", cwd=project).out)["history"]]
    history = shown[shown.index("history"):]
    for step in steps:
        assert re.search(rf"│ {step}\s+│", history), (step, shown)
    assert "…" not in history
    assert all(len(line) <= 60 for line in history.splitlines()), history
    wide = PLAIN.sub("", ok("list", cwd=project, env=colour_env(COLUMNS="200")).out)
    assert "created (UTC)" in wide and "version" in wide


# -- 14: metadata -------------------------------------------------------------------------------


def test_workflow_metadata_is_shown(project):
    want = {"team": "payments", "priority": "high"}
    checked = {w["name"]: w for w in json.loads(ok("check", "--json", cwd=project).out)["workflows"]}
    assert checked["orderflow"]["metadata"] == want and checked["checkout"]["metadata"] == {}
    assert json.loads(ok("graph", "orderflow", "--json", cwd=project).out)["metadata"] == want
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)
    out = ok("show", "orderflow", "o1", cwd=project).out
    assert re.search(r'^metadata\s+\{"team": "payments", "priority": "high"\}$', out, re.M), out


# -- 17: a failure said once, with its type --------------------------------------------------------


def test_a_failing_start_says_the_exception_type_once(project):
    with_module(project, "issue19flows", FLOWS)
    run = ok("start", "boom", "b1", cwd=project)
    assert run.out.strip() == "started boom::b1 (boom v1): failed in step needs_amount: KeyError: 'amount'", run
    assert run.err == "", run
    shown = ok("show", "boom", "b1", cwd=project).out
    assert "KeyError: 'amount'" in shown and "builtins.KeyError" not in shown
    stored = json.loads(ok("show", "boom", "b1", "--json", cwd=project).out)["error"]
    assert stored["type"] == "builtins.KeyError" and stored["message"] == "'amount'"  # stored as before


# -- 18: --version, -h, completion, an empty check ------------------------------------------------------


def test_version_and_short_help(project):
    from heph import __version__

    assert ok("--version", cwd=project).out == f"heph {__version__}\n"
    for args in (["-h"], ["list", "-h"], ["storage", "copy", "-h"], ["db", "-h"]):
        run = ok(*args, cwd=project)
        assert run.out.startswith("Usage: heph"), run
        assert "-h, --help" in run.out
    assert "--show-completion" in ok("--help", cwd=project).out
    script = ok("--show-completion", "bash", cwd=project).out
    assert "_HEPH_COMPLETE" in script


def test_check_with_no_workflow_warns_and_exits_0(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "nothing.py").write_text("X = 1\n", encoding="utf-8")
    (root / "heph.yaml").write_text("workflows:\n  - nothing\nstorage:\n  path: .heph\n", encoding="utf-8")
    run = ok("check", cwd=root)
    assert run.err.startswith("warning: ") and "no module that defines a workflow" in run.err, run
    assert json.loads(ok("check", "--json", cwd=root).out)["workflows"] == []
