"""Core raises its open-file limit (one socket per node) and says when it is too low."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import StartCore, wait_for

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


async def test_core_runs_the_collector_itself_and_gives_it_back_when_it_stops(
    start_core: StartCore,
) -> None:
    import gc

    from servermgr.core.app import GC_YOUNG_EVERY

    assert gc.isenabled()
    running = await start_core()
    # A young collection by Core's schedule (the first tick looks), however busy the machine.
    limit = GC_YOUNG_EVERY * 40
    await wait_for(lambda: running.core.api.gc_pauses()["by_generation"][0] >= 1, limit=limit)
    assert not gc.isenabled()  # Core's own schedule: young collections, then freeze
    assert gc.get_freeze_count() > 0
    doc = running.core.api.gc_pauses()
    assert doc["by_generation"][0] >= 1
    assert len(doc["freed_by_generation"]) == 3
    assert sum(doc["pauses_ms"]["counts"]) == doc["collections"]
    running.stop.set()
    await running.done.wait()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_young_objects_are_collected_while_there_is_garbage_and_only_looked_at_otherwise() -> None:
    from servermgr.core.app import GC_GARBAGE_SEEN, GC_YOUNG_SAMPLE, young_collection_due

    assert young_collection_due(1, GC_GARBAGE_SEEN)  # garbage last time: every tick
    assert not young_collection_due(1, 0)  # none: freeze only ...
    assert not young_collection_due(GC_YOUNG_SAMPLE - 1, GC_GARBAGE_SEEN - 1)
    assert young_collection_due(GC_YOUNG_SAMPLE, 0)  # ... and look again every 10 s


def test_a_full_collection_runs_hourly_only_if_the_frozen_heap_grew_and_daily_anyway() -> None:
    from servermgr.core.app import full_collection_due

    steady = 1_500_000
    assert not full_collection_due(600, steady * 2, steady)  # too soon
    assert not full_collection_due(3600, steady + 10_000, steady)  # no growth to speak of
    assert full_collection_due(3600, int(steady * 1.06), steady)  # 6 % more: cycles left behind
    assert full_collection_due(86400, steady, steady)  # a day: whatever the growth
    assert full_collection_due(3600, 360_000, 300_001)  # 50,000 objects is the floor
    assert not full_collection_due(3600, 340_000, 300_001)


def test_a_small_heap_is_collected_each_minute_it_grew() -> None:
    from servermgr.core.app import full_collection_due

    # A small fleet: garbage cycles left by HTTP connections and jobs are
    # collected within a minute or two, not an hour later.
    assert full_collection_due(60, 52_000, 50_000)
    assert not full_collection_due(30, 52_000, 50_000)  # too soon
    assert not full_collection_due(60, 50_500, 50_000)  # nothing to speak of
    # A large fleet's full collection stops Core for long: hourly, as before.
    assert not full_collection_due(60, 1_600_000, 1_500_000)
    assert full_collection_due(3600, 1_600_000, 1_500_000)
    # A Core that started empty and then took its fleet: the heap is large now,
    # so it waits for the hourly rule (a minute after start it stopped Core for 1.6 s).
    assert not full_collection_due(60, 400_000, 100_000)
    assert not full_collection_due(600, 1_000_000, 100_000)
    assert full_collection_due(3600, 1_000_000, 100_000)
