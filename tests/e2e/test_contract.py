"""The API contract: schemathesis fuzzes a real Core against its own /openapi.json.

A real Core (the CLI, its default limits) with two real nodes whose exec is
disabled, so any job the fuzzer submits is refused by the node and nothing
runs. The schemathesis CLI (pinned in the ``test`` extra) runs every check,
once with the core key and once without; any failure it reports fails the
test, with its report. A fixed seed and a bounded number of examples per
operation keep the run repeatable and short (about 30 s on an idle machine);
by hand, run it without ``--seed`` and ``--max-examples`` for new examples
(docs/reference/api.md). The job stream is left out: see ``schemathesis``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.fleet import Fleet, cap, healthy, start_core
from tests.support import free_port

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
SEED = "19"


# A body over 64 KiB is refused with 413 before it is read as JSON, and a request
# head over 16 KiB with 431 before it is parsed: rejections too (schemathesis counts
# only 4xx it lists; a negative example's escaped text can be several times its length).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "431", "5xx"]
"""


def schemathesis(
    fleet: Fleet, url: str, examples: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**fleet.env, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    config = fleet.tmp / "schemathesis.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(examples),
            "--seed",
            SEED,
            "--no-color",
            *extra,
        ],
        cwd=fleet.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=min(fleet.left(), 240),
    )


def report(res: subprocess.CompletedProcess[str]) -> str:
    return f"schemathesis exited {res.returncode}:\n{res.stdout[-12000:]}\n{res.stderr[-3000:]}"


@cap(420)
def test_schemathesis_finds_nothing_with_the_key_and_without(fleet: Fleet) -> None:
    port = free_port()
    core, key = start_core(fleet, port)
    for name in ("node-01", "node-02"):
        cfg = fleet.node_config(name, port, key)
        cfg.write_text(cfg.read_text() + "[exec]\nenabled = false\n")
        fleet.spawn(name, "node", "run", "--config", str(cfg))
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}

    def online() -> bool:
        nodes = httpx.get(f"{url}/api/v1/nodes", headers=headers, trust_env=False).json()
        return sum(n["status"] == "online" for n in nodes) == 2

    fleet.poll("both nodes online", online, 15)

    # With the key: every phase (examples, coverage, fuzzing, stateful).
    with_key = schemathesis(fleet, url, 8, "-H", f"Authorization: Bearer {key}")
    assert with_key.returncode == 0, report(with_key)
    assert "No issues found" in with_key.stdout or " passed" in with_key.stdout, report(with_key)
    # Without: every answer is 401 (or a public route's) whatever the input, so a
    # few generated examples per operation tell as much as the coverage phase would.
    without = schemathesis(fleet, url, 3, "--phases", "fuzzing")
    assert without.returncode == 0, report(without)

    # Core stayed up and healthy, and the key never reached its log.
    assert core.alive(), core.text()
    assert healthy(port)
    assert key not in core.text()
    assert os.path.exists(fleet.tmp / "core-data")


# What a user of a client generated from /openapi.json writes first: list the
# nodes, run a command on one, read the job back. Run with the generated package
# on PYTHONPATH, in a child: nothing generated is imported into the test.
CLIENT_SCRIPT = """
import json, os, sys, time
from servermgr_core_api_client import AuthenticatedClient
from servermgr_core_api_client.api.default import (
    get_api_v1_jobs_job_id, get_api_v1_nodes, post_api_v1_jobs)
from servermgr_core_api_client.models import JobBody

client = AuthenticatedClient(base_url=os.environ["CORE"], token=os.environ["KEY"])
nodes = get_api_v1_nodes.sync(client=client)
job = post_api_v1_jobs.sync(client=client, body=JobBody(target="node-01", command="echo hi"))
end = time.monotonic() + 30
while (doc := get_api_v1_jobs_job_id.sync(client=client, job_id=job.id)).state != "done":
    assert time.monotonic() < end, "the job did not finish"
    time.sleep(0.1)
node = doc.nodes[0]
print(json.dumps({"nodes": [[n.name, n.status] for n in nodes],
                  "job": [node.node, node.state, node.exit_code, node.stdout]}))
"""


@cap(120)
def test_a_generated_client_lists_nodes_and_runs_a_job(fleet: Fleet) -> None:
    port = free_port()
    _, key = start_core(fleet, port)
    fleet.spawn("node-01", "node", "run", "--config", str(fleet.node_config("node-01", port, key)))
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}

    def online() -> bool:
        nodes = httpx.get(f"{url}/api/v1/nodes", headers=headers, trust_env=False).json()
        return any(n["status"] == "online" for n in nodes)

    fleet.poll("node-01 online", online, 15)
    # The generator formats what it writes with ruff, from PATH (the test extra's).
    env = {**fleet.env, "PATH": f"{GENERATOR.parent}:{fleet.env.get('PATH', '')}"}
    gen = subprocess.run(
        [str(GENERATOR), "generate", "--url", f"{url}/openapi.json", "--output-path", "client"],
        cwd=fleet.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=min(fleet.left(), 90),
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    use = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        cwd=fleet.tmp,
        env={**env, "PYTHONPATH": str(fleet.tmp / "client"), "CORE": url, "KEY": key},
        capture_output=True,
        text=True,
        timeout=min(fleet.left(), 60),
    )
    assert use.returncode == 0, use.stderr
    result = json.loads(use.stdout)
    assert result["nodes"] == [["node-01", "online"]]
    assert result["job"] == ["node-01", "succeeded", 0, "hi\n"]
