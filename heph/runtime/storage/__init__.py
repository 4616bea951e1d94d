"""Storage adapters: the ``Storage`` contract, an in-memory store and the JSON-file store.

Adapters load on first use (``from heph.runtime.storage import JsonFileStorage``).
"""

from heph.runtime.storage.base import RunRef, Session, Storage

_ADAPTERS = {
    "JsonFileStorage": "heph.runtime.storage.jsonfile",
    "MemoryStorage": "heph.runtime.storage.memory",
    "PostgresStorage": "heph.runtime.storage.postgres",
}

__all__ = ["JsonFileStorage", "MemoryStorage", "PostgresStorage", "RunRef", "Session", "Storage"]


def __getattr__(name: str):
    if name in _ADAPTERS:
        import importlib

        return getattr(importlib.import_module(_ADAPTERS[name]), name)
    raise AttributeError(f"module 'heph.runtime.storage' has no attribute {name!r}")
