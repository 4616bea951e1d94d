"""heph: a durable workflow engine for Python, driven from the command line.

The public API of ``../shared/SPEC.md`` §1–3 is re-exported here. The authoring
API (steps, workflows, errors) loads eagerly; the runtime (``Hephaestus``,
storages, clocks, telemetry) loads on first use, so importing a workflow module
stays cheap.
"""

from heph.core.current import current_app, use
from heph.core.definition import Dynamic, Unique
from heph.core.instance import Context, HistoryEntry, Instance
from heph.core.steps import ASYNC, Deadline, Debug, Done, Error, Retry, Step, Wait, WaitForEvent
from heph.core.workflow import VersionedWorkflow, Workflow
from heph.errors import (
    AlreadyRunning,
    HephError,
    InstanceNotFound,
    InvalidContext,
    InvalidEvent,
    InvalidId,
    InvalidVersion,
    NotCancellable,
    NotRetryable,
    StorageError,
    WorkflowDefinitionError,
)

__version__ = "0.1.0"

_LAZY = {
    "Hephaestus": "heph.runtime.app",
    "ManualClock": "heph.runtime.clock",
    "SystemClock": "heph.runtime.clock",
    "Storage": "heph.runtime.storage.base",
    "JsonFileStorage": "heph.runtime.storage.jsonfile",
    "MemoryStorage": "heph.runtime.storage.memory",
    "PostgresStorage": "heph.runtime.storage.postgres",
    "Schedule": "heph.core.schedules",
    "on": "heph.runtime.telemetry",
}

__all__ = [
    "ASYNC", "AlreadyRunning", "Context", "Deadline", "Debug", "Done", "Dynamic", "Error", "HephError",
    "HistoryEntry", "Instance", "InstanceNotFound", "InvalidContext", "InvalidEvent", "InvalidId",
    "InvalidVersion", "NotCancellable", "NotRetryable", "Retry", "Step", "StorageError", "Unique",
    "VersionedWorkflow", "Wait", "WaitForEvent", "Workflow", "WorkflowDefinitionError", "current_app", "use",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'heph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
