"""The job queue on Redis streams: jobs for nodes, between Core processes.

Keys are docs/redis.md's. Each node has a stream, ``servermgr:jobs:<node_id>``,
with one consumer group, ``servermgr``; each Core reads as the consumer
named by its id. ``put`` adds an entry (the job id and its deadline: the
job itself is in SQLite) and wakes the Core that holds the node, named by
``servermgr:owner:<node_id>``, on its channel ``servermgr:wake:<core_id>``.
That Core reads the entry (``XREADGROUP``), acknowledges and deletes it
(``XACK``, ``XDEL``) once it has it, and sends the job on. A Core that died
between reading and acknowledging leaves the entry pending: the next Core
to claim the node takes it over (``XAUTOCLAIM``). A Core also reads its
nodes' streams every ``poll_every`` s (10), and at once when Redis is back
after an outage, so a lost wake-up only delays a job.

Claims are batched: the nodes that connect while one claim is on its way
to Redis are claimed together by the next, in a few round trips whatever
their number (a fleet connecting at 250 nodes a second made five round
trips per node, on four threads, and queued Core's other Redis calls past
their timeout). The poll reads every held node's stream in one pipeline.

An entry nobody takes before its deadline (its node connected nowhere) is
taken out by whichever Core's ``expired`` gets it first (``ZREM`` on
``servermgr:deadlines`` decides), and only that Core reports it.

While Redis is down ``put`` keeps what it could not add, in memory, and adds
it when the link is back; nothing a caller put is dropped. A Redis that
comes back empty (restarted without persistence) lost the streams: so after
every outage a Core puts again what it put that has not reached its
deadline. A job taken twice is opened once (the Core holding the node
opens only an entry still queued in SQLite).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import redis.exceptions as rx
import trio

from servermgr.common.errors import RedisUnavailableError
from servermgr.core.jobqueue import Routed
from servermgr.core.redisio import RedisLink

log = logging.getLogger("servermgr.core.redis")

PREFIX = "servermgr:"
GROUP = "servermgr"
DEADLINES = PREFIX + "deadlines"
# The poll is the backstop for a lost wake-up (and after an outage it runs at
# once): it reads every held node's stream, ~2.4 us of Core's CPU per node,
# so every 2 s it cost ~6 us per heartbeat at a 5 s interval.
POLL_EVERY = 10.0
READ_KEYS = 500  # streams per XREADGROUP
CLAIM_BATCH = 250  # nodes per claim call (a few round trips; short, so nothing queues long)
EXPIRE_BATCH = 1000

# Delete the owner key only if it still names this Core (a node may have moved).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def stream(node_id: str) -> str:
    return f"{PREFIX}jobs:{node_id}"


def owner_key(node_id: str) -> str:
    return f"{PREFIX}owner:{node_id}"


def waiting_key(job_id: str) -> str:
    """The nodes a job waits for (for ``withdraw``)."""
    return f"{PREFIX}job:{job_id}:nodes"


def wake_channel(core: str) -> str:
    return f"{PREFIX}wake:{core}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Claims:
    """Nodes claimed together in one call, and what each got (None: not claimed)."""

    def __init__(self) -> None:
        self.nodes: set[str] = set()
        self.done = trio.Event()
        self.found: dict[str, list[str]] | None = None


class RedisJobQueue:
    """``JobQueue`` on Redis streams (see the module docstring)."""

    def __init__(self, core: str, link: RedisLink, *, poll_every: float = POLL_EVERY) -> None:
        self.core = core
        self.link = link
        self.poll_every = poll_every
        self._held: set[str] = set()
        self._unclaimed: set[str] = set()  # held, but their claim failed: claimed by the poll
        self._next = _Claims()  # the nodes waiting for the next claim call
        self._claiming: trio.Event | None = None  # set when the claim call on its way is done
        self.claim_calls = 0  # calls to Redis that claimed nodes, for tests and figures
        self._unsent: list[tuple[str, str, float]] = []  # put while Redis was down
        self._put: dict[tuple[str, str], float] = {}  # put here, deadline not reached
        self._send, self._receive = trio.open_memory_channel[Routed](float("inf"))
        self._poll = trio.Event()
        self.taken = 0

    # --- JobQueue -------------------------------------------------------------

    async def put(self, node_id: str, job_id: str, *, deadline: float) -> None:
        self._put[(node_id, job_id)] = deadline
        try:
            await self.link.call(_put, self.core, node_id, job_id, deadline)
        except RedisUnavailableError:
            self._unsent.append((node_id, job_id, deadline))
            return
        if node_id in self._held:
            self._poll.set()

    async def claim(self, node_id: str) -> list[str]:
        """Own ``node_id`` and take what waits for it, with the nodes claimed meanwhile.

        The nodes that ask while a claim call is on its way are claimed
        together by the next call, made by the first of them to get there.
        """
        self._held.add(node_id)
        batch = self._next
        batch.nodes.add(node_id)
        while not batch.done.is_set():
            if self._claiming is None:
                await self._claim_round()
            else:
                await self._claiming.wait()
        found = batch.found
        if found is None:
            return []  # claimed by the poll once Redis is back
        return found.get(node_id, [])

    async def _claim_round(self) -> None:
        current, self._next = self._next, _Claims()
        self._claiming = current.done
        try:
            current.found = await self._claim_now(current.nodes)
        finally:
            if current.found is None:  # Redis failed, or cancelled: the poll claims them
                self._unclaimed |= current.nodes & self._held
            self._claiming = None
            current.done.set()

    async def _claim_now(self, nodes: set[str]) -> dict[str, list[str]] | None:
        """Claim ``nodes`` (held ones only): their jobs, or None if Redis failed."""
        held = sorted(n for n in nodes if n in self._held)
        found: dict[str, list[str]] = {}
        for i in range(0, len(held), CLAIM_BATCH):
            chunk = held[i : i + CLAIM_BATCH]
            try:
                routed = await self.link.call(_claim_many, self.core, chunk)
            except RedisUnavailableError:
                self._unclaimed.update(held[i:])
                return found if i else None
            self.claim_calls += 1
            self._unclaimed.difference_update(chunk)
            for node_id, job_id in routed:
                found.setdefault(node_id, []).append(job_id)
            self.taken += len(routed)
        return found

    async def release(self, node_id: str) -> None:
        self._held.discard(node_id)
        self._unclaimed.discard(node_id)
        try:
            await self.link.call(lambda c: c.eval(_RELEASE, 1, owner_key(node_id), self.core))
        except RedisUnavailableError:
            pass  # a stale owner only sends wake-ups to a Core that ignores them

    async def withdraw(self, job_id: str) -> list[str]:
        for item in [i for i in self._put if i[1] == job_id]:
            del self._put[item]
        gone = [node for node, job, _ in self._unsent if job == job_id]
        self._unsent = [u for u in self._unsent if u[1] != job_id]
        try:
            gone += await self.link.call(_withdraw, job_id)
        except RedisUnavailableError:
            pass
        return gone

    async def expired(self, now: float) -> list[Routed]:
        for item, deadline in list(self._put.items()):
            if deadline < now:
                del self._put[item]
        out = [(node, job) for node, job, deadline in self._unsent if deadline < now]
        self._unsent = [u for u in self._unsent if u[2] >= now]
        try:
            out += await self.link.call(_expired, now)
        except RedisUnavailableError:
            pass
        return out

    async def receive(self) -> Routed:
        return await self._receive.receive()

    # --- tasks -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read held nodes' streams on a wake-up or every ``poll_every`` s; listen for wake-ups."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._wakeups)  # listening for wake-ups (if Redis is up)
            task_status.started()
            connects = self.link.connects
            while True:
                with trio.move_on_after(self.poll_every):
                    await self._poll.wait()
                self._poll = trio.Event()
                if not self.link.up:
                    await self.link.wait_up()
                try:
                    if self.link.connects != connects:  # back: say again which nodes are ours
                        connects = self.link.connects
                        await self._put_again()
                        self._unclaimed |= self._held
                    await self.poll_once()
                except RedisUnavailableError:
                    pass

    async def poll_once(self) -> None:
        """One poll: what waits to be added or claimed, then every held node's new entries."""
        await self._add_unsent()
        if self._unclaimed:
            await self._claim_unclaimed()
        routed = await self.link.call(_read, self.core, sorted(self._held))
        self.taken += len(routed)
        for item in routed:
            self._send.send_nowait(item)

    async def _claim_unclaimed(self) -> None:
        """Claim the held nodes whose claim failed (or all, after an outage)."""
        nodes = sorted(self._unclaimed & self._held)
        self._unclaimed.clear()
        for i in range(0, len(nodes), CLAIM_BATCH):
            chunk = nodes[i : i + CLAIM_BATCH]
            try:
                routed = await self.link.call(_claim_many, self.core, chunk)
            except RedisUnavailableError:
                self._unclaimed.update(nodes[i:])
                raise
            self.claim_calls += 1
            self.taken += len(routed)
            for item in routed:
                self._send.send_nowait(item)

    async def _put_again(self) -> None:
        """After an outage: put again what this Core put and nobody expired yet."""
        known = {(n, j) for n, j, _ in self._unsent}
        for (node_id, job_id), deadline in list(self._put.items()):
            if (node_id, job_id) not in known:
                self._unsent.append((node_id, job_id, deadline))

    async def _add_unsent(self) -> None:
        while self._unsent:
            node_id, job_id, deadline = self._unsent[0]
            await self.link.call(_put, self.core, node_id, job_id, deadline)
            self._unsent.pop(0)

    async def _wakeups(self, *, task_status: trio.TaskStatus[None]) -> None:
        await self.link.follow(
            [wake_channel(self.core)],
            lambda _: self._poll.set(),
            buffer=100,
            task_status=task_status,
        )


