"""PostgreSQL storage: several workers draining due timers, and B1 on PostgreSQL vs JSON files.

    python bench/postgres_workers.py [--dsn URL] [--timers 10000] [--workers 1,4] [--instances 500] [--rounds 5]

Part 1 - workers. ``--timers`` instances of a one-timer workflow (``Wait`` 1 s -> ``Done``)
are stored already due, by bulk ``COPY`` of real instance documents (the first one is made
by the engine, the others are copies with their own id and run). Then N worker processes
(``Hephaestus.tick()`` in a loop, as ``heph worker`` does, until nothing is due) drain them
at once. Checked afterwards: every instance completed, every timer fired exactly once (the
workers' reports are disjoint and add up, and every history holds exactly one ``resumed``
entry for the timer). Prints timers/s for each worker count in ``--workers``.

Part 2 - B1 (as ``bench/throughput.py``): ``--instances`` instances of the linear 5-step
workflow, sequential, one process, on ``PostgresStorage`` and on ``JsonFileStorage``,
interleaved in ``--rounds`` rounds so that drift hits both alike.

Every run works in a schema of its own (random name), dropped at the end. Needs a
PostgreSQL server (default postgresql://postgres@127.0.0.1:5432/test, or $HEPH_DATABASE_URL)
and psycopg 3. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from _common import BenchLinear, header, table, temp_dir

from heph import Done, Unique, Wait, Workflow

DEFAULT_DSN = os.environ.get("HEPH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
STEPS = 5
CHUNK = 5_000  # rows per transaction when seeding timers


class BenchTimer(Workflow):
    """One durable timer, then done."""

    unique = Unique("benchtimer")
    name = "benchtimer"
    start = (Wait, {"duration": 1, "unit": "second"})
    transitions = {Wait: {"timeout": Done}}


# -- part 1: workers -------------------------------------------------------------------------


def seed_timers(store, count: int) -> None:
    """``count`` waiting instances whose timer is already due, written with one COPY."""
    from psycopg.types.json import Jsonb

    import heph
    from heph.runtime.clock import ManualClock

    past = datetime.now(timezone.utc) - timedelta(hours=1)
    app = heph.Hephaestus(storage=store, clock=ManualClock(past))
    app.start(BenchTimer, "template", {})
    template = store.runs("benchtimer::template")[0]
    with store._pool.connect() as conn:
        conn.execute(f"DELETE FROM {store._s}.runs")
        # one transaction per CHUNK rows: the uniqueness trigger holds an advisory lock per active
        # row until commit, and one transaction of all of them would outgrow the lock table
        for first in range(0, count, CHUNK):
            with conn.transaction():
                with conn.cursor().copy(
                    f"COPY {store._s}.runs (id, run, workflow, version, status, unique_scope, next_due_at, "
                    f"created_at, updated_at, doc) FROM STDIN"
                ) as copy:
                    for n in range(first, min(count, first + CHUNK)):
                        doc = template.to_dict()
                        doc["id"] = f"benchtimer::t{n}"
                        doc["run"] = f"{template.run[:-6]}{n:06x}"
                        copy.write_row((doc["id"], doc["run"], "benchtimer", 1, "waiting", template.scope,
                                        template.next_due_at, template.created_at, template.updated_at,
                                        Jsonb(doc)))


def worker_main(dsn: str, schema: str, barrier: str) -> None:
    """One worker process: tick until nothing is due; print what it fired, as JSON."""
    import heph
    from heph.runtime.storage.postgres import PostgresStorage

    store = PostgresStorage(dsn, schema=schema)
    app = heph.Hephaestus(storage=store)
    store.runs("benchtimer::warm")  # connect before the start line
    print("ready", flush=True)
    while not os.path.exists(barrier):
        time.sleep(0.001)
    fired: list[str] = []
    start = time.perf_counter()
    while True:  # like `heph worker`, minus the sleep: stop once a tick finds nothing left to claim
        actions = app.tick()
        fired.extend(a["id"] for a in actions)
        if not actions:
            break
    seconds = time.perf_counter() - start
    store.close()
    print(json.dumps({"fired": fired, "seconds": seconds}), flush=True)


def drain(dsn: str, store, count: int, workers: int, scratch: Path) -> dict:
    seed_timers(store, count)
    barrier = scratch / f"go-{workers}-{uuid.uuid4().hex[:6]}"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", dsn, store.schema, str(barrier)],
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    barrier.touch()
    reports = [json.loads(proc.communicate()[0]) for proc in procs]
    wall = time.perf_counter() - start

    fired = [i for r in reports for i in r["fired"]]
    expected = {f"benchtimer::t{n}" for n in range(count)}
    assert len(fired) == len(set(fired)) == count and set(fired) == expected, "a timer fired twice or never"
    rows = store._read(
        f"SELECT status, (SELECT count(*) FROM jsonb_array_elements(doc->'history') h "
        f"WHERE h->>'step' = 'wait' AND h->>'outcome' = 'resumed') FROM {store._s}.runs WHERE id <> 'benchtimer::template'")
    assert len(rows) == count and all(s == "completed" and n == 1 for s, n in rows), "history disagrees"
    return {"workers": workers, "wall": wall, "per_worker": sorted(len(r["fired"]) for r in reports)}


# -- part 2: B1 ---------------------------------------------------------------------------------


def b1(make_store, instances: int, rounds: int, label: str) -> Iterator[tuple[float, int]]:
    """Run ``instances`` linear instances in ``rounds`` blocks; after each block yield the seconds
    spent and the instances run so far (callers interleave two stores block by block)."""
    import heph

    store = make_store()
    try:
        app = heph.Hephaestus(storage=store)
        for n in range(10):
            app.start(BenchLinear, f"warm{label}{n}", {"n": n})
        spent, done = 0.0, 0
        for r in range(rounds):
            block = instances // rounds + (1 if r < instances % rounds else 0)
            start = time.perf_counter()
            for n in range(block):
                app.start(BenchLinear, f"b{label}{r}x{n}", {"n": n})
            spent += time.perf_counter() - start
            done += block
            yield spent, done
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--workers", default="1,4", help="worker counts to try, comma-separated (default 1,4)")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    try:
        import psycopg

        with psycopg.connect(args.dsn, connect_timeout=3) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
    except Exception as exc:  # noqa: BLE001
        sys.exit(f"no PostgreSQL at {args.dsn}: {exc}")
    from heph.runtime.storage.postgres import PostgresStorage

    header(f"PostgreSQL storage: {args.timers} due timers drained by workers; B1 ({args.instances} x {STEPS} steps)")
    print(f"   PostgreSQL {server} on the same machine, synchronous_commit={sync}, fsync={fsync}")
    schemas: list[str] = []

    def make_store() -> PostgresStorage:
        name = f"heph_bench_{uuid.uuid4().hex[:10]}"
        schemas.append(name)
        store = PostgresStorage(args.dsn, schema=name)
        store.migrate()
        return store

    try:
        rows = []
        with temp_dir("pgworkers") as scratch:
            for workers in [int(w) for w in args.workers.split(",")]:
                store = make_store()
                result = drain(args.dsn, store, args.timers, workers, scratch)
                store.close()
                rows.append([str(workers), f"{result['wall']:.2f} s", f"{args.timers / result['wall']:,.0f}",
                             " / ".join(map(str, result["per_worker"])), "yes"])
        print()
        table(rows, ["workers", "wall", "timers/s", "fired per worker", "each fired once"])

        with temp_dir("pgb1") as scratch:
            import heph

            rounds = max(1, args.rounds)
            pg_runs = b1(make_store, args.instances, rounds, "p")
            js_runs = b1(lambda: heph.JsonFileStorage(scratch / "store"), args.instances, rounds, "j")
            # alternate blocks; the last pair holds the totals
            *_, ((pg_s, pg_n), (js_s, js_n)) = zip(pg_runs, js_runs)
            pg_runs.close()
            js_runs.close()
        print()
        table([
            ["PostgresStorage", f"{pg_n / pg_s:,.0f}", f"{pg_n * STEPS / pg_s:,.0f}", f"{pg_s / pg_n * 1000:.2f}"],
            ["JsonFileStorage", f"{js_n / js_s:,.0f}", f"{js_n * STEPS / js_s:,.0f}", f"{js_s / js_n * 1000:.2f}"],
        ], ["B1 storage", "instances/s", "steps/s", "ms per instance"])
        print(f"   PostgreSQL / JSON files: {(pg_n / pg_s) / (js_n / js_s):.2f}x")
    finally:
        import psycopg

        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for name in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(*sys.argv[2:5])
    else:
        main()
