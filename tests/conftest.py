"""Shared test set-up: the helper modules in ``tests/`` are importable from every test folder,
and the ``slow`` marker (subprocess-heavy tests) is registered in ``pyproject.toml``."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
