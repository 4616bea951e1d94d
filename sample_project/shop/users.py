"""CreateUser: a versioned workflow.

Version 1 only creates the account. Version 2 also waits for the user to
verify their e-mail address. New instances get version 2 (``current``)
unless the start asks otherwise; an instance keeps its version for life, so
instances started as version 1 finish as version 1.

    heph start createuser alice --context contexts/user.json               # version 2 -> waiting
    heph resume createuser alice email_verified                            # -> completed
    heph start createuser bob --context contexts/user.json --version 1     # version 1 -> completed

From Python, ``CreateUser.start("carol", {...}, legacy=True)`` also picks
version 1: keyword options go to ``version_for``.
"""

from heph import ASYNC, Done, Step, Unique, VersionedWorkflow, Workflow


class CreateAccount(Step):
    """Create the user account."""

    events = ["created"]

    def execute(self, instance, config, context):
        return "created", {"email": context.initial.get("email"), "plan": context.initial.get("plan", "free")}


class VerifyEmail(Step):
    """Pause until the user clicks the link in the verification e-mail."""

    events = ["email_verified"]

    def execute(self, instance, config, context):
        return ASYNC


class CreateUserV1(Workflow):
    """Version 1: create the account, done."""

    version = 1
    start = CreateAccount
    transitions = {
        CreateAccount: {"created": Done},
    }


class CreateUserV2(Workflow):
    """Version 2: create the account, then wait for e-mail verification."""

    version = 2
    start = CreateAccount
    transitions = {
        CreateAccount: {"created": VerifyEmail},
        VerifyEmail: {"email_verified": Done},
    }


class CreateUser(VersionedWorkflow):
    """Sign a user up (the name users start: ``createuser``)."""

    unique = Unique("userid")
    tags = ["accounts"]
    versions = {1: CreateUserV1, 2: CreateUserV2}
    current = 2

    @classmethod
    def version_for(cls, versions, options):
        """Legacy sign-ups (``legacy=True``) still run version 1; None means ``current``."""
        return 1 if options.get("legacy") else None
