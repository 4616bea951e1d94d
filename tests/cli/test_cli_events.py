"""Events on the command line (SPEC §6): ``resume --data/--data-file/--buffer``, deadlines fired by
``tick``, the inbox and deadlines in ``show``. Every command is the real CLI in a subprocess."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_refused, assert_same_snapshot, make_project, ok, ok_json, snapshot, wait_until_due
from cli_helpers import heph as run_heph

FLOWS = '''\
from heph import ASYNC, Deadline, Done, Step, Unique, Workflow


class Pack(Step):
    events = ["packed"]
    key = "pack"

    def execute(self, instance, config, context):
        return ASYNC


class Approve(Step):
    events = ["approved", "expired"]
    key = "approve"
    deadline = Deadline(seconds=1, event="expired")

    def execute(self, instance, config, context):
        return ASYNC


class Quick(Workflow):
    unique = Unique("quick")
    name = "quickflow"
    start = Pack
    transitions = {Pack: {"packed": Approve}, Approve: {"approved": Done, "expired": Done}}
'''


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("events") / "shop")
    (project / "ev_flows.py").write_text(FLOWS)
    config = project / "heph.yaml"
    config.write_text(config.read_text().replace("workflows:\n", "workflows:\n  - ev_flows\n"))
    return project


@pytest.fixture
def project(template, tmp_path):
    import shutil

    return shutil.copytree(template, tmp_path / "shop")


def _start_payment(project, value="pay1"):
    return ok_json("start", "paymentflow", value, "--context", "contexts/payment.json", cwd=project)


def test_resume_with_data_hands_it_to_the_resumed_step(project):
    _start_payment(project)
    done = ok_json("resume", "paymentflow", "pay1", "payment_confirmed", "--data", '{"transaction_id": "tx-981"}',
                   cwd=project)
    assert done["status"] == "completed" and done["outcome"] == "resumed"
    shown = ok_json("show", "paymentflow", "pay1", cwd=project)
    assert shown["context"]["steps"]["wait_for_payment"] == {"transaction_id": "tx-981"}
    assert shown["context"]["steps"]["fulfil_order"]["transaction_id"] == "tx-981"


def test_resume_reads_data_from_a_file_and_from_stdin(project):
    _start_payment(project, "pay1")
    _start_payment(project, "pay2")
    (project / "paid.json").write_text('{"transaction_id": "tx-file"}')
    ok("resume", "paymentflow", "pay1", "payment_confirmed", "--data-file", "paid.json", cwd=project)
    ok("resume", "paymentflow", "pay2", "payment_confirmed", "--data-file", "-", cwd=project,
       stdin='{"transaction_id": "tx-stdin"}')
    for value, txn in (("pay1", "tx-file"), ("pay2", "tx-stdin")):
        shown = ok_json("show", "paymentflow", value, cwd=project)
        assert shown["context"]["steps"]["wait_for_payment"] == {"transaction_id": txn}


@pytest.mark.parametrize("args, fragment", [
    (["--data", "[1, 2]"], "must be a JSON object"),
    (["--data", '"txn"'], "must be a JSON object"),
    (["--data", "{not json"], "is not valid JSON"),
    (["--data", '{"a": NaN}'], "is not valid JSON"),
    (["--data-file", "missing.json"], "cannot read event data file missing.json"),
])
def test_bad_event_data_is_refused_with_invalid_context_and_nothing_changes(project, args, fragment):
    _start_payment(project)
    before = snapshot(project / ".heph")
    refused = run_heph("resume", "paymentflow", "pay1", "payment_confirmed", *args, cwd=project)
    assert_refused(refused, fragment)
    as_json = run_heph("resume", "paymentflow", "pay1", "payment_confirmed", *args, "--json", cwd=project)
    assert as_json.code == 1 and json.loads(as_json.out)["error"]["code"] == "invalid_context", as_json
    assert_same_snapshot(before, snapshot(project / ".heph"), " ".join(args))


def test_data_and_data_file_together_are_refused(project):
    _start_payment(project)
    refused = run_heph("resume", "paymentflow", "pay1", "payment_confirmed", "--data", "{}", "--data-file", "-",
                       cwd=project)
    assert_refused(refused, "either --data-file or --data")


def test_a_buffered_event_is_reported_shown_and_delivered_when_its_step_pauses(project):
    ok("start", "quickflow", "q1", cwd=project)
    early = ok_json("resume", "quickflow", "q1", "approved", "--buffer", "--data", '{"by": "ann"}', cwd=project)
    assert early["outcome"] == "buffered" and early["inbox"] == 1 and early["waiting"] == ["pack"]
    text = ok("resume", "quickflow", "q1", "approved", "--buffer", cwd=project)
    assert text.out.startswith("buffered approved for quick::q1") and "2 event(s) in its inbox" in text.out
    shown = ok_json("show", "quickflow", "q1", cwd=project)
    assert [(e["event"], e["data"]) for e in shown["inbox"]] == [("approved", {"by": "ann"}), ("approved", {})]
    plain = ok("show", "quickflow", "q1", cwd=project)
    assert "inbox (buffered events)" in plain.out and '{"by": "ann"}' in plain.out
    done = ok_json("resume", "quickflow", "q1", "packed", cwd=project)
    assert done["status"] == "completed"
    shown = ok_json("show", "quickflow", "q1", cwd=project)
    assert shown["context"]["steps"]["approve"] == {"by": "ann"}
    assert [e["data"] for e in shown["inbox"]] == [{}]


def test_without_buffer_an_early_event_is_refused_as_before(project):
    ok("start", "quickflow", "q1", cwd=project)
    before = snapshot(project / ".heph")
    assert_refused(run_heph("resume", "quickflow", "q1", "approved", cwd=project), "no waiting step")
    assert_refused(run_heph("resume", "quickflow", "q1", "nope", "--buffer", cwd=project), "declares 'nope'")
    assert_same_snapshot(before, snapshot(project / ".heph"))


def test_a_deadline_is_shown_as_the_waits_due_time_and_fired_by_tick(project):
    ok("start", "quickflow", "q1", cwd=project)
    waiting = ok_json("resume", "quickflow", "q1", "packed", cwd=project)
    assert waiting["status"] == "waiting" and waiting["next_due_at"]
    shown = ok_json("show", "quickflow", "q1", cwd=project)
    assert shown["waits"]["approve"]["kind"] == "deadline" and shown["waits"]["approve"]["event"] == "expired"
    assert "deadline (expired)" in ok("show", "quickflow", "q1", cwd=project).out
    wait_until_due(waiting)
    ticked = ok_json("tick", cwd=project)
    assert [(f["id"], f["kind"]) for f in ticked["fired"]] == [("quick::q1", "deadline")]
    done = ok_json("show", "quickflow", "q1", cwd=project)
    assert done["status"] == "completed"
    assert [h["event"] for h in done["history"] if h["step"] == "approve"] == [None, "expired"]


def test_an_event_before_the_deadline_drops_it(project):
    ok("start", "quickflow", "q1", cwd=project)
    waiting = ok_json("resume", "quickflow", "q1", "packed", cwd=project)
    ok("resume", "quickflow", "q1", "approved", cwd=project)
    wait_until_due(waiting)
    assert ok_json("tick", cwd=project)["fired"] == []
