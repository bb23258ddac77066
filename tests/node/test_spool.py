"""The job spool on disk: a result written without waiting for the disk is kept,
put on disk afterwards, and a job acked meanwhile is not brought back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servermgr.common import proto
from servermgr.node.spool import Spool


def result(job_id: str) -> proto.JobResult:
    return proto.JobResult(
        job_id=job_id,
        outcome="succeeded",
        exit_code=0,
        signal=None,
        error=None,
        duration=0.01,
        stdout_bytes=3,
        stderr_bytes=0,
        stdout_truncated=False,
        stderr_truncated=False,
    )


def test_result_written_without_sync_is_there_for_the_next_agent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "jobs")
    entry = spool.received("j1")
    spool.started(entry, os.getpid())
    entry.messages.append(proto.JobOutput(job_id="j1", stream="stdout", offset=0, chunk=b"hi\n"))
    entry.messages.append(result("j1"))
    spool.finished(entry, sync=False)

    loaded = Spool(tmp_path / "jobs").load()["j1"]
    assert loaded.finished
    assert loaded.messages[-1] == result("j1")  # the real result, not "the agent stopped"


def test_sync_puts_the_file_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "jobs")
    entry = spool.received("j1")
    entry.messages.append(result("j1"))
    spool.finished(entry, sync=False)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool.sync("j1")
    assert synced == [str(tmp_path / "jobs" / "j1.json")]


def test_sync_after_the_ack_leaves_no_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "jobs")
    entry = spool.received("j1")
    entry.messages.append(result("j1"))
    spool.finished(entry, sync=False)
    spool.acked("j1")  # Core stored it before the disk was done
    spool.sync("j1")
    assert list((tmp_path / "jobs").iterdir()) == []
    assert Spool(tmp_path / "jobs").load() == {}
