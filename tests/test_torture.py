"""A short run of the crash-injection torture (bench/torture.py, bench/_torture_lib.py).

Worker processes are SIGKILLed at random moments (by the driver, mid-step, and by
themselves through HEPH_CRASH_POINTS); afterwards every instance file must be
legal, every acknowledged command durable, the index repairable to an exact
match, and every instance must complete with each interrupted step run again.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _torture_lib as torture  # noqa: E402


def test_short_torture_run_has_kills_and_no_anomalies(tmp_path):
    cfg = torture.Config(rounds=2, workers=5, instances=12, seconds=4.0, seed=7, kill_chance=0.5,
                         crash_chance=0.35, api_chance=0.35, api_seconds=2.0, settle_limit=40.0,
                         workdir=tmp_path)
    summary = torture.run_torture(cfg, say=lambda line: None)
    assert summary["anomalies"] == 0, summary["anomaly_samples"]
    assert summary["kills"] > 0, summary
    assert summary["acknowledged"] > 0, summary
    assert summary["instances"] > 0, summary
    statuses = summary["run_statuses"]
    assert statuses.get("completed", 0) > 0, summary
    assert not set(statuses) - {"completed", "cancelled", "failed"}, summary


# -- the checker itself must see broken states (else "0 anomalies" means nothing) ---------------


def _completed_doc() -> dict:
    done = [{"step": s, "outcome": "completed", "event": "x"} for s in torture.ALL_STEPS]
    return {"status": "completed", "active": [], "waits": {}, "arrived": {}, "failed": None, "error": None,
            "completed": list(torture.ALL_STEPS), "history": done, "lease": None}


def test_state_checker_accepts_a_legal_completed_run():
    assert torture.state_problems(_completed_doc()) == []


@pytest.mark.parametrize("breakage", [
    lambda d: d.update(status="finished"),
    lambda d: d.update(status="waiting"),                                   # waiting on nothing
    lambda d: d.update(active=[{"step": "join"}]),                          # completed but active
    lambda d: d.update(waits={"approve": {"kind": "event", "due_at": None}}),
    lambda d: d["history"].append({"step": "join", "outcome": "completed"}),  # join recorded twice
    lambda d: d.update(status="running"),                                   # running without a lease
    lambda d: d.update(status="failed"),                                    # failed without an error
    lambda d: d["completed"].append("join"),
    lambda d: d.update(status="pending", active=[{"step": "prepare"}], lease={"pid": 1}),
])
def test_state_checker_rejects_illegal_states(breakage):
    doc = copy.deepcopy(_completed_doc())
    breakage(doc)
    assert torture.state_problems(doc)


def test_waits_need_due_times_exactly_when_they_are_timers():
    doc = _completed_doc()
    doc.update(status="waiting", waits={"wait": {"kind": "timer", "due_at": None}})
    assert torture.state_problems(doc)
    doc["waits"] = {"wait": {"kind": "timer", "due_at": "2026-11-26T00:00:01+00:00"}}
    doc["history"] = [h for h in doc["history"] if h["step"] not in ("wait", "join", "finish", "done")]
    doc["completed"] = [s for s in doc["completed"] if s not in ("wait", "join", "finish", "done")]
    assert torture.state_problems(doc) == []
