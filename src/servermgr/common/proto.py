"""Wire messages between Core and Node: one JSON object per WebSocket text frame.

Every message has a ``type`` tag. The node's first message is ``hello``, which
states the protocol version. ``decode`` accepts only what this module
defines: unknown types, missing, extra or mistyped fields, oversized frames
and unsupported versions all raise one ``ProtocolError`` with a reason.

Pure logic: no I/O, no clocks, no sockets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from servermgr.common import names
from servermgr.common.errors import ProtocolError
from servermgr.common.text import LINE_PATTERN, TEXT_PATTERN, is_printable, printable

# Version 2 added file transfers, shells and agent upgrades; 3 a job's
# standard input as a stream (stdin.*). A hello states
# the range the node speaks (``min_protocol`` to ``protocol``); Core speaks
# the highest version both know and says which in ``welcome`` (docs:
# "Versions"). So Core talks to agents one version older (1: no streams) and
# one newer (that still speak 2).
PROTOCOL_VERSION = 3
OLDEST_PROTOCOL = 1
SUPPORTED_VERSIONS = frozenset(range(OLDEST_PROTOCOL, PROTOCOL_VERSION + 1))
STREAMS_SINCE = 2  # the first version with file.*, shell.*, credit and agent.upgrade
STDIN_SINCE = 3  # the first version with job.run's stdin_stream and stdin.*
MAX_FRAME_BYTES = 1024 * 1024
MAX_SAMPLES_PER_HEARTBEAT = 500
MAX_CHUNK_BYTES = 64 * 1024
# Standard input a job carries to its process (ctl exec forwards a pipe or a
# file): within one frame with room for the rest, base64 included.
MAX_STDIN_BYTES = 512 * 1024

# Bounded strings and collections keep a hostile peer from making Core hold
# (or write to SQLite) more than the frame limit already allows per field.
# Every string a node reports has a character set too (see docs/security.md):
# names and words are patterns, free text may hold nothing a terminal or a log
# line would act on (``common/text.py``); only error texts may span lines.
# Patterns end in ``\Z``, never ``$`` (which also matches before a final newline).
Name = Annotated[str, Meta(min_length=1, max_length=names.MAX_LENGTH)]
# A node name as the API takes it: the schema states the rule, Core checks it
# with ``names.name_problem`` (the same rule, with a message saying which part).
NodeName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=names.MAX_LENGTH,
        extra_json_schema={"pattern": names.NAME_PATTERN, "description": names.RULE},
    ),
]
ShortText = Annotated[str, Meta(max_length=1024)]
LongText = Annotated[str, Meta(max_length=64 * 1024)]
# The character sets of free text are checked after decoding (``_unsafe_field``,
# with a C-speed fast path): msgspec patterns on these fields would double a
# heartbeat's decoding (docs/performance.md). The schema still states them.
_LINE = {"pattern": LINE_PATTERN}
_TEXT = {"pattern": TEXT_PATTERN}
Line = Annotated[str, Meta(max_length=1024, extra_json_schema=_LINE)]
InfoText = Annotated[str, Meta(max_length=256, extra_json_schema=_LINE)]
Word = Annotated[str, Meta(max_length=64, extra_json_schema=_LINE)]
ErrorText = Annotated[str, Meta(max_length=64 * 1024, extra_json_schema=_TEXT)]
ErrorCode = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")]
JobId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")]
NodeId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")]
LabelKey = Annotated[str, Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.-]+\Z")]
LabelValue = Annotated[str, Meta(max_length=253, pattern=r"^[A-Za-z0-9_./-]*\Z")]
Labels = Annotated[dict[LabelKey, LabelValue], Meta(max_length=64)]
NonNeg = Annotated[float, Meta(ge=0)]
NonNegInt = Annotated[int, Meta(ge=0)]
Percent = Annotated[float, Meta(ge=0, le=100)]
# File transfers and shells (docs/files.md, docs/shell.md): Core names each
# stream; the receiver of data grants credit (bytes it will take) and the
# sender never has more than that outstanding, so every hop holds at most
# one window.
StreamId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")]
PathText = Annotated[str, Meta(min_length=1, max_length=4096)]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
FileMode = Annotated[int, Meta(ge=0, le=0o7777)]
_OWNER = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?\Z"
OwnerName = Annotated[str, Meta(min_length=1, max_length=64, pattern=_OWNER)]
TermSize = Annotated[int, Meta(ge=1, le=10_000)]
Credit = Annotated[int, Meta(ge=1, le=64 * 1024 * 1024)]


class _Msg(Struct, tag_field="type", forbid_unknown_fields=True, omit_defaults=False):
    """Base of every wire message."""


# --- metrics ---------------------------------------------------------------


class SystemInfo(Struct, forbid_unknown_fields=True):
    """Static facts about a node, sent once in ``hello``."""

    os: InfoText | None
    kernel: InfoText | None
    arch: InfoText | None
    cpu_model: InfoText | None
    cpu_count: NonNegInt | None
    mem_total: NonNegInt | None
    boot_time: NonNeg | None


class DiskUsage(Struct, forbid_unknown_fields=True):
    mount: Line
    fstype: Word
    total: NonNegInt
    used: NonNegInt
    percent: Percent


class NetRate(Struct, forbid_unknown_fields=True):
    name: Word
    rx_bps: NonNeg | None
    tx_bps: NonNeg | None


class Sample(Struct, forbid_unknown_fields=True):
    """One metrics sample. A value that is unknown is ``None``, never a guess."""

    ts: NonNeg
    cpu_percent: Percent | None
    cpu_per_core: Annotated[list[Percent], Meta(max_length=4096)]
    load1: NonNeg | None
    load5: NonNeg | None
    load15: NonNeg | None
    mem_total: NonNegInt | None
    mem_used: NonNegInt | None
    mem_available: NonNegInt | None
    mem_percent: Percent | None
    swap_total: NonNegInt | None
    swap_used: NonNegInt | None
    swap_percent: Percent | None
    disks: Annotated[list[DiskUsage], Meta(max_length=256)]
    disk_read_bps: NonNeg | None
    disk_write_bps: NonNeg | None
    net_rx_bps: NonNeg | None
    net_tx_bps: NonNeg | None
    nets: Annotated[list[NetRate], Meta(max_length=256)]
    uptime: NonNeg | None
    procs: NonNegInt | None

    @property
    def disk_percent(self) -> float | None:
        """How full the fullest disk is: what lists, history and alerts call ``disk_percent``."""
        return max((d.percent for d in self.disks), default=None)


# --- node -> core ----------------------------------------------------------


class Hello(_Msg, tag="hello"):
    """``protocol``: the newest version the node speaks; ``min_protocol`` the oldest."""

    protocol: int
    node_id: NodeId
    hostname: Name
    agent_version: Word
    info: SystemInfo
    labels: Labels = {}
    # Jobs the node has received and not had acked (running or with a result
    # to send): Core re-sends any job it sent that is not in this list.
    jobs: Annotated[list[JobId], Meta(max_length=100_000)] = []
    min_protocol: int | msgspec.UnsetType = msgspec.UNSET  # absent: only ``protocol``


class Heartbeat(_Msg, tag="heartbeat"):
    """``seq`` numbers heartbeats per agent run; ``samples`` is oldest first.

    Usually one sample; after a disconnection the node sends what it buffered.
    """

    seq: NonNegInt
    samples: Annotated[list[Sample], Meta(min_length=1, max_length=MAX_SAMPLES_PER_HEARTBEAT)]
    # The highest heartbeat.ack seq the node has read: Core tells a node that
    # does not read its socket (a stall) by this not catching up (None: not said).
    acked: NonNegInt | None = None


class JobOutput(_Msg, tag="job.output"):
    """A chunk of a job's output; ``offset`` is its byte position in the stream.

    Offsets make re-sent chunks idempotent: Core keeps a byte once. An empty
    chunk at offset 0 is sent when the job's process starts.
    """

    job_id: JobId
    stream: Literal["stdout", "stderr"]
    offset: NonNegInt
    chunk: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


class JobAccepted(_Msg, tag="job.accepted"):
    """The node took a ``job.run`` (spooled it): sent at once, before it runs.

    Core counts a node that does not answer a ``job.run`` this way (or with
    output or a result) within a few seconds as stalled.
    """

    job_id: JobId


JobOutcome = Literal["succeeded", "failed", "timed_out", "cancelled", "refused", "error"]


class JobResult(_Msg, tag="job.result"):
    job_id: JobId
    outcome: JobOutcome
    exit_code: int | None
    signal: int | None
    error: ErrorText | None
    duration: NonNeg
    stdout_bytes: NonNegInt
    stderr_bytes: NonNegInt
    stdout_truncated: bool
    stderr_truncated: bool


def no_run(job_id: str, outcome: JobOutcome, error: str) -> JobResult:
    """The result of a job whose process never ran, or whose run is unknown:
    refused before it was sent, or lost with the agent that ran it."""
    return JobResult(
        job_id=job_id,
        outcome=outcome,
        exit_code=None,
        signal=None,
        error=error,
        duration=0.0,
        stdout_bytes=0,
        stderr_bytes=0,
        stdout_truncated=False,
        stderr_truncated=False,
    )


class FileReady(_Msg, tag="file.ready"):
    """The node took a ``file.open``: for a pull, the file's size and mode."""

    transfer_id: StreamId
    size: NonNegInt | None = None
    mode: FileMode | None = None


