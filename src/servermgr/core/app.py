"""Core: assembles the ASGI app and runs its task tree.

    serve()
    ├── MetricsWriter.serve        the single SQLite writer (batches)
    ├── History.serve              rollups, retention, size cap (through the writer lock),
    │                              by the Core holding the "history" lease of the database
    ├── Scheduler.serve            job deadlines: expire queued, mark silent lost; jobs the
    │                              job queue routes to nodes connected here
    ├── Gateway.serve              silence watchdog; short tasks that send acks
    ├── Authenticator.serve        picks up a rotated key and changed tokens each second
    ├── ScheduleRunner.serve       submits the runs of due schedules as jobs, each second
    ├── AlertEngine.serve          alert timers (pending 'for', repeats, silences ending)
    ├── Notifier.serve             one task and bounded queue per alert receiver
    ├── AlertLog.serve             writes alert transitions and deliveries in batches
    ├── quiet_gc                   keeps the garbage collector's pauses short
    ├── watch_database             stops Core if its database file is deleted or replaced
    ├── NodeRegistry.follow        reloads the node directory another Core process changed
    └── listen.serve               REST + node WebSocket on one port (Hypercorn, own accept loop)

Core's parts get their collaborators when ``build`` makes them; the status
store, event bus and job queue come from ``core/backends.py`` (in memory, or
shared by several Core processes).

Shutdown (``stop`` set, e.g. by SIGTERM): nodes are told (close 1001), the
HTTP server stops, then the writer flushes what it holds and the database is
closed. Nothing buffered is lost.
"""

from __future__ import annotations

import bisect
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from servermgr.common import heap, proto
from servermgr.common.config import Config
from servermgr.common.errors import ServermgrError, StorageUnavailableError, single_error
from servermgr.common.events import EventType
from servermgr.core import alertstore, listen
from servermgr.core import api as api_mod
from servermgr.core.abuse import AuthFailureGuard
from servermgr.core.alertlog import AlertLog
from servermgr.core.alerts import AlertEngine, AlertingStatus
from servermgr.core.alerts_api import AlertsApi
from servermgr.core.auth import Authenticator
from servermgr.core.backends import Backends, memory_backends, open_backends
from servermgr.core.bus import EventBus
from servermgr.core.events_api import EventsApi
from servermgr.core.gateway import NODE_WS_PATH, Gateway, GatewayConfig
from servermgr.core.history import History, retention_of
from servermgr.core.job_streams import JobStreams
from servermgr.core.jobs_api import JobsApi
from servermgr.core.metrics_export import MetricsExport, Sources, metrics_route
from servermgr.core.notify import Notifier
from servermgr.core.ratelimit import FailureLimiter
from servermgr.core.registry import NodeRegistry
from servermgr.core.routes import RouteTable
from servermgr.core.scheduler import Scheduler
from servermgr.core.schedules import ScheduleRunner
from servermgr.core.schedules_api import SchedulesApi
from servermgr.core.security import CoreKey, load_or_create_key
from servermgr.core.sessions import Sessions
from servermgr.core.shell_api import ShellApi
from servermgr.core.status import StatusStore
from servermgr.core.stdin_api import StdinApi
from servermgr.core.storage import Storage
from servermgr.core.stream_relay import StreamDeps
from servermgr.core.tls import TlsFiles
from servermgr.core.tls import load as load_tls
from servermgr.core.transfer import FilesApi
from servermgr.core.upgrade import UpgradeApi
from servermgr.core.webpage import WebPage, package_assets
from servermgr.core.writer import Database, MetricsWriter

log = logging.getLogger("servermgr.core")


