"""Instance values: plain data that turns into JSON dicts and back without loss (no pickle).

``Instance.from_dict`` checks a document completely when it is read (every field's type and
shape, every nested wait, active entry and history entry), so a hand-edited file that is
valid JSON but not a valid instance is refused at once, by the store that read it, instead of
breaking whatever command later trips over the bad field. The refusal is a
``MalformedDocument`` (a ``ValueError``) whose message starts with the field's path, e.g.
``waits.gate.due_at: expected an ISO 8601 time with a time zone, got '2026-12-03 noon'``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NoReturn

from heph.core.definition import SCOPES
from heph.core.ids import check_id
from heph.core.uniqueness import scope_of_id

FORMAT_VERSION = 1
STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("pending", "running", "waiting")
OUTCOMES = ("completed", "async", "resumed", "failed", "cancelled", "rejected")
WAIT_KINDS = ("event", "timer", "retry", "deadline")
HEAD_FIELDS = ("format", "id", "run", "workflow", "version", "scope", "status", "created_at", "updated_at",
               "next_due_at",
               "context", "runtime_metadata", "active", "waits", "arrived", "completed", "failed", "error", "lease",
               "inbox", "applied")

_WORKFLOW_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")  # SPEC: workflow names match [a-z][a-z0-9_]*
# Run ids are made by ``new_run_id`` (``20261126T001712123456-a1b2c3``); tests use short names.
# They become file names and parts of index marker names, so no separators, dots first or blanks.
_RUN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


class MalformedDocument(ValueError):
    """An instance document (read from a store) breaks the document format.

    ``path`` names the offending field (``waits.gate.due_at``, ``history[3].attempt``; empty
    for the document itself) and ``problem`` says what is wrong with it; the message is
    ``"<path>: <problem>"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.problem))


def to_iso(moment: datetime | None) -> str | None:
    """UTC ISO-8601 text of an aware datetime (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is timezone.utc:  # the usual case: skip astimezone's copy
        return moment.isoformat()
    return moment.astimezone(timezone.utc).isoformat()


def from_iso(text: str | None) -> datetime | None:
    """An aware UTC datetime from ISO text (None stays None)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(timezone.utc)


@dataclass
class Context:
    """What a step sees: ``initial`` (the start context) and ``steps`` (key -> that step's updates)."""

    initial: dict
    steps: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryEntry:
    """One step outcome: completed, async, resumed, failed, cancelled or rejected (a queued event that
    could not be applied); never changed once made."""

    step: str
    outcome: str
    event: str | None = None
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: dict | None = None

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "outcome": self.outcome,
            "event": self.event,
            "attempt": self.attempt,
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "") -> HistoryEntry:
        """Rebuild an entry; ``MalformedDocument`` (a ``ValueError``) names what is wrong, under
        ``where`` (its path in the document, e.g. ``history[3]``)."""
        return _history_entry(data, where)


