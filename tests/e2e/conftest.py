"""Fixtures of the end-to-end tests (real CLI processes)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.e2e.fleet import Fleet, _CapExceeded


@pytest.fixture
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    cap = float(getattr(request.function, "time_cap", 15.0))
    f = Fleet(tmp_path, cap)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _CapExceeded(f"test exceeded its absolute cap of {cap:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, cap + 5)
    try:
        yield f
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        orphans = f.cleanup()
        assert not orphans, f"processes outlived the test: {orphans}"
