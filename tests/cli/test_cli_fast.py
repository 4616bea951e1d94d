"""The Typer-free parser of common invocations (heph.cli.fast) against the Typer app.

Whatever ``fast.parse`` accepts, Typer must parse to the same parameters; whatever
Typer refuses, ``fast.parse`` must hand over (return None) so that Typer prints the
usage error. The plain renderer (pipes) and rich (terminals) show the same things.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.core import TyperArgument, TyperOption

try:  # typer >= 0.22 vendors click
    from typer._click.core import Context
    from typer._click.exceptions import Abort, Exit, UsageError
except ImportError:  # pragma: no cover - older typer, with click installed beside it
    from click.core import Context
    from click.exceptions import Abort, Exit, UsageError

from cli_helpers import ANSI, cli_env, make_project, ok, table_rows
from cli_helpers import heph as run_heph

from heph.cli import fast
from heph.cli.main import cli

ROOT = typer.main.get_command(cli)


def typer_params(argv: list[str]) -> tuple[dict, str, dict] | None:
    """(global params, command, command params) as Typer/click parse ``argv``; None for a usage error."""
    try:
        with ROOT.make_context("heph", list(argv), resilient_parsing=False) as ctx:
            protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
            name, command, rest = ROOT.resolve_command(ctx, [*protected, *ctx.args])
            with command.make_context(name, rest, parent=ctx) as sub:
                return dict(ctx.params), name, dict(sub.params)
    except (UsageError, Exit, Abort):
        return None


def fast_params(argv: list[str]) -> tuple[dict, str, dict] | None:
    call = fast.parse(argv)
    if call is None:
        return None
    command = ROOT.commands[call.command]
    params = {p.name: p.get_default(Context(command)) for p in command.params}
    for p in command.params:  # click gives unset multiple options as () and nargs=-1 as a tuple
        if p.multiple or p.nargs == -1:
            params[p.name] = tuple(params[p.name] or ())
    for key, value in call.kwargs.items():
        params[key] = tuple(value) if isinstance(value, list) else value
    return {"config": call.config, "debug": call.debug}, call.command, params


def test_every_fast_command_declares_the_options_and_arguments_typer_does():
    for name, spec in fast.SPECS.items():
        command = ROOT.commands[name]
        options = {}
        for p in command.params:
            if isinstance(p, TyperOption):
                for opt in p.opts + p.secondary_opts:
                    options[opt] = p.name
        assert {o: param for o, (param, _) in spec.options.items()} == {
            o: p for o, p in options.items() if o not in ("--help",)}, name
        arguments = tuple(p.name for p in command.params if isinstance(p, TyperArgument))
        assert spec.positionals == arguments, name


@pytest.mark.parametrize("argv", [
    ["show", "orderflow", "order42"],
    ["show", "orderflow", "order42", "--json"],
    ["show", "--id", "orderid::order42", "--run=r1"],
    ["--config", "x/heph.yaml", "--debug", "show", "orderflow", "o1"],
    ["--config=x.yaml", "list", "--status", "waiting", "-s", "failed", "--limit", "5", "-w", "orderflow"],
    ["start", "orderflow", "o1", "--context", "-", "--version", "2", "-o", "a=1", "--option=b=x"],
    ["start", "orderflow", "--id", "orderid::o1", "--context-json", "{\"a\": 1}"],
    ["resume", "paymentflow", "pay1", "payment_confirmed", "--step", "wait_for_payment"],
    ["resume", "--id", "paymentid::pay1", "payment_confirmed"],
    ["cancel", "orderflow", "o1", "--json"],
    ["retry", "--id", "orderid::o1"],
    ["tick", "--json"],
    ["list", "--version", "+3"],
])
def test_plain_invocations_take_the_fast_path_and_parse_as_typer_does(argv):
    assert fast.parse(argv) is not None
    assert fast_params(argv) == typer_params(argv)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["show", "--help"], ["show", "-h"], ["graph", "orderflow"], ["check"], ["worker"],
    ["show", "a", "b", "c"], ["show", "--json=1", "a", "b"], ["show", "--run"], ["show", "--", "a", "b"],
    ["list", "--limit", "0"], ["list", "--limit", "x"], ["list", "--version", "1.5"], ["start"],
    ["show", "--id", "a", "--id", "b"], ["--config"], ["--debug", "--debug", "tick"], ["tick", "extra"],
    ["start", "orderflow", "o1", "--context", "--json"], ["list", "-sfailed"], ["list", "-s=failed"],
    ["start", "orderflow", "o1", "-o=a=1"], ["resume"], ["nope"],
    ["--version"], ["doctor"], ["db", "migrate"],
])
def test_anything_else_is_left_to_typer(argv):
    assert fast.parse(argv) is None


TOKENS = st.sampled_from([
    "show", "list", "start", "resume", "cancel", "retry", "tick", "graph", "orderflow", "o1", "go", "-", "--",
    "--json", "--json=x", "--id", "--id=k::v", "--run", "--status", "-s", "--limit", "--limit=0", "3", "-1",
    "--version", "--context", "--context-json", "-o", "--option", "a=1", "--step", "-w", "--workflow",
    "--config", "--debug", "--help", "-h", "--nope", "-x", "", "-o=a=1", "-s=failed", "-sfailed", "--status=",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=7))
def test_fast_never_accepts_what_typer_refuses_and_always_agrees(argv):
    mine = fast_params(argv)
    if mine is not None:
        assert mine == typer_params(argv), argv


# -- through the real console script ----------------------------------------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("fast") / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=project)
    return project


def test_help_and_usage_errors_still_come_from_typer(shop):
    assert "--run" in ok("show", "--help", cwd=shop).out
    bad = run_heph("show", "a", "b", "c", cwd=shop)
    assert bad.code == 2 and "Got unexpected extra argument" in bad.err, bad
    bad = run_heph("list", "--limit", "0", cwd=shop)
    assert bad.code == 2 and "--limit" in bad.err, bad


def _on_a_terminal(project, *args: str) -> str:
    """What ``heph ARGS`` prints on a (pseudo-)terminal."""
    main, child = pty.openpty()
    env = cli_env(COLUMNS="160")
    proc = subprocess.Popen([sys.executable, "-m", "heph", *args], cwd=project, stdin=subprocess.DEVNULL,
                            stdout=child, stderr=subprocess.PIPE, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(30) == 0, proc.stderr.read()
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_rich_with_colour_and_a_pipe_the_same_content_in_plain_text(shop):
    piped = ok("show", "paymentflow", "pay1", cwd=shop).out
    shown = _on_a_terminal(shop, "show", "paymentflow", "pay1")
    assert ANSI in shown and ANSI not in piped
    for fragment in ("paymentid::pay1", "waiting", "wait_for_payment", "context", "runtime metadata", "acmepay",
                     "history", "request_payment", "async", "┏", "╭─ context"):
        assert fragment in piped and fragment in shown, fragment
    listed = _on_a_terminal(shop, "list")
    assert ANSI in listed and "paymentid::pay1" in listed and "reminderid::user7" in listed


def test_piped_list_is_one_whole_row_per_instance(shop):
    out = ok("list", cwd=shop).out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all("│" == row[-1] for row in rows)
    assert [row[0] for row in table_rows(out)] == ["reminderid::user7", "paymentid::pay1"]
    assert out.rstrip().endswith("2 instance(s)")


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_piped_show_and_list_fit_a_stream_that_is_not_utf8(shop, encoding):
    env = cli_env(PYTHONIOENCODING=encoding)
    for args in (["list"], ["show", "paymentflow", "pay1"]):
        run = ok(*args, cwd=shop, env=env)
        assert "paymentid::pay1" in run.out and "+" in run.out and "|" in run.out, run
        assert "┏" not in run.out and "error" not in run.err


def test_a_reader_that_leaves_early_ends_the_command_quietly(shop):
    """`heph list | head -0`: the pipe closes; exit 1 (as click does) and no error line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "heph", "list"], cwd=shop, env=cli_env(), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_force_color_draws_with_rich_in_a_pipe(shop):
    run = ok("show", "paymentflow", "pay1", cwd=shop, env=cli_env(FORCE_COLOR="1"))
    assert ANSI in run.out and "paymentid::pay1" in run.out


