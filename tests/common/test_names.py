"""The node name rule: what may name a node, and the reserved words."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servermgr.common import names
from servermgr.common.selector import parse_target, select
from servermgr.core.security import new_node_id


@pytest.mark.parametrize(
    "name", ["web-01", "a", "db.example.com", "node_7", "A1", "x" * 253, "n0123456789abcde"]
)
def test_ordinary_host_names_are_names(name: str) -> None:
    assert names.name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("all", "reserved"),
        ("All", "reserved"),
        ("n0123456789abcdef", "node id"),
        ("N0123456789ABCDEF", "node id"),
        ("", "a node name uses"),
        ("*", "a node name uses"),
        ("web-1,web-2", "a node name uses"),
        ("role=web", "a node name uses"),
        ("env!=prod", "a node name uses"),
        ("web-?", "a node name uses"),
        ("web-[12]", "a node name uses"),
        ("-web", "a node name uses"),
        ("web.", "a node name uses"),
        ("web 1", "a node name uses"),
        ("web\n", "a node name uses"),
        ("\x1b[31mweb", "a node name uses"),
        ("wéb", "a node name uses"),
        ("x" * 254, "a node name uses"),
    ],
)
def test_reserved_selector_shaped_and_unsafe_names_are_refused(name: str, why: str) -> None:
    problem = names.name_problem(name)
    assert problem is not None
    assert why in problem
    assert not names.is_name(name)


def test_every_node_id_core_makes_is_refused_as_a_name() -> None:
    for _ in range(50):
        assert not names.is_name(new_node_id())


@given(st.text(max_size=300))
def test_a_name_is_always_one_target_meaning_that_node(text: str) -> None:
    """Whatever passes the rule parses as a target naming exactly itself."""
    if not names.is_name(text):
        return
    assert re.fullmatch(r"[A-Za-z0-9._-]+", text)
    target = parse_target(text)
    assert not target.all
    assert not target.labels
    assert target.names == (text,)


def test_an_id_targets_its_node_whatever_the_names() -> None:
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Node:
        id: str
        name: str
        labels: dict[str, str] = field(default_factory=dict)

    victim, evil = Node(new_node_id(), "db"), Node(new_node_id(), "web")
    picked, unknown = select(parse_target(victim.id), [victim, evil])
    assert picked == [victim]
    assert unknown == []


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("role", True),
        ("a.b-c_d", True),
        ("role\n", False),
        ("", False),
        ("x" * 64, False),
        ("r=w", False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert names.is_label_key(key) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("web/1", True), ("web\n", False), ("a b", False), ("x" * 254, False)],
)
def test_label_values(value: str, ok: bool) -> None:
    assert names.is_label_value(value) is ok


# What the API schema states (NAME_PATTERN) is exactly what Core checks (name_problem).
_NEAR = st.text(alphabet="aAlLnN0f9-._,=*\n é", max_size=20)


@given(st.one_of(_NEAR, st.text(max_size=20), st.from_regex(names.NAME_PATTERN)))
def test_the_schema_pattern_is_the_name_rule(name: str) -> None:
    assert (re.search(names.NAME_PATTERN, name) is not None) is names.is_name(name)


@pytest.mark.parametrize("name", ["all", "ALL", "n0123456789abcdef", "abc\n", "-a", "a-"])
def test_the_schema_pattern_refuses_reserved_names(name: str) -> None:
    assert re.search(names.NAME_PATTERN, name) is None
