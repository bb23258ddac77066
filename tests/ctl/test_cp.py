"""``ctl cp`` through a real Core and a real agent in this process.

A push lands atomically with its checksum, a pull comes back byte for byte,
the node's ``[files]`` policy refuses what it does not list, a transfer cut
in the middle leaves no temporary file, a client that lies about its data
places nothing, and every transfer is in the audit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import trio

from servermgr.common.config import FilesConfig
from servermgr.core.app import Core
from servermgr.ctl import cp
from tests.support import StartNode, api, node_config, online, wait_for


def conn(core: Core) -> cp.Connection:
    return cp.Connection(core.url, core.key.value, None)


async def files_node(core: Core, start_node: StartNode, tmp_path: Path, name: str) -> Path:
    """A node allowed to read and write under its own ``area`` directory only."""
    area = tmp_path / f"area-{name}"
    area.mkdir()
    cfg = node_config(core, tmp_path, name)
    cfg = dataclasses.replace(cfg, files=FilesConfig(read=(f"{area}/**",), write=(f"{area}/**",)))
    await start_node(core, name, config=cfg)
    await wait_for(lambda: online(core, name))
    return area


async def test_push_then_pull_round_trip(core: Core, start_node: StartNode, tmp_path: Path) -> None:
    area = await files_node(core, start_node, tmp_path, "node-01")
    local = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 12345)  # several windows, a short last chunk
    local.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()

    out = await cp.push(conn(core), "node-01", local, f"{area}/big.bin", mode=0o640)
    assert out.error is None, out.error
    assert (out.sha256, out.size) == (want, len(data))
    placed = area / "big.bin"
    assert placed.read_bytes() == data
    assert placed.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in area.iterdir()] == ["big.bin"]  # no temporary file left

    back = tmp_path / "back"
    back.mkdir()
    got = await cp.pull(conn(core), "node-01", str(placed), cp.destination(back, str(placed)))
    assert got.error is None, got.error
    assert got.sha256 == want
    assert (back / "big.bin").read_bytes() == data
    assert [p.name for p in back.iterdir()] == ["big.bin"]

    async with api(core) as client:
        rows = (await client.get("/api/v1/audit")).json()
    actions = [(r["action"], r["outcome"]) for r in rows if r["action"].startswith("file.")]
    assert actions == [("file.pull", "succeeded"), ("file.push", "succeeded")]
    assert all(want in r["detail"] for r in rows if r["action"].startswith("file."))


async def test_policy_refuses_paths_outside_files_write(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    area = await files_node(core, start_node, tmp_path, "node-01")
    local = tmp_path / "x.conf"
    local.write_text("x\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    refused = await cp.push(conn(core), "node-01", local, f"{outside}/x.conf")
    assert refused.code == "refused"
    assert "[files] write" in (refused.error or "")
    assert not (outside / "x.conf").exists()
    # A link inside the allowed area that points outside it is resolved and refused.
    (area / "escape").symlink_to(outside)
    refused = await cp.push(conn(core), "node-01", local, f"{area}/escape/x.conf")
    assert refused.code == "refused"
    assert "resolves to" in (refused.error or "")
    assert list(outside.iterdir()) == []
    # Reading outside the area too.
    (outside / "secret").write_text("no")
    got = await cp.pull(conn(core), "node-01", f"{outside}/secret", tmp_path / "secret")
    assert got.code == "refused"
    assert not (tmp_path / "secret").exists()
    async with api(core) as client:
        rows = (await client.get("/api/v1/audit")).json()
    assert {r["outcome"] for r in rows if r["action"].startswith("file.")} == {"failed"}


async def test_push_cut_in_the_middle_leaves_nothing(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    """ctl goes away mid-push: the node removes its temporary file; the target is untouched."""
    area = await files_node(core, start_node, tmp_path, "node-01")
    target = area / "app.bin"
    target.write_bytes(b"old")
    local = tmp_path / "app.bin"
    local.write_bytes(os.urandom(8 * 1024 * 1024))

    with trio.move_on_after(30) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cp.push, conn(core), "node-01", local, str(target))
            # Cut once the node has its temporary file and some data.
            await wait_for(lambda: any(p.name.endswith(".tmp") for p in area.iterdir()), 20)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    await wait_for(lambda: [p.name for p in area.iterdir()] == ["app.bin"], 20)
    assert target.read_bytes() == b"old"


async def _raw_push(
    core: Core, target: Path, size: int, frames: list[bytes | str]
) -> dict[str, str]:
    """A client that declares ``size`` and then sends ``frames``: Core's answer to it."""
    import json

    from servermgr.common import relay
    from servermgr.ctl.wsclient import connect

    opening = {"type": "open", "node": "node-01", "direction": "push", "path": str(target)}
    async with connect(core.url, relay.FILES_PATH, core.key.value) as ws:
        await ws.send_message(json.dumps(opening | {"size": size}))
        with trio.fail_after(20):
            while json.loads(await ws.get_message())["type"] != "credit":
                pass
            for frame in frames:
                await ws.send_message(frame)
            while (answer := json.loads(await ws.get_message()))["type"] == "credit":
                pass
    return answer["error"] if answer["type"] == "error" else answer


async def test_a_client_that_lies_about_its_data_places_nothing(
    core: Core, start_node: StartNode, tmp_path: Path
) -> None:
    """More bytes than declared, or an end whose size or checksum is not what came:
    refused, the target untouched, no temporary file left."""
    area = await files_node(core, start_node, tmp_path, "node-01")
    target = area / "app.conf"
    target.write_bytes(b"old")
    past = await _raw_push(core, target, 3, [b"four"])
    assert (past["code"], past["message"]) == ("bad_request", "data past the size")
    wrong = '{"type": "end", "size": 3, "sha256": "' + "0" * 64 + '"}'
    mismatch = await _raw_push(core, target, 3, [b"new", wrong])
    assert mismatch["code"] == "checksum_mismatch"
    assert "Core received 3 bytes" in mismatch["message"]
    await wait_for(lambda: [p.name for p in area.iterdir()] == ["app.conf"], 20)
    assert target.read_bytes() == b"old"
