"""Shell completion as a user gets it: bash with the script sourced, against a real Core."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.fleet import Fleet, cap, start_core
from tests.support import SERVERMGR, free_port

pytestmark = pytest.mark.e2e


def bash_complete(fleet: Fleet, script: Path, line: str, env: dict[str, str]) -> list[str]:
    """COMPREPLY after pressing TAB at the end of ``line`` (bash splits words as it does)."""
    program = f"""
source {script}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
read -r -a COMP_WORDS <<< "$COMP_LINE"
COMP_CWORD=${{#COMP_WORDS[@]}}
[[ "$COMP_LINE" == *" " ]] || COMP_CWORD=$((COMP_CWORD - 1))
{_split_like_bash()}
_servermgr
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    path = f"{Path(SERVERMGR[0]).parent}:{os.environ['PATH']}"
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        env={**fleet.env, **env, "PATH": path},
        cwd=fleet.tmp,
        capture_output=True,
        text=True,
        timeout=min(fleet.left(), 10),
    )
    assert res.returncode == 0, res.stderr
    return [w for w in res.stdout.splitlines() if w]


def _split_like_bash() -> str:
    """bash's own word split breaks words at '=' (COMP_WORDBREAKS): do the same."""
    return r"""
words=()
for w in "${COMP_WORDS[@]}"; do
    while [[ "$w" == *=* ]]; do words+=("${w%%=*}" "="); w="${w#*=}"; done
    [[ -n "$w" ]] && words+=("$w")
done
[[ "$COMP_LINE" == *" " ]] && words+=("")
COMP_WORDS=("${words[@]}")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
"""


def _shell(fleet: Fleet, argv: list[str], env: dict[str, str]) -> list[str]:
    path = f"{Path(SERVERMGR[0]).parent}:{os.environ['PATH']}"
    res = subprocess.run(
        argv,
        env={**fleet.env, **env, "PATH": path, "HOME": str(fleet.tmp)},
        cwd=fleet.tmp,
        capture_output=True,
        text=True,
        timeout=min(fleet.left(), 10),
    )
    assert res.returncode == 0, res.stderr
    return [w for w in res.stdout.splitlines() if w]


def zsh_complete(fleet: Fleet, line: str, env: dict[str, str]) -> list[str]:
    """What the zsh function hands to compadd for TAB at the end of ``line``."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (.ci/run installs it)")
    words = line.split(" ")
    program = f"""
compdef() {{ : }}
eval "$(servermgr completion zsh)"
compadd() {{ shift 2; print -l -- "$@" }}
_files() {{ print FILES }}
words=({" ".join(repr(w) for w in words)})
CURRENT={len(words)}
_servermgr
"""
    return _shell(fleet, ["zsh", "-f", "-c", program], env)


def fish_complete(fleet: Fleet, line: str, env: dict[str, str]) -> list[str]:
    """``complete -C``: fish's own answer for TAB at the end of ``line``."""
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (.ci/run installs it)")
    program = f"servermgr completion fish | source; complete -C {line!r}"
    return [w.split("\t")[0] for w in _shell(fleet, ["fish", "--no-config", "-c", program], env)]


@cap(60)
def test_shells_complete_commands_options_and_node_names_from_core(fleet: Fleet) -> None:
    if len(SERVERMGR) != 1:
        pytest.skip("needs the servermgr console script on PATH (bash calls it by name)")
    port = free_port()
    _, key = start_core(fleet, port)
    url = f"http://127.0.0.1:{port}"
    for name, role in (("node-01", "web"), ("node-02", "db"), ("other", "web")):
        resp = httpx.post(
            f"{url}/api/v1/register",
            json={"hostname": name, "labels": {"role": role}},
            headers={"Authorization": f"Bearer {key}"},
            trust_env=False,
        )
        assert resp.status_code == 201, resp.text
    script = fleet.tmp / "servermgr.bash"
    made = fleet.run("completion", "bash")
    assert made.returncode == 0, made.stderr
    script.write_text(made.stdout)
    cache = fleet.tmp / "cache"
    env = {"SERVERMGR_CORE": url, "SERVERMGR_KEY": key, "XDG_CACHE_HOME": str(cache)}

    assert bash_complete(fleet, script, "servermgr ctl exec no", env) == ["node-01", "node-02"]
    cached = cache / "servermgr" / "completion.json"
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert bash_complete(fleet, script, "servermgr ct", env) == ["ctl"]
    assert bash_complete(fleet, script, "servermgr ctl jobs --st", env) == ["--state"]
    assert bash_complete(fleet, script, "servermgr ctl audit --action sh", env) == ["shell"]
    # A label: bash replaces only the part after '='.
    assert bash_complete(fleet, script, "servermgr ctl exec role=w", env) == ["web"]
    assert bash_complete(fleet, script, "servermgr ctl exec -t 5s ot", env) == ["other"]
    # After the target comes the remote command: no node names there.
    assert bash_complete(fleet, script, "servermgr ctl exec node-01 no", env) == []

    # zsh and fish ask the same way; each gets whole words (no '=' splitting).
    assert zsh_complete(fleet, "servermgr ctl exec no", env) == ["node-01", "node-02"]
    assert zsh_complete(fleet, "servermgr ctl exec role=w", env) == ["role=web"]
    assert fish_complete(fleet, "servermgr ctl exec no", env) == ["node-01", "node-02"]
    assert fish_complete(fleet, "servermgr ctl jobs --st", env) == ["--state"]

    # The same targets list nodes (Core resolves them as it does a job's).
    for target, want in (("node-*", ["node-01", "node-02"]), ("role=web", ["node-01", "other"])):
        listed = fleet.ctl_items("nodes", target, env=env)
        assert [n["name"] for n in listed] == want, target

    # Core unreachable and nothing cached for it: no candidates, and quickly.
    down = {**env, "SERVERMGR_CORE": f"http://127.0.0.1:{free_port()}"}
    assert bash_complete(fleet, script, "servermgr ctl exec no", down) == []
