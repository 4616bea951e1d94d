"""Storage adapters: the ``Storage`` contract, an in-memory store and the JSON-file store."""

from heph.runtime.storage.base import RunRef, Session, Storage
from heph.runtime.storage.jsonfile import JsonFileStorage
from heph.runtime.storage.memory import MemoryStorage

__all__ = ["JsonFileStorage", "MemoryStorage", "RunRef", "Session", "Storage"]
