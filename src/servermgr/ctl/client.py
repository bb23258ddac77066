"""Typed client of Core's REST API, used by ``servermgr ctl``."""

from __future__ import annotations

from servermgr.common import addr
from servermgr.common.errors import (
    ApiError,
    AuthError,
    ClientError,
    CoreUnreachableError,
    KeyFileError,
    NotFoundError,
    TlsError,
)
from servermgr.common.rest import (
    Connection,
    Disconnected,
    HttpError,
    Response,
    connect,
    exchange,
    reason,
    tls_failure,
)

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from servermgr.common.config import Config
    from servermgr.common.tls import Trust

TIMEOUT = 10.0
RETRY_DELAYS = (0.2, 0.5, 1.0)  # job submission retried on connection errors
MAX_LINE = 64 * 1024 * 1024  # one NDJSON line; the largest is a job of a huge fleet
MAX_ERROR = 1024 * 1024  # an error document
JOBS = "/api/v1/jobs"
ALERTS = "/api/v1/alerts"
EVENTS = "/api/v1/events"  # the WebSocket of live node status (ctl top)


def events_path(*, history: int, interval: int) -> str:
    """The path of the live event stream ``ctl top`` opens as a WebSocket."""
    return f"{EVENTS}?history={history}&interval={interval}"


def resolve(
    core: str | None,
    key: str | None,
    config: Callable[[], Config],
    *,
    fingerprint: str | None = None,
    ca_file: str | None = None,
) -> tuple[str, str, Trust | None]:
    """Core's base URL, the key and how to trust its certificate.

    Flags/env first, else the local Core's config: its listen address, its
    key file and (for https) its certificate's fingerprint. ``Trust`` is None
    for plain http.
    """
    cfg = None
    local = core is None
    if core is None or key is None:
        cfg = config()
    if core is None:
        assert cfg is not None
        core = addr.listen_to_url(
            cfg.server.listen_host, cfg.server.listen_port, tls=cfg.server.tls != "off"
        )
    base = addr.http_base(core)
    trust = None
    if base.startswith("https://"):
        trust = _trust(base, local, cfg, config, fingerprint, ca_file)
    if key is None:
        assert cfg is not None
        from servermgr.common.keyfile import read_key

        try:
            key = read_key(cfg.storage.key_path).value
        except KeyFileError as exc:
            raise ClientError(
                f"no core key given: pass --key or set SERVERMGR_KEY ({exc.message})"
            ) from None
    return base, key.strip(), trust


def _trust(
    base: str,
    local: bool,
    cfg: Config | None,
    config: Callable[[], Config],
    fingerprint: str | None,
    ca_file: str | None,
) -> Trust:
    """--fingerprint, else --ca-file, else (Core on this host) its certificate's pin."""
    from pathlib import Path

    from servermgr.common import tls
    from servermgr.common.errors import UsageError

    if fingerprint and ca_file:
        raise UsageError("give --fingerprint or --ca-file, not both")
    if fingerprint:
        try:
            return tls.Trust(fingerprint=tls.parse_fingerprint(fingerprint))
        except ValueError as exc:
            raise UsageError(f"--fingerprint / SERVERMGR_FINGERPRINT: {exc}") from None
    if ca_file:
        return tls.Trust(ca_file=Path(ca_file))
    cfg = cfg or config()
    here = addr.listen_to_url(cfg.server.listen_host, cfg.server.listen_port, tls=True)
    if local or _same_address(base, here):
        pin = local_fingerprint(cfg)
        if pin is not None:
            return tls.Trust(fingerprint=pin)
    return tls.Trust()


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _same_address(a: str, b: str) -> bool:
    """Whether two base URLs name the same Core (any loopback name counts as one)."""
    from urllib.parse import urlsplit

    pa, pb = urlsplit(a), urlsplit(b)
    if pa.port != pb.port:
        return False
    return pa.hostname == pb.hostname or {pa.hostname, pb.hostname} <= _LOOPBACK


def local_fingerprint(cfg: Config) -> str | None:
    """The fingerprint of the certificate the local Core serves, if it has one yet."""
    from servermgr.common import tls

    paths = cfg.tls_paths
    if paths is None:
        return None
    try:
        return tls.fingerprint_of_file(paths[0])
    except (OSError, ValueError):
        return None


