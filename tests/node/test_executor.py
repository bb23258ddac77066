"""Jobs run as real processes: output, exit status, timeouts, cancel, cleanup."""

from __future__ import annotations

import os
import pwd
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import trio.testing

from servermgr.common import proto
from servermgr.common.config import ExecConfig
from servermgr.node.executor import NO_SYSTEMD, Executor

MiB = 1024 * 1024


def make_job(
    command: str | None = None,
    *,
    service: tuple[Any, str] | None = None,
    job_id: str = "j1",
    timeout: float = 10.0,
    cap: int = MiB,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> proto.JobRun:
    action = proto.ServiceAction(*service) if service else None
    return proto.JobRun(job_id, command, action, timeout, cap, env or {}, cwd)


def executor(**policy: Any) -> Executor:
    return Executor(ExecConfig(**policy), grace=0.5, chunk_interval=0.01, drain=0.1)


class Sink:
    """Collects emitted chunks; ``seen`` fires once ``marker`` appears on stdout."""

    def __init__(self, marker: bytes = b"\n") -> None:
        self.chunks: list[proto.JobOutput] = []
        self.marker = marker
        self.seen = trio.Event()

    async def __call__(self, out: proto.JobOutput) -> None:
        self.chunks.append(out)
        if self.marker in self.data("stdout"):
            self.seen.set()

    def data(self, stream: str) -> bytes:
        return b"".join(c.chunk for c in self.chunks if c.stream == stream)

    def pgid(self) -> int:
        """The job's process group: tests print ``$$`` as their first line."""
        return int(self.data("stdout").split(b"\n")[0])


def live_in_group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


async def test_output_and_exit_code_propagate() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(make_job("echo hi; echo err >&2; exit 3"), sink)
    assert result.outcome == "failed"
    assert result.exit_code == 3
    assert result.signal is None
    assert result.error is None
    assert sink.data("stdout") == b"hi\n"
    assert sink.data("stderr") == b"err\n"
    assert (result.stdout_bytes, result.stderr_bytes) == (3, 4)
    assert not result.stdout_truncated
    assert not result.stderr_truncated
    assert 0 < result.duration < 5


async def test_success() -> None:
    with trio.fail_after(20):
        result = await executor().run(make_job("true"), Sink())
    assert result.outcome == "succeeded"
    assert result.exit_code == 0


async def test_death_by_signal_is_a_failure() -> None:
    with trio.fail_after(20):
        result = await executor().run(make_job("kill -9 $$"), Sink())
    assert result.outcome == "failed"
    assert result.exit_code is None
    assert result.signal == signal.SIGKILL


async def test_bytes_pass_through_untouched() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(make_job(r"printf '[bold]x\377\376\000\r\n'"), sink)
    assert result.outcome == "succeeded"
    assert sink.data("stdout") == b"[bold]x\xff\xfe\x00\r\n"


async def test_timeout_kills_the_process_group() -> None:
    with trio.fail_after(20):
        sink = Sink()
        start = trio.current_time()
        result = await executor().run(make_job("echo $$; sleep 100", timeout=1), sink)
        elapsed = trio.current_time() - start
    assert result.outcome == "timed_out"
    assert result.error is not None
    assert "1 s" in result.error
    assert result.signal == signal.SIGTERM
    assert elapsed < 50  # stopped, not waited out (sleep 100)
    assert live_in_group(sink.pgid()) == []


async def test_term_ignoring_job_is_killed_after_grace() -> None:
    with trio.fail_after(20):
        sink = Sink()
        start = trio.current_time()
        result = await executor().run(
            make_job("trap '' TERM; echo $$; sleep 100; echo survived", timeout=0.5), sink
        )
        elapsed = trio.current_time() - start
    assert result.outcome == "timed_out"
    assert result.signal == signal.SIGKILL
    assert 0.9 < elapsed < 50  # timeout + grace; killed, not waited out (sleep 100)
    assert b"survived" not in sink.data("stdout")
    assert live_in_group(sink.pgid()) == []


async def test_background_grandchild_does_not_hang_the_job() -> None:
    with trio.fail_after(20):
        sink = Sink()
        start = trio.current_time()
        result = await executor().run(make_job("echo $$; sleep 100 &"), sink)
        elapsed = trio.current_time() - start
    assert result.outcome == "succeeded"
    assert elapsed < 50  # not waiting for the background sleep 100
    assert live_in_group(sink.pgid()) == []


async def test_process_escaping_the_group_does_not_hang_the_job() -> None:
    with trio.fail_after(20):
        sink = Sink()
        start = trio.current_time()
        # setsid (not a group leader here) moves sleep to a new session that
        # still holds the job's pipes; the job ends after the drain anyway.
        result = await executor().run(make_job("setsid sleep 30 & echo $!"), sink)
        elapsed = trio.current_time() - start
    escaped = psutil.Process(int(sink.data("stdout")))
    escaped.kill()
    assert result.outcome == "succeeded"
    assert elapsed < 25  # not waiting for the escaped sleep 30


async def test_emit_failure_kills_the_job_and_propagates() -> None:
    sink = Sink()

    async def emit(out: proto.JobOutput) -> None:
        await sink(out)
        raise ConnectionError("gone")

    with trio.fail_after(20), pytest.RaisesGroup(ConnectionError, flatten_subgroups=True):
        await executor().run(make_job("echo $$; sleep 100"), emit)
    assert live_in_group(sink.pgid()) == []


async def test_leftover_processes_are_cleaned_up_even_without_pipes() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(make_job("echo $$; sleep 100 >/dev/null 2>&1 &"), sink)
    assert result.outcome == "succeeded"
    assert live_in_group(sink.pgid()) == []


async def test_cancel_running_job() -> None:
    ex = executor()
    sink = Sink()
    results: list[proto.JobResult] = []

    async def run() -> None:
        results.append(await ex.run(make_job("echo $$; sleep 100"), sink))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await sink.seen.wait()
            assert ex.is_active("j1")
            assert ex.cancel("j1")
    assert results[0].outcome == "cancelled"
    assert not ex.is_active("j1")
    assert not ex.cancel("j1")
    assert live_in_group(sink.pgid()) == []


async def test_cancel_queued_job_never_starts_it(tmp_path: Path) -> None:
    ex = executor(max_concurrent=1)
    first = Sink()
    results: dict[str, proto.JobResult] = {}
    marker = tmp_path / "started"

    b_done = trio.Event()

    async def run(job: proto.JobRun, sink: Sink) -> None:
        results[job.job_id] = await ex.run(job, sink)
        if job.job_id == "b":
            b_done.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, make_job("echo $$; sleep 100", job_id="a"), first)
            await first.seen.wait()
            nursery.start_soon(run, make_job(f"touch {marker}", job_id="b"), Sink())
            await trio.testing.wait_all_tasks_blocked()
            assert ex.cancel("b")
            with trio.fail_after(2):
                await b_done.wait()
            assert ex.cancel("a")
    assert results["b"].outcome == "cancelled"
    assert results["b"].exit_code is None
    assert not marker.exists()
    assert results["a"].outcome == "cancelled"
    assert live_in_group(first.pgid()) == []


