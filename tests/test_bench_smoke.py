"""The benchmark scripts run end to end on tiny workloads (their figures are not checked:
speed is measured in bench/, never asserted in tests). DBOS is skipped: it is an optional extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

CASES = {
    "throughput": (["--instances", "10", "--rounds", "2", "--no-dbos"],
                   ["heph JsonFileStorage", "in-place pwrite+fdatasync", "heph's system calls alone",
                    "durable writes per instance: 5.0 (1.00 per step)"]),
    "event_roundtrip": (["--instances", "5", "--repeat", "1", "--no-dbos"], ["heph JsonFileStorage"]),
    "cli_cold_start": (["--runs", "1", "--no-dbos"], ["heph show orderflow order42", "heph start orderflow"]),
    "scale": (["--sizes", "500,600", "--runs", "1"], ["list --status waiting", "tick (fires 5 due)",
                                                       "5 due timers"]),
    "ab": (["--base", "HEAD", "--instances", "5", "--rounds", "1"], ["B1 steps/s", "B2 start+resume/s"]),
    "contention": (["--procs", "1,2", "--per-process", "3", "--hot-procs", "2", "--hot-attempts", "4"],
                   ["no lost update: yes"]),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs(script, tmp_path):
    args, expected = CASES[script]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPH_")}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")  # B3 turns bytecode writing on: not into the tree
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for fragment in expected:
        assert fragment in proc.stdout, (fragment, proc.stdout[-2000:])


@pytest.mark.skipif(shutil.which("strace") is None, reason="bench/faults.py needs strace")
def test_fault_sweep_runs(tmp_path):
    """bench/faults.py --quick on `start`: the JSON report's shape (anomalies are results, not asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPH_")}
    proc = subprocess.run([sys.executable, str(BENCH / "faults.py"), "--quick", "--commands", "start", "--json",
                           "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert set(report) >= {"meta", "commands", "totals", "wall_seconds"}
    assert list(report["commands"]) == ["start"]
    start = report["commands"]["start"]
    assert start["problem"] is None
    assert start["calls_in_scope"] and sum(start["calls_total"].values()) >= sum(start["calls_in_scope"].values())
    summary = start["summary"]
    assert summary["trials"] == len(start["trials"]) >= 3
    assert set(summary["anomalies"]) == {"refused_yet_applied", "internal_error", "silent_failure",
                                         "collateral_change", "malformed_refusal", "damaged_store", "crash", "hang",
                                         "escape"}
    assert summary["ok"] + summary["refused"] + summary["maybe"] + summary["anomalous_trials"] \
        + summary["not_injected"] == summary["trials"]
    assert len(start["anomalies"]) == summary["anomalous_trials"]
    for trial in start["trials"]:
        assert trial["class"] in {"ok", "refused", "maybe", "anomaly", "not_injected"}, trial
        assert trial["errno"] == "EIO" and trial["syscall"] and trial["n"] >= 1, trial
        assert bool(trial["kinds"]) == (trial["class"] == "anomaly"), trial
        assert set(trial["kinds"]) <= set(summary["anomalies"]), trial
    for anomaly in start["anomalies"]:
        assert set(anomaly) >= {"syscall", "n", "errno", "exit", "stderr", "kinds", "call"}, anomaly