@dataclass
class Core:
    """The running parts of one Core process, for callers and tests."""

    config: Config
    key: CoreKey  # as loaded at start; ``auth`` holds the current one
    db: Database
    auth: Authenticator
    registry: NodeRegistry
    backends: Backends
    status: StatusStore  # the backends' status store, telling the alert engine
    writer: MetricsWriter
    sessions: Sessions
    gateway: Gateway
    jobs: Scheduler
    api: api_mod.Api
    routes: RouteTable
    app: Starlette
    asgi: ASGIApp  # what Hypercorn serves: ``app`` behind the abuse guard, node WebSocket first
    schedules: ScheduleRunner
    alerts: AlertEngine
    tls: TlsFiles | None = None
    port: int = 0

    @property
    def bus(self) -> EventBus:
        return self.backends.bus

    @property
    def url(self) -> str:
        host = self.config.server.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def build(
    config: Config,
    key: CoreKey,
    storage: Storage,
    *,
    clock: Callable[[], float],
    tls: TlsFiles | None = None,
    backends: Backends | None = None,
) -> Core:
    """Core's parts, each given its collaborators as it is built."""
    backends = backends or memory_backends()
    status, bus = backends.status, backends.bus
    db = Database(storage)
    registry = NodeRegistry(db, clock=clock)
    alert_log = AlertLog(db, clock=clock)
    notifier = Notifier(config.alerts, alert_log, clock=clock)
    alerts = AlertEngine(config.alerts, registry, bus, notifier, alert_log, clock=clock)
    status = AlertingStatus(status, alerts)
    # A failed batch is retried at least once per heartbeat interval: each try
    # re-acks the nodes, which must hear from Core within their silence limit.
    writer = MetricsWriter(db, retry=min(2.0, config.server.heartbeat_interval))
    sessions = Sessions()
    jobs = Scheduler(
        db,
        registry,
        sessions,
        bus,
        backends.queue,
        status,
        core_id=backends.core_id,
        shared=backends.shared,
        peers_reachable=backends.peers_reachable,
        clock=clock,
    )
    watchers = backends.watchers  # a Redis bus follows other Cores' samples only for them
    interval = config.server.heartbeat_interval
    gateway = Gateway(
        GatewayConfig(heartbeat_interval=interval),
        registry,
        status,
        bus,
        writer,
        sessions,
        jobs,
        clock=clock,
        heartbeat_watchers=watchers,
    )
    auth = Authenticator(key, registry, db, clock=clock)
    api = api_mod.Api(
        auth,
        registry,
        status,
        db,
        sessions,
        bus,
        writer,
        clock,
        retention=retention_of(config.storage),
        started=clock(),
        gc_pauses=GC_PAUSES.doc,
        firing=alerts.firing_count,
    )
    export = MetricsExport(
        registry,
        status,
        Sources(
            writer=writer,
            connected=lambda: len(sessions),
            jobs=jobs,
            outage=db.outage,
            gc=GC_PAUSES,
            gc_pause_bounds_ms=GC_PAUSE_BOUNDS_MS,
            started=api.started,
            alerts=alerts,
        ),
    )
    schedules = ScheduleRunner(db, jobs, clock=clock)
    job_streams = JobStreams(api, jobs)
    stream_deps = StreamDeps(gateway.streams, sessions, registry, db, clock)
    routes = RouteTable(
        auth,
        [
            *api.routes(),
            metrics_route(export, loopback=config.server.metrics_loopback),
            *JobsApi(api, jobs).routes(),
            *SchedulesApi(api, schedules.store).routes(),
            *job_streams.routes(),
            *WebPage(package_assets()).routes(),
            *UpgradeApi(stream_deps, config.storage.data_dir).routes(),
            *AlertsApi(api, alerts).routes(),
        ],
        [
            *gateway.ws_routes(),
            *job_streams.ws_routes(),
            *EventsApi(
                api, jobs, watchers, heartbeat_interval=interval, core_id=backends.core_id
            ).ws_routes(),
            *FilesApi(stream_deps).ws_routes(),
            *ShellApi(stream_deps).ws_routes(),
            *StdinApi(stream_deps, jobs).ws_routes(),
        ],
    )
    app = Starlette(
        routes=routes.routes(),
        exception_handlers={
            HTTPException: api_mod.http_error_handler,
            StorageUnavailableError: api_mod.storage_error_handler,
            500: api_mod.server_error_handler,
        },
    )
    # A path with a trailing slash it does not have is a 404 in the error shape,
    # not a 307 with an empty body (Starlette's constructor takes no such option).
    app.router.redirect_slashes = False
    asgi = AuthFailureGuard(
        node_lane(app, NODE_WS_PATH, routes.ws_endpoint(NODE_WS_PATH)),
        FailureLimiter(config.limits.auth_failures, config.limits.auth_window),
        clock=trio.current_time,
    )
    return Core(
        config,
        key,
        db,
        auth,
        registry,
        backends,
        status,
        writer,
        sessions,
        gateway,
        jobs,
        api,
        routes,
        app,
        asgi,
        schedules,
        alerts,
        tls,
    )


