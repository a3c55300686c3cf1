"""Reads by key, kept briefly: one read at a time per key, however many callers wait for it."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from shared.dispatch.cachecounts import CacheCounts

K = TypeVar("K")
V = TypeVar("V")

# Keys kept at most: an account's connections are a few KB each, so 10,000 accounts stay in
# tens of MB whatever the number of accounts a process meets (issue 25: unbounded, a million
# connections ran out of memory).
MAX_KEYS = 10_000


class SharedReads(Generic[K, V]):
    """`get(key)` answers from a read at most `seconds` old; a read under way is shared, and a
    failed one is not kept (the next caller reads again). At most `max_keys` keys are kept: the
    least recently used goes first (a caller already waiting on it still gets its answer).
    `timer` gives seconds on a clock that never goes back (tests hand their own)."""

    def __init__(
        self,
        read: Callable[[K], Awaitable[V]],
        seconds: float,
        max_keys: int = MAX_KEYS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.seconds = seconds
        self.max_keys = max_keys
        self._timer = timer
        self._kept: OrderedDict[K, tuple[float, asyncio.Future[V]]] = OrderedDict()
        self.counts = CacheCounts(max_keys)

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, key: K, fresh: bool = False) -> V:
        """`fresh`: read now, whatever is kept."""
        now = self._timer()
        kept = self._kept.get(key)
        if fresh or kept is None or (kept[1].done() and (kept[0] <= now or _failed(kept[1]))):
            self.counts.miss()
            kept = self._kept[key] = (now + self.seconds, asyncio.ensure_future(self._read(key)))
            if len(self._kept) > self.max_keys:
                self._kept.popitem(last=False)
        else:
            self.counts.hit()
        self._kept.move_to_end(key)
        return await asyncio.shield(kept[1])

    def forget(self, key: K) -> None:
        """The next `get(key)` reads again."""
        self._kept.pop(key, None)

    def stats(self) -> dict[str, int]:
        """Size, bound and counts since the last call, for the periodic stats line."""
        return self.counts.take(len(self._kept))


def _failed(future: asyncio.Future[V]) -> bool:
    return future.cancelled() or future.exception() is not None
