"""Credit-based flow control for file transfers and shells (docs/files.md).

The receiver of a stream grants credit (bytes it will take); the sender
sends at most what it was granted and waits for more. Every hop (ctl, Core,
node) therefore holds at most one window of a stream, whatever its size.
"""

from __future__ import annotations

import trio

WINDOW = 1024 * 1024  # credit a receiver grants at first: what may be in flight
CHUNK = 64 * 1024  # the largest data message (proto.MAX_CHUNK_BYTES)
REGRANT = WINDOW // 4  # a receiver returns credit in steps of at least this


class Credit:
    """Bytes the peer lets us send; ``take`` waits until there are some."""

    def __init__(self, limit: int = 64 * WINDOW) -> None:
        self._available = 0
        self._limit = limit
        self._changed = trio.Event()
        self._closed = False

    @property
    def available(self) -> int:
        return self._available

    def grant(self, n: int) -> bool:
        """Add ``n``; False (nothing added) when the peer grants more than ``limit``."""
        if n <= 0 or self._available + n > self._limit:
            return False
        self._available += n
        self._changed.set()
        return True

    def close(self) -> None:
        """Wake a waiting ``take`` (it returns 0): the stream is over."""
        self._closed = True
        self._changed.set()

    async def take(self, most: int) -> int:
        """Up to ``most`` bytes of credit (at least 1), waiting for a grant; 0 once closed."""
        while self._available == 0 and not self._closed:
            self._changed = trio.Event()
            await self._changed.wait()
        if self._closed:
            return 0
        n = min(most, self._available)
        self._available -= n
        return n


class Budget:
    """What a receiver granted and has not had sent yet: data past it is a breach."""

    def __init__(self) -> None:
        self.outstanding = 0
        self._returned = 0

    def granted(self, n: int) -> None:
        self.outstanding += n

    def spend(self, n: int) -> bool:
        """Account ``n`` bytes received; False when the sender went past its credit."""
        if n > self.outstanding:
            return False
        self.outstanding -= n
        return True

    def consumed(self, n: int) -> int:
        """``n`` bytes were used: the credit to grant back now (0: wait for more)."""
        self._returned += n
        if self._returned < REGRANT:
            return 0
        back, self._returned = self._returned, 0
        self.outstanding += back
        return back
