"""The node's own rules for remote execution: may this job run here?

``check`` applies the ``[exec]`` section of the node's config to a
``job.run`` message; ``validate_unit`` applies systemd's unit-name rules to a
service action. Core cannot override either: a refusal is final for the job.

Pure logic: no trio, no I/O.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from servermgr.common import proto
from servermgr.common.config import ExecConfig

DISABLED = "remote execution is disabled on this node ([exec] enabled = false)"

UNIT_NAME_MAX = 255
UNIT_SUFFIXES = frozenset(
    {
        "service",
        "socket",
        "target",
        "timer",
        "mount",
        "path",
        "slice",
        "scope",
        "device",
        "swap",
        "automount",
    }
)
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")

# Characters that make the shell do more than run one command. A wildcard in
# an allow pattern never stands for one of them (see ``_admits``).
SHELL_SYNTAX = frozenset(";&|`$<>()\n\r")
_SHELL_SPLIT = re.compile("([" + re.escape("".join(sorted(SHELL_SYNTAX))) + "])")

_SHOW = 200  # longest command quoted in a reason


def check(job: proto.JobRun, policy: ExecConfig) -> str | None:
    """Why ``job`` may not run under ``policy``, or None when it may.

    A job whose ``timeout`` is over ``[exec] max_timeout`` is refused rather
    than run with a shorter timeout: a command cut short without warning
    looks like a failure of the command, while a refusal says what to change.

    With a non-empty ``[exec] allow`` list, a shell command must match one
    pattern as a whole (``fnmatch.fnmatchcase``), and a service action must
    match as ``"systemctl ACTION UNIT"``. A wildcard never stands for shell
    syntax (``; & | ` $ < > ( )`` or a newline): ``echo *`` admits
    ``echo hello`` but not ``echo hi; rm -rf /``. A pattern that wants such a
    character spells it out, e.g. ``backup.sh * > /var/log/backup.log``.
    """
    if not policy.enabled:
        return DISABLED
    if (job.command is None) == (job.service is None):
        given = "both" if job.command is not None else "neither"
        return f"a job needs exactly one of a shell command or a service action, not {given}"
    if policy.max_timeout is not None and job.timeout > policy.max_timeout:
        return (
            f"timeout of {job.timeout:g} s is over this node's limit of "
            f"{policy.max_timeout:g} s ([exec] max_timeout); ask for at most "
            f"{policy.max_timeout:g} s"
        )
    if job.service is not None:
        bad_unit = validate_unit(job.service.unit)
        if bad_unit is not None:
            return bad_unit
        subject = f"systemctl {job.service.action} {job.service.unit}"
        what = "service action"
    else:
        assert job.command is not None
        subject = job.command
        what = "command"
    if policy.allow:
        return _allowed(subject, what, policy.allow)
    return None


def _allowed(subject: str, what: str, patterns: tuple[str, ...]) -> str | None:
    near_miss: str | None = None
    for pattern in patterns:
        if not fnmatchcase(subject, pattern):
            continue
        if _admits(pattern, subject):
            return None
        near_miss = near_miss or pattern
    shown = _quote(subject)
    if near_miss is not None:
        syntax = "".join(sorted({c for c in subject if c in SHELL_SYNTAX} - set(near_miss)))
        return (
            f"{what} {shown} matches [exec] allow pattern {near_miss!r} only through a "
            f"wildcard standing for shell syntax {syntax!r}; a pattern must spell such "
            "characters out"
        )
    listed = ", ".join(repr(p) for p in patterns[:10])
    more = f" and {len(patterns) - 10} more" if len(patterns) > 10 else ""
    return f"{what} {shown} matches no pattern of this node's [exec] allow list ({listed}{more})"


def _admits(pattern: str, subject: str) -> bool:
    """True if ``pattern`` matches ``subject`` with shell syntax matched literally.

    Both are cut at shell-syntax characters; the pieces must pair up, the
    syntax characters must be equal and each plain piece must match its
    pattern piece. So a wildcard only ever stands for plain text.
    """
    got = _SHELL_SPLIT.split(subject)
    want = _SHELL_SPLIT.split(pattern)
    if len(got) != len(want):
        return False
    for i, (text, pat) in enumerate(zip(got, want, strict=True)):
        if i % 2:
            if text != pat:
                return False
        elif not fnmatchcase(text, pat):
            return False
    return True


def validate_unit(name: str) -> str | None:
    """Why ``name`` is not a usable systemd unit name, or None when it is.

    Follows systemd.unit(5): at most 255 characters of ``A-Z a-z 0-9 : _ . \\
    @ -``, not starting with ``-`` or ``.``, at most one ``@`` (templates and
    instances such as ``getty@tty1.service``). A name whose last dotted part
    is not a unit type (``nginx``, ``php8.2-fpm``) gets ``.service``
    appended, as ``systemctl`` does, and must still fit in 255 characters.
    """
    shown = _quote(name)
    if not name:
        return "unit name is empty"
    if not _UNIT_CHARS.match(name):
        bad = "".join(sorted({c for c in name if not _UNIT_CHARS.match(c)}))
        return (
            f"unit name {shown} has characters systemd does not allow ({bad!r}); "
            "only letters, digits and : _ . \\ @ - are valid"
        )
    if name[0] in "-.":
        return f"unit name {shown} must not start with {name[0]!r}"
    if name.endswith("."):
        return f"unit name {shown} must not end with '.'"
    full = name if name.rsplit(".", 1)[-1] in UNIT_SUFFIXES and "." in name else name + ".service"
    if len(full) > UNIT_NAME_MAX:
        return f"unit name {shown} is longer than {UNIT_NAME_MAX} characters"
    stem = full.rsplit(".", 1)[0]
    if stem.count("@") > 1:
        return f"unit name {shown} has more than one '@'"
    if stem.startswith("@"):
        return f"unit name {shown} has no template name before '@'"
    return None


def _quote(text: str) -> str:
    if len(text) > _SHOW:
        return repr(text[:_SHOW]) + f"... ({len(text)} characters)"
    return repr(text)
