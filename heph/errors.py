"""The exception hierarchy: every error heph raises is a ``HephError``.

Each class carries a stable ``code`` (used by the CLI's ``--json`` errors).
"""

from __future__ import annotations


class HephError(Exception):
    """Base class of every heph error."""

    code = "heph_error"


class AlreadyRunning(HephError):
    """An active instance already holds this business key within its uniqueness scope."""

    code = "already_running"


class InstanceNotFound(HephError, LookupError):
    """No instance has this id."""

    code = "not_found"


class NotCancellable(HephError):
    """The instance has already finished (completed, failed or cancelled)."""

    code = "not_cancellable"


class NotRetryable(HephError):
    """``retry`` was asked of an instance that has not failed."""

    code = "not_retryable"


class InvalidEvent(HephError):
    """The instance is not waiting, or no waiting step declares the event."""

    code = "invalid_event"


class InvalidId(HephError, ValueError):
    """A business key, value or instance id breaks the id rules."""

    code = "invalid_id"


class InvalidContext(HephError, ValueError):
    """A start context is not a JSON object, or not JSON-serialisable."""

    code = "invalid_context"


class InvalidVersion(HephError, ValueError):
    """A requested workflow version does not exist."""

    code = "invalid_version"


class StorageError(HephError):
    """The store could not be read or written (corrupt file, lock timeout, I/O error)."""

    code = "storage_error"


class WorkflowDefinitionError(HephError):
    """A workflow class breaks the definition rules; ``problems`` lists every one."""

    code = "definition_error"

    def __init__(self, workflow: str, problems: list[str]):
        self.workflow = workflow
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"workflow {workflow} has {count} definition problem{'s' if count != 1 else ''}:\n{lines}"
        )
