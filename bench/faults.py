"""Fault sweep of heph's JSON-file store: one injected system-call error at a time, every call site.

    python bench/faults.py [--commands start,resume,tick,cancel,retry,doctor] [--errnos EIO,ENOSPC,EMFILE]
                           [--max-per-syscall N] [--jobs J] [--quick] [--json] [--strict]

For each command (``start``, ``resume``, ``cancel``, ``retry`` on a failed run, ``tick`` with a due
timer, ``tick`` with an interrupted run to recover, ``doctor --repair`` on a store with a corrupt
file and a missing index marker) the script builds a small project of its own and a template
store in a temporary directory, then:

1. runs the command once under ``strace -f -y -e trace=<SYSCALLS>`` on a fresh copy of the
   store: the baseline. It counts every traced call, numbers the calls of each system call in
   order (as strace's ``when=`` counts them: per system call, per process) and keeps those that
   touch the store (a path or a file descriptor under ``<project>/store``); the baseline must
   exit 0 and change the store;
2. re-runs the command once per (system call, occurrence N, errno) on a fresh copy, under
   ``strace -f -qq -e trace=<SYSCALL> -e inject=<SYSCALL>:error=<ERRNO>:when=<N>``: EIO
   everywhere, ENOSPC (and EDQUOT, if asked) where the call can run out of space (write,
   pwrite64, fsync, fdatasync, ftruncate, mkdir, rename, an open with O_CREAT), EMFILE for opens;
3. compares the store before and after: the bytes of every instance document (the run files
   under ``instances/`` and anything in ``quarantine/``; the index, lock files and leftover
   ``.tmp`` files are ignored), the status and history length of the case's instances in
   ``heph show --json`` and ``heph doctor --json`` run after the trial without injection, and
   every file of the project outside the store and of a sentinel directory beside it.

Each trial is classified: ``ok`` (exit 0, the change applied as in the baseline), ``refused``
(exit 1, one ``error:`` line on stderr, no ``internal error``, no traceback, the documents
unchanged) or ``maybe`` (exit 3, "may have been applied", one line, whatever the state), else it
is an anomaly, of one or more of these kinds:

- ``refused_yet_applied``: exit 1, but a document changed;
- ``internal_error``: stderr says ``internal error`` or shows a ``Traceback``;
- ``silent_failure``: exit 0, but the change did not apply (or not as in the baseline);
- ``collateral_change``: exit 0 and applied, but documents the baseline left alone changed;
- ``malformed_refusal``: exit 1 or 3 without exactly one ``error:`` line on stderr;
- ``damaged_store``: after the trial ``heph doctor`` finds a corrupt file or a missing index
  marker (in a complete index) that the template store did not have;
- ``crash``: killed by a signal, or an exit status other than 0, 1, 3; ``hang``: no exit in 60 s;
- ``escape``: a file outside the store (the project's own files, the sentinel) changed.

A trial whose injection never fired (the call sequence drifted from the baseline's) is counted
as ``not_injected`` and not classified; one that fired on a different call than the baseline's
Nth is kept and flagged ``drift`` (shown, not an anomaly).

The exit status is 0 when the sweep ran (anomalies are results), 1 with ``--strict`` if any
anomaly was found, 2 if it could not run (no strace, a baseline that failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The system calls traced and injected into (``?`` tolerates a name this architecture lacks).
SYSCALLS = ("openat", "open", "read", "write", "pwrite64", "lseek", "close", "fstat", "newfstatat", "statx",
            "getdents64", "fsync", "fdatasync", "ftruncate", "flock", "fcntl", "rename", "renameat", "renameat2",
            "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir")
QUICK_SYSCALLS = ("openat", "write", "fsync", "rename", "close")
ERRNOS = ("EIO", "ENOSPC", "EMFILE")
KNOWN_ERRNOS = ("EIO", "ENOSPC", "EMFILE", "EDQUOT")
SPACE_CALLS = {"write", "pwrite64", "fsync", "fdatasync", "ftruncate", "mkdir", "mkdirat", "rename", "renameat",
               "renameat2"}
OPEN_CALLS = {"open", "openat"}
ANOMALIES = ("refused_yet_applied", "internal_error", "silent_failure", "collateral_change", "malformed_refusal",
             "damaged_store", "crash", "hang", "escape")
TRIAL_TIMEOUT = 60.0
STORE = "store"

# -- the project ------------------------------------------------------------------------

HEPH_YAML = "workflows:\n  - faultflows\nstorage:\n  path: store\n"

WORKFLOWS = '''\
"""The workflows of bench/faults.py (generated): small, deterministic, one per command."""
import os
import signal

from heph import ASYNC, Done, Error, Step, Unique, Wait, Workflow


class Begin(Step):
    events = ["begun"]

    def execute(self, instance, config, context):
        return "begun", {"begun": True}


class Hold(Step):
    """Waits for the event "go"."""
    events = ["go"]

    def execute(self, instance, config, context):
        return ASYNC


class Finish(Step):
    events = ["finished"]

    def execute(self, instance, config, context):
        return "finished", {"finished": True}


class Boom(Step):
    """SIGKILLs its process when FAULTS_KILL_IN_STEP=1: leaves the run interrupted (running)."""
    events = ["survived"]

    def execute(self, instance, config, context):
        if os.environ.get("FAULTS_KILL_IN_STEP") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived", {"survived": True}


class Flaky(Step):
    """Fails its first attempt (no retries: the run fails), passes when retried."""
    events = ["passed"]

    def execute(self, instance, config, context):
        if not any(e.step == self.key and e.outcome == "failed" for e in instance.history):
            return Error("injected step failure")
        return "passed", {"passed": True}


class Flow(Workflow):
    name = "flow"
    unique = Unique("flowid")
    start = Begin
    transitions = {Begin: {"begun": Hold}, Hold: {"go": Finish}, Finish: {"finished": Done}}


class Timer(Workflow):
    name = "timer"
    unique = Unique("timerid")
    start = Begin
    transitions = {Begin: {"begun": (Wait, {"duration": 1, "unit": "second"})},
                   Wait: {"timeout": Finish}, Finish: {"finished": Done}}


class Crashy(Workflow):
    name = "crashy"
    unique = Unique("crashyid")
    start = Begin
    transitions = {Begin: {"begun": Boom}, Boom: {"survived": Finish}, Finish: {"finished": Done}}


class Failing(Workflow):
    name = "failing"
    unique = Unique("failingid")
    start = Begin
    transitions = {Begin: {"begun": Flaky}, Flaky: {"passed": Finish}, Finish: {"finished": Done}}
'''


@dataclass(frozen=True)
class Case:
    """One command of the sweep: its template store, its argv, the instances to look at after it."""

    name: str
    argv: tuple[str, ...]
    setup: tuple[tuple[str, ...], ...]  # heph commands building the template, after `start flow f1`
    targets: tuple[tuple[str, str], ...]  # (workflow, value) shown after every trial
    what: str


CASES = (
    Case("start", ("start", "flow", "f9"), (), (("flow", "f9"),), "start a new instance (it waits for an event)"),
    Case("resume", ("resume", "flow", "f2", "go"), (("start", "flow", "f2"),), (("flow", "f2"),),
         "resume a waiting instance (it completes)"),
    Case("tick-timer", ("tick",), (("start", "timer", "t1"),), (("timer", "t1"),),
         "tick with one due timer (the instance completes)"),
    Case("tick-recover", ("tick",), (("start", "crashy", "c1"),), (("crashy", "c1"),),
         "tick with a run interrupted by a SIGKILLed process (recovered, it completes)"),
    Case("cancel", ("cancel", "flow", "f2"), (("start", "flow", "f2"),), (("flow", "f2"),),
         "cancel a waiting instance"),
    Case("retry", ("retry", "failing", "r1"), (("start", "failing", "r1"),), (("failing", "r1"),),
         "retry a failed run (it completes)"),
    Case("doctor-repair", ("doctor", "--repair"), (("start", "flow", "f2"), ("start", "flow", "f3")),
         (("flow", "f2"), ("flow", "f3")),
         "doctor --repair: f3's run file torn (quarantined), f2's status marker missing (index rebuilt)"),
)
CASE_NAMES = tuple(case.name for case in CASES)
ALIASES = {"tick": ("tick-timer", "tick-recover"), "doctor": ("doctor-repair",)}


def freeze_code(work: Path, rev: str | None = None) -> str:
    """Copy heph/ to ``work/code`` and point every heph run at the copy, with its own bytecode cache.

    Other people edit (and byte-compile) the checkout while a sweep runs: a changed module, or a
    stale or refreshed ``__pycache__``, shifts the number of calls Python's start-up makes, and
    ``when=N`` would land on another call. The copy and the private cache keep the sequence fixed.
    With ``rev``, heph/ as committed at that git revision (``git archive``; the checkout is not
    touched). Returns a digest of the copied sources."""
    import hashlib
    import io
    import tarfile

    code = work / "code"
    if rev:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "heph"],
                                 capture_output=True, timeout=60)
        if archive.returncode != 0:
            raise SystemExit(f"faults: --code {rev}: {archive.stderr.decode(errors='replace').strip()}")
        code.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(code, filter="data")
    else:
        shutil.copytree(REPO / "heph", code / "heph", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path in sorted((code / "heph").rglob("*.py")):
        digest.update(path.relative_to(code).as_posix().encode() + b"\0" + path.read_bytes())
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return digest.hexdigest()[:12]


def clean_env(write_bytecode: bool = False, **extra: str) -> dict[str, str]:
    """The environment of every heph run: no HEPH_* settings, a fixed hash seed (so the baseline's
    call sequence repeats in every trial), bytecode written only while warming the cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPH_") and k not in ("COLUMNS", "LINES")}
    env.update(PYTHONHASHSEED="0", NO_COLOR="1", **extra)
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("FORCE_COLOR", None)
    return env


