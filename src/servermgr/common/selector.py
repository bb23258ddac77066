"""Which nodes a target picks: names, ids, globs, label selectors, or all.

The one home of targeting: ctl (exec, service, nodes), Core's job API (which
resolves a job's target against its registry, so the same rules apply through
the API) and alert rules all use it. Spec strings as operators type them
(docs/cli.md, "Targeting")::

    node-01                  one node (name or id)
    node-01,node-02          several (each must exist)
    'web-*'                  every node whose name matches the glob (* ? [...])
    'web-*,db-1'             globs and names mixed
    role=web                 every node with label role=web
    role=web,env!=staging    AND of terms; k!=v also matches nodes without k
    all  or  *               every node

Names and label terms do not mix in one spec. Pure logic: no I/O.
"""

from __future__ import annotations

import re

from servermgr.common import names

TYPE_CHECKING = False  # not typing's: ctl exec parses targets, typing costs it ~4 ms
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Protocol, TypeVar

    class NodeLike(Protocol):
        @property
        def id(self) -> str: ...
        @property
        def name(self) -> str: ...
        @property
        def labels(self) -> Mapping[str, str]: ...

    N = TypeVar("N", bound=NodeLike)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")  # as long as TARGET_PATTERN allows
_GLOB_CHARS = frozenset("*?[")
MAX_NAMES = 10000
# The target grammar as one pattern, for Core's API schema (``\Z``-anchored,
# no spaces): names or globs in a comma list, or key=value / key!=value terms,
# or * alone (never inside a list). Core refuses what it does not match
# (jobs_api.job_spec). Keep it in step with parse_target when the grammar grows.
_ITEM = r"(?!\*(?:,|\Z))(?:[A-Za-z0-9_.-]{1,253}|[A-Za-z0-9_.!\]-]*[*?\[][A-Za-z0-9_.*?\[\]!-]*)"
_LABEL = r"[A-Za-z0-9_.-]{1,63}!?=[A-Za-z0-9_./-]{0,253}"
TARGET_PATTERN = rf"^(?:\*|{_ITEM}(?:,{_ITEM})*|{_LABEL}(?:,{_LABEL})*)\Z"
TARGET_MAX = 32 * 1024


_NO_LABELS: Mapping[str, str] = {}


class Target:
    """A parsed target: every node, names/ids/globs, or label terms (ANDed).

    Equal when its four parts are. (A plain class: ctl exec parses targets,
    and a dataclass costs it ~6 ms of imports, a NamedTuple ~2 ms.)
    """

    __slots__ = ("all", "names", "labels", "exclude")

    def __init__(
        self,
        all: bool = False,
        names: tuple[str, ...] = (),  # names, ids and globs, in the order given
        labels: Mapping[str, str] = _NO_LABELS,  # key=value terms (never mutated)
        exclude: tuple[tuple[str, str], ...] = (),  # key!=value terms
    ) -> None:
        self.all = all
        self.names = names
        self.labels = labels
        self.exclude = exclude

    def _parts(self) -> tuple[object, ...]:
        return (self.all, self.names, self.labels, self.exclude)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return self._parts() == other._parts()

    __hash__ = None  # type: ignore[assignment]  # labels is a dict

    def __repr__(self) -> str:
        return (
            f"Target(all={self.all!r}, names={self.names!r}, labels={self.labels!r}, "
            f"exclude={self.exclude!r})"
        )

    def describe(self) -> str:
        if self.all:
            return "*"
        if self.labels or self.exclude:
            terms = [f"{k}={v}" for k, v in self.labels.items()]
            return ",".join(terms + [f"{k}!={v}" for k, v in self.exclude])
        return ",".join(self.names)

    @property
    def single(self) -> bool:
        """Whether it names exactly one node (not a glob): ctl then prints its output bare."""
        return len(self.names) == 1 and not is_glob(self.names[0])


def is_glob(item: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(item)


def parse_target(spec: str) -> Target:
    """Parse a target spec; ValueError with a reason when it is malformed."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty target: give a node name, a glob, a comma list, labels or all")
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
        labels, exclude = _label_terms(spec)
        return Target(labels=labels, exclude=exclude)
    for p in parts:
        if not (_GLOB if is_glob(p) else _NAME).fullmatch(p) or p == "*" and len(parts) > 1:
            raise ValueError(f"bad node name {p!r}")
    return Target(names=tuple(dict.fromkeys(parts)))


def parse_labels(spec: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; ValueError with a reason (no ``!=`` here: node labels)."""
    labels, exclude = _label_terms(spec)
    if exclude:
        raise ValueError(f"bad label selector {spec!r}: use key=value")
    return labels


def _label_terms(spec: str) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    labels: dict[str, str] = {}
    exclude: dict[tuple[str, str], None] = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        negate = key.endswith("!")
        key = key[:-1] if negate else key
        if not sep or not names.is_label_key(key) or not names.is_label_value(value):
            raise ValueError(f"bad label selector {part!r}: use key=value or key!=value")
        if negate:
            exclude[(key, value)] = None
            continue
        if labels.get(key, value) != value:
            raise ValueError(f"bad label selector {spec!r}: {key!r} given two different values")
        labels[key] = value
    return labels, tuple(exclude)


class Named:
    """A node as ``select`` needs it, for callers holding plain documents (ctl)."""

    __slots__ = ("id", "name", "labels")

    def __init__(self, id: str, name: str, labels: Mapping[str, str]) -> None:
        self.id = id
        self.name = name
        self.labels = labels


def select(target: Target, nodes: Iterable[N]) -> tuple[list[N], list[str]]:
    """The nodes a target picks (in name order) and the names it asked for that do not exist."""
    pool = sorted(nodes, key=lambda n: n.name)
    if target.all:
        return pool, []
    if target.labels or target.exclude:
        want, avoid = target.labels.items(), target.exclude
        return [
            n
            for n in pool
            if all(n.labels.get(k) == v for k, v in want)
            and not any(n.labels.get(k) == v for k, v in avoid)
        ], []
    # An id always means its own node, even should some name look like it.
    by_key: dict[str, N] = {n.id: n for n in pool}
    for n in pool:
        by_key.setdefault(n.name, n)
    picked: dict[str, N] = {}
    unknown: list[str] = []
    from fnmatch import fnmatchcase

    for name in target.names:
        if is_glob(name):
            for n in pool:
                if fnmatchcase(n.name, name):
                    picked[n.id] = n
            continue
        node = by_key.get(name)
        if node is None:
            unknown.append(name)
        else:
            picked[node.id] = node
    return sorted(picked.values(), key=lambda n: n.name), unknown
