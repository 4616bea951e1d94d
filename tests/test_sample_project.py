"""The sample project (sample_project/, used by the README's CLI tour) defines and runs as documented."""

from __future__ import annotations

import importlib
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from heph.core import engine

SAMPLE = Path(__file__).resolve().parent.parent / "sample_project"
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def shop(monkeypatch):
    """Import a module of the sample project (each is imported once; later calls reuse it)."""
    monkeypatch.syspath_prepend(str(SAMPLE))

    def load(name: str):
        return importlib.import_module(f"shop.{name}")

    return load


def context(name: str) -> dict:
    return json.loads((SAMPLE / "contexts" / f"{name}.json").read_text())


def run(definition, instance, now=NOW):
    """Run every runnable step, as the runtime does between two saves."""
    while (entry := engine.next_step(instance)) is not None:
        outcome = engine.execute_step(definition, instance, entry)
        instance = engine.apply_outcome(definition, instance, entry, outcome, now, now)
    return instance


def start(flow, value: str, ctx: dict, version: int | None = None, now=NOW):
    definition = flow.definition(version)
    unique = flow.__heph_unique__
    instance_id = f"{unique.key}::{value}::0badcafe" if unique.scope == "none" else flow.instance_id(value)
    return definition, run(definition, engine.new_instance(definition, instance_id, ctx, now, "r1"), now)


def path(instance) -> list[str]:
    """The step keys of the history, in order."""
    return [h.step for h in instance.history]


def outcomes(instance, step: str) -> list[tuple[str, int]]:
    return [(h.outcome, h.attempt) for h in instance.history if h.step == step]


# -- the project file -----------------------------------------------------------------


def test_heph_yaml_lists_every_shop_module_and_every_context_file_is_json():
    config = yaml.safe_load((SAMPLE / "heph.yaml").read_text())
    assert config["storage"] == {"path": ".heph"}
    modules = {f"shop.{p.stem}" for p in (SAMPLE / "shop").glob("*.py") if p.stem != "__init__"}
    assert set(config["workflows"]) == modules
    for file in (SAMPLE / "contexts").glob("*.json"):
        assert isinstance(json.loads(file.read_text()), dict), file


@pytest.mark.parametrize(
    ("module", "cls", "name", "key", "scope", "versions"),
    [
        ("orders", "OrderFlow", "orderflow", "orderid", "workflow", [1]),
        ("checkout", "Checkout", "checkout", "checkoutid", "workflow", [1]),
        ("payments", "PaymentFlow", "paymentflow", "paymentid", "workflow", [1]),
        ("fulfilment", "Fulfilment", "fulfilment", "shipment", "workflow", [1]),
        ("reminders", "ReminderFlow", "reminderflow", "reminderid", "workflow", [1]),
        ("users", "CreateUser", "createuser", "userid", "workflow", [1, 2]),
        ("notifications", "NotificationFlow", "notificationflow", "notification", "none", [1]),
    ],
)
def test_each_workflow_defines(shop, module, cls, name, key, scope, versions):
    from heph.core.workflow import lookup

    flow = getattr(shop(module), cls)
    assert lookup(name) is flow
    assert (flow.__heph_unique__.key, flow.__heph_unique__.scope) == (key, scope)
    assert sorted(flow.__heph_versions__) == versions
    for version in versions:
        definition = flow.definition(version)
        assert definition.name == name and definition.version == version
        assert "done" in definition.steps
        for step in definition.steps.values():
            assert step.__doc__ and step.__doc__.strip(), f"{step.__qualname__} needs a docstring"


# -- orders and checkout ----------------------------------------------------------------


def test_orderflow_valid_order_is_charged_and_confirmed(shop):
    orders = shop("orders")
    assert orders.OrderFlow.definition().tags == ["orders", "checkout"]
    assert orders.OrderFlow.definition().metadata == {"team": "payments", "priority": "high"}
    _, inst = start(orders.OrderFlow, "order42", context("order42"))
    assert inst.id == "orderid::order42"
    assert inst.status == "completed"
    assert path(inst) == ["validate_order", "charge_payment", "send_confirmation", "done"]
    assert inst.context.steps["validate_order"] == {"item_count": 2}
    assert inst.context.steps["charge_payment"] == {"amount_charged": 4999}


def test_orderflow_empty_order_is_invalid(shop):
    orders = shop("orders")
    _, inst = start(orders.OrderFlow, "order43", context("empty_order"))
    assert inst.status == "completed"
    assert path(inst) == ["validate_order", "done"]
    assert inst.history[0].event == "invalid"


