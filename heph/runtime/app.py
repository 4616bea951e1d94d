"""``Hephaestus``: the runtime that runs workflow instances against a storage adapter."""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import threading
import time
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
    AlreadyRunning,
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
from heph.runtime.announcer import ANNOUNCER
from heph.runtime.clock import SystemClock
from heph.runtime.storage.base import RunRef, Session, Storage
from heph.runtime.telemetry import emit, listening

__all__ = ["Delivery", "Hephaestus", "check_context", "current_app", "new_run_id", "pick_run", "use"]

log = logging.getLogger("heph")

MAX_CONTEXT_BYTES = 2 * 1024 * 1024
_HOST = os.uname().nodename
BUSY_WAIT = 0.5  # seconds a command waits for a busy id before asking what its holder runs
NOTE_WAIT = 1.2  # seconds, from then, it keeps asking (a note is written a moment into the step)
APPLIED_KEPT = 64  # ids of applied queued messages an instance remembers


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
        return {"pid": os.getpid(), "host": _HOST, "since": now.isoformat()}

    @contextmanager
    def _existing(self, instance_id: str, workflow: Any,
                  timeout: float | None = None) -> Iterator[tuple[Session, Instance]]:
        """A session on an existing id and the run the command means (``pick_run``).

        The id is parsed and the workflow resolved once, and the id's runs are read once,
        under the lock; an unknown id raises ``InstanceNotFound`` and leaves nothing behind."""
        parse_id(instance_id)
        name = self._name(workflow)
        wait = self.lock_timeout if timeout is None else timeout
        with self.storage.session(instance_id, wait, must_exist=True) as session:
            yield session, pick_run(session.runs(), instance_id, name)

    def _lock_wait(self) -> float | None:
        """How long a command waits for a busy id before it asks what the holder is doing."""
        full = self.lock_timeout if self.lock_timeout is not None else getattr(self.storage, "lock_timeout", 30.0)
        return min(BUSY_WAIT, full) if full is not None else BUSY_WAIT

    def _locked_or_note(self, instance_id: str, workflow: Any, attempt: Any) -> tuple[Any, dict | None]:
        """``(attempt(timeout), None)`` once the command gets the id's lock, or ``(None, note)``
        when its holder runs a step (its note, ``Storage.busy``). A step's note is written a
        moment after it begins (``heph.runtime.announcer``), so a busy id without a note is
        asked again for up to ``NOTE_WAIT`` seconds; then the command waits for the lock as
        long as ``lock_timeout`` allows. ``InstanceNotFound`` stands for busy while the id's
        first run is being made."""
        deadline = time.monotonic() + NOTE_WAIT
        timeout = self._lock_wait()
        while True:
            try:
                return attempt(timeout), None
            except (InstanceBusy, InstanceNotFound) as exc:
                note = self._running_note(instance_id, workflow)
                if note is not None:
                    return None, note
                if isinstance(exc, InstanceNotFound) and self.storage.busy(instance_id) is None:
                    raise
                if time.monotonic() >= deadline:
                    if isinstance(exc, InstanceNotFound):
                        raise
                    break
                timeout = 0.05
        return attempt(self.lock_timeout), None

    def running(self, instance_id: str) -> dict | None:
        """What a live process runs of ``instance_id`` right now: ``{"step", "since", "pid", "host",
        "workflow", "version", "run"}`` (``since``: when that step began), or None. Never waits."""
        note = self._running_note(instance_id)
        return None if note is None else _shown(note)

    def _running_note(self, instance_id: str, workflow: Any = None) -> dict | None:
        """What the live holder of a busy id is running (its ``announce`` note), if it said (and,
        given ``workflow``, if it runs that workflow)."""
        note = self.storage.busy(instance_id)
        if not note or not note.get("step") or not note.get("workflow"):
            return None
        name = self._name(workflow)
        return note if name is None or name == note["workflow"] else None

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
        ran = False  # a step ran (or queued mail was applied) since the last write
        wrote = False  # this segment has written (its change is applied, at least in part)
        applied: list[str] = []  # ids of the mail applied, dropped once written

        def save() -> None:
            nonlocal new, saved, ran, wrote
            try:
                (session.insert if new else session.update)(instance)
            except StorageError as exc:
                if not wrote or isinstance(exc, MaybeApplied):
                    raise
                raise MaybeApplied(instance_id=instance.id, reason=f"a later write failed: {exc}") from exc
            new, saved, ran, wrote = False, True, False, True
            if applied:  # written: drop them (one left behind is recorded as applied, and only dropped later)
                try:
                    session.drop_mail(applied)
                except StorageError as exc:
                    log.warning("could not drop %d applied message(s) of %s: %s", len(applied), instance.id, exc)
                applied.clear()

        while True:
            entry = engine.next_step(instance)
            if mail := self._mail(session, instance.id):  # queued by other processes while a step ran
                instance, taken = self._apply_mail(definition, instance, mail, lease, paused=entry is None)
                if taken:
                    applied += taken
                    ran, saved = True, False
                    entry = engine.next_step(instance)
            if entry is None:
                break
            key = entry["step"]
            if ran and not issubclass(definition.steps[key], Done):
                # Done runs no user code: the write after it is enough (a crash re-runs Done)
                save()
            if not issubclass(definition.steps[key], Done):
                ANNOUNCER.running(session, functools.partial(self._note, instance, key))
            try:
                instance = self._run_step(definition, instance, entry)
            finally:
                ANNOUNCER.clear(session)
            if instance.status == "running":
                instance.lease = lease
            ran, saved = True, False
        if not saved:
            save()
        if listening():
            self._emit_end(instance)
            emit("segment.stop", _payload(instance, trigger=trigger))
        return instance

    @staticmethod
    def _mail(session: Session, instance_id: str) -> builtins.list[dict]:
        """The messages queued for the session's id; none if they cannot be read now (they stay
        stored, and a later command or ``tick`` applies them: a write made must not be refused)."""
        try:
            return session.mail()
        except StorageError as exc:
            log.warning("could not read the messages queued for %s (a later command or tick applies them): %s",
                        instance_id, exc)
            return []

    @staticmethod
    def _note(instance: Instance, step: str, since: str) -> dict:
        """What this process announces while it runs ``step`` of ``instance`` (``Storage.busy``);
        ``since``: when the step began, by the wall clock (the note is about a live process,
        whatever the app's clock)."""
        return {"workflow": instance.workflow, "version": instance.version, "scope": instance.scope,
                "run": instance.run, "step": step, "since": since, "pid": os.getpid(),
                "host": _HOST}

    def _apply_mail(self, definition: WorkflowDefinition, instance: Instance, mail: builtins.list[dict],
                    lease: dict | None, paused: bool) -> tuple[Instance, builtins.list[str]]:
        """Apply what was queued for a busy instance, oldest first; return it and the ids taken.

        A cancel request is applied at once (no further step starts). Events wait until the
        instance pauses (``paused``: no step is ready), as if their command had waited for the
        lock: then they are applied one at a time until one sets a step running (the rest wait
        for the next pause); one no step takes is buffered (with ``buffer``) or recorded as
        ``rejected``. A message the instance records as applied already (a crash came before it
        was dropped) is only dropped."""
        taken: builtins.list[str] = []
        now = self.clock.now()
        for message in mail:
            message_id = str(message.get("id"))
            kind, event, step = message.get("kind"), message.get("event"), message.get("step")
            step = step if isinstance(step, str) else None
            if message_id in instance.applied:
                taken.append(message_id)
                continue
            if message.get("run") not in (None, instance.run):  # its run was never stored, or has ended
                log.warning("dropping %s queued for run %s of %s: that run is gone (now run %s)",
                            event or kind, message.get("run"), instance.id, instance.run)
                taken.append(message_id)
                continue
            if kind == "cancel":
                if instance.is_active:
                    instance = engine.cancel(instance, now)
            elif kind == "event" and isinstance(event, str):
                if not paused or engine.next_step(instance) is not None:
                    continue  # wait for the instance to pause
                data = message.get("data")
                try:
                    instance = engine.resume(definition, instance, event, now, step,
                                             data if isinstance(data, dict) else {}, bool(message.get("buffer")))
                    if instance.status == "running":
                        instance.lease = lease or self._lease(now)
                except InvalidEvent as exc:
                    log.warning("queued event %s for %s rejected: %s", event, instance.id, exc)
                    instance = engine.reject(instance, event, step, str(exc), now)
            else:
                log.warning("dropping a queued message for %s that heph does not know: %r", instance.id, message)
                taken.append(message_id)
                continue
            taken.append(message_id)
            instance = instance.copy()
            instance.applied = (instance.applied + [message_id])[-APPLIED_KEPT:]
        return instance, taken

    def _drain(self, instance_id: str) -> Instance | None:
        """Apply the mail queued for ``instance_id`` if nobody holds it now (None if somebody does,
        or nothing was queued): the instance as written."""
        if not self.storage.has_mail(instance_id):
            return None
        try:
            with self.storage.session(instance_id, 0) as session:
                runs = session.runs()
                mail = session.mail()
                if not mail:
                    return None
                if not runs:
                    log.warning("dropping %d message(s) queued for %s: it has no run", len(mail), instance_id)
                    session.drop_mail(str(m.get("id")) for m in mail)
                    return None
                instance = pick_run(runs, instance_id)
                now = self.clock.now()
                instance = self._recover(session, instance, now)
                return self._drive(session, self.definition_of(instance), instance, "mail", saved=True)
        except InstanceBusy:
            return None

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
               options: dict | None, tag: dict | None = None) -> Instance:
        """The one path of every start: check the id, context and version, then create the run
        and run its synchronous steps under the id's lock (uniqueness checked there)."""
        instance_id = _id_for(cls, instance_id)
        initial = check_context(context)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidVersion(f"version must be an int, got {version!r}", version=version)
        definition = cls.definition(cls.resolve_version(version, options or {}))
        now = self.clock.now()
        started, note = self._locked_or_note(
            instance_id, None,
            lambda timeout: self._start_locked(definition, instance_id, initial, now, timeout, tag))
        if note is not None:
            scope = definition.unique.scope if definition.unique is not None else "workflow"
            mine = uniqueness.Facts(instance_id, "", definition.name, definition.version, "running", scope)
            theirs = uniqueness.Facts(instance_id, str(note.get("run")), note["workflow"], note.get("version", 0),
                                      "running", note.get("scope", "workflow"))
            if uniqueness.conflicts(mine, theirs):
                raise AlreadyRunning(instance_id=instance_id, workflow=note["workflow"], version=note.get("version"),
                                     status="running")
            started = self._start_locked(definition, instance_id, initial, now, self.lock_timeout, tag)
        self._after(instance_id)
        return started

    def _start_locked(self, definition: WorkflowDefinition, instance_id: str, initial: dict, now: datetime,
                      timeout: float | None, tag: dict | None = None) -> Instance:
        """Create and drive the run (``tag``: a schedule slot's, kept as ``runtime_metadata
        ["schedule"]``; a run of the id that carries it already means the slot has started:
        ``_SlotStarted``)."""
        with self.storage.session(instance_id, timeout) as session:
            runs = session.runs()
            if tag is not None and any(r.runtime_metadata.get("schedule") == tag for r in runs):
                raise _SlotStarted()
            fresh = engine.new_instance(definition, instance_id, initial, now,
                                        new_run_id(now, runs[0].run if runs else None))
            if tag is not None:
                fresh.runtime_metadata = {"schedule": tag}
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

        While a step of the instance runs in another live process, the event is queued and
        applied after that step (see ``deliver``); the instance as stored now is returned.
        """
        delivered = self.deliver(instance_id, event, data, step=step, buffer=buffer, workflow=workflow)
        if delivered.instance is None:  # the id's first run is not stored yet: wait for its first write
            return self._wait_for_run(instance_id)
        return delivered.instance

    def deliver(self, instance_id: str, event: str, data: dict | None = None, *, step: str | None = None,
                buffer: bool = False, workflow: Any = None) -> Delivery:
        """``resume``, saying what became of the event: ``Delivery(instance, outcome)``, outcome
        ``"resumed"`` (a waiting step took it), ``"buffered"`` (kept in the inbox) or
        ``"queued"``: a step of the instance runs in another live process, so the event was
        queued durably (``Storage.post``) and is applied after that step, by that process (or,
        if it dies, by the next command or ``tick`` on the id). An event the running version
        declares nowhere is refused at once; one no step takes by the time it is applied is
        recorded in the history as ``rejected`` (or buffered, with ``buffer``)."""
        if not isinstance(event, str) or not event:
            raise InvalidEvent(f"invalid event {event!r}: give the event name as a non-empty string",
                               instance_id=instance_id, event=event)
        plain = check_context(data, "the event data")
        delivered, note = self._locked_or_note(
            instance_id, workflow,
            lambda timeout: self._deliver_locked(instance_id, event, plain, step, buffer, workflow, timeout))
        if note is not None:
            return self._queue_event(instance_id, note, event, plain, step, buffer)
        self._after(instance_id)
        return delivered

    def _queue_event(self, instance_id: str, note: dict, event: str, data: dict, step: str | None,
                     buffer: bool) -> Delivery:
        """Queue an event for an id whose step runs in another live process (``Storage.post``);
        refused at once if the running version declares no such event (or step)."""
        definition = self.workflow(note["workflow"]).definition(note.get("version"))
        facts = {"instance_id": instance_id, "event": event, "step": step}
        if event not in definition.all_events():
            raise InvalidEvent(f"no step of {definition.name} v{definition.version} declares {event!r}; "
                               f"nothing to queue it for", candidates=[], **facts)
        if step is not None and event not in (definition.events_of(step) if step in definition.steps else ()):
            raise InvalidEvent(f"step {step!r} of {definition.name} v{definition.version} does not declare "
                               f"{event!r}", **facts)
        self.storage.post(instance_id, {"kind": "event", "event": event, "data": data, "step": step,
                                        "buffer": buffer, "run": note.get("run"),
                                        "posted_at": self.clock.now().isoformat()})
        return Delivery(self._drain(instance_id) or self._last(instance_id), "queued", _shown(note))

    def _last(self, instance_id: str) -> Instance | None:
        """The run a command means, as stored now (None if the id has none yet)."""
        runs = self.storage.runs(instance_id)
        return pick_run(runs, instance_id) if runs else None

    def _after(self, instance_id: str) -> None:
        """After a command's session: apply what was queued for the id while it held it (a
        message posted between its last look and the end of its session would wait otherwise).
        The command's own change is written: a failure here is a warning (``tick`` applies them)."""
        try:
            if self.storage.has_mail(instance_id):
                self._drain(instance_id)
        except StorageError as exc:
            log.warning("could not apply the messages queued for %s (the next tick does): %s", instance_id, exc)

    def _deliver_locked(self, instance_id: str, event: str, plain: dict, step: str | None, buffer: bool,
                        workflow: Any, timeout: float | None) -> Delivery:
        with self._existing(instance_id, workflow, timeout) as (session, instance):
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

    def cancel(self, instance_id: str, *, workflow: Any = None, wait: bool = False) -> Instance:
        """Cancel the active run of ``instance_id``, dropping its timers; ``NotCancellable`` once
        finished. While a step of it runs in another live process, the cancel is requested
        (see ``request_cancel``) and the run as stored now is returned, unless ``wait``: then
        this returns once the run has ended."""
        requested = self.request_cancel(instance_id, workflow=workflow)
        if wait and requested.outcome == "cancel requested":
            return self._wait_until_finished(instance_id)
        return requested.instance or self._wait_for_run(instance_id)

    def request_cancel(self, instance_id: str, *, workflow: Any = None) -> Delivery:
        """``cancel``, saying how: ``Delivery(instance, "cancelled")``, or, while a step of the
        instance runs in another live process, ``"cancel requested"``: the step finishes (its
        result is recorded), no further step starts, and the instance ends ``cancelled``."""
        cancelled, note = self._locked_or_note(
            instance_id, workflow, lambda timeout: self._cancel_locked(instance_id, workflow, timeout))
        if note is not None:
            self.storage.post(instance_id, {"kind": "cancel", "run": note.get("run"),
                                            "posted_at": self.clock.now().isoformat()})
            return Delivery(self._drain(instance_id) or self._last(instance_id), "cancel requested", _shown(note))
        self._after(instance_id)
        return Delivery(cancelled, "cancelled")

    def _cancel_locked(self, instance_id: str, workflow: Any, timeout: float | None) -> Instance:
        with self._existing(instance_id, workflow, timeout) as (session, instance):
            cancelled = engine.cancel(instance, self.clock.now())
            session.update(cancelled)
        self._emit_end(cancelled)
        return cancelled

    def _wait_for_run(self, instance_id: str, poll: float = 0.05) -> Instance:
        """The id's run as soon as one is stored; ``InstanceNotFound`` if its maker goes away
        first (a start killed before its first write leaves no run)."""
        while True:
            maker = self.storage.busy(instance_id)  # asked first: a run made meanwhile is read below
            if (last := self._last(instance_id)) is not None:
                return last
            if maker is None:
                raise InstanceNotFound(instance_id=instance_id)
            time.sleep(poll)

    def _wait_until_finished(self, instance_id: str, poll: float = 0.05) -> Instance:
        """The id's run once it is no longer active (polled; Ctrl-C stops the wait, not the cancel)."""
        while True:
            last = self._last(instance_id)
            if last is not None and not last.is_active and not self.storage.has_mail(instance_id):
                return last
            self._after(instance_id)
            time.sleep(poll)

    def retry(self, instance_id: str, *, workflow: Any = None) -> Instance:
        """Re-run a failed instance from its failed step; ``NotRetryable`` if it has not failed."""
        with self._existing(instance_id, workflow) as (session, instance):
            now = self.clock.now()
            definition = self.definition_of(instance)
            retried = engine.begin(engine.retry(definition, instance, now), now, self._lease(now))
            uniqueness.check(retried, session.runs())
            done = self._drive(session, definition, retried, "retry")
        self._after(instance_id)
        return done

    def tick(self) -> Ticked:
        """Fire every due timer, deadline and retry, finish runs interrupted by a dead process,
        start the due slots of every schedule of the workflows this process defines, and apply
        messages queued for instances nobody holds.

        Returns one dict per action (``id``, ``run``, ``step``, ``kind``: timer, deadline, retry,
        recovered, schedule (with ``slot``) or mail),
        as a list whose ``failed`` attribute lists the runs whose due work could not be written
        (``id``, ``run``, ``code``, ``error``; ``code`` ``may_have_been_applied`` when the write may
        have reached the store). Runs busy in another process are skipped (the next tick gets
        them), and so is a run that cannot be read or handled (corrupt, or its workflow no longer
        defined), with a warning: one bad instance never stops the others.
        """
        done = Ticked()
        try:
            for ref in self.storage.interrupted():
                self._one(done, ref, lambda ref=ref: self._recover_one(ref.id, ref.run))
            now = self.clock.now()
            for ref in self.storage.due_batches(now):
                self._one(done, ref, lambda ref=ref: self._fire_one(ref.id, ref.run, now))
        except StorageError as exc:  # listing the work failed: say so, and whether some was done
            if not done or isinstance(exc, MaybeApplied):
                raise
            raise MaybeApplied(f"tick stopped after it had done the due work of {len(done)} run(s) "
                               f"(that part is written): {exc}; the next tick does the rest", reason=str(exc)) from None
        for cls, schedule in self._schedules():
            self._one(done, RunRef(schedule.name(cls.__heph_workflow_name__), ""),
                      lambda c=cls, s=schedule: self._fire_schedule(c, s, now))
        try:
            boxes = self.storage.mailboxes()  # queued for runs whose holder died, or left
        except StorageError as exc:  # what was fired stays fired: the next tick tries again
            log.warning("tick could not list the queued messages: %s", exc)
            boxes = []
        for instance_id in boxes:
            self._one(done, RunRef(instance_id, ""), lambda i=instance_id: self._drain_one(i))
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

    # -- schedules (SPEC §10) -------------------------------------------------------

    @staticmethod
    def _schedules() -> builtins.list[tuple[type[Facade], Any]]:
        """Every schedule of every workflow this process has defined, by workflow name."""
        from heph.core.workflow import registry

        return [(cls, s) for _, cls in sorted(registry().items()) for s in cls.__heph_schedules__]

    def schedules(self) -> builtins.list[dict]:
        """Every schedule of the workflows this process defines, with its state: ``workflow``,
        ``name``, ``cron``, ``value``, ``catchup``, ``since`` (first seen by a tick; None until
        then), ``last`` (the newest slot started), ``next`` (the next slot from now)."""
        from heph.core.schedules import next_slot, slot_text

        states = self.storage.schedule_states()
        now = self.clock.now()
        out = []
        for cls, schedule in self._schedules():
            name = schedule.name(cls.__heph_workflow_name__)
            state = states.get(name, {})
            out.append({"workflow": cls.__heph_workflow_name__, "name": name, "cron": schedule.cron,
                        "value": schedule.value, "catchup": schedule.catchup, "since": state.get("since"),
                        "last": state.get("last"), "next": slot_text(next_slot(schedule.cron, now))})
        return out

    def _fire_schedule(self, cls: type[Facade], schedule: Any, now: datetime) -> builtins.list[dict]:
        """Start the due slots of one schedule, under its lock, each exactly once: a slot is
        marked started (``last``) only after its run is written, and a run of the slot's id that
        carries the slot's tag counts as started (a tick killed in between)."""
        from heph.core.schedules import due_slots, slot_text

        workflow = cls.__heph_workflow_name__
        name = schedule.name(workflow)
        done: builtins.list[dict] = []
        try:
            with self.storage.schedule_session(name, 0) as held:
                state = held.state()
                if state is None:  # first seen: slots after now are its own
                    held.save({"workflow": workflow, "cron": schedule.cron, "value": schedule.value,
                               "since": slot_text(now), "last": None})
                    return []
                for slot in due_slots(schedule, state, now):
                    instance_id = self._slot_id(cls, name, schedule.value_for(slot), slot)
                    tag = {"name": name, "cron": schedule.cron, "slot": slot_text(slot)}
                    try:
                        run = self._start(cls, schedule.context, instance_id, None, None, tag)
                        done.append({"id": run.id, "run": run.run, "step": "-", "kind": "schedule",
                                     "slot": slot_text(slot)})
                    except _SlotStarted:
                        pass
                    except AlreadyRunning:
                        log.warning("schedule %s of %s: slot %s skipped: %s is still active", schedule.cron,
                                    workflow, slot_text(slot), instance_id)
                    state = {**state, "last": slot_text(slot)}
                    held.save(state)
        except InstanceBusy:
            return done  # another tick has this schedule
        except StorageError as exc:
            raise _WriteFailed(exc) from exc
        return done

    @staticmethod
    def _slot_id(cls: type[Facade], name: str, value: str, slot: datetime) -> str:
        """The id a slot's run gets: ``key::value``; scope ``none``: a suffix made from the
        schedule and the slot, so a repeated tick finds the run it may have started."""
        import hashlib

        unique = cls.__heph_unique__
        if unique.scope != "none":
            return f"{unique.key}::{value}"
        return f"{unique.key}::{value}::{hashlib.sha256(f'{name}@{slot.isoformat()}'.encode()).hexdigest()[:8]}"

    def _drain_one(self, instance_id: str) -> builtins.list[dict]:
        try:
            drained = self._drain(instance_id)
        except StorageError as exc:
            if isinstance(exc, InstanceBusy):
                raise
            raise _WriteFailed(exc) from exc
        return [] if drained is None else [{"id": instance_id, "run": drained.run, "step": "-", "kind": "mail"}]

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
    """What ``deliver`` (or ``request_cancel``) did: the instance as stored, and ``outcome``:
    ``"resumed"``, ``"buffered"``, ``"queued"`` (a step of it runs in another live process; the
    event is applied after that step), ``"cancelled"`` or ``"cancel requested"``. ``instance``
    is None only for a queued message whose id's first run is still being created. ``busy``:
    for a queued message, what was running when it was queued (``running``'s answer)."""

    instance: Instance | None
    outcome: str
    busy: dict | None = None


def _shown(note: dict) -> dict:
    """The part of a busy note callers see (``Hephaestus.running``)."""
    return {key: note.get(key) for key in ("step", "since", "pid", "host", "workflow", "version", "run")}


class _SlotStarted(Exception):
    """A schedule slot's run exists already (a tick was killed after starting it)."""


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
