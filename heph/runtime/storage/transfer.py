"""Transfer every run from one store to another (JSON files -> PostgreSQL and back), verified.

Each run is compared by a checksum: sha256 of the canonical JSON (sorted keys, no spaces)
of its ``Instance.to_dict()``. A run already in the target with the same checksum is left
alone (so a copy can be re-run); one with different content makes the copy refuse before
anything is written. Stop workers and other writers first: a run that changes during the
copy is copied as it was when read.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from heph.core.instance import Instance
from heph.core.uniqueness import conflicts
from heph.errors import AlreadyRunning, CopyConflict, StorageError
from heph.runtime.storage.base import Storage


def checksum(instance: Instance) -> str:
    """sha256 (hex) of the canonical JSON of ``instance.to_dict()``."""
    text = json.dumps(instance.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def copy_runs(source: Storage, target: Storage) -> dict:
    """Copy every run of ``source`` into ``target``; return counts and a combined checksum.

    ``{"runs", "ids", "copied", "already_present", "verified", "checksum", "schedules"}`` where
    ``checksum`` is the sha256 of the sorted ``id run checksum`` lines of every run (equal for
    two stores holding the same runs) and ``schedules`` the number of schedule states copied
    (each schedule's last slot started, so the target never starts a slot again).
    ``CopyConflict`` (nothing written) if the target holds a different run under the same id
    and run, another active run of an id, or a different state of a schedule.
    """
    runs = source.query()
    by_id: dict[str, list[Instance]] = defaultdict(list)
    sums: dict[tuple[str, str], str] = {}
    for instance in runs:
        by_id[instance.id].append(instance)
        sums[(instance.id, instance.run)] = checksum(instance)

    problems: list[str] = []
    present: set[tuple[str, str]] = set()
    for instance_id, mine in by_id.items():
        theirs = {r.run: r for r in target.runs(instance_id)}
        for instance in mine:
            other = theirs.get(instance.run)
            if other is None:
                if any(conflicts(instance, t) for t in theirs.values()):
                    problems.append(f"{instance_id} is active in the target under another run")
            elif checksum(other) != sums[(instance_id, instance.run)]:
                problems.append(f"run {instance.run} of {instance_id} differs in the target")
            else:
                present.add((instance_id, instance.run))
    schedules = source.schedule_states()
    theirs_states = target.schedule_states() if schedules else {}
    for name, state in schedules.items():
        if theirs_states.get(name, state) != state:
            problems.append(f"schedule {name} has another state in the target (last slot "
                            f"{theirs_states[name].get('last')}, here {state.get('last')})")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CopyConflict(f"the target store already holds different data: {problems[0]}{more}; nothing was copied")

    copied = 0
    for instance_id, mine in by_id.items():
        with target.session(instance_id) as session:
            there = {r.run: r for r in session.runs()}
            for instance in sorted(mine, key=lambda i: i.run):
                if instance.run in there:
                    if checksum(there[instance.run]) != sums[(instance_id, instance.run)]:
                        raise CopyConflict(f"run {instance.run} of {instance_id} changed in the target during the copy")
                    continue
                try:
                    session.insert(instance)
                except AlreadyRunning as exc:
                    raise CopyConflict(f"{instance_id}: {exc}") from None
                copied += 1

    copied_states = 0
    for name, state in schedules.items():
        with target.schedule_session(name, 30) as held:
            if held.state() is None:
                held.save(state)
                copied_states += 1

    verified = 0
    for instance_id, mine in by_id.items():
        sums_there = {r.run: checksum(r) for r in target.runs(instance_id)}
        for instance in mine:
            if sums_there.get(instance.run) != sums[(instance_id, instance.run)]:
                raise StorageError(f"verification failed: run {instance.run} of {instance_id} differs after the copy")
            verified += 1
    return {
        "runs": len(runs),
        "ids": len(by_id),
        "copied": copied,
        "already_present": len(present),
        "verified": verified,
        "checksum": store_checksum(sums),
        "schedules": copied_states,
    }


def store_checksum(sums: dict[tuple[str, str], str]) -> str:
    """One checksum over many runs: sha256 of the sorted ``id run checksum`` lines."""
    lines = "".join(f"{i} {r} {c}\n" for (i, r), c in sorted(sums.items()))
    return hashlib.sha256(lines.encode("utf-8", "surrogatepass")).hexdigest()


def checksums(storage: Storage) -> dict[tuple[str, str], str]:
    """``{(id, run): checksum}`` of every run of ``storage``."""
    return {(i.id, i.run): checksum(i) for i in storage.query()}
