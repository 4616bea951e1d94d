"""What the real ``heph`` prints and loads: Typer's help and usage errors, rich on a terminal and the
same content as plain text in a pipe, a reader that leaves early, and the modules a command
imports (only those it uses)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from cli_helpers import ANSI, assert_usage_error, cli_env, make_project, ok, table_rows
from cli_helpers import heph as run_heph


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("output") / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=project)
    return project


# -- Typer parses every invocation ----------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["show", "a", "b", "c"], "Got unexpected extra argument"),
    (["list", "--limit", "0"], "--limit"),
    (["list", "--limit", "x"], "--limit"),
    (["list", "--version", "1.5"], "--version"),
    (["show", "--run"], "--run"),
    (["show", "--id", "a", "--bogus"], "--bogus"),
    (["start"], "WORKFLOW"),
    (["resume"], "WORKFLOW VALUE EVENT"),
    (["nope"], "nope"),
    (["--config"], "--config"),
    (["tick", "extra"], "extra"),
    (["start", "orderflow", "o1", "--context"], "--context"),
    (["graph"], "WORKFLOW"),
])
def test_usage_errors_exit_2_with_typer_s_message(shop, args, says):
    run = run_heph(*args, cwd=shop)
    assert_usage_error(run)
    assert says in run.err and run.err.startswith("Usage error: ") and "--help)" in run.err, run
    assert len(run.err.strip().splitlines()) == 1, run  # heph's one style, not Typer's box of text
    assert run.out == "", run


def test_help_comes_from_typer_and_names_every_option(shop):
    out = ok("show", "--help", cwd=shop).out
    for option in ("--id", "--run", "--json", "WORKFLOW", "VALUE"):
        assert option in out, option
    assert "-o, --option" in ok("start", "--help", cwd=shop).out
    assert "migrate" in ok("db", "--help", cwd=shop).out and "copy" in ok("storage", "--help", cwd=shop).out


def test_options_parse_in_every_spelling(shop):
    """``--name=value``, short options, repeated options and global options before the command."""
    listed = ok("--config=heph.yaml", "list", "--status=waiting", "-s", "failed", "--limit", "5", "--json",
                cwd=shop).json()
    assert sorted(i["id"] for i in listed["instances"]) == ["paymentid::pay1", "reminderid::user7"]
    assert ok("--debug", "--config", "heph.yaml", "list", "-w", "paymentflow", "--json", cwd=shop).json()[
        "instances"][0]["id"] == "paymentid::pay1"
    shown = ok("show", "--id=paymentid::pay1", "--json", cwd=shop).json()
    assert ok("show", "--id", "paymentid::pay1", f"--run={shown['run']}", "--json", cwd=shop).json()["run"] == shown["run"]
    assert ok("list", "--version", "+1", "--json", cwd=shop).json()["instances"]


# -- terminals, pipes and readers ------------------------------------------------------------------


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


def test_graph_on_a_terminal_is_a_coloured_tree(shop):
    drawn = _on_a_terminal(shop, "graph", "paymentflow", "--instance", "pay1")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", drawn)
    assert ANSI in drawn and "paymentflow v1" in plain and "start → request_payment" in plain
    assert "[waiting]" in plain and "[completed]" in plain


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


@pytest.mark.parametrize("args", [["list"], ["show", "paymentflow", "pay1"], ["show", "--id", "paymentid::pay1",
                                                                              "--json"]])
def test_a_reader_that_leaves_early_ends_the_command_quietly(shop, args):
    """`heph list | head -0`: the pipe closes; exit 1 (as click does) and nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "heph", *args], cwd=shop, env=cli_env(), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_force_color_draws_with_rich_in_a_pipe(shop):
    run = ok("show", "paymentflow", "pay1", cwd=shop, env=cli_env(FORCE_COLOR="1"))
    assert ANSI in run.out and "paymentid::pay1" in run.out


def test_plain_tables_align_wide_characters_and_escape_controls():
    from heph.cli.plain import panel, table, width

    lines = table(("名前", "n"), [("日本語", 1), ("x\x1b[2J", 22)], right=("n",))
    assert len({width(line) for line in lines}) == 1  # every line as wide as the others
    assert "│ 日本語   │  1 │" in lines and "│ x\\x1b[2J │ 22 │" in lines
    boxed = panel("héllo\n世界", "ctx")
    assert len({width(line) for line in boxed}) == 1 and boxed[0].startswith("╭─ ctx ")


