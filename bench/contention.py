"""B5 - contention: several processes on one store.

    python bench/contention.py [--procs 1,2,4,8] [--per-process 100] [--hot-procs 8] [--hot-attempts 40]

Part 1 - independent keys: for each process count P, P processes (forked, released
together by a barrier) each start and then resume their own ``--per-process``
instances of a step -> wait for ``go`` -> step workflow, on one shared
``JsonFileStorage``. Reports the total round trips/s (start + resume = one round
trip, 6 durable writes) and the speed-up over one process.

Part 2 - one hot key: ``--hot-procs`` processes each make ``--hot-attempts``
attempts on ONE instance key, choosing start or resume at random. Each refused
attempt (``AlreadyRunning``; ``InvalidEvent``: nothing waiting; ``InstanceNotFound``:
a resume before the first start) is counted.
At the end the store must show no lost update: runs on disk == successful
starts, completed runs == successful resumes, at most one active run, and every
run's history has exactly the entries of its status. Reports the serialised
rate (attempts/s and successful operations/s). Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time

from _common import BenchEvent, header, table, temp_dir

HOT_ID = "benchev::hot"


def _independent(store: str, proc: int, count: int, barrier, out) -> None:
    import heph

    app = heph.Hephaestus(storage=heph.JsonFileStorage(store))
    barrier.wait()
    ids = [app.start(BenchEvent, f"p{proc}i{n}", {"n": n}) for n in range(count)]
    for instance_id in ids:
        app.resume(instance_id, "go")
    out.put(count)


def _hammer(store: str, proc: int, attempts: int, barrier, out) -> None:
    import heph

    app = heph.Hephaestus(storage=heph.JsonFileStorage(store))
    rng = random.Random(proc)
    counts = {"started": 0, "resumed": 0, "already_running": 0, "not_waiting": 0, "not_found": 0, "busy": 0, "other": 0}
    barrier.wait()
    for _ in range(attempts):
        try:
            if rng.random() < 0.5:
                app.start(BenchEvent, "hot", {"proc": proc})
                counts["started"] += 1
            else:
                app.resume(HOT_ID, "go")
                counts["resumed"] += 1
        except heph.AlreadyRunning:
            counts["already_running"] += 1
        except heph.InvalidEvent:
            counts["not_waiting"] += 1
        except heph.InstanceNotFound:  # a resume before the first start
            counts["not_found"] += 1
        except heph.StorageError:
            counts["busy"] += 1
        except heph.HephError:
            counts["other"] += 1
    out.put(counts)


def _run(target, store: str, procs: int, arg: int) -> tuple[float, list]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    children = [ctx.Process(target=target, args=(store, p, arg, barrier, out)) for p in range(procs)]
    for child in children:
        child.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get() for _ in children]
    elapsed = time.perf_counter() - start
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"a worker process exited with {child.exitcode}")
    return elapsed, results


EXPECTED_HISTORY = {
    "completed": [("prepare", "completed"), ("await_go", "async"), ("await_go", "resumed"),
                  ("finish", "completed"), ("done", "completed")],
    "waiting": [("prepare", "completed"), ("await_go", "async")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,2,4,8", help="process counts for part 1 (default 1,2,4,8)")
    parser.add_argument("--per-process", type=int, default=100, help="instances per process in part 1 (default 100)")
    parser.add_argument("--hot-procs", type=int, default=8, help="processes on the hot key (default 8)")
    parser.add_argument("--hot-attempts", type=int, default=40, help="attempts per process on the hot key (default 40)")
    args = parser.parse_args()
    counts = [int(p) for p in args.procs.split(",") if p.strip()]

    import heph

    header("B5 contention: processes sharing one JsonFileStorage")
    print(f"   part 1: each process starts then resumes {args.per_process} instances of its own")
    rows, base = [], None
    for procs in counts:
        with temp_dir(f"b5-{procs}") as tmp:
            store = str(tmp / "store")
            heph.JsonFileStorage(store)._ensure_layout()
            elapsed, done = _run(_independent, store, procs, args.per_process)
            total = sum(done)
            found = heph.Hephaestus(storage=heph.JsonFileStorage(store)).list(status="completed", limit=None)
            if len(found) != total:
                raise SystemExit(f"{procs} procs: {total} round trips reported, {len(found)} completed on disk")
        rate = total / elapsed
        base = base or rate
        rows.append([procs, total, f"{elapsed:.2f}", f"{rate:,.1f}", f"{rate / procs:,.1f}", f"{rate / base:.2f}x"])
    table(rows, ["processes", "round trips", "seconds", "round trips/s", "per process", f"vs {counts[0]} process(es)"])

    print()
    print(f"   part 2: {args.hot_procs} processes x {args.hot_attempts} random start/resume attempts on {HOT_ID}")
    with temp_dir("b5-hot") as tmp:
        store = str(tmp / "store")
        heph.JsonFileStorage(store)._ensure_layout()
        elapsed, results = _run(_hammer, store, args.hot_procs, args.hot_attempts)
        total = {k: sum(r[k] for r in results) for k in results[0]}
        runs = heph.JsonFileStorage(store).runs(HOT_ID)
    by_status: dict[str, int] = {}
    bad_history = 0
    for run in runs:
        by_status[run.status] = by_status.get(run.status, 0) + 1
        if [(h.step, h.outcome) for h in run.history] != EXPECTED_HISTORY.get(run.status):
            bad_history += 1
    active = sum(by_status.get(s, 0) for s in ("pending", "running", "waiting"))
    checks = [
        ("runs on disk == successful starts", len(runs), total["started"]),
        ("completed runs == successful resumes", by_status.get("completed", 0), total["resumed"]),
        ("active runs <= 1", active, "<= 1"),
        ("runs with an unexpected history", bad_history, 0),
    ]
    ok = (len(runs) == total["started"] and by_status.get("completed", 0) == total["resumed"]
          and active <= 1 and bad_history == 0)
    attempts = args.hot_procs * args.hot_attempts
    successes = total["started"] + total["resumed"]
    table([[k, v] for k, v in total.items()], ["outcome", "count"])
    print()
    table([[name, got, want, "ok" if (got <= 1 if want == "<= 1" else got == want) else "MISMATCH"]
           for name, got, want in checks], ["check", "found", "expected", ""])
    print()
    print(f"   no lost update: {'yes' if ok else 'NO - see the mismatches above'}")
    print(f"   serialised rate on one key: {attempts / elapsed:,.1f} attempts/s, "
          f"{successes / elapsed:,.1f} successful starts+resumes/s ({elapsed:.2f} s, {len(runs)} runs of the key at the end)")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
