"""The ``heph`` command, run for real (``python -m heph`` in a subprocess) against copies of
sample_project/: every command's success path, human and ``--json`` output, config discovery,
timers/retries driven by ``tick`` and ``worker``. Refusals are in test_cli_refusals.py."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import (
    ANSI,
    SAMPLE,
    SAMPLE_WORKFLOWS,
    assert_refused,
    assert_usage_error,
    cli_env,
    heph,
    make_project,
    ok,
    ok_json,
    table_rows,
    wait_until_due,
)

SUFFIXED = re.compile(r"notification::welcome::[0-9a-f]{8}\Z")


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh copy of the sample project, for tests that change instances."""
    return make_project(tmp_path / "shop-project")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """One sample project with instances in known states, shared by read-only tests.

    Started in this order (so ``list`` shows them the other way round):
    order42 completed, pay1 waiting, user7 waiting on a 1-hour timer, bob (createuser v1)
    completed, alice (createuser v2) waiting, a notification completed.
    """
    root = make_project(tmp_path_factory.mktemp("shared") / "shop-project")
    ok("start", "orderflow", "order42", "--context", "contexts/order42.json", cwd=root)
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=root)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=root)
    ok("start", "createuser", "bob", "--context", "contexts/user.json", "--version", "1", cwd=root)
    ok("start", "createuser", "alice", "--context", "contexts/user.json", cwd=root)
    ok("start", "notificationflow", "welcome", "--context", "contexts/notification.json", cwd=root)
    return root


SHOP_NEWEST_FIRST = ["notificationflow", "createuser", "createuser", "reminderflow", "paymentflow", "orderflow"]


# -- entry points and check ---------------------------------------------------------------


def test_python_m_heph_help_lists_every_command(tmp_path):
    run = ok("--help", cwd=tmp_path)  # no project needed for --help
    assert "Usage:" in run.out
    for command in ("check", "start", "resume", "show", "list", "cancel", "retry", "graph", "tick", "worker"):
        assert re.search(rf"^\s+{command}\b", run.out, re.M), command
    assert "--iterations" not in ok("worker", "--help", cwd=tmp_path).out  # hidden option


def test_heph_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("heph")
    if not script.exists():
        pytest.skip("no heph console script next to this interpreter")
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_check_lists_all_sample_workflows(shop):
    run = ok("check", cwd=shop)
    for name in SAMPLE_WORKFLOWS:
        # piped output is not cut at 80 columns: every name whole, on its own row
        assert re.search(rf"^\W*{name}\W", run.out, re.M), name
    assert "8 workflow(s), 0 error(s)" in run.out
    assert run.err == ""


def test_check_json_shape(shop):
    data = ok_json("check", cwd=shop)
    assert set(data) == {"workflows", "errors", "ok"}
    assert data["ok"] is True and data["errors"] == []
    rows = {row["name"]: row for row in data["workflows"]}
    assert sorted(rows) == SAMPLE_WORKFLOWS
    assert rows["orderflow"]["key"] == "orderid" and rows["orderflow"]["scope"] == "workflow"
    assert rows["notificationflow"]["scope"] == "none"
    assert rows["createuser"]["versions"] == [1, 2] and rows["createuser"]["current"] == 2
    assert rows["fulfilment"]["steps"] == 11
    assert rows["orderflow"]["file"].endswith("orders.py") and rows["orderflow"]["line"] > 0


# -- config discovery ----------------------------------------------------------------------


def test_config_found_from_a_subdirectory_and_storage_is_next_to_it(project):
    run = ok("start", "orderflow", "sub1", "--context", "../contexts/order42.json", cwd=project / "shop")
    assert "orderid::sub1" in run.out and "completed" in run.out
    assert (project / ".heph").is_dir()  # storage.path is relative to heph.yaml, not to the cwd
    assert not (project / "shop" / ".heph").exists()
    listed = ok_json("list", cwd=project / "contexts")
    assert [i["id"] for i in listed["instances"]] == ["orderid::sub1"]


