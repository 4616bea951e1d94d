"""The pure engine: functions from (definition, instance, outcome or event, now) to a new instance.

No files, locks, printing or clock: the runtime passes ``now`` in, runs the
steps through ``execute_step`` and stores what these functions return.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Union

from heph.core.definition import Target, WorkflowDefinition
from heph.core.instance import Context, HistoryEntry, Instance, to_iso
from heph.core.jsonsafe import NotJsonSafe, to_json
from heph.core.steps import ASYNC, Error, Wait
from heph.core.validation import Problems, check_config
from heph.errors import InvalidEvent, NotCancellable, NotRetryable


@dataclass(frozen=True)
class Completed:
    """The step finished and emitted ``event``; ``targets`` are the steps it leads to."""

    event: str
    updates: dict | None = None
    metadata: dict | None = None
    targets: tuple[Target, ...] = ()


@dataclass(frozen=True)
class Paused:
    """The step returned ``ASYNC``."""


@dataclass(frozen=True)
class Failed:
    """The step failed: ``Error(reason)``, an exception, or a bad return value."""

    type: str
    message: str
    traceback: str | None = None

    def __post_init__(self) -> None:
        # A lone surrogate (say, from a file name decoded with surrogateescape) cannot be stored
        # as UTF-8, nor U+0000 in PostgreSQL, and either would make the instance unwritable:
        # keep them as their escape text, "\udcff" and "\x00".
        for name in ("type", "message", "traceback"):
            value = getattr(self, name)
            if not isinstance(value, str):
                continue
            if not value.isascii():
                value = value.encode("utf-8", "backslashreplace").decode("utf-8")
            if "\x00" in value:
                value = value.replace("\x00", "\\x00")
            object.__setattr__(self, name, value)


Outcome = Union[Completed, Paused, Failed]


# -- creating and running ----------------------------------------------------------


def new_instance(definition: WorkflowDefinition, instance_id: str, initial: dict, now: datetime, run: str) -> Instance:
    """A new run with ``start`` active (status ``pending``)."""
    start = definition.start
    return Instance(
        id=instance_id,
        workflow=definition.name,
        version=definition.version,
        status="pending",
        context=Context(initial=initial, steps={}),
        run=run,
        created_at=now,
        updated_at=now,
        active=[_entry(start.key, start.config)],
        scope=definition.unique.scope if definition.unique is not None else "workflow",
    )


def _entry(key: str, config: dict | None, attempt: int = 1, first_attempt: int | None = None) -> dict:
    return {"step": key, "config": config, "attempt": attempt, "first_attempt": first_attempt or attempt}


def next_step(instance: Instance) -> dict | None:
    """The active step to run next, or None when the instance should not run anything."""
    if instance.status in ("pending", "running") and instance.active:
        return instance.active[0]
    return None


def begin(instance: Instance, now: datetime, lease: dict | None) -> Instance:
    """Mark the instance as running (owned by ``lease``) before its steps execute."""
    out = instance.copy()
    out.status = "running"
    out.lease = lease
    out.updated_at = now
    return out


def execute_step(definition: WorkflowDefinition, instance: Instance, entry: dict) -> Outcome:
    """Run one step's ``execute`` and interpret what it returned; never raises."""
    key = entry["step"]
    step_cls = definition.steps[key]
    context = Context(initial=_plain_copy(instance.context.initial), steps=_plain_copy(instance.context.steps))
    try:
        # the step gets copies: whatever it does to them must not reach the stored state
        seen = instance.copy(context)
        result = step_cls().execute(seen, _plain_copy(entry.get("config")), context)
    except Exception as exc:  # a raising step is a failed step
        return Failed(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb.format_exc())
    return interpret(definition, key, result, context)


