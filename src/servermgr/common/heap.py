"""Give memory a process has freed back to the operating system.

Used by the agent after each job and by Core after each full garbage
collection (the cycles HTTP connections and jobs leave behind).

CPython hands freed memory back to glibc's malloc, which keeps the pages for
reuse instead of returning them: after a job whose output filled its 1 MiB
cap (held until Core acks the result), the agent stayed ~2.7 MiB larger than
before it, for good; source compiled at start-up (no ``.pyc``, as with
``PYTHONDONTWRITEBYTECODE``) left ~0.7 MiB behind. glibc's
``malloc_trim(0)`` releases free pages anywhere in the heap; it takes ~10 us
when there is nothing to release. Where there is no such function (musl,
macOS) ``trim`` does nothing.

Limiting malloc arenas (``M_ARENA_MAX``) and ``gc.freeze()`` were measured
too and changed nothing: the agent's worker threads only start processes,
and it allocates too few objects for the collector to run often.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> None:
    """Return the heap's free pages to the OS (glibc only; a no-op elsewhere)."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
