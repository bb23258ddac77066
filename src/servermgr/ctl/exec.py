"""``servermgr ctl exec``: run a command on nodes and show its output live.

One node: its bytes exactly as written, on our stdout/stderr, and its exit
code as ours. Several nodes: each line prefixed with the node's name, then a
summary on stderr. Exit codes reserved for ctl, as ssh does: 124 when the
job timed out, 255 when ctl, Core or the node could not run it.

The command's own bytes pass through untouched (like ssh); everything ctl
prints around them (node names, errors, the summary) is escaped with
``text.printable``.
"""

from __future__ import annotations

import binascii  # not base64: its import (struct, re-exports) is ~0.6 ms of start-up
import json
import os
import sys
import time

from servermgr.common.errors import ClientError, CoreUnreachableError, UsageError
from servermgr.common.events import EventType
from servermgr.common.text import printable
from servermgr.ctl.client import Client

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO

    from servermgr.ctl.stdin import Forwarder

EXIT_TIMEOUT = 124
EXIT_FAILURE = 255
STREAM_SLACK = 90.0  # beyond the job timeout: Core marks a silent node lost after 30 s
MAX_PARTIAL = 64 * 1024  # most bytes of an unfinished line held per node and stream
RANGE = 1024 * 1024  # bytes per request when completing output by range
FOLLOW = 10.0  # seconds a stream waits for an event (Core's most); then it is opened again
POLL = 0.5  # seconds between reads by range while a job cut off from its stream runs
MAX_STDIN = 512 * 1024  # common/proto.MAX_STDIN_BYTES: what one job carries


class Printer:
    """Writes output as it comes; prefixes lines with the node name when ``prefix``.

    Holds at most one unfinished line per node and stream, and at most
    ``MAX_PARTIAL`` bytes of it: a longer line is written in pieces, each on
    its own prefixed line. (A plain class: dataclasses costs ctl exec ~6 ms
    of imports.)
    """

    def __init__(self, prefix: bool, out: BinaryIO, err: BinaryIO, width: int = 0) -> None:
        self.prefix = prefix
        self.out = out
        self.err = err
        self.width = width
        self.have: dict[tuple[str, str], int] = {}
        self.partial: dict[tuple[str, str], bytes] = {}

    def output(self, node: str, stream: str, offset: int, data: bytes) -> None:
        key = (node, stream)
        have = self.have.get(key, 0)
        if offset > have or offset + len(data) <= have:
            return  # a gap (completed later, by range) or bytes already written
        data = data[have - offset :]
        self.have[key] = have + len(data)
        target = self.out if stream == "stdout" else self.err
        if not self.prefix:
            target.write(data)
            target.flush()
            return
        buf = self.partial.get(key, b"") + data
        *lines, rest = buf.split(b"\n")
        while len(rest) > MAX_PARTIAL:
            lines.append(rest[:MAX_PARTIAL])
            rest = rest[MAX_PARTIAL:]
        self.partial[key] = rest
        if lines:
            label = self._label(node)
            for line in lines:
                target.write(label + line + b"\n")
            target.flush()

    def _label(self, node: str) -> bytes:
        return printable(node).ljust(self.width).encode() + b" | "

    def flush(self) -> None:
        for (node, stream), rest in self.partial.items():
            if rest:
                target = self.out if stream == "stdout" else self.err
                target.write(self._label(node) + rest + b"\n")
        self.partial.clear()
        self.out.flush()
        self.err.flush()


def forwardable(fd: int) -> bool:
    """Is ``fd`` input for the command: a pipe or a file (not a terminal, /dev/null,
    a socket or closed)?"""
    import stat

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False  # closed
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def read_stdin(fd: int, limit: int = MAX_STDIN) -> bytes | None:
    """The stdin for several nodes, read whole before the job starts (the same bytes
    to each); None when ``fd`` is not ``forwardable``. At most ``limit`` bytes (else a
    UsageError): a pipe that never ends keeps ctl waiting, as ``-n`` avoids. One node
    gets its stdin as a stream instead, of any size (ctl/stdin.py).
    """
    if not forwardable(fd):
        return None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise UsageError(
            f"standard input is over {limit // 1024} KiB, the most ctl exec copies to "
            "several nodes (one node takes any size): copy the file to the nodes first "
            "(ctl cp), or give -n / --no-stdin"
        )
    return b"".join(chunks)


def stream_events(client: Client, job_id: str, *, timeout: float) -> Iterator[dict[str, Any]]:
    """The job's live events from Core's NDJSON stream."""
    try:
        lines = client.job_stream(job_id, read_timeout=timeout + STREAM_SLACK, follow=FOLLOW)
        for line in lines:
            yield json.loads(line)
    except OSError as exc:
        raise CoreUnreachableError(
            f"lost the connection to Core ({exc.__class__.__name__}); the job goes on: "
            f"servermgr ctl job {job_id}"
        ) from None


def follow(client: Client, job_id: str, printer: Printer | None, *, timeout: float) -> bool:
    """Print the job's output as it comes; True once every node is final.

    A stream ends with ``job.open`` when no event came for FOLLOW s and the job
    is still open: it is opened again (it starts over; the printer drops what it
    has already written), until ``timeout`` has passed. False when the stream
    ended early: Core cut this reader off for reading too slowly (our stdout is
    slow), or the stream closed before ``job.done``.
    """
    deadline = time.monotonic() + timeout
    while True:
        reopen = False
        for event in stream_events(client, job_id, timeout=timeout):
            kind = event["type"]
            if kind == EventType.JOB_OUTPUT and printer is not None:
                data = binascii.a2b_base64(event["data"])  # = base64.b64decode
                printer.output(event["node"], event["stream"], event["offset"], data)
            elif kind == EventType.JOB_DONE:
                return True
            elif kind == EventType.JOB_OPEN:
                reopen = True
            elif kind in (EventType.ERROR, "dropped"):  # cut off; an older Core skipped events
                return False
        if not reopen or time.monotonic() > deadline:
            return False


