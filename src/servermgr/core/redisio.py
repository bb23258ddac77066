"""Redis from trio: the sync redis-py client, run in worker threads.

There is no well-kept trio-native Redis client and ``redis.asyncio`` needs
asyncio, so every command runs in a worker thread (``trio.to_thread``)
under a ``CapacityLimiter``, and each is bounded twice: by the socket
timeout inside redis-py and by a cancel scope outside it. A Redis that
answers slowly costs the caller that timeout, never trio's loop; ingest
never awaits Redis at all (the Redis parts write behind, in batches).

    RedisLink
    ├── serve()             watches the link: a PING every ``check_every`` s while up;
    │                       while down, tries again with backoff (``backoff`` doubling
    │                       up to ``backoff_max``); one log line per change
    ├── call(fn, *args)     ``fn(client, *args)`` in a worker thread; fails fast while down
    └── subscribe(...)      pub/sub on a thread of its own, feeding a trio memory channel

Whoever must resync after an outage (write everything again, re-read what
others wrote) waits with ``wait_up()`` and compares ``connects``.

Failures become ``RedisUnavailableError`` with one line that tells the
cases apart: a URL that cannot be used (or a server there that is not
Redis), a refused password, nothing answering, no answer in time. A call
that waited too long for a free thread (``busy``: Core's own calls queued,
as when a busy machine starves Core of CPU) fails alone: that says nothing
about Redis, so the link stays up (taking it for down made Core resync,
which queued more calls: over and over). The checks run on a thread of
their own, never queued behind the calls.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis
import redis.exceptions as rx
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from servermgr.common.errors import RedisUnavailableError

log = logging.getLogger("servermgr.core.redis")

P = ParamSpec("P")
T = TypeVar("T")

TIMEOUT = 2.0  # one command, connect included
THREADS = 4  # commands at once (each holds a worker thread and a connection)
CHECK_EVERY = 2.0
BACKOFF = 0.5
BACKOFF_MAX = 5.0
POLL = 0.5  # how often the pub/sub thread looks for cancellation

Message = tuple[str, bytes]  # (channel, data)


def where(url: str) -> str:
    """``url`` without its user and password, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparsable URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def describe(exc: BaseException, url: str, timeout: float) -> RedisUnavailableError:
    """One line for what went wrong talking to Redis at ``url``."""
    at = where(url)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    upper = text.upper()
    auth_words = ("WRONGPASS", "NOAUTH", "INVALID PASSWORD", "INVALID USERNAME", "AUTH <PASSWORD>")
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError) or any(
        w in upper for w in auth_words
    ):
        return RedisUnavailableError(
            f"Redis at {at} refused the password (AUTH failed: {text}): "
            "check the user and password in [storage] redis_url",
            "auth",
        )
    if isinstance(exc, rx.TimeoutError | trio.TooSlowError):
        return RedisUnavailableError(
            f"Redis at {at} did not answer within {timeout:g} s: "
            "it is overloaded or stopped, the network is slow, or what listens there is "
            "not Redis (check the host and port in [storage] redis_url)",
            "slow",
        )
    if isinstance(exc, rx.InvalidResponse) or "PROTOCOL ERROR" in upper:
        return RedisUnavailableError(
            f"what answers at {at} is not Redis ({text}): check the host and port "
            "in [storage] redis_url",
            "url",
        )
    if isinstance(exc, ValueError):
        return RedisUnavailableError(f"[storage] redis_url {at} cannot be used: {text}", "url")
    if isinstance(exc, rx.ConnectionError | OSError):
        return RedisUnavailableError(
            f"Redis at {at} is unreachable ({text}): is redis-server running there?",
            "unreachable",
        )
    return RedisUnavailableError(f"Redis at {at} answered with an error: {text}", "error")


