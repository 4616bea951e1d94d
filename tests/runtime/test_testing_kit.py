"""heph.testing: run_to_completion, paths, run_step and the heph_app fixture."""

import pytest

import heph
from heph import ASYNC, Done, Step, Unique, Wait, Workflow
from heph.core.current import in_use
from heph.testing import assert_path, memory_app, path, run_step, run_to_completion, steps_taken


class KitAsk(Step):
    events = ["answered"]

    def execute(self, instance, config, context):
        return ASYNC


class KitGreet(Step):
    events = ["greeted"]

    def execute(self, instance, config, context):
        return "greeted", {"text": f"hello {context.initial.get('name', 'you')}"}


class KitFlow(Workflow):
    unique = Unique("kit")
    name = "kit_flow"
    start = KitGreet
    transitions = {KitGreet: {"greeted": (Wait, {"duration": 2, "unit": "day"})}, Wait: {"timeout": KitAsk},
                   KitAsk: {"answered": Done}}


def test_the_fixture_installs_an_in_memory_app_and_removes_it(heph_app):
    assert heph.current_app() is heph_app
    assert isinstance(heph_app.storage, heph.MemoryStorage)
    assert isinstance(heph_app.clock, heph.ManualClock)


def test_the_fixture_leaves_no_app_behind():
    assert in_use() is None


def test_run_to_completion_skips_time_and_feeds_events(heph_app):
    start = heph_app.clock.now()
    done = run_to_completion(KitFlow, "k1", {"name": "Ada"}, events=["answered"])
    assert done.status == "completed"
    assert (heph_app.clock.now() - start).days == 2
    assert steps_taken(done) == ["kit_greet", "wait", "kit_ask", "done"]
    assert path(done)[1] == ("wait", "timeout")
    assert_path(done, ["kit_greet", "wait", "kit_ask", "done"])
    with pytest.raises(AssertionError, match="path of kit::k1"):
        assert_path(done, ["kit_greet", "done"])


def test_run_to_completion_hands_over_event_data(heph_app):
    for item in [("answered", {"by": "ann"}), ("answered", "kit_ask", {"by": "ann"})]:
        done = run_to_completion(KitFlow, f"d{len(item)}", events=[item])
        assert done.context.steps["kit_ask"] == {"by": "ann"}
    plain = run_to_completion(KitFlow, "d1", events=[("answered", "kit_ask")])
    assert plain.context.steps["kit_ask"] == {}


def test_run_to_completion_says_which_event_is_missing(heph_app):
    with pytest.raises(AssertionError, match="waits on kit_ask"):
        run_to_completion(KitFlow, "k2")


def test_an_explicit_app_works_without_the_fixture():
    app = memory_app()
    assert run_to_completion(KitFlow, "k3", events=[("answered", "kit_ask")], app=app).status == "completed"


def test_run_step_calls_execute_with_a_hand_made_context():
    assert run_step(KitGreet, {"name": "Bo"}) == ("greeted", {"text": "hello Bo"})
    assert run_step(KitAsk) is ASYNC
