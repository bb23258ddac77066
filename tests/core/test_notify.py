"""Notifications to real receivers: a local HTTP server, a child process, a local SMTP server."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from servermgr.common.alertconfig import (
    AlertsConfig,
    CommandReceiver,
    EmailReceiver,
    Receiver,
    WebhookReceiver,
)
from servermgr.core import alertstore
from servermgr.core.alertlog import AlertLog
from servermgr.core.notify import Notifier
from servermgr.core.storage import Storage
from servermgr.core.writer import Database
from tests.support import SmtpServer, WebhookServer, wait_for

NOTICE = {
    "version": 1,
    "kind": "firing",
    "status": "firing",
    "rule": "offline",
    "when": "offline",
    "for": 30.0,
    "node": "web-1",
    "node_id": "n0123456789abcdef",
    "labels": {"role": "web"},
    "subject": "",
    "value": None,
    "started": 1.0,
    "since": 31.0,
    "ts": 31.0,
    "summary": "[FIRING] web-1: offline (offline)",
}


async def deliveries(db: Database, log: AlertLog) -> list[dict[str, Any]]:
    await log.flush()
    return await db.read(alertstore.deliveries, db.storage, 0.0, 100)


async def notify(
    storage: Storage,
    receivers: list[Receiver],
    notices: list[dict[str, Any]],
    done: Callable[[Notifier], bool],
) -> list[dict[str, Any]]:
    """Run a Notifier over ``receivers``, send ``notices`` to all, wait for ``done(notifier)``
    (on its counts: a receiver has a message before the sender has its answer)."""
    db = Database(storage)
    log = AlertLog(db, clock=time.time)
    notifier = Notifier(
        AlertsConfig(receivers=tuple(receivers), retries=3),
        log,
        clock=time.time,
        first_backoff=0.01,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.serve)
        for notice in notices:
            notifier.send(notice, None)
        await wait_for(lambda: done(notifier), 20)
        nursery.cancel_scope.cancel()
    return await deliveries(db, log)


async def test_webhook_is_retried_with_backoff_and_every_attempt_recorded(
    storage: Storage,
) -> None:
    server = WebhookServer(fail_first=2)
    try:
        hook = WebhookReceiver("ops", server.url, headers={"Authorization": "Bearer tok"})
        rows = await notify(storage, [hook], [NOTICE], lambda n: n.sent == 1)
    finally:
        server.close()
    assert server.bodies == [NOTICE]
    assert server.headers[0]["Authorization"] == "Bearer tok"
    assert [(r["attempt"], r["outcome"], r["detail"]) for r in rows] == [
        (1, "failed", "HTTP 500"),
        (2, "failed", "HTTP 500"),
        (3, "sent", ""),
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("slack", {"text": NOTICE["summary"]}),
        ("mattermost", {"text": NOTICE["summary"]}),
        ("discord", {"content": NOTICE["summary"]}),
    ],
)
async def test_chat_templates(storage: Storage, template: str, expected: dict[str, str]) -> None:
    server = WebhookServer()
    try:
        hook = WebhookReceiver("chat", server.url, template=template)
        await notify(storage, [hook], [NOTICE], lambda n: n.sent == 1)
    finally:
        server.close()
    assert server.bodies == [expected]


async def test_a_stuck_receiver_delays_neither_another_receiver_nor_the_sender(
    storage: Storage,
) -> None:
    release = threading.Event()
    stuck, fine = WebhookServer(hold=release), WebhookServer()
    try:
        receivers: list[Receiver] = [
            WebhookReceiver("stuck", stuck.url, timeout=60),
            WebhookReceiver("fine", fine.url),
        ]
        notices = [{**NOTICE, "ts": float(i)} for i in range(3)]
        await notify(storage, receivers, notices, lambda n: n.sent == 3)
        assert stuck.bodies == []  # still holding its first notice
    finally:
        release.set()
        stuck.close()
        fine.close()


async def test_webhook_secrets_never_reach_the_log(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = WebhookReceiver(
        "ops", "http://127.0.0.1:9/services/SECRETPATH", headers={"X-Token": "SECRETHEADER"}
    )
    rows = await notify(storage, [hook], [NOTICE], lambda n: n.failed == 1)
    assert rows[-1]["outcome"] == "gave_up"
    assert "SECRET" not in caplog.text + json.dumps(rows)


async def test_command_gets_the_alert_in_its_environment_and_on_stdin(
    storage: Storage, tmp_path: Path
) -> None:
    out = tmp_path / "alert.json"
    script = (
        "import json, os, sys; doc = json.load(sys.stdin); "
        f"open({str(out)!r}, 'w').write(json.dumps([doc['node'], os.environ['ALERT_NODE'], "
        "os.environ['ALERT_STATUS']]))"
    )
    page = CommandReceiver("page", (sys.executable, "-c", script))
    failing = CommandReceiver("broken", (sys.executable, "-c", "import sys; sys.exit('no pager')"))
    rows = await notify(storage, [page, failing], [NOTICE], lambda n: n.sent == 1 and n.failed == 1)
    assert json.loads(out.read_text()) == ["web-1", "web-1", "firing"]
    outcomes = {(r["receiver"], r["outcome"], r["detail"]) for r in rows}
    assert ("page", "sent", "") in outcomes
    assert ("broken", "gave_up", "exit status 1: no pager") in outcomes


async def test_email_over_starttls_with_login(storage: Storage, smtp_server: SmtpServer) -> None:
    mail = EmailReceiver(
        "mail",
        "127.0.0.1",
        ("oncall@example.org",),
        "servermgr@example.org",
        port=smtp_server.port,
        username=SmtpServer.USER,
        password=SmtpServer.PASSWORD,
        ca_file=str(smtp_server.cert),
    )
    rows = await notify(storage, [mail], [NOTICE], lambda n: n.sent == 1)
    (msg,) = smtp_server.messages
    assert msg["Subject"] == NOTICE["summary"]
    assert msg["To"] == "oncall@example.org"
    assert "node: web-1" in msg.get_payload()
    assert smtp_server.logins == [SmtpServer.USER]
    assert [r["outcome"] for r in rows] == ["sent"]


async def test_email_with_a_wrong_password_gives_up_and_says_why(
    storage: Storage, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    mail = EmailReceiver(
        "mail",
        "127.0.0.1",
        ("oncall@example.org",),
        "servermgr@example.org",
        port=smtp_server.port,
        username=SmtpServer.USER,
        password="WRONGSECRET",
        ca_file=str(smtp_server.cert),
    )
    db = Database(storage)
    log = AlertLog(db, clock=time.time)
    notifier = Notifier(
        AlertsConfig(receivers=(mail,), retries=2), log, clock=time.time, first_backoff=0.01
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.serve)
        notifier.send(NOTICE, None)
        await wait_for(lambda: notifier.failed == 1, 20)
        nursery.cancel_scope.cancel()
    rows = await deliveries(db, log)
    assert [(r["outcome"], r["detail"]) for r in rows] == [
        ("failed", "SMTP login refused (535)"),
        ("gave_up", "SMTP login refused (535)"),
    ]
    assert smtp_server.messages == []
    assert "WRONGSECRET" not in caplog.text
