"""Every exception heph raises: ``HephError`` and its subclasses.

Each class has a stable ``code`` (the CLI's ``--json`` errors carry it) and keeps the facts
of the error as attributes (``instance_id``, ``event``, ``status``, ...), so callers can act
on them without parsing the message. A message is built from the facts unless one is given.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HephError(Exception):
    """Base class of every heph error: ``code`` is stable, the facts are attributes."""

    code: ClassVar[str] = "heph_error"

    def __init__(self, message: str = "", **facts: Any) -> None:
        for name, value in facts.items():
            setattr(self, name, value)
        self.facts = facts
        super().__init__(message or self.describe())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def describe(self) -> str:
        """The message made from the facts (used when none is given)."""
        return (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]

    def __reduce__(self) -> tuple:  # picklable across processes, facts included
        return (_rebuild, (type(self), self.message, self.facts))


def _rebuild(cls: type[HephError], message: str, facts: dict) -> HephError:
    return cls(message, **facts)


class AlreadyRunning(HephError):
    """An active instance already holds this business key within its uniqueness scope."""

    code = "already_running"
    instance_id: str | None = None
    workflow: str | None = None
    version: int | None = None
    status: str | None = None

    def describe(self) -> str:
        held = f" ({self.workflow} v{self.version}, status {self.status})" if self.workflow else ""
        return f"{self.instance_id} is already running{held}; cancel it or wait until it finishes"


class InstanceNotFound(HephError, LookupError):
    """No instance has this id."""

    code = "not_found"
    instance_id: str | None = None
    workflow: str | None = None

    def describe(self) -> str:
        where = f" of workflow {self.workflow}" if self.workflow else ""
        return f"no instance {self.instance_id}{where}: check the id, or `heph list` to see instances"


class AmbiguousInstance(HephError):
    """The id is active in several workflows: the workflow must be named."""

    code = "ambiguous_instance"
    instance_id: str | None = None
    workflows: list[str] | None = None

    def describe(self) -> str:
        return (f"{self.instance_id} is active in several workflows ({', '.join(self.workflows or [])}): "
                f"name the workflow (CLI: the workflow before --id, as in heph resume WORKFLOW --id "
                f"{self.instance_id} EVENT or heph show WORKFLOW --id {self.instance_id}; "
                f"heph list --id {self.instance_id} lists its runs)")


class NotCancellable(HephError):
    """The instance has already finished (completed, failed or cancelled)."""

    code = "not_cancellable"
    instance_id: str | None = None
    status: str | None = None

    def describe(self) -> str:
        return (f"instance {self.instance_id} is {self.status}; "
                f"only pending, running or waiting instances can be cancelled")


class NotRetryable(HephError):
    """``retry`` was asked of an instance that has not failed."""

    code = "not_retryable"
    instance_id: str | None = None
    status: str | None = None

    def describe(self) -> str:
        return f"instance {self.instance_id} is {self.status}; only failed instances can be retried"


class InvalidEvent(HephError):
    """The instance is not waiting, or no waiting step declares the event."""

    code = "invalid_event"
    instance_id: str | None = None
    event: str | None = None
    step: str | None = None
    candidates: list[str] | None = None


class InvalidId(HephError, ValueError):
    """A business key, value or instance id breaks the id rules."""

    code = "invalid_id"
    given: object = None


class InvalidContext(HephError, ValueError):
    """A start context is not a JSON object, or not JSON-serialisable."""

    code = "invalid_context"


class InvalidVersion(HephError, ValueError):
    """A requested workflow version does not exist."""

    code = "invalid_version"
    workflow: str | None = None
    version: object = None
    known: list[int] | None = None


class InvalidQuery(HephError, ValueError):
    """A filter of ``list`` names something that does not exist (a status, say)."""

    code = "invalid_query"


class UnknownWorkflow(HephError, LookupError):
    """No workflow of this name is defined (or its module is not listed in heph.yaml)."""

    code = "unknown_workflow"
    workflow: object = None
    known: list[str] | None = None

    def describe(self) -> str:
        if self.known is None:
            return (f"unknown workflow {self.workflow!r}: define it, and list its module in "
                    f"heph.yaml's workflows")
        return f"unknown workflow {self.workflow!r}; this project defines: {', '.join(self.known) or 'none'}"


class NoAppInUse(HephError):
    """A workflow facade was called before ``heph.use(app)``."""

    code = "no_app"

    def describe(self) -> str:
        return "no heph app is in use: call heph.use(heph.Hephaestus(storage=...)) first"


class NotJsonSafe(HephError, ValueError):
    """A value cannot be stored as JSON; ``path`` names where it sits (``amount``, ``items[2]``)."""

    code = "invalid_context"
    path: str = ""
    reason: str = ""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or 'value'}: {reason}", path=path, reason=reason)

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason))


class StorageError(HephError):
    """The store could not be read or written (corrupt file, lock timeout, I/O error)."""

    code = "storage_error"


class InstanceBusy(StorageError):
    """Another process holds the instance's lock."""

    instance_id: str | None = None

    def describe(self) -> str:
        return f"instance {self.instance_id} is busy (another heph process holds its lock); try again later"


class MaybeApplied(StorageError):
    """A write failed after it may have reached the disk: the change may have been applied.

    Raised when the store cannot tell whether the change is durable (an fsync of the directory
    failed after the record was renamed into place, a start failed after its run was first
    written). The CLI exits 3 and says to check with ``heph show``; running the command again
    without checking may apply it twice.
    """

    code = "may_have_been_applied"
    instance_id: str | None = None
    path: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        why = f": {self.reason}" if self.reason else ""
        return (f"the change to {self.instance_id} may have been applied{where}{why}; "
                f"check with heph show {self.instance_id} before running it again")


class OutputFailed(HephError):
    """The command's answer could not be written to stdout (a full disk behind a redirect, an I/O error)."""

    code = "output_failed"


class LockTimeout(StorageError, TimeoutError):
    """A file lock was still held by someone else when the timeout ran out."""

    path: str | None = None

    def describe(self) -> str:
        return f"{self.path} is held by another process"


class CopyConflict(HephError):
    """The target store already holds a run with the same id and run but different content."""

    code = "copy_conflict"


class WorkflowDefinitionError(HephError):
    """A workflow class breaks the definition rules; ``problems`` lists every one."""

    code = "definition_error"
    workflow: str = ""
    problems: list[str]
    file: str = "?"
    line: int = 0

    def __init__(self, workflow: str, problems: list[str], file: str = "?", line: int = 0) -> None:
        count = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"workflow {workflow} has {count} definition problem{'s' if count != 1 else ''}:\n{lines}",
            workflow=workflow, problems=list(problems), file=file, line=line)

    def __reduce__(self) -> tuple:
        return (type(self), (self.workflow, self.problems, self.file, self.line))


class CliError(HephError):
    """A command refused for a reason of its own (bad configuration or input): one line for stderr."""

    code = "refused"


class UsageError(HephError):
    """Wrong arguments on the command line: printed as a usage error, exit 2."""

    code = "usage_error"
