"""Typed errors shared by every role.

Library code raises these; the CLI turns them into one line and an exit code,
the REST API into one JSON shape (``{"error": {"code": ..., "message": ...}}``).

    ServermgrError                 base; ``exit_code`` for the CLI, ``code`` for --json errors
    ├── ConfigError                bad config file, key or value (exit 2)
    ├── UsageError                 bad command-line input (exit 2)
    ├── KeyFileError               core key file missing, empty, corrupt, unreadable
    ├── ProtocolError              a wire message that cannot be accepted
    ├── StorageError               the database cannot be opened, migrated or written
    │   └── StorageUnavailableError    writes fail now (disk full, I/O error, corrupt): 503
    ├── RedisUnavailableError      Redis cannot be used now (bad URL, AUTH, down, slow)
    ├── RegistrationError          Core refused to register a node
    │   ├── BadTokenError          wrong register token (401, 403)
    │   ├── NameTakenError         hostname already held by another node (409)
    │   └── NodeRemovedError       an operator removed this node: its credential is revoked
    └── ClientError                a ctl request failed
        ├── CoreUnreachableError   no answer from Core
        │   └── TlsError           Core's TLS is not what we trust (pin, CA, ws vs wss)
        ├── AuthError              Core refused the key (401)
        └── ApiError               Core answered with an error document
            └── NotFoundError      unknown node or job (404)
"""

from __future__ import annotations


class ServermgrError(Exception):
    """Base of every error servermgr reports to a user."""

    exit_code = 1
    code = "error"  # stable, for scripts: ctl's --json errors carry it

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ServermgrError):
    """A config file that cannot be used; names the file, key and reason."""

    code = "config"
    exit_code = 2

    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}" if key else path
        super().__init__(f"config error: {where}: {reason}")


class UsageError(ServermgrError):
    """Bad command-line input that the parser could not catch."""

    code = "usage"
    exit_code = 2


class KeyFileError(ServermgrError):
    """The core key file exists but cannot be used; it is left untouched."""

    code = "key_file"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"core key {path}: {reason}")


class ProtocolError(ServermgrError):
    """A wire message that is not valid; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"protocol error: {reason}")


class StorageError(ServermgrError):
    """The database cannot be opened, migrated or written."""


class StorageUnavailableError(StorageError):
    """The database refuses work now (disk full, I/O error, corrupt file).

    The REST API answers 503 ``storage_unavailable`` with ``reason`` (the log
    gets the whole message, with the path); nothing is acked to a node for
    it, so nodes keep what they sent and Core stores it later.
    """

    def __init__(self, message: str, reason: str = "the database is unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class RedisUnavailableError(ServermgrError):
    """Redis (``[storage] redis_url``) cannot be used now; Core goes on from memory.

    ``kind`` says which of the cases a user tells apart: ``url`` (the URL
    cannot be used, or what answers there is not Redis), ``auth`` (the
    password or user was refused), ``unreachable`` (nothing answers), ``slow``
    (no answer within the timeout), ``down`` (a call while the link is known
    to be down), ``error`` (Redis answered with an error), ``busy`` (the call
    waited too long for a free thread: Core's own congestion, not Redis's).
    The message is one line and never holds the password.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class RegistrationError(ServermgrError):
    """Core refused to register this node."""


class BadTokenError(RegistrationError):
    """Core rejected the register token."""


class NameTakenError(RegistrationError):
    """The hostname is registered to another node."""


class NodeRemovedError(RegistrationError):
    """An operator removed this node; the agent must not enrol again by itself."""


class ClientError(ServermgrError):
    """A request from ctl (or the node's REST calls) failed."""

    code = "client"


class CoreUnreachableError(ClientError):
    """Core did not answer at its address."""

    code = "unreachable"


class TlsError(CoreUnreachableError):
    """Not connecting: Core's certificate is not the trusted one, or TLS is on one side only.

    A node keeps retrying (with backoff) and never sends its credential.
    """

    code = "tls"


class AuthError(ClientError):
    """Core refused the key."""

    code = "unauthorized"


class ApiError(ClientError):
    """Core answered with an error document."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class NotFoundError(ApiError):
    """The node or job named does not exist."""


def single_error(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups, else ``exc`` itself.

    trio's nurseries wrap what a task raises in exception groups; a CLI that
    reports one line wants the error itself.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
