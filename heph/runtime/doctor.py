"""``heph doctor``: check a JSON-file store (files, index, locks, leases) and optionally repair it.

Repairs never delete data: corrupt instance files and leftover temporary files
are moved to ``<store>/quarantine/``; the index is rebuilt from the instance
files; runs interrupted by a dead process are left ``running`` with their index
marker in place, so the next ``heph tick`` runs their steps again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from heph.errors import StorageError
from heph.runtime.storage.jsonfile import JsonFileStorage, read_instance


def diagnose(store: JsonFileStorage, *, repair: bool = False,
             known: Callable[[str, int], bool] | None = None) -> dict:
    """A report of everything wrong with ``store``; with ``repair``, fix what can be fixed safely."""
    report: dict = {
        "store": str(store.root), "instances": 0, "corrupt": [], "temp_files": [], "unknown_workflows": [],
        "interrupted": [], "busy": [], "index": {"complete": store.index_complete(),
                                                  "missing_markers": 0, "stale_markers": 0},
        "repaired": {},
    }
    if not store.instances.exists():
        report["healthy"] = True
        return report
    wanted: set[str] = set()
    for directory in store.instance_dirs():
        run_files, temp_files = store.instance_files(directory)
        report["temp_files"] += [str(path) for path in temp_files]
        for path in run_files:
            try:
                instance = read_instance(path)
            except StorageError as exc:
                report["corrupt"].append({"file": str(path), "reason": str(exc)})
                continue
            report["instances"] += 1
            wanted |= store.markers(instance)
            if known is not None and not known(instance.workflow, instance.version):
                report["unknown_workflows"].append({"id": instance.id, "run": instance.run,
                                                    "workflow": instance.workflow, "version": instance.version})
            if instance.status in ("pending", "running"):
                if store.is_busy(directory):
                    report["busy"].append({"id": instance.id, "run": instance.run})
                else:
                    lease = instance.lease or {}
                    report["interrupted"].append({"id": instance.id, "run": instance.run,
                                                  "steps": [a["step"] for a in instance.active],
                                                  "owner_pid": lease.get("pid"), "owner_host": lease.get("host")})
    have = store.present_markers()
    report["index"]["missing_markers"] = len(wanted - have)
    report["index"]["stale_markers"] = len(have - wanted)
    problems = (report["corrupt"] or report["temp_files"] or report["index"]["missing_markers"]
                or report["index"]["stale_markers"] or not report["index"]["complete"])
    if repair and problems:
        moved = []
        for path in [Path(c["file"]) for c in report["corrupt"]] + [Path(t) for t in report["temp_files"]]:
            target = store.quarantine(path)
            if target is not None:
                moved.append(target)
        report["repaired"] = {"quarantined": moved, "index": store.rebuild_index()}
    report["healthy"] = not problems or bool(repair)
    return report
