"""B4 - scale: CLI commands against stores of 1k, 10k and 100k instances.

    python bench/scale.py [--sizes 1000,10000,100000] [--runs 5]

For each size, a copy of sample_project (under /tmp) gets a store written
directly, fast and without fsync, with heph's own encoder and index-marker
naming (``heph.runtime.storage.jsonfile.encode`` and ``JsonFileStorage._markers``):
99% completed ``orderflow`` runs, 1% waiting (``paymentflow`` waiting on an
event, plus 5 ``reminderflow`` runs whose 1-hour timer is already due). Then,
each as a fresh process, median wall time and peak RSS (GNU ``/usr/bin/time
-f %M``) of:

  * ``heph list --status waiting``   (default --limit 50)
  * ``heph list``                    (every status, default --limit 50)
  * ``heph show orderflow <one>``
  * ``heph tick``: the first run fires the 5 due timers; later runs find nothing due

All stores are built first, then the commands run against them with the sizes
interleaved, so that other load on the machine weighs on every size alike.
Prints the time to build each store, the figures, and largest/smallest ratios.
Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import SAMPLE_PROJECT, header, heph_cmd, median, run_measured, table, temp_dir

DUE_TIMERS = 5


def templates(project: Path):
    """A completed orderflow run, a waiting paymentflow run and a reminderflow run with a due timer."""
    import heph

    sys.path.insert(0, str(project))
    import shop.orders  # noqa: F401  (registers the sample workflows)
    import shop.payments  # noqa: F401
    import shop.reminders  # noqa: F401

    clock = heph.ManualClock(datetime.now(timezone.utc) - timedelta(hours=2))
    app = heph.Hephaestus(storage=heph.MemoryStorage(), clock=clock)
    done = app.get(app.start("orderflow", "t1", {"items": ["widget", "gadget"], "amount": 4999}))
    waiting = app.get(app.start("paymentflow", "t2", {"order": "o1", "amount": 1200}))
    timer = app.get(app.start("reminderflow", "t3", {"name": "Ada"}))
    assert done.status == "completed" and waiting.status == "waiting" and timer.status == "waiting"
    return done, waiting, timer


def build_store(project: Path, size: int, shapes) -> dict:
    """Write ``size`` instance files and their index markers directly; return counts and timings."""
    from heph.runtime.storage.jsonfile import JsonFileStorage, encode, id_dir_name

    done, waiting, timer = shapes
    store = JsonFileStorage(project / ".heph")
    start = time.perf_counter()
    store._ensure_layout()
    n_waiting = max(1, size // 100)
    n_due = min(DUE_TIMERS, n_waiting)
    every = max(1, size // n_waiting)
    base = datetime.now(timezone.utc) - timedelta(days=1)
    made = {"completed": 0, "waiting": 0, "due": 0}
    show_value = None
    for i in range(size):
        slot = i // every if i % every == every - 1 else None
        if slot is not None and slot < n_waiting:
            inst = timer if slot < n_due else waiting
            prefix = "r" if slot < n_due else "p"
            made["due" if slot < n_due else "waiting"] += 1
        else:
            inst, prefix = done, "o"
            made["completed"] += 1
        key = inst.id.split("::")[0]
        inst.id = f"{key}::{prefix}{i}"
        inst.run = f"{base + timedelta(microseconds=37 * i):%Y%m%dT%H%M%S%f}-{i % 0xFFFFFF:06x}"
        directory = store.instances / id_dir_name(inst.id)
        directory.mkdir(mode=0o700)
        fd = os.open(directory / f"{inst.run}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, encode(inst))
        finally:
            os.close(fd)
        store._touch(store._markers(inst))
        if prefix == "o" and i >= size // 2 and show_value is None:
            show_value = f"o{i}"
    written = time.perf_counter() - start
    os.sync()  # so that the measured commands do not pay for flushing the build
    synced = time.perf_counter() - start - written
    found = store.query(statuses=["waiting"])
    if len(found) != made["waiting"] + made["due"]:
        raise SystemExit(f"store of {size}: expected {made['waiting'] + made['due']} waiting runs, found {len(found)}")
    return {**made, "write_s": written, "sync_s": synced, "show": show_value}


COMMANDS = [
    ("list --status waiting", lambda s: ["list", "--status", "waiting"]),
    ("list (all, limit 50)", lambda s: ["list"]),
    ("show <one>", lambda s: ["show", "orderflow", s["show"]]),
    (f"tick (fires {DUE_TIMERS} due)", lambda s: ["tick"]),
    ("tick (nothing due)", lambda s: ["tick"]),
]


def measure(stores: dict[int, tuple[Path, dict]], runs: int) -> dict[int, dict[str, tuple[float, float | None]]]:
    """Run every command against every store, interleaving the sizes (so that other load on the
    machine weighs on every size alike); median wall time and max peak RSS per (size, command)."""
    env = {k: v for k, v in os.environ.items() if k != "HEPH_CONFIG"}
    walls: dict[int, dict[str, list[float]]] = {size: {name: [] for name, _ in COMMANDS} for size in stores}
    peaks: dict[int, dict[str, int]] = {size: {name: 0 for name, _ in COMMANDS} for size in stores}

    def run(size: int, name: str, args: list[str]) -> None:
        project, _ = stores[size]
        wall, peak, code, err = run_measured(heph_cmd(*args), cwd=project, env=env)
        if code != 0:
            raise SystemExit(f"heph {' '.join(args)} failed (exit {code}): {err.strip()[-2000:]}")
        walls[size][name].append(wall)
        peaks[size][name] = max(peaks[size][name], peak or 0)

    for project, built in stores.values():  # warm-up: interpreter, heph, the sample modules
        run_measured(heph_cmd("show", "orderflow", built["show"]), cwd=project, env=env)
    for name, argv in COMMANDS:
        repeat = 1 if name.startswith("tick (fires") else runs  # the first tick fires the due timers
        for _ in range(repeat):
            for size, (_, built) in stores.items():
                run(size, name, argv(built))
    return {size: {name: (median(walls[size][name]), peaks[size][name] or None) for name, _ in COMMANDS}
            for size in stores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="store sizes (default 1000,10000,100000)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command (default 5)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if min(sizes) < 100 * DUE_TIMERS:  # 1% waiting must hold the DUE_TIMERS due timers
        parser.error(f"--sizes: each store needs at least {100 * DUE_TIMERS} instances")

    header(f"B4 scale: stores of {', '.join(f'{s:,}' for s in sizes)} instances (1% waiting, {DUE_TIMERS} timers due)")
    with contextlib.ExitStack() as stack:
        shapes = None
        stores: dict[int, tuple[Path, dict]] = {}
        for size in sizes:
            tmp = stack.enter_context(temp_dir(f"b4-{size}"))
            project = tmp / "sample_project"
            shutil.copytree(SAMPLE_PROJECT, project, ignore=shutil.ignore_patterns(".heph", "__pycache__"))
            shapes = shapes or templates(project)
            built = build_store(project, size, shapes)
            stores[size] = (project, built)
            print(f"   built {size:>7,}: {built['completed']:,} completed, {built['waiting']:,} waiting on an event, "
                  f"{built['due']} due timers in {built['write_s']:.1f} s "
                  f"({size / built['write_s']:,.0f} instances/s) + sync {built['sync_s']:.1f} s", flush=True)
        results = measure(stores, args.runs)
        print("   measured; removing the stores", flush=True)

    print()
    rows = []
    for name, _ in COMMANDS:
        row = [name]
        for size in sizes:
            wall, peak = results[size][name]
            row.append(f"{1000 * wall:.0f} ms / {peak / 1024:.0f} MB" if peak else f"{1000 * wall:.0f} ms")
        rows.append(row)
    table(rows, ["command (median wall / peak RSS)"] + [f"{s:,}" for s in sizes])
    if len(sizes) > 1:
        small, big = min(sizes), max(sizes)
        print()
        print(f"   {big:,} / {small:,} (target: within 2x; peak memory < 100 MB at 100k):")
        for name, _ in COMMANDS:
            (w_small, _p), (w_big, p_big) = results[small][name], results[big][name]
            mem = f", peak {p_big / 1024:.0f} MB at {big:,}" if p_big else ""
            print(f"     {name:24} {w_big / w_small:.2f}x{mem}")


if __name__ == "__main__":
    main()
