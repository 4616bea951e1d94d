"""Steps: the ``Step`` base class, return forms, retry policies and the built-in steps."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

log = logging.getLogger("heph")


class _Async:
    """The ``ASYNC`` sentinel: returned by ``execute`` to pause the step until resumed."""

    _instance: ClassVar[_Async | None] = None

    def __new__(cls) -> _Async:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "heph.ASYNC"

    def __reduce__(self):
        return (_Async, ())


ASYNC = _Async()


@dataclass(frozen=True)
class Error:
    """Returned by ``execute`` to fail the step with ``reason``."""

    reason: Any


BACKOFFS = ("exponential", "linear", "constant")


@dataclass(frozen=True)
class Retry:
    """How often a failing step is attempted, and how long to wait between attempts."""

    max_attempts: int = 3
    backoff: str = "exponential"
    base_delay: float = 1.0
    max_delay: float = 60.0

    def problems(self) -> list[str]:
        """Every way this policy is invalid (empty when valid)."""
        found = []
        if not _is_int(self.max_attempts) or self.max_attempts < 1:
            found.append(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.backoff not in BACKOFFS:
            found.append(f"backoff must be one of {', '.join(BACKOFFS)}, got {self.backoff!r}")
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                found.append(f"{name} must be a number >= 0, got {value!r}")
        return found

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th consecutive failure, capped at ``max_delay``."""
        n = max(1, failed_attempts)
        if self.backoff == "exponential":
            raw = self.base_delay * (2 ** min(n - 1, 64))
        elif self.backoff == "linear":
            raw = self.base_delay * n
        else:
            raw = self.base_delay
        return float(min(raw, self.max_delay))


@dataclass(frozen=True)
class Deadline:
    """How long a paused step waits for an event before it is resumed with ``event`` itself
    (set as ``deadline = Deadline(hours=24)`` on a step class; ``event`` must be one of the
    step's ``events``). The duration counts from the moment the step paused."""

    seconds: float = 0
    minutes: float = 0
    hours: float = 0
    days: float = 0
    event: str = "timeout"

    @property
    def total_seconds(self) -> float:
        return float(self.seconds + 60 * self.minutes + 3600 * self.hours + 86400 * self.days)

    def problems(self) -> list[str]:
        """Every way this deadline is invalid on its own (empty when valid)."""
        found = [f"{name} must be a number >= 0, got {getattr(self, name)!r}"
                 for name in ("seconds", "minutes", "hours", "days")
                 if not _is_number(getattr(self, name)) or getattr(self, name) < 0]
        if not found and not self.total_seconds > 0:
            found.append("its duration must be more than 0 (give seconds=, minutes=, hours= or days=)")
        if not isinstance(self.event, str) or not self.event:
            found.append(f"event must be a non-empty string, got {self.event!r}")
        return found

    def due_at(self, paused_at: datetime) -> datetime:
        return paused_at + timedelta(seconds=self.total_seconds)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``ProcessPayment`` -> ``process_payment``; ``HTTPRequest`` -> ``http_request``."""
    return _CAMEL_RE.sub("_", name).lower()


class Step:
    """Base class of a workflow step.

    Subclasses declare ``events`` (the events ``execute`` may emit) and implement
    ``execute(instance, config, context)``, returning ``"event"``,
    ``("event", updates)``, ``("event", updates, metadata)``, ``ASYNC`` or
    ``Error(reason)``. ``key`` (the context key) defaults to the snake_case class name.
    """

    events: ClassVar[list[str]] = []
    key: ClassVar[str]
    retry: ClassVar[Retry | None] = None
    deadline: ClassVar[Deadline | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "key" not in cls.__dict__:
            cls.key = snake_case(cls.__name__)

    def attempt(self, instance: Any) -> int:
        """Which attempt of this step is running: 1 the first time, 2 on its first retry, and so
        on (``heph retry`` continues the count). Read from the step's entry in
        ``instance.active``; 1 when the instance has none (as in ``run_step`` without one)."""
        key = step_key(type(self))
        for entry in getattr(instance, "active", None) or ():
            if isinstance(entry, dict) and entry.get("step") == key:
                attempt = entry.get("attempt", 1)
                return attempt if _is_int(attempt) and attempt >= 1 else 1
        return 1


def step_key(step: type) -> str:
    """The context key of a step class (its ``key``, else its snake_case name)."""
    key = getattr(step, "key", None)
    return key if isinstance(key, str) else snake_case(step.__name__)


class Done(Step):
    """Terminal step: every path of a workflow ends here."""

    events = ["done"]
    key = "done"

    def execute(self, instance, config, context):
        return "done"


UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class Wait(Step):
    """A durable timer: pauses, and is resumed with ``timeout`` by ``heph tick``/``worker`` when due.

    Config: ``{"duration": int > 0, "unit": "second"|"minute"|"hour"|"day"}``.
    """

    events = ["timeout"]
    key = "wait"

    def execute(self, instance, config, context):
        return ASYNC

    @staticmethod
    def config_problems(config: object) -> list[str]:
        """Every way ``config`` is not a valid Wait config (empty when valid)."""
        if not isinstance(config, dict):
            return ['Wait needs a config such as {"duration": 5, "unit": "minute"}']
        found = []
        unknown = sorted(set(config) - {"duration", "unit"})
        if unknown:
            found.append(f"Wait config has unknown keys {unknown}; only 'duration' and 'unit' are allowed")
        duration = config.get("duration")
        if not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
            found.append(f"Wait duration must be an int > 0, got {duration!r}")
        if config.get("unit") not in UNITS:
            found.append(f"Wait unit must be one of {', '.join(UNITS)}, got {config.get('unit')!r}")
        return found

    @staticmethod
    def due_at(config: dict, started_at: datetime) -> datetime:
        """When a Wait started at ``started_at`` with ``config`` is due."""
        return started_at + timedelta(seconds=config["duration"] * UNITS[config["unit"]])


class WaitForEvent(Step):
    """Pauses until resumed with ``received``."""

    events = ["received"]
    key = "wait_for_event"

    def execute(self, instance, config, context):
        return ASYNC


class Debug(Step):
    """Logs the context and the execution history (logger ``heph``, level DEBUG)."""

    events = ["completed"]
    key = "debug"

    def execute(self, instance, config, context):
        log.debug(
            "debug step of %s: initial=%r steps=%r history=%r",
            instance.id,
            context.initial,
            context.steps,
            [(h.step, h.outcome, h.event) for h in instance.history],
        )
        return "completed"
