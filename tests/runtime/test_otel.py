"""OpenTelemetry spans from heph telemetry, checked with the SDK's in-memory exporter."""

import pytest

from heph import ASYNC, Done, Error, Step, Unique, Workflow
from heph.testing import memory_app

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


class OtFirst(Step):
    events = ["ok"]

    def execute(self, instance, config, context):
        return "ok"


class OtWait(Step):
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class OtBoom(Step):
    events = ["never"]

    def execute(self, instance, config, context):
        return Error("boom")


class OtFlow(Workflow):
    unique = Unique("ot")
    name = "ot_flow"
    start = OtFirst
    transitions = {OtFirst: {"ok": OtWait}, OtWait: {"go": Done}}


class OtFailing(Workflow):
    unique = Unique("otf")
    name = "ot_failing"
    start = OtBoom
    transitions = {OtBoom: {"never": Done}}


@pytest.fixture
def spans():
    import heph.otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stop = heph.otel.instrument(provider)
    app = memory_app()
    heph.use(app)
    try:
        yield exporter
    finally:
        stop()
        heph.use(None)


def test_one_span_per_segment_and_a_child_span_per_step(spans):
    OtFlow.start("a1")
    OtFlow.resume("a1", "go")
    finished = spans.get_finished_spans()
    runs = [s for s in finished if s.name == "heph.run ot_flow"]
    steps = [s for s in finished if s.name.startswith("heph.step")]
    assert len(runs) == 2
    assert [s.attributes["heph.trigger"] for s in runs] == ["start", "resume"]
    assert [s.name for s in steps] == ["heph.step ot_first", "heph.step ot_wait", "heph.step done"]
    for step in steps:
        assert step.parent is not None and step.parent.span_id in {r.context.span_id for r in runs}
        assert step.attributes["heph.instance_id"] == "ot::a1"
        assert step.attributes["heph.workflow"] == "ot_flow"
        assert step.attributes["heph.version"] == 1
    assert steps[1].attributes["heph.outcome"] == "async"
    resumed = runs[1]
    assert [e.name for e in resumed.events][:1] == ["step.resume"]
    assert resumed.events[0].attributes["heph.event"] == "go"
    assert any(e.name == "workflow.transition" for e in runs[0].events)
    assert resumed.attributes["heph.status"] == "completed"


def test_a_failing_step_marks_its_span_as_error(spans):
    OtFailing.start("b1")
    finished = spans.get_finished_spans()
    step = next(s for s in finished if s.name == "heph.step ot_boom")
    run = next(s for s in finished if s.name == "heph.run ot_failing")
    assert step.status.status_code.name == "ERROR"
    assert step.events[0].attributes["exception.message"] == "boom"
    assert run.status.status_code.name == "ERROR"


def test_instrumentation_stops(spans):
    import heph.otel

    stop = heph.otel.instrument()
    stop()
    OtFlow.start("c1")
    assert spans.get_finished_spans()  # the fixture's instrumentation still works
