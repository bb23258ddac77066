"""Shell completion for bash, zsh and fish, answered from the command spec.

``servermgr completion SHELL`` prints a small script; the shell calls
``servermgr __complete`` with the command line so far and offers what it
prints, one candidate a line: commands, options, option values (choices),
and node names and labels from Core. Core is asked with a short timeout
(``CORE_TIMEOUT``); its answer is cached in the user's cache directory
(``$XDG_CACHE_HOME/servermgr/completion.json``, mode 0600), which also
answers while Core is unreachable. Install: docs/reference/cli.md
("servermgr completion").
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from servermgr.cli.spec import HELP_FLAGS, Cmd, Opt, Parsed, lead_words

CORE_TIMEOUT = 0.5  # seconds: a completion must never hang the shell
FRESH = 10.0  # seconds a cached answer is used without asking Core again
SHELLS = ("bash", "zsh", "fish")

BASH = r"""# servermgr completion for bash: eval "$(servermgr completion bash)"
_servermgr() {
    local IFS=$'\n'
    COMPREPLY=($("${COMP_WORDS[0]}" __complete --shell bash --cur "${COMP_WORDS[COMP_CWORD]}" \
        --line "${COMP_LINE:0:COMP_POINT}" 2>/dev/null))
}
complete -o default -F _servermgr servermgr
"""

ZSH = r"""#compdef servermgr
# servermgr completion for zsh: eval "$(servermgr completion zsh)"
_servermgr() {
    local -a candidates
    candidates=("${(@f)$("${words[1]}" __complete --shell zsh -- "${(@)words[2,CURRENT]}" \
        2>/dev/null)}")
    if [[ -n "${candidates[1]}" ]]; then
        compadd -Q -- "${candidates[@]}"
    else
        _files
    fi
}
if (( $+functions[compdef] )); then compdef _servermgr servermgr; fi
"""

FISH = r"""# servermgr completion for fish: servermgr completion fish | source
function __servermgr_complete
    set -l tokens (commandline -opc) (commandline -ct)
    servermgr __complete --shell fish -- $tokens[2..-1] 2>/dev/null
end
complete -c servermgr -f -a '(__servermgr_complete)'
"""


def script(a: Parsed) -> int:
    """``servermgr completion SHELL``: print the script for SHELL."""
    from servermgr.common.errors import UsageError

    scripts = {"bash": BASH, "zsh": ZSH, "fish": FISH}
    if a.shell not in scripts:
        raise UsageError(f"no completion for {a.shell!r}: use one of {', '.join(SHELLS)}")
    sys.stdout.write(scripts[a.shell])
    return 0


def complete(argv: list[str], environ: Mapping[str, str] = os.environ) -> int:
    """``servermgr __complete``: print the candidates; never fails (a shell is waiting)."""
    try:
        for line in candidates_for(argv, environ):
            sys.stdout.write(line + "\n")
    except Exception:  # a task boundary: the shell gets no candidates, never a traceback
        return 1
    return 0


def candidates_for(argv: list[str], environ: Mapping[str, str]) -> list[str]:
    """Parse ``__complete``'s own arguments, then the command line it describes."""
    shell, cur, line, words = "", None, None, list(argv)
    while words and words[0] in ("--shell", "--cur", "--line"):
        flag, value, words = words[0], words[1] if len(words) > 1 else "", words[2:]
        shell, cur, line = (
            value if flag == "--shell" else shell,
            value if flag == "--cur" else cur,
            value if flag == "--line" else line,
        )
    if words[:1] == ["--"]:
        words = words[1:]
    if line is not None:
        words = _split(line)[1:]
    from servermgr.cli.commands import ROOT

    token = words[-1] if words else ""
    offered = candidates(ROOT, words, environ)
    found = sorted(dict.fromkeys(c for c in offered if c.startswith(token)))
    if shell == "bash" and cur is not None and token.endswith(cur):
        # bash replaces only its own current word, which stops at '=' or ':'.
        cut = len(token) - len(cur)
        found = [c[cut:] for c in found]
    return found


def _split(line: str) -> list[str]:
    """Words of a partial command line as the shell will pass them; a trailing
    blank starts a new, empty word."""
    import shlex

    try:
        words = shlex.split(line)
    except ValueError:  # an unterminated quote: the word being typed
        words = shlex.split(line + '"') if '"' in line else line.split()
    if not line or line[-1].isspace():
        words.append("")
    return words


def candidates(root: Cmd, words: list[str], environ: Mapping[str, str]) -> list[str]:
    """What may stand in place of ``words[-1]`` (unfiltered), given the words before it."""
    before, token = words[:-1], (words[-1] if words else "")
    cmd, scope, values, positional, literal = _walk(root, before)
    if before and not literal:
        opt = _find(scope, before[-1])
        if opt is not None and opt.takes_value and "=" not in before[-1]:
            return _values(opt, values, environ)
    if token.startswith("--") and "=" in token and not literal:
        flag, _, _ = token.partition("=")
        opt = _find(scope, flag)
        if opt is not None and opt.takes_value:
            return [f"{flag}={v}" for v in _values(opt, values, environ)]
    if token.startswith("-") and not literal:
        return [f for o in scope for f in o.flags if f.startswith("--")] + list(HELP_FLAGS[1:])
    if cmd.children:
        out = [c.name for c in cmd.children if not c.hidden]
        if cmd.default_child:
            default = cmd.child(cmd.default_child)
            if default is not None and default.args:
                out += _kind(default.args[0].complete, values, environ)
        return out
    if cmd.remote:
        picked = any(o.targets and values.get(o.dest) for o in scope)
        if not picked and positional == lead_words(cmd, picked) - 1:
            return _kind("target", values, environ)
        return []  # a name, or the remote command: the shell's own completion (files)
    if positional < len(cmd.args):
        return _kind(cmd.args[positional].complete, values, environ)
    if cmd.args and cmd.args[-1].many:
        return _kind(cmd.args[-1].complete, values, environ)
    return []


