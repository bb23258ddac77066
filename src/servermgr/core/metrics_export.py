"""Prometheus ``/metrics``: Core's own figures and each node's latest figures.

The text exposition format (version 0.0.4) is rendered by hand, not through
prometheus_client's registry: one scrape of a large fleet is hundreds of
thousands of lines, and the per-node part is built from strings cached per
node (its label set changes only on rename or re-labelling) plus the
sample's values; ``bench/prometheus.py`` measures it (docs/performance.md).
Tests parse the output with prometheus_client's own parser.

Every label value passes through ``escape`` (backslash, double quote,
newline), node label keys become ``label_<key>`` with anything outside
``[a-zA-Z0-9_]`` replaced by ``_``.

Node figures are exported for nodes online now; ``servermgr_node_up`` is
there for every registered node (0 when offline), so a stale sample of a
node that went away never looks current.

    MetricsExport.handler        GET /metrics (route table: read, or loopback)
    ├── snapshot()               on trio's thread: node rows + status records, Core figures
    └── render() + gzip          in a worker thread, one scrape at a time
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, Protocol

import trio
from starlette.requests import Request
from starlette.responses import Response

from servermgr import __version__
from servermgr.common import proto
from servermgr.core.auth import Access
from servermgr.core.openapi import Doc
from servermgr.core.registry import NodeRegistry
from servermgr.core.status import LiveStatus, StatusStore
from servermgr.core.storage import NodeRow
from servermgr.core.writer import AGE_BOUNDS_MS, MetricsWriter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
REUSE_FOR = 1.0  # seconds: scrapes within this share one rendering
GZIP_LEVEL = 1  # fast: a large fleet's text is tens of MB


# Buckets of the heartbeat-to-queryable histogram: of the writer's own bounds
# (1.1^k ms), those nearest to 1-2-5 steps, so a scrape stays small.
def _nearest(bounds: Sequence[float], wanted: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted({min(bounds, key=lambda b: abs(b - want)) for want in wanted}))


AGE_BUCKETS_MS = _nearest(
    AGE_BOUNDS_MS, (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)
)


def escape(value: str) -> str:
    """A label value as the exposition format wants it inside double quotes."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """The Prometheus label name of a node label key: ``label_`` + key, sanitized."""
    return "label_" + _NOT_NAME.sub("_", key)


def node_labels(row: NodeRow) -> str:
    """``node="name",label_k="v",...``: keys sorted; of keys equal once sanitized, the first."""
    parts = [f'node="{escape(row.name)}"']
    seen = set()
    for key in sorted(row.labels):
        name = label_name(key)
        if name not in seen:
            seen.add(name)
            parts.append(f'{name}="{escape(row.labels[key])}"')
    return ",".join(parts)


# --- node figures ----------------------------------------------------------

# (name, help, Sample field, format). Fixed formats, not repr: a float's
# shortest repr costs 3-4x a "%.2f" and a scrape formats hundreds of thousands.
NODE_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("servermgr_node_cpu_percent", "CPU busy, percent of all cores", "cpu_percent", "%.2f"),
    ("servermgr_node_load1", "Load average over 1 minute", "load1", "%.2f"),
    ("servermgr_node_load5", "Load average over 5 minutes", "load5", "%.2f"),
    ("servermgr_node_load15", "Load average over 15 minutes", "load15", "%.2f"),
    ("servermgr_node_memory_total_bytes", "Physical memory", "mem_total", "%d"),
    ("servermgr_node_memory_used_bytes", "Memory in use", "mem_used", "%d"),
    (
        "servermgr_node_memory_available_bytes",
        "Memory available without swapping",
        "mem_available",
        "%d",
    ),
    ("servermgr_node_memory_percent", "Memory in use, percent", "mem_percent", "%.2f"),
    ("servermgr_node_swap_total_bytes", "Swap space", "swap_total", "%d"),
    ("servermgr_node_swap_used_bytes", "Swap in use", "swap_used", "%d"),
    ("servermgr_node_swap_percent", "Swap in use, percent", "swap_percent", "%.2f"),
    (
        "servermgr_node_disk_read_bytes_per_second",
        "Disk reads, all disks",
        "disk_read_bps",
        "%.0f",
    ),
    (
        "servermgr_node_disk_write_bytes_per_second",
        "Disk writes, all disks",
        "disk_write_bps",
        "%.0f",
    ),
    (
        "servermgr_node_network_receive_bytes_per_second",
        "Network received, all interfaces",
        "net_rx_bps",
        "%.0f",
    ),
    (
        "servermgr_node_network_transmit_bytes_per_second",
        "Network sent, all interfaces",
        "net_tx_bps",
        "%.0f",
    ),
    ("servermgr_node_uptime_seconds", "Seconds since the node booted", "uptime", "%.0f"),
    ("servermgr_node_processes", "Processes running on the node", "procs", "%d"),
    (
        "servermgr_node_sample_timestamp_seconds",
        "When the latest sample was taken (node clock)",
        "ts",
        "%.3f",
    ),
)

DISK_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("servermgr_node_filesystem_size_bytes", "Size of a mounted filesystem", "total", "%d"),
    ("servermgr_node_filesystem_used_bytes", "Space used on a mounted filesystem", "used", "%d"),
    (
        "servermgr_node_filesystem_used_percent",
        "Space used on a mounted filesystem, percent",
        "percent",
        "%.2f",
    ),
)

UP = ("servermgr_node_up", "1 if the node is connected to Core, else 0")
INFO = ("servermgr_node_info", "Always 1; the node's id and agent version as labels")
LAST_SEEN = ("servermgr_node_last_seen_timestamp_seconds", "When Core last heard from the node")

MAX_CACHED_DISKS = 512  # per node; beyond, the node's disk label sets are rebuilt


def _pct(text: str) -> bytes:
    """``text`` as UTF-8, safe inside a ``%`` template."""
    return text.replace("%", "%%").encode()


class _NodeLines:
    """One node's label sets (UTF-8, ``%``-escaped), built once per node row."""

    __slots__ = ("row", "labels", "info", "disks")

    def __init__(self, row: NodeRow) -> None:
        self.row = row
        self.labels = labels = _pct(node_labels(row))
        ident = _pct(f'id="{escape(row.id)}",agent_version="{escape(row.agent_version or "")}"')
        self.info = labels + b"," + ident
        self.disks: dict[tuple[str, str], bytes] = {}

    def disk(self, d: proto.DiskUsage) -> bytes:
        key = (d.mount, d.fstype)
        found = self.disks.get(key)
        if found is None:
            if len(self.disks) >= MAX_CACHED_DISKS:
                self.disks.clear()
            more = _pct(f',mountpoint="{escape(d.mount)}",fstype="{escape(d.fstype)}"')
            found = self.disks[key] = self.labels + more
        return found


