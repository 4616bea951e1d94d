"""Shared test set-up.

- The helper modules in ``tests/`` (``cli_helpers``, ``_core_helpers``) are importable from
  every test folder.
- Tests of the modules below start real processes (the ``heph`` CLI, racing workers, crash
  injection): they are marked ``slow``, so ``pytest -m "not slow"`` is the quick inner loop
  (``pytest tests/core`` takes about a second).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

SLOW_MODULES = {
    "test_bench_smoke.py", "test_security.py", "test_sample_project.py", "test_torture.py", "test_package.py",
    "test_cli.py", "test_cli_refusals.py", "test_hostile_input.py", "test_multiprocess.py", "test_doctor.py",
    "test_locking.py", "test_postgres.py", "test_cli_failures.py", "test_cli_issue19.py", "test_readme.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
