"""Testing sample_project's workflows with heph.testing: no files, no sleeping.

The ``heph_app`` fixture comes from heph's pytest plugin: an in-memory app with a
manual clock, installed for the workflow facades and removed after the test.
"""

from shop.fulfilment import Fulfilment, PrintLabel
from shop.payments import PaymentFlow
from shop.reminders import ReminderFlow, SendWelcome

from heph import ASYNC
from heph.testing import assert_path, run_step, run_to_completion


def test_the_reminder_is_sent_an_hour_later(heph_app):
    ReminderFlow.start("user7", {"name": "Ada"})
    assert ReminderFlow.get("user7").status == "waiting"

    heph_app.clock.advance(minutes=59)
    assert heph_app.tick() == []                        # not due yet
    heph_app.clock.advance(minutes=1)
    heph_app.tick()                                     # fires the Wait timer

    reminder = ReminderFlow.get("user7")
    assert reminder.status == "completed"
    assert reminder.context.steps["send_reminder"]["channel"] == "sms"


def test_parallel_branches_join_and_a_flaky_printer_is_retried(heph_app):
    shipment = run_to_completion(Fulfilment, "ship1", {"items": ["pen"], "priority": "high", "flaky": True})

    assert shipment.status == "completed"
    keys = [h.step for h in shipment.history if h.outcome == "completed"]
    assert keys.count("pack") == 1                       # the join ran once, after every branch
    assert keys.index("pack") > max(keys.index("wrap_items"), keys.index("print_label"), keys.index("book_dock_slot"))
    assert keys[-2:] == ["express_ship", "done"]         # dynamic routing picked the express carrier
    assert [h.attempt for h in shipment.history if h.step == "print_label"] == [1, 2]


def test_a_payment_waits_for_confirmation(heph_app):
    payment = run_to_completion(PaymentFlow, "pay1", {"order": "o42", "amount": 4999},
                                events=["payment_confirmed"])

    assert_path(payment, [
        ("request_payment", "requested"),
        ("wait_for_payment", "payment_confirmed"),
        ("fulfil_order", "fulfilled"),
        ("done", "done"),
    ])
    assert payment.runtime_metadata["provider"] == "acmepay"


def test_one_step_on_its_own():
    assert run_step(SendWelcome, {"name": "Ada"})[1]["text"] == "Welcome to the shop, Ada!"
    assert run_step(SendWelcome, {"name": "Ada"}, config={"template": "come_back"})[1]["template"] == "come_back"
    assert run_step(PrintLabel, {"flaky": 0})[0] == "printed"


def test_the_payment_step_pauses():
    from shop.payments import WaitForPayment

    assert run_step(WaitForPayment, {"amount": 1}) is ASYNC
