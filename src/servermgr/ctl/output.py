"""What ctl prints for scripts: JSON documents and JSON errors (no rich here: fast).

Every listing's ``--json`` has one shape, an object whose ``items`` is the
list, plus the paging fields a listing has (``next_before`` for jobs)::

    {"items": [{...}, {...}]}
    {"items": [...], "next_before": 1764487000.5}

One object (``ctl node show``, ``ctl job``) is printed as that object. Under
``--json`` an error is one JSON line on stderr, ``{"error": {"code", "message"}}``
(the REST API's shape), with the same exit code as without ``--json``.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # not typing's: it costs ctl's start-up ~4 ms
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TextIO


def print_json(doc: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(doc, indent=2) + "\n")


def print_items(items: Sequence[Any], out: TextIO | None = None, **paging: Any) -> None:
    """A listing under ``--json``: ``{"items": [...], **paging}``."""
    print_json({"items": list(items), **paging}, out)


def print_error(code: str, message: str, out: TextIO | None = None) -> None:
    (out or sys.stderr).write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
