"""Test support for heph users and adapter authors.

Testing workflows (no files, no sleeping)::

    from heph.testing import memory_app, run_to_completion, assert_path

    def test_order(heph_app):                      # fixture from heph's pytest plugin
        order = run_to_completion(OrderFlow, "o1", {"items": ["pen"]})
        assert order.status == "completed"
        assert_path(order, ["validate_order", "charge_payment", "send_confirmation", "done"])

Storage adapters: subclass ``StorageConformance`` and implement ``make_storage``
(that part imports pytest, from heph's ``test`` extra).
"""

from heph.runtime.clock import ManualClock
from heph.testing.kit import assert_path, memory_app, path, run_step, run_to_completion, steps_taken

__all__ = [
    "ManualClock", "StorageConformance", "assert_path", "make_instance", "memory_app", "path",
    "run_step", "run_to_completion", "steps_taken",
]


def __getattr__(name: str):
    if name in ("StorageConformance", "make_instance"):
        from heph.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module 'heph.testing' has no attribute {name!r}")