class Client:
    """Core's REST API over the small stdlib client of ``common/rest.py``.

    Not httpx (nor http.client): their imports cost ctl more start-up than
    the whole exec round trip (docs/decisions.md). One keep-alive connection
    for plain requests, a fresh one for each stream.
    """

    def __init__(
        self, base_url: str, key: str, *, timeout: float = TIMEOUT, trust: Trust | None = None
    ) -> None:
        self.base_url = base_url
        self.trust = trust
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self._timeout = timeout
        self._conn: Connection | None = None

    def _connect(self, timeout: float) -> Connection:
        return connect(self.base_url, timeout, self.trust)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _unreachable(self, exc: BaseException) -> CoreUnreachableError:
        found = tls_failure(exc, self.base_url, self.trust)
        if found is not None:
            return found
        return CoreUnreachableError(
            f"cannot reach Core at {self.base_url} ({reason(exc)}); is it running? "
            "(--core / SERVERMGR_CORE)"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        resp = self.send(method, path, json=json, params=params, headers=headers)
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                resp.status_code, "bad_response", _not_core(resp, self.base_url)
            ) from None

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request on the kept-alive connection; an error status raises its typed error."""
        if params:
            path += "?" + query(params)
        body = None if json is None else _dumps(json)
        headers = {**self._headers, **(headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect(self._timeout)
            try:
                resp = exchange(self._conn, method, path, body=body, headers=headers)
                break
            except (Disconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()  # a kept-alive connection Core closed: try once more
                if attempt == 2:
                    raise self._unreachable(exc) from None
            except OSError as exc:
                self.close()
                raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            self.raise_for(resp)
        return resp

    def create_job(
        self, body: dict[str, Any], *, key: str, sleep: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        """POST a job with an idempotency key, retried with that same key while
        Core cannot be reached: a retry is the same job, never a second run."""
        import time

        for delay in (*RETRY_DELAYS, None):
            try:
                job: dict[str, Any] = self.request(
                    "POST", JOBS, json=body, headers={"Idempotency-Key": key}
                )
                return job
            except TlsError:
                raise  # the address or the pin is wrong: retrying changes nothing
            except CoreUnreachableError:
                if delay is None:
                    raise
                (sleep or time.sleep)(delay)
        raise AssertionError("unreachable")

    def stream_lines(self, path: str, *, read_timeout: float) -> Iterator[bytes]:
        """Lines of a streamed answer (NDJSON); each read may wait ``read_timeout`` s.

        A line longer than MAX_LINE is an error (Core's lines hold at most a
        64 KiB chunk of output, or the job without its output).
        """
        conn = self._connect(read_timeout)
        try:
            try:
                # Used once: Core closes it when the stream ends instead of
                # keeping it open, idle, for its keep-alive timeout.
                raw = conn.request("GET", path, headers=self._headers | {"Connection": "close"})
            except OSError as exc:
                raise self._unreachable(exc) from None
            if raw.status >= 400:
                self.raise_for(Response(raw.status, raw.read(MAX_ERROR)))
            while True:
                line = raw.readline(MAX_LINE)
                if not line:
                    return
                if len(line) > MAX_LINE:
                    raise HttpError(f"a line of the stream is over {MAX_LINE} bytes")
                if line.strip():
                    yield line
        finally:
            conn.close()

    def raise_for(self, resp: Response) -> None:
        """The typed error for an error response."""
        code, message = _error(resp, self.base_url)
        if resp.status_code == 401:
            raise AuthError(f"Core refused the key: {message} (--key / SERVERMGR_KEY)")
        if resp.status_code == 404:
            raise NotFoundError(404, code, message)
        raise ApiError(resp.status_code, code, message)

    def job(self, job_id: str, *, output: bool = True) -> dict[str, Any]:
        params = None if output else {"output": "false"}
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/jobs/{segment(job_id)}", params=params
        )
        return result

    def job_output(self, job_id: str, node: str, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of one node's ``stream`` from ``offset`` (empty past the end)."""
        path = f"/api/v1/jobs/{segment(job_id)}/output/{segment(node)}/{stream}"
        return self.send("GET", path, params={"offset": offset, "limit": limit}).body

    def nodes(self, target: str | None = None) -> list[dict[str, Any]]:
        """Every node, or those ``target`` picks (Core applies the job API's rules)."""
        params = None if target is None else {"target": target}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/nodes", params=params)
        return result

    def node(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/nodes/{segment(ref)}")
        return result

    def rename_node(self, ref: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", f"/api/v1/nodes/{segment(ref)}", json={"name": name}
        )
        return result

    def upgrade_node(self, ref: str, timeout: float) -> dict[str, Any]:
        """Move ``ref``'s agent to the published one; answers once it is back (or not)."""
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/nodes/{segment(ref)}/upgrade", json={"timeout": timeout}
        )
        return result

    def remove_node(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/v1/nodes/{segment(ref)}")
        return result

    def jobs(
        self,
        *,
        node: str | None = None,
        state: str | None = None,
        limit: int = 20,
        before: float | None = None,
    ) -> dict[str, Any]:
        """A page of jobs, newest first: ``{"jobs": [...], "next_before": ...}``."""
        params: dict[str, Any] = {"limit": limit}
        for k, v in (("node", node), ("state", state), ("before", before)):
            if v is not None:
                params[k] = v
        result: dict[str, Any] = self.request("GET", JOBS, params=params)
        return result

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/jobs/{segment(job_id)}/cancel")
        return result

    def job_stream(self, job_id: str, *, read_timeout: float, follow: float) -> Iterator[bytes]:
        """The job's live events for ``follow`` s at most, one NDJSON line each
        (see ``stream_lines``); ``job.open`` last if the job is still open then."""
        return self.stream_lines(
            f"/api/v1/jobs/{segment(job_id)}/stream?follow={follow:g}", read_timeout=read_timeout
        )

    def audit(
        self,
        *,
        since: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        if action is not None:
            params["action"] = action
        if target is not None:
            params["target"] = target
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/audit", params=params)
        return result

    # --- alerts (docs/alerts.md) ---

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        result: list[dict[str, Any]] = self.request("GET", f"{ALERTS}")
        return result

    def alert_log(self, kind: str, *, since: str, limit: int) -> list[dict[str, Any]]:
        """``history`` (every transition) or ``deliveries`` (every notification attempt)."""
        params = {"since": since, "limit": limit}
        result: list[dict[str, Any]] = self.request("GET", f"{ALERTS}/{kind}", params=params)
        return result

    def alert_rules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{ALERTS}/rules")
        return result

    def add_alert_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"{ALERTS}/rules", json=rule)
        return result

    def remove_alert_rule(self, name: str) -> None:
        self.request("DELETE", f"{ALERTS}/rules/{segment(name)}")

    def silences(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{ALERTS}/silences")
        return result

    def add_silence(self, target: str, hold: str) -> dict[str, Any]:
        body = {"target": target, "for": hold}
        result: dict[str, Any] = self.request("POST", f"{ALERTS}/silences", json=body)
        return result

    def remove_silence(self, silence_id: int) -> None:
        self.request("DELETE", f"{ALERTS}/silences/{silence_id}")

    def metrics(
        self, ref: str, *, since: str, until: str | None = None, step: str | None = None
    ) -> dict[str, Any]:
        params = {"since": since}
        if until is not None:
            params["until"] = until
        if step is not None:
            params["step"] = step
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/nodes/{segment(ref)}/metrics", params=params
        )
        return result

    def schedules(self, *, node: str | None = None) -> list[dict[str, Any]]:
        """Every schedule, or those whose target picks ``node`` (name or id)."""
        params = None if node is None else {"node": node}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/schedules", params=params)
        return result

    def add_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/v1/schedules", json=body)
        return result

    def remove_schedule(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/v1/schedules/{segment(name)}")
        return result

    def pause_schedule(self, name: str, *, paused: bool) -> dict[str, Any]:
        verb = "pause" if paused else "resume"
        result: dict[str, Any] = self.request("POST", f"/api/v1/schedules/{segment(name)}/{verb}")
        return result


def _dumps(doc: Any) -> bytes:
    import json as _json

    return _json.dumps(doc).encode()


# Characters ``urllib.parse.quote`` never escapes: text made only of them is
# sent as it is, without importing urllib.parse (~3 ms of ctl exec's start-up).
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"


def segment(ref: str) -> str:
    """``ref`` as one path segment: ``urllib.parse.quote(ref, safe="")``, the same text."""
    if ref and not ref.strip(_UNRESERVED):
        return ref
    from urllib.parse import quote

    return quote(ref, safe="")


def query(params: dict[str, Any]) -> str:
    """``urllib.parse.urlencode(params)``, the same text."""
    if all(not str(v).strip(_UNRESERVED) and not k.strip(_UNRESERVED) for k, v in params.items()):
        return "&".join(f"{k}={v}" for k, v in params.items())
    from urllib.parse import urlencode

    return urlencode(params)


def _error(resp: Response, where: str) -> tuple[str, str]:
    try:
        err = resp.json()["error"]
        return str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "http_error", _not_core(resp, where)


def _not_core(resp: Response, where: str) -> str:
    """One line for an answer that is not Core's JSON (some other server at --core)."""
    snippet = " ".join(resp.text.split())[:80]
    return (
        f"{where.rstrip('/')} answered HTTP {resp.status_code} with something that is not "
        f"Core's JSON ({snippet or 'empty body'}); is --core / SERVERMGR_CORE right?"
    )
