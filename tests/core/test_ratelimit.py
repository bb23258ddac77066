"""The abuse limits' bookkeeping, with a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import pytest

from servermgr.core.ratelimit import AddressCounter, FailureLimiter, LogThrottle


def test_an_address_is_refused_after_its_allowance_and_lets_in_one_try_per_refill() -> None:
    limiter = FailureLimiter(10, 60.0)
    for i in range(10):
        assert limiter.retry_after("10.0.0.1", now=i / 10) == 0.0
        limiter.failed("10.0.0.1", now=i / 10)
    # Ten failures in a second: refused, until one token is back (60 s / 10).
    wait = limiter.retry_after("10.0.0.1", now=1.0)
    assert 4.0 < wait < 6.0
    # Being refused costs nothing and changes nothing.
    assert limiter.retry_after("10.0.0.1", now=1.0) == wait
    assert limiter.retry_after("10.0.0.1", now=1.0 + wait) == 0.0
    limiter.failed("10.0.0.1", now=1.0 + wait)
    assert limiter.retry_after("10.0.0.1", now=1.0 + wait) == pytest.approx(6.0)


def test_a_steady_guesser_gets_no_more_than_the_refill_rate() -> None:
    limiter = FailureLimiter(10, 60.0)
    tries = 0
    for tick in range(36_000):  # an hour of trying ten times a second
        now = tick / 10
        if limiter.retry_after("10.0.0.1", now) == 0.0:
            tries += 1
            limiter.failed("10.0.0.1", now)
    assert tries <= 10 + 600  # the first burst, then one every 6 s


def test_addresses_are_limited_separately() -> None:
    limiter = FailureLimiter(3, 60.0)
    for _ in range(3):
        limiter.failed("10.0.0.1", now=0.0)
    assert limiter.retry_after("10.0.0.1", now=0.0) > 0
    assert limiter.retry_after("10.0.0.2", now=0.0) == 0.0
    assert limiter.retry_after("::1", now=0.0) == 0.0


def test_a_quiet_address_gets_its_whole_allowance_back_and_is_forgotten() -> None:
    limiter = FailureLimiter(3, 60.0)
    for _ in range(3):
        limiter.failed("10.0.0.1", now=0.0)
    assert limiter.retry_after("10.0.0.1", now=60.0) == 0.0
    limiter.failed("10.0.0.2", now=60.0)  # any later failure sweeps full buckets out
    assert len(limiter) == 1
    for _ in range(2):
        limiter.failed("10.0.0.1", now=60.0)
    assert limiter.retry_after("10.0.0.1", now=60.0) == 0.0  # a fresh allowance of three


def test_the_address_table_is_bounded() -> None:
    limiter = FailureLimiter(5, 60.0, max_addresses=100)
    for i in range(10_000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", now=i / 1000)
    assert len(limiter) == 100
    # The most recent stay.
    assert limiter.retry_after("10.0.39.15", now=10.0) == 0.0
    for _ in range(4):
        limiter.failed("10.0.39.15", now=10.0)
    assert limiter.retry_after("10.0.39.15", now=10.0) > 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        FailureLimiter(0, 60.0)
    with pytest.raises(ValueError, match="window"):
        FailureLimiter(1, 0.0)
    with pytest.raises(ValueError, match="cap"):
        AddressCounter(0)


def test_address_counter_caps_each_address_and_forgets_empty_ones() -> None:
    counter = AddressCounter(2)
    assert counter.acquire("a")
    assert counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    assert counter.count("a") == 2
    counter.release("a")
    assert counter.acquire("a")
    for _ in range(2):
        counter.release("a")
    counter.release("b")
    assert len(counter) == 0


def test_log_throttle_says_once_per_interval_with_the_count() -> None:
    throttle = LogThrottle(60.0)
    said = [throttle.event("10.0.0.1", now=t / 10) for t in range(1000)]  # 100 s, 10 a second
    lines = [(i / 10, n) for i, n in enumerate(said) if n is not None]
    assert lines == [(0.0, 1), (60.0, 600)]
    assert throttle.event("10.0.0.2", now=99.0) == 1  # another key has its own minute


def test_log_throttle_remembers_a_bounded_number_of_keys() -> None:
    throttle = LogThrottle(60.0, max_keys=10)
    for i in range(1000):
        assert throttle.event(f"k{i}", now=0.0) == 1
    assert throttle.event("k999", now=1.0) is None
    assert throttle.event("k0", now=1.0) == 1  # forgotten, so said again (bounded, not exact)