def test_config_option_before_the_command(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(project / "heph.yaml")
    ok("--config", config, "start", "orderflow", "cfg1", "--context-json", '{"items": ["a"]}', cwd=elsewhere)
    listed = ok_json("--config", config, "list", cwd=elsewhere)
    assert [i["id"] for i in listed["instances"]] == ["orderid::cfg1"]
    assert not (elsewhere / ".heph").exists() and (project / ".heph").is_dir()
    # a directory holding heph.yaml works too
    assert ok_json("--config", str(project), "list", cwd=elsewhere)["instances"][0]["id"] == "orderid::cfg1"


def test_heph_config_environment_variable(shop, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = ok("list", "--json", cwd=elsewhere, env=cli_env(HEPH_CONFIG=str(shop / "heph.yaml")))
    assert len(run.json()["instances"]) == len(SHOP_NEWEST_FIRST)


def test_config_option_wins_over_the_environment_variable(shop, project):
    env = cli_env(HEPH_CONFIG=str(project / "heph.yaml"))  # an empty store
    run = ok("--config", str(shop / "heph.yaml"), "list", "--json", cwd=project, env=env)
    assert len(run.json()["instances"]) == len(SHOP_NEWEST_FIRST)


# -- start ---------------------------------------------------------------------------------


def test_start_with_a_context_file_completes(shop):
    shown = ok_json("show", "orderflow", "order42", cwd=shop)
    assert shown["status"] == "completed"
    assert shown["context"]["initial"] == json.loads((SAMPLE / "contexts" / "order42.json").read_text())
    assert shown["context"]["steps"]["send_confirmation"] == {"message": "2 item(s), 4999 cents charged"}


def test_start_prints_id_and_status(project):
    run = ok("start", "orderflow", "order42", "--context", "contexts/order42.json", cwd=project)
    assert "orderid::order42" in run.out and "completed" in run.out
    assert run.out.count("\n") == 1  # one line


def test_start_with_context_from_stdin(project):
    run = ok("start", "orderflow", "o2", "--context", "-", "--json", cwd=project,
             stdin='{"items": ["x", "y", "z"], "amount": 7, "note": "h\u00e9llo \u2603"}')
    assert run.json()["status"] == "completed"
    shown = ok_json("show", "orderflow", "o2", cwd=project)
    assert shown["context"]["initial"] == {"items": ["x", "y", "z"], "amount": 7, "note": "h\u00e9llo \u2603"}
    assert shown["context"]["steps"]["send_confirmation"]["message"] == "3 item(s), 7 cents charged"


def test_start_with_inline_context_json(project):
    data = ok_json("start", "orderflow", "o3", "--context-json", '{"items": []}', cwd=project)
    assert data["id"] == "orderid::o3" and data["status"] == "completed"
    assert data["workflow"] == "orderflow" and data["version"] == 1
    history = ok_json("show", "orderflow", "o3", cwd=project)["history"]
    assert [(h["step"], h["event"]) for h in history] == [("validate_order", "invalid"), ("done", "done")]


def test_start_without_context_uses_an_empty_one(project):
    data = ok_json("start", "orderflow", "o4", cwd=project)
    assert data["status"] == "completed"
    assert ok_json("show", "orderflow", "o4", cwd=project)["context"]["initial"] == {}


def test_start_with_explicit_version(shop):
    bob = ok_json("show", "createuser", "bob", cwd=shop)
    assert (bob["version"], bob["status"]) == (1, "completed")
    alice = ok_json("show", "createuser", "alice", cwd=shop)  # current version 2 waits for e-mail verification
    assert (alice["version"], alice["status"]) == (2, "waiting")
    assert list(alice["waits"]) == ["verify_email"]


def test_start_scope_none_gets_a_random_suffix_each_time(project):
    first = ok("start", "notificationflow", "welcome", "--context", "contexts/notification.json", cwd=project)
    ids = re.findall(r"notification::welcome::[0-9a-f]{8}", first.out)
    assert ids and "completed" in first.out
    second = ok_json("start", "notificationflow", "welcome", "--context", "contexts/notification.json", cwd=project)
    assert SUFFIXED.match(second["id"]) and second["id"] != ids[0]
    shown = ok_json("show", "--id", ids[0], cwd=project)
    assert shown["id"] == ids[0] and shown["status"] == "completed"
    assert shown["context"]["steps"]["render_message"]["text"] == "Hello Alice, welcome aboard!"


def test_start_with_a_full_id(project):
    data = ok_json("start", "orderflow", "--id", "orderid::byid", "--context-json", '{"items": [1]}', cwd=project)
    assert data["id"] == "orderid::byid" and data["status"] == "completed"


def test_a_failing_step_is_not_a_refused_command(project):
    run = ok("start", "notificationflow", "oops", "--context-json", '{"template": "nope"}', cwd=project)
    assert "failed" in run.out and "render_message" in run.out and "unknown template" in run.out
    data = ok_json("start", "notificationflow", "oops", "--context-json", '{"template": "nope"}', cwd=project)
    assert data["status"] == "failed"
    assert data["error"]["step"] == "render_message" and "unknown template 'nope'" in data["error"]["message"]
    shown = ok_json("show", "--id", data["id"], cwd=project)
    assert shown["status"] == "failed" and "ValueError" in json.dumps(shown["error"])


def test_starting_a_finished_key_again_keeps_the_old_run(project):
    ok("start", "orderflow", "again", "--context-json", '{"items": ["a"]}', cwd=project)
    ok("start", "orderflow", "again", "--context-json", '{"items": []}', cwd=project)
    shown = ok_json("show", "orderflow", "again", cwd=project)
    assert len(shown["runs"]) == 2 and shown["context"]["initial"] == {"items": []}
    assert shown["runs"][0] == shown["run"]  # newest first; show picks the newest
    old = ok_json("show", "orderflow", "again", "--run", shown["runs"][1], cwd=project)
    assert old["context"]["initial"] == {"items": ["a"]}
    assert len(ok_json("list", "--id", "orderid::again", cwd=project)["instances"]) == 2


# -- resume --------------------------------------------------------------------------------


def test_resume_completes_a_waiting_instance(project):
    started = ok_json("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    assert started["status"] == "waiting" and started["waiting"] == ["wait_for_payment"]
    run = ok("resume", "paymentflow", "pay1", "payment_confirmed", cwd=project)
    assert "paymentid::pay1" in run.out and "completed" in run.out
    shown = ok_json("show", "paymentflow", "pay1", cwd=project)
    assert shown["status"] == "completed"
    assert shown["context"]["steps"]["fulfil_order"] == {"order": "order42", "paid": 4999, "transaction_id": None}
    assert shown["context"]["steps"]["wait_for_payment"] == {}  # an event without data
    assert [h["outcome"] for h in shown["history"] if h["step"] == "wait_for_payment"] == ["async", "resumed"]


def test_resume_by_full_id(project):
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    data = ok_json("resume", "--id", "paymentid::pay1", "payment_failed", cwd=project)
    assert data["status"] == "completed"
    shown = ok_json("show", "--id", "paymentid::pay1", cwd=project)
    assert shown["context"]["steps"]["release_stock"] == {"order": "order42"}


def test_resume_createuser_v2(project):
    ok("start", "createuser", "alice", "--context", "contexts/user.json", cwd=project)
    data = ok_json("resume", "createuser", "alice", "email_verified", "--step", "verify_email", cwd=project)
    assert (data["status"], data["version"]) == ("completed", 2)


# -- show ----------------------------------------------------------------------------------


def test_show_human_output(shop):
    out = ok("show", "paymentflow", "pay1", cwd=shop).out
    for fragment in ("paymentid::pay1", "status", "waiting", "wait_for_payment", "context", "history",
                     "request_payment", '"amount": 4999', "runtime metadata", "acmepay", "async"):
        assert fragment in out, fragment


def test_show_human_output_of_a_timer(shop):
    out = ok("show", "reminderflow", "user7", cwd=shop).out
    due = ok_json("show", "reminderflow", "user7", cwd=shop)["next_due_at"]
    row = next(r for r in table_rows(out) if "timer" in r)  # the waits table: step, kind, attempt, since, due
    assert row[:3] == ["wait", "timer", "1"]
    assert row[4] == f"{due[:10]} {due[11:19]}"  # the due time, to the second


def test_show_json_is_the_instance(shop):
    data = ok_json("show", "paymentflow", "pay1", cwd=shop)
    assert {"id", "workflow", "version", "status", "history", "context", "runtime_metadata", "runs"} <= set(data)
    assert data["id"] == "paymentid::pay1" and data["status"] == "waiting"
    assert data["runtime_metadata"] == {"provider": "acmepay"}
    assert data["context"]["initial"] == json.loads((SAMPLE / "contexts" / "payment.json").read_text())
    assert len(data["runs"]) == 1
    first = data["history"][0]
    assert first["step"] == "request_payment" and first["outcome"] == "completed" and first["event"] == "requested"
    assert {"attempt", "started_at", "finished_at", "duration_ms"} <= set(first)


# -- list ----------------------------------------------------------------------------------


def test_list_newest_first(shop):
    instances = ok_json("list", cwd=shop)["instances"]
    assert [i["workflow"] for i in instances] == SHOP_NEWEST_FIRST
    assert {"id", "workflow", "version", "status"} <= set(instances[0])


def test_list_human_output_keeps_every_column(shop):
    out = ok("list", cwd=shop).out  # piped: whole rows, one line each, not squeezed into 80 columns
    rows = {row[0]: row for row in table_rows(out)}
    assert len(rows) == len(SHOP_NEWEST_FIRST)
    assert rows["orderid::order42"][1:5] == ["orderflow", "1", "completed", "-"]
    assert rows["paymentid::pay1"][1:5] == ["paymentflow", "1", "waiting", "wait_for_payment"]
    assert rows["userid::alice"][1:5] == ["createuser", "2", "waiting", "verify_email"]
    assert rows["reminderid::user7"][5] != "-"  # next due
    assert "6 instance(s)" in out


def test_list_filters(shop):
    waiting = ok_json("list", "--status", "waiting", cwd=shop)["instances"]
    assert [i["id"] for i in waiting] == ["userid::alice", "reminderid::user7", "paymentid::pay1"]
    users = ok_json("list", "--workflow", "createuser", cwd=shop)["instances"]
    assert [i["id"] for i in users] == ["userid::alice", "userid::bob"]
    both = ok_json("list", "--status", "waiting", "--status", "completed", "--workflow", "createuser", cwd=shop)
    assert [(i["id"], i["status"]) for i in both["instances"]] == [("userid::alice", "waiting"), ("userid::bob", "completed")]
    limited = ok_json("list", "--limit", "2", cwd=shop)["instances"]
    assert [i["workflow"] for i in limited] == SHOP_NEWEST_FIRST[:2]
    assert ok_json("list", "--status", "cancelled", cwd=shop) == {"instances": []}
    v1 = ok_json("list", "--workflow", "createuser", "--version", "1", cwd=shop)["instances"]
    assert [i["id"] for i in v1] == ["userid::bob"]


def test_list_of_an_empty_project(project):
    assert ok_json("list", cwd=project) == {"instances": []}
    assert "0 instance(s)" in ok("list", cwd=project).out
    assert not (project / ".heph").exists()  # reading creates no storage


# -- cancel and retry ----------------------------------------------------------------------


def test_cancel_a_waiting_instance(project):
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=project)
    run = ok("cancel", "reminderflow", "user7", cwd=project)
    assert "reminderid::user7" in run.out and "cancelled" in run.out
    shown = ok_json("show", "reminderflow", "user7", cwd=project)
    assert shown["status"] == "cancelled" and shown["next_due_at"] is None
    assert [h["outcome"] for h in shown["history"]][-1] == "cancelled"
    assert_refused(heph("cancel", "reminderflow", "user7", cwd=project), "reminderid::user7", "cancelled")
    assert ok_json("tick", cwd=project) == {"fired": [], "failed": []}  # its timer is gone


def test_a_jammed_fulfilment_fails_after_its_retries_then_heph_retry_completes_it(project):
    first = ok_json("start", "fulfilment", "jam1", "--context", "contexts/fulfilment_jammed.json", cwd=project)
    assert first["status"] == "waiting" and first["next_due_at"]  # attempt 1 failed; attempt 2 is due in 1 s
    current = first
    for attempt in (2, 3):
        wait_until_due(current)
        fired = ok_json("tick", cwd=project)["fired"]
        assert [(a["kind"], a["id"], a["step"]) for a in fired] == [("retry", "shipment::jam1", "print_label")]
        current = ok_json("show", "fulfilment", "jam1", cwd=project)
        assert [h["attempt"] for h in current["history"] if h["step"] == "print_label"] == list(range(1, attempt + 1))
    assert current["status"] == "failed"
    assert current["error"]["step"] == "print_label" and "label printer jammed" in json.dumps(current["error"])

    run = ok("retry", "fulfilment", "jam1", cwd=project)
    assert "shipment::jam1" in run.out and "completed" in run.out
    shown = ok_json("show", "fulfilment", "jam1", cwd=project)
    assert shown["status"] == "completed"
    assert shown["context"]["steps"]["standard_ship"] == {"carrier": "standard", "days": 3}
    assert shown["context"]["steps"]["print_label"] == {"label": "LBL-JAM1"}
    assert_refused(heph("retry", "fulfilment", "jam1", cwd=project), "shipment::jam1", "completed")


def test_retry_by_full_id_of_a_failed_scope_none_instance(project):
    failed = ok_json("start", "notificationflow", "oops", "--context-json", '{"template": "nope"}', cwd=project)
    assert failed["status"] == "failed"
    again = ok_json("retry", "--id", failed["id"], cwd=project)  # fails again the same way
    assert again["id"] == failed["id"] and again["status"] == "failed"
    attempts = [h for h in ok_json("show", "--id", failed["id"], cwd=project)["history"] if h["step"] == "render_message"]
    assert len(attempts) == 2


# -- graph ---------------------------------------------------------------------------------


def test_graph_tree(shop):
    out = ok("graph", "fulfilment", cwd=shop).out
    for key in ("reserve_stock", "pick_items", "print_label", "notify_warehouse", "book_dock_slot", "pack",
                "express_ship", "standard_ship", "done"):
        assert key in out, key
    assert "fan-out" in out and "dynamic" in out and "join" in out


def test_graph_mermaid_and_dot(shop):
    mermaid = ok("graph", "paymentflow", "--format", "mermaid", cwd=shop).out
    assert mermaid.startswith("flowchart TD")
    assert "wait_for_payment" in mermaid and "payment_confirmed" in mermaid
    dot = ok("graph", "reminderflow", "--format", "dot", cwd=shop).out
    assert dot.startswith("digraph")
    assert '"send_welcome" -> "wait"' in dot and dot.rstrip().endswith("}")


def test_graph_marks_an_instance(shop):
    data = ok_json("graph", "paymentflow", "--instance", "pay1", cwd=shop)
    states = {node["key"]: node["state"] for node in data["nodes"]}
    assert states == {"request_payment": "completed", "wait_for_payment": "waiting", "fulfil_order": None,
                      "release_stock": None, "done": None}
    assert {"from": "wait_for_payment", "event": "payment_confirmed", "to": "fulfil_order"}.items() <= data["edges"][1].items()
    tree = ok("graph", "paymentflow", "--instance", "pay1", cwd=shop).out
    assert "[completed]" in tree and "[waiting]" in tree
    mermaid = ok("graph", "paymentflow", "--instance", "paymentid::pay1", "--format", "mermaid", cwd=shop).out
    assert "class wait_for_payment waiting" in mermaid
    # an instance keeps its version: bob is createuser v1, drawn without verify_email
    bob = ok_json("graph", "createuser", "--instance", "bob", cwd=shop)
    assert bob["version"] == 1 and "verify_email" not in [n["key"] for n in bob["nodes"]]
    assert all(n["state"] == "completed" for n in bob["nodes"])


# -- tick and worker -----------------------------------------------------------------------


def test_tick_with_nothing_due(shop):
    run = ok("tick", cwd=shop)
    assert run.out.strip().splitlines()[-1] == "fired 0"
    assert ok_json("tick", cwd=shop) == {"fired": [], "failed": []}
    assert ok_json("show", "reminderflow", "user7", cwd=shop)["status"] == "waiting"  # its timer is an hour away


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_fires_a_due_retry_and_stops_cleanly(project, stop_signal):
    start = ok_json("start", "fulfilment", "ship1", "--context", "contexts/fulfilment.json", cwd=project)
    assert start["status"] == "waiting"  # the printer jammed once; attempt 2 is due in 1 s
    proc = subprocess.Popen([sys.executable, "-m", "heph", "worker", "--interval", "0.1"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    seen = []
    try:
        while not any("shipment::ship1" in line for line in seen):
            seen.append(lines.get(timeout=20))  # the signal handler is surely installed once it has fired
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    reader.join(timeout=5)
    while not lines.empty():
        seen.append(lines.get())
    err = proc.stderr.read()
    assert proc.returncode == 0, (seen, err)
    assert "Traceback" not in err
    assert any("retry" in line and "print_label" in line for line in seen)
    assert "worker stopped" in seen[-1]
    shown = ok_json("show", "fulfilment", "ship1", cwd=project)
    assert shown["status"] == "completed"
    assert shown["context"]["steps"]["express_ship"] == {"carrier": "express", "days": 1}


def test_doctor_on_a_healthy_store(shop):
    assert ok("doctor", cwd=shop).out.strip().splitlines()[-1] == "healthy"
    data = ok_json("doctor", cwd=shop)
    assert data["healthy"] is True and data["instances"] == len(SHOP_NEWEST_FIRST) and data["corrupt"] == []


def test_worker_bounded_run(shop):
    run = ok("worker", "--interval", "0.05", "--iterations", "2", cwd=shop, timeout=30)
    assert "worker stopped after 2 tick(s), 0 fired" in run.out


# -- output hygiene ------------------------------------------------------------------------


@pytest.mark.parametrize("no_color", [None, "1"], ids=["piped", "NO_COLOR"])
def test_piped_output_has_no_ansi_codes(shop, no_color):
    env = cli_env(NO_COLOR=no_color)
    for args in (["list"], ["show", "paymentflow", "pay1"], ["graph", "paymentflow", "--instance", "pay1"],
                 ["show", "nope", "x"]):
        run = heph(*args, cwd=shop, env=env)
        assert ANSI not in run.out and ANSI not in run.err, run


def test_start_options_reach_version_for(project):
    legacy = ok_json("start", "createuser", "olga", "--option", "legacy=true", "--json", cwd=project)
    assert legacy["version"] == 1
    current = ok_json("start", "createuser", "pete", "-o", "legacy=false", "--json", cwd=project)
    assert current["version"] == 2
    assert_usage_error(heph("start", "createuser", "quinn", "--option", "legacy", cwd=project))
