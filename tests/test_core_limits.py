"""Core raises its open-file limit (one socket per node) and says when it is too low."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, int(sys.argv[1])))
from servermgr.core.app import raise_open_files
limit, warning = raise_open_files(int(sys.argv[2]))
print(json.dumps([limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0], warning]))
"""


def probe(hard: int, nodes: int) -> tuple[int, int, str | None]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(hard), str(nodes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    limit, soft, warning = json.loads(out.stdout)
    return limit, soft, warning


def test_soft_limit_goes_up_to_the_hard_one() -> None:
    limit, soft, warning = probe(4096, 100)
    assert limit == soft == 4096
    assert warning is None


def test_a_limit_too_low_for_the_fleet_is_a_warning_that_says_how_to_fix_it() -> None:
    limit, _, warning = probe(4096, 3500)
    assert limit == 4096
    assert warning is not None
    assert "3500 nodes" in warning
    assert "LimitNOFILE" in warning
