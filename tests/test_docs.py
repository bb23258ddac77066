"""The reference docs follow the code: commands, options, config keys, routes, messages.

Each test reads the real thing (the command spec, the config parser,
Core's route table, the wire message types) and fails when docs/ is missing
something or documents something that no longer exists.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from servermgr.cli import spec
from servermgr.cli.commands import ROOT as COMMANDS
from servermgr.common import proto
from servermgr.common.config import parse_config
from servermgr.common.errors import ConfigError
from servermgr.core import openapi
from servermgr.core.app import Core
from tests.support import make_sample, metrics_figures, node_row

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def sections(path: Path, level: int) -> dict[str, str]:
    """Heading text -> body, for headings of exactly ``level`` (a body ends at the next
    heading of the same or a higher level)."""
    out: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"^(#{1,6}) (.*?)\s*$", line)
        if m and len(m.group(1)) <= level:
            if title is not None:
                out[title] = "\n".join(body)
            title = m.group(2) if len(m.group(1)) == level else None
            body = []
        elif title is not None:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


# --- CLI ---------------------------------------------------------------------


def command_tree() -> Iterator[tuple[str, spec.Cmd]]:
    """("servermgr ctl node remove", its Cmd) for every visible command and group."""
    for path, cmd in spec.walk(COMMANDS):
        yield " ".join(path), cmd


def cli_sections() -> dict[str, str]:
    return {
        title: body
        for title, body in sections(REFERENCE / "cli.md", 3).items()
        if title.startswith("servermgr")
    }


def test_every_command_has_a_section_and_every_section_a_command() -> None:
    commands = {path for path, _ in command_tree()}
    documented = set(cli_sections())
    assert not commands - documented, f"missing from docs/reference/cli.md: {commands - documented}"
    assert not documented - commands, f"documented but not commands: {documented - commands}"


def test_every_synopsis_is_generated_from_the_command_spec() -> None:
    from servermgr.cli import reference

    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    assert reference.rewrite(text) == text, (
        "docs/reference/cli.md synopses drifted: python -m servermgr.cli.reference "
        "docs/reference/cli.md"
    )


def test_cli_headings_are_exact() -> None:
    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    loose = [h for h in re.findall(r"^#+ .*servermgr.*$", text, re.M) if not h.startswith("### ")]
    assert not loose, f"command headings must be '### servermgr ...': {loose}"


def test_every_option_is_documented_in_its_command_section() -> None:
    docs = cli_sections()
    missing = []
    for path, cmd in command_tree():
        body = docs.get(path, "")
        for opt in cmd.options:
            for flag in opt.flags:
                if not re.search(rf"`{re.escape(flag)}(?![\w-])", body):
                    missing.append(f"{path}: {flag}")
    assert not missing, f"options missing from docs/reference/cli.md: {missing}"


# --- config ------------------------------------------------------------------


def _known(text: str, what: str) -> list[str]:
    """The names the parser lists in its 'unknown ...' error for ``text``."""
    with pytest.raises(ConfigError) as err:
        parse_config(text, source=None, base_dir=Path("/nonexistent"))
    m = re.search(rf"known {what}: ([^)]*)\)", err.value.reason)
    assert m, f"the parser no longer lists the known {what}: {err.value.reason!r}"
    return [k.strip() for k in m.group(1).split(",")]


def config_keys() -> dict[str, list[str]]:
    """Every section and key the config parser accepts, as the parser itself lists them."""
    return {
        section: _known(f"[{section}]\nno_such_key_for_docs = 1\n", "keys")
        for section in _known("[no_such_section_for_docs]\n", "sections")
    }


def test_config_keys_are_found() -> None:
    keys = config_keys()
    assert {"server", "storage", "node", "exec", "log"} <= set(keys)
    assert "listen" in keys["server"]


def test_every_config_key_is_in_the_reference() -> None:
    docs = sections(REFERENCE / "config.md", 2)
    missing = []
    for section, keys in config_keys().items():
        body = docs.get(f"`[{section}]`")
        if body is None:
            missing.append(f"[{section}]")
            continue
        missing += [f"{section}.{k}" for k in keys if f"`{k}`" not in body]
    assert not missing, f"config keys missing from docs/reference/config.md: {missing}"


def test_config_reference_names_no_unknown_key() -> None:
    known = config_keys()
    stale = []
    for title, body in sections(REFERENCE / "config.md", 2).items():
        m = re.fullmatch(r"`\[(\w+)\]`", title)
        if m is None:
            continue
        keys = set(known.get(m.group(1), []))
        stale += [
            f"{m.group(1)}.{k}" for k in re.findall(r"^\| `(\w+)` \|", body, re.M) if k not in keys
        ]
    assert not stale, f"docs/reference/config.md documents unknown keys: {stale}"


def test_every_config_key_is_in_the_example() -> None:
    text = (ROOT / "servermgr.toml.example").read_text(encoding="utf-8")
    # [section], or [[table]] (commented out where the example sets none: receivers)
    heads = list(re.finditer(r"^(?:# )?\[\[(\w+)\]\]\s*$|^\[(\w+)\]\s*$", text, flags=re.M))
    example: dict[str, str] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        name = head.group(1) or head.group(2)
        example[name] = example.get(name, "") + text[head.end() : end]
    missing = []
    for section, keys in config_keys().items():
        body = example.get(section)
        if body is None:
            missing.append(f"[{section}]")
            continue
        missing += [
            f"{section}.{k}"
            for k in keys
            if not re.search(rf"^#?\s*{re.escape(k)}\s*=", body, re.M)
        ]
    assert not missing, f"config keys missing from servermgr.toml.example: {missing}"


# --- REST API ----------------------------------------------------------------


async def test_every_route_is_in_the_api_reference(core: Core) -> None:
    routes = {f"{method} {path}" for method, path, _ in core.routes.docs()}
    documented = {
        title.strip("`")
        for title in sections(REFERENCE / "api.md", 3)
        if re.match(r"^`?(GET|POST|PUT|PATCH|DELETE) /", title)
    }
    assert not routes - documented, f"missing from docs/reference/api.md: {routes - documented}"
    assert not documented - routes, f"documented but not routes: {documented - routes}"


async def test_every_route_section_names_its_role(core: Core) -> None:
    docs = {title.strip("`"): body for title, body in sections(REFERENCE / "api.md", 3).items()}
    wrong = [
        f"{method} {path}: Role: {doc.auth.value}"
        for method, path, doc in core.routes.docs()
        if f"Role: {doc.auth.value}" not in docs.get(f"{method} {path}", "")
    ]
    assert not wrong, f"docs/reference/api.md must name each route's role: {wrong}"


async def test_every_parameter_and_body_field_is_in_the_api_reference(core: Core) -> None:
    """docs/reference/api.md is tested against /openapi.json: each route's section names
    each of its parameters and body fields (as `name`), and a WebSocket's section too."""
    doc = openapi.build(core.routes.docs())
    sections_ = {t.strip("`"): b for t, b in sections(REFERENCE / "api.md", 3).items()}
    missing = []
    for path, item in doc["paths"].items():
        ops = {m: op for m, op in item.items() if m in ("get", "post", "patch", "delete")}
        if "x-websocket" in item:
            ops["get"] = item["x-websocket"]
        for method, op in ops.items():
            body = sections_.get(f"{method.upper()} {path}", "")
            names = [p["name"] for p in op.get("parameters", ()) if p["in"] != "path"]
            schema = op.get("requestBody", {}).get("content", {}).get("application/json")
            if schema is not None:
                body_schema = schema["schema"]
                body_schema = body_schema.get("allOf", [body_schema])[0]  # a $ref and a oneOf
                ref = body_schema["$ref"].rsplit("/", 1)[-1]
                names += list(doc["components"]["schemas"][ref]["properties"])
            missing += [f"{method.upper()} {path}: {n}" for n in names if f"`{n}" not in body]
    assert not missing, f"docs/reference/api.md does not name: {missing}"


