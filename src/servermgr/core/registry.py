"""The fleet's node directory: registration, credentials, removal.

Removing a node revokes its credential: the credential's hash is kept in
``revoked_nodes`` so its agent is told it was removed (and stops) instead
of being taken for a node Core never knew.

Kept in memory (loaded from SQLite at start) so a connect storm after a Core
restart authenticates without touching the database; every change is written
to SQLite at once, not through the batched writer. Several Core processes
may share the database: ``follow`` reloads the directory when another one
changed it (a counter in SQLite, kept by triggers, says when).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import trio

from servermgr.common import names
from servermgr.common.errors import StorageError
from servermgr.core import security, tokens
from servermgr.core.storage import Hello, NodeRow
from servermgr.core.writer import Database, GroupCommit

log = logging.getLogger("servermgr.core.registry")

FOLLOW_EVERY = 1.0  # how soon a node registered through another Core is known here


class NodeRegistry:
    def __init__(self, db: Database, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        self._by_id: dict[str, NodeRow] = {}
        self._by_name: dict[str, str] = {}
        self._revoked: dict[str, tokens.RevokedNode] = {}
        self._hellos = GroupCommit(db, db.storage.update_node_hellos)
        self._writes = 0  # changes made here: a reload read meanwhile may miss them
        self._seen_version: int | None = None

    async def load(self) -> None:
        self._seen_version = await self._db.read(self._db.storage.nodes_version)
        rows = await self._db.read(self._db.storage.list_nodes)
        for row in rows:
            self._put(row)
        # Registered before the name rule: they keep working; say how to fix.
        for row in rows:
            problem = names.name_problem(row.name)
            if problem is not None:
                log.warning(
                    "node %s has a name that is no longer allowed (%s); "
                    "rename it: servermgr ctl node rename %s NEW_NAME",
                    row.name,
                    problem,
                    row.id,
                )
        revoked = await self._db.read(tokens.revoked_nodes, self._db.storage)
        self._revoked = {r.node_id: r for r in revoked}

    async def follow(self, every: float = FOLLOW_EVERY) -> None:
        """Reload the directory whenever the database says it changed (another
        Core process registered, renamed or removed a node)."""
        while True:
            await trio.sleep(every)
            try:
                await self.refresh()
            except (sqlite3.Error, StorageError) as exc:
                log.warning("could not reload the node directory (%s); retrying", exc)

    async def refresh(self) -> bool:
        """Reload if the directory changed since the last look; whether it did."""
        storage = self._db.storage
        version = await self._db.read(storage.nodes_version)
        if version == self._seen_version:
            return False
        writes = self._writes
        rows = await self._db.read(storage.list_nodes)
        revoked = await self._db.read(tokens.revoked_nodes, storage)
        if writes != self._writes:
            return False  # changed here meanwhile: the next look reads it again
        self._by_id = {row.id: row for row in rows}
        self._by_name = {row.name: row.id for row in rows}
        self._revoked = {r.node_id: r for r in revoked}
        self._seen_version = version
        return True

    def _put(self, row: NodeRow) -> None:
        self._writes += 1
        old = self._by_id.get(row.id)
        if old is not None and self._by_name.get(old.name) == row.id:
            del self._by_name[old.name]
        self._by_id[row.id] = row
        self._by_name[row.name] = row.id

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> Iterable[NodeRow]:
        return sorted(self._by_id.values(), key=lambda r: r.name)

    def by_id(self, node_id: str) -> NodeRow | None:
        return self._by_id.get(node_id)

    def by_ref(self, ref: str) -> NodeRow | None:
        """A node by id, else by name."""
        row = self._by_id.get(ref)
        if row is None and ref in self._by_name:
            row = self._by_id.get(self._by_name[ref])
        return row

    async def register(self, name: str, labels: dict[str, str]) -> tuple[NodeRow, str]:
        """A new node and its credential; NameTakenError if ``name`` is held."""
        node_id = security.new_node_id()
        credential, cred_hash = security.new_credential(node_id)
        row = await self._db.write(
            self._db.storage.insert_node, node_id, name, labels, cred_hash, self._clock()
        )
        self._put(row)
        return row, credential

    def authenticate(self, credential: str) -> NodeRow | None:
        """The node a credential belongs to, compared in constant time."""
        parts = security.split_credential(credential)
        if parts is None:
            return None
        row = self._by_id.get(parts[0])
        if row is None:
            # Still spend the hash so unknown ids cost what known ones do.
            security.credential_matches(parts[1], "0" * 64)
            return None
        return row if security.credential_matches(parts[1], row.cred_hash) else None

    def removed(self, credential: str) -> tokens.RevokedNode | None:
        """The removed node a credential belonged to (its secret checked), else None."""
        parts = security.split_credential(credential)
        gone = self._revoked.get(parts[0]) if parts is not None else None
        if parts is None or gone is None:
            return None
        return gone if security.credential_matches(parts[1], gone.cred_hash) else None

    async def update_hello(
        self,
        row: NodeRow,
        labels: dict[str, str],
        info: dict[str, Any],
        agent_version: str,
    ) -> NodeRow:
        """Store what the node said in its hello (never its name: that is Core's).

        Hellos that arrive while one transaction runs share the next: a
        reconnect storm after a Core restart is a few transactions, not one
        per node.
        """
        result = await self._hellos(Hello(row.id, labels, info, agent_version, self._clock()))
        if result is None:
            return row
        self._put(result)
        return result

    async def rename(self, row: NodeRow, name: str) -> NodeRow | None:
        """An operator's rename (the rule is checked by the caller); NameTakenError if held."""
        result = await self._db.write(self._db.storage.rename_node, row.id, name)
        if result is not None:
            self._put(result)
        return result

    async def remove(self, row: NodeRow) -> bool:
        """Forget the node and revoke its credential (revoked first: never half removed)."""
        gone = tokens.RevokedNode(row.id, row.name, row.cred_hash, self._clock())
        await self._db.write(
            tokens.revoke_node,
            self._db.storage,
            gone.node_id,
            gone.name,
            gone.cred_hash,
            gone.removed,
        )
        self._revoked[row.id] = gone
        removed = await self._db.write(self._db.storage.delete_node, row.id)
        self._writes += 1
        self._by_id.pop(row.id, None)
        if self._by_name.get(row.name) == row.id:
            del self._by_name[row.name]
        return removed
