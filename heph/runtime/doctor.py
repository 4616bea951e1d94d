"""``heph doctor``: check a JSON-file store (files, index, links, locks, leases) and optionally repair it.

Repairs never delete data: corrupt instance files, leftover temporary files and symbolic links
found where the store keeps its own files or directories (the link itself, never its target)
are moved to ``<store>/quarantine/``; the index is rebuilt from the instance files; runs
interrupted by a dead process are left ``running`` with their index marker in place, so the
next ``heph tick`` runs their steps again.

A file that cannot be read (an I/O error) is reported as unreadable and never moved: it may be
fine, and a store with one is not healthy until it reads again. Checking creates and changes
nothing, so it works on a full disk. A repair that cannot finish (a full disk, an I/O error, a
link in ``quarantine/`` itself) stops with one ``StorageError`` line; what it repaired before
stays repaired, and running it again carries on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from heph.errors import MaybeApplied, StorageError
from heph.runtime.storage.jsonfile import CorruptFile, JsonFileStorage, read_instance


def link_reason(path: Path) -> str:
    return (f"{path} is a symbolic link, where the store keeps a file or directory of its own; heph never "
            f"follows it (--repair moves the link itself to quarantine/, never its target)")


def diagnose(store: JsonFileStorage, *, repair: bool = False,
             known: Callable[[str, int], bool] | None = None) -> dict:
    """A report of everything wrong with ``store``; with ``repair``, fix what can be fixed safely."""
    report: dict = {
        "store": str(store.root), "instances": 0, "corrupt": [], "unreadable": [], "temp_files": [],
        "unknown_workflows": [],
        "interrupted": [], "busy": [], "index": {"complete": store.index_complete(),
                                                  "missing_markers": 0, "stale_markers": 0},
        "repaired": {},
    }
    links = store.links()
    report["corrupt"] += [{"file": str(path), "reason": link_reason(path)} for path in links]
    if not links and not store.has_instances():
        report["healthy"] = True
        return report
    linked = set(links)
    wanted: set[str] = set()
    for directory in store.instance_dirs():
        run_files, temp_files = store.instance_files(directory)
        report["temp_files"] += [str(path) for path in temp_files]
        for path in run_files:
            try:
                instance = read_instance(path)
            except CorruptFile as exc:
                report["corrupt"].append({"file": str(path), "reason": f"instance file {path} {exc.problem}"})
                continue
            except StorageError as exc:  # an I/O error: the file may be fine, so it is never moved
                report["unreadable"].append({"file": str(path), "reason": str(exc)})
                continue
            report["instances"] += 1
            wanted |= store.markers(instance)
            if known is not None and not known(instance.workflow, instance.version):
                report["unknown_workflows"].append({"id": instance.id, "run": instance.run,
                                                    "workflow": instance.workflow, "version": instance.version})
            if instance.status in ("pending", "running"):
                if directory / ".lock" not in linked and store.is_busy(directory):
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
        report["repaired"] = _repair(store, links, report)
    report["healthy"] = (not problems or bool(repair)) and not report["unreadable"]
    return report


def _repair(store: JsonFileStorage, links: list[Path], report: dict) -> dict:
    """Quarantine the links, then the corrupt and temporary files; rebuild the index. One
    ``StorageError`` line if it cannot finish."""
    moved = []
    try:
        quarantined = store.root / "quarantine"
        for path in links:
            if path == quarantined or quarantined in path.parents:
                raise StorageError(f"{path} is a symbolic link in the store's quarantine; heph never follows "
                                   f"it nor moves anything through it: remove the link (rm {path}) and run "
                                   f"`heph doctor --repair` again")
        files = [Path(c["file"]) for c in report["corrupt"]] + [Path(t) for t in report["temp_files"]]
        for path in files:  # the links first: they are among the corrupt entries, before the files
            target = store.quarantine(path)
            if target is not None:
                moved.append(target)
        index = store.rebuild_index()
    except StorageError as exc:
        if not moved:
            raise StorageError(f"the repair of {store.root} stopped, having changed nothing: {exc}") from None
        raise MaybeApplied(f"the repair of {store.root} stopped after moving {len(moved)} file(s) to quarantine/ "
                           f"(that part is done): {exc}; run heph doctor to see what is left", path=str(store.root),
                           reason=str(exc)) from None
    return {"quarantined": moved, "index": index}