class _Column:
    """One metric's lines for a list of label sets: a ``%`` template over all of them,
    rebuilt only when the list changes (a node comes or goes, a disk is mounted).

    Bytes, not str: the text of a large fleet is tens of MB, and bytes
    templates save encoding (one more copy of all of it) at the end.
    """

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name.encode()
        self.fmt = fmt.encode()
        self._keys: list[bytes] = []
        self._template = b""

    def _template_for(self, keys: Iterable[bytes]) -> bytes:
        name, fmt = self.name, self.fmt
        return b"".join([name + b"{" + k + b"} " + fmt + b"\n" for k in keys])

    def render(self, keys: list[bytes], values: list[Any]) -> bytes:
        """The lines for ``keys`` and their ``values``; a ``None`` value's line is left out."""
        if not keys:
            return b""
        if None in values:  # the slow way: a template for this scrape only
            known = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
            return self._template_for(k for k, _ in known) % tuple(v for _, v in known)
        if keys != self._keys:
            self._template = self._template_for(keys)
            self._keys = keys
        return self._template % tuple(values)


class NodeRenderer:
    """Renders node figures; keeps label sets and templates between scrapes.

    At a steady fleet a scrape is, per metric, one list of values taken from
    the samples and one ``%`` over a cached template: no Python-level work
    per line.
    """

    def __init__(self) -> None:
        self._cache: dict[str, _NodeLines] = {}
        self._up = _Column(UP[0], "%d")
        self._info = _Column(INFO[0], "%d")
        self._seen = _Column(LAST_SEEN[0], "%.3f")
        self._metrics = [_Column(name, fmt) for name, _, _, fmt in NODE_METRICS]
        self._getters = [attrgetter(field) for _, _, field, _ in NODE_METRICS]
        self._disks = [_Column(name, fmt) for name, _, _, fmt in DISK_METRICS]
        self._disk_getters = [attrgetter(field) for _, _, field, _ in DISK_METRICS]

    def render(self, nodes: Iterable[tuple[NodeRow, LiveStatus | None]]) -> list[bytes]:
        cache, self._cache = self._cache, {}
        all_keys: list[bytes] = []
        info_keys: list[bytes] = []
        up: list[int] = []
        seen_keys: list[bytes] = []
        seen: list[float] = []
        keys: list[bytes] = []
        samples: list[proto.Sample] = []
        disk_keys: list[bytes] = []
        disks: list[proto.DiskUsage] = []
        for row, st in nodes:
            lines = cache.get(row.id)
            if lines is None or lines.row is not row:
                lines = _NodeLines(row)
            self._cache[row.id] = lines
            all_keys.append(lines.labels)
            info_keys.append(lines.info)
            online = st is not None and st.online
            up.append(1 if online else 0)
            if st is None:
                continue
            if st.last_seen is not None:
                seen_keys.append(lines.labels)
                seen.append(st.last_seen)
            sample = st.latest
            if not online or sample is None:
                continue
            keys.append(lines.labels)
            samples.append(sample)
            for d in sample.disks:
                disk_keys.append(lines.disk(d))
                disks.append(d)
        out = [_head(*UP, "gauge"), self._up.render(all_keys, up)]
        out += [_head(*INFO, "gauge"), self._info.render(info_keys, [1] * len(info_keys))]
        out += [_head(*LAST_SEEN, "gauge"), self._seen.render(seen_keys, seen)]
        for (name, doc, _, _), column, get in zip(
            NODE_METRICS, self._metrics, self._getters, strict=True
        ):
            out += [_head(name, doc, "gauge"), column.render(keys, list(map(get, samples)))]
        for (name, doc, _, _), column, get in zip(
            DISK_METRICS, self._disks, self._disk_getters, strict=True
        ):
            out += [_head(name, doc, "gauge"), column.render(disk_keys, list(map(get, disks)))]
        return out


