"""Core out of file descriptors under slow clients: quiet logs, connected nodes unharmed."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.e2e.fleet import Fleet, cap, healthy
from tests.support import free_port

pytestmark = pytest.mark.e2e

OPEN_FILES = 64  # Core itself holds about 16
SLOW_CLIENTS = 150


@cap(90)
def test_out_of_descriptors_logs_once_keeps_nodes_and_recovers(fleet: Fleet) -> None:
    port = free_port()
    cfg = fleet.core_config(port)
    # One address may hold them all here (the per-address cap is tested in tests/core).
    cfg.write_text(
        cfg.read_text() + "[limits]\nunauthenticated_connections = 1000\nhandshake_timeout = 2\n"
    )
    key = fleet.run("key", "show", "--config", str(cfg)).stdout.split()[0]
    core = fleet.spawn("core", "core", "serve", "--config", str(cfg), open_files=OPEN_FILES)
    fleet.poll("Core listening", lambda: healthy(port) or not core.alive(), 10)
    assert core.alive(), core.text()
    fleet.spawn("node-01", "node", "run", "--config", str(fleet.node_config("node-01", port, key)))

    headers = {"Authorization": f"Bearer {key}"}
    # One kept-alive connection, opened before the flood (requests well within the
    # handshake timeout keep it open).
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, trust_env=False) as api:

        def status() -> dict[str, int]:
            doc = api.get("/api/v1/status", timeout=5).json()
            return {"online": doc["nodes"]["online"], "stored": doc["ingest"]["samples_stored"]}

        fleet.poll("node-01 online", lambda: status()["online"] == 1, 15)
        slow = []
        try:
            for i in range(SLOW_CLIENTS):  # the kernel queues what Core cannot accept
                slow.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                if i % 25 == 0:
                    status()
            # (Each poll uses the kept-alive connection, so it never idles out.)
            fleet.poll("EMFILE", lambda: status() and "EMFILE" in core.text(), 15)
            # Out of descriptors: node-01's heartbeats are still stored, over its connection.
            before = status()["stored"]
            fleet.poll("10 more samples", lambda: status()["stored"] >= before + 10, 20)
            assert "EMFILE" in core.text()
        finally:
            for sock in slow:
                sock.close()
        # Recovered: new connections, and a new node, get in.
        fleet.poll("Core accepting again", lambda: healthy(port), 20)
        node2 = fleet.node_config("node-02", port, key)
        fleet.spawn("node-02", "node", "run", "--config", str(node2))
        fleet.poll("node-02 online", lambda: status()["online"] == 2, 20)

    log = core.text()
    assert log.count("cannot accept connections") == 1, log  # the test is under a minute
    assert "Traceback" not in log
    assert log.count("node node-01 online") == 1, log  # never dropped
    assert "node-01 offline" not in log
    assert time.monotonic() < fleet.deadline
