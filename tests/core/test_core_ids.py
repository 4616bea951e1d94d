"""Business keys, values and instance ids."""

from __future__ import annotations

import re
import uuid

import pytest
from _core_helpers import define, make_step
from hypothesis import given
from hypothesis import strategies as st

from heph import Done, HephError, InvalidId, Unique
from heph.core.ids import MAX_VALUE_LENGTH, build_id, check_id, check_key, check_value, new_suffix, parse_id

UUID_TEXT = "123e4567-e89b-12d3-a456-426614174000"

# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "orderid", "o1", "123", "userid2"])
def test_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["A", "a-b", "a_b", "", "Order", "orderId", "a b", "a::b", "a:b", "é", "a\n", " a", "ａ", None, 3, b"ab", ["a"]],
)
def test_invalid_keys(key):
    with pytest.raises(InvalidId) as caught:
        check_key(key)
    message = str(caught.value)
    assert message.startswith(f"invalid business key {key!r}:")
    assert "[a-z0-9]+" in message


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["order42", "x", "0", "abc123", UUID_TEXT, str(uuid.UUID(int=0)), "a" * MAX_VALUE_LENGTH,
     "123e4567e89b12d3a456426614174000"],
)
def test_valid_values(value):
    assert check_value(value) == value


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("../x", "lower-case hyphenated UUID"),
        ("a::b", "lower-case hyphenated UUID"),
        ("", "non-empty string"),
        (UUID_TEXT.upper(), "lower-case hyphenated UUID"),
        ("123E4567-e89b-12d3-a456-426614174000", "lower-case hyphenated UUID"),
        ("{" + UUID_TEXT + "}", "lower-case hyphenated UUID"),
        ("urn:uuid:" + UUID_TEXT, "lower-case hyphenated UUID"),
        (UUID_TEXT + "\n", "lower-case hyphenated UUID"),
        ("123e4567-e89b-12d3-a456-42661417400", "lower-case hyphenated UUID"),
        ("123e4567-e89b-12d3-a456-42661417400g", "lower-case hyphenated UUID"),
        ("a-b", "lower-case hyphenated UUID"),
        ("a_b", "lower-case hyphenated UUID"),
        ("Order42", "lower-case hyphenated UUID"),
        ("a b", "lower-case hyphenated UUID"),
        ("a/b", "lower-case hyphenated UUID"),
        ("..", "lower-case hyphenated UUID"),
        ("abc\n", "lower-case hyphenated UUID"),
        ("é", "lower-case hyphenated UUID"),
        ("x" * (MAX_VALUE_LENGTH + 1), f"longer than {MAX_VALUE_LENGTH}"),
        (None, "non-empty string"),
        (42, "non-empty string"),
        (uuid.UUID(UUID_TEXT), "non-empty string"),
    ],
)
def test_invalid_values(value, fragment):
    with pytest.raises(InvalidId) as caught:
        check_value(value)
    assert str(caught.value).startswith("invalid business value ")
    assert fragment in str(caught.value)


def test_long_values_are_shortened_in_messages():
    with pytest.raises(InvalidId) as caught:
        check_value("X" * 500)
    assert len(str(caught.value)) < 200
    assert "..." in str(caught.value)


_PLAIN = re.compile(r"[a-z0-9]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@given(st.text(max_size=40) | st.text(alphabet="abcdef0123456789-ABZ_:./", max_size=40) | st.uuids().map(str))
def test_value_rule_property(text):
    ok = len(text) <= MAX_VALUE_LENGTH and bool(_PLAIN.fullmatch(text) or _UUID.fullmatch(text))
    if ok:
        assert check_value(text) == text
    else:
        with pytest.raises(InvalidId):
            check_value(text)


# -- ids ---------------------------------------------------------------------------------------


def test_build_id():
    assert build_id("orderid", "order42") == "orderid::order42"
    assert build_id("userid", UUID_TEXT) == f"userid::{UUID_TEXT}"
    assert build_id("orderid", "x", "a1b2c3d4") == "orderid::x::a1b2c3d4"


@pytest.mark.parametrize("args", [("Order", "x"), ("orderid", "X"), ("orderid", "a::b"), ("", "x"), ("orderid", "")])
def test_build_id_checks_each_part(args):
    with pytest.raises(InvalidId):
        build_id(*args)


@pytest.mark.parametrize("suffix", ["xyz", "A1B2C3D4", "a1b2c3d45", "a1b2c3d", "", "a1b2c3d\n", "g1b2c3d4"])
def test_build_id_checks_the_suffix(suffix):
    with pytest.raises(InvalidId, match="id suffix"):
        build_id("orderid", "x", suffix)


def test_parse_and_check_id():
    assert parse_id("orderid::x") == ("orderid", "x", None)
    assert parse_id("orderid::x::a1b2c3d4") == ("orderid", "x", "a1b2c3d4")
    assert parse_id(f"userid::{UUID_TEXT}") == ("userid", UUID_TEXT, None)
    assert check_id("orderid::x") == "orderid::x"


@pytest.mark.parametrize(
    "instance_id",
    [
        "orderid", "orderid::", "::x", "::", "", "orderid::x::y::z", "orderid:x", "orderid:::x",
        "Orderid::x", "orderid::X", "order-id::x", "orderid::../x", "orderid::x::nothex12", "orderid::x::",
        "orderid::x\n", "o::" + "x" * 300, None, 42, ("orderid", "x"),
    ],
)
def test_invalid_ids(instance_id):
    with pytest.raises(InvalidId):
        parse_id(instance_id)
    with pytest.raises(InvalidId):
        check_id(instance_id)


keys = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
values = st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True) | st.uuids().map(str)
suffixes = st.none() | st.from_regex(r"[0-9a-f]{8}", fullmatch=True)


@given(keys, values, suffixes)
def test_build_parse_round_trip(key, value, suffix):
    instance_id = build_id(key, value, suffix)
    assert parse_id(instance_id) == (key, value, suffix)
    assert check_id(instance_id) == instance_id


def test_new_suffix():
    suffixes = {new_suffix() for _ in range(50)}
    assert len(suffixes) > 40
    for suffix in suffixes:
        assert re.fullmatch(r"[0-9a-f]{8}", suffix)
        assert parse_id(build_id("k", "v", suffix))[2] == suffix


def test_invalid_id_is_a_heph_error_and_a_value_error():
    with pytest.raises(InvalidId) as caught:
        check_key("A")
    assert isinstance(caught.value, HephError) and isinstance(caught.value, ValueError)
    assert caught.value.code == "invalid_id"


# -- the workflow's id helper --------------------------------------------------------------------

Go = make_step("Go", ["ok"])


def test_workflow_instance_id():
    flow = define("i_ids", unique=Unique("orderid"), start=Go, transitions={Go: {"ok": Done}})
    assert flow.instance_id("order42") == "orderid::order42"
    assert flow.instance_id(UUID_TEXT) == f"orderid::{UUID_TEXT}"
    for bad in ["Order42", "../x", "", UUID_TEXT.upper(), "a_b"]:
        with pytest.raises(InvalidId):
            flow.instance_id(bad)


def test_workflow_instance_id_with_scope_none_needs_the_full_id():
    flow = define("i_idsnone", unique=Unique("orderid", scope="none"), start=Go, transitions={Go: {"ok": Done}})
    assert flow.instance_id("orderid::x::a1b2c3d4") == "orderid::x::a1b2c3d4"
    with pytest.raises(InvalidId):
        flow.instance_id("x")
