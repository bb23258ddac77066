"""This machine's metrics as wire messages: a ``SystemInfo`` once, a ``Sample`` per beat.

CPU times and disk and network bytes are cumulative counters: they only mean
something as a difference. A ``Collector`` keeps the previous reading
(``Counters``) and turns the difference to the new one into percentages and
bytes per second with ``rates``, a pure function. Everything outside the
process comes through a ``MetricsSource`` (``PsutilSource`` by default), so
tests feed fixed counters and a fake clock.

A value that cannot be read, or that would be a guess (first reading, a
counter that went backwards), is ``None``; nothing here raises because one
reading failed.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

import psutil

from servermgr.common import proto
from servermgr.common.text import printable

T = TypeVar("T")

# What "this value cannot be read" looks like: psutil raises its own errors
# (AccessDenied...), OSError from /proc and /sys, RuntimeError (including
# NotImplementedError) where a platform lacks a counter, ValueError for /proc
# content it cannot parse.
_UNREADABLE: tuple[type[Exception], ...] = (OSError, RuntimeError, ValueError, psutil.Error)

MAX_DISKS = 256  # proto.Sample.disks max_length
MAX_NETS = 256  # proto.Sample.nets max_length
# Limits of proto's Line, Word and InfoText: what the node reports is made
# printable and cut to them here, so Core never has to refuse a real machine.
_MAX_TEXT = 1024
_MAX_WORD = 64
_MAX_INFO = 256

# Mounted file systems that hold no user data (or are another mount seen
# twice). psutil's ``all=False`` already drops most "nodev" ones, including
# network file systems whose statvfs can hang.
PSEUDO_FSTYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
        "devfs", "devpts", "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue",
        "nsfs", "overlay", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs",
        "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    }
)  # fmt: skip

# Block devices stacked on others (device mapper, md RAID, DRBD), backed by
# files (loop) or memory (ram, zram), or by the network (nbd, rbd): counting
# them with the disks below would count the same bytes twice, or non-disk bytes.
VIRTUAL_DISK_PREFIXES = ("dm-", "md", "drbd", "loop", "ram", "zram", "nbd", "rbd")


# --- readings --------------------------------------------------------------


class CpuTimes(NamedTuple):
    """Cumulative CPU seconds: all of them, and those spent idle (iowait included)."""

    total: float
    idle: float


class DiskBytes(NamedTuple):
    read: int
    written: int


class NetBytes(NamedTuple):
    rx: int
    tx: int


class Memory(NamedTuple):
    total: int
    used: int
    available: int
    percent: float


class Swap(NamedTuple):
    total: int
    used: int
    percent: float


class Partition(NamedTuple):
    device: str
    mount: str
    fstype: str


class Usage(NamedTuple):
    total: int
    used: int
    percent: float


class MetricsSource(Protocol):
    """The outside world of a ``Collector``.

    Any method may raise ``OSError`` (or a psutil error) when its value
    cannot be read; the collector reports that value as unknown.
    """

    def cpu_times(self) -> CpuTimes: ...
    def cpu_times_per_core(self) -> Sequence[CpuTimes]: ...
    def cpu_count(self) -> int | None: ...
    def load_average(self) -> tuple[float, float, float]: ...
    def memory(self) -> Memory: ...
    def swap(self) -> Swap: ...
    def boot_time(self) -> float: ...
    def process_count(self) -> int: ...
    def partitions(self) -> Sequence[Partition]: ...
    def disk_usage(self, mount: str) -> Usage: ...
    def disk_io(self) -> Mapping[str, DiskBytes]:
        """Bytes per whole block device (no partitions)."""
        ...

    def net_io(self) -> Mapping[str, NetBytes]:
        """Bytes per network interface, loopback included."""
        ...


def cpu_times_from(fields: Mapping[str, float]) -> CpuTimes:
    """``CpuTimes`` from psutil's ``cpu_times()`` fields.

    Linux already counts guest time in user and nice, so it is not added
    twice; iowait is time the CPU did nothing (as htop and psutil do).
    """
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    return CpuTimes(total=total, idle=fields.get("idle", 0.0) + fields.get("iowait", 0.0))


class PsutilSource:
    """The real machine, through psutil and the standard library."""

    def cpu_times(self) -> CpuTimes:
        return cpu_times_from(psutil.cpu_times()._asdict())

    def cpu_times_per_core(self) -> list[CpuTimes]:
        return [cpu_times_from(t._asdict()) for t in psutil.cpu_times(percpu=True)]

    def cpu_count(self) -> int | None:
        count: int | None = psutil.cpu_count(logical=True)
        return count

    def load_average(self) -> tuple[float, float, float]:
        return os.getloadavg()

    def memory(self) -> Memory:
        m = psutil.virtual_memory()
        return Memory(total=m.total, used=m.used, available=m.available, percent=m.percent)

    def swap(self) -> Swap:
        s = psutil.swap_memory()
        return Swap(total=s.total, used=s.used, percent=s.percent)

    def boot_time(self) -> float:
        return float(psutil.boot_time())

    def process_count(self) -> int:
        return len(psutil.pids())

    def partitions(self) -> list[Partition]:
        return [
            Partition(device=p.device, mount=p.mountpoint, fstype=p.fstype)
            for p in psutil.disk_partitions(all=False)
        ]

    def disk_usage(self, mount: str) -> Usage:
        u = psutil.disk_usage(mount)
        return Usage(total=u.total, used=u.used, percent=u.percent)

    def disk_io(self) -> dict[str, DiskBytes]:
        # Raw counters (nowrap=False): a counter that went back is reported as
        # unknown rather than "corrected" by psutil's guess.
        counters = psutil.disk_io_counters(perdisk=True, nowrap=False)
        if sys.platform == "linux":
            # perdisk lists partitions too; /sys/block holds only whole devices.
            whole = set(os.listdir("/sys/block"))
            counters = {name: c for name, c in counters.items() if name in whole}
        return {name: DiskBytes(c.read_bytes, c.write_bytes) for name, c in counters.items()}

    def net_io(self) -> dict[str, NetBytes]:
        counters = psutil.net_io_counters(pernic=True, nowrap=False)
        return {name: NetBytes(c.bytes_recv, c.bytes_sent) for name, c in counters.items()}


# --- rates (pure) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counters:
    """One reading of the cumulative counters, taken at ``at`` (clock seconds)."""

    at: float
    cpu: CpuTimes | None = None
    cores: Sequence[CpuTimes] | None = None
    disks: Mapping[str, DiskBytes] | None = None
    nets: Mapping[str, NetBytes] | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """What changed between two ``Counters``; ``None`` where unknown.

    ``cpu_per_core`` is empty when any core's share is unknown (the wire
    list has no room for a gap).
    """

    cpu_percent: float | None = None
    cpu_per_core: list[float] = field(default_factory=list)
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    nets: list[proto.NetRate] = field(default_factory=list)


def is_loopback(interface: str) -> bool:
    return interface.startswith("lo")


def is_virtual_disk(device: str) -> bool:
    return device.startswith(VIRTUAL_DISK_PREFIXES)


def cpu_percent(prev: CpuTimes, cur: CpuTimes) -> float | None:
    """Busy share of the CPU time that passed, 0..100; ``None`` if none passed."""
    total = cur.total - prev.total
    if not total > 0 or not math.isfinite(total):
        return None
    busy = total - (cur.idle - prev.idle)
    return min(100.0, max(0.0, 100.0 * busy / total))


def _per_second(prev: int, cur: int, elapsed: float) -> float | None:
    return None if cur < prev else (cur - prev) / elapsed


def _byte_rates(
    prev: Mapping[str, tuple[int, int]] | None,
    cur: Mapping[str, tuple[int, int]],
    elapsed: float | None,
) -> tuple[dict[str, tuple[float | None, float | None]], tuple[float | None, float | None]]:
    """Per-name rates of both counters, and their totals over names seen both times.

    A name new in ``cur`` has unknown rates and stays out of the totals (its
    bytes before it appeared are unknown); one counter that went back makes
    that total unknown.
    """
    per_name: dict[str, tuple[float | None, float | None]] = {}
    if prev is None or elapsed is None:
        return dict.fromkeys(cur, (None, None)), (None, None)
    sums: list[float | None] = [0.0, 0.0]
    common = 0
    for name, now in cur.items():
        before = prev.get(name)
        if before is None:
            per_name[name] = (None, None)
            continue
        common += 1
        pair = (_per_second(before[0], now[0], elapsed), _per_second(before[1], now[1], elapsed))
        per_name[name] = pair
        for i, rate in enumerate(pair):
            total = sums[i]
            sums[i] = None if rate is None or total is None else total + rate
    if common == 0 and cur:
        return per_name, (None, None)
    return per_name, (sums[0], sums[1])


def _top_nets(nets: list[proto.NetRate], limit: int) -> list[proto.NetRate]:
    """At most ``limit`` interfaces, the busiest if there are more, by name."""
    if len(nets) > limit:
        nets = sorted(nets, key=lambda n: -((n.rx_bps or 0.0) + (n.tx_bps or 0.0)))[:limit]
    return sorted(nets, key=lambda n: n.name)


def rates(prev: Counters | None, cur: Counters) -> Rates:
    """Rates between two readings (``prev`` None: the first reading, all unknown).

    Loopback interfaces and virtual block devices are left out; byte rates
    need clock time to have passed between the readings.
    """
    nets_now = {n: c for n, c in (cur.nets or {}).items() if not is_loopback(n)}
    disks_now = {d: c for d, c in (cur.disks or {}).items() if not is_virtual_disk(d)}
    if prev is None:
        unknown = [
            proto.NetRate(name=_clean(n, _MAX_WORD), rx_bps=None, tx_bps=None) for n in nets_now
        ]
        return Rates(nets=_top_nets(unknown, MAX_NETS))

    seconds = cur.at - prev.at
    elapsed = seconds if seconds > 0 and math.isfinite(seconds) else None

    cpu = None
    if prev.cpu is not None and cur.cpu is not None:
        cpu = cpu_percent(prev.cpu, cur.cpu)
    per_core: list[float] = []
    if prev.cores is not None and cur.cores is not None and len(prev.cores) == len(cur.cores):
        shares = [cpu_percent(p, c) for p, c in zip(prev.cores, cur.cores, strict=True)]
        per_core = [s for s in shares if s is not None]
        if len(per_core) != len(shares):
            per_core = []

    disk_total: tuple[float | None, float | None] = (None, None)
    if cur.disks is not None:
        _, disk_total = _byte_rates(prev.disks, disks_now, elapsed)

    net_total: tuple[float | None, float | None] = (None, None)
    nets: list[proto.NetRate] = []
    if cur.nets is not None:
        per_nic, net_total = _byte_rates(prev.nets, nets_now, elapsed)
        nets = [
            proto.NetRate(name=_clean(n, _MAX_WORD), rx_bps=rx, tx_bps=tx)
            for n, (rx, tx) in per_nic.items()
        ]
    return Rates(
        cpu_percent=cpu,
        cpu_per_core=per_core,
        disk_read_bps=disk_total[0],
        disk_write_bps=disk_total[1],
        net_rx_bps=net_total[0],
        net_tx_bps=net_total[1],
        nets=_top_nets(nets, MAX_NETS),
    )


def real_disks(
    partitions: Iterable[Partition], usage: Callable[[str], Usage]
) -> list[proto.DiskUsage]:
    """Usage of each real file system, once per device (its first readable mount)."""
    disks: list[proto.DiskUsage] = []
    seen: set[str] = set()
    for p in partitions:
        mount = printable(p.mount)
        if p.device in seen or _is_pseudo_fs(p.fstype) or len(mount) > _MAX_TEXT:
            continue
        try:
            u = usage(p.mount)
        except _UNREADABLE:
            continue
        percent = _percent(u.percent)
        if u.total <= 0 or percent is None:
            continue
        seen.add(p.device)
        disks.append(
            proto.DiskUsage(
                mount=mount,
                fstype=_clean(p.fstype, _MAX_WORD),
                total=u.total,
                used=min(max(u.used, 0), u.total),
                percent=percent,
            )
        )
        if len(disks) == MAX_DISKS:
            break
    return disks


def _is_pseudo_fs(fstype: str) -> bool:
    return fstype in PSEUDO_FSTYPES or fstype.startswith(("cgroup", "fuse."))


def _percent(value: float) -> float | None:
    return min(100.0, max(0.0, value)) if math.isfinite(value) else None


def _nonneg(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def _nonneg_int(value: int) -> int | None:
    return value if value >= 0 else None


# --- collector -------------------------------------------------------------


def _read(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except _UNREADABLE:
        return None


class Collector:
    """Samples this machine; each ``sample()`` reports rates since the previous one.

    Synchronous and cheap (a few reads of /proc): meant to be called every
    few seconds from the agent's heartbeat loop.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        source: MetricsSource | None = None,
    ) -> None:
        self._clock = clock
        self._source: MetricsSource = source if source is not None else PsutilSource()
        self._prev: Counters | None = None

    def _counters(self) -> Counters:
        s = self._source
        return Counters(
            at=self._clock(),
            cpu=_read(s.cpu_times),
            cores=_read(s.cpu_times_per_core),
            disks=_read(s.disk_io),
            nets=_read(s.net_io),
        )

    def prime(self) -> None:
        """Take the reading the first ``sample()`` measures from."""
        self._prev = self._counters()

    def sample(self) -> proto.Sample:
        """A new reading; rates are since the previous one (unknown if there was none)."""
        cur = self._counters()
        prev, self._prev = self._prev, cur
        r = rates(prev, cur)
        s = self._source
        load = _read(s.load_average)
        mem = _read(s.memory)
        swap = _read(s.swap)
        boot = _read(s.boot_time)
        procs = _read(s.process_count)
        parts = _read(s.partitions)
        uptime = None if boot is None else _nonneg(cur.at - boot)
        return proto.Sample(
            ts=max(0.0, cur.at),
            cpu_percent=r.cpu_percent,
            cpu_per_core=r.cpu_per_core,
            load1=None if load is None else _nonneg(load[0]),
            load5=None if load is None else _nonneg(load[1]),
            load15=None if load is None else _nonneg(load[2]),
            mem_total=None if mem is None else _nonneg_int(mem.total),
            mem_used=None if mem is None else _nonneg_int(mem.used),
            mem_available=None if mem is None else _nonneg_int(mem.available),
            mem_percent=None if mem is None else _percent(mem.percent),
            swap_total=None if swap is None else _nonneg_int(swap.total),
            swap_used=None if swap is None else _nonneg_int(swap.used),
            swap_percent=None if swap is None else _percent(swap.percent),
            disks=[] if parts is None else real_disks(parts, s.disk_usage),
            disk_read_bps=r.disk_read_bps,
            disk_write_bps=r.disk_write_bps,
            net_rx_bps=r.net_rx_bps,
            net_tx_bps=r.net_tx_bps,
            nets=r.nets,
            uptime=uptime,
            procs=None if procs is None else _nonneg_int(procs),
        )


