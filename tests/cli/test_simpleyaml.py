"""heph.cli.simpleyaml reads plain heph.yaml files exactly as yaml.safe_load does, and
hands everything else to PyYAML (NotSimple)."""

from __future__ import annotations

import pytest
import yaml
from cli_helpers import SAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st

from heph.cli.simpleyaml import NotSimple, parse


def agrees(text: str) -> bool:
    """True if ``parse`` read ``text`` (and got what PyYAML gets); False if it handed it over."""
    try:
        mine = parse(text)
    except NotSimple:
        return False
    theirs = yaml.safe_load(text)
    assert mine == (theirs if theirs is not None else {}), text
    assert [type(v) for v in mine.values()] == [type(v) for v in (theirs or {}).values()], text
    return True


def test_the_sample_config_is_read_without_pyyaml():
    assert agrees((SAMPLE / "heph.yaml").read_text())


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "workflows:\n  - a.b\n  - c  # note\nstorage:\n  path: .heph\n  lock_timeout: 5\n",
    "storage:\n  lock_timeout: 2.5\n", "storage:\n  path: 'my store'\n", 'storage:\n  path: "x y"\n',
    "storage:\n    path: /var/lib/heph\n", "workflows:\n", "a: 0\n", "a: 10\n", "a: 'x' # c\n",
])
def test_plain_files_are_read_as_pyyaml_reads_them(text):
    assert agrees(text)


@pytest.mark.parametrize("text", [
    "workflows: [a, b]\n", "storage: {path: x}\n", "a: yes\n", "a: No\n", "a: on\n", "a: null\n", "a: ~\n",
    "a: true\n", "a: .inf\n", "a: .NaN\n", "a: 012\n", "a: 0x1f\n", "a: 1e3\n", "a: 1_000\n", "a: 2026-11-26\n",
    "a: 1:30\n", "a: x:y\n", "a: 'it''s'\n", 'a: "tab\\t"\n', "a: b#c\n", "a: &x 1\nb: *x\n", "--- \na: 1\n",
    "a:\n\tb: 1\n", "a: 1\r\nb: 2\r\n", "a: 1\na: 2\n", "workflows:\n- a\n- b\n", "  a: 1\n",
    "a:\n  b:\n    c: 1\n", "a:\n  - x\n  y: 1\n", "a:\n  - x\n    - y\n", "a: |\n  text\n", "a: >\n  text\n",
    "a: café\n", "- a\n- b\n", "a:b\n", "'a': 1\n", "a: -\n", "a:\n  -\n", "? a\n: 1\n",
    "a: !!str 1\n", "a: %x\n", "a: @x\n", "a: `x`\n", "a: x y\n", "a: 1.2.3\n", "a: +1\n", "a: -1\n", "a: .0\n", "a: .5e+3\n", "a: 1.5e3\n",
    "yes: 1\n", "storage:\n  Null: 1\n", "on:\n  - a\n",  # keys PyYAML reads as True / None
])
def test_anything_beyond_the_subset_goes_to_pyyaml(text):
    assert not agrees(text)


SCALARS = st.one_of(
    st.sampled_from(["x", ".heph", ".0", ".5x", "1.", "1.5", "/a/b", "shop.orders", "a-b", "A_1", "0", "7", "30", "2.5", "0.0", "yes", "No",
                     "null", "~", "true", "'q r'", '"s t"', "''", '""', "012", "1e3", "x:y", ".inf", "1_0", "-1",
                     "2026-01-01", "[a]", "{a: 1}", "a b", "é"]),
    st.text(alphabet="abz09._-/: '\"#", min_size=1, max_size=8),
    st.from_regex(r"[a-z/.][a-z0-9_./-]{0,7}", fullmatch=True),  # mostly plain scalars: both parsers read them
)
KEYS = st.sampled_from(["workflows", "storage", "path", "type", "dsn", "lock_timeout", "a", "b_2", "Key", "x-y",
                        "yes", "Null", "off"])
COMMENT = st.sampled_from(["", "  # note", " #", "# x"])


@st.composite
def documents(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(KEYS)
        kind = draw(st.sampled_from(["scalar", "list", "map", "empty"]))
        if kind == "scalar":
            lines.append(f"{key}: {draw(SCALARS)}{draw(COMMENT)}")
            continue
        lines.append(f"{key}:{draw(COMMENT)}")
        indent = " " * draw(st.integers(1, 4))
        for _ in range(draw(st.integers(0 if kind == "empty" else 1, 3))):
            item = f"- {draw(SCALARS)}" if kind == "list" else f"{draw(KEYS)}: {draw(SCALARS)}"
            lines.append(f"{indent}{item}{draw(COMMENT)}")
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# between", "   "])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


@settings(max_examples=1500, deadline=None)
@given(documents())
def test_whatever_it_reads_pyyaml_reads_the_same(text):
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(NotSimple):
            parse(text)
        return
    agrees(text)