# --- what runs in the worker threads ---------------------------------------------


def _ensure_group(client: redis.Redis, key: str) -> None:
    try:
        client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except rx.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _put(client: redis.Redis, core: str, node_id: str, job_id: str, deadline: float) -> None:
    key = stream(node_id)
    _ensure_group(client, key)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, {"job": job_id, "deadline": repr(deadline), "from": core})
    pipe.zadd(DEADLINES, {f"{node_id} {job_id}": deadline})
    pipe.sadd(waiting_key(job_id), node_id)
    pipe.expireat(waiting_key(job_id), int(deadline) + 3600)
    pipe.get(owner_key(node_id))
    owner = pipe.execute()[-1]
    if owner is not None and _text(owner) != core:
        client.publish(wake_channel(_text(owner)), node_id)


def _take(client: redis.Redis, taken: dict[str, list[tuple[Any, str]]]) -> None:
    """Acknowledge and delete entries this Core has now (it sends them on), by node."""
    pipe = client.pipeline(transaction=False)
    for node_id, ids_jobs in taken.items():
        if not ids_jobs:
            continue
        key = stream(node_id)
        ids = [entry_id for entry_id, _ in ids_jobs]
        pipe.xack(key, GROUP, *ids)
        pipe.xdel(key, *ids)
        for _, job_id in ids_jobs:
            pipe.zrem(DEADLINES, f"{node_id} {job_id}")
            pipe.srem(waiting_key(job_id), node_id)
    if len(pipe):
        pipe.execute()