class FileResult(_Msg, tag="file.result"):
    """The end of a transfer on the node: placed (push) or all sent (pull), or why not."""

    transfer_id: StreamId
    error: ErrorText | None
    sha256: Sha256 | None = None
    size: NonNegInt = 0


class ShellStarted(_Msg, tag="shell.started"):
    session_id: StreamId
    pid: NonNegInt


class ShellOutput(_Msg, tag="shell.output"):
    session_id: StreamId
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


class ShellExit(_Msg, tag="shell.exit"):
    """The shell ended (or never started: ``error``)."""

    session_id: StreamId
    exit_code: int | None
    signal: int | None = None
    error: ErrorText | None = None


class StdinClosed(_Msg, tag="stdin.closed"):
    """A job's streamed stdin is over on the node: end of file given, or the process
    exited or closed its stdin first (no error either way); ``size``: bytes it took.
    ``error``: the stream was not taken."""

    stream_id: StreamId
    size: NonNegInt
    error: ErrorText | None = None


# --- core -> node ----------------------------------------------------------


class Welcome(_Msg, tag="welcome"):
    """``ack_interval``: Core acks heartbeats at most this often (0: every one)."""

    node_id: NodeId
    heartbeat_interval: Annotated[float, Meta(gt=0)]
    server_time: NonNeg
    ack_interval: NonNeg = 0.0
    # The version this session speaks; absent to a node that speaks only 1.
    protocol: int | msgspec.UnsetType = msgspec.UNSET