def test_checkout_logs_the_payment_and_runs_debug(shop, caplog):
    checkout = shop("checkout")
    with caplog.at_level(logging.DEBUG):
        _, inst = start(checkout.Checkout, "checkout99", context("checkout"))
    assert inst.status == "completed"
    assert path(inst) == ["validate", "process_payment", "notify", "debug", "done"]
    assert "Payment of 4999 processed!" in caplog.messages
    assert any(r.name == "heph" and "checkoutid::checkout99" in r.getMessage() for r in caplog.records)


def test_checkout_without_amount_is_invalid(shop):
    _, inst = start(shop("checkout").Checkout, "checkout100", {})
    assert path(inst) == ["validate", "done"]


# -- payments: async steps ------------------------------------------------------------------


def test_paymentflow_waits_then_fulfils_on_confirmation(shop):
    payments = shop("payments")
    d, inst = start(payments.PaymentFlow, "pay1", context("payment"))
    assert inst.status == "waiting"
    assert inst.waiting == ["wait_for_payment"]
    assert inst.runtime_metadata == {"provider": "acmepay"}
    assert inst.context.steps["request_payment"]["request_id"] == "req-pay1"
    assert inst.waits["wait_for_payment"]["kind"] == "deadline"
    assert inst.next_due_at == NOW + timedelta(days=3)
    inst = run(d, engine.resume(d, inst, "payment_confirmed", NOW + timedelta(minutes=5),
                                data={"transaction_id": "tx-981"}))
    assert inst.status == "completed"
    assert path(inst) == ["request_payment", "wait_for_payment", "wait_for_payment", "fulfil_order", "done"]
    assert outcomes(inst, "wait_for_payment") == [("async", 1), ("resumed", 1)]
    assert inst.context.steps["fulfil_order"] == {"order": "order42", "paid": 4999, "transaction_id": "tx-981"}


def test_paymentflow_gives_up_after_its_deadline(shop):
    payments = shop("payments")
    d, inst = start(payments.PaymentFlow, "pay3", context("payment"))
    fired, actions = engine.fire_due(d, inst, NOW + timedelta(days=3))
    assert [a["kind"] for a in actions] == ["deadline"]
    inst = run(d, fired)
    assert inst.status == "completed"
    assert path(inst) == ["request_payment", "wait_for_payment", "wait_for_payment", "release_stock", "done"]
    assert [h.event for h in inst.history if h.step == "wait_for_payment"] == [None, "payment_expired"]


def test_paymentflow_compensates_on_failure(shop):
    payments = shop("payments")
    d, inst = start(payments.PaymentFlow, "pay2", context("payment"))
    inst = run(d, engine.resume(d, inst, "payment_failed", NOW))
    assert inst.status == "completed"
    assert path(inst)[-2:] == ["release_stock", "done"]
    assert "fulfil_order" not in path(inst)


# -- fulfilment: fan-out, join, dynamic route, retry ------------------------------------------


BRANCHES = [["pick_items", "inspect_items", "wrap_items"], ["print_label"], ["notify_warehouse", "book_dock_slot"]]


def assert_fulfilment_shape(inst, carrier: str):
    steps = [h.step for h in inst.history if h.outcome == "completed"]
    assert steps[0] == "reserve_stock"
    assert steps[-3:] == ["pack", carrier, "done"]
    middle = steps[1:-3]
    assert sorted(middle) == sorted(k for branch in BRANCHES for k in branch)
    for branch in BRANCHES:  # each branch runs in order; pack (the join) runs once, after all of them
        assert [k for k in middle if k in branch] == branch
    assert [h.step for h in inst.history].count("pack") == 1


def test_fulfilment_high_priority_with_flaky_printer_retries_then_ships_express(shop):
    fulfilment = shop("fulfilment")
    d, inst = start(fulfilment.Fulfilment, "ship1", context("fulfilment"))
    # The other branches finished; the label waits for its retry, so pack has not run.
    assert inst.status == "waiting"
    assert inst.waiting == ["print_label"]
    assert outcomes(inst, "print_label") == [("failed", 1)]
    assert inst.history[[h.step for h in inst.history].index("print_label")].error["message"] == "label printer jammed"
    assert "pack" not in path(inst)
    assert engine.fire_due(d, inst, NOW + timedelta(milliseconds=500))[1] == []  # not due yet

    later = NOW + timedelta(seconds=1)  # base_delay=1, exponential: the first retry is due after 1s
    inst, fired = engine.fire_due(d, inst, later)
    assert [f["kind"] for f in fired] == ["retry"]
    inst = run(d, inst, later)
    assert inst.status == "completed"
    assert outcomes(inst, "print_label") == [("failed", 1), ("completed", 2)]
    assert_fulfilment_shape(inst, "express_ship")
    assert inst.context.steps["pack"] == {"label": "LBL-SHIP1", "dock": 3}
    assert inst.context.steps["express_ship"]["carrier"] == "express"


