"""Reads by key, kept briefly: one read at a time per key, however many callers wait for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """`get(key)` answers from a read at most `seconds` old; a read under way is shared, and a
    failed one is not kept (the next caller reads again)."""

    def __init__(self, read: Callable[[K], Awaitable[V]], seconds: float) -> None:
        self._read = read
        self.seconds = seconds
        self._kept: dict[K, tuple[float, asyncio.Future[V]]] = {}

    async def get(self, key: K, fresh: bool = False) -> V:
        """`fresh`: read now, whatever is kept."""
        now = time.monotonic()
        kept = self._kept.get(key)
        if fresh or kept is None or (kept[1].done() and (kept[0] <= now or _failed(kept[1]))):
            kept = self._kept[key] = (now + self.seconds, asyncio.ensure_future(self._read(key)))
        return await asyncio.shield(kept[1])

    def forget(self, key: K) -> None:
        """The next `get(key)` reads again."""
        self._kept.pop(key, None)


def _failed(future: asyncio.Future[V]) -> bool:
    return future.cancelled() or future.exception() is not None