@dataclass
class Instance:
    """One run of a workflow.

    ``active`` lists the steps ready to run (``{"step", "config", "attempt", "first_attempt"}``);
    ``waits`` maps each paused step to ``{"kind": "event"|"deadline"|"timer"|"retry", "config",
    "attempt", "first_attempt", "since", "due_at"}`` (``deadline``: an event wait with a due
    time, its step's ``Deadline``); ``inbox`` holds buffered events not yet delivered
    (``{"event", "data", "received_at"}``, oldest first); ``applied`` the ids of the last
    messages queued for a busy instance (``Storage.post``) that were applied to it;
    ``arrived`` holds join targets reached by some but not yet all branches; ``failed`` is
    the step to re-run on ``retry``. ``run`` identifies
    this run among the runs that shared the id over time. ``scope`` is the uniqueness scope
    of its workflow when the run was created (``heph.core.uniqueness`` reads it).
    """

    id: str
    workflow: str
    version: int
    status: str
    context: Context
    run: str
    created_at: datetime
    updated_at: datetime
    runtime_metadata: dict = field(default_factory=dict)
    active: list[dict] = field(default_factory=list)
    waits: dict[str, dict] = field(default_factory=dict)
    arrived: dict[str, Any] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    failed: dict | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    error: dict | None = None
    lease: dict | None = None
    scope: str = "workflow"
    inbox: list[dict] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    @property
    def waiting(self) -> list[str]:
        """Keys of the paused steps (events, timers and pending retries)."""
        return list(self.waits)

    @property
    def next_due_at(self) -> datetime | None:
        """The earliest due timer or retry, if any."""
        dues = [from_iso(w["due_at"]) for w in self.waits.values() if w.get("due_at")]
        return min(dues) if dues else None  # type: ignore[type-var]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def copy(self, context: Context | None = None) -> Instance:
        """A copy whose containers can be changed without touching this one (with ``context``
        instead of a copy of this one's, if given).

        The engine never mutates a stored value in place (it replaces entries), so
        copying the containers is enough and much cheaper than ``copy.deepcopy``.
        """
        if context is None:
            context = Context(self.context.initial, dict(self.context.steps))
        return Instance(
            id=self.id,
            workflow=self.workflow,
            version=self.version,
            status=self.status,
            context=context,
            run=self.run,
            created_at=self.created_at,
            updated_at=self.updated_at,
            runtime_metadata=dict(self.runtime_metadata),
            active=[dict(entry) for entry in self.active],
            waits={key: dict(wait) for key, wait in self.waits.items()},
            arrived=dict(self.arrived),
            completed=list(self.completed),
            failed=self.failed,
            history=list(self.history),
            error=self.error,
            lease=self.lease,
            scope=self.scope,
            inbox=list(self.inbox),
            applied=list(self.applied),
        )

    def deepcopy(self) -> Instance:
        """A copy sharing nothing with this one."""
        return copy.deepcopy(self)

    def head(self) -> tuple:
        """The values of ``HEAD_FIELDS`` — the document ``to_dict`` makes, but for the history."""
        return (FORMAT_VERSION, self.id, self.run, self.workflow, self.version, self.scope, self.status,
                to_iso(self.created_at), to_iso(self.updated_at), to_iso(self.next_due_at),
                {"initial": self.context.initial, "steps": self.context.steps}, self.runtime_metadata,
                self.active, self.waits, self.arrived, self.completed, self.failed, self.error, self.lease,
                self.inbox, self.applied)

    def to_dict(self, history: bool = True) -> dict:
        """Plain JSON data, with a format version (without ``history``: all but the history)."""
        doc = dict(zip(HEAD_FIELDS, self.head()))
        if history:
            doc["history"] = [h.to_dict() for h in self.history]
        return doc

    @classmethod
    def from_dict(cls, data: object) -> Instance:
        """Rebuild an instance, checking the whole document first: ``MalformedDocument`` (a
        ``ValueError``) names the first field that is missing or has the wrong type or shape.

        Checked: ``format`` (this version's), ``id`` (a well-formed instance id), ``run``,
        ``workflow`` (a workflow name), ``version`` (an int >= 1), ``scope`` (one of the scopes;
        documents of heph 0.1 have none and read as ``scope_of_id``), ``status``, the times
        (aware ISO 8601), ``context`` (``initial`` and ``steps``, objects; each step's updates an
        object), ``runtime_metadata``, ``active``, ``waits``, ``arrived``, ``completed``,
        ``failed``, ``error``, ``lease`` and every ``history`` entry (see the helpers below for
        each shape). The JSON values inside contexts, metadata and configs are the workflow's
        data and are not looked into. Fields this version does not know are ignored.
        """
        if not isinstance(data, dict):
            raise MalformedDocument("", f"an instance document must be a JSON object, got {_shown(data)}")
        fmt = data.get("format")
        if fmt.__class__ is not int or fmt != FORMAT_VERSION:
            raise MalformedDocument(
                "format", f"unsupported format version {_shown(fmt)} (this heph reads format {FORMAT_VERSION})")
        instance_id = _str(_need(data, "id", ""), "", "id")
        try:
            check_id(instance_id)
        except ValueError as exc:  # InvalidId
            raise MalformedDocument("id", str(exc)) from None
        run = _str(_need(data, "run", ""), "", "run")
        if not _RUN_RE.match(run):
            raise MalformedDocument("run", f"expected a run id (letters, digits, '_', '.', '-'), got {_shown(run)}")
        workflow = _str(_need(data, "workflow", ""), "", "workflow")
        if not _WORKFLOW_NAME_RE.match(workflow):
            raise MalformedDocument("workflow", f"expected a workflow name ([a-z][a-z0-9_]*), got {_shown(workflow)}")
        scope = data["scope"] if "scope" in data else scope_of_id(instance_id)
        if "next_due_at" in data:  # derived from the waits when written; checked, never read
            _optional_time(data["next_due_at"], "", "next_due_at")
        context = _dict(_need(data, "context", ""), "", "context")
        steps = _dict(_need(context, "steps", "context"), "context", "steps")
        for key, updates in steps.items():
            if not isinstance(updates, dict):
                _wrong(updates, "an object (the step's updates)", "context.steps", key)
        active = _list(data.get("active", []), "", "active")
        waits = _dict(data.get("waits", {}), "", "waits")
        completed = _list(data.get("completed", []), "", "completed")
        history = _list(data.get("history", []), "", "history")
        inbox = _list(data.get("inbox", []), "", "inbox")
        return cls(
            id=instance_id,
            run=run,
            workflow=workflow,
            version=_int(_need(data, "version", ""), "", "version"),
            scope=_choice(scope, SCOPES, "", "scope"),
            status=_choice(_need(data, "status", ""), STATUSES, "", "status"),
            created_at=_time(_need(data, "created_at", ""), "", "created_at"),
            updated_at=_time(_need(data, "updated_at", ""), "", "updated_at"),
            context=Context(_dict(_need(context, "initial", "context"), "context", "initial"), steps),
            runtime_metadata=_dict(data.get("runtime_metadata", {}), "", "runtime_metadata"),
            active=[_active(entry, _at("active", n)) for n, entry in enumerate(active)],
            waits={key: _wait(wait, _at("waits", key)) for key, wait in waits.items()},
            arrived=_arrived(_dict(data.get("arrived", {}), "", "arrived")),
            completed=[_step(key, "completed", n) for n, key in enumerate(completed)],
            failed=_failed(data.get("failed"), "failed"),
            error=_error(data.get("error"), "", "error"),
            lease=_lease(data.get("lease"), "lease"),
            inbox=[_inbox_entry(entry, _at("inbox", n)) for n, entry in enumerate(inbox)],
            applied=[_str(item, "applied", n) for n, item in enumerate(_list(data.get("applied", []), "", "applied"))],
            history=[_history_entry(entry, _at("history", n)) for n, entry in enumerate(history)],
        )