def test_fulfilment_standard_priority_ships_standard(shop):
    fulfilment = shop("fulfilment")
    _, inst = start(fulfilment.Fulfilment, "ship2", {"items": ["widget"]})
    assert inst.status == "completed"
    assert_fulfilment_shape(inst, "standard_ship")


def test_fulfilment_jammed_printer_exhausts_retries_and_fails_then_retry_succeeds(shop):
    fulfilment = shop("fulfilment")
    d, inst = start(fulfilment.Fulfilment, "ship3", context("fulfilment_jammed"))
    now = NOW
    for delay in (1, 2):  # exponential backoff: 1s, then 2s
        now += timedelta(seconds=delay)
        inst, fired = engine.fire_due(d, inst, now)
        assert len(fired) == 1
        inst = run(d, inst, now)
    assert inst.status == "failed"
    assert inst.error["step"] == "print_label"
    assert outcomes(inst, "print_label") == [("failed", 1), ("failed", 2), ("failed", 3)]

    inst = run(d, engine.retry(d, inst, now), now)  # `heph retry`: the printer was fixed
    assert inst.status == "completed"
    assert outcomes(inst, "print_label")[-1] == ("completed", 4)
    assert_fulfilment_shape(inst, "standard_ship")


# -- reminders: durable timer and step config ------------------------------------------------


def test_reminderflow_waits_an_hour_then_sends_the_configured_reminder(shop):
    reminders = shop("reminders")
    d, inst = start(reminders.ReminderFlow, "user7", context("user"))
    assert inst.status == "waiting"
    assert inst.waiting == ["wait"]
    assert inst.next_due_at == NOW + timedelta(hours=1)
    assert inst.context.steps["send_welcome"]["text"] == "Welcome to the shop, Alice!"
    assert engine.fire_due(d, inst, NOW + timedelta(minutes=59))[1] == []

    later = NOW + timedelta(hours=1)
    inst, fired = engine.fire_due(d, inst, later)
    assert [f["kind"] for f in fired] == ["timer"]
    inst = run(d, inst, later)
    assert inst.status == "completed"
    assert path(inst) == ["send_welcome", "wait", "wait", "send_reminder", "done"]
    assert outcomes(inst, "wait") == [("async", 1), ("resumed", 1)]
    assert inst.context.steps["send_reminder"] == {
        "template": "come_back",
        "channel": "sms",
        "text": "Alice, your basket misses you.",
    }


# -- users: versions ----------------------------------------------------------------------------


def test_createuser_resolves_versions(shop):
    CreateUser = shop("users").CreateUser
    assert CreateUser.resolve_version(None, {"legacy": True}) == 1
    assert CreateUser.resolve_version(None, {}) == 2
    assert CreateUser.resolve_version(1, {}) == 1
    assert CreateUser.resolve_version(2, {"legacy": True}) == 2


def test_createuser_v1_completes_at_once(shop):
    CreateUser = shop("users").CreateUser
    _, inst = start(CreateUser, "bob", context("user"), version=1)
    assert (inst.workflow, inst.version, inst.status) == ("createuser", 1, "completed")
    assert path(inst) == ["create_account", "done"]


def test_createuser_v2_waits_for_email_verification(shop):
    CreateUser = shop("users").CreateUser
    d, inst = start(CreateUser, "alice", context("user"), version=2)
    assert (inst.workflow, inst.version, inst.status) == ("createuser", 2, "waiting")
    assert inst.waiting == ["verify_email"]
    inst = run(d, engine.resume(d, inst, "email_verified", NOW))
    assert inst.status == "completed"
    assert path(inst) == ["create_account", "verify_email", "verify_email", "done"]
    assert inst.context.steps["create_account"] == {"email": "alice@example.com", "plan": "pro"}


# -- notifications: scope none ---------------------------------------------------------------------


def test_notificationflow_has_scope_none_and_runs(shop):
    NotificationFlow = shop("notifications").NotificationFlow
    assert NotificationFlow.instance_id("notification::welcome::0badcafe") == "notification::welcome::0badcafe"
    _, inst = start(NotificationFlow, "welcome", context("notification"))
    assert inst.status == "completed"
    assert path(inst) == ["render_message", "deliver", "done"]
    assert inst.context.steps["render_message"]["text"] == "Hello Alice, welcome aboard!"


def test_notificationflow_unknown_template_fails_with_the_reason(shop):
    NotificationFlow = shop("notifications").NotificationFlow
    _, inst = start(NotificationFlow, "oops", {"template": "nope"})
    assert inst.status == "failed"
    assert inst.error["step"] == "render_message"
    assert inst.error["type"] == "builtins.ValueError"
    assert "unknown template 'nope'" in inst.error["message"]
