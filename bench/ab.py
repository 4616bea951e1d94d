"""A/B of two versions of heph on B1- and B2-like work: does a change slow the hot paths?

    python bench/ab.py --base REV [--head REV] [--instances 300] [--rounds 6]

``--base`` (and ``--head``, default: the working tree) are git revisions; each is exported
(``git archive``) to a temporary directory. Each round runs, in a fresh subprocess per
version and in alternating order (so a disk whose speed drifts weighs on both alike):

- **B1**: ``--instances`` starts of a linear 5-step workflow on ``JsonFileStorage`` (steps/s);
- **B2**: as many start + ``resume`` round trips of a one-wait workflow, the event carrying
  1 KB of data (round trips/s) — the resume path events, queued mail and busy notes touch.

It prints the median of each version's rates and the ratio head/base per round (median and
range). Nothing is asserted; a ratio under 0.95 is a slowdown of more than 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKLOAD = r'''
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import heph
from heph import ASYNC, Done, Step, Unique, Workflow

def step(name, event):
    return type(name, (Step,), {"events": [event], "execute": lambda self, i, c, x: (event, {"n": 1})})

S = [step(f"AbS{i}", "ok") for i in range(5)]

class AbLinear(Workflow):
    unique = Unique("ablin")
    name = "ab_linear"
    start = S[0]
    transitions = {S[0]: {"ok": S[1]}, S[1]: {"ok": S[2]}, S[2]: {"ok": S[3]}, S[3]: {"ok": S[4]},
                   S[4]: {"ok": Done}}

class AbWait(Step):
    events = ["paid"]
    def execute(self, instance, config, context):
        return ASYNC

class AbEvent(Workflow):
    unique = Unique("abev")
    name = "ab_event"
    start = AbWait
    transitions = {AbWait: {"paid": Done}}

n = int(sys.argv[2])
data = {"blob": "x" * 1000}
with tempfile.TemporaryDirectory(dir=sys.argv[3]) as tmp:
    app = heph.Hephaestus(storage=heph.JsonFileStorage(Path(tmp) / "store"))
    for w in range(5):
        app.start(AbLinear, f"w{w}")
        app.resume(app.start(AbEvent, f"w{w}"), "paid", data)
    began = time.perf_counter()
    for i in range(n):
        app.start(AbLinear, f"i{i}")
    b1 = n * 5 / (time.perf_counter() - began)
    began = time.perf_counter()
    for i in range(n):
        app.resume(app.start(AbEvent, f"i{i}"), "paid", data)
    b2 = n / (time.perf_counter() - began)
print(json.dumps({"b1": b1, "b2": b2}))
'''


def export(rev: str | None, into: Path) -> Path:
    """The heph sources of ``rev`` (None: the working tree) in ``into``."""
    into.mkdir(parents=True)
    if rev is None:
        shutil.copytree(REPO / "heph", into / "heph", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "heph"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(tree: Path, n: int, tmp: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(tree), str(n), str(tmp)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--head", help="the git revision to measure (default: the working tree)")
    parser.add_argument("--instances", type=int, default=300, help="instances per workload and round (default 300)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heph-ab-") as work:
        root = Path(work)
        trees = {"base": export(args.base, root / "base"), "head": export(args.head, root / "head")}
        rates: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for name in (("base", "head") if r % 2 == 0 else ("head", "base")):
                rates[name].append(run(trees[name], args.instances, root))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} B1 {v[-1]['b1']:.0f} steps/s B2 {v[-1]['b2']:.0f}/s" for k, v in rates.items()),
                file=sys.stderr, flush=True)
    print(f"A/B: base {args.base}, head {args.head or 'working tree'}; {args.instances} instances x "
          f"{args.rounds} rounds, JsonFileStorage, one process")
    for key, what in (("b1", "B1 steps/s (linear 5 steps)"), ("b2", "B2 start+resume/s (1 KB event data)")):
        base = [x[key] for x in rates["base"]]
        head = [x[key] for x in rates["head"]]
        ratios = [h / b for h, b in zip(head, base)]
        print(f"{what:38} base {statistics.median(base):8.0f}  head {statistics.median(head):8.0f}  "
              f"head/base median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