def heph_argv(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "heph"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "heph", *args]


def heph(root: Path, *args: str, env: dict | None = None, timeout: float = TRIAL_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(heph_argv(*args), cwd=root / "project", capture_output=True, text=True, errors="replace",
                          env=env or clean_env(), timeout=timeout)


def build_template(case: Case, root: Path) -> None:
    """``root/project`` (heph.yaml, faultflows.py, the store) and ``root/sentinel``."""
    project = root / "project"
    project.mkdir(parents=True)
    (project / "heph.yaml").write_text(HEPH_YAML)
    (project / "faultflows.py").write_text(WORKFLOWS)
    sentinel = root / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "canary.txt").write_text("heph must never touch this file\n")
    (sentinel / "sub" / "canary.json").write_text('{"untouched": true}\n')
    steps = [("start", "flow", "f1"), *case.setup]  # f1: a bystander waiting in every store
    for args in steps:
        env = clean_env(True, FAULTS_KILL_IN_STEP="1") if args[1] == "crashy" else clean_env(True)
        proc = heph(root, *args, env=env)
        if args[1] == "crashy":
            if proc.returncode != -signal.SIGKILL:
                raise SystemExit(f"faults: template {case.name}: `heph {' '.join(args)}` was not killed in its step "
                                 f"(exit {proc.returncode}): {proc.stderr.strip()}")
        elif proc.returncode != 0:
            raise SystemExit(f"faults: template {case.name}: `heph {' '.join(args)}` exited {proc.returncode}: "
                             f"{proc.stderr.strip()}")
    if case.name == "doctor-repair":
        store = project / STORE
        markers = sorted((store / "index" / "status" / "waiting").glob("*~flowid~f2~*"))
        if len(markers) != 1:
            raise SystemExit(f"faults: template {case.name}: expected one waiting marker of f2, found {markers}")
        markers[0].unlink()
        (run_file,) = sorted((store / "instances" / "flowid~f3").glob("*.json"))
        text = run_file.read_text()
        run_file.write_text(text[: len(text) // 2])  # a torn write


def due_times(root: Path) -> list[datetime]:
    """The due times of the template's timers (from the index's names)."""
    found = []
    for marker in (root / "project" / STORE / "index" / "due").glob("*"):
        stamp = marker.name.split("~", 1)[0]
        found.append(datetime.strptime(stamp, "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc))
    return found


# -- strace -------------------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+([a-z0-9_]+)\((.*)$")
_AT_FDCWD = re.compile(r"AT_FDCWD<[^>]*>")
_AT_DIRFD = re.compile(r'\b\d+<(/[^>]*)>, "([^/"][^"]*)"')


@dataclass
class Call:
    syscall: str
    n: int  # the call's number among this process's calls of this system call (strace's when=)
    text: str  # the strace line, arguments and result
    creates: bool  # an open with O_CREAT


def parse_trace(path: Path) -> tuple[list[Call], Counter, set[str]]:
    """Every call of a ``strace -f -y -o`` trace numbered per process and system call; the call
    counts per system call; the pids seen."""
    calls: list[Call] = []
    per: Counter = Counter()
    totals: Counter = Counter()
    pids: set[str] = set()
    for line in path.read_text(errors="replace").splitlines():
        if "resumed>" in line.split("(", 1)[0] or " <... " in line[:30]:
            continue  # the second half of an interleaved call, counted at its start
        match = _LINE.match(line)
        if not match:
            continue
        pid, name, rest = match.groups()
        pids.add(pid)
        per[(pid, name)] += 1
        totals[name] += 1
        creates = name in OPEN_CALLS and "O_CREAT" in rest
        calls.append(Call(name, per[(pid, name)], f"{name}({rest}", creates))
    return calls, totals, pids


def touches(call: Call, prefix: str) -> bool:
    """Does the call name a path, or a descriptor of a file, under ``prefix``?"""
    text = _AT_FDCWD.sub("AT_FDCWD", call.text)
    return f"{prefix}/" in text or f"{prefix}>" in text or f'{prefix}"' in text


_NORMALISE = (
    (re.compile(r"\d{8}T\d{12}-[0-9a-f]{6}"), "<run>"),
    (re.compile(r"\d{8}T\d{12}"), "<due>"),
    (re.compile(r"\.\d+\.tmp\b"), ".<pid>.tmp"),  # temporary files named after their writer's pid
)


def describe(call_text: str, root: str) -> str:
    """``syscall(path)`` of an strace line, the paths relative to the trial's directory, run ids,
    due times and pids replaced (comparable between the baseline and a trial)."""
    name = call_text.split("(", 1)[0]
    text = _AT_FDCWD.sub("AT_FDCWD", call_text)
    text = text.rsplit(") = ", 1)[0]  # the arguments: an injected call has no result to name a path
    if name.endswith("at") or name in ("statx", "renameat2"):  # openat(5</dir>, "name") -> dir/name
        text = _AT_DIRFD.sub(lambda m: f'"{m.group(1)}/{m.group(2)}"', text)
    paths = re.findall(r'"(/[^"]*)"|<(/[^>]*)>', text)
    shown = []
    for quoted, fd in paths:
        path = quoted or fd
        if path.startswith(root) and path not in shown:
            shown.append(path)
    text = ", ".join(p.replace(root, "").lstrip("/") for p in shown[:2]) or "?"
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    flags = ""
    if name in OPEN_CALLS:
        flags = ", O_CREAT" if "O_CREAT" in call_text else ""
        flags += ", O_DIRECTORY" if "O_DIRECTORY" in call_text else ""
    return f"{name}({text}{flags})"


def strace_argv(syscalls: str, *, trace: Path, inject: str | None, seccomp: bool) -> list[str]:
    argv = ["strace", "-f", "-qq", "-y", "-o", str(trace)]
    if seccomp:
        argv.append("--seccomp-bpf")
    argv += ["-e", f"trace={syscalls}"]
    if inject:
        argv += ["-e", f"inject={inject}"]
    return argv


def strace_supports_seccomp() -> bool:
    try:
        proc = subprocess.run(["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat", "-o", os.devnull,
                               "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and not proc.stderr.strip()


# -- the state of a store -----------------------------------------------------------------


def documents(project: Path) -> dict[str, bytes]:
    """The instance documents: run files under instances/ and everything under quarantine/
    (relative path -> bytes). The index, lock files and dot files (temporary files) are left out."""
    store = project / STORE
    found: dict[str, bytes] = {}
    for path in sorted((store / "instances").glob("*/*")):
        if path.is_file() and not path.name.startswith("."):
            found[path.relative_to(store).as_posix()] = path.read_bytes()
    quarantine = store / "quarantine"
    if quarantine.exists():
        for path in sorted(quarantine.rglob("*")):
            if path.is_file():
                found[path.relative_to(store).as_posix()] = path.read_bytes()
    return found


def outside(root: Path) -> dict[str, bytes | None]:
    """Every file (-> bytes) and directory (-> None) of the trial's directory outside the store."""
    store = root / "project" / STORE
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        if path == store or store in path.parents or path.name == "trace.txt":
            continue
        found[path.relative_to(root).as_posix()] = None if path.is_dir() else path.read_bytes()
    return found


def changed_groups(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """The instance directories (or ``quarantine``) whose documents differ."""
    keys = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    return sorted({k.split("/")[1] if k.startswith("instances/") else k.split("/")[0] for k in keys})


def observe(case: Case, root: Path, env: dict | None = None) -> dict:
    """What heph says about the store, no injection: each target's status and history length
    (``heph show --json``) and ``heph doctor --json``'s findings."""
    state: dict = {}
    for workflow, value in case.targets:
        proc = heph(root, "show", workflow, value, "--json", env=env)
        try:
            shown = json.loads(proc.stdout)
        except ValueError:
            shown = {}
        if proc.returncode == 0 and "status" in shown:
            state[f"{workflow}/{value}"] = [shown["status"], len(shown.get("history") or [])]
        else:
            code = (shown.get("error") or {}).get("code") if isinstance(shown, dict) else None
            state[f"{workflow}/{value}"] = ["absent" if code == "not_found" else f"unreadable:{code}", 0]
    proc = heph(root, "doctor", "--json", env=env)
    try:
        report = json.loads(proc.stdout)
        index = report.get("index") or {}
        state["doctor"] = {"corrupt": len(report.get("corrupt") or []),
                           "missing_markers": index.get("missing_markers", 0),
                           "index_complete": bool(index.get("complete"))}
    except ValueError:
        state["doctor"] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return state


def applied_as_baseline(case: Case, state: dict, expected: dict) -> bool:
    same = all(state.get(k) == expected.get(k) for k in expected if k != "doctor")
    if case.name == "doctor-repair":
        doctor = state.get("doctor") or {}
        same = same and doctor.get("corrupt") == 0 and doctor.get("missing_markers") == 0
    return same


def damaged(state: dict, template: dict) -> str | None:
    """What ``heph doctor`` finds after the trial that it did not find in the template store."""
    now, then = state.get("doctor") or {}, template.get("doctor") or {}
    if "error" in now:
        return f"heph doctor failed: {now['error']}"
    if now.get("corrupt", 0) > then.get("corrupt", 0):
        return f"{now['corrupt']} corrupt file(s)"
    if now.get("index_complete") and now.get("missing_markers", 0) > then.get("missing_markers", 0):
        return f"{now['missing_markers']} missing index marker(s)"
    return None


# -- one trial ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    case: str
    syscall: str
    n: int
    errno: str
    call: str  # the baseline's Nth call, described


def _text(data: bytes | str | None) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def classify(case: Case, rc: int | None, err: str, changed: list[str], expected_changed: list[str], state: dict,
             expected: dict, template_state: dict, escaped: list[str]) -> tuple[str, list[str]]:
    """``(class, anomaly kinds)``: class is ok, refused, maybe or anomaly."""
    kinds: list[str] = []
    lines = stderr_lines(err)
    if escaped:
        kinds.append("escape")
    if rc is None:
        kinds.append("hang")
    elif rc not in (0, 1, 3):
        kinds.append("crash")
    if "internal error" in err or "Traceback" in err:
        kinds.append("internal_error")
    if rc in (1, 3) and not (len(lines) == 1 and lines[0].startswith("error:")):
        kinds.append("malformed_refusal")
    if rc == 1 and changed:
        kinds.append("refused_yet_applied")
    if rc == 0:
        if not applied_as_baseline(case, state, expected) or not set(expected_changed) <= set(changed):
            kinds.append("silent_failure")
        elif set(changed) - set(expected_changed):
            kinds.append("collateral_change")
    damage = damaged(state, template_state)
    if damage:
        kinds.append("damaged_store")
    if kinds:
        return "anomaly", kinds
    return {0: "ok", 1: "refused", 3: "maybe"}[rc], kinds  # type: ignore[index]


def run_trial(trial: Trial, case: Case, template: Path, work: Path, baseline: dict, seccomp: bool) -> dict:
    """Copy the template, run the command with one injected error, observe, classify."""
    root = Path(tempfile.mkdtemp(prefix=f"{trial.case}-", dir=work))
    try:
        shutil.rmtree(root)
        shutil.copytree(template, root, symlinks=True)
        trace = root / "trace.txt"
        inject = f"{trial.syscall}:error={trial.errno}:when={trial.n}"
        argv = strace_argv(trial.syscall, trace=trace, inject=inject, seccomp=seccomp) + heph_argv(*case.argv)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=root / "project", capture_output=True, text=True, errors="replace",
                                  env=clean_env(), timeout=TRIAL_TIMEOUT)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = None, _text(exc.stdout), _text(exc.stderr)
        seconds = time.monotonic() - started
        if any(line.startswith("strace: ") for line in err.splitlines()):
            return {**trial.__dict__, "class": "setup_error", "kinds": [], "exit": rc,
                    "stderr": err.strip().splitlines()[-1]}
        hits = [line for line in trace.read_text(errors="replace").splitlines() if "(INJECTED)" in line] \
            if trace.exists() else []
        match = _LINE.match(hits[0]) if hits else None
        hit = describe(f"{match.group(2)}({match.group(3)}", str(root)) if match else None
        after_docs = documents(root / "project")
        after_outside, before_outside = outside(root), baseline["outside"]
        escaped = sorted(k for k in set(before_outside) | set(after_outside)
                         if before_outside.get(k, b"") != after_outside.get(k, b""))
        state = observe(case, root)
        changed = changed_groups(baseline["template_docs"], after_docs)
        shown = " | ".join(stderr_lines(err)).replace(str(root), "<trial>")
        result = {**trial.__dict__, "exit": rc, "stderr": shown[:400],
                  "stdout": out.strip()[:200], "hit": hit, "drift": bool(hit and hit != trial.call),
                  "changed": changed, "state": state, "escaped": escaped, "seconds": round(seconds, 3)}
        if not hits:
            return {**result, "class": "not_injected", "kinds": []}
        result["class"], result["kinds"] = classify(case, rc, err, changed, baseline["changed"], state,
                                                    baseline["expected"], baseline["template_state"], escaped)
        if "damaged_store" in result["kinds"]:
            result["damage"] = damaged(state, baseline["template_state"])
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the baseline -------------------------------------------------------------------------


def run_baseline(case: Case, template: Path, work: Path, syscalls: tuple[str, ...], scope: str,
                 seccomp: bool) -> dict:
    """The command without injection, under strace: its calls, the store calls, the expected state."""
    root = work / f"baseline-{case.name}"
    shutil.copytree(template, root, symlinks=True)
    template_docs = documents(root / "project")
    template_outside = outside(root)
    template_state = observe(case, root)
    traced = ",".join(f"?{name}" for name in syscalls)

    def traced_run(where: Path) -> tuple[subprocess.CompletedProcess, float, list[Call], Counter, set[str]]:
        trace = where / "trace.txt"
        argv = strace_argv(traced, trace=trace, inject=None, seccomp=seccomp) + heph_argv(*case.argv)
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=where / "project", capture_output=True, text=True, errors="replace",
                              env=clean_env(), timeout=TRIAL_TIMEOUT)
        seconds = time.monotonic() - started
        calls, totals, pids = parse_trace(trace)
        prefix = str(where / "project" / STORE) if scope == "store" else str(where / "project")
        return proc, seconds, [c for c in calls if scope == "all" or touches(c, prefix)], totals, pids

    # once more on another copy: the numbering of the store's calls must repeat exactly
    again = work / f"baseline-{case.name}-again"
    shutil.copytree(template, again, symlinks=True)
    _, _, chosen_again, _, _ = traced_run(again)
    sites_again = [(c.syscall, c.n, describe(c.text, str(again))) for c in chosen_again]
    shutil.rmtree(again, ignore_errors=True)
    proc, seconds, chosen, totals, pids = traced_run(root)
    stable = sites_again == [(c.syscall, c.n, describe(c.text, str(root))) for c in chosen]
    state = observe(case, root)
    docs = documents(root / "project")
    changed = changed_groups(template_docs, docs)
    problem = None
    if proc.returncode != 0:
        problem = f"exit {proc.returncode}: {' | '.join(stderr_lines(proc.stderr))[:300]}"
    elif not changed or state == template_state:
        problem = f"the command changed nothing (state {state})"
    elif case.name == "doctor-repair" and not applied_as_baseline(case, state, state):
        problem = f"doctor --repair left {state['doctor']}"
    shutil.rmtree(root, ignore_errors=True)
    return {
        "case": case.name, "problem": problem, "seconds": round(seconds, 3), "pids": len(pids), "stable": stable,
        "totals": dict(sorted(totals.items())),
        "in_scope": dict(sorted(Counter(c.syscall for c in chosen).items())),
        "calls": [(c.syscall, c.n, describe(c.text, str(root)), c.creates) for c in chosen],
        "template_docs": template_docs, "outside": template_outside, "template_state": template_state,
        "expected": state, "changed": changed,
    }


def warm_up(case: Case, template: Path, work: Path) -> None:
    """Run the command and the observers once with bytecode written to the private cache, so that
    every later run (baseline, trials) imports the same .pyc files the same way."""
    root = work / f"warm-{case.name}"
    shutil.copytree(template, root, symlinks=True)
    heph(root, *case.argv, env=clean_env(True))
    observe(case, root, env=clean_env(True))
    shutil.rmtree(root, ignore_errors=True)


def errnos_for(syscall: str, creates: bool, errnos: tuple[str, ...]) -> list[str]:
    chosen = []
    for errno in errnos:
        if errno == "EIO" \
                or (errno in ("ENOSPC", "EDQUOT") and (syscall in SPACE_CALLS or (syscall in OPEN_CALLS and creates))) \
                or (errno == "EMFILE" and syscall in OPEN_CALLS):
            chosen.append(errno)
    return chosen


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` of ``items``, evenly spaced, the first and the last included."""
    if limit is None or len(items) <= limit:
        return items
    if limit == 1:
        return [items[0]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def plan(baseline: dict, errnos: tuple[str, ...], limit: int | None,
         only: list[tuple[str, int | None]] | None = None) -> list[Trial]:
    by_syscall: dict[str, list] = {}
    for syscall, n, text, creates in baseline["calls"]:
        if only and not any(syscall == s and (k is None or n == k) for s, k in only):
            continue
        by_syscall.setdefault(syscall, []).append((n, text, creates))
    trials = []
    for syscall, sites in by_syscall.items():
        for n, text, creates in spread(sites, limit):
            for errno in errnos_for(syscall, creates, errnos):
                trials.append(Trial(baseline["case"], syscall, n, errno, text))
    return trials


# -- report -------------------------------------------------------------------------------


def summarise(results: list[dict]) -> dict:
    counts = Counter(r["class"] for r in results)
    kinds = Counter(k for r in results for k in r["kinds"])
    return {"trials": len(results), "ok": counts["ok"], "refused": counts["refused"], "maybe": counts["maybe"],
            "anomalous_trials": counts["anomaly"], "not_injected": counts["not_injected"],
            "setup_errors": counts["setup_error"], "drift": sum(1 for r in results if r.get("drift")),
            "anomalies": {kind: kinds[kind] for kind in ANOMALIES}}


def anomaly_row(r: dict) -> dict:
    return {"syscall": r["syscall"], "n": r["n"], "errno": r["errno"], "exit": r["exit"], "kinds": r["kinds"],
            "stderr": r["stderr"], "call": r.get("hit") or r["call"], "changed": r.get("changed"),
            "state": {k: v for k, v in (r.get("state") or {}).items() if k != "doctor"},
            **({"damage": r["damage"]} if r.get("damage") else {})}


def print_table(rows: list[list[object]], headers: list[str]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        print("   " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("   " + "  ".join("-" * w for w in widths))


def print_report(report: dict) -> None:
    meta = report["meta"]
    print(f"== heph fault sweep: {meta['date']}, {meta['machine']}")
    print(f"   code: {meta['code']} (frozen copy, sources sha256 {meta.get('sources', '?')})")
    print(f"   traced: {', '.join(meta['syscalls'])}; errnos {', '.join(meta['errnos'])}; scope {meta['scope']}; "
          f"max per syscall {meta['max_per_syscall'] or 'all'}; {meta['jobs']} jobs; seccomp-bpf {meta['seccomp']}")
    for name, section in report["commands"].items():
        s = section["summary"]
        print(f"\n== {name}: heph {' '.join(section['argv'])}  ({section['what']})")
        if section.get("problem"):
            print(f"   BASELINE FAILED: {section['problem']}")
            continue
        scope = section["calls_in_scope"]
        print(f"   calls in the baseline: {sum(section['calls_total'].values())} traced, "
              f"{sum(scope.values())} on the store: " + ", ".join(f"{k} {v}" for k, v in scope.items())
              + ("" if section.get("baseline_stable", True) else "  [NOT STABLE: two baselines numbered them differently]"))
        rows = [["trials", s["trials"]], ["ok", s["ok"]], ["refused", s["refused"]], ["maybe (exit 3)", s["maybe"]]]
        rows += [[kind, s["anomalies"][kind]] for kind in ANOMALIES]
        rows += [["anomalous trials", s["anomalous_trials"]], ["not injected", s["not_injected"]],
                 ["drift (hit another call)", s["drift"]]]
        print_table(rows, ["", "count"])
        if section["anomalies"]:
            print("   anomalies:")
            for a in section["anomalies"]:
                print(f"   - {a['syscall']} #{a['n']} {a['errno']} exit {a['exit']} [{', '.join(a['kinds'])}] "
                      f"{a['call']}")
                detail = a["stderr"] or "(stderr empty)"
                if a.get("damage"):
                    detail += f"  [doctor after: {a['damage']}]"
                if {"refused_yet_applied", "silent_failure", "collateral_change"} & set(a["kinds"]):
                    detail += f"  [changed: {', '.join(a['changed']) or 'nothing'}; state {a['state']}]"
                print(textwrap.indent(textwrap.fill(detail, 110), "       "))
    print("\n== summary")
    headers = ["command", "trials", "ok", "refused", "maybe", "anomalous", *ANOMALIES]
    rows = []
    for name, section in report["commands"].items():
        s = section["summary"]
        rows.append([name, s["trials"], s["ok"], s["refused"], s["maybe"], s["anomalous_trials"],
                     *(s["anomalies"][k] for k in ANOMALIES)])
    t = report["totals"]
    rows.append(["total", t["trials"], t["ok"], t["refused"], t["maybe"], t["anomalous_trials"],
                 *(t["anomalies"][k] for k in ANOMALIES)])
    print_table(rows, headers)
    print(f"\nwall time {report['wall_seconds']:.1f} s")


# -- main ---------------------------------------------------------------------------------


def code_state(rev: str | None = None) -> str:
    """The commit of the checkout and heph/'s uncommitted files (the code moves between runs), or
    the revision swept with ``--code``."""
    if rev:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev} = {sha} (git archive)" if sha and sha != rev else f"{rev} (git archive)"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "heph"], capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"{head or '?'}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def pick_cases(spec: str | None) -> list[Case]:
    if not spec:
        return list(CASES)
    wanted: list[str] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        names = ALIASES.get(item, (item,))
        for name in names:
            if name not in CASE_NAMES:
                print(f"faults: unknown command {item!r}; choose from {', '.join(CASE_NAMES)} "
                      f"(or {', '.join(ALIASES)})", file=sys.stderr)
                raise SystemExit(2)
            if name not in wanted:
                wanted.append(name)
    return [case for case in CASES if case.name in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", help=f"comma-separated, from {', '.join(CASE_NAMES)}; 'tick' = both ticks, "
                                           "'doctor' = doctor-repair (default: all)")
    parser.add_argument("--errnos", help=f"comma-separated, from {', '.join(KNOWN_ERRNOS)} (default: "
                                         f"{','.join(ERRNOS)}; EIO goes everywhere, ENOSPC/EDQUOT where space can run "
                                         "out, EMFILE into opens)")
    parser.add_argument("--syscalls", help=f"comma-separated system calls to trace and inject into (default: "
                                           f"{','.join(SYSCALLS)})")
    parser.add_argument("--max-per-syscall", type=int, metavar="N",
                        help="at most N occurrences per system call and command, evenly spread (default: all)")
    parser.add_argument("--scope", choices=("store", "project", "all"), default="store",
                        help="inject into calls on the store (default), on anything in the project (heph.yaml, "
                             "the workflow module too), or into every call, Python's start-up included")
    parser.add_argument("--only", metavar="SYSCALL[:N],...",
                        help="only these sites (a reproducer: --commands start --only fsync:3 --errnos EIO)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a few trials per command: EIO into one call each of {', '.join(QUICK_SYSCALLS)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="trials run at once (default: CPUs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (every trial included)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any anomaly was found")
    parser.add_argument("--code", metavar="REV",
                        help="sweep heph/ as committed at this git revision (default: the working tree, copied "
                             "when the sweep starts)")
    parser.add_argument("--workdir", type=Path, help="work here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)

    if shutil.which("strace") is None:
        print("faults: strace is not installed (apt-get install strace)", file=sys.stderr)
        return 2
    cases = pick_cases(args.commands)
    errnos = tuple(e.strip().upper() for e in (args.errnos or ",".join(ERRNOS)).split(",") if e.strip())
    unknown = [e for e in errnos if e not in KNOWN_ERRNOS]
    if unknown:
        parser.error(f"unknown errno(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_ERRNOS)}")
    syscalls = tuple(s.strip() for s in (args.syscalls or ",".join(SYSCALLS)).split(",") if s.strip())
    limit = args.max_per_syscall
    only = None
    if args.only:
        only = []
        for item in filter(None, (x.strip() for x in args.only.split(","))):
            name, _, n = item.partition(":")
            if n and not n.isdigit():
                parser.error(f"--only {item!r}: N must be a number")
            only.append((name, int(n) if n else None))
    if args.quick:
        errnos, limit = ("EIO",), 1
        syscalls = tuple(s for s in syscalls if s in QUICK_SYSCALLS) or QUICK_SYSCALLS
    jobs = max(1, args.jobs)
    seccomp = strace_supports_seccomp()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="heph-bench-faults-", dir="/tmp" if os.path.isdir("/tmp")
                                                 else None))
    work.mkdir(parents=True, exist_ok=True)
    try:
        state_of_code = code_state(args.code)
        digest = freeze_code(work, args.code)
        say(f"faults: heph {state_of_code} frozen in {work / 'code'} (sources {digest})")
        say(f"faults: building {len(cases)} template store(s)")
        templates = {}
        for case in cases:
            templates[case.name] = work / f"template-{case.name}"
            build_template(case, templates[case.name])
        dues = [d for case in cases for d in due_times(templates[case.name])]
        if dues:  # the timer of tick-timer must be due before its baseline runs
            wait = (max(dues) - datetime.now(timezone.utc)).total_seconds() + 0.1
            if wait > 0:
                time.sleep(wait)
        for case in cases:
            warm_up(case, templates[case.name], work)
        say("faults: baselines (no injection, twice)")
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {case.name: pool.submit(run_baseline, case, templates[case.name], work, syscalls, args.scope,
                                              seccomp) for case in cases}
            baselines = {name: future.result() for name, future in futures.items()}
            trials: list[tuple[Trial, Case]] = []
            for case in cases:
                if baselines[case.name]["problem"]:
                    say(f"faults: {case.name}: BASELINE FAILED: {baselines[case.name]['problem']}")
                    continue
                trials += [(t, case) for t in plan(baselines[case.name], errnos, limit, only)]
            say(f"faults: {len(trials)} trials on {jobs} job(s)")
            results: dict[str, list[dict]] = {case.name: [] for case in cases}
            pending = [pool.submit(run_trial, t, case, templates[case.name], work, baselines[case.name], seccomp)
                       for t, case in trials]
            done = 0
            for future in as_completed(pending):
                result = future.result()
                results[result["case"]].append(result)
                done += 1
                if done % 25 == 0 or done == len(pending):
                    say(f"faults: {done}/{len(pending)} trials, {time.monotonic() - started:.0f} s")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - started

    order = {(t.case, t.syscall, t.n, t.errno): i for i, (t, _) in enumerate(trials)}
    report: dict = {
        "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "machine": f"{os.cpu_count()} CPU(s), {platform.system()} {platform.release()}, "
                            f"Python {platform.python_version()}",
                 "code": state_of_code, "sources": digest, "syscalls": list(syscalls), "errnos": list(errnos), "scope": args.scope,
                 "max_per_syscall": limit, "jobs": jobs, "seccomp": seccomp, "quick": args.quick},
        "commands": {},
    }
    everything: list[dict] = []
    for case in cases:
        base = baselines[case.name]
        rows = sorted(results[case.name], key=lambda r: order[(r["case"], r["syscall"], r["n"], r["errno"])])
        everything += rows
        if any(r["class"] == "setup_error" for r in rows):
            base["problem"] = base["problem"] or next(r["stderr"] for r in rows if r["class"] == "setup_error")
        report["commands"][case.name] = {
            "argv": list(case.argv), "what": case.what, "problem": base["problem"],
            "calls_total": base["totals"], "calls_in_scope": base["in_scope"],
            "baseline_seconds": base["seconds"], "baseline_stable": base["stable"], "expected": base["expected"],
            "summary": summarise(rows),
            "anomalies": [anomaly_row(r) for r in rows if r["class"] == "anomaly"],
            "trials": rows,
        }
    report["totals"] = summarise(everything)
    report["wall_seconds"] = round(wall, 1)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print_report(report)
    if any(section["problem"] for section in report["commands"].values()):
        return 2
    return 1 if args.strict and report["totals"]["anomalous_trials"] else 0


if __name__ == "__main__":
    sys.exit(main())
