"""Helpers for the CLI integration tests: run the real ``heph`` in a subprocess against a
temporary copy of sample_project/, and inspect what it printed and what it left on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "sample_project"
SAMPLE_WORKFLOWS = ["checkout", "createuser", "dailyreport", "fulfilment", "notificationflow", "orderflow", "paymentflow",
                    "reminderflow"]
ANSI = "\x1b["

# Variables that would change what heph prints (colours, terminal width) or which project it uses.
_SCRUBBED = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE",
             "TTY_INTERACTIVE", "HEPH_CONFIG", "PYTHONWARNINGS", "JUPYTER_COLUMNS", "JUPYTER_LINES",
             "HEPH_DATABASE_URL")


def make_project(dest: Path) -> Path:
    """A fresh copy of sample_project/ (without its storage or caches) at ``dest``."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns(".heph", "__pycache__", "*.pyc"))
    return dest


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The environment of a CLI run: the test's own, minus anything that changes heph's output."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the project copies free of __pycache__
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Run:
    """What one CLI call did: exit code, stdout, stderr (decoded leniently)."""

    def __init__(self, args: list[str], proc: subprocess.CompletedProcess):
        self.args = args
        self.code = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            raise AssertionError(f"heph {' '.join(self.args)} printed no JSON:\n{self}") from None

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"<heph {' '.join(self.args)} -> exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}>"

    __str__ = __repr__


def heph(*args: str, cwd: Path, stdin: bytes | str | None = None, env: dict | None = None,
         timeout: float = 60) -> Run:
    """Run ``python -m heph ARGS`` in ``cwd`` (stdin from ``stdin``, else empty)."""
    data = stdin.encode("utf-8") if isinstance(stdin, str) else (stdin or b"")
    proc = subprocess.run([sys.executable, "-m", "heph", *args], cwd=cwd, input=data, capture_output=True,
                          env=env if env is not None else cli_env(), timeout=timeout)
    return Run(list(args), proc)


def ok(*args: str, cwd: Path, **kw) -> Run:
    """A CLI call that must succeed (exit 0, no traceback)."""
    run = heph(*args, cwd=cwd, **kw)
    assert run.code == 0, run
    assert "Traceback" not in run.err, run
    return run


def ok_json(*args: str, cwd: Path, **kw):
    """A successful ``--json`` call's parsed output."""
    return ok(*args, "--json", cwd=cwd, **kw).json()


def assert_refused(run: Run, *fragments: str) -> str:
    """Exit 1, exactly one line on stderr starting with ``error:``, no traceback; return the line."""
    assert run.code == 1, run
    assert "Traceback" not in run.err and "Traceback" not in run.out, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run
    line = lines[0]
    assert line.startswith("error:"), run
    for fragment in fragments:
        assert fragment in line, (fragment, run)
    return line


def assert_usage_error(run: Run) -> None:
    """Exit 2 (a usage error), no traceback."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run


def snapshot(storage: Path) -> dict[str, bytes | None]:
    """Every file (relative path -> bytes) and directory (-> None) under ``storage``."""
    if not storage.exists():
        return {}
    found: dict[str, bytes | None] = {}
    for path in sorted(storage.rglob("*")):
        rel = path.relative_to(storage).as_posix()
        found[rel] = None if path.is_dir() else path.read_bytes()
    return found


def assert_same_snapshot(before: dict, after: dict, what: str = "") -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"{what}: added {added}, removed {removed}, changed {changed}"


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def wait_until_due(instance: dict, slack: float = 0.05) -> None:
    """Sleep (real time) until the instance's next due time has passed."""
    due = instance.get("next_due_at")
    assert due, f"{instance['id']} has no due time: {instance}"
    delay = (parse_time(due) - datetime.now(timezone.utc)).total_seconds() + slack
    if delay > 0:
        time.sleep(delay)


def table_rows(out: str) -> list[list[str]]:
    """The body rows of the rich tables in ``out``, as lists of stripped cell texts."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("│")]
            for line in out.splitlines() if line.strip().startswith("│") and line.strip().endswith("│")]