def node_lane(app: ASGIApp, path: str, endpoint: Callable[[WebSocket], Awaitable[None]]) -> ASGIApp:
    """``app``, but the node WebSocket goes straight to ``endpoint``.

    Every node holds its connection open for as long as it runs, so what
    each connection keeps alive counts thousands of times: Starlette's
    router and exception middleware would hold a chain of coroutine frames
    and wrappers per node (about 5 KiB) and wrap every message sent. The
    route stays in ``app`` too (OpenAPI, route listings); it is never reached.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == path:
            await endpoint(WebSocket(scope, receive, send))
        else:
            await app(scope, receive, send)

    return asgi


def hypercorn_config(config: Config, tls: TlsFiles | None = None) -> HyperConfig:
    hc = HyperConfig()
    hc.bind = [config.server.listen]
    if tls is not None:  # https and wss on the same one port
        hc.certfile, hc.keyfile = str(tls.cert), str(tls.key)
        hc.alpn_protocols = ["http/1.1"]
    hc.backlog = 4096
    hc.websocket_max_message_size = proto.MAX_FRAME_BYTES
    hc.h11_max_incomplete_size = 16 * 1024
    hc.graceful_timeout = 5.0
    hc.accesslog = None
    hc.errorlog = logging.getLogger("servermgr.core.http")
    # Hypercorn's idle timer runs from accept until a complete request head,
    # whatever trickles in (slowloris), and between requests of a keep-alive
    # connection: one bound for both. It also holds a connection the client
    # has closed until it ends (the timer outlives the read side), so it
    # bounds how long each ctl run's connections linger in CLOSE-WAIT.
    hc.keep_alive_timeout = config.limits.handshake_timeout
    hc.ssl_handshake_timeout = config.limits.handshake_timeout
    hc.websocket_ping_interval = None
    return hc


async def serve(
    config: Config,
    stop: trio.Event,
    *,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[Core] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run Core until ``stop`` is set; reports the running ``Core`` when listening."""
    tls = await trio.to_thread.run_sync(load_tls, config)  # a ConfigError before anything starts
    if tls is not None and tls.created:
        log.info("created a self-signed TLS certificate in %s", tls.cert)
    key = await trio.to_thread.run_sync(load_or_create_key, config.storage.key_path)
    if key.warning:
        log.warning("%s", key.warning)
    if key.created:
        log.info("created a new core key in %s", key.path)
    storage = await trio.to_thread.run_sync(Storage.open, config.storage.sqlite_path)
    try:
        async with open_backends(config) as backends:
            await _serve(config, stop, key, storage, tls, backends, clock, task_status)
    finally:
        await trio.to_thread.run_sync(storage.close)


async def load_alerts(core: Core, now: float) -> None:
    """Rules made through the API, silences and live alerts, as stored."""
    storage = core.db.storage
    rules = await core.db.read(alertstore.load_rules, storage)
    silences = await core.db.read(alertstore.load_silences, storage, now)
    active = await core.db.read(alertstore.load_active, storage)
    core.alerts.load(rules, silences, active)


