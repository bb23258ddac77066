"""What checking and escaping node strings costs, per message and per table.

Core checks every string a node reports (docs/reference/protocol.md,
"Strings a node reports"); ctl escapes every document from Core before it
draws it. This measures, in-process, median of ``--runs``:

- decoding a heartbeat (one sample, 4 disks, 3 interfaces) and a hello, as
  Core does for every frame, with the checks;
- the same heartbeat with the free-text fields checked by msgspec patterns
  instead (the alternative the post-decode check replaced);
- ``printable_doc`` over a list of node summaries as ``ctl nodes`` and
  ``ctl top`` get them: all safe (the fast path), and with one hostile name
  (every string walked and escaped).

Examples::

    python bench/node_strings.py
    python bench/node_strings.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import benchlib
import msgspec

from servermgr.common import proto
from servermgr.common.text import LINE_PATTERN, printable_doc

_Patterned = Annotated[str, msgspec.Meta(max_length=1024, pattern=LINE_PATTERN)]


class _DiskWithPattern(msgspec.Struct):
    mount: _Patterned
    fstype: _Patterned
    total: int
    used: int
    percent: float


class _NetWithPattern(msgspec.Struct):
    name: _Patterned
    rx_bps: float | None
    tx_bps: float | None


def per_call(fn: Callable[[], Any], calls: int, runs: int) -> float:
    """Median seconds per call of ``runs`` batches of ``calls``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def heartbeat_frame() -> str:
    disks = [
        proto.DiskUsage(mount=f"/srv/data-{i}", fstype="ext4", total=10, used=1, percent=10.0)
        for i in range(4)
    ]
    nets = [proto.NetRate(name=f"eth{i}", rx_bps=1.0, tx_bps=2.0) for i in range(3)]
    sample = proto.Sample(
        ts=1.0,
        cpu_percent=1.0,
        cpu_per_core=[1.0, 2.0],
        load1=0.1,
        load5=0.1,
        load15=0.1,
        mem_total=1,
        mem_used=1,
        mem_available=1,
        mem_percent=1.0,
        swap_total=0,
        swap_used=0,
        swap_percent=0.0,
        disks=disks,
        disk_read_bps=1.0,
        disk_write_bps=1.0,
        net_rx_bps=1.0,
        net_tx_bps=1.0,
        nets=nets,
        uptime=1.0,
        procs=1,
    )
    return proto.encode(proto.Heartbeat(seq=1, samples=[sample]))


def hello_frame() -> str:
    info = proto.SystemInfo(
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0-28-amd64",
        arch="x86_64",
        cpu_model="AMD EPYC 7B13",
        cpu_count=2,
        mem_total=8 << 30,
        boot_time=1.0,
    )
    return proto.encode(
        proto.Hello(
            protocol=1,
            node_id="n0123456789abcdee",
            hostname="web-01",
            agent_version="0.1.0",
            info=info,
            labels={"role": "web"},
        )
    )


def summaries(n: int, hostile: bool) -> list[dict[str, Any]]:
    docs = [
        {
            "id": f"n{i:016x}",
            "name": f"node-{i:05d}",
            "status": "online",
            "labels": {"role": "web", "env": "prod"},
            "agent_version": "0.1.0",
            "cpu_percent": 12.5,
            "mem_percent": 40.0,
            "disk_percent": 70.0,
            "net_rx_bps": 1000.0,
            "net_tx_bps": 2000.0,
            "load1": 0.5,
            "uptime": 3600.0,
            "last_seen": 1.0,
        }
        for i in range(n)
    ]
    if hostile:
        docs[n // 2]["name"] = "evil\x1b]0;pwned\x07"
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, a smaller fleet")
    parser.add_argument("--runs", type=int, default=0, help="batches per figure (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    calls = 2000 if args.quick else 20000
    fleet = 1000 if args.quick else 10000
    benchlib.print_machine()

    heartbeat, hello = heartbeat_frame(), hello_frame()
    doc = msgspec.json.decode(heartbeat)
    disks = msgspec.json.encode(doc["samples"][0]["disks"])
    nets = msgspec.json.encode(doc["samples"][0]["nets"])
    disk_decoder = msgspec.json.Decoder(list[_DiskWithPattern])
    net_decoder = msgspec.json.Decoder(list[_NetWithPattern])

    def by_pattern() -> None:
        disk_decoder.decode(disks)
        net_decoder.decode(nets)

    def plain_then_checked() -> None:
        got = proto.decode_from_node(heartbeat)
        assert isinstance(got, proto.Heartbeat)

    rows: list[list[Any]] = [
        [
            "heartbeat decode (1 sample, 4 disks, 3 interfaces), checks included",
            "us",
            per_call(plain_then_checked, calls, runs) * 1e6,
        ],
        [
            "hello decode, checks included",
            "us",
            per_call(lambda: proto.decode_from_node(hello), calls, runs) * 1e6,
        ],
        [
            "its 4 disks and 3 interfaces alone, checked by msgspec patterns instead",
            "us",
            per_call(by_pattern, calls, runs) * 1e6,
        ],
    ]
    safe, hostile = summaries(fleet, False), summaries(fleet, True)
    rows += [
        [
            f"printable_doc, {fleet:,} node summaries, all safe",
            "ms",
            per_call(lambda: printable_doc(safe), 1, runs) * 1e3,
        ],
        [
            f"printable_doc, {fleet:,} node summaries, one hostile name",
            "ms",
            per_call(lambda: printable_doc(hostile), 1, runs) * 1e3,
        ],
    ]
    benchlib.print_table(
        "Checking and escaping node strings",
        ["what", "unit", "median"],
        [[what, unit, f"{value:.1f}"] for what, unit, value in rows],
    )
    benchlib.write_json(args.json, {"machine": benchlib.machine(), "rows": rows})


if __name__ == "__main__":
    main()
