"""The event bus: bounded queues per subscriber, no I/O."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from servermgr.core.bus import EVENT_OVERHEAD, MemoryBus, SubscriberTooSlow


async def test_each_subscriber_gets_what_matches_in_order() -> None:
    bus = MemoryBus()
    async with (
        bus.subscribe(match=lambda e: e["n"] % 2 == 0) as even,
        bus.subscribe() as every,
    ):
        for n in range(6):
            bus.publish({"type": "x", "n": n})
        assert [(await even.receive())["n"] for _ in range(3)] == [0, 2, 4]
        assert [(await every.receive())["n"] for _ in range(6)] == list(range(6))
    assert bus.subscriptions() == []


async def test_a_full_queue_closes_that_subscriber_only() -> None:
    bus = MemoryBus()
    async with bus.subscribe(max_events=10) as slow, bus.subscribe(max_events=100) as fast:
        for n in range(50):
            bus.publish({"type": "x", "n": n})
            if n < 20:
                assert (await fast.receive())["n"] == n
        assert bus.subscriptions() == [fast]
        assert slow.queued == 0  # freed at once, not when its reader comes back
        assert slow.queued_bytes == 0
        assert slow.peak_bytes == 10 * EVENT_OVERHEAD
        with pytest.raises(SubscriberTooSlow, match="too slow: over 10 events"):
            await slow.receive()
        assert [(await fast.receive())["n"] for _ in range(30)] == list(range(20, 50))


async def test_output_bytes_count_towards_the_limit() -> None:
    bus = MemoryBus()
    chunk = "x" * 64 * 1024
    async with bus.subscribe(max_events=10_000, max_bytes=1024 * 1024) as sub:
        for _ in range(100):
            bus.publish({"type": "job.output", "data": chunk})
        assert sub.peak_bytes <= 1024 * 1024
        assert sub.peak_bytes > 1024 * 1024 - len(chunk) - EVENT_OVERHEAD
        with pytest.raises(SubscriberTooSlow):
            await sub.receive()


async def test_a_waiting_reader_wakes_up_when_closed() -> None:
    bus = MemoryBus()
    async with bus.subscribe(max_events=1) as sub:
        got: list[BaseException] = []

        async def reader() -> None:
            try:
                await sub.receive()
                await sub.receive()
            except SubscriberTooSlow as exc:
                got.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            bus.publish({"type": "x"})  # taken by the reader
            bus.publish({"type": "x"})
            bus.publish({"type": "x"})  # overflows
        assert len(got) == 1


async def test_iteration_ends_when_the_subscription_closes() -> None:
    bus = MemoryBus()
    async with bus.subscribe() as sub:
        bus.publish({"type": "x"})
        sub.close()
        assert [e async for e in sub] == []  # closed: what waited is freed too
