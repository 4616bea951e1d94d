"""heph: a durable workflow engine for Python, driven from the command line.

The public API of ``../shared/SPEC.md`` §1–3 is re-exported here.
"""

from heph.core.definition import Dynamic, Unique
from heph.core.instance import Context, HistoryEntry, Instance
from heph.core.steps import ASYNC, Debug, Done, Error, Retry, Step, Wait, WaitForEvent
from heph.core.workflow import VersionedWorkflow, Workflow
from heph.runtime.app import Hephaestus, current_app, use
from heph.runtime.clock import ManualClock, SystemClock
from heph.runtime.storage import JsonFileStorage, MemoryStorage, Storage
from heph.runtime.telemetry import on
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

__all__ = [
    "ASYNC", "AlreadyRunning", "Context", "Debug", "Done", "Dynamic", "Error", "HephError",
    "HistoryEntry", "Instance", "InstanceNotFound", "InvalidContext", "InvalidEvent", "InvalidId",
    "InvalidVersion", "NotCancellable", "NotRetryable", "Retry", "Step", "StorageError", "Unique",
    "VersionedWorkflow", "Wait", "WaitForEvent", "Workflow", "WorkflowDefinitionError",
    "Hephaestus", "JsonFileStorage", "ManualClock", "MemoryStorage", "Storage", "SystemClock",
    "current_app", "on", "use",
]