def _head(name: str, doc: str, kind: str) -> bytes:
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode()


# --- Core's own figures ------------------------------------------------------


class GcFigures(Protocol):
    """What Core's garbage-collector watch (core/app.py ``GcPauses``) keeps."""

    collections: list[int]
    total: float
    frozen: int
    histogram: list[int]


class AlertCounts(Protocol):
    """Alerts by state (pending, firing, ...), from the alert evaluator when it runs."""

    def by_state(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class CoreFigures:
    """Core's own figures at one moment: plain numbers, rendered by ``render_core``."""

    version: str
    started: float
    nodes_known: int
    nodes_connected: int
    heartbeats_received: int
    heartbeats_stored: int
    samples_stored: int
    ingest_queued: int
    ingest_held: int
    failed_batches: int
    storage_writable: bool
    age_counts: Sequence[int]  # per AGE_BOUNDS_MS bucket, plus one above the last
    age_sum: float
    gc_collections: Sequence[int]  # by generation
    gc_pause_counts: Sequence[int]  # per gc_pause_bounds_ms bucket, plus one above
    gc_pause_bounds_ms: Sequence[float]
    gc_pause_total: float
    gc_frozen: int
    jobs_open: Mapping[str, int]
    jobs_finished: Mapping[str, int]
    alerts: Mapping[str, int] | None = None  # None: no alert evaluator in this Core
    process: Mapping[str, float] = field(default_factory=dict)


def _text_head(name: str, doc: str, kind: str) -> str:
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _histogram(
    name: str,
    doc: str,
    bounds_ms: Sequence[float],
    counts: Sequence[int],
    total: float,
    keep: Sequence[float] | None = None,
) -> list[str]:
    """A cumulative histogram in seconds from per-bucket ``counts`` (last: above every bound);
    ``keep``: the bounds to show (each one of ``bounds_ms``), default all."""
    out = [_text_head(name, doc, "histogram")]
    running = 0
    shown = set(keep) if keep is not None else None
    for bound, n in zip(bounds_ms, counts, strict=False):
        running += n
        if shown is None or bound in shown:
            out.append(f'{name}_bucket{{le="{round(bound / 1000, 6)!r}"}} {running}\n')
    count = sum(counts)
    out.append(f'{name}_bucket{{le="+Inf"}} {count}\n')
    out.append(f"{name}_sum {total!r}\n{name}_count {count}\n")
    return out


def _gauge(name: str, doc: str, value: float, kind: str = "gauge") -> list[str]:
    return [_text_head(name, doc, kind), f"{name} {value!r}\n"]


def render_core(f: CoreFigures) -> list[str]:
    """Core's own figures as exposition lines."""
    out = [
        _text_head("servermgr_core_info", "Always 1; Core's version as a label", "gauge"),
        f'servermgr_core_info{{version="{escape(f.version)}"}} 1\n',
    ]
    out += _gauge("servermgr_core_start_time_seconds", "When Core started (unix)", f.started)
    out += _gauge("servermgr_core_nodes_known", "Nodes registered", f.nodes_known)
    out += _gauge(
        "servermgr_core_nodes_connected", "Nodes connected to this Core now", f.nodes_connected
    )
    out += _gauge(
        "servermgr_core_heartbeats_received_total",
        "Heartbeats received from nodes since start",
        f.heartbeats_received,
        "counter",
    )
    out += _gauge(
        "servermgr_core_heartbeats_stored_total",
        "Heartbeats committed to the database since start",
        f.heartbeats_stored,
        "counter",
    )
    out += _gauge(
        "servermgr_core_samples_stored_total",
        "Samples committed to the database since start (a heartbeat may carry several)",
        f.samples_stored,
        "counter",
    )
    out += _gauge(
        "servermgr_core_ingest_queued", "Heartbeats waiting for the writer", f.ingest_queued
    )
    out += _gauge(
        "servermgr_core_ingest_held", "Heartbeats of a failed batch, to be retried", f.ingest_held
    )
    out += _gauge(
        "servermgr_core_ingest_failed_batches_total",
        "Write batches that failed (and were retried)",
        f.failed_batches,
        "counter",
    )
    out += _gauge(
        "servermgr_core_storage_writable",
        "1 while the database takes writes, 0 during an outage (disk full, ...)",
        int(f.storage_writable),
    )
    out += _histogram(
        "servermgr_core_heartbeat_to_queryable_seconds",
        "From a sample's timestamp (node clock) to its commit in the database",
        AGE_BOUNDS_MS,
        f.age_counts,
        f.age_sum,
        AGE_BUCKETS_MS,
    )
    name = "servermgr_core_gc_collections_total"
    out.append(_text_head(name, "Garbage collections by generation", "counter"))
    out += [f'{name}{{generation="{g}"}} {n}\n' for g, n in enumerate(f.gc_collections)]
    out += _histogram(
        "servermgr_core_gc_pause_seconds",
        "Time Core stood still in the garbage collector, per collection",
        f.gc_pause_bounds_ms,
        f.gc_pause_counts,
        f.gc_pause_total,
    )
    out += _gauge(
        "servermgr_core_gc_frozen_objects", "Objects frozen out of young collections", f.gc_frozen
    )
    name = "servermgr_core_jobs_open"
    out.append(
        _text_head(name, "Job entries (one per job and node) not final yet, by state", "gauge")
    )
    out += [f'{name}{{state="{escape(s)}"}} {n}\n' for s, n in sorted(f.jobs_open.items())]
    name = "servermgr_core_job_results_total"
    out.append(_text_head(name, "Job entries that reached a final state since start", "counter"))
    out += [f'{name}{{state="{escape(s)}"}} {n}\n' for s, n in sorted(f.jobs_finished.items())]
    if f.alerts is not None:
        name = "servermgr_core_alerts"
        out.append(_text_head(name, "Alerts by state", "gauge"))
        out += [f'{name}{{state="{escape(s)}"}} {n}\n' for s, n in sorted(f.alerts.items())]
    for key, (doc, kind) in PROCESS_METRICS.items():
        if key in f.process:
            out += _gauge(f"process_{key}", doc, f.process[key], kind)
    return out


PROCESS_METRICS = {
    "cpu_seconds_total": ("CPU time of the Core process (user + system)", "counter"),
    "resident_memory_bytes": ("Resident memory of the Core process", "gauge"),
    "open_fds": ("Open file descriptors of the Core process", "gauge"),
    "start_time_seconds": ("When the Core process started (unix)", "gauge"),
}


def process_figures() -> dict[str, float]:
    """The standard ``process_*`` figures of this process (empty where unknown)."""
    import psutil

    try:
        proc = psutil.Process()
        with proc.oneshot():
            cpu = proc.cpu_times()
            return {
                "cpu_seconds_total": cpu.user + cpu.system,
                "resident_memory_bytes": float(proc.memory_info().rss),
                "open_fds": float(proc.num_fds()),
                "start_time_seconds": proc.create_time(),
            }
    except (psutil.Error, OSError):
        return {}


def exposition(
    renderer: NodeRenderer, nodes: Iterable[tuple[NodeRow, LiveStatus | None]], core: CoreFigures
) -> bytes:
    """The whole text: Core's figures, then the nodes'."""
    return b"".join(["".join(render_core(core)).encode(), *renderer.render(nodes)])


# --- the route ---------------------------------------------------------------


class Counts(Protocol):
    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]: ...


