"""Checkout: the complete example of the getting-started guide, plus a Debug step.

    Validate --ok--> ProcessPayment --charged--> Notify --sent--> Debug --completed--> Done
             --invalid--> Done

    heph start checkout checkout99 --context contexts/checkout.json
    # logs "Payment of 4999 processed!" (logger shop.checkout, level INFO)
"""

import logging

from heph import Debug, Done, Step, Unique, Workflow

log = logging.getLogger(__name__)


class Validate(Step):
    """Accept the checkout when it has a positive amount."""

    events = ["ok", "invalid"]

    def execute(self, instance, config, context):
        amount = context.initial.get("amount")
        if isinstance(amount, int) and amount > 0:
            return "ok", {"amount": amount}
        return "invalid"


class ProcessPayment(Step):
    """Charge the validated amount."""

    events = ["charged"]

    def execute(self, instance, config, context):
        amount = context.steps["validate"]["amount"]
        return "charged", {"amount_charged": amount}


class Notify(Step):
    """Announce the payment (in a real shop: send an e-mail)."""

    events = ["sent"]

    def execute(self, instance, config, context):
        log.info("Payment of %s processed!", context.steps["process_payment"]["amount_charged"])
        return "sent"


class Checkout(Workflow):
    """Validate a checkout, charge it and notify the customer."""

    name = "checkout"
    unique = Unique("checkoutid")
    tags = ["checkout"]
    start = Validate
    transitions = {
        Validate: {"ok": ProcessPayment, "invalid": Done},
        ProcessPayment: {"charged": Notify},
        Notify: {"sent": Debug},  # Debug logs the context and history (logger "heph", DEBUG)
        Debug: {"completed": Done},
    }
