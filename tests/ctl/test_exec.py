"""``ctl exec``'s output path: streamed as it comes, bounded memory, complete.

The ctl side runs in a worker thread (it is blocking code) against a real
Core and a real agent in this process; what it holds is counted by a Client
that records the largest line and the largest answer it read.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from servermgr.common.errors import UsageError
from servermgr.common.rest import Response
from servermgr.core.app import Core
from servermgr.ctl import exec as exec_mod
from servermgr.ctl.client import Client
from servermgr.ctl.exec import MAX_PARTIAL, RANGE, Printer
from tests.support import StartNode, online, wait_for

BIG = 16 * 1024 * 1024


class CountingClient(Client):
    """A Client that remembers the largest stream line and answer it held."""

    def __init__(self, core: Core) -> None:
        super().__init__(core.url, core.key.value)
        self.largest_line = 0
        self.largest_answer = 0  # of a range read
        self.largest_doc = 0  # of any other request
        self.ranges = 0
        self.streams = 0  # stream requests

    def exec(self, body: dict[str, Any], *, single: bool, out: Any, err: Any = None) -> int:
        try:
            return exec_mod.run(self, body, single=single, out=out, err=err)
        finally:
            self.close()

    def stream_lines(self, path: str, *, read_timeout: float) -> Iterator[bytes]:
        self.streams += 1
        for line in super().stream_lines(path, read_timeout=read_timeout):
            self.largest_line = max(self.largest_line, len(line))
            yield line

    def send(self, method: str, path: str, **kw: Any) -> Response:
        resp = super().send(method, path, **kw)
        if "/output/" in path:
            self.ranges += 1
            self.largest_answer = max(self.largest_answer, len(resp.body))
        else:
            self.largest_doc = max(self.largest_doc, len(resp.body))
        return resp


class Sink(io.RawIOBase):
    """Counts what ctl writes and checks it; stalls once, as a slow pipe would."""

    def __init__(self, stall: threading.Event | None = None) -> None:
        self.size = 0
        self.bad = 0
        self.stall = stall

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.stall is not None and self.size:
            self.stall.wait(60)  # released once Core has cut this reader off
            self.stall = None
        chunk = bytes(data)
        self.bad += len(chunk) - chunk.count(b"x")
        self.size += len(chunk)
        return len(chunk)


@pytest.fixture
async def fleet(core: Core, start_node: StartNode) -> Core:
    await start_node(core, "node-01")
    await start_node(core, "node-02")
    await wait_for(lambda: online(core, "node-01", "node-02"))
    return core


def body(target: str, size: int) -> dict[str, Any]:
    command = f"head -c {size} /dev/zero | tr '\\0' x"
    return {"target": target, "command": command, "output_cap": size, "timeout": 60}


async def test_output_is_complete_with_bounded_buffers(fleet: Core) -> None:
    client = CountingClient(fleet)
    out, err = Sink(), Sink()
    code = await trio.to_thread.run_sync(
        lambda: client.exec(body("node-01", BIG), single=True, out=out, err=err)
    )
    assert code == 0
    assert (out.size, out.bad, err.size) == (BIG, 0, 0)
    # One line of the stream holds one 64 KiB chunk (base64), whatever the output
    # size; the final job document has no output. (On a busy machine Core may cut
    # this reader off: the rest then comes by range, 1 MiB at most at a time.)
    assert client.largest_line < 100 * 1024
    assert client.largest_doc < 64 * 1024
    assert client.largest_answer <= RANGE


async def test_a_reader_cut_off_completes_by_range(fleet: Core, caplog: Any) -> None:
    """ctl's stdout stalls: Core cuts its stream off; ctl reads the rest by range."""
    client = CountingClient(fleet)
    stall = threading.Event()
    out, err = Sink(stall), Sink()

    def run() -> int:
        return client.exec(body("node-01", BIG), single=True, out=out, err=err)

    async with trio.open_nursery() as nursery:
        codes: list[int] = []

        async def ctl() -> None:
            codes.append(await trio.to_thread.run_sync(run))

        nursery.start_soon(ctl)
        await wait_for(
            lambda: any("read too slowly" in r.getMessage() for r in caplog.records), limit=60
        )
        stall.set()
    assert codes == [0]
    assert (out.size, out.bad) == (BIG, 0)
    assert client.ranges >= 1
    assert client.largest_answer <= RANGE
    assert client.largest_doc < 64 * 1024
    assert client.largest_line < 100 * 1024


async def test_fan_out_prefixes_and_bounds_a_line_without_newline(fleet: Core) -> None:
    client = CountingClient(fleet)
    out = io.BytesIO()
    size = 3 * MAX_PARTIAL + 5
    code = await trio.to_thread.run_sync(
        lambda: client.exec(body("node-01,node-02", size), single=False, out=out)
    )
    assert code == 0
    lines = out.getvalue().split(b"\n")[:-1]
    for node in ("node-01", "node-02"):
        mine = [line for line in lines if line.startswith(node.encode() + b" | ")]
        assert [len(line) - len(node) - 3 for line in mine] == [MAX_PARTIAL] * 3 + [5]


async def test_a_job_longer_than_the_follow_window_is_followed_to_its_end(
    fleet: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream request follows the job for FOLLOW s (Core ends it with job.open):
    ctl opens it again and prints each byte once, live."""
    monkeypatch.setattr(exec_mod, "FOLLOW", 0.3)
    client = CountingClient(fleet)
    out = io.BytesIO()
    job = {"target": "node-01", "command": "echo one; sleep 1.5; echo two", "timeout": 30}
    code = await trio.to_thread.run_sync(lambda: client.exec(job, single=True, out=out))
    assert code == 0
    assert out.getvalue() == b"one\ntwo\n"
    assert client.streams >= 2
    assert client.ranges == 0  # all of it came live, none by range


def test_printer_holds_at_most_one_partial_line() -> None:
    out = io.BytesIO()
    printer = Printer(prefix=True, out=out, err=io.BytesIO(), width=2)
    offset = 0
    for _ in range(100):
        printer.output("n1", "stdout", offset, b"y" * 10_000)
        offset += 10_000
        assert len(printer.partial[("n1", "stdout")]) <= MAX_PARTIAL
    printer.output("n1", "stdout", 0, b"y" * 5)  # already written: ignored
    printer.output("n1", "stdout", offset + 10, b"z")  # a gap: left for completion
    printer.flush()
    assert out.getvalue().count(b"y") == 1_000_000
    assert b"z" not in out.getvalue()
    assert all(line.startswith(b"n1 | ") for line in out.getvalue().splitlines())


# --- standard input ----------------------------------------------------------------


def test_stdin_is_forwarded_from_a_pipe_or_a_file_only(tmp_path: Path) -> None:
    from servermgr.common.proto import MAX_STDIN_BYTES
    from servermgr.ctl.exec import MAX_STDIN, read_stdin

    assert MAX_STDIN == MAX_STDIN_BYTES
    r, w = os.pipe()
    os.write(w, b"hi\n")
    os.close(w)
    assert read_stdin(r) == b"hi\n"
    os.close(r)
    path = tmp_path / "script.sh"
    path.write_bytes(b"echo x\n")
    with path.open("rb") as f:
        assert read_stdin(f.fileno()) == b"echo x\n"
    with open(os.devnull, "rb") as f:
        assert read_stdin(f.fileno()) is None  # a character device: nothing to forward
    with path.open("rb") as f, pytest.raises(UsageError, match="over 0 KiB"):
        read_stdin(f.fileno(), limit=3)