async def test_concurrency_limit_runs_jobs_one_after_another_in_order(tmp_path: Path) -> None:
    ex = executor(max_concurrent=1)
    log = tmp_path / "log"

    def job(name: str) -> proto.JobRun:
        return make_job(
            f"echo {name}-start >> {log}; sleep 0.2; echo {name}-end >> {log}", job_id=name
        )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(ex.run, job(name), Sink())
                # Let this job reach the queue (or start) before the next arrives.
                await trio.testing.wait_all_tasks_blocked()
                assert ex.is_active(name)
    lines = log.read_text().split()
    assert lines == ["a-start", "a-end", "b-start", "b-end", "c-start", "c-end"]


async def test_two_slots_run_two_jobs_at_once(tmp_path: Path) -> None:
    ex = executor(max_concurrent=2)
    log = tmp_path / "log"
    log.touch()
    # Each job ends only once the other has started: with one slot they would wait forever.
    sinks = {"a": Sink(), "b": Sink()}

    def job(me: str, other: str) -> proto.JobRun:
        wait = f"for i in $(seq 2000); do grep -q {other} {log} && break; sleep 0.01; done"
        return make_job(f"echo {me} >> {log}; {wait}; grep -q {other} {log}", job_id=me)

    outcomes: dict[str, str] = {}

    async def run(me: str, other: str) -> None:
        outcomes[me] = (await ex.run(job(me, other), sinks[me])).outcome

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", "b")
            nursery.start_soon(run, "b", "a")
    assert outcomes == {"a": "succeeded", "b": "succeeded"}
    assert sorted(log.read_text().split()) == ["a", "b"]


async def test_output_cap_keeps_exactly_the_cap() -> None:
    with trio.fail_after(20):
        sink = Sink()
        job = make_job("head -c 5242880 /dev/zero; echo done >&2", cap=MiB)
        result = await executor().run(job, sink)
    assert result.outcome == "succeeded"  # the child was never blocked
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.stdout_bytes == MiB
    assert sink.data("stdout") == bytes(MiB)
    assert sink.data("stderr") == b"done\n"
    offset = 0
    for chunk in (c for c in sink.chunks if c.stream == "stdout"):
        assert 0 < len(chunk.chunk) <= proto.MAX_CHUNK_BYTES
        assert chunk.offset == offset
        offset += len(chunk.chunk)
    assert offset == MiB


