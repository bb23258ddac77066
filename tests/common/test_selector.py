"""Target selection: the spec strings operators type, and which nodes they pick."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from servermgr.common.selector import (
    MAX_NAMES,
    TARGET_PATTERN,
    Target,
    parse_labels,
    parse_target,
    select,
)


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


FLEET = [
    Node("n3", "web-2", {"role": "web", "env": "prod"}),
    Node("n1", "db-1", {"role": "db", "env": "prod"}),
    Node("n2", "web-1", {"role": "web", "env": "staging"}),
    Node("n4", "bare"),
]


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


# --- parse_target ---------------------------------------------------------------


@pytest.mark.parametrize("spec", ["*", "all", " * ", "all\n"])
def test_star_and_all_target_every_node(spec: str) -> None:
    target = parse_target(spec)
    assert target == Target(all=True)
    assert target.describe() == "*"


def test_one_name() -> None:
    assert parse_target("node-01") == Target(names=("node-01",))


def test_comma_list_keeps_order_drops_duplicates_and_spaces() -> None:
    target = parse_target(" node-02, node-01 ,node-02,node-03,node-01 ")
    assert target.names == ("node-02", "node-01", "node-03")
    assert target.describe() == "node-02,node-01,node-03"


def test_labels() -> None:
    target = parse_target("role=web,env=prod")
    assert target == Target(labels={"role": "web", "env": "prod"})
    assert not target.names
    assert not target.all
    assert target.describe() == "role=web,env=prod"


def test_same_label_twice_is_one_condition() -> None:
    assert parse_labels("role=web,role=web") == {"role": "web"}


def test_same_label_with_two_values_is_an_error() -> None:
    # AND semantics: role=web AND role=db can never match; saying so beats
    # silently targeting the db nodes.
    with pytest.raises(ValueError, match="'role' given two different values"):
        parse_target("role=web,role=db")


def test_empty_label_value_is_allowed() -> None:
    assert parse_labels("role=") == {"role": ""}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "empty target"),
        ("   ", "empty target"),
        ("node-01,,node-02", "empty item"),
        ("node-01,", "empty item"),
        (",", "empty item"),
        ("node-01,role=web", "do not mix"),
        ("role=web,node-01", "do not mix"),
        ("bad name", "bad node name 'bad name'"),
        ("node;rm -rf /", "bad node name"),
        ("node-01,*", "bad node name '*'"),
        ("nöde", "bad node name"),
        ("x" * 254, "bad node name"),
        ("=web", "bad label selector"),
        ("role=we b", "bad label selector"),
        ("role=a=b", "bad label selector"),
        ("ro le=web", "bad label selector"),
        ("k" * 64 + "=v", "bad label selector"),
    ],
)
def test_malformed_targets_say_why(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("*", r"\*")):
        parse_target(spec)


def test_longest_name_is_accepted() -> None:
    assert parse_target("x" * 253).names == ("x" * 253,)


def test_too_many_names() -> None:
    parse_target(",".join(f"n{i}" for i in range(MAX_NAMES)))
    with pytest.raises(ValueError, match=f"more than {MAX_NAMES} items"):
        parse_target(",".join(f"n{i}" for i in range(MAX_NAMES + 1)))


@pytest.mark.parametrize("spec", ["role", "role=web,env", "role=web,,env=prod", "=", ""])
def test_parse_labels_rejects_items_without_key_value(spec: str) -> None:
    with pytest.raises(ValueError, match="use key=value"):
        parse_labels(spec)


# --- select --------------------------------------------------------------------


def test_all_picks_every_node_in_name_order() -> None:
    picked, unknown = select(parse_target("*"), FLEET)
    assert names(picked) == ["bare", "db-1", "web-1", "web-2"]
    assert unknown == []


def test_all_of_an_empty_fleet_is_empty() -> None:
    assert select(parse_target("all"), []) == ([], [])


def test_names_and_ids_mixed_with_duplicates_give_each_node_once_in_name_order() -> None:
    picked, unknown = select(parse_target("web-2,n1,web-1,n3,db-1"), FLEET)
    assert names(picked) == ["db-1", "web-1", "web-2"]
    assert unknown == []


def test_unknown_names_are_reported_in_the_order_given() -> None:
    picked, unknown = select(parse_target("zz,web-1,aa,n9"), FLEET)
    assert names(picked) == ["web-1"]
    assert unknown == ["zz", "aa", "n9"]


def test_names_are_case_sensitive() -> None:
    picked, unknown = select(parse_target("WEB-1"), FLEET)
    assert picked == []
    assert unknown == ["WEB-1"]


def test_an_id_always_means_its_own_node_even_when_a_name_looks_like_it() -> None:
    # Names shaped like ids are refused since; a row from before must not let
    # one node collect another's jobs by naming itself after its id.
    fleet = [Node("n1", "alpha"), Node("n2", "n1")]
    picked, _ = select(parse_target("n1"), fleet)
    assert picked == [Node("n1", "alpha")]
    picked, _ = select(parse_target("n2"), fleet)
    assert picked == [Node("n2", "n1")]


def test_labels_are_anded() -> None:
    picked, unknown = select(parse_target("role=web"), FLEET)
    assert names(picked) == ["web-1", "web-2"]
    assert unknown == []
    picked, _ = select(parse_target("role=web,env=prod"), FLEET)
    assert names(picked) == ["web-2"]
    picked, _ = select(parse_target("env=prod,role=web"), FLEET)
    assert names(picked) == ["web-2"]


def test_labels_matching_nothing_is_empty_not_unknown() -> None:
    assert select(parse_target("role=cache"), FLEET) == ([], [])
    assert select(parse_target("role=web,env=dev"), FLEET) == ([], [])


def test_a_label_with_an_empty_value_does_not_match_nodes_without_the_label() -> None:
    fleet = [*FLEET, Node("n5", "odd", {"role": ""})]
    picked, _ = select(parse_target("role="), fleet)
    assert names(picked) == ["odd"]


def test_select_accepts_any_iterable_once() -> None:
    picked, _ = select(parse_target("role=web"), iter(FLEET))
    assert names(picked) == ["web-1", "web-2"]


# --- properties -----------------------------------------------------------------

KEYS = st.sampled_from(["role", "env", "dc", "tier"])
VALUES = st.sampled_from(["a", "b", "c", ""])
LABELS = st.dictionaries(KEYS, VALUES, max_size=4)
# "all" means every node, so no node can be targeted by that name.
NAME = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,11}", fullmatch=True).filter(lambda s: s != "all")


@st.composite
def fleets(draw: st.DrawFn) -> list[Node]:
    node_names = draw(st.lists(NAME, unique=True, max_size=12))
    return [Node(f"id-{i}", name, draw(LABELS)) for i, name in enumerate(node_names)]


@given(fleet=fleets(), want=LABELS.filter(bool))
def test_label_selection_is_exactly_the_nodes_whose_labels_contain_the_selector(
    fleet: list[Node], want: dict[str, str]
) -> None:
    spec = ",".join(f"{k}={v}" for k, v in want.items())
    picked, unknown = select(parse_target(spec), fleet)
    expected = sorted(
        (n for n in fleet if want.items() <= dict(n.labels).items()), key=lambda n: n.name
    )
    assert picked == expected
    assert unknown == []


@given(fleet=fleets(), extra=st.lists(NAME, max_size=5), data=st.data())
def test_name_selection_partitions_the_request_into_found_and_unknown(
    fleet: list[Node], extra: list[str], data: st.DataObject
) -> None:
    known = [n.name for n in fleet] + [n.id for n in fleet]
    asked = data.draw(st.lists(st.sampled_from(known), max_size=8)) if known else []
    asked += extra
    if not asked:
        return
    target = parse_target(",".join(asked))
    picked, unknown = select(target, fleet)
    by_ref = {n.id: n for n in fleet} | {n.name: n for n in fleet}
    assert names(picked) == sorted(names(picked))
    assert len({n.id for n in picked}) == len(picked)
    assert {n.id for n in picked} == {by_ref[a].id for a in asked if a in by_ref}
    assert unknown == [a for a in dict.fromkeys(asked) if a not in by_ref]


@given(
    target=st.one_of(
        st.just(Target(all=True)),
        st.lists(NAME, min_size=1, max_size=6, unique=True).map(lambda ns: Target(names=tuple(ns))),
        LABELS.filter(bool).map(lambda ls: Target(labels=ls)),
    )
)
def test_describe_parses_back_to_the_same_target(target: Target) -> None:
    assert parse_target(target.describe()) == target


# --- globs and negation --------------------------------------------------------


def test_a_glob_picks_the_names_it_matches_and_is_never_unknown() -> None:
    picked, unknown = select(parse_target("web-*"), FLEET)
    assert names(picked) == ["web-1", "web-2"]
    assert unknown == []
    assert select(parse_target("cache-*"), FLEET) == ([], [])
    picked, _ = select(parse_target("web-[2-9],db-?"), FLEET)
    assert names(picked) == ["db-1", "web-2"]


def test_globs_and_names_mix_and_each_node_comes_once() -> None:
    picked, unknown = select(parse_target("web-*,web-1,zz"), FLEET)
    assert names(picked) == ["web-1", "web-2"]
    assert unknown == ["zz"]


def test_negated_label_terms_and_with_the_rest() -> None:
    picked, _ = select(parse_target("role=web,env!=staging"), FLEET)
    assert names(picked) == ["web-2"]
    # k!=v also matches nodes without the label k (as kubectl's selectors do).
    picked, _ = select(parse_target("env!=prod"), FLEET)
    assert names(picked) == ["bare", "web-1"]
    picked, _ = select(parse_target("env!=prod,env!=staging"), FLEET)
    assert names(picked) == ["bare"]


@pytest.mark.parametrize(
    ("spec", "single"),
    [("node-01", True), ("n0123456789abcdef", True), ("web-*", False), ("a,b", False)]
    + [("role=web", False), ("all", False)],
)
def test_single_is_one_plain_name(spec: str, single: bool) -> None:
    assert parse_target(spec).single is single


@pytest.mark.parametrize(
    ("spec", "reason"),
    [("web-*;rm", "bad node name"), ("role!web", "bad node name"), ("role!!=web", "bad label")],
)
def test_malformed_globs_and_negations(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_target(spec)


def test_parse_labels_takes_no_negation() -> None:
    with pytest.raises(ValueError, match="use key=value"):
        parse_labels("env!=prod")


@given(fleet=fleets(), want=LABELS, avoid=st.lists(st.tuples(KEYS, VALUES), max_size=3))
def test_label_terms_pick_exactly_the_nodes_satisfying_every_term(
    fleet: list[Node], want: dict[str, str], avoid: list[tuple[str, str]]
) -> None:
    terms = [f"{k}={v}" for k, v in want.items()] + [f"{k}!={v}" for k, v in avoid]
    if not terms:
        return
    target = parse_target(",".join(terms))
    picked, _ = select(target, fleet)
    expected = [
        n
        for n in sorted(fleet, key=lambda n: n.name)
        if want.items() <= dict(n.labels).items()
        and all(n.labels.get(k) != v for k, v in avoid)
    ]
    assert picked == expected
    assert parse_target(target.describe()) == target
@given(st.from_regex(TARGET_PATTERN))
def test_every_target_the_schema_allows_parses(spec: str) -> None:
    """The API schema's target pattern never promises what parse_target refuses."""
    labels = [p.partition("=") for p in spec.split(",")] if "=" in spec else []
    assume(len({k for k, _, _ in labels}) == len({(k, v) for k, _, v in labels}))
    parse_target(spec)


@pytest.mark.parametrize("spec", [" web-1", "web-1\n", "a,,b", "a,b=c", "web 1", ""])
def test_the_schema_refuses_what_parse_target_is_lenient_about_or_refuses(spec: str) -> None:
    assert re.search(TARGET_PATTERN, spec) is None
