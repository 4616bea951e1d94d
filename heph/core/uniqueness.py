"""The one rule of business-key uniqueness: which two active runs of one id may not coexist.

Every run stores the scope of its workflow (``Unique.scope``) from the moment it is created,
so the rule needs nothing but the two runs: the runtime's check before a start, every
storage adapter's ``insert``/``update`` and ``heph storage copy`` all ask ``conflicts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from heph.errors import AlreadyRunning

ACTIVE = ("pending", "running", "waiting")


class RunFacts(Protocol):
    """What the rule reads of a run (an ``Instance`` has all of it)."""

    id: str
    run: str
    workflow: str
    version: int
    status: str
    scope: str


@dataclass
class Facts:
    """A ``RunFacts`` of a run known only by its facts (one not stored yet, one another
    process announces it runs)."""

    id: str
    run: str
    workflow: str
    version: int
    status: str
    scope: str


def conflicts(a: RunFacts, b: RunFacts) -> bool:
    """Whether two active runs of one id break uniqueness.

    ``global`` on either side holds the id across every workflow; ``none`` ids carry a random
    suffix, so two runs of one such id are the same business run; otherwise runs of different
    workflows never conflict, and within one workflow ``version`` scope allows one run per
    version (``workflow`` scope on either side: one per workflow).
    """
    if a.id != b.id or a.run == b.run or a.status not in ACTIVE or b.status not in ACTIVE:
        return False
    scopes = {a.scope, b.scope}
    if "global" in scopes or "none" in scopes:
        return True
    if a.workflow != b.workflow:
        return False
    return "workflow" in scopes or a.version == b.version


def blocker(candidate: RunFacts, runs: Iterable[RunFacts]) -> RunFacts | None:
    """The first of ``runs`` that an active ``candidate`` would conflict with, or None."""
    return next((other for other in runs if conflicts(candidate, other)), None)


def check(candidate: RunFacts, runs: Iterable[RunFacts]) -> None:
    """``AlreadyRunning`` if ``candidate`` (an active run) conflicts with one of ``runs``."""
    other = blocker(candidate, runs)
    if other is not None:
        raise AlreadyRunning(instance_id=other.id, workflow=other.workflow, version=other.version,
                             status=other.status)


def scope_of_id(instance_id: str) -> str:
    """The scope of a run stored before runs carried one: ``none`` for a suffixed id, else
    ``workflow`` (the default scope)."""
    return "none" if instance_id.count("::") == 2 else "workflow"
