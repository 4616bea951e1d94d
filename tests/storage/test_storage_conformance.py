"""Every bundled storage adapter passes the conformance suite of ``heph.testing``."""

from __future__ import annotations

from heph.runtime.storage import JsonFileStorage, MemoryStorage
from heph.testing import StorageConformance


class TestJsonFileStorage(StorageConformance):
    def make_storage(self, tmp_path):
        return JsonFileStorage(tmp_path / "store")

    def reopen_storage(self, storage):
        return JsonFileStorage(storage.root)


class TestMemoryStorage(StorageConformance):
    def make_storage(self, tmp_path):
        return MemoryStorage()
