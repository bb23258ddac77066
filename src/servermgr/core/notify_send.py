"""How one notice reaches one receiver: a webhook, a local command, an e-mail.

Each sender raises ``DeliveryFailed`` with a short reason that holds no
secret (no URL, header or password: receivers are named by their name).
The payload is the alert document (docs/alerts.md); a webhook's
``template`` turns it into what Slack, Discord or Mattermost expect.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import trio

from servermgr.common.alertconfig import CommandReceiver, EmailReceiver, Receiver, WebhookReceiver

MAX_DETAIL = 200


class DeliveryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason[:MAX_DETAIL])
        self.reason = reason[:MAX_DETAIL]


def render(template: str, notice: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body for ``template``: the alert document itself (json), or a chat message."""
    if template == "json":
        return dict(notice)
    text = str(notice["summary"])
    if template == "discord":
        return {"content": text[:2000]}
    return {"text": text}  # slack, mattermost


def environment(notice: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """A command's environment: Core's, plus ALERT_<FIELD> for each scalar field."""
    env = dict(base)
    for key, value in notice.items():
        if isinstance(value, (dict, list)):
            continue
        env[f"ALERT_{key.upper()}"] = "" if value is None else str(value)
    return env


async def send(receiver: Receiver, notice: Mapping[str, Any], client: Any) -> None:
    """Deliver ``notice`` once (the caller retries); ``client`` is an httpx.AsyncClient."""
    if isinstance(receiver, WebhookReceiver):
        await _webhook(receiver, notice, client)
    elif isinstance(receiver, CommandReceiver):
        await _command(receiver, notice)
    else:
        await _email(receiver, notice)


async def _webhook(r: WebhookReceiver, notice: Mapping[str, Any], client: Any) -> None:
    import httpx

    body = json.dumps(render(r.template, notice)).encode()
    headers = {"content-type": "application/json", **r.headers}
    try:
        with trio.fail_after(r.timeout):
            resp = await client.post(r.url, content=body, headers=headers, timeout=r.timeout)
    except trio.TooSlowError:
        raise DeliveryFailed(f"no answer within {r.timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: connection failed") from None
    if not 200 <= resp.status_code < 300:
        raise DeliveryFailed(f"HTTP {resp.status_code}")


async def _command(r: CommandReceiver, notice: Mapping[str, Any]) -> None:
    data = json.dumps(dict(notice)).encode() + b"\n"
    env = environment(notice, os.environ)
    try:
        with trio.fail_after(r.timeout):
            done = await trio.run_process(
                list(r.argv),
                stdin=data,
                stdout=subprocess.DEVNULL,
                capture_stderr=True,
                check=False,
                env=env,
                start_new_session=True,
            )
    except trio.TooSlowError:
        raise DeliveryFailed(f"still running after {r.timeout:g} s (killed)") from None
    except OSError as exc:
        raise DeliveryFailed(f"cannot run {r.argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = f": {err[-1][:120]}" if err else ""
        raise DeliveryFailed(f"exit status {done.returncode}{tail}")


def message(r: EmailReceiver, notice: Mapping[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = str(notice["summary"])[:200]
    msg["From"] = r.sender
    msg["To"] = ", ".join(r.to)
    lines = [str(notice["summary"]), ""]
    lines += [f"{k}: {v}" for k, v in notice.items() if k != "summary"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _smtp_send(r: EmailReceiver, msg: EmailMessage) -> None:
    import smtplib
    import ssl

    context = ssl.create_default_context(cafile=r.ca_file)
    smtp: smtplib.SMTP
    if r.security == "tls":
        smtp = smtplib.SMTP_SSL(r.host, r.port, timeout=r.timeout, context=context)
    else:
        smtp = smtplib.SMTP(r.host, r.port, timeout=r.timeout)
    with smtp:
        if r.security == "starttls":
            smtp.starttls(context=context)
        if r.username is not None and r.password is not None:
            smtp.login(r.username, r.password)
        smtp.send_message(msg)


async def _email(r: EmailReceiver, notice: Mapping[str, Any]) -> None:
    import smtplib
    import ssl

    msg = message(r, notice)
    try:
        with trio.fail_after(r.timeout + 1):
            await trio.to_thread.run_sync(_smtp_send, r, msg, abandon_on_cancel=True)
    except trio.TooSlowError:
        raise DeliveryFailed(f"no answer within {r.timeout:g} s") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"SMTP login refused ({exc.smtp_code})") from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed("the SMTP server does not offer STARTTLS") from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"SMTP error {exc.smtp_code}") from None
    except smtplib.SMTPException as exc:
        raise DeliveryFailed(f"SMTP: {type(exc).__name__}") from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"TLS: {exc.reason or 'handshake failed'}") from None
    except OSError as exc:
        raise DeliveryFailed(f"cannot reach the SMTP server: {exc.strerror or exc}") from None