def complete(
    client: Client, job_id: str, printer: Printer, *, until_done: bool, patience: float
) -> dict[str, Any]:
    """Print what was not printed yet, read by range from Core; the job without output.

    With ``until_done``, keep reading (every POLL s) until every node is
    final or ``patience`` runs out. Holds at most one range (RANGE bytes).
    """
    deadline = time.monotonic() + patience
    while True:
        job = client.job(job_id, output=False)
        for n in job["nodes"]:
            for stream in ("stdout", "stderr"):
                have = printer.have.get((n["node"], stream), 0)
                while have < n[f"{stream}_bytes"]:
                    data = client.job_output(job_id, n["node_id"], stream, have, RANGE)
                    if not data:
                        break
                    printer.output(n["node"], stream, have, data)
                    have += len(data)
        if not until_done or job["state"] == "done" or time.monotonic() > deadline:
            return job
        time.sleep(POLL)


def run(
    client: Client,
    body: dict[str, Any],
    *,
    single: bool,
    stream: bool = True,
    as_json: bool = False,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
    stdin: Callable[[], Forwarder] | None = None,
) -> int:
    """Create the job, follow it, print; returns the exit code.

    The nodes' output goes to ``out`` and ``err`` (default: our stdout and
    stderr). A request that fails (Core unreachable, key refused, unknown
    node, bad target) raises its ClientError with exit code 255, as ssh does.
    ``stdin`` (with ``stdin_stream`` in the body): makes the forwarder of our
    standard input, started before the job is made and told its id once it is.
    """
    try:
        return _run(
            client,
            body,
            single=single,
            stream=stream,
            as_json=as_json,
            out=out or sys.stdout.buffer,
            err=err or sys.stderr.buffer,
            stdin=stdin,
        )
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


def _run(
    client: Client,
    body: dict[str, Any],
    *,
    single: bool,
    stream: bool,
    as_json: bool,
    out: BinaryIO,
    err: BinaryIO,
    stdin: Callable[[], Forwarder] | None,
) -> int:
    forwarder = None
    if stdin is not None:
        forwarder = stdin()
        forwarder.start()  # loads its imports while the job is made
    try:
        # One key per invocation: if the answer is lost and the POST is retried,
        # Core returns the job it made the first time instead of running it again.
        job = client.create_job(body, key=os.urandom(16).hex())
    except BaseException:
        if forwarder is not None:
            forwarder.abandon()
        raise
    job_id = job["id"]
    names = [n["node"] for n in job["nodes"]]
    printer = Printer(
        prefix=not single or len(names) > 1,
        out=out,
        err=err,
        width=max((len(printable(n)) for n in names), default=0),
    )
    live = stream and not as_json
    if forwarder is not None:
        forwarder.begin(job_id, job["nodes"][0]["node_id"])
    try:
        # A queued job may wait for its node before its timeout starts.
        patience = body.get("timeout", 60.0) + body.get("wait", 0.0)
        finished = follow(client, job_id, printer if live else None, timeout=patience)
        if as_json:
            final = client.job(job_id)
        else:
            # Whatever was not printed live (not streaming, a stream cut short),
            # from where printing stopped: the stored job is the truth.
            final = complete(
                client, job_id, printer, until_done=not finished, patience=patience + STREAM_SLACK
            )
    except KeyboardInterrupt:
        client.cancel_job(job_id)
        printer.flush()
        sys.stderr.write(f"\nservermgr: cancelled job {job_id}\n")
        return 130
    nodes = final["nodes"]
    problem = forwarder.finish() if forwarder is not None else None
    if problem is not None:
        sys.stderr.write(f"servermgr: standard input: {printable(problem)}\n")
    if as_json:
        sys.stdout.write(json.dumps(final, indent=2) + "\n")
    else:
        printer.flush()
        if printer.prefix:
            from servermgr.ctl import plain

            plain.print_job_summary(final, sys.stderr)
        else:
            _explain(nodes[0])
    return exit_code(nodes, single=not printer.prefix)


def _explain(node: dict[str, Any]) -> None:
    """For one node, say why when it did not simply run to an exit code."""
    state = node["state"]
    if state in ("succeeded", "failed") and node["exit_code"] is not None:
        if node["stdout_truncated"] or node["stderr_truncated"]:
            sys.stderr.write("servermgr: output was truncated at the output cap\n")
        return
    reason = node.get("error") or ""
    if state == "failed" and node["signal"] is not None:
        reason = f"killed by signal {node['signal']}"
    elif state == "timed_out":
        reason = f"timed out after {node['duration'] or 0:.1f} s and was killed"
    line = f"{node['node']}: {state}{': ' + reason if reason else ''}"
    sys.stderr.write(f"servermgr: {printable(line)}\n")


def exit_code(nodes: list[dict[str, Any]], *, single: bool) -> int:
    if not single:
        return 0 if all(n["state"] == "succeeded" for n in nodes) else 1
    n = nodes[0]
    if n["state"] in ("succeeded", "failed") and n["exit_code"] is not None:
        return int(n["exit_code"])
    if n["state"] == "failed" and n["signal"] is not None:
        return 128 + int(n["signal"])
    if n["state"] == "timed_out":
        return EXIT_TIMEOUT
    return EXIT_FAILURE
