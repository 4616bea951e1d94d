"""Crash-injection torture test of heph's JSON-file store: kill workers, check every invariant.

    python bench/torture.py --rounds 3 --workers 6 --instances 40 --seconds 5

Rounds of concurrent ``heph`` commands and Python-API workers, some with
``HEPH_CRASH_POINTS`` and some SIGKILLed by this driver at random moments; after
each round every instance file, the index, ``heph doctor`` and every acknowledged
command are checked; a final phase drives every instance to completion and checks
that each step interrupted by a kill ran again. See ``_torture_lib.py`` for the
details. Exit status 1 if any anomaly was found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _torture_lib import Config, run_torture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent workers (default 3)")
    parser.add_argument("--workers", type=int, default=6, help="worker processes alive at once (default 6)")
    parser.add_argument("--instances", type=int, default=40, help="business keys to work on (default 40)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a round in seconds (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the driver (default 1)")
    parser.add_argument("--kill-chance", type=float, default=0.35, help="share of workers SIGKILLed by the driver")
    parser.add_argument("--crash-chance", type=float, default=0.3, help="share of workers with HEPH_CRASH_POINTS")
    parser.add_argument("--api-chance", type=float, default=0.25, help="share of Python-API workers")
    parser.add_argument("--workdir", type=Path, help="keep the project and store here (default: a temp dir, removed)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    cfg = Config(rounds=args.rounds, workers=args.workers, instances=args.instances, seconds=args.seconds,
                 seed=args.seed, kill_chance=args.kill_chance, crash_chance=args.crash_chance,
                 api_chance=args.api_chance, workdir=args.workdir)
    summary = run_torture(cfg, say=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if key != "anomaly_samples":
                print(f"{key:<{width}}  {value}")
        for line in summary["anomaly_samples"]:
            print(f"  anomaly: {line}")
    return 1 if summary["anomalies"] else 0


if __name__ == "__main__":
    sys.exit(main())