class RedisLink:
    """One Redis server, used from trio; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT,
        threads: int = THREADS,
        check_every: float = CHECK_EVERY,
        backoff: float = BACKOFF,
        backoff_max: float = BACKOFF_MAX,
        name: str = "servermgr",
    ) -> None:
        self.url = url
        self.where = where(url)
        self.timeout = timeout
        self.check_every = check_every
        self.backoff = backoff
        self.backoff_max = backoff_max
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # Retries are ours (serve's backoff): one try per call, bounded.
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                # The calls, the checks, two pub/sub threads, the liveness key, a spare.
                max_connections=threads + 5,
                health_check_interval=max(1, math.ceil(check_every * 2)),
                client_name=re.sub(r"[^A-Za-z0-9._:-]", "_", name)[:100],  # CLIENT LIST
            )
        except ValueError as exc:
            raise describe(exc, url, timeout) from None
        self._limiter = trio.CapacityLimiter(threads)
        self._check_limiter = trio.CapacityLimiter(1)
        self.up = False
        self.problem: RedisUnavailableError | None = None  # why it is down
        self.down_since: float | None = None  # trio time
        self.connects = 0  # times the link came up: a change means "resync"
        self.server_version = ""
        self._up = trio.Event()
        self._down = trio.Event()

    # --- calls ----------------------------------------------------------

    async def call(
        self, fn: Callable[Concatenate[redis.Redis, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(client, *args)`` in a worker thread, bounded by the timeout.

        Raises ``RedisUnavailableError``: at once while the link is down
        (``kind == "down"``), else with what went wrong; a failure of the
        link itself marks it down (``serve`` brings it back).
        """
        if not self.up:
            raise RedisUnavailableError(
                str(self.problem) if self.problem else f"Redis at {self.where} is not connected",
                "down",
            )
        try:
            return await self._run(partial(fn, self.client, *args, **kwargs))
        except RedisUnavailableError as err:
            if err.kind not in ("error", "busy"):
                self._mark_down(err)
            raise

    async def _run(self, job: Callable[[], T], limiter: trio.CapacityLimiter | None = None) -> T:
        # The socket timeout bounds each command once it runs; this bounds the
        # wait for a thread behind other calls (a running call is not
        # abandoned when cancelled: its connection would outlive ``close``;
        # the socket timeout ends it), so it only ever fires while waiting.
        wait = self.timeout * 2 + 1
        try:
            with trio.fail_after(wait):
                return await trio.to_thread.run_sync(job, limiter=limiter or self._limiter)
        except trio.TooSlowError:
            raise RedisUnavailableError(
                f"a call to Redis at {self.where} waited over {wait:g} s for a free thread: "
                "Core is busy",
                "busy",
            ) from None
        except (rx.RedisError, OSError) as exc:
            raise describe(exc, self.url, self.timeout) from None
        except ValueError as exc:
            raise describe(_broken(exc), self.url, self.timeout) from None

    # --- the link's state -------------------------------------------------

    async def wait_up(self) -> None:
        """Return when the link is up (at once if it is)."""
        await self._up.wait()

    async def wait_down(self) -> None:
        """Return when the link is down (at once if it is)."""
        await self._down.wait()

    def _mark_down(self, err: RedisUnavailableError) -> None:
        if not self.up and self.problem is not None:
            return
        self.up = False
        self.problem = err
        self.down_since = trio.current_time()
        self._up = trio.Event()
        self._down.set()
        log.warning("%s; Core goes on from memory and tries again", err)

    def _mark_up(self) -> None:
        if self.up:
            return
        if self.down_since is not None:
            log.warning(
                "Redis at %s is back after %.0f s; resyncing",
                self.where,
                trio.current_time() - self.down_since,
            )
        else:
            log.info("using Redis at %s (version %s)", self.where, self.server_version or "?")
        self.up = True
        self.problem = None
        self.down_since = None
        self.connects += 1
        self._down = trio.Event()
        self._up.set()

    async def _check(self) -> None:
        def ping(client: redis.Redis) -> str:
            client.ping()
            info: dict[str, Any] = client.info("server")
            return str(info.get("redis_version", ""))

        self.server_version = await self._run(partial(ping, self.client), self._check_limiter)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link: the first check before ``started`` (so Core says at
        once whether Redis is there), then checks and reconnects with backoff."""
        delay = self.backoff
        started = False
        while True:
            try:
                await self._check()
            except RedisUnavailableError as err:
                self._mark_down(err)
            else:
                self._mark_up()
                delay = self.backoff
            if not started:
                started = True
                task_status.started()
            if self.up:
                with trio.move_on_after(self.check_every):
                    await self._down.wait()  # a call saw it fail: start retrying now
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)

    def close(self) -> None:
        self.client.close()

    # --- pub/sub ------------------------------------------------------------

    async def follow(
        self,
        channels: Sequence[str],
        handle: Callable[[Message], None],
        *,
        buffer: int,
        wanted: Callable[[], frozenset[str]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """``handle`` each message on ``channels`` (and on ``wanted()``'s, see
        ``subscribe``), subscribed again after every outage.

        Started once subscribed, or at once when Redis is down (Core starts
        without it and does not wait). Runs until cancelled.
        """
        started = False
        while True:
            if not self.up:
                if not started:
                    started = True
                    task_status.started()
                await self.wait_up()
            send, receive = trio.open_memory_channel[Message](buffer)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(self.subscribe, channels, send, wanted=wanted))
                    if not started:
                        started = True
                        task_status.started()
                    async for message in receive:
                        handle(message)
            except* RedisUnavailableError:
                pass  # logged by the link, which comes back
            await trio.sleep(self.backoff)

    async def subscribe(
        self,
        channels: Sequence[str],
        send: trio.MemorySendChannel[Message],
        *,
        wanted: Callable[[], frozenset[str]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Feed what is published on ``channels`` into ``send`` until cancelled.

        Runs on a thread of its own (not one of the call threads); a full
        ``send`` holds the thread back and Redis buffers for it. Started once
        subscribed; raises ``RedisUnavailableError`` when the link breaks
        (messages published meanwhile are not seen: pub/sub keeps nothing).
        ``wanted``, called from that thread before each read (at least every
        ``POLL`` s), names more channels to follow for as long as it names
        them: subscribed when they appear, unsubscribed when they go.
        """
        timeout = self.timeout
        pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        initial = {c.encode() for c in channels}

        def loop() -> None:
            pubsub.subscribe(*channels)
            confirmed = 0
            waited = 0.0
            extra: frozenset[str] = frozenset()
            while True:
                trio.from_thread.check_cancelled()
                if wanted is not None and confirmed >= len(channels):
                    want = wanted() - set(channels)
                    if want != extra:
                        if want - extra:
                            pubsub.subscribe(*(want - extra))
                        if extra - want:
                            pubsub.unsubscribe(*(extra - want))
                        extra = want
                got = pubsub.get_message(timeout=POLL)
                if got is None:
                    waited += POLL
                    if confirmed < len(channels) and waited > timeout:
                        raise rx.TimeoutError("SUBSCRIBE was not confirmed")
                    continue
                if got.get("type") == "subscribe":
                    name = got.get("channel")
                    if (name if isinstance(name, bytes) else str(name).encode()) in initial:
                        confirmed += 1
                        if confirmed == len(channels):  # published from now on: seen
                            trio.from_thread.run_sync(task_status.started)
                    continue
                if got.get("type") != "message":
                    continue
                channel = got["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                trio.from_thread.run(send.send, (name, got["data"]))

        try:
            await trio.to_thread.run_sync(loop, limiter=trio.CapacityLimiter(1))
        except (rx.RedisError, OSError, ValueError) as exc:
            err = describe(_broken(exc) if isinstance(exc, ValueError) else exc, self.url, timeout)
            self._mark_down(err)
            raise err from None
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pubsub.close)


def _broken(exc: ValueError) -> rx.ConnectionError:
    """redis-py reading a socket that its own clean-up closed meanwhile (Redis
    went away mid-command) raises ValueError ("I/O operation on closed file"):
    a lost connection, not a bad URL."""
    return rx.ConnectionError(f"connection lost ({exc})")
