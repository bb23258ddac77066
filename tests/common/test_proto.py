"""Wire protocol: round trips, every error case, and fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servermgr.common import proto
from servermgr.common.errors import ProtocolError
from tests.support import make_sample

INFO = proto.SystemInfo(
    os="Debian 12",
    kernel="6.1",
    arch="x86_64",
    cpu_model=None,
    cpu_count=2,
    mem_total=8 << 30,
    boot_time=1.0,
)

EVERY_MESSAGE: list[proto.Message] = [
    proto.Hello(
        protocol=1,
        node_id="n1",
        hostname="node-01",
        agent_version="0.1.0",
        info=INFO,
        labels={"role": "web"},
    ),
    proto.Heartbeat(
        seq=3,
        samples=[
            make_sample(1_700_000_000.0, swap_percent=None, disk_write_bps=None),
            make_sample(1_700_000_005.0),
        ],
    ),
    proto.JobOutput(job_id="j1", stream="stderr", offset=10, chunk=b"\xff[bold]\n"),
    proto.JobResult(
        job_id="j1",
        outcome="failed",
        exit_code=3,
        signal=None,
        error=None,
        duration=0.25,
        stdout_bytes=3,
        stderr_bytes=4,
        stdout_truncated=False,
        stderr_truncated=True,
    ),
    proto.Welcome(node_id="n1", heartbeat_interval=5.0, server_time=1_700_000_000.0),
    proto.HeartbeatAck(seq=3),
    proto.JobRun(job_id="j1", command="uptime", service=None, timeout=60.0, output_cap=1 << 20),
    proto.JobRun(
        job_id="j2",
        command=None,
        service=proto.ServiceAction(action="restart", unit="nginx.service"),
        timeout=30.0,
        output_cap=1024,
        env={"A": "b"},
        cwd="/tmp",
    ),
    proto.JobAck(job_id="j1"),
    proto.JobCancel(job_id="j1"),
    proto.Error(code="bad_message", message="nope"),
    proto.FileOpen(
        transfer_id="s1", direction="push", path="/etc/x", size=3, mode=0o640, owner="www-data"
    ),
    proto.FileReady(transfer_id="s1", size=3, mode=0o644),
    proto.FileData(transfer_id="s1", offset=0, chunk=b"\x00\xffx"),
    proto.StreamCredit(stream_id="s1", bytes=65536),
    proto.FileEnd(transfer_id="s1", size=3, sha256="a" * 64),
    proto.FileResult(transfer_id="s1", error=None, sha256="a" * 64, size=3),
    proto.FileCancel(transfer_id="s1", reason="client gone"),
    proto.ShellOpen(session_id="s2", rows=24, cols=80),
    proto.ShellStarted(session_id="s2", pid=42),
    proto.ShellInput(session_id="s2", data=b"\x03"),
    proto.ShellResize(session_id="s2", rows=50, cols=200),
    proto.ShellOutput(session_id="s2", data=b"\x1b[1mhi"),
    proto.ShellClose(session_id="s2"),
    proto.ShellExit(session_id="s2", exit_code=None, signal=9),
    proto.AgentUpgrade(transfer_id="s3", version="0.2.0", size=10, sha256="b" * 64, timeout=60),
]


def test_stream_messages_are_size_limited_and_checked() -> None:
    """Core refuses a chunk over the limit, a bad checksum and a control character in an error."""
    big = proto.FileData(transfer_id="s1", offset=0, chunk=b"x" * (proto.MAX_CHUNK_BYTES + 1))
    with pytest.raises(ProtocolError, match="length"):
        proto.decode_from_node(proto.encode(big))
    end = proto.encode(proto.FileEnd(transfer_id="s1", size=1, sha256="A" * 64))
    with pytest.raises(ProtocolError, match="sha256"):
        proto.decode_from_core(end)
    bad = proto.FileResult(transfer_id="s1", error="\x1b[2Jgone")
    with pytest.raises(ProtocolError, match=r"\$\.error"):
        proto.decode_from_node(proto.encode(bad))
    # A node cannot send what only Core sends (an input to another shell).
    with pytest.raises(ProtocolError, match="shell.input"):
        proto.decode_from_node(proto.encode(proto.ShellInput(session_id="s2", data=b"x")))


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: proto.Message) -> None:
    text = proto.encode(msg)
    assert json.loads(text)["type"] == msg.__struct_config__.tag
    assert proto.decode(text) == msg


def test_direction_is_enforced() -> None:
    welcome = proto.encode(EVERY_MESSAGE[4])
    with pytest.raises(ProtocolError, match="welcome"):
        proto.decode_from_node(welcome)
    hello = proto.encode(EVERY_MESSAGE[0])
    with pytest.raises(ProtocolError):
        proto.decode_from_core(hello)
    assert isinstance(proto.decode_from_node(hello), proto.Hello)


def _hello_doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(proto.encode(EVERY_MESSAGE[0]))
    return doc


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('"a string"', "Expected `object`"),
        ("{}", "no `type`"),
        ('{"type": "reboot"}', "unknown message type 'reboot'"),
        ('{"type": "job.ack"}', "missing required field `job_id`"),
        ('{"type": "job.ack", "job_id": "j1", "extra": 1}', "unknown field `extra`"),
        ('{"type": "job.ack", "job_id": 5}', "Expected `str`, got `int`"),
        ('{"type": "heartbeat", "seq": 1, "samples": []}', "length >= 1"),
        ('{"type": "job.ack", "job_id": "a b"}', "matching regex"),
    ],
)
def test_invalid_frames_raise_protocol_error(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        proto.decode(text)
    assert reason in info.value.reason


def test_unsupported_protocol_version() -> None:
    doc = _hello_doc()
    doc["protocol"] = 99
    with pytest.raises(ProtocolError, match="unsupported protocol version 99"):
        proto.decode(json.dumps(doc))


def test_frame_over_size_limit() -> None:
    msg = proto.Error(code="x", message="a" * 1000)
    text = proto.encode(msg)
    assert proto.decode(text, max_size=len(text)) == msg
    with pytest.raises(ProtocolError, match="over the limit"):
        proto.decode(text, max_size=len(text) - 1)
    big = '{"type":"error","code":"x","message":"' + "a" * proto.MAX_FRAME_BYTES + '"}'
    with pytest.raises(ProtocolError, match="over the limit"):
        proto.decode(big)


def test_binary_chunk_survives_unchanged() -> None:
    raw = bytes(range(256)) + b"[bold]red[/bold]"
    msg = proto.JobOutput(job_id="j", stream="stdout", offset=0, chunk=raw)
    decoded = proto.decode(proto.encode(msg))
    assert isinstance(decoded, proto.JobOutput)
    assert decoded.chunk == raw


def test_json_schema_names_every_type() -> None:
    schema = json.dumps(proto.json_schema())
    for msg in EVERY_MESSAGE:
        assert f'"{msg.__struct_config__.tag}"' in schema


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_input_raises_only_protocol_error(text: str | bytes) -> None:
    try:
        proto.decode(text)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([m.__struct_config__.tag for m in EVERY_MESSAGE]),
    st.dictionaries(st.text(max_size=20), json_values, max_size=6),
)
def test_arbitrary_objects_with_known_type_raise_only_protocol_error(
    tag: str, fields: dict[str, object]
) -> None:
    fields["type"] = tag
    try:
        proto.decode(json.dumps(fields))
    except ProtocolError:
        pass
