"""``ctl node upgrade``: move agents to the zipapp Core holds, a batch at a time.

Each node is one ``POST /api/v1/nodes/{ref}/upgrade``, which answers once
the node is back with the new version, or rolled back (``core/upgrade.py``).
``--batch N`` upgrades N nodes at once; after a batch with a failure no
further batch starts (the rest are listed as ``skipped``), so a bad build
stops at the first nodes it breaks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from servermgr.common.errors import ApiError, UsageError
from servermgr.common.text import printable
from servermgr.ctl.client import Client
from servermgr.ctl.cp import pick
from servermgr.ctl.output import print_items

ROLLBACK_GRACE = 30.0  # Core waits this long for a rolled-back node (core/upgrade.py)
TRANSFER_ALLOWANCE = 300.0  # for the zipapp to reach the node and be checked


def run(
    make_client: Callable[[float], Client],
    spec: str,
    *,
    batch: int = 1,
    timeout: float = 60.0,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """The exit status: 0 when every node runs the new version (or did already)."""
    out = out or sys.stdout
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    if not 1 <= timeout <= 3600:
        raise UsageError("--timeout must be between 1s and 1h")
    lister = make_client(30.0)
    nodes = pick(spec, lister.nodes)
    request_timeout = timeout + ROLLBACK_GRACE + TRANSFER_ALLOWANCE

    def one(node: str) -> dict[str, Any]:
        client = make_client(request_timeout)
        try:
            return client.upgrade_node(node, timeout)
        except ApiError as exc:
            if exc.status in (401, 403) or exc.code == "no_agent":
                raise  # the same for every node: one line
            return {"node": node, "outcome": "failed", "error": exc.message}
        finally:
            client.close()

    results: list[dict[str, Any]] = []
    failed = False
    with ThreadPoolExecutor(max_workers=batch) as pool:
        for start in range(0, len(nodes), batch):
            group = nodes[start : start + batch]
            if failed:
                results += [{"node": n, "outcome": "skipped", "error": None} for n in group]
                continue
            done = list(pool.map(one, group))
            for doc in done:
                if not as_json:
                    out.write(describe(doc) + "\n")
                    out.flush()
            results += done
            failed = any(d["outcome"] not in ("upgraded", "current") for d in done)
    if as_json:
        print_items(results, out)
    else:
        for doc in results:
            if doc["outcome"] == "skipped":
                out.write(describe(doc) + "\n")
    out.flush()
    return 0 if all(d["outcome"] in ("upgraded", "current") for d in results) else 1


def describe(doc: dict[str, Any]) -> str:
    node = printable(str(doc.get("node")))
    outcome = doc["outcome"]
    if outcome == "skipped":
        return f"{node}  skipped (an earlier batch failed)"
    versions = f"{doc.get('from') or '?'} -> {doc.get('to') or '?'}"
    if outcome == "current":
        return f"{node}  {doc.get('to')}  already"
    if outcome == "upgraded":
        return f"{node}  {versions}  upgraded in {doc.get('seconds', 0):g} s"
    error = printable(str(doc.get("error") or ""))
    return f"{node}  {versions}  {outcome}: {error}"
