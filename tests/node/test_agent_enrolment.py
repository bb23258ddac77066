"""Enrolment and revocation as an agent lives them, against a real Core in-process.

A node enrols with an enroll token, then runs on its own credential alone;
removed by an operator it stops for good (saying how to enrol again); two
agents sharing one identity are told so instead of replacing each other.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import httpx
import pytest
import trio

from servermgr.common.config import Config
from servermgr.common.errors import NodeRemovedError, RegistrationError
from servermgr.core.app import Core
from servermgr.node import identity
from tests.support import StartNode, api, make_token, node_config, online, wait_for


def with_token(config: Config, token: str | None, data_dir: Path | None = None) -> Config:
    node = dataclasses.replace(
        config.node, register_token=token, data_dir=data_dir or config.node.data_dir
    )
    return dataclasses.replace(config, node=node)


async def test_enrolled_with_an_enroll_token_then_runs_on_its_credential_alone(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    enroll = await make_token(core, "installer", "enroll")
    cfg = with_token(node_config(core, tmp_path, "node-01"), enroll)
    first = await start_node(core, "node-01", config=cfg)
    await wait_for(lambda: online(core, "node-01"))
    first.kill()
    await first.done.wait()
    await wait_for(lambda: not online(core, "node-01"))
    # register_token removed from the config: the identity is enough.
    again = await start_node(core, "node-01", config=with_token(cfg, None))
    await wait_for(lambda: online(core, "node-01"))
    assert len(core.registry) == 1
    again.kill()


async def test_without_identity_or_register_token_the_agent_says_what_to_set(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    cfg = with_token(node_config(core, tmp_path, "node-01"), None)
    node = await start_node(core, "node-01", config=cfg)
    with trio.fail_after(5):
        await node.done.wait()
    assert isinstance(node.error, RegistrationError)
    assert "register_token" in str(node.error)
    assert "--role enroll" in str(node.error)
    assert len(core.registry) == 0


async def test_a_read_token_cannot_enrol(core: Core, start_node: StartNode, tmp_path: Path) -> None:
    viewer = await make_token(core, "viewer", "read")
    node = await start_node(
        core, "node-01", config=with_token(node_config(core, tmp_path, "node-01"), viewer)
    )
    with trio.fail_after(5):
        await node.done.wait()
    assert isinstance(node.error, RegistrationError)
    assert "enroll token" in str(node.error)
    assert viewer not in str(node.error)
    assert len(core.registry) == 0


async def test_a_removed_node_stops_and_does_not_enrol_again_by_itself(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    enroll = await make_token(core, "installer", "enroll")
    cfg = with_token(node_config(core, tmp_path, "node-01"), enroll)
    node = await start_node(core, "node-01", config=cfg)
    await wait_for(lambda: online(core, "node-01"))
    old = core.registry.by_ref("node-01")
    assert old is not None
    async with api(core) as client:
        assert (await client.delete("/api/v1/nodes/node-01")).status_code == 200
    with trio.fail_after(10):
        await node.done.wait()
    assert isinstance(node.error, NodeRemovedError)
    message = str(node.error)
    assert "removed" in message
    assert str(cfg.node.data_dir / "identity.json") in message
    assert "\n" not in message

    # Started again with the enroll token still in its config: refused, not re-enrolled.
    again = await start_node(core, "node-01", config=cfg)
    with trio.fail_after(10):
        await again.done.wait()
    assert isinstance(again.error, NodeRemovedError)
    assert len(core.registry) == 0

    # Enrolling again is a deliberate act: delete the identity.
    identity.forget(cfg.node.data_dir)
    fresh = await start_node(core, "node-01", config=cfg)
    await wait_for(lambda: online(core, "node-01"))
    new = core.registry.by_ref("node-01")
    assert new is not None
    assert new.id != old.id
    fresh.kill()


async def test_two_agents_with_one_credential_are_told_not_swapped(
    core: Core, start_node: StartNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="servermgr.node")
    cfg = node_config(core, tmp_path, "node-01")
    first = await start_node(core, "node-01", config=cfg)
    await wait_for(lambda: online(core, "node-01"))
    row = core.registry.by_ref("node-01")
    assert row is not None
    session = core.sessions[row.id]
    copy = tmp_path / "copied-data-dir"
    shutil.copytree(cfg.node.data_dir, copy)
    second = await start_node(core, "node-01", config=with_token(cfg, None, copy))
    await wait_for(lambda: "connected already" in caplog.text)
    # The first keeps its connection: nobody was replaced.
    assert core.sessions[row.id] is session
    assert not second.agent.connected
    (line,) = {r.getMessage() for r in caplog.records if "connected already" in r.getMessage()}
    assert "copied data_dir" in line
    # Once the first is gone, the copy may connect (it is the same node).
    first.kill()
    await wait_for(lambda: second.agent.connected, limit=20)
    second.kill()


async def test_a_node_credential_cannot_use_the_operator_api(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    saved = identity.load(tmp_path / "nodes" / "node-01")
    assert saved is not None
    headers = {"Authorization": f"Bearer {saved.credential}"}
    async with httpx.AsyncClient(base_url=core.url, headers=headers, timeout=5) as client:
        for method, path in (("GET", "/api/v1/nodes"), ("POST", "/api/v1/jobs")):
            resp = await client.request(method, path, json={"target": "all", "command": "id"})
            assert resp.status_code == 403, resp.text