def _jobs(entries: list[Any]) -> list[tuple[Any, str]]:
    out = []
    for entry_id, fields in entries:
        if fields and b"job" in fields:  # None: deleted meanwhile
            out.append((entry_id, _text(fields[b"job"])))
    return out


def _claim_many(client: redis.Redis, core: str, nodes: list[str]) -> list[Routed]:
    """Own ``nodes``: their pending entries (a dead Core's too) and their new ones.

    A few round trips whatever the number of nodes: the owner keys, groups
    and first ``XAUTOCLAIM`` of each in one pipeline; a node with more than
    100 pending entries goes on alone; the new entries in one pipeline of
    ``XREADGROUP``; what was found acknowledged in one more."""
    pipe = client.pipeline(transaction=False)
    for node_id in nodes:
        key = stream(node_id)
        pipe.set(owner_key(node_id), core)
        pipe.xgroup_create(key, GROUP, id="0", mkstream=True)
        pipe.xautoclaim(key, GROUP, core, min_idle_time=0, start_id="0-0", count=100)
    replies = pipe.execute(raise_on_error=False)
    found: dict[str, list[tuple[Any, str]]] = {n: [] for n in nodes}
    for i, node_id in enumerate(nodes):
        created, auto = replies[3 * i + 1], replies[3 * i + 2]
        if isinstance(created, Exception) and "BUSYGROUP" not in str(created):
            raise created
        if isinstance(auto, Exception):
            raise auto
        found[node_id] += _jobs(auto[1])
        start = auto[0]
        for _ in range(100):  # bounded: 100 x 100 pending entries
            if _text(start) == "0-0":
                break
            auto = client.xautoclaim(
                stream(node_id), GROUP, core, min_idle_time=0, start_id=start, count=100
            )
            start = auto[0]
            found[node_id] += _jobs(auto[1])
    for node_id, entries in _read_new(client, core, nodes, count=10_000):
        found[node_id] += entries
    _take(client, found)
    return [(node_id, job_id) for node_id, got in found.items() for _, job_id in got]