async def test_zero_cap_keeps_nothing() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(make_job("echo hi", cap=0), sink)
    assert sink.chunks == []
    assert result.stdout_bytes == 0
    assert result.stdout_truncated


async def test_chatty_output_is_coalesced() -> None:
    with trio.fail_after(20):
        sink = Sink()
        ex = Executor(ExecConfig(), grace=0.5, chunk_interval=0.05, drain=0.1)
        result = await ex.run(
            make_job("i=0; while [ $i -lt 3000 ]; do echo $i; i=$((i+1)); done"), sink
        )
    assert result.outcome == "succeeded"
    expected = b"".join(b"%d\n" % i for i in range(3000))
    assert sink.data("stdout") == expected
    assert result.stdout_bytes == len(expected)
    assert len(sink.chunks) < 100


async def test_env_and_cwd_are_applied(tmp_path: Path) -> None:
    with trio.fail_after(20):
        sink = Sink()
        command = 'printf "%s|" "$GREETING" "$HOME"; pwd -P'
        job = make_job(command, env={"GREETING": "hello world"}, cwd=str(tmp_path))
        result = await executor().run(job, sink)
    assert result.outcome == "succeeded"
    home = os.environ.get("HOME", "")
    # pytest's tmp_path is already resolved, like ``pwd -P``.
    assert sink.data("stdout") == f"hello world|{home}|{tmp_path}\n".encode()


async def test_bad_cwd_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with trio.fail_after(20):
        result = await executor().run(make_job("true", cwd=str(missing)), Sink())
    assert result.outcome == "error"
    assert result.error is not None
    assert str(missing) in result.error
    assert "working directory" in result.error


async def test_disabled_policy_refuses_without_starting(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with trio.fail_after(20):
        result = await executor(enabled=False).run(make_job(f"touch {marker}"), Sink())
    assert result.outcome == "refused"
    assert result.error is not None
    assert "disabled" in result.error
    assert not marker.exists()


async def test_allow_list_admits_and_refuses(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ex = executor(allow=("echo *",))
    with trio.fail_after(20):
        sink = Sink()
        ok = await ex.run(make_job("echo allowed"), sink)
        refused = await ex.run(make_job(f"touch {marker}", job_id="j2"), Sink())
        sneaky = await ex.run(make_job(f"echo x; touch {marker}", job_id="j3"), Sink())
    assert ok.outcome == "succeeded"
    assert sink.data("stdout") == b"allowed\n"
    assert refused.outcome == "refused"
    assert sneaky.outcome == "refused"
    assert not marker.exists()


async def test_loader_variables_and_cwd_are_refused_before_anything_runs(tmp_path: Path) -> None:
    """``-e LD_PRELOAD=...`` with an allowed ``uptime`` runs nothing (reproduced on 0.x)."""
    library = tmp_path / "evil.c"
    marker = tmp_path / "ran"
    ex = executor(allow=("uptime", "touch *"))
    with trio.fail_after(20):
        preload = await ex.run(make_job("uptime", env={"LD_PRELOAD": str(library)}), Sink())
        path = await ex.run(make_job("uptime", job_id="j2", env={"PATH": str(tmp_path)}), Sink())
        cwd = await ex.run(make_job(f"touch {marker.name}", job_id="j3", cwd=str(tmp_path)), Sink())
    for result, word in ((preload, "LD_PRELOAD"), (path, "PATH"), (cwd, "working directory")):
        assert result.outcome == "refused"
        assert result.error is not None
        assert word in result.error
    assert not marker.exists()


async def test_timeout_over_node_limit_is_refused() -> None:
    with trio.fail_after(20):
        result = await executor(max_timeout=5).run(make_job("true", timeout=30), Sink())
    assert result.outcome == "refused"
    assert result.error is not None
    assert "30" in result.error


def fake_systemctl(tmp_path: Path) -> Path:
    """A stand-in for systemctl that prints its arguments, one per line."""
    path = tmp_path / "systemctl"
    path.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@"\necho called >> "$0.log"\n')
    path.chmod(0o755)
    return path


async def test_service_action_runs_systemctl_without_a_shell(tmp_path: Path) -> None:
    ex = Executor(
        ExecConfig(),
        grace=0.5,
        systemctl=str(fake_systemctl(tmp_path)),
        systemd_run_dir=str(tmp_path),
    )
    with trio.fail_after(20):
        sink = Sink()
        result = await ex.run(make_job(service=("restart", "getty@tty1.service")), sink)
    assert result.outcome == "succeeded"
    assert sink.data("stdout") == b"restart\ngetty@tty1.service\n"


async def test_bad_unit_is_rejected_without_running_anything(tmp_path: Path) -> None:
    systemctl = fake_systemctl(tmp_path)
    ex = Executor(ExecConfig(), grace=0.5, systemctl=str(systemctl), systemd_run_dir=str(tmp_path))
    with trio.fail_after(20):
        result = await ex.run(make_job(service=("restart", "nginx; rm -rf /")), Sink())
    assert result.outcome == "refused"
    assert result.error is not None
    assert "nginx; rm -rf /" in result.error
    assert not (tmp_path / "systemctl.log").exists()


async def test_missing_systemctl_is_a_clear_error() -> None:
    ex = Executor(ExecConfig(), systemctl="/nonexistent/systemctl")
    with trio.fail_after(20):
        result = await ex.run(make_job(service=("status", "nginx")), Sink())
    assert result.outcome == "error"
    assert result.error == NO_SYSTEMD


async def test_caller_cancellation_still_kills_the_job() -> None:
    ex = executor()
    sink = Sink()
    with trio.fail_after(20):
        with trio.move_on_after(15) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ex.run, make_job("echo $$; sleep 100"), sink)
                await sink.seen.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
    assert live_in_group(sink.pgid()) == []
    assert not ex.is_active("j1")


async def test_same_job_id_twice_is_a_caller_bug() -> None:
    ex = executor()
    sink = Sink()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ex.run, make_job("echo $$; sleep 100"), sink)
            await sink.seen.wait()
            with pytest.raises(ValueError, match="already queued or running"):
                await ex.run(make_job("true"), Sink())
            ex.cancel("j1")


