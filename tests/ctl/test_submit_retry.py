"""ctl's job submission survives a lost answer: retried with the same key, run once."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import trio

from servermgr.core.app import Core
from servermgr.ctl.client import Client
from tests.support import StartNode, api, finished, online, wait_for


async def pipe(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some():
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


async def answer_losing_proxy(
    core_port: int, posts: list[bytes], *, task_status: trio.TaskStatus[int]
) -> None:
    """Relays to Core, but the first request's answer never reaches the client:
    Core has done the work, the client sees the connection drop."""

    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", core_port) as upstream:
            if not posts:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await client.receive_some()
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                while m and len(body) < int(m.group(1)):
                    body += await client.receive_some()
                posts.append(head)
                await upstream.send_all(head + b"\r\n\r\n" + body)
                await upstream.receive_some()  # Core answered: the job exists...
                return  # ...and the answer is lost
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipe, client, upstream, nursery.cancel_scope)
                nursery.start_soon(pipe, upstream, client, nursery.cancel_scope)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_a_lost_answer_is_retried_with_the_same_key_and_runs_once(
    core: Core, start_node: StartNode, nursery: trio.Nursery, tmp_path: Path
) -> None:
    await start_node(core, "node-01")
    await wait_for(lambda: online(core, "node-01"))
    posts: list[bytes] = []
    port = await nursery.start(answer_losing_proxy, core.port, posts)
    ran = tmp_path / "ran"
    client = Client(f"http://127.0.0.1:{port}", core.key.value)
    body = {"target": "node-01", "command": f"echo once >> {ran}"}
    job = await trio.to_thread.run_sync(
        partial(client.create_job, body, key="ctl-key-1", sleep=lambda _: None)
    )
    client.close()
    assert len(posts) == 1  # the first POST reached Core, its answer was dropped
    assert b"idempotency-key: ctl-key-1" in posts[0].lower()
    await finished(core, job["id"])
    assert ran.read_text() == "once\n"
    async with api(core) as http:
        listed = (await http.get("/api/v1/jobs")).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
