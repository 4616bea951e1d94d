"""Schedules (SPEC §10): definition-time checks, the slots a tick starts under each catch-up
policy (a manual clock skipping across many slots), and exactly once per slot."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

import heph
from heph import ASYNC, Done, Schedule, Step, Unique, VersionedWorkflow, Workflow, WorkflowDefinitionError
from heph.core.schedules import check_schedules, due_slots
from heph.runtime.clock import ManualClock

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)  # a Thursday


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("schedules, fragment", [
    ([Schedule("61 * * * *")], "is not valid"),
    ([Schedule("* * *")], "must have five fields"),
    ([Schedule("")], "five-field cron expression"),
    ([Schedule("0 9 * * *", value="Daily{slot}")], "not a business value"),
    ([Schedule("0 9 * * *", value="d{day}")], "the only placeholder is {slot}"),
    ([Schedule("0 9 * * *", value="x" * 130)], "at most 128"),
    ([Schedule("0 9 * * *", catchup="some")], "catchup must be one of latest, all, none"),
    ([Schedule("0 9 * * *", context=[1])], "context must be a JSON object"),
    ([Schedule("0 9 * * *", context={"at": object()})], "context"),
    ([Schedule("0 9 * * *"), Schedule("0 9 * * *")], "the same cron and value"),
    ([5], "must be a heph.Schedule"),
    (Schedule("0 9 * * *"), "must be a list"),
])
def test_bad_schedules_are_definition_errors(schedules, fragment):
    _, problems = check_schedules(schedules)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(WorkflowDefinitionError, match="schedules"):
        type("ScBad", (Workflow,), {"unique": Unique("scbad"), "start": ScTick, "transitions": {ScTick: {"ok": Done}},
                                    "schedules": schedules, "__module__": __name__})


def test_good_schedules_pass_and_names_are_stable():
    found, problems = check_schedules([Schedule("0 9 * * mon-fri", value="daily{slot}", context={"k": 1}),
                                       Schedule("*/5 * * * *", catchup="all")])
    assert problems == [] and len(found) == 2
    assert found[0].name("rep") == Schedule("0 9 * * mon-fri", value="daily{slot}").name("rep")
    assert found[0].name("rep") != found[1].name("rep")
    assert found[0].value_for(at("2026-12-07T09:00:00")) == "daily202612070900"


# -- the slots a tick starts ------------------------------------------------------------------


def test_due_slots_follow_each_catchup_policy():
    state = {"since": "2026-12-03T09:00:00+00:00", "last": None}
    now = at("2026-12-03T10:07:00")
    every15 = "*/15 * * * *"
    assert due_slots(Schedule(every15, catchup="all"), state, now) == [
        at("2026-12-03T09:15:00"), at("2026-12-03T09:30:00"), at("2026-12-03T09:45:00"), at("2026-12-03T10:00:00")]
    assert due_slots(Schedule(every15, catchup="latest"), state, now) == [at("2026-12-03T10:00:00")]
    assert due_slots(Schedule(every15, catchup="none"), state, now) == []  # 10:00 is 7 minutes late
    assert due_slots(Schedule(every15, catchup="none"), state, at("2026-12-03T10:01:00")) == [at("2026-12-03T10:00:00")]
    done = {**state, "last": "2026-12-03T10:00:00+00:00"}
    assert due_slots(Schedule(every15, catchup="all"), done, now) == []
    assert due_slots(Schedule(every15), {"since": "2026-12-03T10:00:00+00:00"}, at("2026-12-03T10:00:00")) == []


# -- through the runtime, with a manual clock ---------------------------------------------------


class ScTick(Step):
    events = ["ok"]
    key = "sc_tick"

    def execute(self, instance, config, context):
        return "ok", {"kind": context.initial.get("kind")}


class ScReport(Workflow):
    unique = Unique("screp")
    name = "sc_report"
    start = ScTick
    transitions = {ScTick: {"ok": Done}}
    schedules = [Schedule("0 9 * * mon-fri", value="daily{slot}", context={"kind": "daily"}, catchup="all")]


class ScHold(Step):
    events = ["go"]
    key = "sc_hold"

    def execute(self, instance, config, context):
        return ASYNC


class ScHourly(Workflow):
    """One business value for every slot: a slot whose run is still active is skipped."""

    unique = Unique("schour")
    name = "sc_hourly"
    start = ScHold
    transitions = {ScHold: {"go": Done}}
    schedules = [Schedule("0 * * * *", value="only", catchup="latest")]


class ScAnyone(Workflow):
    unique = Unique("scany", scope="none")
    name = "sc_anyone"
    start = ScTick
    transitions = {ScTick: {"ok": Done}}
    schedules = [Schedule("30 9 * * *", value="r{slot}", catchup="latest")]


class ScV1(Workflow):
    version = 1
    start = ScTick
    transitions = {ScTick: {"ok": Done}}


class ScVersioned(VersionedWorkflow):
    unique = Unique("scver")
    name = "sc_versioned"
    versions = {1: ScV1}
    schedules = [Schedule("15 9 * * *", value="v{slot}", catchup="none")]


@pytest.fixture(params=["memory", "json"])
def app(request, tmp_path):
    store = heph.MemoryStorage() if request.param == "memory" else heph.JsonFileStorage(tmp_path / "store")
    return heph.Hephaestus(storage=store, clock=ManualClock(T0))


def scheduled(app, prefix):
    return sorted(i.id for i in app.list(limit=None) if i.id.startswith(prefix))


def test_a_new_schedule_starts_from_its_first_tick_then_each_slot_once(app):
    assert [a for a in app.tick() if a["kind"] == "schedule"] == []  # first seen: nothing before now
    app.clock.advance(hours=1)  # 09:00 Thursday
    fired = [a for a in app.tick() if a["id"].startswith("screp")]
    assert [(a["id"], a["kind"], a["slot"]) for a in fired] == [
        ("screp::daily202612030900", "schedule", "2026-12-03T09:00:00+00:00")]
    assert [a for a in app.tick() if a["id"].startswith("screp")] == []  # the same slot: never again
    run = app.get("screp::daily202612030900")
    assert run.status == "completed" and run.context.initial == {"kind": "daily"}
    assert run.runtime_metadata["schedule"]["slot"] == "2026-12-03T09:00:00+00:00"
    app.clock.advance(days=5)  # Tuesday 09:00: Friday and Monday missed, and today
    app.tick()
    assert scheduled(app, "screp") == ["screp::daily202612030900", "screp::daily202612040900",
                                       "screp::daily202612070900", "screp::daily202612080900"]
    shown = {s["workflow"]: s for s in app.schedules()}["sc_report"]
    assert shown["last"] == "2026-12-08T09:00:00+00:00" and shown["next"] == "2026-12-09T09:00:00+00:00"


def test_catchup_latest_and_none_after_a_pause(app):
    app.tick()
    app.clock.advance(days=3, hours=2)  # Sunday 10:00
    app.tick()
    anyone = [i for i in app.list(limit=None) if i.id.startswith("scany::r202612060930::")]
    assert len(anyone) == 1  # latest only (not the 3 missed days before)
    assert scheduled(app, "scver") == []  # "none": 09:15 was 45 minutes ago
    app.clock.advance(hours=23, minutes=16)  # Monday 09:16: on time
    app.tick()
    assert scheduled(app, "scver") == ["scver::v202612070915"]


def test_a_slot_whose_id_is_still_active_is_skipped_with_a_warning(app, caplog):
    app.tick()
    app.clock.advance(hours=1)
    app.tick()
    assert app.get("schour::only").status == "waiting"
    app.clock.advance(hours=1)
    app.tick()
    assert len(app.runs("schour::only")) == 1 and "still active" in caplog.text
    app.resume("schour::only", "go")
    app.clock.advance(hours=1)
    app.tick()
    assert len(app.runs("schour::only")) == 2


class LosesTheSecondSave(heph.MemoryStorage):
    """A store whose schedule state cannot be saved once, after a slot's run was written: what
    a tick killed between the two leaves."""

    def __init__(self):
        super().__init__()
        self.saves = 0

    @contextmanager
    def schedule_session(self, name, timeout=0):
        with super().schedule_session(name, timeout) as held:
            store = self

            class Held:
                def state(self):
                    return held.state()

                def save(self, state):
                    store.saves += 1
                    if store.saves == 2 and state.get("last"):
                        raise heph.StorageError("cannot write the schedule state: [Errno 5] Input/output error")
                    held.save(state)

            yield Held()


def test_a_tick_that_fails_after_starting_a_slot_does_not_start_it_again():
    app = heph.Hephaestus(storage=LosesTheSecondSave(), clock=ManualClock(T0))
    app.tick()  # sc_hourly is first seen (save 1), and so on for the others
    app.storage.saves = 1
    app.clock.advance(hours=1)
    failed = app.tick()
    assert [f["id"] for f in failed.failed] == [ScHourly.schedules[0].name("sc_hourly")]
    assert len(app.runs("schour::only")) == 1  # the run was written, the slot not recorded
    app.resume("schour::only", "go")  # finished: a second start of the id would now succeed
    app.tick()
    assert len(app.runs("schour::only")) == 1  # the run carrying the slot counts as its start
    assert {s["workflow"]: s for s in app.schedules()}["sc_hourly"]["last"] == "2026-12-03T09:00:00+00:00"


def test_schedules_lists_every_schedule_before_any_tick(app):
    listed = {s["workflow"]: s for s in app.schedules()}
    assert {"sc_report", "sc_hourly", "sc_anyone", "sc_versioned"} <= set(listed)
    assert listed["sc_report"]["since"] is None and listed["sc_report"]["next"] == "2026-12-03T09:00:00+00:00"
    assert listed["sc_versioned"]["catchup"] == "none"


def test_a_version_module_cannot_carry_schedules():
    with pytest.raises(WorkflowDefinitionError, match="belong on the VersionedWorkflow"):
        type("ScV2", (Workflow,), {"version": 2, "start": ScTick, "transitions": {ScTick: {"ok": Done}},
                                   "schedules": [Schedule("0 9 * * *")], "__module__": __name__})


def test_catchup_all_is_capped_per_tick():
    from heph.core.schedules import MAX_SLOTS_PER_TICK

    slots = due_slots(Schedule("* * * * *", catchup="all"), {"since": "2026-01-01T00:00:00+00:00"},
                      at("2026-01-01T00:00:00") + timedelta(days=2))
    assert len(slots) == MAX_SLOTS_PER_TICK and slots[0] == at("2026-01-01T00:01:00")


@pytest.fixture(scope="module", autouse=True)
def forget_these_workflows():
    """Keep this module's schedules out of other modules' ticks (the registry is per process)."""
    yield
    from heph.core import workflow

    for name in ("sc_report", "sc_hourly", "sc_anyone", "sc_versioned"):
        workflow._REGISTRY.pop(name, None)