# -- checking documents ----------------------------------------------------------------------
# Each helper takes the value, then the path of its container (``where``) and its name or index
# there (``name``; None: ``where`` is the value's own path). A field's path is built only when it
# is wrong; the path of a list or object element once per element.

_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}\Z")


def _at(where: str, name: str | int | None) -> str:
    """The path of ``name`` inside ``where``: ``waits.gate``, ``history[3]``, ``context.steps['a b']``."""
    if name is None:
        return where
    if isinstance(name, int):
        return f"{where}[{name}]"
    if isinstance(name, str) and _PLAIN_KEY_RE.match(name):
        return f"{where}.{name}" if where else name
    return f"{where}[{_shown(name)}]"


def _shown(value: object) -> str:
    """A short JSON-flavoured picture of a value for a message."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 42 else f"{text[:38]}...{text[0]}"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 42 else f"{text[:38]}..."
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _wrong(value: object, expected: str, where: str, name: str | int | None = None) -> NoReturn:
    raise MalformedDocument(_at(where, name), f"expected {expected}, got {_shown(value)}")


def _need(data: dict, name: str, where: str) -> Any:
    """``data[name]``, or ``MalformedDocument`` naming the missing field."""
    try:
        return data[name]
    except KeyError:
        raise MalformedDocument(_at(where, name), "required field missing") from None


def _str(value: object, where: str, name: str | int | None = None) -> str:
    if isinstance(value, str) and value:
        return value
    _wrong(value, "a non-empty string", where, name)


def _int(value: object, where: str, name: str | int | None = None) -> int:
    """An int >= 1 (versions, attempts), not a bool."""
    if isinstance(value, int) and value.__class__ is not bool and value >= 1:
        return value
    _wrong(value, "an integer >= 1", where, name)


def _dict(value: object, where: str, name: str | int | None = None) -> dict:
    if isinstance(value, dict):
        return value
    _wrong(value, "an object", where, name)


def _list(value: object, where: str, name: str | int | None = None) -> list:
    if isinstance(value, list):
        return value
    _wrong(value, "a list", where, name)


def _choice(value: object, choices: tuple, where: str, name: str | int | None = None) -> str:
    if isinstance(value, str) and value in choices:
        return value
    _wrong(value, f"one of {', '.join(choices)}", where, name)


def _step(value: object, where: str, name: str | int | None = None) -> str:
    if isinstance(value, str) and value:
        return value
    _wrong(value, "a step key (a non-empty string)", where, name)


def _config(value: object, where: str, name: str | int | None = None) -> None:
    if value is not None and not isinstance(value, dict):
        _wrong(value, "an object or null (a step's config)", where, name)


def _time(value: object, where: str, name: str | int | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 text with a time zone."""
    if not isinstance(value, str):
        _wrong(value, "an ISO 8601 time with a time zone", where, name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _wrong(value, "an ISO 8601 time with a time zone", where, name)
    if moment.tzinfo is timezone.utc:  # what heph writes: no conversion needed
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MalformedDocument(_at(where, name), f"time {_shown(value)} has no time zone")
    return moment.astimezone(timezone.utc)


def _optional_time(value: object, where: str, name: str | int | None = None) -> datetime | None:
    return None if value is None else _time(value, where, name)


def _active(entry: object, where: str) -> dict:
    """A step ready to run: ``{"step", "config", "attempt", "first_attempt"}`` (config and
    first_attempt may be missing: the engine reads them with defaults)."""
    entry = _dict(entry, where)
    _step(_need(entry, "step", where), where, "step")
    _config(entry.get("config"), where, "config")
    _int(_need(entry, "attempt", where), where, "attempt")
    if "first_attempt" in entry:
        _int(entry["first_attempt"], where, "first_attempt")
    return entry


def _wait(wait: object, where: str) -> dict:
    """A paused step: ``{"kind", "config", "attempt", "first_attempt", "since", "due_at"}``
    (``last_error`` for retries, ``event`` for deadlines). ``since`` is the time it paused;
    ``due_at`` is required (a time) for timers, deadlines and retries, a time or null for events."""
    wait = _dict(wait, where)
    kind = _choice(_need(wait, "kind", where), WAIT_KINDS, where, "kind")
    _config(wait.get("config"), where, "config")
    _int(_need(wait, "attempt", where), where, "attempt")
    if "first_attempt" in wait:
        _int(wait["first_attempt"], where, "first_attempt")
    _time(_need(wait, "since", where), where, "since")
    due_at = wait.get("due_at")
    if due_at is not None:
        _time(due_at, where, "due_at")
    elif kind != "event":
        raise MalformedDocument(_at(where, "due_at"), f"a {kind} needs a due time, got null")
    if "last_error" in wait:
        _error(wait["last_error"], where, "last_error")
    if kind == "deadline":
        _str(_need(wait, "event", where), where, "event")
    return wait


def _arrived(arrived: dict) -> dict:
    """Join targets reached by some branches: step key -> its config (an object or null)."""
    for key, config in arrived.items():
        _step(key, "arrived", key)
        _config(config, "arrived", key)
    return arrived


def _failed(failed: object, where: str) -> dict | None:
    """The step to re-run on ``retry``: ``{"step", "config", "attempt"}``, or null."""
    if failed is None:
        return None
    failed = _dict(failed, where)
    _step(_need(failed, "step", where), where, "step")
    _config(failed.get("config"), where, "config")
    _int(_need(failed, "attempt", where), where, "attempt")
    return failed


def _error(error: object, where: str, name: str | int | None = None) -> dict | None:
    """A step's error: ``{"type", "message", "traceback", "step"}`` (traceback a string or
    null, and step, may be missing), or null."""
    if error is None:
        return None
    if not isinstance(error, dict):
        _wrong(error, "an object or null", where, name)
    path = _at(where, name)
    for key in ("type", "message"):
        if not isinstance(_need(error, key, path), str):
            _wrong(error[key], "a string", path, key)
    traceback = error.get("traceback")
    if traceback is not None and not isinstance(traceback, str):
        _wrong(traceback, "a string or null", path, "traceback")
    if "step" in error:
        _step(error["step"], path, "step")
    return error


def _lease(lease: object, where: str) -> dict | None:
    """Who runs the steps of a running instance: ``{"pid", "host", "since"}``, or null."""
    if lease is None:
        return None
    lease = _dict(lease, where)
    pid = _need(lease, "pid", where)
    if pid.__class__ is not int or pid < 0:
        _wrong(pid, "a process id (an integer >= 0)", where, "pid")
    if not isinstance(_need(lease, "host", where), str):
        _wrong(lease["host"], "a string", where, "host")
    _time(_need(lease, "since", where), where, "since")
    return lease


def _inbox_entry(entry: object, where: str) -> dict:
    """A buffered event: ``{"event", "data", "received_at"}`` (data an object)."""
    entry = _dict(entry, where)
    _str(_need(entry, "event", where), where, "event")
    _dict(_need(entry, "data", where), where, "data")
    _time(_need(entry, "received_at", where), where, "received_at")
    return entry


def _history_entry(data: object, where: str) -> HistoryEntry:
    """``{"step", "outcome", "event", "attempt", "started_at", "finished_at", "duration_ms",
    "error"}``; all but step and outcome may be missing (their defaults)."""
    data = _dict(data, where)
    event = data.get("event")
    if event is not None and not isinstance(event, str):
        _wrong(event, "a string or null (an event)", where, "event")
    duration = data.get("duration_ms")
    if duration is not None and (duration.__class__ not in (int, float) or not math.isfinite(duration)):
        _wrong(duration, "a number or null (milliseconds)", where, "duration_ms")
    started, finished = data.get("started_at"), data.get("finished_at")
    return HistoryEntry(
        step=_step(_need(data, "step", where), where, "step"),
        outcome=_choice(_need(data, "outcome", where), OUTCOMES, where, "outcome"),
        event=event,
        attempt=_int(data.get("attempt", 1), where, "attempt"),
        started_at=None if started is None else _time(started, where, "started_at"),
        finished_at=None if finished is None else _time(finished, where, "finished_at"),
        duration_ms=duration,
        error=_error(data.get("error"), where, "error"),
    )