# --- wire protocol -----------------------------------------------------------


def message_types() -> dict[str, type[msgspec.Struct]]:
    types: dict[str, type[msgspec.Struct]] = {}
    for cls in typing.get_args(proto.Message):
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        types[tag] = cls
    return types


def test_every_message_type_and_field_is_in_the_protocol_reference() -> None:
    docs = {
        title.strip("`"): body for title, body in sections(REFERENCE / "protocol.md", 3).items()
    }
    missing = []
    for tag, cls in message_types().items():
        body = docs.get(tag)
        if body is None:
            missing.append(tag)
            continue
        missing += [
            f"{tag}.{f.encode_name}"
            for f in msgspec.structs.fields(cls)
            if f"`{f.encode_name}`" not in body
        ]
    assert not missing, f"messages or fields missing from docs/reference/protocol.md: {missing}"


def test_protocol_reference_names_no_unknown_message_type() -> None:
    docs = sections(REFERENCE / "protocol.md", 3)
    tags = set(message_types())
    stale = [
        t.strip("`") for t in docs if re.fullmatch(r"`[a-z.]+`", t) and t.strip("`") not in tags
    ]
    assert not stale, f"docs/reference/protocol.md documents unknown messages: {stale}"


def test_doc_links_resolve() -> None:
    broken = []
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken links: {broken}"


# --- Prometheus ----------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every metric family /metrics can produce (a node with every figure, alerts on)."""
    from prometheus_client.parser import text_string_to_metric_families

    from servermgr.core.metrics_export import NodeRenderer, exposition, process_figures
    from servermgr.core.status import LiveStatus

    status = LiveStatus("n1", online=True, last_seen=1.0, latest=make_sample(1.0))
    figures = metrics_figures(alerts={"firing": 1}, process=process_figures())
    text = exposition(NodeRenderer(), [(node_row("web-01", "n1"), status)], figures)
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_exported_metric_is_in_prometheus_md_and_the_dashboard_uses_real_ones() -> None:
    exported = exported_metric_names()
    page = (DOCS / "prometheus.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`((?:servermgr|process)_[a-z0-9_]+)`", page))
    assert not exported - documented, f"missing from docs/prometheus.md: {exported - documented}"
    assert not documented - exported, f"documented, not exported: {documented - exported}"
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {n for e in exprs for n in re.findall(r"servermgr_[a-z0-9_]+", e)}
    series = exported | {f"{n}_bucket" for n in exported}
    assert used
    assert not used - series, f"the dashboard uses unknown metrics: {used - series}"
