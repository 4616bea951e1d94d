"""Instance values: plain data that turns into JSON dicts and back without loss (no pickle)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from heph.core.definition import SCOPES
from heph.core.uniqueness import scope_of_id

FORMAT_VERSION = 1
STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("pending", "running", "waiting")
OUTCOMES = ("completed", "async", "resumed", "failed", "cancelled")
HEAD_FIELDS = ("format", "id", "run", "workflow", "version", "scope", "status", "created_at", "updated_at",
               "next_due_at",
               "context", "runtime_metadata", "active", "waits", "arrived", "completed", "failed", "error", "lease")


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
    """One step outcome: completed, async, resumed, failed or cancelled (never changed once made)."""

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
    def from_dict(cls, data: dict) -> HistoryEntry:
        return cls(
            step=_str(data["step"], "history.step"),
            outcome=_choice(data["outcome"], OUTCOMES, "history.outcome"),
            event=data.get("event"),
            attempt=_int(data.get("attempt", 1), "history.attempt"),
            started_at=from_iso(data.get("started_at")),
            finished_at=from_iso(data.get("finished_at")),
            duration_ms=data.get("duration_ms"),
            error=data.get("error"),
        )


@dataclass
class Instance:
    """One run of a workflow.

    ``active`` lists the steps ready to run (``{"step", "config", "attempt", "first_attempt"}``);
    ``waits`` maps each paused step to ``{"kind": "event"|"timer"|"retry", "config", "attempt",
    "first_attempt", "since", "due_at"}``; ``arrived`` holds join targets reached by some but
    not yet all branches; ``failed`` is the step to re-run on ``retry``. ``run`` identifies
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
        )

    def deepcopy(self) -> Instance:
        """A copy sharing nothing with this one."""
        return copy.deepcopy(self)

    def head(self) -> tuple:
        """The values of ``HEAD_FIELDS`` — the document ``to_dict`` makes, but for the history."""
        return (FORMAT_VERSION, self.id, self.run, self.workflow, self.version, self.scope, self.status,
                to_iso(self.created_at), to_iso(self.updated_at), to_iso(self.next_due_at),
                {"initial": self.context.initial, "steps": self.context.steps}, self.runtime_metadata,
                self.active, self.waits, self.arrived, self.completed, self.failed, self.error, self.lease)

    def to_dict(self, history: bool = True) -> dict:
        """Plain JSON data, with a format version (without ``history``: all but the history)."""
        doc = dict(zip(HEAD_FIELDS, self.head()))
        if history:
            doc["history"] = [h.to_dict() for h in self.history]
        return doc

    @classmethod
    def from_dict(cls, data: object) -> Instance:
        """Rebuild an instance; ``ValueError`` says what is wrong with malformed data."""
        if not isinstance(data, dict):
            raise ValueError("an instance document must be a JSON object")
        fmt = data.get("format")
        if fmt != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {fmt!r} (this heph reads format {FORMAT_VERSION})")
        try:
            context = data["context"]
            if not isinstance(context, dict):
                raise ValueError("context must be an object")
            instance_id = _str(data["id"], "id")
            return cls(
                id=instance_id,
                run=_str(data["run"], "run"),
                workflow=_str(data["workflow"], "workflow"),
                version=_int(data["version"], "version"),
                scope=_choice(data.get("scope", scope_of_id(instance_id)), SCOPES, "scope"),
                status=_choice(data["status"], STATUSES, "status"),
                created_at=from_iso(_str(data["created_at"], "created_at")),  # type: ignore[arg-type]
                updated_at=from_iso(_str(data["updated_at"], "updated_at")),  # type: ignore[arg-type]
                context=Context(_dict(context["initial"], "context.initial"), _dict(context["steps"], "context.steps")),
                runtime_metadata=_dict(data.get("runtime_metadata", {}), "runtime_metadata"),
                active=_list(data.get("active", []), "active"),
                waits=_dict(data.get("waits", {}), "waits"),
                arrived=_dict(data.get("arrived", {}), "arrived"),
                completed=_list(data.get("completed", []), "completed"),
                failed=data.get("failed"),
                error=data.get("error"),
                lease=data.get("lease"),
                history=[HistoryEntry.from_dict(h) for h in _list(data.get("history", []), "history")],
            )
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed instance: {exc}") from None


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {type(value).__name__}")
    return value


def _dict(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _choice(value: object, choices: tuple, what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value  # type: ignore[return-value]
