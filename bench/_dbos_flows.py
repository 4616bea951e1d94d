"""The DBOS side of the comparisons (imported only when ``dbos`` is installed).

DBOS runs on SQLite here (``system_database_url = sqlite:///...``), its default
durable local store: every step and workflow status change is a committed
SQLite transaction (rollback journal, ``synchronous=FULL``, SQLite's defaults).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dbos import DBOS

_launched = False


@DBOS.step()
def small_step(number: int, n: int) -> dict:
    return {"step": number, "n": n, "ok": True}


@DBOS.workflow()
def linear5(n: int) -> int:
    """B1: a workflow calling five steps, each returning a small dict."""
    for number in range(1, 6):
        small_step(number, n)
    return n


@DBOS.step()
def prepare(n: int) -> dict:
    return {"n": n, "pid": os.getpid()}


@DBOS.step()
def finish(message: object) -> dict:
    return {"ok": True, "got": message}


@DBOS.workflow()
def event_flow(n: int, timeout: float = 300.0) -> dict:
    """B2: a step, a wait for a message on topic ``go``, a step."""
    prepare(n)
    message = DBOS.recv("go", timeout_seconds=timeout)
    return finish(message)


def launch(directory: Path, poll_seconds: float | None = None) -> None:
    """Configure DBOS on a SQLite file under ``directory`` and launch it (once per process);
    ``poll_seconds``: DBOS's notification polling interval (default: DBOS's own, 1 s)."""
    global _launched
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "hephbench",
        "system_database_url": f"sqlite:///{directory / 'dbos.sqlite'}",
        "log_level": "WARNING",
    }
    if poll_seconds is not None:
        config["notification_listener_polling_interval_sec"] = poll_seconds
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    _launched = True


def shutdown() -> None:
    global _launched
    if _launched:
        DBOS.destroy(destroy_registry=False)
        _launched = False


COLD_START_CODE = r'''
import sys
from dbos import DBOS
DBOS(config={"name": "hephcold", "system_database_url": "sqlite:///" + sys.argv[1], "log_level": "WARNING"})

@DBOS.step()
def validate(items: list) -> dict:
    return {"item_count": len(items)}

@DBOS.step()
def charge(amount: int) -> dict:
    return {"amount_charged": amount}

@DBOS.step()
def confirm(count: int, amount: int) -> dict:
    return {"message": f"{count} item(s), {amount} cents charged"}

@DBOS.workflow()
def orderflow(items: list, amount: int) -> dict:
    v = validate(items)
    c = charge(amount)
    return confirm(v["item_count"], c["amount_charged"])

DBOS.launch()
orderflow(["widget", "gadget"], 4999)
DBOS.destroy()
'''
