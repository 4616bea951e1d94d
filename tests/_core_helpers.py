"""Shared helpers for the pure-core tests: a fixed clock, a step factory and the engine loop."""

from __future__ import annotations

from datetime import datetime, timezone

from heph.core import engine
from heph.core.instance import Instance
from heph.core.steps import Step

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_step(name: str, events, result=None, *, key=None, retry=None, fn=None) -> type:
    """A ``Step`` subclass called ``name``.

    ``execute`` calls ``fn(instance, config, context)`` when given, else returns
    ``result`` (default: the first declared event).
    """

    def execute(self, instance, config, context):
        if fn is not None:
            return fn(instance, config, context)
        return result if result is not None else events[0]

    namespace = {"events": list(events), "execute": execute, "__qualname__": name, "__module__": __name__}
    if key is not None:
        namespace["key"] = key
    if retry is not None:
        namespace["retry"] = retry
    return type(name, (Step,), namespace)


def run(definition, instance: Instance, now: datetime = NOW, finished: datetime | None = None) -> Instance:
    """Run every ready step until the instance completes, fails or waits."""
    while entry := engine.next_step(instance):
        outcome = engine.execute_step(definition, instance, entry)
        instance = engine.apply_outcome(definition, instance, entry, outcome, now, finished or now)
    return instance


def start(workflow, initial: dict | None = None, now: datetime = NOW, value: str = "x", version: int | None = None):
    """(definition, instance) after starting ``workflow`` and running it as far as it goes."""
    definition = workflow.definition(version)
    key = definition.unique.key if definition.unique is not None else "k"
    instance = engine.new_instance(definition, f"{key}::{value}", dict(initial or {}), now, "run1")
    return definition, run(definition, instance, now)


def executed(instance: Instance) -> list[str]:
    """Keys of the steps in history order, one per ``completed`` entry."""
    return [h.step for h in instance.history if h.outcome == "completed"]


def define(name: str, **attrs) -> type:
    """A workflow class ``Flow_<name>`` whose workflow name is ``name`` (unique "k" unless given)."""
    from heph.core.workflow import Workflow, WorkflowMeta

    namespace = {"__module__": __name__, "__qualname__": f"Flow_{name}", "name": name, **attrs}
    namespace.setdefault("unique", "k")
    return WorkflowMeta(f"Flow_{name}", (Workflow,), namespace)
