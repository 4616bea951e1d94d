"""``heph.yaml`` is read by PyYAML (libyaml's ``CSafeLoader`` when PyYAML has it), with the meaning
``yaml.safe_load`` gives it: keys such as ``yes:`` or ``Null:`` and values such as ``0x1f`` or
``1e3`` read as PyYAML reads them, and a file that does not parse is refused with PyYAML's own
message and position."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import SAMPLE, assert_refused, make_project
from cli_helpers import heph as run_heph

from heph.cli.project import load_project
from heph.errors import CliError


def _load(tmp_path: Path, text: str):
    config = tmp_path / "heph.yaml"
    config.write_text(text, encoding="utf-8")
    return load_project(config, use_env=False)


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(CliError) as caught:
        _load(tmp_path, text)
    return str(caught.value)


def test_the_sample_config_reads_as_pyyaml_reads_it(tmp_path):
    text = (SAMPLE / "heph.yaml").read_text()
    project = _load(tmp_path, text)
    expected = yaml.safe_load(text)
    assert project.modules == expected["workflows"]
    assert project.storage_path == tmp_path / expected["storage"]["path"]


@pytest.mark.parametrize("text, modules, path, timeout", [
    ("", [], ".heph", 30.0),
    ("# only a comment\n", [], ".heph", 30.0),
    ("workflows:\n  - a.b\n  - c  # note\nstorage:\n  path: .heph\n  lock_timeout: 5\n", ["a.b", "c"], ".heph", 5.0),
    ("workflows: [a.b, c]\nstorage: {path: x}\n", ["a.b", "c"], "x", 30.0),
    ("workflows:\n- a\n- b\n", ["a", "b"], ".heph", 30.0),
    ("storage:\n  path: 'my store'\n", [], "my store", 30.0),
    ('storage:\n  path: "x y"\n', [], "x y", 30.0),
    ("storage:\n  path: 'it''s'\n", [], "it's", 30.0),
    ("storage:\n  lock_timeout: 2.5\n", [], ".heph", 2.5),
    ("storage:\n  lock_timeout: .5\n", [], ".heph", 0.5),
    ("storage:\n  lock_timeout: 0x1f\n", [], ".heph", 31.0),   # YAML 1.1: hexadecimal
    ("storage:\n  lock_timeout: 012\n", [], ".heph", 10.0),    # YAML 1.1: octal
    ("storage:\n  lock_timeout: 1_0\n", [], ".heph", 10.0),    # YAML 1.1: digits may be grouped
    ("storage:\n  lock_timeout: 1:30\n", [], ".heph", 90.0),   # YAML 1.1: sexagesimal
    ("--- \nstorage: {path: s}\n", [], "s", 30.0),
    ("storage: &s {path: s}\nworkflows: []\n", [], "s", 30.0),
    ("workflows: [a]\nworkflows: [b]\n", ["b"], ".heph", 30.0),  # PyYAML keeps the last of duplicate keys
])
def test_values_read_as_pyyaml_reads_them(tmp_path, text, modules, path, timeout):
    project = _load(tmp_path, text)
    assert (project.modules, project.storage_path, project.lock_timeout) == (modules, tmp_path / path, timeout)


@pytest.mark.parametrize("text, says", [
    ("yes: 1\n", "unknown key(s) True"),                   # `yes` is a boolean key to PyYAML
    ("on:\n  - a\n", "unknown key(s) True"),
    ("storage:\n  Null: 1\n", "unknown storage key(s) None"),
    ("storage:\n  ~: 1\n", "unknown storage key(s) None"),
    ("storage:\n  path: yes\n", "storage.path must be a non-empty string"),
    ("storage:\n  path: null\n", "storage.path must be a non-empty string"),
    ("storage:\n  path: 7\n", "storage.path must be a non-empty string"),
    ("storage:\n  lock_timeout: 1e3\n", "storage.lock_timeout must be a number"),  # a string to YAML 1.1
    ("storage:\n  lock_timeout: true\n", "storage.lock_timeout must be a number"),
    ("storage:\n  lock_timeout: .nan\n", "storage.lock_timeout must be a number"),
    ("storage:\n  lock_timeout: 2026-11-26\n", "storage.lock_timeout must be a number"),  # a date
    ("workflows: shop.orders\n", "'workflows' must be a list"),
    ("workflows: [yes]\n", "'workflows' must be a list"),
    ("- a\n- b\n", "must be a mapping"),
    ("workflows: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
])
def test_keys_and_values_mean_what_they_mean_to_pyyaml(tmp_path, text, says):
    assert says in _refusal(tmp_path, text)


@pytest.mark.parametrize("text", [
    "workflows: [shop.orders\nstorage: {path: .heph}\n", "workflows: [a\n", "a:\n\tb: 1\n", "a: b: c\n",
    "a: 'x\n", "a: &x 1\nb: *y\n", "- a\nb: 1\n", "a: 1\n  b: 2\n", "a: 1\n---\nb: 2\n", "a: @x\n", "a: `x`\n",
    "{a: 1\n", 'a: "\\q"\n', "a: |\n  x\n y\n", "\x00",
])
def test_a_file_that_does_not_parse_is_refused_with_pyyaml_s_own_message(tmp_path, text):
    """The message is the pure-Python loader's (``yaml.safe_load``), even when libyaml read the file first."""
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        expected = f"{tmp_path / 'heph.yaml'} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
    else:  # pragma: no cover - the cases above are all invalid
        raise AssertionError(f"PyYAML reads {text!r}")
    assert _refusal(tmp_path, text) == expected


def test_libyaml_reads_the_file_when_pyyaml_has_it(tmp_path, monkeypatch):
    if getattr(yaml, "CSafeLoader", None) is None:
        pytest.skip("PyYAML without libyaml")
    used = []

    class Spy(yaml.CSafeLoader):  # type: ignore[misc,name-defined]
        def __init__(self, stream):
            used.append(stream)
            super().__init__(stream)

    monkeypatch.setattr(yaml, "CSafeLoader", Spy)
    assert _load(tmp_path, "workflows: [a]\n").modules == ["a"]
    assert used == ["workflows: [a]\n"]


def test_a_bad_heph_yaml_is_one_refusal_line_from_the_cli(tmp_path):
    project = make_project(tmp_path / "shop")
    (project / "heph.yaml").write_text("yes: 1\nworkflows: [shop.orders]\n")
    assert_refused(run_heph("list", cwd=project), "unknown key(s) True")
    (project / "heph.yaml").write_text("workflows: [shop.orders\n")
    assert_refused(run_heph("list", "--json", cwd=project), "not valid YAML at line 2, column 1",
                   "expected ',' or ']', but got '<stream end>'")