async def test_unknown_run_as_user_is_an_error() -> None:
    with trio.fail_after(20):
        result = await executor(run_as="no-such-user-xyz").run(make_job("true"), Sink())
    assert result.outcome == "error"
    assert result.error is not None
    assert "no-such-user-xyz" in result.error


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_run_as_switches_user() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    with trio.fail_after(20):
        sink = Sink()
        result = await executor(run_as="nobody").run(make_job('id -u; echo "$HOME"'), sink)
    assert result.outcome == "succeeded", result
    assert sink.data("stdout") == f"{nobody.pw_uid}\n{nobody.pw_dir}\n".encode()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may switch to any user")
async def test_run_as_other_user_needs_root() -> None:
    with trio.fail_after(20):
        result = await executor(run_as="root").run(make_job("true"), Sink())
    assert result.outcome == "error"
    assert result.error is not None
    assert "only root" in result.error


async def test_service_action_where_systemd_does_not_run(tmp_path: Path) -> None:
    ex = Executor(
        ExecConfig(),
        systemctl=str(fake_systemctl(tmp_path)),
        systemd_run_dir=str(tmp_path / "missing"),
    )
    with trio.fail_after(10):
        result = await ex.run(make_job(service=("status", "nginx")), Sink())
    assert result.outcome == "error"
    assert result.error is not None
    assert "systemd is not running" in result.error


# --- standard input ----------------------------------------------------------


def with_stdin(command: str, data: bytes, **kw: Any) -> proto.JobRun:
    job = make_job(command, **kw)
    return proto.JobRun(
        job.job_id, job.command, job.service, job.timeout, job.output_cap, job.env, job.cwd, data
    )


async def test_stdin_reaches_the_process_then_end_of_file() -> None:
    data = b"".join(b"line %d\n" % i for i in range(40000))  # ~400 KiB: several pipe-fulls
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(with_stdin("cat", data), sink)
    assert result.outcome == "succeeded", result
    assert sink.data("stdout") == data


async def test_a_script_on_stdin_runs_as_bash_s_runs_it() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(with_stdin("sh -s -- a b", b'echo "$2 $1"\nexit 7\n'), sink)
    assert result.exit_code == 7
    assert sink.data("stdout") == b"b a\n"


async def test_a_process_that_never_reads_its_stdin_is_not_held_up() -> None:
    # More than a pipe holds, to a command that exits without reading: no hang, no error.
    with trio.fail_after(20):
        result = await executor().run(with_stdin("exit 0", b"x" * (512 * 1024)), Sink())
    assert result.outcome == "succeeded"


async def test_without_stdin_the_process_reads_end_of_file_at_once() -> None:
    with trio.fail_after(20):
        sink = Sink()
        result = await executor().run(make_job("cat; echo done"), sink)
    assert sink.data("stdout") == b"done\n"
    assert result.exit_code == 0