async def offline_from_start(core: Core, grace: float) -> None:
    """Nodes not back ``grace`` seconds after Core started are offline from then on
    (their offline rules' 'for' starts): a restart is not an outage of every node."""
    await trio.sleep(grace)
    offline = [row.id for row in core.registry.all() if not core.sessions.is_online(row.id)]
    core.alerts.start_offline(offline)


async def _serve(
    config: Config,
    stop: trio.Event,
    key: CoreKey,
    storage: Storage,
    tls: TlsFiles | None,
    backends: Backends,
    clock: Callable[[], float],
    task_status: trio.TaskStatus[Core],
) -> None:
    core = build(config, key, storage, clock=clock, tls=tls, backends=backends)
    await core.registry.load()
    await core.auth.load()
    await core.jobs.load()
    await load_alerts(core, clock())
    limit, warning = raise_open_files(len(core.registry))
    log.info("open-file limit %d (one per connected node)", limit)
    if warning:
        log.warning("%s", warning)
    async with trio.open_nursery() as outer:
        await outer.start(core.writer.serve)
        # A minute's rollup follows its end by up to six heartbeats (30 s at
        # 5 s): passes every two heartbeats cost 3x the work (11 % of Core's
        # CPU at 10,000 nodes) for minute points nobody reads sooner (they
        # serve ranges over 6 h); the open minute waits until it closes.
        history = History(
            core.db,
            core.api.retention,
            clock=clock,
            interval=min(30.0, 6 * config.server.heartbeat_interval),
            holder=backends.core_id,
        )
        history_scope = trio.CancelScope()

        async def run_history(task_status: trio.TaskStatus[None]) -> None:
            with history_scope:
                await history.serve(task_status=task_status)

        await outer.start(run_history)
        jobs_scope = trio.CancelScope()

        async def run_jobs(task_status: trio.TaskStatus[None]) -> None:
            with jobs_scope:
                await core.jobs.serve(task_status=task_status)

        await outer.start(run_jobs)
        helpers_scope = trio.CancelScope()

        async def run_helpers() -> None:
            with helpers_scope:
                async with trio.open_nursery() as helpers:
                    helpers.start_soon(core.gateway.serve)
                    helpers.start_soon(core.auth.serve)
                    helpers.start_soon(core.schedules.serve)
                    helpers.start_soon(quiet_gc)
                    await helpers.start(core.alerts.log.serve)
                    await helpers.start(core.alerts.notifier.serve)
                    await helpers.start(core.alerts.serve)
                    helpers.start_soon(
                        offline_from_start, core, 3 * config.server.heartbeat_interval + 1
                    )
                    helpers.start_soon(watch_database, core.db)
                    helpers.start_soon(core.registry.follow)

        outer.start_soon(run_helpers)
        stop_http = trio.Event()
        async with trio.open_nursery() as inner:
            try:
                bound = await inner.start(
                    partial(
                        listen.serve,
                        core.asgi,
                        hypercorn_config(config, tls),
                        listen.Gate(
                            config.limits.unauthenticated_connections,
                            send_timeout=config.limits.send_timeout,
                        ),
                        lanes=frozenset({NODE_WS_PATH.encode()}),
                        shutdown_trigger=stop_http.wait,
                    )
                )
            except (OSError, BaseExceptionGroup) as exc:
                raise _listen_error(exc, config) from None
            core.port = _port(bound[0]) if bound else 0
            log.info(
                "Core listening on %s (%d nodes known; data directory %s, its key core.key)",
                core.url,
                len(core.registry),
                config.storage.data_dir,
            )
            if tls is not None:
                log.info("TLS certificate fingerprint %s", tls.fingerprint)
            task_status.started(core)
            await stop.wait()
            log.info("shutting down: telling %d nodes", len(core.sessions))
            core.alerts.stop()  # nodes leaving now are not offline alerts
            await core.sessions.close_all()
            # Ends this Core's event streams (another Core's go on).
            core.bus.publish(
                {
                    "type": EventType.SHUTDOWN,
                    "ts": clock(),
                    "reason": "Core is shutting down",
                    "core": backends.core_id,
                }
            )
            stop_http.set()
        jobs_scope.cancel()
        history_scope.cancel()
        helpers_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await core.alerts.log.flush()
            except StorageUnavailableError:
                log.warning("alert history not written at shutdown: the database is unavailable")
        core.writer.close()
    log.info(
        "stored %d samples in %d batches; database closed",
        core.writer.samples,
        core.writer.batches,
    )


