"""Test support for heph users and adapter authors.

``StorageConformance`` is the contract test suite every storage adapter must
pass: subclass it in a pytest module and implement ``make_storage``::

    from heph.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        def make_storage(self, tmp_path):
            return MyStorage(...)

This package imports ``pytest`` (install heph's ``test`` extra); ``import heph``
alone never loads it.
"""

from heph.testing.conformance import StorageConformance, make_instance

__all__ = ["StorageConformance", "make_instance"]
