"""OpenTelemetry tracing for heph (optional extra ``otel``): ``heph.otel.instrument()``.

Telemetry events become spans: one span ``heph.run <workflow>`` per run segment
(a start, resume, timer, retry or recovery that runs steps), a child span
``heph.step <key>`` per step execution, and span events for resumes and
transitions. Attributes: ``heph.instance_id``, ``heph.run``, ``heph.workflow``,
``heph.version``, ``heph.step``, ``heph.event``, ``heph.trigger``, ``heph.status``.
"""

from __future__ import annotations

from typing import Any, Callable

from heph.runtime.telemetry import on


def _attributes(payload: dict) -> dict:
    keys = {"instance_id": "heph.instance_id", "run": "heph.run", "workflow": "heph.workflow",
            "version": "heph.version", "step": "heph.step", "event": "heph.event",
            "trigger": "heph.trigger", "status": "heph.status", "attempt": "heph.attempt"}
    return {name: payload[key] for key, name in keys.items() if payload.get(key) is not None}


def instrument(tracer_provider: Any = None) -> Callable[[], None]:
    """Start turning heph telemetry into spans; returns a function that stops it."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    tracer = trace.get_tracer("heph", tracer_provider=tracer_provider)
    segments: dict[tuple, Any] = {}
    steps: dict[tuple, Any] = {}

    def key_of(payload: dict) -> tuple:
        return payload.get("instance_id"), payload.get("run")

    def handle(name: str, payload: dict) -> None:
        key = key_of(payload)
        if name == "segment.start":
            segments[key] = tracer.start_span(f"heph.run {payload.get('workflow')}", attributes=_attributes(payload))
        elif name == "segment.stop":
            span = segments.pop(key, None)
            if span is not None:
                span.set_attribute("heph.status", payload.get("status"))
                if payload.get("status") == "failed":
                    span.set_status(Status(StatusCode.ERROR, "workflow failed"))
                span.end()
        elif name == "step.start":
            parent = segments.get(key)
            context = trace.set_span_in_context(parent) if parent is not None else None
            steps[key] = tracer.start_span(f"heph.step {payload.get('step')}", context=context,
                                           attributes=_attributes(payload))
        elif name in ("step.stop", "step.async", "step.exception"):
            span = steps.pop(key, None)
            if span is not None:
                span.set_attributes(_attributes(payload))
                span.set_attribute("heph.outcome", {"step.stop": "completed", "step.async": "async",
                                                    "step.exception": "failed"}[name])
                if name == "step.exception":
                    span.set_status(Status(StatusCode.ERROR, str(payload.get("message"))))
                    span.add_event("exception", {"exception.type": str(payload.get("error")),
                                                 "exception.message": str(payload.get("message"))})
                span.end()
        elif name in ("step.resume", "workflow.transition", "workflow.start", "workflow.stop", "workflow.exception"):
            span = segments.get(key)
            if span is not None:
                attributes = _attributes(payload)
                if name == "workflow.transition":
                    attributes["heph.to"] = ",".join(payload.get("to", []))
                span.add_event(name, attributes)

    return on("*", handle)