DB_CHECK_EVERY = 2.0


async def watch_database(db: Database, every: float = DB_CHECK_EVERY) -> None:
    """Raise StorageError (Core stops, exit 1) once the database path is deleted or
    names another file: writes would go on into a file nobody can read."""
    while True:
        await trio.sleep(every)
        await db.write(db.storage.check_file)  # between two writes: a rescue copy is whole


FILES_SPARE = 1000  # listener, database, epoll, pipes, REST clients


def raise_open_files(nodes: int) -> tuple[int, str | None]:
    """Raise the soft open-file limit to the hard one: each connected node holds a socket.

    Returns the limit, and a warning when it leaves too little room for
    ``nodes`` registered nodes (a node refused for it would keep retrying).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < nodes + FILES_SPARE:
        return soft, (
            f"the open-file limit ({soft}) is too low for {nodes} nodes plus "
            f"{FILES_SPARE} spare: raise it (systemd: LimitNOFILE=, shell: ulimit -n)"
        )
    return soft, None


GC_PAUSE_BOUNDS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)


class GcPauses:
    """Time the event loop spent stopped in the garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]  # by generation
        self.freed = [0, 0, 0]  # unreachable objects found, by generation
        self.total = 0.0
        self.longest = [0.0, 0.0, 0.0]
        self.frozen = 0
        self.histogram = [0] * (len(GC_PAUSE_BOUNDS_MS) + 1)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        gen = min(info.get("generation", 2), 2)
        self.collections[gen] += 1
        self.freed[gen] += info.get("collected", 0)
        self.total += pause
        self.longest[gen] = max(self.longest[gen], pause)
        self.histogram[bisect.bisect_left(GC_PAUSE_BOUNDS_MS, pause * 1000)] += 1
        if pause > 0.1:
            log.info(
                "garbage collection (generation %d) stopped Core for %.0f ms; %d objects freed",
                gen,
                pause * 1000,
                info.get("collected", 0),
            )

    def doc(self) -> dict[str, Any]:
        return {
            "collections": sum(self.collections),
            "by_generation": list(self.collections),
            "freed_by_generation": list(self.freed),
            "pause_total_ms": round(self.total * 1000, 1),
            "pause_longest_ms": round(max(self.longest) * 1000, 1),
            "longest_by_generation_ms": [round(x * 1000, 1) for x in self.longest],
            "frozen_objects": self.frozen,
            "pauses_ms": {"bounds": GC_PAUSE_BOUNDS_MS, "counts": list(self.histogram)},
        }


GC_PAUSES = GcPauses()
if GC_PAUSES not in gc.callbacks:
    gc.callbacks.append(GC_PAUSES)

GC_YOUNG_EVERY = 0.25
GC_YOUNG_SAMPLE = 40  # ticks: a young collection at least this often (10 s) ...
GC_GARBAGE_SEEN = 10  # ... and at every tick while the last one found this much garbage
GC_FULL_EVERY = 3600.0  # at most this often, and only if the frozen heap grew
GC_FULL_AT_LEAST = 86400.0  # whatever the growth
GC_GROWTH = 0.05
GC_GROWTH_MIN = 50_000
GC_SMALL_HEAP = 300_000  # objects left by a full collection: it takes ~0.1 s or less ...
GC_SMALL_EVERY = 60.0  # ... and may run this often, when the frozen heap grew at all
GC_SMALL_GROWTH_MIN = 1_000


