"""Schedules on the command line (SPEC §10): `heph tick` processes racing on due slots start each
slot once; `heph schedules`; `heph check` shows schedules and refuses bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from cli_helpers import cli_env, make_project, ok, ok_json
from cli_helpers import heph as run_heph

from heph import Schedule

FLOWS = '''\
from heph import Done, Schedule, Step, Unique, Workflow


class Beat(Step):
    events = ["ok"]
    key = "beat"

    def execute(self, instance, config, context):
        return "ok", {"n": context.initial.get("n")}


class Minutely(Workflow):
    unique = Unique("minute")
    name = "minutely"
    start = Beat
    transitions = {Beat: {"ok": Done}}
    schedules = [Schedule(cron="* * * * *", value="m{slot}", context={"n": 1}, catchup="all")]
'''
SCHEDULE = Schedule(cron="* * * * *", value="m{slot}", context={"n": 1}, catchup="all")


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path / "shop")
    (project / "beat_flows.py").write_text(FLOWS)
    config = project / "heph.yaml"
    config.write_text(config.read_text().replace("workflows:\n", "workflows:\n  - beat_flows\n"))
    return project


def _seen_since(project, minutes: int) -> None:
    """Write the schedule's state as if a tick had first seen it ``minutes`` ago."""
    ok("list", cwd=project)  # makes the store
    directory = project / ".heph" / "schedules" / SCHEDULE.name("minutely")
    os.makedirs(directory, mode=0o700)
    since = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(second=30)
    (directory / "state.json").write_text(json.dumps({"since": since.isoformat(), "last": None}))


def test_ticks_racing_start_each_slot_exactly_once(project):
    _seen_since(project, 8)
    ticks = [subprocess.Popen([sys.executable, "-m", "heph", "tick", "--json"], cwd=project, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in ticks]
    assert all(p.returncode == 0 for p in ticks), outs
    fired = [a for out, _ in outs for a in json.loads(out)["fired"] if a["kind"] == "schedule"]
    instances = ok_json("list", "--limit", "1000", cwd=project)["instances"]
    ids = [i["id"] for i in instances if i["id"].startswith("minute::")]
    assert len(ids) == len(set(ids)) >= 8  # one run per slot, 8 or 9 slots (a minute may turn meanwhile)
    assert sorted(a["id"] for a in fired) == sorted(ids)  # and each was reported by exactly one tick
    assert all(i["status"] == "completed" for i in instances if i["id"].startswith("minute::"))
    listed = ok_json("schedules", cwd=project)["schedules"]
    mine = [s for s in listed if s["workflow"] == "minutely"]
    assert mine and mine[0]["last"] is not None and mine[0]["cron"] == "* * * * *"
    again = ok_json("tick", cwd=project)["fired"]
    assert all(a["id"] not in ids for a in again)


def test_schedules_and_check_show_the_schedules(project):
    text = ok("schedules", cwd=project).out
    assert "minutely" in text and "* * * * *" in text and "m{slot}" in text
    checked = ok_json("check", cwd=project)
    (row,) = [w for w in checked["workflows"] if w["name"] == "minutely"]
    assert row["schedules"] == [{"cron": "* * * * *", "value": "m{slot}", "catchup": "all", "context": {"n": 1}}]
    assert "schedule  minutely: cron '* * * * *'" in ok("check", cwd=project).out


def test_a_bad_schedule_is_a_definition_error_with_its_location(project):
    (project / "beat_flows.py").write_text(FLOWS.replace('cron="* * * * *"', 'cron="61 * * * *"'))
    run = run_heph("check", "--json", cwd=project)
    assert run.code == 1
    (error,) = run.json()["errors"]
    assert "beat_flows.py" in error["file"] and "cron '61 * * * *' is not valid" in error["message"]
