"""core/redisio.py against a real redis-server (and sockets that are not one)."""

from __future__ import annotations

import logging
import threading

import pytest
import trio

from servermgr.common.errors import RedisUnavailableError
from servermgr.core.redisio import Message, RedisLink, where
from tests.support import RedisServer, StartRedis, free_port, wait_for

pytestmark = pytest.mark.redis


def link(url: str, **kw: float) -> RedisLink:
    return RedisLink(url, timeout=kw.pop("timeout", 2.0), backoff=0.05, backoff_max=0.2, **kw)


async def test_calls_and_pubsub_reach_redis(redis_server: RedisServer) -> None:
    lk = link(redis_server.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(lk.serve)
        assert lk.up
        assert lk.connects == 1
        await lk.call(lambda c: c.set("servermgr:test", b"1"))
        assert redis_server.cli("get", "servermgr:test").strip() == "1"
        send, receive = trio.open_memory_channel[Message](10)
        await nursery.start(lk.subscribe, ["servermgr:a", "servermgr:b"], send)
        redis_server.cli("publish", "servermgr:b", "hello")
        with trio.fail_after(10):
            assert await receive.receive() == ("servermgr:b", b"hello")
        nursery.cancel_scope.cancel()
    lk.close()


async def test_wrong_password_is_one_line_without_the_password(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(password="right-secret")
    url = server.url.replace("right-secret", "wrong-secret")
    lk = link(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(lk.serve)
        assert not lk.up
        assert lk.problem is not None
        assert lk.problem.kind == "auth"
        with pytest.raises(RedisUnavailableError, match="refused the password"):
            await lk.call(lambda c: c.ping())
        nursery.cancel_scope.cancel()
    lk.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert "secret" not in caplog.text
    assert "AUTH failed" in lines[0]


async def test_unreachable_then_started_connects() -> None:
    port = free_port()
    lk = link(f"redis://127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        await nursery.start(lk.serve)
        assert lk.problem is not None
        assert lk.problem.kind == "unreachable"
        assert "is redis-server running" in str(lk.problem)
        nursery.cancel_scope.cancel()
    lk.close()


async def _serve_bytes(reply: bytes | None, task_status: trio.TaskStatus[int]) -> None:
    """A TCP server that is not Redis: answers ``reply`` to anything, or never answers."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some(4096):
                if reply is not None:
                    await stream.send_all(reply)

    await trio.serve_listeners(handle, listeners)


async def test_not_redis_and_silent_servers_say_so() -> None:
    async with trio.open_nursery() as nursery:
        http = await nursery.start(_serve_bytes, b"HTTP/1.1 400 Bad Request\r\n\r\n")
        silent = await nursery.start(_serve_bytes, None)
        for port, kind, words in (
            (http, "url", "is not Redis"),
            (silent, "slow", "did not answer within 0.5 s"),
        ):
            lk = link(f"redis://127.0.0.1:{port}", timeout=0.5)
            async with trio.open_nursery() as inner:
                await inner.start(lk.serve)
                assert lk.problem is not None, port
                assert (lk.problem.kind, words in str(lk.problem)) == (kind, True), lk.problem
                inner.cancel_scope.cancel()
            lk.close()
        nursery.cancel_scope.cancel()


def test_bad_url_is_a_url_error() -> None:
    with pytest.raises(RedisUnavailableError) as err:
        RedisLink("redis://127.0.0.1:6379/?db=x")
    assert err.value.kind == "url"
    assert where("redis://user:pw@host:1/0") == "redis://host:1/0"


async def test_redis_killed_and_back_reconnects(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    lk = link(redis_server.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(lk.serve)
        redis_server.kill()
        with pytest.raises(RedisUnavailableError):
            await lk.call(lambda c: c.ping())
        assert not lk.up
        with pytest.raises(RedisUnavailableError) as err:  # fails fast while down
            await lk.call(lambda c: c.ping())
        assert err.value.kind == "down"
        redis_server.start()
        with trio.fail_after(20):
            await lk.wait_up()
        assert lk.connects == 2
        assert await lk.call(lambda c: c.ping())
        nursery.cancel_scope.cancel()
    lk.close()
    assert "is back after" in caplog.text


async def test_calls_queued_behind_busy_threads_fail_alone_and_redis_stays_up(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Core's own calls filling every thread (a starved Core) say nothing about
    # Redis: taking it for down made Core resync, which queued more calls.
    lk = RedisLink(redis_server.url, timeout=0.3, threads=1, check_every=0.1)
    blocked, release = threading.Event(), threading.Event()

    def hold(_client: object) -> None:  # the one thread, busy (no call back into trio)
        blocked.set()
        release.wait(60)

    async with trio.open_nursery() as nursery:
        await nursery.start(lk.serve)
        nursery.start_soon(lk.call, hold)
        await wait_for(blocked.is_set)
        with pytest.raises(RedisUnavailableError) as err:
            await lk.call(lambda c: c.ping())  # waits for the one thread, in vain
        assert err.value.kind == "busy"
        checks = lk.connects
        await trio.sleep(0.5)  # the link's checks go on meanwhile, on their own thread
        assert lk.up
        assert lk.connects == checks
        release.set()
        assert await lk.call(lambda c: c.ping())
        nursery.cancel_scope.cancel()
    lk.close()
    assert "did not answer" not in caplog.text