def full_collection_due(since: float, frozen: int, after_full: int) -> bool:
    """Whether to collect everything: ``since`` seconds after the last full one,
    ``frozen`` objects now against ``after_full`` right after it.

    A small heap (a small fleet: a full collection is quick) is collected
    each minute it grew: HTTP connections and jobs leave garbage cycles
    among frozen objects (about 7 MiB per 1,000 ``ctl exec`` runs) that
    would otherwise stay for up to an hour or a day. Small is the heap now,
    not the one after the last full collection: a Core that started empty
    and then took a fleet has a large heap whose collection stops it for
    seconds (2,000 nodes: 1.6 s on a busy machine, a minute after start).
    """
    growth = frozen - after_full
    if frozen <= GC_SMALL_HEAP and since >= GC_SMALL_EVERY and growth > GC_SMALL_GROWTH_MIN:
        return True
    grown = growth > max(GC_GROWTH_MIN, after_full * GC_GROWTH)
    return (since >= GC_FULL_EVERY and grown) or since >= GC_FULL_AT_LEAST


def young_collection_due(ticks_since: int, last_found: int) -> bool:
    """Whether this tick collects the young objects (else it only freezes them):
    ``ticks_since`` the last young collection, which found ``last_found``
    unreachable objects."""
    return last_found >= GC_GARBAGE_SEEN or ticks_since >= GC_YOUNG_SAMPLE


async def quiet_gc() -> None:
    """Keep the cyclic garbage collector from stopping Core for long.

    Each connected node holds a few hundred long-lived objects, and every
    time it wakes, trio and Hypercorn build new wait-state objects for it
    (coroutines, cancel scopes, ~44 tracked) that live until its next wake.
    With CPython's own schedule these pile up in the young generations
    and are rescanned, and the old generation's collections scan
    everything: at 10,000 nodes pauses of 100-450 ms several times a
    minute and a p99 over a second (measured, docs/performance.md).

    So Core runs the collector itself: every 0.25 s it freezes what was
    created since (``gc.freeze``: later collections skip it), and collects it
    first only when there is garbage to find. A steady fleet makes almost
    none (31 unreachable objects in 16,000 heartbeats, measured), while
    scanning a wake's new objects cost ~10 % of Core's CPU; so a young
    collection runs every 10 s to look, and at every tick while the last
    one found garbage (API requests, nodes reconnecting). Objects freed by
    reference counting are freed as always; a garbage cycle that is frozen
    (formed between two looks, or among frozen objects) waits for a full
    collection. That one stops
    Core for about 1.1 s at 10,000 nodes, so it runs at most hourly and only
    when the frozen objects grew by 5 % since the last (nodes reconnecting
    leave such cycles; a steady fleet does not), and at least daily; a
    Core with a small heap (a full collection of 0.1 s or less) runs one
    each minute the frozen objects grew (see ``full_collection_due``).
    CPython's automatic collection is switched off while Core runs and
    restored when it stops (tests run Core inside their own process).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _full_collection()
        last_full = trio.current_time()
        after_full = gc.get_freeze_count()
        ticks = since = 0
        found = GC_GARBAGE_SEEN  # start-up leaves garbage: look at once
        while True:
            await trio.sleep(GC_YOUNG_EVERY)
            since += 1
            if young_collection_due(since, found):
                found = gc.collect(0)
                since = 0
            gc.freeze()
            ticks += 1
            if ticks % 240 != 1:  # the count walks the whole list: once a minute
                continue
            GC_PAUSES.frozen = frozen = gc.get_freeze_count()
            if full_collection_due(trio.current_time() - last_full, frozen, after_full):
                last_full = trio.current_time()
                _full_collection()
                after_full = GC_PAUSES.frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _full_collection() -> None:
    """Collect everything, frozen objects too, freeze the survivors and give the
    freed memory back to the OS."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    heap.trim()


def _listen_error(exc: BaseException, config: Config) -> BaseException:
    """One clear line for a port in use or not allowed; anything else as it was."""
    found = single_error(exc)
    if isinstance(found, OSError):
        return ServermgrError(
            f"cannot listen on {config.server.listen} ({found.strerror or found}): "
            "is another Core running? change [server] listen"
        )
    return exc


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))