# --- static facts ----------------------------------------------------------


def cpu_model_from_cpuinfo(text: str) -> str | None:
    """The first ``model name`` in /proc/cpuinfo text."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def os_name_from_release(fields: Mapping[str, str]) -> str | None:
    """A human name from os-release fields: PRETTY_NAME, else NAME and VERSION."""
    pretty = fields.get("PRETTY_NAME", "").strip()
    if pretty:
        return pretty
    name = " ".join(v for k in ("NAME", "VERSION") if (v := fields.get(k, "").strip()))
    return name or None


def _os_name() -> str | None:
    try:
        name = os_name_from_release(platform.freedesktop_os_release())
    except OSError:
        name = None
    return name or platform.system() or None


def _cpu_model(cpuinfo: str) -> str | None:
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            model = cpu_model_from_cpuinfo(f.read())
    except OSError:
        model = None
    if model is None:
        # On Linux this is often `uname -p`: the architecture or "unknown",
        # which is not a CPU model.
        processor = platform.processor().strip()
        if processor and processor not in {"unknown", platform.machine()}:
            model = processor
    return model


def _clean(value: str, limit: int) -> str:
    return printable(value)[:limit]


def _text(value: str | None) -> str | None:
    return _clean(value, _MAX_INFO) if value else None


def system_info(
    source: MetricsSource | None = None, *, cpuinfo: str = "/proc/cpuinfo"
) -> proto.SystemInfo:
    """Static facts about this machine for ``hello``; ``None`` where unknown."""
    src: MetricsSource = source if source is not None else PsutilSource()
    count = _read(src.cpu_count)
    mem = _read(src.memory)
    boot = _read(src.boot_time)
    return proto.SystemInfo(
        os=_text(_read(_os_name)),
        kernel=_text(_read(platform.release)),
        arch=_text(_read(platform.machine)),
        cpu_model=_text(_read(functools.partial(_cpu_model, cpuinfo))),
        cpu_count=count if count is not None and count > 0 else None,
        mem_total=None if mem is None or mem.total <= 0 else mem.total,
        boot_time=None if boot is None else _nonneg(boot),
    )
