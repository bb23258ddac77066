"""``servermgr up``: Core plus a local node in one process, for a first look.

The local node enrols like any other: with a short-lived enroll token made
for it (never the core key), and only while it has no identity yet.

The banner prints the web page's address and a token of role operate to sign
in with (``up-web``): made afresh at each start, the previous one revoked, so
the page never needs the core key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from servermgr.common import addr
from servermgr.common.config import Config, NodeConfig
from servermgr.common.run import stop_on_signals
from servermgr.core import app as core_app
from servermgr.core import tokens
from servermgr.node import identity
from servermgr.node.agent import Agent

log = logging.getLogger("servermgr.up")


LOCAL_TOKEN = "up-local-node"
LOCAL_TOKEN_LIFE = 3600.0
WEB_TOKEN = "up-web"


def node_config(
    config: Config, core_url: str, token: str | None, fingerprint: str | None = None
) -> Config:
    """The local node's config: reaches this Core (pinned to its certificate when it
    serves TLS), keeps its identity in data_dir."""
    node = config.node
    return dataclasses.replace(
        config,
        node=NodeConfig(
            core_addr=node.core_addr or (addr.ws_url(core_url, ""),),
            register_token=token,
            hostname=node.hostname,
            data_dir=config.storage.data_dir / "local-node",
            labels=dict(node.labels) or {"role": "core"},
            tls_fingerprint=node.tls_fingerprint or (None if node.ca_file else fingerprint),
            ca_file=node.ca_file,
        ),
    )


async def run(
    config: Config, *, announce: Callable[[str], None], overridden: bool = False
) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, stop)
        core = await nursery.start(core_app.serve, config, stop)
        pin = core.tls.fingerprint if core.tls else None
        url = addr.listen_to_url(config.server.listen_host, core.port, tls=pin is not None)
        token = None
        if identity.load(config.storage.data_dir / "local-node") is None:
            token = await _enroll_token(core)
        agent = Agent(node_config(config, url, token, pin))
        node_scope = trio.CancelScope()

        async def run_node() -> None:
            with node_scope:
                await agent.run()

        nursery.start_soon(run_node)
        web = await _fresh_token(core, WEB_TOKEN, tokens.Role.OPERATE, None)
        banner = _banner(url, core.key.path, agent.hostname, prog=_prog(), overridden=overridden)
        announce(banner + _web_note(url, web) + _tls_note(pin))
        await stop.wait()
        node_scope.cancel()


async def _enroll_token(core: core_app.Core) -> str:
    """A fresh enroll token for the local node (an older one of the same name is revoked)."""
    return await _fresh_token(core, LOCAL_TOKEN, tokens.Role.ENROLL, LOCAL_TOKEN_LIFE)


async def _fresh_token(
    core: core_app.Core, name: str, role: tokens.Role, life: float | None
) -> str:
    """A new token ``name`` (an older one of the same name is revoked)."""
    storage = core.db.storage
    await core.db.write(tokens.revoke, storage, name)
    now = time.time()
    _, secret = await core.db.write(
        tokens.create,
        storage,
        name,
        role,
        now=now,
        expires=None if life is None else now + life,
    )
    await core.auth.refresh()
    return secret


def _web_note(url: str, token: str) -> str:
    return (
        f"Web page: open {url}/ and sign in with this token (role operate, made for this\n"
        f"run; the next `up` replaces it):\n  {token}\n"
    )


def _prog() -> str:
    """How the user invoked us, so the printed commands can be pasted as they are."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):
        return "python -m servermgr"
    if "/" in argv0:
        rel = os.path.relpath(argv0)
        return rel if rel.startswith(".") or rel.startswith("/") else "./" + rel
    return "servermgr"


def _banner(
    url: str, key_path: Path, hostname: str, *, prog: str, overridden: bool = False
) -> str:
    ws = addr.ws_url(url, "")
    if overridden:  # --listen / --data-dir: the config here does not say where Core is
        how = (
            f"The core key (admin) is in {key_path}. ctl reads the config, not --listen or\n"
            f"--data-dir: first export SERVERMGR_CORE={url} "
            f"SERVERMGR_KEY=$({prog} key show --data-dir {key_path.parent} 2>/dev/null "
            "| head -1)\n\n"
        )
    else:
        how = f"The core key (admin) is in {key_path}; ctl in this directory reads it there.\n\n"
    return (
        f"\nservermgr is up: Core on {url}, a local node named {hostname!r}.\n"
        f"{how}"
        "Try, in another terminal in this directory:\n"
        f"  {prog} ctl nodes\n"
        f"  {prog} ctl node {hostname}\n"
        f"  {prog} ctl metrics {hostname} --since 10m\n\n"
        "Add a node on another host (listen on a reachable address first: --listen): make\n"
        f"it an enroll token with `{prog} key create --role enroll --name NAME`, copy\n"
        f"{_zipapp()} there and run `servermgr node run --config node.toml` with\n"
        f'  [node] core_addr = "{ws}" and register_token = that token.\n'
        f"ctl from another host: `{prog} key create --role operate --name NAME`, then\n"
        f"  export SERVERMGR_CORE={url} SERVERMGR_KEY=<that token>\n"
        "Stop with Ctrl-C.\n"
    )


def _zipapp() -> str:
    """The zipapp to copy to another host: the built one, or how to build it."""
    built = Path("dist/servermgr.pyz")
    if built.is_file():
        return str(built)
    return "the zipapp (build it: ./build_zipapp.sh in a checkout, makes dist/servermgr.pyz)"


def _tls_note(pin: str | None) -> str:
    if pin is None:
        return ""
    return (
        f"TLS: nodes elsewhere add tls_fingerprint = \"{pin}\";\n"
        f"ctl elsewhere: export SERVERMGR_FINGERPRINT={pin}\n"
    )


def main(config: Config, *, overridden: bool = False) -> None:
    """Run until Ctrl-C; ``overridden``: --listen/--data-dir changed the config's values."""

    def announce(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    trio.run(lambda: run(config, announce=announce, overridden=overridden))
