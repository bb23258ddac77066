"""Which nodes a job targets: names or ids, a label selector, or all.

Spec strings as operators type them:

    node-01              one node (name or id)
    node-01,node-02      several
    role=web,env=prod    every node with all of these labels
    *                    every node

Pure logic: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from servermgr.common import names

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")
MAX_NAMES = 10000


@dataclass(frozen=True)
class Target:
    all: bool = False
    names: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.all:
            return "*"
        if self.labels:
            return ",".join(f"{k}={v}" for k, v in self.labels.items())
        return ",".join(self.names)


def parse_target(spec: str) -> Target:
    """Parse a target spec; ValueError with a reason when it is malformed."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty target: give a node name, a comma list, key=value labels or *")
    if spec in ("*", "all"):
        return Target(all=True)
    parts = [p.strip() for p in spec.split(",")]
    if any(not p for p in parts):
        raise ValueError(f"bad target {spec!r}: empty item in the comma list")
    if len(parts) > MAX_NAMES:
        raise ValueError(f"bad target: more than {MAX_NAMES} items")
    if any("=" in p for p in parts):
        if not all("=" in p for p in parts):
            raise ValueError(f"bad target {spec!r}: do not mix node names and key=value labels")
        return Target(labels=parse_labels(spec))
    for p in parts:
        if not _NAME.match(p):
            raise ValueError(f"bad node name {p!r}")
    return Target(names=tuple(dict.fromkeys(parts)))


def parse_labels(spec: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; ValueError with a reason."""
    labels: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not names.is_label_key(key) or not names.is_label_value(value):
            raise ValueError(f"bad label selector {part!r}: use key=value")
        if labels.get(key, value) != value:
            raise ValueError(f"bad label selector {spec!r}: {key!r} given two different values")
        labels[key] = value
    return labels


class NodeLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


N = TypeVar("N", bound=NodeLike)


def select(target: Target, nodes: Iterable[N]) -> tuple[list[N], list[str]]:
    """The nodes a target picks (in name order) and the names it asked for that do not exist."""
    pool = sorted(nodes, key=lambda n: n.name)
    if target.all:
        return pool, []
    if target.labels:
        want = target.labels.items()
        return [n for n in pool if all(n.labels.get(k) == v for k, v in want)], []
    # An id always means its own node, even should some name look like it.
    by_key: dict[str, N] = {n.id: n for n in pool}
    for n in pool:
        by_key.setdefault(n.name, n)
    picked: dict[str, N] = {}
    unknown: list[str] = []
    for name in target.names:
        node = by_key.get(name)
        if node is None:
            unknown.append(name)
        else:
            picked[node.id] = node
    return sorted(picked.values(), key=lambda n: n.name), unknown
