"""Jobs a node has received and Core has not acked, kept on disk.

One file per job under ``<data_dir>/jobs/``: written when the job arrives
(before anything runs), updated with the process group when it starts, and
rewritten with every output chunk and the result when it ends. Deleted when
Core acks the result. So a result survives a dropped connection, a Core
restart and an agent restart, and Core can tell from the node's ``hello``
which jobs it has (a job Core sent that is not here never arrived).

An agent that died mid-job finds the job's file without a result on its next
start: it stops what is left of the job's process group (same boot only) and
reports the job as an error, instead of leaving Core to guess.

The files are JSON written and read with msgspec (loaded anyway for the wire
protocol): the stdlib ``json`` would add ~0.2 MiB to the agent's RSS.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from servermgr.common import files, proto
from servermgr.common.errors import ProtocolError

log = logging.getLogger("servermgr.node.spool")

AGENT_DIED = (
    "the node agent stopped while the job ran; what was left of its processes was stopped "
    "when the agent started again (its output is lost)"
)


@dataclass
class SpoolEntry:
    job_id: str
    pgid: int | None = None
    boot_time: float | None = None
    messages: list[proto.JobOutput | proto.JobResult] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.messages) and isinstance(self.messages[-1], proto.JobResult)


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class Spool:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _write(self, entry: SpoolEntry, *, sync: bool) -> None:
        files.private_dir(self.dir)
        doc = {
            "job_id": entry.job_id,
            "pgid": entry.pgid,
            "boot_time": entry.boot_time,
            "messages": [proto.encode(m) for m in entry.messages],
        }
        tmp = self.dir / f".{entry.job_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(doc))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(entry.job_id))

    def received(self, job_id: str) -> SpoolEntry:
        entry = SpoolEntry(job_id, boot_time=_boot_time())
        self._write(entry, sync=True)
        return entry

    def started(self, entry: SpoolEntry, pgid: int) -> None:
        entry.pgid = pgid
        self._write(entry, sync=False)

    def finished(self, entry: SpoolEntry, *, sync: bool = True) -> None:
        """Write the job with its result; ``sync=False`` leaves the fsync to ``sync``
        (the agent sends the result meanwhile)."""
        self._write(entry, sync=sync)

    def sync(self, job_id: str) -> None:
        """fsync the job's file, if it is still there (Core may have acked it meanwhile)."""
        try:
            fd = os.open(self._path(job_id), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def acked(self, job_id: str) -> None:
        try:
            self._path(job_id).unlink()
        except FileNotFoundError:
            pass

    def load(self) -> dict[str, SpoolEntry]:
        """Every spooled job; jobs cut short by an agent crash get an error result."""
        entries: dict[str, SpoolEntry] = {}
        if not self.dir.is_dir():
            return entries
        for path in sorted(self.dir.glob("*.json")):
            try:
                doc = msgspec.json.decode(path.read_bytes())
                entry = SpoolEntry(
                    str(doc["job_id"]),
                    doc.get("pgid"),
                    doc.get("boot_time"),
                    [_decode_node_message(m) for m in doc["messages"]],
                )
            except (
                OSError,
                msgspec.DecodeError,
                ValueError,
                KeyError,
                TypeError,
                ProtocolError,
            ) as exc:
                log.warning("ignoring unreadable job spool file %s: %s", path, exc)
                continue
            if not entry.finished:
                self._stop_leftovers(entry)
                entry.messages.append(proto.no_run(entry.job_id, "error", AGENT_DIED))
                self.finished(entry)
            entries[entry.job_id] = entry
        return entries

    def _stop_leftovers(self, entry: SpoolEntry) -> None:
        if entry.pgid is None or entry.boot_time is None or entry.boot_time != _boot_time():
            return  # never started, or the machine rebooted since: nothing of it runs
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(entry.pgid, sig)
            except (ProcessLookupError, PermissionError):
                return
            if sig == signal.SIGTERM:
                time.sleep(0.5)
        log.warning(
            "job %s: stopped process group %d left by the previous agent", entry.job_id, entry.pgid
        )


def _decode_node_message(text: str) -> proto.JobOutput | proto.JobResult:
    msg = proto.decode_from_node(text)
    if not isinstance(msg, (proto.JobOutput, proto.JobResult)):
        raise ProtocolError(f"unexpected {type(msg).__name__} in a job spool")
    return msg
