"""``Hephaestus``: the runtime that runs workflow instances against a storage adapter."""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from heph.core import engine, uniqueness
from heph.core.current import current_app, use
from heph.core.definition import WorkflowDefinition
from heph.core.ids import build_id, new_suffix, parse_id
from heph.core.instance import STATUSES, Instance
from heph.core.jsonsafe import to_json
from heph.core.steps import Done
from heph.core.workflow import Facade, lookup
from heph.errors import (
    AmbiguousInstance,
    HephError,
    InstanceBusy,
    InstanceNotFound,
    InvalidContext,
    InvalidEvent,
    InvalidId,
    InvalidQuery,
    InvalidVersion,
    MaybeApplied,
    NotJsonSafe,
    StorageError,
    UnknownWorkflow,
)
from heph.runtime.clock import SystemClock
from heph.runtime.storage.base import Session, Storage
from heph.runtime.telemetry import emit, listening

__all__ = ["Delivery", "Hephaestus", "check_context", "current_app", "new_run_id", "pick_run", "use"]

log = logging.getLogger("heph")

MAX_CONTEXT_BYTES = 2 * 1024 * 1024


_last_run = {"at": datetime.min.replace(tzinfo=timezone.utc)}
_run_lock = threading.Lock()


def new_run_id(now: datetime, after: str | None = None) -> str:
    """A run id that sorts by creation time: ``20261126T001712123456-a1b2c3``.

    Ids made by one process strictly increase, even when the clock stands still
    (``ManualClock``) or repeats a reading, and each sorts after ``after`` (the id's newest run,
    read under its lock), even after the clock jumped back: "newest first" follows the order
    the runs were made in, not the wall clock.
    """
    moment = now.astimezone(timezone.utc)
    if after is not None and (floor := _stamp_of(after)) is not None and moment <= floor:
        moment = floor + timedelta(microseconds=1)
    with _run_lock:
        if moment <= _last_run["at"]:
            moment = _last_run["at"] + timedelta(microseconds=1)
        _last_run["at"] = moment
    return f"{moment:%Y%m%dT%H%M%S%f}-{os.urandom(3).hex()}"


