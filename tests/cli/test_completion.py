"""What completion offers, from the spec and from the cached answer of a Core."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from servermgr.cli import completion

CORE = "http://127.0.0.1:1"  # nothing listens: only the cache can answer


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    env = {"XDG_CACHE_HOME": str(tmp_path), "SERVERMGR_CORE": CORE, "SERVERMGR_KEY": "k"}
    path = completion.cache_file(env)
    path.parent.mkdir(parents=True)
    entry = {"ts": time.time(), "names": ["db-1", "web-1", "web-2"], "labels": ["role=web"]}
    path.write_text(json.dumps({CORE: entry}))
    return env


def offered(line: str, environ: dict[str, str], shell: str = "zsh") -> list[str]:
    return completion.candidates_for(["--shell", shell, "--", *line.split(" ")], environ)


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("", ["completion", "core", "ctl", "key", "node", "up"]),
        ("ctl no", ["node", "nodes"]),
        ("ctl exec we", ["web-1", "web-2"]),
        ("ctl exec ro", ["role=web"]),
        ("ctl exec -l ", ["role=web"]),
        ("ctl exec --all we", []),  # with --all the first word is the command
        ("ctl exec web-1 we", []),  # the remote command's words are the shell's
        ("ctl node ", ["db-1", "remove", "rename", "show", "upgrade", "web-1", "web-2"]),
        ("ctl node remove d", ["db-1"]),
        ("ctl metrics web-1 --step ", ["1h", "1m", "auto", "raw"]),
        ("ctl metrics web-1 --step=r", ["--step=raw"]),
        ("ctl jobs --node d", ["db-1"]),
        ("ctl exec --ti", ["--timeout"]),
        ("ctl --core " + CORE + " nodes --js", ["--json"]),
        ("completion ", ["bash", "fish", "zsh"]),
        ("key create --role ", ["enroll", "operate", "read"]),
    ],
)
def test_candidates(line: str, want: list[str], environ: dict[str, str]) -> None:
    assert offered(line, environ) == want


def test_bash_gets_only_the_part_after_a_word_break(environ: dict[str, str]) -> None:
    got = completion.candidates_for(
        ["--shell", "bash", "--cur", "w", "--line", "servermgr ctl exec role=w"], environ
    )
    assert got == ["web"]


def test_no_core_and_no_cache_offers_no_names(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), "SERVERMGR_CORE": CORE, "SERVERMGR_KEY": "k"}
    assert offered("ctl exec we", env) == []
    assert offered("ctl ex", env) == ["exec"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_has_a_script_calling_back(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from servermgr.cli import spec
    from servermgr.cli.commands import ROOT

    code = completion.script(spec.parse(ROOT, ["completion", shell], {}))
    assert code == 0
    assert "__complete --shell " + shell in capsys.readouterr().out