class Outage(Protocol):
    @property
    def down(self) -> bool: ...


@dataclass(frozen=True)
class Sources:
    """Where Core's own figures come from (Core's parts, given when it is built)."""

    writer: MetricsWriter
    connected: Callable[[], int]
    jobs: Counts
    outage: Outage
    gc: GcFigures
    gc_pause_bounds_ms: Sequence[float]
    started: float
    alerts: AlertCounts | None = None


class MetricsExport:
    """``GET /metrics``: snapshot on trio's thread, render and compress in a worker."""

    def __init__(self, registry: NodeRegistry, status: StatusStore, sources: Sources) -> None:
        self._registry = registry
        self._status = status
        self._sources = sources
        self._nodes = NodeRenderer()
        self._lock = trio.Lock()
        self._last: tuple[float, bytes, bytes | None] | None = None  # (at, text, gzipped)

    def figures(self) -> CoreFigures:
        src = self._sources
        w = src.writer
        open_now, finished = src.jobs.state_counts()
        return CoreFigures(
            version=__version__,
            started=src.started,
            nodes_known=len(self._registry),
            nodes_connected=src.connected(),
            heartbeats_received=w.received,
            heartbeats_stored=w.stored,
            samples_stored=w.samples,
            ingest_queued=w.queued,
            ingest_held=w.held,
            failed_batches=w.failed_batches,
            storage_writable=not src.outage.down,
            age_counts=list(w.age.counts),
            age_sum=w.age.sum,
            gc_collections=list(src.gc.collections),
            gc_pause_counts=list(src.gc.histogram),
            gc_pause_bounds_ms=src.gc_pause_bounds_ms,
            gc_pause_total=src.gc.total,
            gc_frozen=src.gc.frozen,
            jobs_open=open_now,
            jobs_finished=finished,
            alerts=dict(src.alerts.by_state()) if src.alerts is not None else None,
        )

    async def snapshot(self) -> list[tuple[NodeRow, LiveStatus | None]]:
        """Every registered node with its status record, as of now (one read of the store)."""
        live = {st.node_id: st for st in await self._status.all()}
        return [(row, live.get(row.id)) for row in self._registry.all()]

    def render(self, nodes: list[tuple[NodeRow, LiveStatus | None]], core: CoreFigures) -> bytes:
        """The whole exposition (safe in a worker thread: it reads the snapshot only)."""
        return exposition(self._nodes, nodes, replace(core, process=process_figures()))

    async def scrape(self, gzipped: bool) -> tuple[bytes, bool]:
        """The body and whether it is gzipped; one rendering at a time, reused for a second."""
        async with self._lock:
            now = time.monotonic()
            last = self._last
            if last is None or now - last[0] > REUSE_FOR:
                nodes, core = await self.snapshot(), self.figures()
                text = await trio.to_thread.run_sync(self.render, nodes, core)
                last = self._last = (now, text, None)
            if not gzipped:
                return last[1], False
            if last[2] is None:
                packed = await trio.to_thread.run_sync(gzip.compress, last[1], GZIP_LEVEL)
                last = self._last = (last[0], last[1], packed)
            assert last[2] is not None
            return last[2], True

    async def handler(self, request: Request) -> Response:
        accept = request.headers.get("accept-encoding", "")
        wants_gzip = "gzip" in accept.lower()
        body, gzipped = await self.scrape(wants_gzip)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if gzipped else None
        return Response(body, media_type=CONTENT_TYPE, headers=headers)


def metrics_route(
    export: MetricsExport, *, loopback: bool
) -> tuple[str, str, Callable[[Request], Awaitable[Response]], Doc]:
    """The route table entry: read role, or open to loopback clients when configured."""
    doc = Doc(
        "Prometheus metrics: Core's own figures and each node's latest figures "
        "(text exposition format 0.0.4)",
        auth=Access.LOOPBACK if loopback else Access.READ,
        result={"type": "string"},
        media_type="text/plain",
    )
    return ("GET", PATH, export.handler, doc)
