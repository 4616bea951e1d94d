"""The README's snippets run as written.

Every fenced ```python block runs, in README order and in one namespace (a reader following
along), in a fresh copy of sample_project/ (cwd there, on sys.path); every ```console block
runs its ``$ heph ...`` lines in order in a fresh copy too, each expected to exit 0 and to
print what the README shows. A block preceded by ``<!-- not run -->`` is skipped (an outline
with placeholder names, a database, an installation). The set-up commands must leave the
shell where it was: no ``cd`` outside a subshell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLE = ROOT / "sample_project"
BIN = Path(sys.executable).parent
NOT_RUN = "<!-- not run -->"
SKIPPED_COMMANDS = re.compile(r"\bsleep\b|\bheph (worker|db|storage)\b")  # a wait, a loop, a database


@dataclass
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str
    run: bool
    section: str  # the last "## " heading above it


def blocks() -> list[Block]:
    found, lines, section = [], README.read_text(encoding="utf-8").splitlines(), ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        match = re.match(r"```(\w*)\s*\Z", line)
        if match:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            marked = index > 0 and lines[index - 1].strip() == NOT_RUN
            found.append(Block(match.group(1), index + 1, "\n".join(lines[index + 1:end]) + "\n", not marked, section))
            index = end
        index += 1
    return found


def copy_sample(into: Path) -> Path:
    target = into / "sample_project"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".heph", "__pycache__", ".pytest_cache"))
    return target


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPH_") and k not in ("PYTHONPATH", "FORCE_COLOR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return env


# -- the Python snippets -----------------------------------------------------------------------

DRIVER = textwrap.dedent('''
    import json, os, sys, traceback
    sys.path.insert(0, os.getcwd())
    namespace = {"__name__": "readme"}
    for line, source in json.load(open(sys.argv[1])):
        try:
            exec(compile(source, f"README.md:{line}", "exec"), namespace)
        except BaseException:
            print(f"the ```python block at README.md line {line} failed:", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
''')


def test_the_python_snippets_run_as_written_in_the_sample_project(tmp_path):
    import json

    python = [b for b in blocks() if b.lang == "python"]
    runnable = [b for b in python if b.run]
    assert len(runnable) >= 6
    assert len(python) - len(runnable) <= 2, "only the outlines with placeholder steps are marked not run"
    project = copy_sample(tmp_path)
    (tmp_path / "blocks.json").write_text(json.dumps([(b.line, b.text) for b in runnable]))
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
                          cwd=project, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already_running paymentid::pay2" in done.stdout  # the error snippet met the error it shows
    assert "not_retryable orderid::order42 completed" in done.stdout


# -- the CLI tour --------------------------------------------------------------------------------


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$ ...`` lines of a console block, each with the output lines shown under it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out and line.strip():
            out[-1][1].append(line)
    return out


def shown(expected: str) -> re.Pattern:
    """An output line as the README shows it: ``...`` stands for anything."""
    return re.compile(r"\s*".join(".*".join(map(re.escape, word.split("..."))) for word in expected.split()))


def test_the_console_blocks_run_in_order_in_a_fresh_sample_project(tmp_path):
    console = [b for b in blocks() if b.lang == "console"]
    assert [b for b in console if b.run], "the README has a CLI tour"
    project = copy_sample(tmp_path)
    cwd, env, transcript = project, clean_env(), ""
    ran = 0
    for block in (b for b in console if b.run):
        for command, expected in commands(block):
            where = f"README.md line {block.line}: $ {command}"
            if SKIPPED_COMMANDS.search(command):
                continue
            cd = re.fullmatch(r"cd (\S+)\s*(#.*)?", command)
            if cd:  # the tour's cd is from the repository root, where sample_project/ is
                cwd = tmp_path / cd.group(1)
                assert cwd.is_dir(), where
                continue
            # a scope-none id in the README has an example suffix: use the one start printed
            for suffix in re.findall(r"::([0-9a-f]{8})\b", command):
                printed = re.findall(r"notification::welcome::([0-9a-f]{8})", transcript)
                if printed:
                    command = command.replace(suffix, printed[-1])
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=60)
            transcript += done.stdout
            assert done.returncode == 0, f"{where}\n{done.stdout}{done.stderr}"
            for line in expected:
                assert any(shown(line).fullmatch(got.strip()) for got in done.stdout.splitlines()), (
                    f"{where}: the README shows {line!r}, the command printed:\n{done.stdout}")
            ran += 1
    assert ran >= 15


# -- the set-up commands ---------------------------------------------------------------------------


def setup_blocks() -> list[Block]:
    return [b for b in blocks() if b.section == "Set up on a fresh machine" and b.lang == "bash"]


def top_level(command: str) -> str:
    """``command`` with every subshell ``( ... )`` removed."""
    while True:
        stripped = re.sub(r"\([^()]*\)", "()", command)
        if stripped == command:
            return command
        command = stripped


def test_the_set_up_commands_never_cd_outside_a_subshell():
    found = setup_blocks()
    assert len(found) == 2
    for block in found:
        assert not re.search(r"(^|[;&|]\s*)cd\b", top_level(block.text)), (
            f"README.md line {block.line}: a cd outside ( ... ) leaves the shell elsewhere for the next command")
    assert top_level("a && ( cd x && b ) && c") == "a && () && c"
    assert re.search(r"(^|[;&|]\s*)cd\b", top_level("a && cd x && b"))


def test_the_sample_part_of_the_first_set_up_command_runs_from_the_root_and_stays_there(tmp_path):
    first = setup_blocks()[0].text.strip()
    installed = first.index("pip install -e . && ") + len("pip install -e . && ")
    copy_sample(tmp_path)
    done = subprocess.run(["bash", "-c", f"{first[installed:]} && pwd"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == str(tmp_path)  # the shell is still at the root
    assert "completed" in done.stdout


# -- plain pytest in a project ---------------------------------------------------------------------


def test_plain_pytest_finds_the_workflow_modules_through_pytest_ini(tmp_path):
    project = copy_sample(tmp_path / "with")
    done = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider"], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b5 passed\b", done.stdout)

    bare = copy_sample(tmp_path / "without")
    (bare / "pytest.ini").unlink()
    done = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests"], cwd=bare,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "No module named 'shop'" in done.stdout  # what the ini is for


def test_the_readme_shows_the_sample_pytest_configuration():
    text = README.read_text(encoding="utf-8")
    assert '[tool.pytest.ini_options]\npythonpath = ["."]' in text
    ini = [b for b in blocks() if b.lang == "ini"]
    assert len(ini) == 1
    settings = [line for line in (SAMPLE / "pytest.ini").read_text().splitlines() if line and not line.startswith("#")]
    assert ini[0].text.splitlines() == settings


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