def _imports_after(project, *args: str, modules: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``heph ARGS`` through the console script's ``fast.run`` in one process; the process
    and its last stderr line: ``exit=CODE loaded=[those of modules that were imported]``."""
    probe = ("import sys\nfrom heph.cli import fast\nsys.argv = ['heph'] + sys.argv[1:]\n"
             "try:\n    fast.run()\nexcept SystemExit as exc:\n    code = exc.code\n"
             f"loaded = sorted(m for m in {modules!r} if m in sys.modules)\n"
             "print(f'exit={code} loaded={loaded}', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=project, env=cli_env(), capture_output=True,
                          text=True, timeout=60)
    return proc, proc.stderr.strip().splitlines()[-1]


def test_piped_show_and_list_import_neither_typer_nor_rich_nor_yaml(shop):
    for args in (["show", "paymentflow", "pay1"], ["list", "--status", "waiting"], ["show", "--id", "paymentid::pay1",
                                                                                  "--json"]):
        proc, last = _imports_after(shop, *args, modules=("typer", "rich", "yaml"))
        assert "paymentid::pay1" in proc.stdout, proc
        assert last == "exit=0 loaded=[]", proc.stderr


def test_commands_on_a_free_lock_do_not_import_filelock(tmp_path):
    """filelock is imported only to wait for a held lock (its import costs a CLI command ~10 ms)."""
    shop = make_project(tmp_path / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=shop)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=shop)
    for args in (["start", "paymentflow", "lockfree1", "--context", "contexts/payment.json"],
                 ["resume", "paymentflow", "pay1", "payment_confirmed"],
                 ["cancel", "reminderflow", "user7"], ["tick"]):
        proc, last = _imports_after(shop, *args, modules=("filelock",))
        assert last == "exit=0 loaded=[]", (args, proc.stderr)


def test_show_by_id_and_list_read_the_store_without_importing_the_project(tmp_path):
    project = make_project(tmp_path / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    (project / "broken_on_import.py").write_text("raise RuntimeError('this module is broken')\n")
    config = project / "heph.yaml"
    config.write_text(config.read_text().replace("workflows:\n", "workflows:\n  - broken_on_import\n"))

    listed = ok("list", "--json", cwd=project).json()
    assert [i["id"] for i in listed["instances"]] == ["paymentid::pay1"]
    assert ok("show", "--id", "paymentid::pay1", "--json", cwd=project).json()["status"] == "waiting"
    # naming a workflow needs the project's code: the broken module is reported
    for args in (["show", "paymentflow", "pay1"], ["list", "--workflow", "paymentflow"],
                 ["resume", "--id", "paymentid::pay1", "payment_confirmed"]):
        refused = run_heph(*args, cwd=project)
        assert refused.code == 1 and "this module is broken" in refused.err, refused


def test_control_characters_in_stored_text_never_reach_the_reader(tmp_path):
    """A crafted file (or a step's error message) must not drive the terminal of whoever reads it."""
    import re

    project = make_project(tmp_path / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    (path,) = (project / ".heph" / "instances" / "paymentid~pay1").glob("*.json")
    doc = json.loads(path.read_text())
    nasty = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m"
    doc["error"] = {"type": f"T{nasty}", "message": f"M{nasty}", "traceback": f"line 1\n{nasty}", "step": f"s{nasty}"}
    doc["lease"] = {"pid": 1, "host": f"h{nasty}", "since": "x"}
    doc["history"][0]["event"] = f"e{nasty}"
    doc["runtime_metadata"] = {"k": f"v{nasty}"}
    path.write_text(json.dumps(doc))

    piped = ok("show", "paymentflow", "pay1", cwd=project).out
    shown = _on_a_terminal(project, "show", "paymentflow", "pay1").replace("\r\n", "\n")  # the tty's CRLF
    rich_colours = re.compile(r"\x1b\[[0-9;]*m")  # rich's own SGR sequences, on the terminal only
    for out in (piped, rich_colours.sub("", shown)):
        assert not any(ch in out for ch in "\x1b\x07\r\x9b"), repr(out)
        assert "\\x1b]0;pwned\\x07" in out  # shown, escaped
    assert rich_colours.sub("", shown).count("\x1b") == 0
    cancelled = ok("cancel", "paymentflow", "pay1", cwd=project).out  # its one line names the stored error
    assert "M\\x1b]0;pwned" in cancelled and not any(ch in cancelled for ch in "\x1b\x07\r\x9b"), repr(cancelled)


def test_plain_tables_align_wide_characters_and_escape_controls():
    from heph.cli.plain import panel, table, width

    lines = table(("名前", "n"), [("日本語", 1), ("x\x1b[2J", 22)], right=("n",))
    assert len({width(line) for line in lines}) == 1  # every line as wide as the others
    assert "│ 日本語   │  1 │" in lines and "│ x\\x1b[2J │ 22 │" in lines
    boxed = panel("héllo\n世界", "ctx")
    assert len({width(line) for line in boxed}) == 1 and boxed[0].startswith("╭─ ctx ")


def test_show_reads_each_run_file_once(tmp_path):
    project = make_project(tmp_path / "shop")
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)  # a second run
    probe = ("import sys\nfrom heph.cli import fast\nfrom heph.runtime.storage import jsonfile\n"
             "real = jsonfile.read_instance\n"
             "def counting(path):\n    print('read', path.name, file=sys.stderr)\n    return real(path)\n"
             "jsonfile.read_instance = counting\nsys.argv = ['heph', 'show', 'orderflow', 'o1', '--json']\n"
             "fast.run()\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, env=cli_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc
    shown = json.loads(proc.stdout)
    reads = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("read ")]
    assert len(shown["runs"]) == 2 and shown["run"] == shown["runs"][0]
    assert sorted(reads) == sorted(f"{run}.json" for run in shown["runs"])
