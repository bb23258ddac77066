"""The OpenAPI document of Core's REST API, built from the route table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from servermgr import __version__
from servermgr.core.auth import MAX_BODY, Access

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


@dataclass(frozen=True)
class Param:
    """A path or header parameter (query parameters are a route's ``Doc.query`` Struct)."""

    name: str
    where: str  # "path" or "header"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What a route is, for the handler and for the OpenAPI document alike.

    The route table (``Api.route_table``, with the routes other modules such
    as ``jobs_api`` give ``Api``) holds ``(method, path, handler, Doc)``. The document
    is rendered from it and nothing else, and the handler decodes with the
    very types named here, so the two cannot say different things:

    - ``query``: a msgspec Struct whose fields are the query parameters (their
      ``Meta`` constraints and descriptions become the parameters' schemas); the
      handler reads them with ``auth.read_query(request, <that Struct>)``.
    - ``body``: the Struct (or ``Annotated`` Struct) of the JSON body; the handler
      reads it with ``auth.read_json(request, <that type>, what)``. Routes with a
      body also document 413 (over 64 KiB) and 415 (not JSON).
    - ``result``: what a 2xx answer holds, as a type (a Struct, ``list[...]``,
      ``dict[str, Any]``) or, for a shape built by hand, a JSON Schema dict;
      ``media_type`` is its content type.
    - ``websocket``: a WebSocket route (in ``Api.ws_table``): documented under its
      path as ``x-websocket`` (messages, the role it needs) with no operation; a
      plain GET to it answers 426 ``upgrade_required`` (or 401/403 first).

    A new route: write the handler, add one entry with its ``Access`` and its
    ``Doc``; ``tests/e2e/test_contract.py`` fuzzes it against the document.
    """

    summary: str
    auth: Access = field(kw_only=True)  # every route says what it needs: no default
    params: tuple[Param, ...] = ()
    query: Any = None
    body: Any = None
    ok: int = 200
    also: tuple[int, ...] = ()  # other success statuses, with the same result
    result: Any = dict[str, Any]
    media_type: str = "application/json"  # of the success answer
    websocket: bool = False
    messages: str = ""  # a WebSocket's messages, for its x-websocket description
    max_body: int = MAX_BODY  # what the handler's read_json takes (413 beyond)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _schema(spec: Any) -> dict[str, Any]:
    """A JSON Schema dict as is; a type through msgspec."""
    if isinstance(spec, dict):
        return spec
    schema: dict[str, Any] = msgspec.json.schema(spec)
    return schema


def query_params(query: Any) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of a query Struct, one per field."""
    (ref,), components = msgspec.json.schema_components((query,))
    struct = components[ref["$ref"].rsplit("/", 1)[-1]]
    required = set(struct.get("required", ()))
    out = []
    for name, schema in struct.get("properties", {}).items():
        schema = dict(schema)
        description = schema.pop("description", "")
        out.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": schema,
            }
        )
    return out


def _websocket(doc: Doc) -> dict[str, Any]:
    return {
        "summary": doc.summary,
        "description": (
            "A WebSocket (GET with Upgrade: websocket), not a REST operation. "
            + (f"Messages: {doc.messages} " if doc.messages else "")
            + "A plain GET is answered 426 upgrade_required in the error shape "
            "(401/403 first when the credential is missing or lacks the role)."
        ),
        "x-websocket": {
            "role": doc.auth.value,
            "parameters": [
                {"name": p.name, "in": p.where, "description": p.description, "schema": p.schema}
                for p in doc.params
            ]
            + (query_params(doc.query) if doc.query is not None else []),
            "messages": doc.messages,
            "plain_get": {"status": 426, "code": "upgrade_required"},
        },
    }


def build(routes: list[tuple[str, str, Doc]]) -> dict[str, Any]:
    """OpenAPI 3.1 for ``(method, path, doc)`` triples."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for method, path, doc in routes:
        if doc.websocket:
            paths.setdefault(path, {}).update(_hoist_defs(_websocket(doc), schemas))
            continue
        ok = {"description": "OK", "content": {doc.media_type: {"schema": _schema(doc.result)}}}
        responses: dict[str, Any] = {str(code): ok for code in (doc.ok, *doc.also)}
        if doc.params or doc.query is not None or doc.body is not None:
            responses["400"] = _error("A bad parameter or body (the message says which)")
        if doc.auth is not Access.PUBLIC:
            responses["401"] = _error("No credential, or a wrong, revoked or expired one")
            responses["403"] = _error("A credential without the role this route needs")
        if any(p.where == "path" for p in doc.params):
            responses["404"] = _error("No such node or job")
        if doc.body is not None:
            responses["413"] = _error(f"A body over {doc.max_body} bytes")
            responses["415"] = _error("A body not sent as Content-Type: application/json")
        responses["429"] = _error("Too many failed authentications from this address")
        responses["default"] = _error("Any other error, in the same shape")
        op: dict[str, Any] = {"summary": doc.summary, "responses": responses}
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
            op["description"] = f"Needs {who}."
        params = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in doc.params
        ]
        if doc.query is not None:
            params += query_params(doc.query)
        if params:
            op["parameters"] = params
        if doc.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(doc.body)}},
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
    names = _enum_varnames(out.get("enum"))
    if names is not None:
        out["x-enum-varnames"] = names
    if out.get("type") == "number" and out.get("multipleOf") == 1:
        # A float field that must be whole (what msgspec renders for
        # Annotated[float, Meta(multiple_of=1)]) is exactly JSON Schema's integer,
        # 1.0 included: say so, so generators give clients an int.
        del out["multipleOf"]
        out["type"] = "integer"
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out["$ref"] = ref = "#/components/schemas/" + ref.removeprefix("#/$defs/")
    if isinstance(ref, str) and len(out) > 1:
        # Keywords beside a $ref (a oneOf added with extra_json_schema): in an allOf,
        # which every tool reads the same way (some drop a $ref's siblings).
        del out["$ref"]
        out = {"allOf": [{"$ref": ref}], **out}
    return out


def _key(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


def _enum_varnames(values: Any) -> list[str] | None:
    """Names for an enum's values when their upper-cased forms collide (time zones:
    ``Etc/GMT+1`` and ``Etc/GMT-1``), as ``x-enum-varnames``, which client
    generators use to name the constants; None when the values name themselves."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    if len({_key(v) for v in values}) == len(values):
        return None
    names: list[str] = []
    for v in values:
        name = _key(v.replace("+", "_PLUS_").replace("-", "_MINUS_")) or "EMPTY"
        base = name = name if name[0].isalpha() else f"V_{name}"
        n = 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names
