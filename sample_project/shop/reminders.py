"""ReminderFlow: a durable timer, and steps configured where they are used.

    SendWelcome --sent--> Wait(1 hour) --timeout--> SendReminder{template: come_back} --sent--> Done

The Wait step pauses the instance; its due time is stored with it, so the
timer survives any process exit. ``heph tick`` (once) or ``heph worker``
(continuously) resumes it with ``timeout`` when it is due.

    heph start reminderflow user7 --context contexts/user.json   # -> waiting (timer due in 1 hour)
    heph resume reminderflow user7 timeout                        # don't want to wait? fire it by hand
"""

from heph import Done, Step, Unique, Wait, Workflow

TEMPLATES = {
    "welcome": "Welcome to the shop, {name}!",
    "come_back": "{name}, your basket misses you.",
}


class SendMessage(Step):
    """Base for steps that send a templated message; the template comes from the step's config."""

    events = ["sent"]

    def execute(self, instance, config, context):
        config = config or {}  # config is None when the transition gives none
        template = config.get("template", "welcome")
        channel = config.get("channel", "email")
        text = TEMPLATES[template].format(name=context.initial.get("name", "there"))
        return "sent", {"template": template, "channel": channel, "text": text}


class SendWelcome(SendMessage):
    """Greet the new customer."""


class SendReminder(SendMessage):
    """Nudge the customer who has not come back."""


class ReminderFlow(Workflow):
    """Welcome a customer, wait an hour, then remind them."""

    unique = Unique("reminderid")
    tags = ["marketing"]
    start = SendWelcome
    transitions = {
        SendWelcome: {"sent": (Wait, {"duration": 1, "unit": "hour"})},
        Wait: {"timeout": (SendReminder, {"template": "come_back", "channel": "sms"})},
        SendReminder: {"sent": Done},
    }
