"""B1 - throughput: N instances of a linear 5-step workflow, sequential, one process.

    python bench/throughput.py [--instances 500] [--rounds 5] [--no-dbos]

heph runs them on ``JsonFileStorage``; DBOS (when installed) runs a
``@DBOS.workflow`` calling five ``@DBOS.step`` on SQLite. Prints steps/s for
both, heph/DBOS, and the fsync floor of this disk measured in the same run
(write+fsync+rename of a 1 KB file, with and without a directory fsync), with
heph's steps/s as a % of that floor, and the durable writes heph makes per
instance.

The work is split into ``--rounds`` rounds; each round runs a block of the
floor, then a block of heph and a block of DBOS (alternating which goes first),
so that a disk whose speed drifts (shared machines) weighs on all three alike;
the totals are printed, then the median and range of the per-round ratios.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import time

import _common
from _common import BenchLinear, header, median, ratio, table, temp_dir

STEPS = 5
WARMUP = 10
FLOOR_OPS = 1000  # per variant, over all rounds


def count_heph_writes(directory, instances: int = 10) -> dict[str, float]:
    """Durable writes and fsyncs per instance (a separate, untimed pass)."""
    import heph
    from heph.runtime.storage import jsonfile

    app = heph.Hephaestus(storage=heph.JsonFileStorage(directory))
    app.start(BenchLinear, "warm", {"n": 0})
    counts = {"writes": 0, "fsyncs": 0}
    real_write, real_fsync = jsonfile.replace_file, os.fsync

    def replace_file(*args, **kwargs):
        counts["writes"] += 1
        return real_write(*args, **kwargs)

    def fsync(fd):
        counts["fsyncs"] += 1
        return real_fsync(fd)

    jsonfile.replace_file, os.fsync = replace_file, fsync
    try:
        for n in range(instances):
            app.start(BenchLinear, f"c{n}", {"n": n})
    finally:
        jsonfile.replace_file, os.fsync = real_write, real_fsync
    return {k: v / instances for k, v in counts.items()}


def run_heph_block(app, flows, block: range) -> dict:
    start = time.perf_counter()
    for i in block:
        app.start(BenchLinear, f"i{i}", {"n": i})
    return {"heph": time.perf_counter() - start}


def run_dbos_block(app, flows, block: range) -> dict:
    if flows is None:
        return {}
    start = time.perf_counter()
    for i in block:
        flows.linear5(i)
    return {"dbos": time.perf_counter() - start}


def spread(values: list[float], fmt: str) -> str:
    return f"median {fmt.format(median(values))} (rounds: {fmt.format(min(values))} .. {fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=500, help="instances per engine (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    args = parser.parse_args()
    n, rounds = args.instances, max(1, min(args.rounds, args.instances))

    header(f"B1 throughput: {n} instances x {STEPS} steps, sequential, one process, {rounds} interleaved rounds")
    use_dbos = _common.use_dbos(args.no_dbos)

    import heph

    spent = {"heph": 0.0, "dbos": 0.0}
    floor_ops = {"file": 0.0, "file+dir": 0.0, "in-place": 0.0, "layout": 0.0, "layout-nodir": 0.0}
    floor_spent = {"file": 0.0, "file+dir": 0.0, "in-place": 0.0, "layout": 0.0, "layout-nodir": 0.0}
    per_round: list[dict] = []
    with temp_dir("b1") as tmp:
        app = heph.Hephaestus(storage=heph.JsonFileStorage(tmp / "heph"))
        for w in range(WARMUP):
            app.start(BenchLinear, f"warm{w}", {"n": w})
        flows = None
        if use_dbos:
            import _dbos_flows as flows

            flows.launch(tmp / "dbos")
            for w in range(WARMUP):
                flows.linear5(w)
        try:
            done = 0
            for r in range(rounds):
                block = range(done, done + n // rounds + (1 if r < n % rounds else 0))
                floor = _common.fsync_floor(tmp / "floor", count=FLOOR_OPS // rounds)
                for label, rate in floor.items():
                    floor_ops[label] += FLOOR_OPS // rounds
                    floor_spent[label] += (FLOOR_OPS // rounds) / rate
                layout_steps = max(1, len(block) // 2) * STEPS
                floor["layout"] = _common.layout_floor(tmp / "layout", layout_steps // STEPS, STEPS)
                floor["layout-nodir"] = _common.layout_floor(tmp / "layout", layout_steps // STEPS, STEPS,
                                                             dir_fsyncs=False)
                for label in ("layout", "layout-nodir"):
                    floor_ops[label] += layout_steps
                    floor_spent[label] += layout_steps / floor[label]
                # alternate which engine goes first, so that neither always follows the floor's burst of fsyncs
                order = [run_heph_block, run_dbos_block] if r % 2 == 0 else [run_dbos_block, run_heph_block]
                took = {}
                for runner in order:
                    took.update(runner(app, flows, block))
                spent["heph"] += took["heph"]
                if "dbos" in took:
                    spent["dbos"] += took["dbos"]
                per_round.append({"steps": len(block) * STEPS, **took, **floor})
                done = block.stop
        finally:
            if flows is not None:
                flows.shutdown()
        completed = app.list(workflow=BenchLinear, status="completed", limit=None)
        if len(completed) != n + WARMUP:
            raise SystemExit(f"heph: expected {n + WARMUP} completed instances, found {len(completed)}")
        per = count_heph_writes(tmp / "heph-count")

    floor = {label: floor_ops[label] / floor_spent[label] for label in floor_ops}
    heph_rate = n * STEPS / spent["heph"]
    dbos_rate = n * STEPS / spent["dbos"] if use_dbos else None
    rows = [["heph JsonFileStorage", f"{heph_rate:,.0f}", f"{n / spent['heph']:,.1f}", f"{spent['heph']:.2f}"]]
    if dbos_rate is not None:
        rows.append([f"DBOS {_common.dbos_version()} SQLite", f"{dbos_rate:,.0f}", f"{dbos_rate / STEPS:,.1f}",
                     f"{spent['dbos']:.2f}"])
    rows.append(["fsync floor: write+fsync+rename 1 KB", f"{floor['file']:,.0f} ops/s", "", ""])
    rows.append(["fsync floor: ... + directory fsync", f"{floor['file+dir']:,.0f} ops/s", "", ""])
    rows.append(["in-place pwrite+fdatasync 1 KB (SQLite's kind)", f"{floor['in-place']:,.0f} ops/s", "", ""])
    rows.append(["heph's system calls alone (no Python)", f"{floor['layout']:,.0f}", f"{floor['layout'] / STEPS:,.1f}", ""])
    rows.append(["... without its 2 directory fsyncs", f"{floor['layout-nodir']:,.0f}",
                 f"{floor['layout-nodir'] / STEPS:,.1f}", ""])
    table(rows, ["", "steps/s", "instances/s", "seconds"])
    print()
    print(f"   heph durable writes per instance: {per['writes']:.1f} ({per['writes'] / STEPS:.2f} per step), "
          f"fsyncs per instance: {per['fsyncs']:.1f}")
    print(f"   heph / DBOS steps/s:                         {ratio(heph_rate, dbos_rate)}   (target >= 5x)")
    print(f"   in-place pwrite+fdatasync / write+fsync+rename: {ratio(floor['in-place'], floor['file'])}"
          "   (how much cheaper SQLite's kind of durable write is on this disk right now)")
    print(f"   heph steps/s as % of floor (file fsync):     {100 * heph_rate / floor['file']:.0f}%   (target >= 60%)")
    print(f"   heph steps/s as % of floor (file+dir fsync): {100 * heph_rate / floor['file+dir']:.0f}%")
    print(f"   heph's system calls alone as % of floor (file fsync): {100 * floor['layout'] / floor['file']:.0f}%;"
          f" heph as % of its system calls alone: {100 * heph_rate / floor['layout']:.0f}%")
    print(f"   ... without the 2 directory fsyncs a new instance needs to be durable (which the floor leaves out): "
          f"{100 * floor['layout-nodir'] / floor['file']:.0f}% of the floor")
    if len(per_round) > 1:
        print("   per round (each round: floor, then heph and DBOS in alternating order):")
        if use_dbos:
            print("     heph / DBOS:              " + spread([r["dbos"] / r["heph"] for r in per_round], "{:.2f}x"))
            print("     floor ops/s -> heph/DBOS: " + ", ".join(f"{r['file']:,.0f} -> {r['dbos'] / r['heph']:.2f}x"
                                                            for r in per_round))
        print("     heph % of floor (file):   " + spread([100 * r["steps"] / r["heph"] / r["file"] for r in per_round],
                                                       "{:.0f}%"))
        print("     heph's calls % of floor:  " + spread([100 * r["layout"] / r["file"] for r in per_round], "{:.0f}%"))
        print("     ... without dir fsyncs:   " + spread([100 * r["layout-nodir"] / r["file"] for r in per_round],
                                                       "{:.0f}%"))


if __name__ == "__main__":
    main()
