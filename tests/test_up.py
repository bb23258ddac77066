"""``servermgr up`` with TLS: its local node reaches Core over wss, pinned."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import trio

from servermgr import up
from servermgr.common import tls
from servermgr.common.config import parse_config
from servermgr.common.keyfile import read_key
from servermgr.ctl.client import Client
from tests.support import wait_for


async def test_up_with_tls_auto_pins_its_local_node(tmp_path: Path) -> None:
    text = '[server]\nlisten = "127.0.0.1:0"\nheartbeat_interval = 0.2\ntls = "auto"\n'
    cfg = parse_config(text, source=None, base_dir=tmp_path)
    said: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(up.run, cfg, announce=said.append))
        await wait_for(lambda: bool(said))
        banner = said[0]
        url = re.search(r"Core on (https://127\.0\.0\.1:\d+)", banner)
        pin = re.search(r"SERVERMGR_FINGERPRINT=(sha256:[0-9a-f]{64})", banner)
        assert url, banner
        assert pin, banner
        key = read_key(cfg.storage.key_path).value
        assert key not in banner  # the banner says where the key is, not what it is
        assert str(cfg.storage.key_path) in banner
        assert f'core_addr = "wss://127.0.0.1:{url[1].rsplit(":", 1)[1]}"' in banner
        client = Client(url[1], key, trust=tls.Trust(fingerprint=pin[1]))

        async def local_node_online() -> bool:
            nodes = await trio.to_thread.run_sync(client.nodes)
            return any(n["status"] == "online" for n in nodes)

        with trio.fail_after(15):
            while not await local_node_online():  # noqa: ASYNC110
                await trio.sleep(0.1)
        client.close()
        nursery.cancel_scope.cancel()
