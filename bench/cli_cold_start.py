"""B3 - CLI cold start: wall time of one fresh `heph` process, against baselines.

    python bench/cli_cold_start.py [--runs 15] [--no-dbos]

In a copy of sample_project (under /tmp; the repository stays clean), the median
over N runs of:

  * ``heph start orderflow <new value> --context contexts/order42.json``  (3 synchronous steps)
  * ``heph show orderflow order42`` (to a pipe, as scripts call it), on a pseudo-terminal
    (rich draws it in colour), and with ``--json``
  * ``python -c "import typer"``   and   ``python -c pass``               (baselines)
  * a DBOS cold start (when installed): a fresh ``python -c`` that imports dbos,
    launches it on SQLite and runs one 3-step workflow

The commands are interleaved round-robin (one warm-up round first, not counted)
so that drift hits them alike. Prints medians, peak RSS and the ratios
show / import typer, start / import typer, start / DBOS. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import _common
from _common import SAMPLE_PROJECT, header, heph_cmd, median, ratio, run_measured, table, temp_dir


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
            "python -c 'import typer'": lambda: [sys.executable, "-c", "import typer"],
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
    typer_t = med["python -c 'import typer'"]
    show_t = med["heph show orderflow order42"]
    start_t = med["heph start orderflow <new> (3 steps)"]
    dbos_t = med.get("DBOS cold start (3 steps, SQLite)")
    print()
    print(f"   heph show  / import typer: {ratio(show_t, typer_t)}   (target <= 1.3x; output to a pipe)")
    print(f"   heph show on a terminal / import typer: {ratio(med['heph show ... on a terminal (rich)'], typer_t)}"
          f"   (rich is loaded to draw in colour)")
    print(f"   heph start / import typer: {ratio(start_t, typer_t)}")
    print(f"   heph start / DBOS cold:    {ratio(start_t, dbos_t)}   (target <= 0.25x)")


if __name__ == "__main__":
    main()