def _stamp_of(run: str) -> datetime | None:
    """The creation time a run id starts with (None if it does not start with one)."""
    try:
        return datetime.strptime(run[:22], "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def check_context(context: object, what: str = "the start context") -> dict:
    """The start context (or an event's data: ``what``) as plain JSON data, or
    ``InvalidContext`` saying what is wrong: a JSON object, JSON-safe, at most 2 MB encoded."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise InvalidContext(f"{what} must be a JSON object (a dict), got {type(context).__name__}")
    try:
        plain = to_json(context)
    except NotJsonSafe as exc:
        raise InvalidContext(f"{what} is not JSON-serialisable: {exc}") from None
    if len(json.dumps(plain, ensure_ascii=False).encode("utf-8", "surrogatepass")) > MAX_CONTEXT_BYTES:
        raise InvalidContext(f"{what} is larger than {MAX_CONTEXT_BYTES // (1024 * 1024)} MB of JSON")
    return plain  # type: ignore[return-value]


def _payload(instance: Instance, **extra: Any) -> dict:
    return {"instance_id": instance.id, "run": instance.run, "workflow": instance.workflow,
            "version": instance.version, "status": instance.status, **extra}


def _emit_outcome(instance: Instance, outcome: engine.Outcome, key: str, attempt: int, took: timedelta) -> None:
    """The telemetry events of one step's outcome."""
    info = {"step": key, "attempt": attempt, "duration_ms": round(took.total_seconds() * 1000, 3)}
    if isinstance(outcome, engine.Completed):
        emit("step.stop", _payload(instance, event=outcome.event, **info))
        emit("workflow.transition",
             _payload(instance, event=outcome.event, to=[t.key for t in outcome.targets], **info))
    elif isinstance(outcome, engine.Paused):
        emit("step.async", _payload(instance, **info))
    else:
        emit("step.exception", _payload(instance, error=outcome.type, message=outcome.message, **info))


class Hephaestus:
    """Starts, resumes, inspects, cancels, retries and ticks workflow instances.

    Every state change is one durable write of the instance under its lock;
    steps run at least once (a step interrupted by a crash runs again). A command
    resolves its target once (the id parsed, the workflow looked up, the id's runs read
    under its lock) and reads the clock once for the change it makes.
    """

    def __init__(self, storage: Storage | None = None, clock: Any = None, lock_timeout: float | None = None):
        if storage is None:
            from heph.runtime.storage.jsonfile import JsonFileStorage

            storage = JsonFileStorage(".heph")
        self.storage = storage
        self.clock = clock or SystemClock()
        self.lock_timeout = lock_timeout

    # -- resolving what a command names -------------------------------------------------

    def workflow(self, workflow: Any) -> type[Facade]:
        """The workflow class ``workflow`` names (a class, or a registered name);
        ``UnknownWorkflow`` if there is none."""
        if isinstance(workflow, type) and issubclass(workflow, Facade) and hasattr(workflow, "__heph_versions__"):
            return workflow
        cls = lookup(workflow) if isinstance(workflow, str) else None
        if cls is None:
            raise UnknownWorkflow(workflow=workflow)
        return cls

    def definition_of(self, instance: Instance) -> WorkflowDefinition:
        """The definition an instance runs with: its workflow at its version."""
        return self.workflow(instance.workflow).definition(instance.version)

    def _name(self, workflow: Any) -> str | None:
        return None if workflow is None else self.workflow(workflow).__heph_workflow_name__

    def _lease(self, now: datetime) -> dict:
        return {"pid": os.getpid(), "host": os.uname().nodename, "since": now.isoformat()}

    @contextmanager
    def _existing(self, instance_id: str, workflow: Any) -> Iterator[tuple[Session, Instance]]:
        """A session on an existing id and the run the command means (``pick_run``).

        The id is parsed and the workflow resolved once, and the id's runs are read once,
        under the lock; an unknown id raises ``InstanceNotFound`` and leaves nothing behind."""
        parse_id(instance_id)
        name = self._name(workflow)
        with self.storage.session(instance_id, self.lock_timeout, must_exist=True) as session:
            yield session, pick_run(session.runs(), instance_id, name)

    # -- running ------------------------------------------------------------------

    def _drive(self, session: Session, definition: WorkflowDefinition, instance: Instance, trigger: str,
               opening: Iterable[tuple[str, dict]] = (), *, saved: bool = False, new: bool = False) -> Instance:
        """Run active steps until the instance completes, fails or waits; return it, written.

        A step's result is written before the next step runs, so a crash re-runs at most the
        step it interrupted. The change that opened the segment (a start, an accepted event, a
        fired timer, a retry) rides on the first of those writes: until it is written the
        command is not acknowledged, and a crash leaves the run as it was (a start leaves
        nothing), so running the command again is safe. ``saved``: the instance is already
        stored as it is; ``new``: the run is not stored yet (its first write inserts it).

        One call is one *segment* (telemetry ``segment.start``/``segment.stop``, with ``trigger``:
        start, resume, timer, retry, recover); ``opening`` events are emitted right after its start.
        """
        if listening():  # payloads are built only for someone to read them
            emit("segment.start", _payload(instance, trigger=trigger))
            for name, payload in opening:
                emit(name, payload)
        lease = instance.lease
        ran = False  # a step ran since the last write
        wrote = False  # this segment has written (its change is applied, at least in part)

        def save() -> None:
            nonlocal new, saved, ran, wrote
            try:
                (session.insert if new else session.update)(instance)
            except StorageError as exc:
                if not wrote or isinstance(exc, MaybeApplied):
                    raise
                raise MaybeApplied(instance_id=instance.id, reason=f"a later write failed: {exc}") from exc
            new, saved, ran, wrote = False, True, False, True

        while (entry := engine.next_step(instance)) is not None:
            key = entry["step"]
            if ran and not issubclass(definition.steps[key], Done):
                # Done runs no user code: the write after it is enough (a crash re-runs Done)
                save()
            instance = self._run_step(definition, instance, entry)
            if instance.status == "running":
                instance.lease = lease
            ran, saved = True, False
        if not saved:
            save()
        if listening():
            self._emit_end(instance)
            emit("segment.stop", _payload(instance, trigger=trigger))
        return instance

    def _run_step(self, definition: WorkflowDefinition, instance: Instance, entry: dict) -> Instance:
        """Execute one active step and apply its outcome (telemetry and a warning on failure)."""
        key = entry["step"]
        if listening():
            emit("step.start", _payload(instance, step=key, attempt=entry["attempt"]))
        started = self.clock.now()
        outcome = engine.execute_step(definition, instance, entry)
        finished = self.clock.now()
        before = instance
        instance = engine.apply_outcome(definition, before, entry, outcome, started, finished)
        if not isinstance(outcome, engine.Failed) and (why := self.storage.unstorable(instance)) is not None:
            # acknowledging a run the store could never give back would lose it: the step fails
            outcome = engine.Failed("heph.Unstorable", f"step {key} returned data the store cannot keep: {why}")
            instance = engine.apply_outcome(definition, before, entry, outcome, started, finished)
        if isinstance(outcome, engine.Failed):
            log.warning("step %s of %s failed (attempt %s): %s", key, instance.id, entry["attempt"], outcome.message)
        if listening():
            _emit_outcome(instance, outcome, key, entry["attempt"], finished - started)
        return instance

    def _emit_end(self, instance: Instance) -> None:
        if instance.status in ("completed", "cancelled"):
            emit("workflow.stop", _payload(instance, duration_ms=_ms(instance.created_at, instance.updated_at)))
        elif instance.status == "failed":
            emit("workflow.exception", _payload(instance, error=(instance.error or {}).get("type"),
                                                message=(instance.error or {}).get("message")))

    def _recover(self, session: Session, instance: Instance, now: datetime) -> Instance:
        """Finish the steps of a run left pending/running by a process that died (at-least-once)."""
        if instance.status not in ("pending", "running"):
            return instance
        owner = instance.lease or {}
        log.warning(
            "instance %s was interrupted (owner pid %s on %s); running its active steps again",
            instance.id, owner.get("pid"), owner.get("host"),
        )
        resumed = engine.begin(instance, now, self._lease(now))
        return self._drive(session, self.definition_of(resumed), resumed, "recover", saved=True)

    # -- the API --------------------------------------------------------------------

    def start(self, workflow: Any, value: str, context: dict | None = None, *,
              version: int | None = None, **options: Any) -> str:
        """Start ``workflow`` for business ``value`` (facade form); returns the instance id."""
        cls = self.workflow(workflow)
        instance_id = build_id(cls.__heph_unique__.key, value)  # scope none: a suffix is added
        return self._start(cls, context, instance_id, version, options).id

    def start_instance(self, workflow: Any, context: dict | None = None, *, id: str,
                       version: int | None = None, options: dict | None = None) -> str:
        """Start an instance with the full ``id``; run its synchronous steps; return the id.

        ``AlreadyRunning`` if an active instance holds the id in the workflow's uniqueness scope.
        """
        return self._start(self.workflow(workflow), context, id, version, options).id

    def start_run(self, workflow: Any, context: dict | None = None, *, id: str,
                  version: int | None = None, options: dict | None = None) -> Instance:
        """``start_instance``, returning the new run as written rather than its id (no re-read)."""
        return self._start(self.workflow(workflow), context, id, version, options)

    def _start(self, cls: type[Facade], context: dict | None, instance_id: str, version: int | None,
               options: dict | None) -> Instance:
        """The one path of every start: check the id, context and version, then create the run
        and run its synchronous steps under the id's lock (uniqueness checked there)."""
        instance_id = _id_for(cls, instance_id)
        initial = check_context(context)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidVersion(f"version must be an int, got {version!r}", version=version)
        definition = cls.definition(cls.resolve_version(version, options or {}))
        now = self.clock.now()
        with self.storage.session(instance_id, self.lock_timeout) as session:
            runs = session.runs()
            fresh = engine.new_instance(definition, instance_id, initial, now,
                                        new_run_id(now, runs[0].run if runs else None))
            if (why := self.storage.unstorable(fresh)) is not None:
                raise InvalidContext(f"the start context cannot be stored: {why}")
            instance = engine.begin(fresh, now, self._lease(now))
            uniqueness.check(instance, runs)
            return self._drive(session, definition, instance, "start", [("workflow.start", _payload(instance))],
                               new=True)

    def resume(self, instance_id: str, event: str, data: dict | None = None, *, step: str | None = None,
               buffer: bool = False, workflow: Any = None) -> Instance:
        """Hand ``event`` to the waiting step that declares it; returns the updated instance.

        ``data`` (a JSON object, at most 2 MB; ``InvalidContext`` otherwise) becomes the resumed
        step's entry in ``context.steps`` (``{}`` without data). ``InvalidEvent`` (and nothing
        written) if the instance is not waiting or no waiting step accepts ``event`` — unless
        ``buffer``: then an event that some step of the instance's version declares is kept in
        its inbox (``Instance.inbox``) and delivered when such a step pauses.
        """
        return self.deliver(instance_id, event, data, step=step, buffer=buffer, workflow=workflow).instance

    def deliver(self, instance_id: str, event: str, data: dict | None = None, *, step: str | None = None,
                buffer: bool = False, workflow: Any = None) -> Delivery:
        """``resume``, saying what became of the event: ``Delivery(instance, outcome)``, outcome
        ``"resumed"`` (a waiting step took it) or ``"buffered"`` (kept in the inbox)."""
        if not isinstance(event, str) or not event:
            raise InvalidEvent(f"invalid event {event!r}: give the event name as a non-empty string",
                               instance_id=instance_id, event=event)
        plain = check_context(data, "the event data")
        with self._existing(instance_id, workflow) as (session, instance):
            now = self.clock.now()
            instance = self._recover(session, instance, now)
            definition = self.definition_of(instance)
            resumed = engine.resume(definition, instance, event, now, step, plain, buffer)
            if plain and (why := self.storage.unstorable(resumed)) is not None:
                raise InvalidContext(f"the event data cannot be stored: {why}")
            if len(resumed.inbox) > len(instance.inbox):  # buffered: nothing runs now
                session.update(resumed)
                return Delivery(resumed, "buffered")
            if resumed.status == "running":
                resumed = engine.begin(resumed, now, self._lease(now))
            opening = [("step.resume", _payload(resumed, step=resumed.history[-1].step, event=event))]
            return Delivery(self._drive(session, definition, resumed, "resume", opening), "resumed")

    def get(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """The active run of ``instance_id`` (else its newest run); ``InstanceNotFound`` if none."""
        parse_id(instance_id)
        return pick_run(self.storage.runs(instance_id), instance_id, self._name(workflow))

    def runs(self, instance_id: str, *, workflow: Any = None) -> builtins.list[Instance]:
        """Every run of ``instance_id`` (finished ones included), newest first."""
        parse_id(instance_id)
        name = self._name(workflow)
        return [r for r in self.storage.runs(instance_id) if name is None or r.workflow == name]

    def list(self, *, workflow: Any = None, status: str | None = None, status_in: Iterable[str] | None = None,
             id: str | None = None, version: int | None = None, limit: int | None = None) -> builtins.list[Instance]:
        """Instances matching every given filter, newest first."""
        statuses: set[str] | None = None
        if status is not None:
            statuses = {status}
        if status_in is not None:
            statuses = set(status_in) if statuses is None else statuses & set(status_in)
        for s in statuses or ():
            if s not in STATUSES:
                raise InvalidQuery(f"unknown status {s!r}; use one of {', '.join(STATUSES)}")
        if id is not None:
            parse_id(id)
        return self.storage.query(statuses=statuses, workflow=self._name(workflow), instance_id=id,
                                  version=version, limit=limit)

    def cancel(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """Cancel the active run of ``instance_id``, dropping its timers; ``NotCancellable`` once finished."""
        with self._existing(instance_id, workflow) as (session, instance):
            cancelled = engine.cancel(instance, self.clock.now())
            session.update(cancelled)
        self._emit_end(cancelled)
        return cancelled

    def retry(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """Re-run a failed instance from its failed step; ``NotRetryable`` if it has not failed."""
        with self._existing(instance_id, workflow) as (session, instance):
            now = self.clock.now()
            definition = self.definition_of(instance)
            retried = engine.begin(engine.retry(definition, instance, now), now, self._lease(now))
            uniqueness.check(retried, session.runs())
            return self._drive(session, definition, retried, "retry")

    def tick(self) -> Ticked:
        """Fire every due timer and retry, and finish runs interrupted by a dead process.

        Returns one dict per action (``id``, ``run``, ``step``, ``kind``: timer/retry/recovered),
        as a list whose ``failed`` attribute lists the runs whose due work could not be written
        (``id``, ``run``, ``code``, ``error``; ``code`` ``may_have_been_applied`` when the write may
        have reached the store). Runs busy in another process are skipped (the next tick gets
        them), and so is a run that cannot be read or handled (corrupt, or its workflow no longer
        defined), with a warning: one bad instance never stops the others.
        """
        done = Ticked()
        for ref in self.storage.interrupted():
            self._one(done, ref, lambda ref=ref: self._recover_one(ref.id, ref.run))
        now = self.clock.now()
        for ref in self.storage.due_batches(now):
            self._one(done, ref, lambda ref=ref: self._fire_one(ref.id, ref.run, now))
        for action in done:
            log.info("tick: %s %s of %s", action["kind"], action["step"], action["id"])
        return done

    @staticmethod
    def _one(done: Ticked, ref: Any, work: Any) -> None:
        """Do one run's due work, sorting what goes wrong into skipped (busy, unreadable) and failed."""
        try:
            done.extend(work())
        except _WriteFailed as failure:
            exc = failure.error
            log.info("tick could not write %s: %s", ref.id, exc)  # in ``failed``: the caller reports it
            done.failed.append({"id": ref.id, "run": ref.run, "code": exc.code, "error": str(exc)})
        except InstanceBusy as exc:
            log.info("tick skipped %s: %s", ref.id, exc)
        except HephError as exc:  # corrupt, or a workflow/version no longer defined
            log.warning("tick skipped %s: %s", ref.id, exc)

    def _recover_one(self, instance_id: str, run: str) -> builtins.list[dict]:
        """Run the active steps of one interrupted run again, if it still is interrupted."""
        writing = False
        try:
            with self.storage.session(instance_id, timeout=0) as session:
                match = [r for r in session.runs() if r.run == run]
                if not match or match[0].status not in ("pending", "running"):
                    return []
                steps = [a["step"] for a in match[0].active]
                writing = True
                self._recover(session, match[0], self.clock.now())
        except StorageError as exc:
            if writing and not isinstance(exc, InstanceBusy):
                raise _WriteFailed(exc) from exc
            raise
        return [{"id": instance_id, "run": run, "step": ",".join(steps), "kind": "recovered"}]

    def _fire_one(self, instance_id: str, run: str, now: datetime) -> builtins.list[dict]:
        """Fire the due timers and retries of one run and run on from them."""
        writing = False
        try:
            with self.storage.session(instance_id, timeout=0) as session:
                match = [r for r in session.runs() if r.run == run]
                if not match:
                    return []
                definition = self.definition_of(match[0])
                fired_instance, fired = engine.fire_due(definition, match[0], now)
                if not fired:
                    return []
                if fired_instance.status == "running":
                    fired_instance = engine.begin(fired_instance, now, self._lease(now))
                opening = [("step.resume", _payload(fired_instance, step=f["step"], event="timeout"))
                           for f in fired if f["kind"] == "timer"]
                writing = True
                self._drive(session, definition, fired_instance, "timer" if opening else "retry", opening)
        except StorageError as exc:
            if writing and not isinstance(exc, InstanceBusy):
                raise _WriteFailed(exc) from exc
            raise
        return fired


class Delivery(NamedTuple):
    """What ``deliver`` did with an event: the instance as written, and ``outcome``
    (``"resumed"`` or ``"buffered"``)."""

    instance: Instance
    outcome: str


class Ticked(list):
    """What ``tick`` did: the actions (a list of dicts), and ``failed``, the runs it could not write."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: builtins.list[dict] = []


class _WriteFailed(Exception):
    """A run's due work failed while being written, the session's close included (not while
    being read): tick reports it as failed rather than skipped."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


def _id_for(cls: type[Facade], instance_id: str) -> str:
    """``instance_id`` checked against the workflow's key and scope (scope ``none``: a random
    suffix added when the id has none)."""
    unique = cls.__heph_unique__
    key, _, suffix = parse_id(instance_id)
    if key != unique.key:
        raise InvalidId(f"id {instance_id!r} does not use the business key {unique.key!r} of workflow "
                        f"{cls.__heph_workflow_name__}", given=instance_id)
    if unique.scope == "none" and suffix is None:
        return f"{instance_id}::{new_suffix()}"
    if unique.scope != "none" and suffix is not None:
        raise InvalidId(f"id {instance_id!r} has a suffix, but only scope 'none' workflows use "
                        f"'key::value::suffix' ids", given=instance_id)
    return instance_id


def pick_run(runs: list[Instance], instance_id: str, workflow: str | None = None) -> Instance:
    """The run of ``instance_id`` a command means: the active one, else the newest (``runs``
    newest first; ``workflow``: only that workflow's). ``InstanceNotFound`` if there is none,
    ``AmbiguousInstance`` if the id is active in several workflows and none was named."""
    if workflow is not None:
        runs = [r for r in runs if r.workflow == workflow]
    if not runs:
        raise InstanceNotFound(instance_id=instance_id, workflow=workflow)
    active = [r for r in runs if r.is_active]
    workflows = sorted({r.workflow for r in active})
    if len(workflows) > 1:
        raise AmbiguousInstance(instance_id=instance_id, workflows=workflows)
    return active[0] if active else runs[0]


def _ms(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds() * 1000, 3)