class HeartbeatAck(_Msg, tag="heartbeat.ack"):
    """Every sample up to ``seq`` is stored; the node may drop them."""

    seq: NonNegInt


# The schema states the unit rule; Core checks it (jobs_api.job_spec, with the
# name in the message) and the node checks systemd's own rules again.
UnitName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=names.UNIT_MAX,
        extra_json_schema={"pattern": names.UNIT_PATTERN},
        description="a systemd unit name (no '/'; '.service' is implied without a type)",
    ),
]


class ServiceAction(Struct, forbid_unknown_fields=True):
    action: Literal["status", "start", "stop", "restart", "reload", "enable", "disable"]
    unit: UnitName


class JobRun(_Msg, tag="job.run"):
    """Run ``command`` with ``/bin/sh -c``, or a service action (exactly one)."""

    job_id: JobId
    command: LongText | None
    service: ServiceAction | None
    timeout: Annotated[float, Meta(gt=0)]
    output_cap: NonNegInt
    env: Annotated[dict[ShortText, LongText], Meta(max_length=256)] = {}
    cwd: ShortText | None = None
    # The process's standard input, then end of file; None: /dev/null.
    stdin: Annotated[bytes, Meta(max_length=MAX_STDIN_BYTES)] | None = None
    # True: stdin is a pipe fed by a stream Core opens (stdin.open); protocol 3.
    # Absent otherwise, so that agents of protocol 2 read every other job.run.
    stdin_stream: bool | msgspec.UnsetType = msgspec.UNSET


class JobAck(_Msg, tag="job.ack"):
    job_id: JobId


class JobCancel(_Msg, tag="job.cancel"):
    job_id: JobId


class FileOpen(_Msg, tag="file.open"):
    """Start a transfer: ``push`` writes ``path`` on the node, ``pull`` reads it.

    For a push, ``size`` is what will come; ``mode``, ``owner`` and ``group``
    are what the placed file gets (None: the replaced file's, or 0644 and the
    agent's user for a new file).
    """

    transfer_id: StreamId
    direction: Literal["push", "pull"]
    path: PathText
    size: NonNegInt | None = None
    mode: FileMode | None = None
    owner: OwnerName | None = None
    group: OwnerName | None = None


class FileEnd(_Msg, tag="file.end"):
    """Every byte of a push was sent: place the file if it has this size and SHA-256."""

    transfer_id: StreamId
    size: NonNegInt
    sha256: Sha256


class FileCancel(_Msg, tag="file.cancel"):
    transfer_id: StreamId
    reason: ErrorText