def _find(scope: list[Opt], flag: str) -> Opt | None:
    flag = flag.partition("=")[0]
    for opt in scope[::-1]:
        if flag in opt.flags:
            return opt
    return None


def _walk(root: Cmd, words: list[str]) -> tuple[Cmd, list[Opt], dict[str, Any], int, bool]:
    """Follow ``words`` as the parser would, forgiving: (command, option scope, option
    values seen, positional words of the command so far, options ended?)."""
    cmd, scope = root, list(root.options)
    values: dict[str, Any] = {}
    positional, literal, i = 0, False, 0
    while i < len(words):
        word = words[i]
        i += 1
        if literal or not word.startswith("-") or word == "-":
            sub = cmd.child(word) if cmd.children else None
            if sub is None and cmd.children and cmd.default_child:
                sub = cmd.child(cmd.default_child)
                positional = 1
            if sub is None:
                positional += 1
                if cmd.remote and positional > lead_words(cmd, _picked(scope, values)):
                    literal = True
                continue
            scope = [*scope, *sub.options] if cmd is not root else list(sub.options)
            cmd = sub
            continue
        if word == "--":
            literal = True
            continue
        opt = _find(scope, word)
        if opt is None:
            continue
        if opt.takes_value and "=" not in word:
            if i < len(words):
                values[opt.dest] = words[i]
            i += 1
        else:
            values[opt.dest] = word.partition("=")[2] if "=" in word else True
    return cmd, scope, values, positional, literal


def _picked(scope: list[Opt], values: Mapping[str, Any]) -> bool:
    return any(o.targets and values.get(o.dest) for o in scope)


def _values(opt: Opt, values: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    if opt.choices:
        return list(opt.choices)
    return _kind(opt.complete, values, environ)


def _kind(kind: str | None, values: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    if kind == "shell":
        return list(SHELLS)
    if kind not in ("node", "target", "label"):
        return []  # files, directories, free text: the shell's own completion
    fleet = fleet_names(values, environ)
    if kind == "node":
        return fleet["names"]
    if kind == "label":
        return fleet["labels"]
    return [*fleet["names"], *fleet["labels"], "all"]


# --- node names and labels from Core, cached -------------------------------------


def cache_file(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "/tmp")) / ".cache")
    return Path(base) / "servermgr" / "completion.json"


def fleet_names(values: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Node names and ``key=value`` labels of the Core the command line names:
    fresh from the cache, else from Core (``CORE_TIMEOUT``), else whatever the
    cache holds (Core down), else nothing."""
    try:
        base, key, trust = _core(values, environ)
    except Exception:  # no Core configured, no key: nothing to offer
        return {"names": [], "labels": []}
    path = cache_file(environ)
    cached = _read_cache(path).get(base)
    if cached and time.time() - cached.get("ts", 0) < FRESH:
        return {"names": cached["names"], "labels": cached["labels"]}
    try:
        from servermgr.ctl.client import Client

        http = Client(base, key, timeout=CORE_TIMEOUT, trust=trust)
        try:
            docs = http.nodes()
        finally:
            http.close()
    except Exception:  # Core unreachable, refused, slow: the cache (if any) answers
        return (
            {"names": cached["names"], "labels": cached["labels"]}
            if cached
            else {
                "names": [],
                "labels": [],
            }
        )
    names = sorted(str(d["name"]) for d in docs)
    labels = sorted({f"{k}={v}" for d in docs for k, v in (d.get("labels") or {}).items()})
    _write_cache(path, base, {"ts": time.time(), "names": names, "labels": labels})
    return {"names": names, "labels": labels}


def _core(values: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, str, Any]:
    from servermgr.ctl.client import resolve

    def config() -> Any:
        from servermgr.common.config import find_config, load_config

        cwd = Path.cwd()
        path = values.get("config")
        return load_config(find_config(Path(path) if path else None, environ, cwd), cwd=cwd)

    return resolve(
        values.get("core") or environ.get("SERVERMGR_CORE") or None,
        values.get("key") or environ.get("SERVERMGR_KEY") or None,
        config,
        fingerprint=values.get("fingerprint") or environ.get("SERVERMGR_FINGERPRINT") or None,
        ca_file=values.get("ca_file") or environ.get("SERVERMGR_CA_FILE") or None,
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_cache(path: Path, base: str, entry: dict[str, Any]) -> None:
    """Keep ``entry`` for ``base`` (0600, written whole and renamed into place)."""
    doc = _read_cache(path)
    doc[base] = entry
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next completion asks Core again
