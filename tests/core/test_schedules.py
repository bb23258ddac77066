"""Schedules on a real Core with a real node: the API and its roles, runs as jobs,
missed runs, and two Cores sharing one database running each due time once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servermgr.core.app import Core
from servermgr.core.schedules import ScheduleRunner, ScheduleStore
from servermgr.core.storage import Storage
from servermgr.core.writer import Database
from tests.support import StartNode, api, finished, make_token, online, wait_for


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fleet(core: Core, start_node: StartNode) -> Core:
    await start_node(core, "node-01", role="web")
    await wait_for(lambda: online(core, "node-01"))
    return core


async def add(core: Core, **body: Any) -> httpx.Response:
    async with api(core) as client:
        return await client.post("/api/v1/schedules", json=body)


def job(command: str = "echo scheduled", target: str = "node-01") -> dict[str, Any]:
    return {"target": target, "command": command}


async def test_roles_listing_pause_resume_remove_and_audit(core: Core) -> None:
    reader = await make_token(core, "viewer", "read")
    operator = await make_token(core, "ops", "operate")
    base = core.url + "/api/v1/schedules"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {reader}"}) as as_reader:
        refused = await as_reader.post(base, json={"name": "x", "every": 60, "job": job()})
        assert refused.status_code == 403
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {operator}"}) as ops:
        made = await ops.post(base, json={"name": "nightly", "cron": "0 3 * * *", "job": job()})
        assert made.status_code == 201, made.text
        doc = made.json()
        assert (doc["describe"], doc["created_by"], doc["paused"]) == (
            "cron '0 3 * * *'",
            "ops",
            False,
        )
        assert doc["next_run"] > core.api.clock()
        again = await ops.post(base, json={"name": "nightly", "every": 60, "job": job()})
        assert again.status_code == 409
        paused = await ops.post(f"{base}/nightly/pause")
        assert paused.json()["paused"] is True
        assert paused.json()["next_run"] is None
        resumed = await ops.post(f"{base}/nightly/resume")
        assert resumed.json()["next_run"] > core.api.clock()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {reader}"}) as as_reader:
        listed = (await as_reader.get(base)).json()
        assert [s["name"] for s in listed] == ["nightly"]
    async with api(core) as client:
        assert (await client.delete(f"{base}/nightly")).json() == {"removed": "nightly"}
        assert (await client.delete(f"{base}/nightly")).status_code == 404
        audit = (await client.get("/api/v1/audit")).json()
    actions = [(a["principal"], a["action"]) for a in audit if a["action"].startswith("schedule")]
    assert sorted(actions) == sorted(
        [
            ("ops", "schedule.add"),
            ("ops", "schedule.pause"),
            ("ops", "schedule.resume"),
            ("core-key", "schedule.remove"),
        ]
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "a", "every": 60, "cron": "* * * * *", "job": job()}, "exactly one"),
        ({"name": "a", "cron": "61 * * * *", "job": job()}, "bad cron expression"),
        ({"name": "a", "cron": "0 3 * * *", "tz": "Nowhere/Town", "job": job()}, "time zone"),
        ({"name": "a", "every": 0.1, "job": job()}, "bad schedule"),
        ({"name": "a b", "every": 60, "job": job()}, "bad schedule name"),
        ({"name": "a", "every": 60, "job": {"target": "x"}}, "exactly one of command"),
        ({"name": "a", "every": 60, "job": job(target="a,,b")}, "bad job"),
    ],
)
async def test_bad_schedules_are_refused_with_the_reason(
    core: Core, body: dict[str, Any], message: str
) -> None:
    resp = await add(core, **body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]["message"]


@pytest.fixture
def second_database(core: Core) -> Iterator[Database]:
    """Another connection set on Core's database file, as a second Core process has."""
    storage = Storage.open(core.config.storage.sqlite_path)
    yield Database(storage)
    storage.close()


async def test_a_due_run_is_one_job_even_with_two_cores_on_one_database(
    fleet: Core, second_database: Database
) -> None:
    made = await add(fleet, name="tick", every=60, job=job("echo tick"))
    due = made.json()["next_run"]
    clock = FakeClock(due + 0.5)
    # Two runners on separate connections, as two Core processes would be.
    one = ScheduleRunner(fleet.db, fleet.jobs, clock=clock)
    two = ScheduleRunner(second_database, fleet.jobs, clock=clock)
    assert await one.run_due() + await two.run_due() == 1
    assert await one.run_due() + await two.run_due() == 0  # nothing due until the next
    clock.now = due + 60.5
    assert await two.run_due() + await one.run_due() == 1

    store = ScheduleStore(fleet.db.storage)
    s = await fleet.db.read(store.get, "tick")
    assert s is not None
    assert (s.runs, s.missed, s.next_run) == (2, 0, due + 120)
    assert s.last_job is not None
    done = await finished(fleet, s.last_job)
    assert done["nodes"][0]["stdout"] == "tick\n"
    assert done["principal"] == "schedule:tick"


async def test_runs_missed_while_core_was_down_make_one_run(fleet: Core) -> None:
    made = await add(fleet, name="often", every=10, job=job("true"))
    due = made.json()["next_run"]
    clock = FakeClock(due + 10 * 30 + 3)  # thirty due times later
    runner = ScheduleRunner(fleet.db, fleet.jobs, clock=clock)
    assert await runner.run_due() == 1
    assert await runner.run_due() == 0
    async with api(fleet) as client:
        doc = (await client.get("/api/v1/schedules/often")).json()
    assert (doc["runs"], doc["missed"]) == (1, 30)
    assert doc["next_run"] == due + 10 * 31


async def test_a_paused_schedule_does_not_run(fleet: Core) -> None:
    made = await add(fleet, name="quiet", every=60, job=job("true"), paused=True)
    clock = FakeClock(made.json()["created"] + 3600)
    runner = ScheduleRunner(fleet.db, fleet.jobs, clock=clock)
    assert await runner.run_due() == 0


async def test_listing_by_node_gives_the_schedules_whose_target_picks_it(fleet: Core) -> None:
    for name, target in (("by-name", "node-01"), ("by-label", "role=web"), ("elsewhere", "db-01")):
        assert (await add(fleet, name=name, every=60, job=job(target=target))).status_code == 201
    assert (await add(fleet, name="everyone", every=60, job=job(target="*"))).status_code == 201
    async with api(fleet) as client:
        picked = (await client.get("/api/v1/schedules", params={"node": "node-01"})).json()
        unknown = await client.get("/api/v1/schedules", params={"node": "nobody"})
    assert [s["name"] for s in picked] == ["by-label", "by-name", "everyone"]
    assert unknown.status_code == 404
