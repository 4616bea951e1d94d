"""Schedules (SPEC §10): cron-started workflows, pure (no I/O, no clock of its own).

``Schedule(cron, value="{slot}", context=None, catchup="latest")`` on a workflow class. A
*slot* is a time the cron expression matches (UTC, to the minute); the slot's business value
is ``value`` with ``{slot}`` replaced by ``YYYYMMDDHHMM``. Cron expressions are parsed by
``cronsim`` (Healthchecks.io's evaluator: five standard fields, names such as ``mon-fri``,
``L`` and ``#``; no dependencies), never by hand.

A schedule's durable state, kept by the store (``Storage.schedule_session``), is a small dict:
``{"workflow", "cron", "value", "since", "last"}``: ``since`` when the schedule was first
seen by a tick (slots before it are never started), ``last`` the newest slot started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from heph.core.jsonsafe import json_safe_problem

CATCHUPS = ("latest", "all", "none")
MAX_SLOTS_PER_TICK = 1000  # catchup="all" starts at most this many missed slots per tick
ON_TIME = timedelta(minutes=2)  # catchup="none": a slot is missed once a tick comes later than this
SLOT_FORMAT = "%Y%m%d%H%M"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VALUE_RE = re.compile(r"[a-z0-9]{1,128}\Z")


@dataclass(frozen=True)
class Schedule:
    """Start the workflow at every time ``cron`` matches (UTC): business value ``value``
    (``{slot}`` becomes the slot's ``YYYYMMDDHHMM``), start context ``context``. After a pause
    in ticking, ``catchup`` says which missed slots start: ``"latest"`` the most recent only,
    ``"all"`` every one, ``"none"`` none (only a slot a tick reaches within 2 minutes)."""

    cron: str
    value: str = "{slot}"
    context: dict | None = field(default=None, hash=False, compare=True)
    catchup: str = "latest"

    def value_for(self, slot: datetime) -> str:
        """The business value of ``slot``."""
        return self.value.replace("{slot}", slot.strftime(SLOT_FORMAT))

    def name(self, workflow: str) -> str:
        """The schedule's stable name (its state's key): the workflow and a digest of its cron
        and value, so reordering or adding schedules keeps every state."""
        import hashlib  # here: importing heph (and every CLI start) should not pay for it

        digest = hashlib.sha256(f"{self.cron}\n{self.value}".encode()).hexdigest()[:10]
        return f"{workflow}-{digest}"


def check_schedules(raw: object) -> tuple[tuple[Schedule, ...], list[str]]:
    """Validate a workflow's ``schedules`` attribute: the schedules and every problem."""
    if raw is None or (isinstance(raw, (list, tuple)) and not raw):
        return (), []
    if not isinstance(raw, (list, tuple)):
        return (), [f"schedules must be a list of heph.Schedule, got {type(raw).__name__}"]
    problems: list[str] = []
    found: list[Schedule] = []
    seen: set[tuple[str, str]] = set()
    for n, item in enumerate(raw):
        where = f"schedules[{n}]"
        if not isinstance(item, Schedule):
            problems.append(f"{where} must be a heph.Schedule(cron, value, context, catchup), got {item!r}")
            continue
        mine = check_schedule(item)
        problems += [f"{where}: {p}" for p in mine]
        if (item.cron, item.value) in seen:
            problems.append(f"{where}: the same cron and value as an earlier schedule: remove one")
        seen.add((item.cron, item.value))
        if not mine:
            found.append(item)
    return tuple(found), problems


def check_schedule(schedule: Schedule) -> list[str]:
    """Why ``schedule`` is invalid (empty if it is valid)."""
    problems = []
    if not isinstance(schedule.cron, str) or not schedule.cron.strip():
        problems.append(f"cron must be a five-field cron expression such as '0 9 * * mon-fri', got {schedule.cron!r}")
    else:
        problem = cron_problem(schedule.cron)
        if problem:
            problems.append(problem)
    if not isinstance(schedule.value, str):
        problems.append(f"value must be a string such as 'daily{{slot}}', got {schedule.value!r}")
    else:
        others = [m.group(0) for m in _PLACEHOLDER.finditer(schedule.value) if m.group(1) != "slot"]
        sample = schedule.value.replace("{slot}", "202601010000")
        if others:
            problems.append(f"value {schedule.value!r}: the only placeholder is {{slot}}, not {others[0]}")
        elif not _VALUE_RE.match(sample):
            problems.append(f"value {schedule.value!r} gives {sample!r} for a slot, which is not a business value "
                            f"([a-z0-9]+, at most 128 characters): use lower-case letters, digits and {{slot}}")
    if schedule.context is not None:
        if not isinstance(schedule.context, dict):
            problems.append(f"context must be a JSON object (a dict) or None, got {type(schedule.context).__name__}")
        else:
            problem = json_safe_problem(schedule.context, "context")
            if problem:
                problems.append(problem)
    if schedule.catchup not in CATCHUPS:
        problems.append(f"catchup must be one of {', '.join(CATCHUPS)}, got {schedule.catchup!r}")
    return problems


def cron_problem(cron: str) -> str | None:
    """Why ``cron`` is not a five-field cron expression cronsim accepts (None if it is)."""
    from cronsim import CronSim, CronSimError

    if len(cron.split()) != 5:
        return f"cron {cron!r} must have five fields (minute hour day month weekday), not {len(cron.split())}"
    try:
        CronSim(cron, datetime(2026, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        return f"cron {cron!r} is not valid: {exc}"
    return None


def next_slot(cron: str, after: datetime) -> datetime:
    """The first slot strictly after ``after``."""
    from cronsim import CronSim

    return next(CronSim(cron, after.astimezone(timezone.utc)))


def due_slots(schedule: Schedule, state: dict, now: datetime) -> list[datetime]:
    """The slots a tick at ``now`` starts, oldest first: those after ``state``'s ``last`` (or,
    never started, after ``since``) and at or before ``now``, as ``catchup`` allows."""
    from cronsim import CronSim

    after = state.get("last") or state.get("since")
    start = (datetime.fromisoformat(after) if isinstance(after, str) else now).astimezone(timezone.utc)
    now = now.astimezone(timezone.utc)
    if schedule.catchup != "all":
        ceiling = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        latest = next(CronSim(schedule.cron, ceiling, reverse=True), None)  # the newest slot at or before now
        if latest is None or latest <= start or latest > now:
            return []
        return [latest] if schedule.catchup == "latest" or now - latest <= ON_TIME else []
    slots: list[datetime] = []
    for slot in CronSim(schedule.cron, start):
        if slot > now or len(slots) >= MAX_SLOTS_PER_TICK:
            break
        slots.append(slot)
    return slots


def slot_text(slot: datetime) -> str:
    """A slot as stored and shown (ISO 8601, UTC)."""
    return slot.astimezone(timezone.utc).isoformat()


__all__ = ["CATCHUPS", "Schedule", "check_schedule", "check_schedules", "cron_problem", "due_slots",
           "next_slot", "slot_text"]