class AgentUpgrade(_Msg, tag="agent.upgrade"):
    """Replace the agent with the zipapp that follows (``file.data``, ``file.end``).

    The node answers as to a push (``file.ready`` and ``credit``, or a
    ``file.result`` with the error), then ``file.result`` once the new
    version is checked and in place, and restarts into it; it rolls back
    unless the new version is welcomed by Core within ``timeout`` seconds.
    """

    transfer_id: StreamId
    version: Word
    size: NonNegInt
    sha256: Sha256
    timeout: Annotated[float, Meta(ge=1, le=3600)]


class ShellOpen(_Msg, tag="shell.open"):
    session_id: StreamId
    rows: TermSize
    cols: TermSize
    term: Word = "xterm"


class ShellInput(_Msg, tag="shell.input"):
    session_id: StreamId
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


class ShellResize(_Msg, tag="shell.resize"):
    session_id: StreamId
    rows: TermSize
    cols: TermSize


class ShellClose(_Msg, tag="shell.close"):
    """Hang up: the shell gets SIGHUP, as when an ssh connection drops."""

    session_id: StreamId


class StdinOpen(_Msg, tag="stdin.open"):
    """Feed the stdin of job ``job_id`` (run with ``stdin_stream``) from this stream:
    the node grants credit, then takes ``stdin.data`` within it."""

    stream_id: StreamId
    job_id: JobId


class StdinData(_Msg, tag="stdin.data"):
    stream_id: StreamId
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


class StdinEnd(_Msg, tag="stdin.end"):
    """No more input: end of file when ``complete``; else the sender was lost and the
    node cancels the job (cut input never passes for whole)."""

    stream_id: StreamId
    complete: bool


# --- either way (streams) --------------------------------------------------


class FileData(_Msg, tag="file.data"):
    """A chunk of a file at byte ``offset``: Core to node in a push, back in a pull."""

    transfer_id: StreamId
    offset: NonNegInt
    chunk: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


class StreamCredit(_Msg, tag="credit"):
    """The sender of this takes ``bytes`` more data on the stream (file or shell)."""

    stream_id: StreamId
    bytes: Credit


# --- either way ------------------------------------------------------------


class Error(_Msg, tag="error"):
    code: ErrorCode
    message: ErrorText


NodeMessage = (
    Hello
    | Heartbeat
    | JobAccepted
    | JobOutput
    | JobResult
    | FileReady
    | FileData
    | FileResult
    | StreamCredit
    | ShellStarted
    | ShellOutput
    | ShellExit
    | StdinClosed
    | Error
)
CoreMessage = (
    Welcome
    | HeartbeatAck
    | JobRun
    | JobAck
    | JobCancel
    | FileOpen
    | FileData
    | FileEnd
    | FileCancel
    | StreamCredit
    | AgentUpgrade
    | ShellOpen
    | ShellInput
    | ShellResize
    | ShellClose
    | StdinOpen
    | StdinData
    | StdinEnd
    | Error
)
Message = (
    Hello
    | Heartbeat
    | JobAccepted
    | JobOutput
    | JobResult
    | FileReady
    | FileResult
    | ShellStarted
    | ShellOutput
    | ShellExit
    | StdinClosed
    | Welcome
    | HeartbeatAck
    | JobRun
    | JobAck
    | JobCancel
    | FileOpen
    | FileEnd
    | FileCancel
    | AgentUpgrade
    | ShellOpen
    | ShellInput
    | ShellResize
    | ShellClose
    | StdinOpen
    | StdinData
    | StdinEnd
    | FileData
    | StreamCredit
    | Error
)
# Node messages that belong to a file transfer or a shell (Core routes them by id).
StreamMessage = (
    FileReady
    | FileData
    | FileResult
    | StreamCredit
    | ShellStarted
    | ShellOutput
    | ShellExit
    | StdinClosed
)
STREAM_MESSAGES = (
    FileReady,
    FileData,
    FileResult,
    StreamCredit,
    ShellStarted,
    ShellOutput,
    ShellExit,
    StdinClosed,
)


def stream_id(msg: StreamMessage) -> str:
    """The transfer or shell session a stream message belongs to."""
    if isinstance(msg, (FileReady, FileData, FileResult)):
        return msg.transfer_id
    if isinstance(msg, (StreamCredit, StdinClosed)):
        return msg.stream_id
    return msg.session_id


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_node_decoder: msgspec.json.Decoder[NodeMessage] = msgspec.json.Decoder(NodeMessage)
_core_decoder: msgspec.json.Decoder[CoreMessage] = msgspec.json.Decoder(CoreMessage)


