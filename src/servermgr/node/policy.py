"""The node's own rules for remote execution: may this job run here?

``check`` applies the ``[exec]`` section of the node's config to a
``job.run`` message; ``validate_unit`` applies systemd's unit-name rules to a
service action; ``check_file`` applies ``[files]`` to a path a transfer
reads or writes; ``check_shell`` says whether ``ctl shell`` may open a shell.
Core cannot override any: a refusal is final.

Pure logic: no trio, no I/O.
"""

from __future__ import annotations

import functools
import posixpath
import re
import shlex
from collections.abc import Mapping
from fnmatch import fnmatchcase

from servermgr.common import proto
from servermgr.common.config import ExecConfig, FilesConfig

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
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\@-]+\Z")

# Characters that make the shell do more than run one command. A wildcard in
# an allow pattern never stands for one of them (see ``_why_not``).
SHELL_SYNTAX = frozenset(";&|`$<>()\n\r")
_SHELL_SPLIT = re.compile("([" + re.escape("".join(sorted(SHELL_SYNTAX))) + "])")
# What a wildcard may stand for: one plain word of these characters.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")
_WILDCARD = re.compile(r"[*?\[]")

# Variables that make a program load or run other code than the one asked for
# (dynamic loader, interpreters, shells, glibc, pagers and editors, TLS
# engines, git hooks). A job may not set them unless [exec] allow_env says so.
LOADER_ENV = (
    "LD_*",
    "DYLD_*",
    "PATH",
    "PYTHON*",
    "PERL*",
    "RUBY*",
    "GEM_*",
    "NODE_*",
    "LUA_*",
    "TCLLIBPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "BASH_ENV",
    "BASH_FUNC_*",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS4",
    "CDPATH",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    "HOME",
    "XDG_*",
    "OPENSSL_*",
    "GIT_*",
    "PAGER",
    "*_PAGER",
    "LESS*",
    "EDITOR",
    "VISUAL",
    "SYSTEMD_*",
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CWD_MAX = 4096
_SHOW = 200  # longest command quoted in a reason


def check(job: proto.JobRun, policy: ExecConfig) -> str | None:
    """Why ``job`` may not run under ``policy``, or None when it may.

    The whole job is judged: the command or service action, its ``env``,
    its ``cwd`` and its timeout.

    A job whose ``timeout`` is over ``[exec] max_timeout`` is refused rather
    than run with a shorter timeout: a command cut short without warning
    looks like a failure of the command, while a refusal says what to change.

    ``env`` names must be POSIX names; loader and interpreter variables
    (``LOADER_ENV``: ``LD_PRELOAD``, ``PATH``, ``PYTHONPATH``, ...) are refused
    unless ``[exec] allow_env`` lists them. ``cwd`` must be an absolute,
    normalised path; with ``[exec] allow_cwd`` (or an allow list) it must
    match one of ``allow_cwd``.

    With a non-empty ``[exec] allow`` list, a shell command must match one
    pattern word for word (see ``_why_not``), and a service action must match
    as ``"systemctl ACTION UNIT"``.
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
    problem = check_env(job.env, policy.allow_env) or check_cwd(job.cwd, policy)
    if problem is not None:
        return problem
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
    if "\0" in subject:
        return f"{what} contains a NUL byte"
    if policy.allow:
        return _allowed(subject, what, policy.allow)
    return None


def check_env(env: Mapping[str, str], allow_env: tuple[str, ...]) -> str | None:
    """Why a job may not set ``env``, or None when it may."""
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            return (
                f"environment variable name {_quote(name)} is not a valid name "
                "(letters, digits and _, not starting with a digit)"
            )
        if "\0" in value:
            return f"environment variable {name} contains a NUL byte"
        if any(fnmatchcase(name, p) for p in allow_env):
            continue
        denied = next((p for p in LOADER_ENV if fnmatchcase(name, p)), None)
        if denied is not None:
            return (
                f"environment variable {name} may not be set by a job on this node: "
                f"loader and interpreter variables ({denied!r}) are refused unless "
                "[exec] allow_env lists them"
            )
    return None


def check_cwd(cwd: str | None, policy: ExecConfig) -> str | None:
    """Why a job may not run in ``cwd``, or None when it may (None: the agent's own)."""
    if cwd is None:
        return None
    shown = _quote(cwd)
    if "\0" in cwd or len(cwd) > CWD_MAX:
        return f"working directory {shown} is not a usable path"
    if not cwd.startswith("/") or cwd != posixpath.normpath(cwd) or cwd.startswith("//"):
        return (
            f"working directory {shown} must be an absolute path without '.', '..' or repeated '/'"
        )
    if policy.allow_cwd:
        if any(_path_matches(p, cwd) for p in policy.allow_cwd):
            return None
        listed = ", ".join(repr(p) for p in policy.allow_cwd[:10])
        return f"working directory {shown} matches no pattern of [exec] allow_cwd ({listed})"
    if policy.allow:
        return (
            f"working directory {shown} is not allowed: this node has an [exec] allow "
            "list, so a job may set its working directory only where [exec] allow_cwd says"
        )
    return None


SHELL_OFF = "interactive shells are off on this node ([exec] shell = false, the default)"


def check_shell(policy: ExecConfig) -> str | None:
    """Why ``ctl shell`` may not open a shell here, or None when it may."""
    if not policy.enabled:
        return DISABLED
    if not policy.shell:
        return SHELL_OFF
    return None


def check_upgrade(policy: ExecConfig) -> str | None:
    """Why Core may not replace this agent (``ctl node upgrade``), or None when it may.

    ``[exec] allow_upgrade`` decides; when not given: allowed if the node
    runs any command Core sends (such a node gives Core its code anyway),
    refused with an ``allow`` list or with execution disabled, since a new
    agent could run anything.
    """
    if policy.allow_upgrade is not None:
        return None if policy.allow_upgrade else "upgrades are off ([exec] allow_upgrade = false)"
    if not policy.enabled or policy.allow:
        return (
            "upgrades from Core are off on this node: it restricts what runs ([exec] "
            "enabled = false or an allow list); set [exec] allow_upgrade = true to allow them"
        )
    return None


def file_patterns(access: str, files: FilesConfig, policy: ExecConfig) -> tuple[str, ...]:
    """The globs a transfer's path must match to ``access`` ("read" or "write") it.

    What ``[files] read`` / ``write`` say; when a list is not given: every
    path (``/**``) if this node runs any command Core sends (``[exec]``
    enabled without an ``allow`` list: such a node would ``cat`` or ``tee``
    any file the agent's user may), and no path otherwise.
    """
    given = files.read if access == "read" else files.write
    if given is not None:
        return given
    return ("/**",) if policy.enabled and not policy.allow else ()


def check_file(access: str, path: str, files: FilesConfig, policy: ExecConfig) -> str | None:
    """Why a transfer may not ``access`` ("read" or "write") ``path``, or None when it may.

    The path must be absolute and normalised (no ``.``, ``..``, ``//``) and
    match one glob of ``file_patterns`` (``*`` within one path segment,
    ``**`` across ``/``). The agent checks again on the path with every
    symbolic link resolved (``node/files.py``).
    """
    shown = _quote(path)
    if "\0" in path or len(path) > CWD_MAX or not path:
        return f"path {shown} is not a usable path"
    if not path.startswith("/") or path != posixpath.normpath(path) or path.startswith("//"):
        return f"path {shown} must be absolute, without '.', '..' or repeated '/'"
    if path == "/":
        return "path '/' is a directory, not a file"
    patterns = file_patterns(access, files, policy)
    if not patterns:
        why = (
            "it has an [exec] allow list"
            if policy.enabled
            else "remote execution is disabled ([exec] enabled = false)"
        )
        return (
            f"this node allows no file to be {'read' if access == 'read' else 'written'} "
            f"by a transfer: {why}, so only [files] {access} lists paths (none given)"
        )
    if any(_path_matches(p, path) for p in patterns):
        return None
    listed = ", ".join(repr(p) for p in patterns[:10])
    return f"path {shown} matches no pattern of this node's [files] {access} ({listed})"


def _path_matches(pattern: str, path: str) -> bool:
    return _word_regex(pattern).fullmatch(path) is not None


def _allowed(subject: str, what: str, patterns: tuple[str, ...]) -> str | None:
    near_miss: tuple[str, str] | None = None
    for pattern in patterns:
        why = _why_not(pattern, subject)
        if why is None:
            return None
        if near_miss is None and fnmatchcase(subject, pattern):
            near_miss = (pattern, why)
    shown = _quote(subject)
    if near_miss is not None:
        pattern, why = near_miss
        return f"{what} {shown} matches [exec] allow pattern {pattern!r} only if {why}"
    listed = ", ".join(repr(p) for p in patterns[:10])
    more = f" and {len(patterns) - 10} more" if len(patterns) > 10 else ""
    return f"{what} {shown} matches no pattern of this node's [exec] allow list ({listed}{more})"


def _why_not(pattern: str, subject: str) -> str | None:
    """Why ``pattern`` does not admit ``subject`` (None: it does).

    Both are cut at shell-syntax characters, which must be equal, and each
    plain piece is split into words as the shell would (quotes removed). The
    words pair up one to one: a word of the pattern without wildcards must be
    equal; a wildcard word (``*`` and ``?`` within one path segment, ``**``
    across ``/``, ``[...]``) matches one plain word of letters, digits and
    ``_@%+=:,./-``, never a ``..`` segment, never an option (``-x``) unless
    the pattern word starts with ``-`` itself. So ``cat /var/log/*`` admits
    ``cat /var/log/syslog`` but not ``cat /var/log/../../etc/shadow``, nor
    ``cat /var/log/syslog /etc/shadow``.
    """
    got = _SHELL_SPLIT.split(subject)
    want = _SHELL_SPLIT.split(pattern)
    syntax = "".join(sorted({c for c in subject if c in SHELL_SYNTAX} - set(pattern)))
    if syntax or got[1::2] != want[1::2]:
        return f"a wildcard stands for shell syntax {syntax or ''.join(got[1::2])!r}"
    for text, pat in zip(got[::2], want[::2], strict=True):
        try:
            words, pat_words = shlex.split(text), shlex.split(pat)
        except ValueError:
            return "its quotes are balanced"
        if len(words) != len(pat_words):
            return (
                f"a wildcard adds words ({len(words)} where the pattern has "
                f"{len(pat_words)}): a wildcard stands for one word"
            )
        for word, pat_word in zip(words, pat_words, strict=True):
            why = _word_why_not(pat_word, word)
            if why is not None:
                return why
    return None


def _word_why_not(pattern: str, word: str) -> str | None:
    if not _WILDCARD.search(pattern):
        return None if word == pattern else f"{word[:40]!r} were {pattern!r}"
    if not _PLAIN_WORD.fullmatch(word):
        return (
            f"a wildcard stands for {word[:40]!r}: wildcards stand only for letters, "
            "digits and _@%+=:,./-"
        )
    if ".." in word.split("/"):
        return f"a wildcard stands for a '..' path segment in {word[:40]!r}"
    if word.startswith("-") and not pattern.startswith("-"):
        return f"a wildcard stands for the option {word[:40]!r}; spell options out"
    if _word_regex(pattern).fullmatch(word) is None:
        return f"{word[:40]!r} matched {pattern!r}"
    return None


@functools.lru_cache(maxsize=256)
def _word_regex(pattern: str) -> re.Pattern[str]:
    """``**`` any text, ``*`` and ``?`` within one path segment, ``[...]`` a class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


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
