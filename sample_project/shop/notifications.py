"""NotificationFlow: scope "none", so one business value may have any number of instances.

    RenderMessage --rendered--> Deliver --delivered--> Done

Every start gets a fresh id with a random suffix, ``notification::<value>::<8 hex>``;
address an instance with ``--id`` (the full id) rather than the value.

    heph start notificationflow welcome --context contexts/notification.json
    # -> notification::welcome::1f0c2a9e  completed
    heph show --id notification::welcome::1f0c2a9e
"""

from heph import Done, Retry, Step, Unique, Workflow

TEMPLATES = {
    "welcome": "Hello {name}, welcome aboard!",
    "shipped": "Hello {name}, your parcel is on its way.",
}


class RenderMessage(Step):
    """Fill in the message template; an unknown template fails the step."""

    events = ["rendered"]

    def execute(self, instance, config, context):
        template = context.initial.get("template", "welcome")
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
        return "rendered", {"text": TEMPLATES[template].format(name=context.initial.get("name", "there"))}


class Deliver(Step):
    """Hand the message to the delivery channel."""

    events = ["delivered"]
    retry = Retry(max_attempts=5, backoff="linear", base_delay=2, max_delay=30)

    def execute(self, instance, config, context):
        return "delivered", {"to": context.initial.get("to"), "channel": context.initial.get("channel", "email")}


class NotificationFlow(Workflow):
    """Render a message and deliver it; many may run for the same value at once."""

    unique = Unique("notification", scope="none")
    tags = ["notifications"]
    start = RenderMessage
    transitions = {
        RenderMessage: {"rendered": Deliver},
        Deliver: {"delivered": Done},
    }
