"""``heph doctor``: check a JSON-file store (files, index, locks, leases) and optionally repair it.

Repairs never delete data: corrupt instance files and leftover temporary files
are moved to ``<store>/quarantine/``; the index is rebuilt from the instance
files; runs interrupted by a dead process are left ``running`` with their index
marker in place, so the next ``heph tick`` runs their steps again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from heph.core.instance import STATUSES
from heph.errors import StorageError
from heph.runtime.storage.jsonfile import JsonFileStorage, _is_run_name, _make_dirs, read_instance


def diagnose(store: JsonFileStorage, *, repair: bool = False,
             known: Callable[[str, int], bool] | None = None) -> dict:
    """A report of everything wrong with ``store``; with ``repair``, fix what can be fixed safely."""
    from heph.runtime.storage.locking import LockTimeout

    report: dict = {
        "store": str(store.root), "instances": 0, "corrupt": [], "temp_files": [], "unknown_workflows": [],
        "interrupted": [], "busy": [], "index": {"complete": store._index_current(),
                                                  "missing_markers": 0, "stale_markers": 0},
        "repaired": {},
    }
    if not store.instances.exists():
        report["healthy"] = True
        return report
    wanted: set[str] = set()
    for dir_name in sorted(os.listdir(store.instances)):
        directory = store.instances / dir_name
        if not directory.is_dir():
            continue
        for name in sorted(os.listdir(directory)):
            path = directory / name
            if name.endswith(".tmp"):
                report["temp_files"].append(str(path))
                continue
            if not _is_run_name(name):
                continue
            try:
                instance = read_instance(path)
            except StorageError as exc:
                report["corrupt"].append({"file": str(path), "reason": str(exc)})
                continue
            report["instances"] += 1
            wanted |= store._markers(instance)
            if known is not None and not known(instance.workflow, instance.version):
                report["unknown_workflows"].append(
                    {"id": instance.id, "run": instance.run, "workflow": instance.workflow, "version": instance.version})
            if instance.status in ("pending", "running"):
                lock = store._lock(directory, 0)
                try:
                    lock.acquire()
                    lock.release()
                    lease = instance.lease or {}
                    report["interrupted"].append({"id": instance.id, "run": instance.run,
                                                  "steps": [a["step"] for a in instance.active],
                                                  "owner_pid": lease.get("pid"), "owner_host": lease.get("host")})
                except LockTimeout:
                    report["busy"].append({"id": instance.id, "run": instance.run})
    have: set[str] = set()
    for sub in ["due"] + [f"status/{s}" for s in STATUSES]:
        directory = store.index / sub
        if directory.is_dir():
            have |= {f"{sub}/{name}" for name in os.listdir(directory)}
    report["index"]["missing_markers"] = len(wanted - have)
    report["index"]["stale_markers"] = len(have - wanted)
    problems = (report["corrupt"] or report["temp_files"] or report["index"]["missing_markers"]
                or report["index"]["stale_markers"] or not report["index"]["complete"])
    if repair and problems:
        moved = []
        for path in [Path(c["file"]) for c in report["corrupt"]] + [Path(t) for t in report["temp_files"]]:
            with store._lock(path.parent, store.lock_timeout):  # never under a live writer's feet
                if path.exists():
                    moved.append(_quarantine(store, path))
        report["repaired"] = {"quarantined": moved, "index": store.rebuild_index()}
    report["healthy"] = not problems or bool(repair)
    return report


def _quarantine(store: JsonFileStorage, path: Path) -> str:
    """Move ``path`` to ``quarantine/<id dir>/`` under a name that overwrites nothing."""
    folder = store.root / "quarantine" / path.parent.name
    _make_dirs(folder, store.root)  # 0700 for quarantine/ too, whatever the umask
    target = folder / path.name
    counter = 1
    while target.exists():
        target = folder / f"{path.name}.{counter}"
        counter += 1
    shutil.move(str(path), str(target))
    return str(target)
