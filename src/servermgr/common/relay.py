"""Messages between ctl and Core on the file, shell and stdin WebSockets.

Control messages are JSON text frames with a ``type``; data (file bytes,
terminal input and output) travels in binary frames of at most
``flow.CHUNK`` bytes, each within the credit the receiver granted
(``common/flow.py``). Core relays to and from the node (``common/proto.py``).

    ctl -> Core   open (first), credit, end (push), resize (shell), eof (stdin)
    Core -> ctl   ready, credit, result (file), exit (shell), done (stdin), error
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from servermgr.common import proto
from servermgr.common.errors import ProtocolError

FILES_PATH = "/api/v1/files/ws"
SHELL_PATH = "/api/v1/shell/ws"
STDIN_PATH = "/api/v1/stdin/ws"
MAX_CONTROL = 8 * 1024  # a text frame from ctl

NodeRef = Annotated[str, Meta(min_length=1, max_length=256)]


class _Msg(Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class FileRequest(_Msg, tag="open"):
    """Start a transfer with ``node`` (its name or id)."""

    node: NodeRef
    direction: Literal["push", "pull"]
    path: proto.PathText
    size: proto.NonNegInt | None = None
    mode: proto.FileMode | None = None
    owner: proto.OwnerName | None = None
    group: proto.OwnerName | None = None


class ShellRequest(_Msg, tag="open"):
    node: NodeRef
    rows: proto.TermSize = 24
    cols: proto.TermSize = 80
    term: proto.Word = "xterm"


class StdinRequest(_Msg, tag="open"):
    """Feed the stdin of ``job`` (made with ``stdin_stream``) on ``node``."""

    job: proto.JobId
    node: NodeRef


class Eof(_Msg, tag="eof"):
    """The end of the standard input (every byte was sent)."""


class Credit(_Msg, tag="credit"):
    bytes: proto.Credit


class End(_Msg, tag="end"):
    size: proto.NonNegInt
    sha256: proto.Sha256


class Resize(_Msg, tag="resize"):
    rows: proto.TermSize
    cols: proto.TermSize


class Ready(_Msg, tag="ready"):
    id: proto.StreamId
    node: str
    size: int | None = None
    mode: int | None = None


class Result(_Msg, tag="result"):
    sha256: str
    size: int


class Exit(_Msg, tag="exit"):
    exit_code: int | None
    signal: int | None = None


class Done(_Msg, tag="done"):
    """The job's stdin is over on the node; ``size``: the bytes its process took."""

    size: int


class ErrorBody(Struct):
    code: str
    message: str


class Error(_Msg, tag="error"):
    error: ErrorBody


FileClientMessage = FileRequest | Credit | End
ShellClientMessage = ShellRequest | Credit | Resize
StdinClientMessage = StdinRequest | Eof
CoreMessage = Ready | Credit | Result | Exit | Done | Error

_encoder = msgspec.json.Encoder()
_file_decoder: msgspec.json.Decoder[FileClientMessage] = msgspec.json.Decoder(FileClientMessage)
_shell_decoder: msgspec.json.Decoder[ShellClientMessage] = msgspec.json.Decoder(ShellClientMessage)
_stdin_decoder: msgspec.json.Decoder[StdinClientMessage] = msgspec.json.Decoder(StdinClientMessage)
_core_decoder: msgspec.json.Decoder[CoreMessage] = msgspec.json.Decoder(CoreMessage)


def encode(msg: _Msg) -> str:
    return _encoder.encode(msg).decode()


def error(code: str, message: str) -> Error:
    return Error(error=ErrorBody(code=code, message=message))


def _decode(decoder: msgspec.json.Decoder[Any], text: str) -> object:
    if len(text) > MAX_CONTROL:
        raise ProtocolError(f"control message of {len(text)} bytes is over {MAX_CONTROL}")
    try:
        return decoder.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(str(exc)) from None


def decode_file_client(text: str) -> FileClientMessage:
    msg = _decode(_file_decoder, text)
    assert isinstance(msg, (FileRequest, Credit, End))
    return msg


def decode_shell_client(text: str) -> ShellClientMessage:
    msg = _decode(_shell_decoder, text)
    assert isinstance(msg, (ShellRequest, Credit, Resize))
    return msg


def decode_stdin_client(text: str) -> StdinClientMessage:
    msg = _decode(_stdin_decoder, text)
    assert isinstance(msg, (StdinRequest, Eof))
    return msg


def decode_core(text: str) -> CoreMessage:
    msg = _decode(_core_decoder, text)
    assert isinstance(msg, (Ready, Credit, Result, Exit, Done, Error))
    return msg
