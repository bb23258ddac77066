"""The node name rule (and the label rule): one home for what a node may be called.

A name is what operators type to target a node, so it must never read as
anything else a target can be: not ``all`` or ``*``, not a node id
(``n`` + 16 hex digits, which would let a node collect another node's jobs),
not a selector (commas, ``=``, ``!``, glob characters), and nothing a
terminal or a log line would interpret. Checked with ``fullmatch``: a
trailing newline is not part of a valid name.

Used by config parsing (``[node] hostname``), registration and the node's
``hello``. Pure logic.
"""

from __future__ import annotations

import re

MAX_LENGTH = 253
# Letters and digits at both ends; '.', '-', '_' inside. This excludes every
# selector and glob character (, = ! * ? [ ] space) and every control byte.
# Patterns as text, compiled at first use (re's cache): ctl exec never needs them.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?"
_NODE_ID = r"(?i:n[0-9a-f]{16})"
_LABEL_KEY = r"[A-Za-z0-9_.-]{1,63}"
_LABEL_VALUE = r"[A-Za-z0-9_./-]{0,253}"
RESERVED = frozenset({"all"})
# The whole rule as one pattern, for the API schema: what ``name_problem``
# accepts, exactly (a test checks the two agree).
NAME_PATTERN = (
    r"^(?!(?:[Aa][Ll][Ll]|[Nn][0-9A-Fa-f]{16})\Z)"
    r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?\Z"
)
RULE = (
    "letters, digits, '.', '-' and '_', starting and ending with a letter or digit, "
    f"at most {MAX_LENGTH} characters"
)


# Environment variable names a job may set: POSIX names (no '=', no NUL, not
# starting with a digit). Systemd unit names a service action may name:
# systemd.unit(5)'s characters, no '/' (so no path and no '..'), not starting
# with '-' or '.', not ending with '.', at most one '@', short enough that
# '.service' still fits in 255. Both are checked by Core's API schema
# (JSON Schema patterns, so ``\Z``-anchored) and again by the node's policy.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\Z"
ENV_NAME_MAX = 128
_UNIT_PART = r"[A-Za-z0-9:_\\](?:[A-Za-z0-9:_.\\-]*[A-Za-z0-9:_\\-])?"
UNIT_PATTERN = rf"^{_UNIT_PART}(?:@(?:[A-Za-z0-9:_.\\-]*[A-Za-z0-9:_\\-])?)?\Z"
UNIT_MAX = 255 - len(".service")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a node, or None when it can."""
    if not re.fullmatch(_NAME, name):
        return f"a node name uses {RULE}"
    if name.lower() in RESERVED:
        return "this word is reserved (it targets every node)"
    if re.fullmatch(_NODE_ID, name):
        return "names shaped like a node id (n + 16 hex digits) are reserved"
    return None


def is_name(name: str) -> bool:
    return name_problem(name) is None


def is_label_key(key: str) -> bool:
    """Label names: letters, digits, '.', '-', '_', 1 to 63 characters."""
    return re.fullmatch(_LABEL_KEY, key) is not None


def is_label_value(value: str) -> bool:
    """Label values: letters, digits, '.', '-', '_', '/', at most 253 characters."""
    return re.fullmatch(_LABEL_VALUE, value) is not None