def _read_new(
    client: redis.Redis, core: str, nodes: list[str], *, count: int
) -> list[tuple[str, list[tuple[Any, str]]]]:
    """New entries of these nodes' streams (not taken yet): one pipeline of
    ``XREADGROUP``, ``READ_KEYS`` streams each."""
    if not nodes:
        return []
    chunks = [nodes[i : i + READ_KEYS] for i in range(0, len(nodes), READ_KEYS)]
    pipe = client.pipeline(transaction=False)
    for chunk in chunks:
        pipe.xreadgroup(GROUP, core, {stream(n): ">" for n in chunk}, count=count)
    out: list[tuple[str, list[tuple[Any, str]]]] = []
    missing: list[str] = []
    # RESP2 (redis-py's default): each reply a list of [stream, entries].
    for chunk, reply in zip(chunks, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, Exception):
            if "NOGROUP" not in str(reply):
                raise reply
            missing += chunk  # a stream gone (Redis emptied): read with the next poll
            continue
        for key, entries in reply or []:
            out.append((_text(key)[len(PREFIX + "jobs:") :], _jobs(entries)))
    if missing:
        pipe = client.pipeline(transaction=False)
        for node_id in missing:
            pipe.xgroup_create(stream(node_id), GROUP, id="0", mkstream=True)
        pipe.execute(raise_on_error=False)  # BUSYGROUP for the streams that have it
    return out


def _read(client: redis.Redis, core: str, nodes: list[str]) -> list[Routed]:
    """New entries of these nodes' streams, taken."""
    found = dict(_read_new(client, core, nodes, count=1000))
    _take(client, found)
    return [(node_id, job_id) for node_id, got in found.items() for _, job_id in got]


def _drop(client: redis.Redis, node_id: str, job_id: str) -> bool:
    """Delete ``job_id``'s waiting entry for ``node_id``; True if this call removed it."""
    if not client.zrem(DEADLINES, f"{node_id} {job_id}"):
        return False  # taken by a Core, or expired by another
    key = stream(node_id)
    entries: Any = client.xrange(key)
    ids = [eid for eid, job in _jobs(entries) if job == job_id]
    if ids:
        client.xdel(key, *ids)
    client.srem(waiting_key(job_id), node_id)
    return True


def _withdraw(client: redis.Redis, job_id: str) -> list[str]:
    nodes = [_text(n) for n in client.smembers(waiting_key(job_id))]
    return [n for n in nodes if _drop(client, n, job_id)]


def _expired(client: redis.Redis, now: float) -> list[Routed]:
    out: list[Routed] = []
    for member in client.zrangebyscore(DEADLINES, "-inf", now, start=0, num=EXPIRE_BATCH):
        node_id, _, job_id = _text(member).partition(" ")
        if _drop(client, node_id, job_id):
            out.append((node_id, job_id))
    return out
