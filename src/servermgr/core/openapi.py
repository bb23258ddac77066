"""The OpenAPI document of Core's REST API, built from the route table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servermgr import __version__
from servermgr.core.auth import Access

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


# What records.NodeStatus holds (GET /api/v1/nodes); a test keeps the two in step.
NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "status", "labels", "first_seen", "last_seen"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["online", "offline"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "first_seen": {"type": "number", "description": "unix seconds"},
        "last_seen": {**_nullable("number"), "description": "unix seconds"},
        "connected_at": {**_nullable("number"), "description": "unix seconds; null if offline"},
        "agent_version": _nullable("string"),
        "sample_ts": {**_nullable("number"), "description": "time of the latest sample"},
        "cpu_percent": _nullable("number"),
        "mem_percent": _nullable("number"),
        "disk_percent": {**_nullable("number"), "description": "the fullest disk"},
        "net_rx_bps": _nullable("number"),
        "net_tx_bps": _nullable("number"),
        "load1": _nullable("number"),
        "uptime": {**_nullable("number"), "description": "seconds"},
        "procs": _nullable("integer"),
        "alerts_firing": {"type": "integer", "description": "alerts firing on the node"},
    },
}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What the OpenAPI document says of one route."""

    summary: str
    auth: Access = field(kw_only=True)  # every route says what it needs: no default
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    ok: int = 200
    result: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    websocket: bool = False
    media_type: str = "application/json"  # of the success answer


def build(routes: list[tuple[str, str, Doc]]) -> dict[str, Any]:
    """OpenAPI 3.1 for ``(method, path, doc)`` triples."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "Node": NODE_SCHEMA}
    for method, path, doc in routes:
        op: dict[str, Any] = {
            "summary": doc.summary,
            "responses": {
                str(doc.ok): {
                    "description": "OK",
                    "content": {doc.media_type: {"schema": doc.result}},
                },
                "default": {
                    "description": "Error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if doc.websocket:
            op["description"] = (
                "WebSocket upgrade; messages are described in docs/reference/protocol.md."
            )
        if doc.auth is Access.PUBLIC:
            op["security"] = []
        elif doc.auth is Access.NODE:
            op["security"] = [{"nodeCredential": []}]
        elif doc.auth is Access.LOOPBACK:
            op["x-servermgr-role"] = Access.READ.value
            op["security"] = [{"coreKey": []}, {}]
            op["description"] = "Needs role read; no credential from a loopback address."
        else:
            op["x-servermgr-role"] = doc.auth.value
            who = "the core key" if doc.auth is Access.ADMIN else f"role {doc.auth.value}"
            op["description"] = (op.get("description", "") + f" Needs {who}.").strip()
        if doc.params:
            op["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in doc.params
            ]
        if doc.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": doc.body}},
            }
        paths.setdefault(path, {})[method.lower()] = _hoist_defs(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "servermgr Core API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "coreKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the core key (admin), or a named token with a role "
                    "(read, operate, enroll: see x-servermgr-role)",
                },
                "nodeCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a node's own credential",
                },
            },
        },
        "security": [{"coreKey": []}],
    }


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> Any:
    """``node`` with msgspec's ``$defs`` moved into ``schemas`` and its refs pointed there.

    msgspec writes ``{"$ref": "#/$defs/X", "$defs": {...}}``; inside an OpenAPI
    document ``#/$defs/X`` would resolve against the document root and dangle.
    """
    if isinstance(node, list):
        return [_hoist_defs(v, schemas) for v in node]
    if not isinstance(node, dict):
        return node
    for name, schema in node.get("$defs", {}).items():
        schemas.setdefault(name, _hoist_defs(schema, schemas))
    out = {k: _hoist_defs(v, schemas) for k, v in node.items() if k != "$defs"}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
    return out
