"""B2 - event round trip: N instances run a step, wait for an external event, run a step.

    python bench/event_roundtrip.py [--instances 200] [--repeat 3] [--no-dbos]

heph: start all N (each runs ``Prepare`` and stops, waiting, on a step that
returned ``heph.ASYNC``), then resume each with ``go`` (runs ``Finish``).
DBOS (when installed, SQLite): a workflow that runs a step, ``DBOS.recv("go")``,
runs a step; start all with ``DBOS.start_workflow``, then ``DBOS.send`` to each
and wait for every result. Prints round trips/s (instances carried from start to
completed per second, both phases included) and heph/DBOS.

The whole exercise is repeated ``--repeat`` times (new instances each time, heph
and DBOS alternating which goes first) so that drift in a shared disk's speed
shows up as a range instead of a skewed ratio; totals are printed, then the
median and range of the per-repeat ratios. DBOS on SQLite delivers messages by
polling (every 1 s by default): each repeat's "resume all" includes up to one
such interval. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import time

import _common
from _common import BenchEvent, header, median, ratio, table, temp_dir

WARMUP = 5


class HephSide:
    def __init__(self, directory):
        import heph

        self.app = heph.Hephaestus(storage=heph.JsonFileStorage(directory / "store"))
        for n in range(WARMUP):
            self.app.start(BenchEvent, f"warm{n}", {"n": n})
            self.app.resume(f"benchev::warm{n}", "go")

    def block(self, numbers: range) -> tuple[float, float]:
        t0 = time.perf_counter()
        ids = [self.app.start(BenchEvent, f"i{n}", {"n": n}) for n in numbers]
        t1 = time.perf_counter()
        for instance_id in ids:
            self.app.resume(instance_id, "go")
        return t1 - t0, time.perf_counter() - t1

    def check(self, instances: int) -> None:
        done = self.app.list(workflow=BenchEvent, status="completed", limit=None)
        if len(done) != instances + WARMUP:
            raise SystemExit(f"heph: expected {instances + WARMUP} completed instances, found {len(done)}")


class DbosSide:
    def __init__(self, directory, poll_seconds: float | None):
        import _dbos_flows as flows
        from dbos import DBOS

        self.DBOS, self.flows = DBOS, flows
        flows.launch(directory, poll_seconds)
        for n in range(WARMUP):
            handle = DBOS.start_workflow(flows.event_flow, n)
            DBOS.send(handle.get_workflow_id(), "warm", "go")
            handle.get_result()

    def block(self, numbers: range) -> tuple[float, float]:
        DBOS = self.DBOS
        t0 = time.perf_counter()
        handles = [DBOS.start_workflow(self.flows.event_flow, n) for n in numbers]
        t1 = time.perf_counter()
        for handle in handles:
            DBOS.send(handle.get_workflow_id(), {"n": 1}, "go")
        results = [handle.get_result() for handle in handles]
        t2 = time.perf_counter()
        if not all(r.get("ok") for r in results):
            raise SystemExit("DBOS: a workflow did not finish")
        return t1 - t0, t2 - t1

    def close(self) -> None:
        self.flows.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200, help="instances per engine and repeat (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the whole exercise (default 3)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    parser.add_argument("--dbos-poll", type=float, default=None, metavar="SECONDS",
                        help="DBOS's notification polling interval (default: DBOS's default, 1 s)")
    args = parser.parse_args()
    n, repeats = args.instances, max(1, args.repeat)

    header(f"B2 event round trip: {n} instances, start all then resume each, x{repeats}")
    use_dbos = _common.use_dbos(args.no_dbos)
    spent = {"heph": [0.0, 0.0], "dbos": [0.0, 0.0]}
    per_repeat: list[dict] = []
    with temp_dir("b2") as tmp:
        sides = {"heph": HephSide(tmp / "heph")}
        if use_dbos:
            sides["dbos"] = DbosSide(tmp / "dbos", args.dbos_poll)
        try:
            for r in range(repeats):
                block = range(r * n, (r + 1) * n)
                names = list(sides) if r % 2 == 0 else list(reversed(sides))
                took = {}
                for name in names:
                    a, b = sides[name].block(block)
                    spent[name][0] += a
                    spent[name][1] += b
                    took[name] = a + b
                per_repeat.append(took)
            sides["heph"].check(n * repeats)
        finally:
            if "dbos" in sides:
                sides["dbos"].close()

    total = n * repeats
    rows = []
    rates = {}
    for name, label in (("heph", "heph JsonFileStorage"), ("dbos", f"DBOS {_common.dbos_version()} SQLite")):
        if name not in per_repeat[0]:
            continue
        a, b = spent[name]
        rates[name] = total / (a + b)
        rows.append([label, f"{rates[name]:,.1f}", f"{a / repeats:.2f}", f"{b / repeats:.2f}", f"{(a + b) / repeats:.2f}"])
    table(rows, ["", "round trips/s", "start all (s)", "resume all (s)", "total (s)"])
    print("   (seconds: mean per repeat)")
    print()
    print(f"   heph / DBOS round trips/s: {ratio(rates['heph'], rates.get('dbos'))}   (target >= 5x)")
    if "dbos" in rates and repeats > 1:
        each = [r["dbos"] / r["heph"] for r in per_repeat]
        print(f"   per repeat: median {median(each):.2f}x (repeats: {', '.join(f'{x:.2f}x' for x in each)})")
    if "dbos" in rates:
        interval = "default interval 1 s" if args.dbos_poll is None else f"interval {args.dbos_poll:g} s (--dbos-poll)"
        print(f"   (DBOS on SQLite delivers messages by polling, {interval}: "
              "each repeat's 'resume all' includes up to one interval of latency)")


if __name__ == "__main__":
    main()
