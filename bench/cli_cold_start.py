"""B3 - CLI cold start: wall time of one fresh `heph` process, against baselines.

    python bench/cli_cold_start.py [--runs 15] [--no-dbos]

In a copy of sample_project (under /tmp; the repository stays clean), the median
over N runs of:

  * ``heph start orderflow <new value> --context contexts/order42.json``  (3 synchronous steps)
  * ``heph show orderflow order42`` (to a pipe, as scripts call it), on a pseudo-terminal
    (rich draws it in colour), and with ``--json``
  * ``python -c "import typer, yaml"``: the baseline. Typer parses every ``heph`` invocation
    and PyYAML reads every ``heph.yaml``, so this is the floor of any ``heph`` command;
    ``python -c "import typer"`` and ``python -c pass`` are shown beside it
  * a DBOS cold start (when installed): a fresh ``python -c`` that imports dbos,
    launches it on SQLite and runs one 3-step workflow

The commands are interleaved round-robin (one warm-up round first, not counted)
so that drift hits them alike. Prints medians, peak RSS and the ratios of every
heph command to ``import typer, yaml``, and start / DBOS. Targets: show (to a
pipe) <= 1.5x import typer, yaml; start <= 0.25x DBOS. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import _common
from _common import SAMPLE_PROJECT, header, heph_cmd, median, ratio, run_measured, table, temp_dir

BASELINE = "python -c 'import typer, yaml'"
TYPER_ONLY = "python -c 'import typer'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured runs of each command (default 15)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS cold start")
    args = parser.parse_args()

    header(f"B3 CLI cold start: median of {args.runs} runs per command")
    use_dbos = _common.use_dbos(args.no_dbos)

    # Bytecode caching on, as on a normal install: with PYTHONDONTWRITEBYTECODE set, heph's and the
    # project's modules would be compiled from source on every run while typer's (compiled when pip
    # installed it) would not. The warm-up round writes the caches.
    env = {k: v for k, v in os.environ.items() if k not in ("HEPH_CONFIG", "PYTHONDONTWRITEBYTECODE")}
    with temp_dir("b3") as tmp:
        project = tmp / "sample_project"
        shutil.copytree(SAMPLE_PROJECT, project, ignore=shutil.ignore_patterns(".heph", "__pycache__"))
        counter = {"n": 0}

        def heph_start():
            counter["n"] += 1
            return heph_cmd("start", "orderflow", f"cold{counter['n']}", "--context", "contexts/order42.json")

        commands = {
            "python -c pass": lambda: [sys.executable, "-c", "pass"],
            TYPER_ONLY: lambda: [sys.executable, "-c", "import typer"],
            BASELINE: lambda: [sys.executable, "-c", "import typer, yaml"],
            "heph show orderflow order42": lambda: heph_cmd("show", "orderflow", "order42"),
            "heph show ... on a terminal (rich)": lambda: heph_cmd("show", "orderflow", "order42"),
            "heph show ... --json": lambda: heph_cmd("show", "orderflow", "order42", "--json"),
            "heph start orderflow <new> (3 steps)": heph_start,
        }
        if use_dbos:
            from _dbos_flows import COLD_START_CODE

            db = tmp / "dbos" / "dbos.sqlite"
            db.parent.mkdir()
            commands["DBOS cold start (3 steps, SQLite)"] = lambda: [sys.executable, "-c", COLD_START_CODE, str(db)]

        first = run_measured(heph_cmd("start", "orderflow", "order42", "--context", "contexts/order42.json"),
                             cwd=project, env=env)
        if first[2] != 0:
            raise SystemExit(f"heph start failed: {first[3]}")
        times: dict[str, list[float]] = {name: [] for name in commands}
        rss: dict[str, int] = {name: 0 for name in commands}
        for round_no in range(args.runs + 1):  # round 0 warms caches (and creates the DBOS tables)
            for name, argv in commands.items():
                wall, peak, code, err = run_measured(argv(), cwd=project, env=env, tty="terminal" in name)
                if code != 0:
                    raise SystemExit(f"{name} failed (exit {code}): {err.strip()[-2000:]}")
                if round_no:
                    times[name].append(wall)
                    rss[name] = max(rss[name], peak or 0)

    med = {name: median(values) for name, values in times.items()}
    table([[name, f"{1000 * med[name]:.0f}", f"{1000 * min(times[name]):.0f}", f"{1000 * max(times[name]):.0f}",
            f"{rss[name] / 1024:.0f}" if rss[name] else "n/a"] for name in commands],
          ["command", "median ms", "min ms", "max ms", "peak RSS MB"])
    base = med[BASELINE]
    show_t = med["heph show orderflow order42"]
    start_t = med["heph start orderflow <new> (3 steps)"]
    dbos_t = med.get("DBOS cold start (3 steps, SQLite)")
    print()
    print("   ratios of the medians to python -c 'import typer, yaml' (the floor of any heph command):")
    print(f"   heph show (to a pipe)       / import typer, yaml: {ratio(show_t, base)}   (target <= 1.5x){_verdict(show_t, base, 1.5)}")
    print(f"   heph show on a terminal     / import typer, yaml: "
          f"{ratio(med['heph show ... on a terminal (rich)'], base)}   (rich is loaded to draw in colour)")
    print(f"   heph show --json            / import typer, yaml: {ratio(med['heph show ... --json'], base)}")
    print(f"   heph start (3 steps)        / import typer, yaml: {ratio(start_t, base)}")
    print(f"   import typer                / import typer, yaml: {ratio(med[TYPER_ONLY], base)}")
    print(f"   heph start / DBOS cold start:                     {ratio(start_t, dbos_t)}   (target <= 0.25x)"
          f"{_verdict(start_t, dbos_t, 0.25)}")


def _verdict(value: float | None, base: float | None, target: float) -> str:
    if value is None or not base:
        return ""
    return ": met" if value <= target * base else ": NOT met"


if __name__ == "__main__":
    main()
