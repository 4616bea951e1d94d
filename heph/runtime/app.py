"""``Hephaestus``: the runtime that runs workflow instances against a storage adapter."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from heph.core import engine
from heph.core.definition import WorkflowDefinition
from heph.core.ids import build_id, new_suffix, parse_id
from heph.core.instance import STATUSES, Instance
from heph.core.jsonsafe import NotJsonSafe, to_json
from heph.core.steps import Done
from heph.core.workflow import lookup
from heph.errors import (
    AlreadyRunning,
    HephError,
    InstanceNotFound,
    InvalidContext,
    InvalidId,
    InvalidVersion,
)
from heph.runtime.clock import SystemClock
from heph.runtime.storage.base import Session, Storage
from heph.runtime.telemetry import emit, listening

log = logging.getLogger("heph")

MAX_CONTEXT_BYTES = 2 * 1024 * 1024


_last_run = {"at": datetime.min.replace(tzinfo=timezone.utc)}
_run_lock = threading.Lock()


def new_run_id(now: datetime) -> str:
    """A run id that sorts by creation time: ``20261126T001712123456-a1b2c3``.

    Ids made by one process strictly increase, even when the clock stands still
    (``ManualClock``) or repeats a reading, so "newest first" stays well defined.
    """
    moment = now.astimezone(timezone.utc)
    with _run_lock:
        if moment <= _last_run["at"]:
            moment = _last_run["at"] + timedelta(microseconds=1)
        _last_run["at"] = moment
    return f"{moment:%Y%m%dT%H%M%S%f}-{os.urandom(3).hex()}"


def check_context(context: object) -> dict:
    """The start context as plain JSON data, or ``InvalidContext`` saying what is wrong."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise InvalidContext(f"the start context must be a JSON object (a dict), got {type(context).__name__}")
    try:
        plain = to_json(context)
    except NotJsonSafe as exc:
        raise InvalidContext(f"the start context is not JSON-serialisable: {exc}") from None
    if len(json.dumps(plain, ensure_ascii=False).encode("utf-8", "surrogatepass")) > MAX_CONTEXT_BYTES:
        raise InvalidContext(f"the start context is larger than {MAX_CONTEXT_BYTES // (1024 * 1024)} MB of JSON")
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
    steps run at least once (a step interrupted by a crash runs again).
    """

    def __init__(self, storage: Storage | None = None, clock: Any = None, lock_timeout: float | None = None):
        if storage is None:
            from heph.runtime.storage.jsonfile import JsonFileStorage

            storage = JsonFileStorage(".heph")
        self.storage = storage
        self.clock = clock or SystemClock()
        self.lock_timeout = lock_timeout

    # -- helpers -----------------------------------------------------------------

    def _workflow(self, workflow: Any) -> type:
        if isinstance(workflow, type) and hasattr(workflow, "__heph_versions__"):
            return workflow
        cls = lookup(workflow) if isinstance(workflow, str) else None
        if cls is None:
            raise HephError(
                f"unknown workflow {workflow!r}: define it, and list its module in heph.yaml's workflows"
            )
        return cls

    def _definition(self, instance: Instance) -> WorkflowDefinition:
        return self._workflow(instance.workflow).definition(instance.version)

    def _lease(self) -> dict:
        return {"pid": os.getpid(), "host": os.uname().nodename, "since": self.clock.now().isoformat()}

    def _session(self, instance_id: str, timeout: float | None = None):
        return self.storage.session(instance_id, self.lock_timeout if timeout is None else timeout)

    def _existing(self, instance_id: str, workflow: Any) -> None:
        """``InvalidId``/``InstanceNotFound`` before a session is opened, so a refused
        command on an unknown id leaves nothing behind (not even a lock file). Only whether
        runs exist is asked here; the session reads them (once)."""
        parse_id(instance_id)
        name = self._name(workflow)
        if not self.storage.exists(instance_id):
            pick_run([], instance_id, name)

    def _name(self, workflow: Any) -> str | None:
        return None if workflow is None else self._workflow(workflow).__heph_workflow_name__

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
        lease = instance.lease or self._lease()
        ran = False  # a step ran since the last write

        def save() -> None:
            nonlocal new, saved, ran
            (session.insert if new else session.update)(instance)
            new, saved, ran = False, True, False

        while (entry := engine.next_step(instance)) is not None:
            key = entry["step"]
            if ran and not issubclass(definition.steps[key], Done):
                # Done runs no user code: the write after it is enough (a crash re-runs Done)
                save()
            if listening():
                emit("step.start", _payload(instance, step=key, attempt=entry["attempt"]))
            started = self.clock.now()
            outcome = engine.execute_step(definition, instance, entry)
            finished = self.clock.now()
            instance = engine.apply_outcome(definition, instance, entry, outcome, started, finished)
            if instance.status == "running":
                instance.lease = lease
            ran, saved = True, False
            if isinstance(outcome, engine.Failed):
                log.warning("step %s of %s failed (attempt %s): %s", key, instance.id, entry["attempt"], outcome.message)
            if listening():
                _emit_outcome(instance, outcome, key, entry["attempt"], finished - started)
        if not saved:
            save()
        if listening():
            self._emit_end(instance)
            emit("segment.stop", _payload(instance, trigger=trigger))
        return instance

    def _emit_end(self, instance: Instance) -> None:
        if instance.status in ("completed", "cancelled"):
            emit("workflow.stop", _payload(instance, duration_ms=_ms(instance.created_at, instance.updated_at)))
        elif instance.status == "failed":
            emit("workflow.exception", _payload(instance, error=(instance.error or {}).get("type"),
                                                message=(instance.error or {}).get("message")))

    def _recover(self, session: Session, instance: Instance) -> Instance:
        """Finish the steps of a run left pending/running by a process that died (at-least-once)."""
        if instance.status not in ("pending", "running"):
            return instance
        owner = instance.lease or {}
        log.warning(
            "instance %s was interrupted (owner pid %s on %s); running its active steps again",
            instance.id, owner.get("pid"), owner.get("host"),
        )
        resumed = engine.begin(instance, self.clock.now(), self._lease())
        return self._drive(session, self._definition(resumed), resumed, "recover", saved=True)

    # -- the API --------------------------------------------------------------------

    def start(self, workflow: Any, value: str, context: dict | None = None, *,
              version: int | None = None, **options: Any) -> str:
        """Start ``workflow`` for business ``value`` (facade form); returns the instance id."""
        cls = self._workflow(workflow)
        instance_id = build_id(cls.__heph_unique__.key, value)  # scope none: start_run adds a suffix
        return self.start_run(cls, context, id=instance_id, version=version, options=options).id

    def start_instance(self, workflow: Any, context: dict | None = None, *, id: str,
                       version: int | None = None, options: dict | None = None) -> str:
        """Start an instance with the full ``id``; run its synchronous steps; return the id.

        ``AlreadyRunning`` if an active instance holds the id in the workflow's uniqueness scope.
        """
        return self.start_run(workflow, context, id=id, version=version, options=options).id

    def start_run(self, workflow: Any, context: dict | None = None, *, id: str,
                  version: int | None = None, options: dict | None = None) -> Instance:
        """``start_instance``, returning the new run as written rather than its id (no re-read)."""
        cls = self._workflow(workflow)
        unique = cls.__heph_unique__
        key, _, suffix = parse_id(id)
        if key != unique.key:
            raise InvalidId(f"id {id!r} does not use the business key {unique.key!r} of workflow {cls.__heph_workflow_name__}")
        if unique.scope == "none" and suffix is None:
            id = f"{id}::{new_suffix()}"
        elif unique.scope != "none" and suffix is not None:
            raise InvalidId(f"id {id!r} has a suffix, but only scope 'none' workflows use 'key::value::suffix' ids")
        initial = check_context(context)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidVersion(f"version must be an int, got {version!r}")
        definition = cls.definition(cls.resolve_version(version, options or {}))
        now = self.clock.now()
        instance = engine.begin(engine.new_instance(definition, id, initial, now, new_run_id(now)), now, self._lease())
        with self._session(id) as session:
            _check_unique(session.runs(), unique.scope, definition)
            return self._drive(session, definition, instance, "start", [("workflow.start", _payload(instance))],
                               new=True)

    def resume(self, instance_id: str, event: str, *, step: str | None = None, workflow: Any = None) -> Instance:
        """Hand ``event`` to the waiting step that declares it; returns the updated instance.

        ``InvalidEvent`` (and nothing written) if the instance is not waiting or no waiting step
        accepts ``event``.
        """
        if not isinstance(event, str) or not event:
            raise HephError(f"invalid event {event!r}: give the event name as a non-empty string")
        self._existing(instance_id, workflow)
        with self._session(instance_id) as session:
            instance = self._recover(session, pick_run(session.runs(), instance_id, self._name(workflow)))
            definition = self._definition(instance)
            resumed = engine.resume(definition, instance, event, self.clock.now(), step)
            if resumed.status == "running":
                resumed = engine.begin(resumed, self.clock.now(), self._lease())
            opening = [("step.resume", _payload(resumed, step=resumed.history[-1].step, event=event))]
            return self._drive(session, definition, resumed, "resume", opening)

    def get(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """The active run of ``instance_id`` (else its newest run); ``InstanceNotFound`` if none."""
        parse_id(instance_id)
        return pick_run(self.storage.runs(instance_id), instance_id, self._name(workflow))

    def runs(self, instance_id: str, *, workflow: Any = None) -> list[Instance]:
        """Every run of ``instance_id`` (finished ones included), newest first."""
        parse_id(instance_id)
        name = self._name(workflow)
        return [r for r in self.storage.runs(instance_id) if name is None or r.workflow == name]

    def list(self, *, workflow: Any = None, status: str | None = None, status_in: Iterable[str] | None = None,
             id: str | None = None, version: int | None = None, limit: int | None = None) -> list[Instance]:
        """Instances matching every given filter, newest first."""
        statuses: set[str] | None = None
        if status is not None:
            statuses = {status}
        if status_in is not None:
            statuses = set(status_in) if statuses is None else statuses & set(status_in)
        for s in statuses or ():
            if s not in STATUSES:
                raise HephError(f"unknown status {s!r}; use one of {', '.join(STATUSES)}")
        if id is not None:
            parse_id(id)
        return self.storage.query(statuses=statuses, workflow=self._name(workflow), instance_id=id,
                                  version=version, limit=limit)

    def cancel(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """Cancel the active run of ``instance_id``, dropping its timers; ``NotCancellable`` once finished."""
        self._existing(instance_id, workflow)
        with self._session(instance_id) as session:
            instance = pick_run(session.runs(), instance_id, self._name(workflow))
            cancelled = engine.cancel(instance, self.clock.now())
            session.update(cancelled)
        self._emit_end(cancelled)
        return cancelled

    def retry(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """Re-run a failed instance from its failed step; ``NotRetryable`` if it has not failed."""
        self._existing(instance_id, workflow)
        with self._session(instance_id) as session:
            runs = session.runs()
            instance = pick_run(runs, instance_id, self._name(workflow))
            definition = self._definition(instance)
            retried = engine.retry(definition, instance, self.clock.now())
            _check_unique(runs, self._workflow(instance.workflow).__heph_unique__.scope, definition,
                          besides=instance.run)
            retried = engine.begin(retried, self.clock.now(), self._lease())
            return self._drive(session, definition, retried, "retry")

    def tick(self) -> list[dict]:
        """Fire every due timer and retry, and finish runs interrupted by a dead process.

        Returns one dict per action (``id``, ``run``, ``step``, ``kind``: timer/retry/recovered).
        Runs busy in another process are skipped (the next tick gets them).
        """
        actions: list[dict] = []
        for ref in self.storage.interrupted():
            try:
                with self._session(ref.id, timeout=0) as session:
                    match = [r for r in session.runs() if r.run == ref.run]
                    if match and match[0].status in ("pending", "running"):
                        steps = [a["step"] for a in match[0].active]
                        self._recover(session, match[0])
                        actions.append({"id": ref.id, "run": ref.run, "step": ",".join(steps), "kind": "recovered"})
            except HephError as exc:  # busy, corrupt, or a workflow/version no longer defined
                log.info("tick skipped %s: %s", ref.id, exc)
        now = self.clock.now()
        for ref in _due_refs(self.storage, now):
            try:
                with self._session(ref.id, timeout=0) as session:
                    match = [r for r in session.runs() if r.run == ref.run]
                    if not match:
                        continue
                    definition = self._definition(match[0])
                    fired_instance, fired = engine.fire_due(definition, match[0], now)
                    if not fired:
                        continue
                    if fired_instance.status == "running":
                        fired_instance = engine.begin(fired_instance, now, self._lease())
                    actions.extend(fired)
                    opening = [("step.resume", _payload(fired_instance, step=f["step"], event="timeout"))
                               for f in fired if f["kind"] == "timer"]
                    trigger = "timer" if opening else "retry"
                    self._drive(session, definition, fired_instance, trigger, opening)
            except HephError as exc:  # one bad instance must not stop the others
                log.info("tick skipped %s: %s", ref.id, exc)
        for action in actions:
            log.info("tick: %s %s of %s", action["kind"], action["step"], action["id"])
        return actions


def pick_run(runs: list[Instance], instance_id: str, workflow: str | None = None) -> Instance:
    """The run of ``instance_id`` a command means: the active one, else the newest (``runs``
    newest first; ``workflow``: only that workflow's). ``InstanceNotFound`` if there is none."""
    if workflow is not None:
        runs = [r for r in runs if r.workflow == workflow]
    if not runs:
        where = f" of workflow {workflow}" if workflow else ""
        raise InstanceNotFound(f"no instance {instance_id}{where}: check the id, or `heph list` to see instances")
    active = [r for r in runs if r.is_active]
    workflows = sorted({r.workflow for r in active})
    if len(workflows) > 1:
        raise HephError(
            f"{instance_id} is active in several workflows ({', '.join(workflows)}): "
            f"name the workflow (CLI: heph show WORKFLOW --id {instance_id})"
        )
    return active[0] if active else runs[0]


def _due_refs(storage: Storage, now: datetime):
    """The due runs for one tick: ``storage.due(now)``, or, when the store can share them out
    among concurrent workers (``due_batches``, e.g. PostgreSQL), the batches it claims for us."""
    batches = getattr(storage, "due_batches", None)
    return batches(now) if batches is not None else storage.due(now)


def _check_unique(runs: list[Instance], scope: str, definition: WorkflowDefinition, besides: str | None = None) -> None:
    """``AlreadyRunning`` if an active run (other than ``besides``) holds the id in ``scope``."""
    for other in runs:
        if other.run != besides and other.is_active and _conflicts(scope, other, definition):
            raise AlreadyRunning(
                f"{other.id} is already running ({other.workflow} v{other.version}, status {other.status}); "
                f"cancel it or wait until it finishes"
            )


def _conflicts(scope: str, other: Instance, definition: WorkflowDefinition) -> bool:
    if scope == "global" or scope == "none":
        return True
    if scope == "version":
        return other.workflow == definition.name and other.version == definition.version
    return other.workflow == definition.name


def _ms(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds() * 1000, 3)
