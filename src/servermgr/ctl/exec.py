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

import base64
import http.client
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from servermgr.common.errors import ClientError, CoreUnreachableError
from servermgr.common.text import printable
from servermgr.ctl.client import Client

EXIT_TIMEOUT = 124
EXIT_FAILURE = 255
STREAM_SLACK = 90.0  # beyond the job timeout: Core marks a silent node lost after 30 s


@dataclass
class Printer:
    """Writes output events; prefixes lines with the node name when ``prefix``."""

    prefix: bool
    out: BinaryIO
    err: BinaryIO
    width: int = 0
    have: dict[tuple[str, str], int] = field(default_factory=dict)
    partial: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def output(self, node: str, stream: str, offset: int, data: bytes) -> None:
        key = (node, stream)
        have = self.have.get(key, 0)
        if offset + len(data) <= have:
            return
        data = data[max(0, have - offset) :]
        self.have[key] = max(have, offset) + len(data)
        target = self.out if stream == "stdout" else self.err
        if not self.prefix:
            target.write(data)
            target.flush()
            return
        buf = self.partial.get(key, b"") + data
        *lines, rest = buf.split(b"\n")
        self.partial[key] = rest
        if lines:
            label = self._label(node)
            target.write(b"".join(label + line + b"\n" for line in lines))
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


def stream_events(client: Client, job_id: str, *, timeout: float) -> Iterator[dict[str, Any]]:
    """The job's live events from Core's NDJSON stream."""
    try:
        for line in client.stream_lines(
            f"/api/v1/jobs/{job_id}/stream", read_timeout=timeout + STREAM_SLACK
        ):
            yield json.loads(line)
    except (OSError, http.client.HTTPException) as exc:
        raise CoreUnreachableError(
            f"lost the connection to Core ({exc.__class__.__name__}); the job goes on: "
            f"servermgr ctl job {job_id}"
        ) from None


def run(
    client: Client,
    body: dict[str, Any],
    *,
    single: bool,
    stream: bool = True,
    as_json: bool = False,
) -> int:
    """Create the job, follow it, print; returns the exit code.

    A request that fails (Core unreachable, key refused, unknown node, bad
    target) raises its ClientError with exit code 255, as ssh does.
    """
    try:
        return _run(client, body, single=single, stream=stream, as_json=as_json)
    except ClientError as exc:
        exc.exit_code = EXIT_FAILURE
        raise


def _run(client: Client, body: dict[str, Any], *, single: bool, stream: bool, as_json: bool) -> int:
    # One key per invocation: if the answer is lost and the POST is retried,
    # Core returns the job it made the first time instead of running it again.
    job = client.create_job(body, key=os.urandom(16).hex())
    job_id = job["id"]
    names = [n["node"] for n in job["nodes"]]
    printer = Printer(
        prefix=not single or len(names) > 1,
        out=sys.stdout.buffer,
        err=sys.stderr.buffer,
        width=max((len(printable(n)) for n in names), default=0),
    )
    live = stream and not as_json
    try:
        # A queued job may wait for its node before its timeout starts.
        patience = body.get("timeout", 60.0) + body.get("wait", 0.0)
        for event in stream_events(client, job_id, timeout=patience):
            if live and event["type"] == "output":
                printer.output(
                    event["node"], event["stream"], event["offset"], base64.b64decode(event["data"])
                )
            elif event["type"] == "dropped":
                # Core skipped events for us: stop printing live (no gaps);
                # the rest is printed from the stored job below.
                live = False
            elif event["type"] == "done":
                break
    except KeyboardInterrupt:
        client.request("POST", f"/api/v1/jobs/{job_id}/cancel")
        printer.flush()
        sys.stderr.write(f"\nservermgr: cancelled job {job_id}\n")
        return 130
    final = client.request("GET", f"/api/v1/jobs/{job_id}")
    nodes = final["nodes"]
    if as_json:
        sys.stdout.write(json.dumps(final, indent=2) + "\n")
    else:
        # Whatever was not printed live (not streaming, events dropped, a stream
        # cut short), from where printing stopped: the stored job is the truth.
        for n in nodes:
            printer.output(n["node"], "stdout", 0, base64.b64decode(n["stdout_b64"]))
            printer.output(n["node"], "stderr", 0, base64.b64decode(n["stderr_b64"]))
        printer.flush()
        if printer.prefix:
            from servermgr.ctl import render

            render.print_job_summary(final)
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
