"""Helpers for testing workflows: an in-memory app, a manual clock, running to completion, paths."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from heph.core.instance import Context, Instance
from heph.runtime.app import Hephaestus, current_app
from heph.runtime.clock import ManualClock
from heph.runtime.storage.memory import MemoryStorage


def memory_app(clock: ManualClock | None = None) -> Hephaestus:
    """A ``Hephaestus`` on ``MemoryStorage`` with a ``ManualClock`` (``app.clock.advance(hours=1)``)."""
    return Hephaestus(storage=MemoryStorage(), clock=clock or ManualClock())


def run_to_completion(
    workflow: Any,
    value: str,
    context: dict | None = None,
    *,
    events: Iterable[str | tuple[str, str]] = (),
    version: int | None = None,
    app: Hephaestus | None = None,
    max_rounds: int = 1000,
    **options: Any,
) -> Instance:
    """Start ``workflow`` and drive it until it finishes; return the final instance.

    Whenever the instance waits, the next of ``events`` (an event, ``(event, step_key)``,
    ``(event, data)`` with a dict of event data, or ``(event, step_key, data)``) is
    handed to it if a waiting step accepts it; otherwise, when a timer or retry is pending, a
    ``ManualClock`` jumps to the next due time and ``tick`` fires it — no sleeping. Raises ``AssertionError`` if the
    instance waits for an event that ``events`` does not supply.
    """
    app = app or current_app()
    queue = list(events)
    instance_id = app.start(workflow, value, context, version=version, **options)
    name = app.workflow(workflow).__heph_workflow_name__
    for _ in range(max_rounds):
        instance = app.get(instance_id, workflow=name)
        if not instance.is_active:
            return instance
        definition = app.definition_of(instance)
        accepted = {event for key, wait in instance.waits.items() if wait["kind"] != "retry"
                    for event in definition.events_of(key)}
        due = instance.next_due_at
        if queue:
            event, step, data = _event_of(queue[0])
            if event in accepted or due is None:
                queue.pop(0)
                app.resume(instance_id, event, data, step=step, workflow=name)
                continue
        if due is None:
            raise AssertionError(
                f"{instance_id} waits on {', '.join(instance.waiting)} and no event is left to resume it"
            )
        clock = app.clock
        if not isinstance(clock, ManualClock):
            raise AssertionError(f"{instance_id} waits for a timer due {due}: use a ManualClock to skip time")
        if clock.now() < due:
            clock.set(due)
        app.tick()
    raise AssertionError(f"{instance_id} did not finish within {max_rounds} rounds")


def path(instance: Instance) -> list[tuple[str, str | None]]:
    """The ``(step key, event)`` pairs of every step that finished, in order (completed or resumed)."""
    return [(h.step, h.event) for h in instance.history if h.outcome in ("completed", "resumed")]


def steps_taken(instance: Instance) -> list[str]:
    """The keys of the steps that finished, in order."""
    return [step for step, _ in path(instance)]


def assert_path(instance: Instance, expected: Sequence[str | tuple[str, str]]) -> None:
    """Assert the steps (or ``(step, event)`` pairs) the instance went through, in order."""
    if expected and all(isinstance(e, tuple) for e in expected):
        actual: list = path(instance)
        expected = [tuple(e) for e in expected]  # type: ignore[misc]
    else:
        actual = steps_taken(instance)
    if list(actual) != list(expected):
        raise AssertionError(f"path of {instance.id} was {actual}, expected {list(expected)}")


def run_step(
    step: type,
    initial: dict | None = None,
    *,
    steps: dict | None = None,
    config: dict | None = None,
    instance: Instance | None = None,
) -> Any:
    """Call one step's ``execute`` with a hand-made context (and instance); return what it returned."""
    from datetime import datetime, timezone

    context = Context(initial=dict(initial or {}), steps=dict(steps or {}))
    if instance is None:
        now = datetime.now(timezone.utc)
        instance = Instance(id="test::step", workflow="test", version=1, status="running", context=context,
                            run="test", created_at=now, updated_at=now)
    return step().execute(instance, config, context)


def _event_of(item: Any) -> tuple[str, str | None, dict | None]:
    """(event, step key, data) of one item of ``run_to_completion``'s ``events``."""
    if not isinstance(item, tuple):
        return item, None, None
    if len(item) == 3:
        return item
    event, extra = item
    return (event, None, extra) if isinstance(extra, dict) else (event, extra, None)