def encode(msg: Message) -> str:
    """The JSON text of ``msg``."""
    return _encoder.encode(msg).decode()


def _decode(decoder: msgspec.json.Decoder[Any], text: str | bytes, max_size: int) -> Any:
    if not isinstance(text, (str, bytes)):
        raise ProtocolError(f"frame must be text, not {type(text).__name__}")
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes is over the limit of {max_size}")
    try:
        msg = decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise ProtocolError(_reason(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    except UnicodeError as exc:
        raise ProtocolError(f"invalid text: {exc}") from None
    bad = _unsafe_field(msg)
    if bad is not None:
        path, lines = bad
        raise ProtocolError(f"Expected {_TEXT_RULES[lines]} - at `{path}`")
    if isinstance(msg, Hello):
        if negotiate(msg) is None:
            supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
            low = (
                msg.protocol
                if isinstance(msg.min_protocol, msgspec.UnsetType)
                else msg.min_protocol
            )
            spoken = f"{msg.protocol}" if low == msg.protocol else f"{low} to {msg.protocol}"
            why = "too old for this Core" if msg.protocol < OLDEST_PROTOCOL else "too new"
            raise ProtocolError(
                f"unsupported protocol version {spoken}: the agent is {why} "
                f"(this side speaks {supported}); install an agent of a matching version"
            )
        problem = names.name_problem(msg.hostname)
        if problem is not None:
            raise ProtocolError(f"bad hostname '{printable(msg.hostname)}': {problem}")
    return msg


def negotiate(hello: Hello) -> int | None:
    """The version a session with this node speaks: the newest both know; None: none."""
    low = (
        hello.protocol if isinstance(hello.min_protocol, msgspec.UnsetType) else hello.min_protocol
    )
    both = [v for v in SUPPORTED_VERSIONS if low <= v <= hello.protocol]
    return max(both) if both else None


def _unsafe_field(msg: Message) -> tuple[str, bool] | None:
    """The path of the first free-text field with a character it may not hold.

    With it, whether that field may span lines. Only what a node sends
    carries such fields: names of disks and interfaces, system info, errors.
    """
    if isinstance(msg, Heartbeat):
        for i, sample in enumerate(msg.samples):
            for j, disk in enumerate(sample.disks):
                if not is_printable(disk.mount):
                    return f"$.samples[{i}].disks[{j}].mount", False
                if not is_printable(disk.fstype):
                    return f"$.samples[{i}].disks[{j}].fstype", False
            for j, net in enumerate(sample.nets):
                if not is_printable(net.name):
                    return f"$.samples[{i}].nets[{j}].name", False
    elif isinstance(msg, Hello):
        if not is_printable(msg.agent_version):
            return "$.agent_version", False
        info = msg.info
        for name in ("os", "kernel", "arch", "cpu_model"):
            value = getattr(info, name)
            if value is not None and not is_printable(value):
                return f"$.info.{name}", False
    elif isinstance(msg, (JobResult, Error, FileResult, ShellExit, StdinClosed)):
        name, value = ("message", msg.message) if isinstance(msg, Error) else ("error", msg.error)
        if value is not None and not is_printable(value, lines=True):
            return f"$.{name}", True
    return None


_TEXT_RULES = {
    False: "one line of text without control characters",
    True: "text without control characters (tabs and newlines allowed)",
}


def _reason(text: str) -> str:
    if text.startswith("Invalid value ") and text.endswith("`$.type`"):
        value = text[len("Invalid value ") :].rsplit(" - at ", 1)[0]
        return f"unknown message type {value}"
    if "Object missing required field `type`" in text:
        return "message has no `type`"
    return text


def decode(text: str | bytes, *, max_size: int = MAX_FRAME_BYTES) -> Message:
    """Parse and validate one frame of either direction."""
    result: Message = _decode(_decoder, text, max_size)
    return result


def decode_from_node(text: str | bytes, *, max_size: int = MAX_FRAME_BYTES) -> NodeMessage:
    """Parse a frame Core received: only node -> core messages are accepted."""
    result: NodeMessage = _decode(_node_decoder, text, max_size)
    return result


def decode_from_core(text: str | bytes, *, max_size: int = MAX_FRAME_BYTES) -> CoreMessage:
    """Parse a frame a node received: only core -> node messages are accepted."""
    result: CoreMessage = _decode(_core_decoder, text, max_size)
    return result


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message, for docs and other implementations."""
    schema: dict[str, Any] = msgspec.json.schema(Message)
    return schema
