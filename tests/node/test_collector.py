"""The node's metrics collector: real psutil on this machine, and fixed counters."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from servermgr.common import proto
from servermgr.node.collector import (
    Collector,
    Counters,
    CpuTimes,
    DiskBytes,
    Memory,
    NetBytes,
    Partition,
    Swap,
    Usage,
    cpu_model_from_cpuinfo,
    cpu_times_from,
    os_name_from_release,
    rates,
    system_info,
)

PSEUDO = {"tmpfs", "devtmpfs", "proc", "sysfs", "overlay", "squashfs", "devpts", "mqueue"}


def roundtrip(sample: proto.Sample) -> proto.Sample:
    """The sample as Core decodes it from a heartbeat frame."""
    msg = proto.decode(proto.encode(proto.Heartbeat(seq=1, samples=[sample])))
    assert isinstance(msg, proto.Heartbeat)
    return msg.samples[0]


# --- fakes -----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSource:
    """Fixed readings; a method named in ``broken`` raises OSError."""

    cpu: CpuTimes = CpuTimes(total=100.0, idle=80.0)
    cores: list[CpuTimes] = field(
        default_factory=lambda: [CpuTimes(50.0, 40.0), CpuTimes(50.0, 40.0)]
    )
    count: int | None = 2
    load: tuple[float, float, float] = (0.5, 0.25, 0.125)
    mem: Memory = Memory(total=8000, used=3000, available=5000, percent=37.5)
    swp: Swap = Swap(total=2000, used=500, percent=25.0)
    boot: float = 4000.0
    procs: int = 42
    parts: list[Partition] = field(default_factory=lambda: [Partition("/dev/sda1", "/", "ext4")])
    usage: dict[str, Usage | OSError] = field(
        default_factory=lambda: {"/": Usage(total=1000, used=250, percent=25.0)}
    )
    disks: dict[str, DiskBytes] = field(default_factory=lambda: {"sda": DiskBytes(0, 0)})
    nets: dict[str, NetBytes] = field(default_factory=lambda: {"eth0": NetBytes(0, 0)})
    broken: set[str] = field(default_factory=set)

    def _check(self, name: str) -> None:
        if name in self.broken:
            raise OSError(f"{name} unavailable")

    def cpu_times(self) -> CpuTimes:
        self._check("cpu_times")
        return self.cpu

    def cpu_times_per_core(self) -> list[CpuTimes]:
        self._check("cpu_times_per_core")
        return list(self.cores)

    def cpu_count(self) -> int | None:
        self._check("cpu_count")
        return self.count

    def load_average(self) -> tuple[float, float, float]:
        self._check("load_average")
        return self.load

    def memory(self) -> Memory:
        self._check("memory")
        return self.mem

    def swap(self) -> Swap:
        self._check("swap")
        return self.swp

    def boot_time(self) -> float:
        self._check("boot_time")
        return self.boot

    def process_count(self) -> int:
        self._check("process_count")
        return self.procs

    def partitions(self) -> list[Partition]:
        self._check("partitions")
        return list(self.parts)

    def disk_usage(self, mount: str) -> Usage:
        self._check("disk_usage")
        result = self.usage[mount]
        if isinstance(result, OSError):
            raise result
        return result

    def disk_io(self) -> dict[str, DiskBytes]:
        self._check("disk_io")
        return dict(self.disks)

    def net_io(self) -> dict[str, NetBytes]:
        self._check("net_io")
        return dict(self.nets)


def primed(source: FakeSource, clock: FakeClock) -> Collector:
    collector = Collector(clock=clock, source=source)
    collector.prime()
    return collector


def nets_by_name(sample: proto.Sample) -> dict[str, tuple[float | None, float | None]]:
    return {n.name: (n.rx_bps, n.tx_bps) for n in sample.nets}


# --- real machine ----------------------------------------------------------


def burn_cpu(seconds: float) -> None:
    start, deadline = time.process_time(), time.monotonic() + 5
    while time.process_time() - start < seconds and time.monotonic() < deadline:
        sum(i * i for i in range(1000))


def test_real_sample_after_prime_is_consistent() -> None:
    collector = Collector()
    collector.prime()
    burn_cpu(0.15)
    sample = roundtrip(collector.sample())

    assert sample.cpu_percent is not None
    assert 0 < sample.cpu_percent <= 100
    assert len(sample.cpu_per_core) == psutil.cpu_count()
    assert all(0 <= p <= 100 for p in sample.cpu_per_core)
    assert sample.mem_total is not None
    assert sample.mem_total > 0
    assert sample.mem_used is not None
    assert sample.mem_used <= sample.mem_total
    assert sample.mem_available is not None
    assert sample.mem_available <= sample.mem_total
    assert sample.mem_percent is not None
    assert 0 <= sample.mem_percent <= 100
    assert sample.load1 is not None
    assert sample.load1 >= 0
    assert sample.uptime is not None
    assert sample.uptime > 0
    assert sample.procs is not None
    assert sample.procs > 1
    assert any(d.total > 0 for d in sample.disks)
    for disk in sample.disks:
        assert disk.fstype not in PSEUDO
        assert not disk.fstype.startswith(("cgroup", "fuse."))
        assert 0 <= disk.used <= disk.total
    assert len({d.mount for d in sample.disks}) == len(sample.disks)
    assert not any(n.name.startswith("lo") for n in sample.nets)
    for rate in (sample.disk_read_bps, sample.disk_write_bps, sample.net_rx_bps, sample.net_tx_bps):
        assert rate is not None
        assert rate >= 0
    for nic in sample.nets:
        assert nic.rx_bps is not None
        assert nic.rx_bps >= 0
        assert nic.tx_bps is not None
        assert nic.tx_bps >= 0


def test_real_sample_without_prime_has_unknown_rates() -> None:
    sample = roundtrip(Collector().sample())
    assert sample.cpu_percent is None
    assert sample.cpu_per_core == []
    assert sample.disk_read_bps is None
    assert sample.disk_write_bps is None
    assert sample.net_rx_bps is None
    assert sample.net_tx_bps is None
    assert all(n.rx_bps is None and n.tx_bps is None for n in sample.nets)
    assert sample.mem_total is not None  # gauges need no previous reading


def test_real_system_info() -> None:
    info = system_info()
    wire = proto.decode(
        proto.encode(
            proto.Hello(protocol=1, node_id="n1", hostname="h", agent_version="0", info=info)
        )
    )
    assert isinstance(wire, proto.Hello)
    assert wire.info == info
    assert info.cpu_count == psutil.cpu_count()
    assert info.mem_total == psutil.virtual_memory().total
    assert isinstance(info.os, str)
    assert info.os
    assert isinstance(info.kernel, str)
    assert info.kernel
    assert isinstance(info.arch, str)
    assert info.arch
    assert info.cpu_model is None or isinstance(info.cpu_model, str)
    assert isinstance(info.boot_time, float)
    assert 0 < info.boot_time < time.time()


# --- fixed counters: rates -------------------------------------------------


def test_byte_rates_are_exact() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 2
    source.disks = {"sda": DiskBytes(read=1000, written=3000)}
    source.nets = {"eth0": NetBytes(rx=1000, tx=4000)}
    sample = roundtrip(collector.sample())
    assert sample.ts == 10_002.0
    assert sample.disk_read_bps == 500.0
    assert sample.disk_write_bps == 1500.0
    assert sample.net_rx_bps == 500.0
    assert sample.net_tx_bps == 2000.0
    assert nets_by_name(sample) == {"eth0": (500.0, 2000.0)}


def test_each_sample_measures_from_the_previous_one() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 1
    source.nets = {"eth0": NetBytes(rx=5000, tx=0)}
    assert collector.sample().net_rx_bps == 5000.0
    clock.now += 4
    source.nets = {"eth0": NetBytes(rx=6000, tx=0)}
    assert collector.sample().net_rx_bps == 250.0


def test_cpu_percent_from_cpu_times() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 5
    # 100 s of CPU passed, 30 idle: 70 % busy. Core 0 fully busy, core 1 40 %.
    source.cpu = CpuTimes(total=200.0, idle=110.0)
    source.cores = [CpuTimes(100.0, 40.0), CpuTimes(100.0, 70.0)]
    sample = roundtrip(collector.sample())
    assert sample.cpu_percent == pytest.approx(70.0)
    assert sample.cpu_per_core == pytest.approx([100.0, 40.0])


def test_cpu_times_from_psutil_fields() -> None:
    fields = {
        "user": 30.0, "nice": 2.0, "system": 8.0, "idle": 50.0, "iowait": 6.0,
        "irq": 1.0, "softirq": 1.0, "steal": 2.0, "guest": 4.0, "guest_nice": 1.0,
    }  # fmt: skip
    # guest time is already inside user and nice; iowait is idle.
    assert cpu_times_from(fields) == CpuTimes(total=100.0, idle=56.0)


def test_cpu_percent_unknown_without_elapsed_cpu_time() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 5
    sample = collector.sample()  # same cpu times as at prime()
    assert sample.cpu_percent is None
    assert sample.cpu_per_core == []


def test_per_core_unknown_when_core_count_changes() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    source.cpu = CpuTimes(total=300.0, idle=200.0)
    source.cores = [CpuTimes(100.0, 50.0)] * 3
    sample = collector.sample()
    assert sample.cpu_percent == pytest.approx(40.0)  # 200 s passed, 120 idle
    assert sample.cpu_per_core == []


def test_cpu_percent_is_clamped() -> None:
    # Some kernels let idle (iowait) go back a little: never below 0 or over 100.
    prev = Counters(at=0, cpu=CpuTimes(100.0, 50.0), cores=[CpuTimes(100.0, 50.0)])
    cur = Counters(at=1, cpu=CpuTimes(110.0, 70.0), cores=[CpuTimes(110.0, 40.0)])
    result = rates(prev, cur)
    assert result.cpu_percent == 0.0
    assert result.cpu_per_core == [100.0]


def test_net_counter_reset_gives_unknown_not_negative() -> None:
    source, clock = FakeSource(), FakeClock()
    source.nets = {"eth0": NetBytes(rx=10_000, tx=10_000), "eth1": NetBytes(0, 0)}
    collector = primed(source, clock)
    clock.now += 2
    source.nets = {"eth0": NetBytes(rx=100, tx=12_000), "eth1": NetBytes(rx=2000, tx=0)}
    sample = roundtrip(collector.sample())
    assert nets_by_name(sample) == {"eth0": (None, 1000.0), "eth1": (1000.0, 0.0)}
    assert sample.net_rx_bps is None  # part of the interval's bytes are unknown
    assert sample.net_tx_bps == 1000.0


def test_disk_counter_reset_gives_unknown() -> None:
    source, clock = FakeSource(), FakeClock()
    source.disks = {"sda": DiskBytes(read=5000, written=0)}
    collector = primed(source, clock)
    clock.now += 1
    source.disks = {"sda": DiskBytes(read=10, written=700)}
    sample = roundtrip(collector.sample())
    assert sample.disk_read_bps is None
    assert sample.disk_write_bps == 700.0


def test_new_interface_has_unknown_rates_and_stays_out_of_total() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 2
    source.nets = {"eth0": NetBytes(rx=200, tx=400), "veth9": NetBytes(rx=10**9, tx=10**9)}
    sample = roundtrip(collector.sample())
    assert nets_by_name(sample) == {"eth0": (100.0, 200.0), "veth9": (None, None)}
    assert sample.net_rx_bps == 100.0
    assert sample.net_tx_bps == 200.0


def test_vanished_interface_is_dropped() -> None:
    source, clock = FakeSource(), FakeClock()
    source.nets = {"eth0": NetBytes(0, 0), "wg0": NetBytes(0, 0)}
    collector = primed(source, clock)
    clock.now += 2
    source.nets = {"eth0": NetBytes(rx=200, tx=0)}
    sample = collector.sample()
    assert nets_by_name(sample) == {"eth0": (100.0, 0.0)}
    assert sample.net_rx_bps == 100.0


def test_loopback_is_excluded() -> None:
    source, clock = FakeSource(), FakeClock()
    source.nets = {"lo": NetBytes(0, 0), "lo1": NetBytes(0, 0), "eth0": NetBytes(0, 0)}
    collector = primed(source, clock)
    clock.now += 1
    source.nets = {
        "lo": NetBytes(rx=10**6, tx=10**6),
        "lo1": NetBytes(rx=10**6, tx=10**6),
        "eth0": NetBytes(rx=300, tx=100),
    }
    sample = roundtrip(collector.sample())
    assert nets_by_name(sample) == {"eth0": (300.0, 100.0)}
    assert sample.net_rx_bps == 300.0
    assert sample.net_tx_bps == 100.0


def test_stacked_and_virtual_disks_are_not_counted_twice() -> None:
    source, clock = FakeSource(), FakeClock()
    names = ["sda", "nvme0n1", "dm-0", "md0", "loop3", "zram0"]
    source.disks = dict.fromkeys(names, DiskBytes(0, 0))
    collector = primed(source, clock)
    clock.now += 1
    source.disks = dict.fromkeys(names, DiskBytes(read=100, written=10))
    sample = collector.sample()
    assert sample.disk_read_bps == 200.0  # sda + nvme0n1 only
    assert sample.disk_write_bps == 20.0


def test_no_elapsed_clock_time_gives_unknown_byte_rates() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    source.nets = {"eth0": NetBytes(rx=100, tx=100)}
    source.disks = {"sda": DiskBytes(read=100, written=100)}
    source.cpu = CpuTimes(total=200.0, idle=130.0)
    clock.now -= 3  # wall clock stepped back
    sample = roundtrip(collector.sample())
    assert sample.net_rx_bps is None
    assert sample.disk_read_bps is None
    assert nets_by_name(sample) == {"eth0": (None, None)}
    assert sample.cpu_percent == pytest.approx(50.0)  # CPU time needs no clock


def test_sample_without_prime_primes_and_has_unknown_rates() -> None:
    source, clock = FakeSource(), FakeClock()
    collector = Collector(clock=clock, source=source)
    first = roundtrip(collector.sample())
    assert first.cpu_percent is None
    assert first.cpu_per_core == []
    assert first.disk_read_bps is None
    assert first.disk_write_bps is None
    assert first.net_rx_bps is None
    assert first.net_tx_bps is None
    assert nets_by_name(first) == {"eth0": (None, None)}
    clock.now += 2
    source.nets = {"eth0": NetBytes(rx=1000, tx=0)}
    assert collector.sample().net_rx_bps == 500.0


def test_rates_is_pure_and_first_reading_is_unknown() -> None:
    cur = Counters(at=5.0, cpu=CpuTimes(1.0, 1.0), nets={"eth0": NetBytes(1, 1)})
    result = rates(None, cur)
    assert result.cpu_percent is None
    assert result.net_rx_bps is None
    assert [(n.name, n.rx_bps) for n in result.nets] == [("eth0", None)]


def test_too_many_interfaces_keeps_the_busiest_within_the_wire_limit() -> None:
    source, clock = FakeSource(), FakeClock()
    source.nets = {f"veth{i:03}": NetBytes(0, 0) for i in range(300)}
    collector = primed(source, clock)
    clock.now += 1
    source.nets = {f"veth{i:03}": NetBytes(rx=i, tx=0) for i in range(300)}
    sample = roundtrip(collector.sample())
    assert len(sample.nets) == 256
    assert {n.name for n in sample.nets} == {f"veth{i:03}" for i in range(44, 300)}
    assert sample.net_rx_bps == sum(range(300))  # the total still counts them all


# --- fixed counters: gauges and failures -----------------------------------


def test_gauges_from_the_source() -> None:
    source, clock = FakeSource(), FakeClock()
    sample = roundtrip(primed(source, clock).sample())
    assert (sample.load1, sample.load5, sample.load15) == (0.5, 0.25, 0.125)
    assert (sample.mem_total, sample.mem_used, sample.mem_available) == (8000, 3000, 5000)
    assert sample.mem_percent == 37.5
    assert (sample.swap_total, sample.swap_used, sample.swap_percent) == (2000, 500, 25.0)
    assert sample.uptime == 6000.0
    assert sample.procs == 42
    assert sample.disks == [proto.DiskUsage("/", "ext4", total=1000, used=250, percent=25.0)]


def test_pseudo_and_duplicate_file_systems_are_skipped() -> None:
    source, clock = FakeSource(), FakeClock()
    source.parts = [
        Partition("/dev/sda1", "/", "ext4"),
        Partition("tmpfs", "/run", "tmpfs"),
        Partition("overlay", "/var/lib/docker/overlay2/x/merged", "overlay"),
        Partition("/dev/loop0", "/snap/core/1", "squashfs"),
        Partition("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        Partition("proc", "/proc", "proc"),
        Partition("sshfs#me@h:", "/mnt/remote", "fuse.sshfs"),
        Partition("/dev/sda1", "/var/lib/docker", "ext4"),  # bind mount of /
        Partition("/dev/sdb1", "/mnt/win", "fuseblk"),
    ]
    source.usage = dict.fromkeys(
        (p.mount for p in source.parts), Usage(total=1000, used=100, percent=10.0)
    )
    sample = roundtrip(primed(source, clock).sample())
    assert [(d.mount, d.fstype) for d in sample.disks] == [("/", "ext4"), ("/mnt/win", "fuseblk")]


def test_failing_disk_is_skipped() -> None:
    source, clock = FakeSource(), FakeClock()
    source.parts = [
        Partition("/dev/sda1", "/", "ext4"),
        Partition("/dev/sdc1", "/mnt/secret", "ext4"),
        Partition("/dev/sdd1", "/mnt/gone", "xfs"),
        Partition("/dev/sdb1", "/data", "xfs"),
    ]
    source.usage = {
        "/": Usage(total=1000, used=250, percent=25.0),
        "/mnt/secret": PermissionError(13, "Permission denied"),
        "/mnt/gone": OSError(5, "Input/output error"),
        "/data": Usage(total=4000, used=1000, percent=25.0),
    }
    sample = roundtrip(primed(source, clock).sample())
    assert [d.mount for d in sample.disks] == ["/", "/data"]


def test_unreadable_first_mount_falls_back_to_the_next_mount_of_that_device() -> None:
    source, clock = FakeSource(), FakeClock()
    source.parts = [Partition("/dev/sdb1", "/locked", "xfs"), Partition("/dev/sdb1", "/srv", "xfs")]
    source.usage = {
        "/locked": PermissionError(13, "Permission denied"),
        "/srv": Usage(total=100, used=1, percent=1.0),
    }
    assert [d.mount for d in primed(source, clock).sample().disks] == ["/srv"]


@pytest.mark.parametrize(
    ("broken", "unknown"),
    [
        ("load_average", ["load1", "load5", "load15"]),
        ("memory", ["mem_total", "mem_used", "mem_available", "mem_percent"]),
        ("swap", ["swap_total", "swap_used", "swap_percent"]),
        ("boot_time", ["uptime"]),
        ("process_count", ["procs"]),
        ("cpu_times", ["cpu_percent"]),
        ("disk_io", ["disk_read_bps", "disk_write_bps"]),
        ("net_io", ["net_rx_bps", "net_tx_bps"]),
    ],
)
def test_unreadable_value_is_none_and_the_rest_is_reported(broken: str, unknown: list[str]) -> None:
    source, clock = FakeSource(), FakeClock()
    collector = primed(source, clock)
    clock.now += 1
    source.cpu = CpuTimes(total=200.0, idle=130.0)
    source.broken = {broken}
    sample = roundtrip(collector.sample())
    for name in unknown:
        assert getattr(sample, name) is None, name
    known = {"load1", "mem_total", "swap_total", "uptime", "procs", "cpu_percent"}
    known |= {"disk_read_bps", "net_rx_bps"}
    for name in known - set(unknown):
        assert getattr(sample, name) is not None, name


def test_unreadable_lists_are_empty() -> None:
    source, clock = FakeSource(), FakeClock()
    source.broken = {"partitions", "net_io", "cpu_times_per_core"}
    sample = roundtrip(primed(source, clock).sample())
    assert sample.disks == []
    assert sample.nets == []
    assert sample.cpu_per_core == []


def test_psutil_error_is_unknown_too() -> None:
    class DeniedSource(FakeSource):
        def process_count(self) -> int:
            raise psutil.AccessDenied()

    sample = Collector(clock=FakeClock(), source=DeniedSource()).sample()
    assert sample.procs is None


def test_uptime_unknown_when_boot_time_is_in_the_future() -> None:
    source = FakeSource(boot=20_000.0)
    assert Collector(clock=FakeClock(), source=source).sample().uptime is None


# --- system info ----------------------------------------------------------


def test_system_info_unknown_fields_are_none() -> None:
    source = FakeSource(broken={"cpu_count", "memory", "boot_time"})
    info = system_info(source, cpuinfo="/nonexistent/cpuinfo")
    assert info.cpu_count is None
    assert info.mem_total is None
    assert info.boot_time is None


def test_system_info_from_source() -> None:
    info = system_info(FakeSource(count=8, boot=1234.5))
    assert (info.cpu_count, info.mem_total, info.boot_time) == (8, 8000, 1234.5)


def test_cpu_model_from_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8375C\n"
    assert cpu_model_from_cpuinfo(text + "processor\t: 1\nmodel name\t: other\n") == (
        "Intel(R) Xeon(R) 8375C"
    )
    assert cpu_model_from_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n") is None
    assert cpu_model_from_cpuinfo("model name\t:   \n") is None


def test_os_name_from_release() -> None:
    assert os_name_from_release({"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}) == (
        "Debian GNU/Linux 12 (bookworm)"
    )
    assert os_name_from_release({"NAME": "Alpine Linux", "VERSION": "3.20"}) == "Alpine Linux 3.20"
    assert os_name_from_release({"ID": "x"}) is None


# --- wire validity ---------------------------------------------------------

counts = st.integers(min_value=0, max_value=2**64)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
cpu_times = st.builds(CpuTimes, total=times, idle=times)
readings = st.builds(
    Counters,
    at=st.floats(min_value=0, max_value=1e10),
    cpu=st.none() | cpu_times,
    cores=st.none() | st.lists(cpu_times, max_size=4),
    disks=st.none()
    | st.dictionaries(st.sampled_from(["sda", "dm-0"]), st.builds(DiskBytes, counts, counts)),
    nets=st.none()
    | st.dictionaries(st.sampled_from(["lo", "eth0", "eth1"]), st.builds(NetBytes, counts, counts)),
)


@given(prev=st.none() | readings, cur=readings)
def test_rates_are_never_negative_or_out_of_range(prev: Counters | None, cur: Counters) -> None:
    result = rates(prev, cur)
    unknown = dict.fromkeys(["load1", "load5", "load15", "uptime", "procs"])
    unknown |= dict.fromkeys(["mem_total", "mem_used", "mem_available", "mem_percent"])
    unknown |= dict.fromkeys(["swap_total", "swap_used", "swap_percent"])
    sample = proto.Sample(
        ts=cur.at,
        cpu_percent=result.cpu_percent,
        cpu_per_core=result.cpu_per_core,
        disks=[],
        disk_read_bps=result.disk_read_bps,
        disk_write_bps=result.disk_write_bps,
        net_rx_bps=result.net_rx_bps,
        net_tx_bps=result.net_tx_bps,
        nets=result.nets,
        **unknown,
    )
    assert roundtrip(sample) == sample  # valid on the wire
    values = [result.disk_read_bps, result.disk_write_bps, result.net_rx_bps, result.net_tx_bps]
    values += [r for n in result.nets for r in (n.rx_bps, n.tx_bps)]
    for value in values:
        assert value is None or (value >= 0 and math.isfinite(value))
    for pct in [result.cpu_percent, *result.cpu_per_core]:
        assert pct is None or 0 <= pct <= 100
