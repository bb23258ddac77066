"""Abuse limits as pure bookkeeping: no sockets, no clock of their own.

Every method takes ``now`` (seconds, any monotonic origin), so tests drive
the limits with a fake clock and Core passes ``trio.current_time()``.

    FailureLimiter   failed authentications per client address (token bucket)
    AddressCounter   connections per client address that have not authenticated yet
    LogThrottle      "log once per key per interval, with the count since"

Every table is bounded: an attacker with many addresses can evict old
entries (and so get a fresh allowance), but never grow Core's memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureLimiter:
    """At most ``limit`` failures per ``window`` seconds per address, then refuse.

    A token bucket per address: it holds ``limit`` tokens, each failure takes
    one, and it refills at ``limit / window`` per second. An address with
    less than one token is refused until a token is back (``retry_after``),
    so after a burst of ``limit`` failures a guesser gets one more try every
    ``window / limit`` seconds. Refused requests are not checked, so they
    cost no token. Full buckets carry no information and are dropped.
    """

    def __init__(self, limit: int, window: float, *, max_addresses: int = 10_000) -> None:
        if limit < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("limit and max_addresses must be >= 1, window > 0")
        self.limit = limit
        self.window = window
        self.rate = limit / window
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, bucket: _Bucket, now: float) -> float:
        return min(float(self.limit), bucket.tokens + max(0.0, now - bucket.at) * self.rate)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0.0 when it may try now."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        tokens = self._tokens(bucket, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def failed(self, address: str, now: float) -> None:
        """Count one failed authentication from ``address``."""
        bucket = self._buckets.pop(address, None)
        tokens = float(self.limit) if bucket is None else self._tokens(bucket, now)
        self._buckets[address] = _Bucket(max(0.0, tokens - 1.0), now)  # most recent last
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._buckets:
            address, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_addresses and self._tokens(oldest, now) < self.limit:
                return
            del self._buckets[address]


class AddressCounter:
    """How many connections each address holds in some state, against a cap.

    Entries exist only while the count is above zero, so the table is as
    large as the connections being counted, which the open-file limit bounds.
    """

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self.cap = cap
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def acquire(self, address: str) -> bool:
        """Count one more for ``address``; False (and nothing counted) at the cap."""
        n = self._counts.get(address, 0)
        if n >= self.cap:
            return False
        self._counts[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self._counts.get(address, 0) - 1
        if n > 0:
            self._counts[address] = n
        else:
            self._counts.pop(address, None)


class LogThrottle:
    """Say when to log an event that may repeat thousands of times a second.

    ``event(key, now)`` returns None while ``key`` was logged less than
    ``interval`` seconds ago (the event is only counted), else the number of
    events since the last line, this one included: the caller logs one line
    with that count. At most ``max_keys`` keys are remembered.
    """

    def __init__(self, interval: float = 60.0, *, max_keys: int = 1_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def event(self, key: str, now: float) -> int | None:
        last = self._keys.pop(key, None)
        if last is not None and now - last[0] < self.interval:
            self._keys[key] = (last[0], last[1] + 1)
            return None
        count = 1 if last is None else last[1] + 1
        self._keys[key] = (now, 0)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return count