def _plain_copy(value):
    """A deep copy of plain JSON data (dicts, lists, scalars), faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


def interpret(definition: WorkflowDefinition, key: str, result: object, context: Context) -> Outcome:
    """Turn a return value of ``execute`` into an outcome (routing included)."""
    if result is ASYNC:
        return Paused()
    if isinstance(result, Error):
        return Failed("heph.Error", str(result.reason))
    updates: object = None
    metadata: object = None
    if isinstance(result, str):
        event = result
    elif isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[0], str):
        event, updates = result[0], result[1]
        metadata = result[2] if len(result) == 3 else None
    else:
        return Failed(
            "heph.InvalidReturn",
            f"step {key} returned {_short(result)}: expected 'event', ('event', updates), "
            f"('event', updates, metadata), ASYNC or Error(reason)",
        )
    declared = definition.events_of(key)
    if event not in declared:
        return Failed("heph.InvalidReturn",
                      f"step {key} returned event {event!r}, which it does not declare {declared}")
    for what, value in (("updates", updates), ("metadata", metadata)):
        if value is not None and not isinstance(value, dict):
            return Failed("heph.InvalidReturn", f"step {key} returned {what} {_short(value)}: {what} must be a dict")
    try:
        stored = to_json(updates) if updates is not None else None
        merged = to_json(metadata) if metadata is not None else None
    except NotJsonSafe as exc:
        return Failed("heph.NotSerializable", f"step {key} returned data that cannot be stored as JSON: {exc}")
    seen = {**context.steps, key: stored} if stored is not None else context.steps
    routed = route(definition, key, event, Context(context.initial, seen))
    if isinstance(routed, Failed):
        return routed
    return Completed(event, stored, merged, routed)  # type: ignore[arg-type]  # to_json of a dict is a dict


def route(definition: WorkflowDefinition, key: str, event: str, context: Context) -> tuple[Target, ...] | Failed:
    """The targets ``event`` of step ``key`` leads to; a ``Dynamic`` function is called here."""
    chosen = definition.routes.get(key, {}).get(event)
    if chosen is None:
        return ()
    if chosen.dynamic is None:
        return chosen.targets
    try:
        picked = chosen.dynamic(context)
    except Exception as exc:
        return Failed(
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            f"dynamic route of step {key} on {event!r} raised: {exc}",
            tb.format_exc(),
        )
    config = None
    if isinstance(picked, tuple) and len(picked) == 2:
        picked, config = picked
    for target in chosen.targets:
        if target.step is picked:
            if config is not None:
                found = Problems()
                check_config(target.step, config, found, "config")
                if found.items:
                    return Failed(
                        "heph.InvalidRoute",
                        f"dynamic route of step {key} on {event!r} returned {_short(picked)} with an invalid "
                        f"config {_short(config)}: {'; '.join(found.items)}",
                    )
            return (Target(target.key, target.step, config if config is not None else target.config),)
    allowed = ", ".join(t.step.__qualname__ for t in chosen.targets)
    return Failed(
        "heph.InvalidRoute",
        f"dynamic route of step {key} on {event!r} returned {_short(picked)}, "
        f"which is not one of its targets ({allowed})",
    )


def _short(value: object) -> str:
    text = getattr(value, "__qualname__", None) or repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def apply_outcome(
    definition: WorkflowDefinition,
    instance: Instance,
    entry: dict,
    outcome: Outcome,
    started_at: datetime,
    finished_at: datetime,
) -> Instance:
    """Record the outcome of the active step ``entry`` and move the instance on."""
    out = instance.copy()
    key = entry["step"]
    out.active = [a for a in out.active if a["step"] != key]
    duration = round((finished_at - started_at).total_seconds() * 1000, 3)
    base = {"step": key, "attempt": entry["attempt"], "started_at": started_at, "finished_at": finished_at}
    if isinstance(outcome, Completed):
        out.history.append(HistoryEntry(outcome="completed", event=outcome.event, duration_ms=duration, **base))
        if outcome.updates is not None:
            out.context.steps[key] = outcome.updates
        if outcome.metadata:
            out.runtime_metadata.update(outcome.metadata)
        _complete(definition, out, key, outcome.targets)
    elif isinstance(outcome, Paused):
        out.history.append(HistoryEntry(outcome="async", duration_ms=duration, **base))
        wait = {
            "kind": "event",
            "config": entry.get("config"),
            "attempt": entry["attempt"],
            "first_attempt": entry.get("first_attempt", entry["attempt"]),
            "since": to_iso(finished_at),
            "due_at": None,
        }
        step = definition.steps[key]
        if issubclass(step, Wait) and entry.get("config"):
            wait["kind"] = "timer"
            wait["due_at"] = to_iso(Wait.due_at(entry["config"], started_at))
        elif (deadline := getattr(step, "deadline", None)) is not None:
            wait["kind"] = "deadline"
            wait["due_at"] = to_iso(deadline.due_at(finished_at))
            wait["event"] = deadline.event
        out.waits[key] = wait
    else:
        error = {"type": outcome.type, "message": outcome.message, "traceback": outcome.traceback, "step": key}
        out.history.append(HistoryEntry(outcome="failed", duration_ms=duration, error=error, **base))
        policy = getattr(definition.steps[key], "retry", None)
        first = entry.get("first_attempt", entry["attempt"])
        failures = entry["attempt"] - first + 1
        if policy is not None and failures < policy.max_attempts:
            due = finished_at + timedelta(seconds=policy.delay(failures))
            out.waits[key] = {
                "kind": "retry",
                "config": entry.get("config"),
                "attempt": entry["attempt"] + 1,
                "first_attempt": first,
                "since": to_iso(finished_at),
                "due_at": to_iso(due),
                "last_error": {"type": outcome.type, "message": outcome.message},
            }
        else:
            out.failed = {"step": key, "config": entry.get("config"), "attempt": entry["attempt"]}
            out.error = error
    out.updated_at = finished_at
    _settle(definition, out)
    if isinstance(outcome, Paused):
        return _deliver(definition, out, key, finished_at)
    return out


def _deliver(definition: WorkflowDefinition, instance: Instance, key: str, now: datetime) -> Instance:
    """Hand the oldest buffered event that the just-paused step ``key`` declares to it."""
    accepted = definition.events_of(key)
    for n, entry in enumerate(instance.inbox):
        if entry["event"] in accepted:
            out = instance.copy()
            del out.inbox[n]
            return _resume_step(definition, out, key, entry["event"], now, entry["data"])
    return instance


def _complete(definition: WorkflowDefinition, out: Instance, key: str, targets: tuple[Target, ...]) -> None:
    if key not in out.completed:
        out.completed.append(key)
    for target in targets:
        out.arrived.setdefault(target.key, target.config)


def _settle(definition: WorkflowDefinition, out: Instance) -> None:
    """Activate each arrived join target no live branch can still reach; then set the status."""
    changed = True
    while changed:
        changed = False
        live = [a["step"] for a in out.active] + list(out.waits) + list(out.arrived)
        if out.failed:
            live.append(out.failed["step"])
        for key in list(out.arrived):
            others = [k for k in live if k != key]
            if any(key in definition.reach.get(k, ()) for k in others):
                continue
            config = out.arrived.pop(key)
            out.active.append(_entry(key, config))
            changed = True
            break
    out.status = _status(out)
    if out.status != "running":
        out.lease = None


def _status(out: Instance) -> str:
    if out.status == "cancelled":
        return "cancelled"
    if out.failed:
        return "failed"
    if out.active:
        return "running"
    if out.waits:
        return "waiting"
    return "completed"


# -- events, timers, cancel, retry ---------------------------------------------------


EVENT_WAITS = ("event", "deadline", "timer")  # the waits an event can resume (not a retry)


def resume(
    definition: WorkflowDefinition, instance: Instance, event: str, now: datetime, step: str | None = None,
    data: dict | None = None, buffer: bool = False,
) -> Instance:
    """Hand ``event`` (with ``data``, the resumed step's context entry) to the waiting step that
    declares it; ``InvalidEvent`` if none or ambiguous. With ``buffer``, an event no waiting step
    accepts yet goes to the inbox (``buffered``), if some step of the version declares it."""
    facts = {"instance_id": instance.id, "event": event, "step": step}
    if buffer:
        if not instance.is_active:
            raise InvalidEvent(f"instance {instance.id} has finished (status: {instance.status}); "
                               f"an event cannot be buffered for it", **facts)
        if event not in definition.all_events():
            raise InvalidEvent(f"no step of {instance.workflow} v{instance.version} declares {event!r}; "
                               f"nothing to buffer it for", candidates=[], **facts)
        if not accepting(definition, instance, event, step):
            return buffered(instance, event, data, now)
    if instance.status not in ("waiting", "running"):  # running: a queued event, applied between steps
        raise InvalidEvent(f"instance {instance.id} is not waiting (status: {instance.status}); nothing to resume",
                           **facts)
    eligible = {k: w for k, w in instance.waits.items() if w["kind"] in EVENT_WAITS}
    if step is not None:
        if step not in eligible:
            raise InvalidEvent(f"step {step!r} of {instance.id} is not waiting for an event; "
                               f"waiting: {_accepts(definition, eligible)}", **facts)
        if event not in definition.events_of(step):
            raise InvalidEvent(f"waiting step {step} does not accept {event!r}; "
                               f"it accepts {definition.events_of(step)}", **facts)
        candidates = [step]
    else:
        candidates = [k for k in eligible if event in definition.events_of(k)]
    if not candidates:
        raise InvalidEvent(f"no waiting step of {instance.id} accepts {event!r}; "
                           f"waiting: {_accepts(definition, eligible)}", candidates=[], **facts)
    if len(candidates) > 1:
        raise InvalidEvent(f"event {event!r} is accepted by several waiting steps of {instance.id} "
                           f"({', '.join(candidates)}): pick one with step= (CLI: --step KEY)",
                           candidates=candidates, **facts)
    return _resume_step(definition, instance, candidates[0], event, now, {} if data is None else data)


def accepting(definition: WorkflowDefinition, instance: Instance, event: str, step: str | None = None) -> list[str]:
    """The waiting steps of ``instance`` that would take ``event`` now (``step``: only that one)."""
    if instance.status not in ("waiting", "running"):
        return []
    return [k for k, w in instance.waits.items()
            if w["kind"] in EVENT_WAITS and (step is None or k == step) and event in definition.events_of(k)]


def buffered(instance: Instance, event: str, data: dict | None, now: datetime) -> Instance:
    """``instance`` with ``event`` (and its data) appended to its inbox."""
    out = instance.copy()
    out.inbox.append({"event": event, "data": {} if data is None else data, "received_at": to_iso(now)})
    out.updated_at = now
    return out


def _accepts(definition: WorkflowDefinition, waits: dict) -> str:
    if not waits:
        return "none (only retries are pending)"
    return "; ".join(f"{k} accepts {', '.join(definition.events_of(k))}" for k in waits)


def _resume_step(definition: WorkflowDefinition, instance: Instance, key: str, event: str, now: datetime,
                 data: dict | None = None) -> Instance:
    """Resume the waiting step ``key`` with ``event``; ``data`` (if not None) becomes its context entry."""
    out = instance.copy()
    wait = out.waits.pop(key)
    if data is not None:
        out.context.steps[key] = data
    since = datetime.fromisoformat(wait["since"])
    duration = round((now - since).total_seconds() * 1000, 3)
    base = {"step": key, "attempt": wait["attempt"], "started_at": since, "finished_at": now}
    routed = route(definition, key, event, out.context)
    if isinstance(routed, Failed):
        error = {"type": routed.type, "message": routed.message, "traceback": routed.traceback, "step": key}
        out.history.append(HistoryEntry(outcome="failed", event=event, duration_ms=duration, error=error, **base))
        out.failed = {"step": key, "config": wait.get("config"), "attempt": wait["attempt"]}
        out.error = error
    else:
        out.history.append(HistoryEntry(outcome="resumed", event=event, duration_ms=duration, **base))
        _complete(definition, out, key, routed)
    out.updated_at = now
    _settle(definition, out)
    return out


def due(instance: Instance, now: datetime) -> list[str]:
    """Keys of the timers and retries of ``instance`` due at ``now``."""
    if instance.status not in ("waiting", "running"):
        return []
    return [k for k, w in instance.waits.items() if w.get("due_at") and datetime.fromisoformat(w["due_at"]) <= now]


def fire_due(definition: WorkflowDefinition, instance: Instance, now: datetime) -> tuple[Instance, list[dict]]:
    """Fire every due timer (resume with ``timeout``), deadline (resume with its event) and due
    retry (re-activate the step)."""
    out = instance
    fired = []
    for key in due(instance, now):
        wait = out.waits[key]
        if wait["kind"] == "timer":
            out = _resume_step(definition, out, key, "timeout", now)
        elif wait["kind"] == "deadline":
            out = _resume_step(definition, out, key, wait.get("event", "timeout"), now)
        else:
            out = out.copy()
            out.waits.pop(key)
            out.active.append(_entry(key, wait.get("config"), wait["attempt"], wait.get("first_attempt")))
            out.updated_at = now
            _settle(definition, out)
        fired.append({"id": instance.id, "run": instance.run, "step": key, "kind": wait["kind"],
                      "due_at": wait["due_at"]})
    return out, fired


def reject(instance: Instance, event: str, step: str | None, reason: str, now: datetime) -> Instance:
    """Record a queued event that could not be applied (history outcome ``rejected``)."""
    out = instance.copy()
    out.history.append(HistoryEntry(step or "-", "rejected", event=event, finished_at=now,
                                    error={"type": "InvalidEvent", "message": reason}))
    out.updated_at = now
    return out


def cancel(instance: Instance, now: datetime) -> Instance:
    """Cancel an active instance, dropping its timers; ``NotCancellable`` once it has finished."""
    if not instance.is_active:
        raise NotCancellable(instance_id=instance.id, status=instance.status)
    out = instance.copy()
    for entry in out.active:
        out.history.append(HistoryEntry(entry["step"], "cancelled", attempt=entry["attempt"], finished_at=now))
    for key, wait in out.waits.items():
        out.history.append(HistoryEntry(key, "cancelled", attempt=wait["attempt"], finished_at=now))
    out.active, out.waits, out.arrived = [], {}, {}
    out.status = "cancelled"
    out.lease = None
    out.updated_at = now
    return out


def retry(definition: WorkflowDefinition, instance: Instance, now: datetime) -> Instance:
    """Put the failed step of a failed instance back in front, as a new series of attempts."""
    if instance.status != "failed" or not instance.failed:
        raise NotRetryable(instance_id=instance.id, status=instance.status)
    out = instance.copy()
    failed = instance.failed
    attempt = failed["attempt"] + 1
    out.active.insert(0, _entry(failed["step"], failed.get("config"), attempt, attempt))
    out.failed = None
    out.error = None
    out.updated_at = now
    _settle(definition, out)
    return out
