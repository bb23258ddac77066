"""The in-memory job queue: jobs wait for their node, reach the Core that holds it."""

from __future__ import annotations

import trio

from servermgr.core.jobqueue import MemoryJobQueue


async def test_a_job_waits_for_its_node_until_a_core_claims_it() -> None:
    queue = MemoryJobQueue()
    await queue.put("n1", "j1", deadline=100.0)
    await queue.put("n1", "j2", deadline=100.0)
    await queue.put("n2", "j1", deadline=100.0)
    assert await queue.claim("n1") == ["j1", "j2"]
    assert await queue.claim("n1") == []  # taken once
    assert queue.waiting("n2") == ["j1"]


async def test_a_job_for_a_held_node_is_received_at_once() -> None:
    queue = MemoryJobQueue()
    assert await queue.claim("n1") == []
    await queue.put("n1", "j1", deadline=0.0)
    with trio.fail_after(1):
        assert await queue.receive() == ("n1", "j1")
    await queue.release("n1")
    await queue.put("n1", "j2", deadline=5.0)  # released: it waits again
    assert queue.waiting("n1") == ["j2"]


async def test_cancelled_and_expired_jobs_leave_the_queue() -> None:
    queue = MemoryJobQueue()
    await queue.put("n1", "j1", deadline=10.0)
    await queue.put("n2", "j1", deadline=10.0)
    await queue.put("n2", "j2", deadline=20.0)
    assert sorted(await queue.withdraw("j1")) == ["n1", "n2"]
    assert await queue.expired(15.0) == []
    assert await queue.expired(25.0) == [("n2", "j2")]
    assert await queue.claim("n2") == []
