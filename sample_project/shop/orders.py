"""OrderFlow: the workflow of the getting-started guide.

    ValidateOrder --valid--> ChargePayment --charged--> SendConfirmation --sent--> Done
                  --invalid--> Done

    heph start orderflow order42 --context contexts/order42.json      # -> completed
    heph start orderflow order43 --context contexts/empty_order.json  # -> completed, via "invalid"
"""

from heph import Done, Step, Unique, Workflow

DEFAULT_AMOUNT = 1000  # cents charged when the start context names no amount


class ValidateOrder(Step):
    """Check that the order has items; remember how many."""

    events = ["valid", "invalid"]

    def execute(self, instance, config, context):
        items = context.initial.get("items") or []
        if items:
            return "valid", {"item_count": len(items)}
        return "invalid"


class ChargePayment(Step):
    """Charge the customer for the order."""

    events = ["charged"]

    def execute(self, instance, config, context):
        amount = context.initial.get("amount", DEFAULT_AMOUNT)
        return "charged", {"amount_charged": amount}


class SendConfirmation(Step):
    """Tell the customer the order went through."""

    events = ["sent"]

    def execute(self, instance, config, context):
        items = context.steps["validate_order"]["item_count"]
        amount = context.steps["charge_payment"]["amount_charged"]
        return "sent", {"message": f"{items} item(s), {amount} cents charged"}


class OrderFlow(Workflow):
    """Validate an order, charge it and confirm it."""

    unique = Unique(key="orderid")  # instance ids: "orderid::<value>"
    tags = ["orders", "checkout"]
    metadata = {"team": "payments", "priority": "high"}
    start = ValidateOrder
    transitions = {
        ValidateOrder: {"valid": ChargePayment, "invalid": Done},
        ChargePayment: {"charged": SendConfirmation},
        SendConfirmation: {"sent": Done},
    }
