"""PaymentFlow: a workflow that waits for the outside world.

    RequestPayment --requested--> WaitForPayment --payment_confirmed--> FulfilOrder --fulfilled--> Done
                                                 --payment_failed----> ReleaseStock --released--> Done
                                                 --payment_expired---> ReleaseStock

WaitForPayment returns ASYNC: the instance is saved as ``waiting`` and the
process may exit. A webhook handler (or you, from the shell) resumes it later,
handing over the provider's transaction id as the event's data; if no answer
comes within three days, its deadline resumes it with ``payment_expired``:

    heph start paymentflow pay1 --context contexts/payment.json             # -> waiting
    heph resume paymentflow pay1 payment_confirmed --data '{"transaction_id": "tx-981"}'  # -> completed
"""

from heph import ASYNC, Deadline, Done, Step, Unique, Workflow


class RequestPayment(Step):
    """Ask the payment provider for a payment; remember the request."""

    events = ["requested"]

    def execute(self, instance, config, context):
        request = {
            "request_id": f"req-{instance.id.split('::')[1]}",
            "amount": context.initial["amount"],
            "currency": context.initial.get("currency", "EUR"),
        }
        # The third element is merged into instance.runtime_metadata (shown by `heph show`).
        return "requested", request, {"provider": context.initial.get("provider", "acmepay")}


class WaitForPayment(Step):
    """Pause until the provider confirms or rejects the payment, for at most three days."""

    events = ["payment_confirmed", "payment_failed", "payment_expired"]
    deadline = Deadline(days=3, event="payment_expired")

    def execute(self, instance, config, context):
        return ASYNC


class FulfilOrder(Step):
    """Hand the paid order over to the warehouse."""

    events = ["fulfilled"]

    def execute(self, instance, config, context):
        paid = context.steps["wait_for_payment"]  # the data the payment_confirmed event carried
        return "fulfilled", {"order": context.initial["order"], "paid": context.steps["request_payment"]["amount"],
                             "transaction_id": paid.get("transaction_id")}


class ReleaseStock(Step):
    """Compensate a failed payment: give the reserved stock back."""

    events = ["released"]

    def execute(self, instance, config, context):
        return "released", {"order": context.initial["order"]}


class PaymentFlow(Workflow):
    """Request a payment, wait for its outcome, then fulfil or compensate."""

    unique = Unique("paymentid")
    tags = ["payments"]
    metadata = {"team": "payments", "provider_webhook": "/hooks/payments"}
    start = RequestPayment
    transitions = {
        RequestPayment: {"requested": WaitForPayment},
        WaitForPayment: {"payment_confirmed": FulfilOrder, "payment_failed": ReleaseStock,
                         "payment_expired": ReleaseStock},
        FulfilOrder: {"fulfilled": Done},
        ReleaseStock: {"released": Done},
    }