def test_control_characters_in_stored_text_never_reach_the_reader(tmp_path):
    """A crafted file (or a step's error message) must not drive the terminal of whoever reads it."""
    project = make_project(tmp_path / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=project)
    (path,) = (project / ".heph" / "instances" / "paymentid~pay1").glob("*.json")
    doc = json.loads(path.read_text())
    nasty = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m"
    doc["error"] = {"type": f"T{nasty}", "message": f"M{nasty}", "traceback": f"line 1\n{nasty}", "step": f"s{nasty}"}
    doc["lease"] = {"pid": 1, "host": f"h{nasty}", "since": "2026-12-02T10:00:00+00:00"}
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


# -- what a command loads --------------------------------------------------------------------------


def _in_one_process(project, *args: str, probe: str = "", modules: tuple[str, ...] = ()):
    """Run ``heph ARGS`` through the console script's ``run`` in one process (after ``probe``);
    the process and its last stderr line: ``exit=CODE loaded=[those of modules that were imported]``."""
    code = ("import sys\n" + probe + "from heph.cli.main import run\nsys.argv = ['heph'] + sys.argv[1:]\n"
            "try:\n    run()\nexcept SystemExit as exc:\n    code = exc.code\n"
            f"loaded = sorted(m for m in {modules!r} if m in sys.modules)\n"
            "print(f'exit={code} loaded={loaded}', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=project, env=cli_env(), capture_output=True,
                          text=True, timeout=60)
    return proc, proc.stderr.strip().splitlines()[-1]


DRAWING = ("rich", "heph.cli.render", "heph.cli.graph", "pygments")
ELSEWHERE = ("heph.runtime.storage.postgres", "psycopg", "heph.runtime.storage.transfer", "heph.runtime.doctor",
             "heph.runtime.storage.memory", "heph.testing", "heph.otel", "opentelemetry", "filelock")


@pytest.mark.parametrize("args", [
    ["show", "paymentflow", "pay1"], ["show", "--id", "paymentid::pay1", "--json"], ["list", "--status", "waiting"],
    ["list", "--json"], ["tick"],
])
def test_reading_commands_to_a_pipe_load_neither_rich_nor_what_they_do_not_use(shop, args):
    proc, last = _in_one_process(shop, *args, modules=DRAWING + ELSEWHERE)
    assert proc.returncode == 0 and last == "exit=0 loaded=[]", proc.stderr
    if args[0] != "tick":
        assert "paymentid::pay1" in proc.stdout, proc


def test_json_output_loads_no_plain_renderer(shop):
    proc, last = _in_one_process(shop, "show", "paymentflow", "pay1", "--json", modules=("heph.cli.plain",))
    assert last == "exit=0 loaded=[]", proc.stderr


def test_commands_on_a_free_lock_do_not_import_filelock(tmp_path):
    """filelock is imported only to wait for a held lock (its import costs a CLI command ~10 ms)."""
    shop = make_project(tmp_path / "shop")
    ok("start", "paymentflow", "pay1", "--context", "contexts/payment.json", cwd=shop)
    ok("start", "reminderflow", "user7", "--context", "contexts/user.json", cwd=shop)
    for args in (["start", "paymentflow", "lockfree1", "--context", "contexts/payment.json"],
                 ["resume", "paymentflow", "pay1", "payment_confirmed"],
                 ["cancel", "reminderflow", "user7"], ["tick"]):
        proc, last = _in_one_process(shop, *args, modules=DRAWING + ELSEWHERE)
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


def test_show_reads_each_run_file_once(tmp_path):
    project = make_project(tmp_path / "shop")
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)
    ok("start", "orderflow", "o1", "--context", "contexts/order42.json", cwd=project)  # a second run
    probe = ("from heph.runtime.storage import jsonfile\nreal = jsonfile.read_instance\n"
             "def counting(path, *args, **kwargs):\n    print('read', path.name, file=sys.stderr)\n"
             "    return real(path, *args, **kwargs)\n"
             "jsonfile.read_instance = counting\n")
    proc, last = _in_one_process(project, "show", "orderflow", "o1", "--json", probe=probe)
    assert last == "exit=0 loaded=[]", proc
    shown = json.loads(proc.stdout)
    reads = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("read ")]
    assert len(shown["runs"]) == 2 and shown["run"] == shown["runs"][0]
    assert sorted(reads) == sorted(f"{run}.json" for run in shown["runs"])
