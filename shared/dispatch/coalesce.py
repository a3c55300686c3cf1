"""Gather what concurrent callers submit into one call, one call at a time.

While a flush runs, new items wait; the next flush takes all of them. Under load this makes
batches as large as the concurrency, with no timer and no added latency when idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
# flush(items) gives one outcome per item: None for success, or the exception for that item.
Flush = Callable[[Sequence[T]], Awaitable[Sequence[BaseException | None]]]


class Coalescer(Generic[T]):
    def __init__(self, flush: Flush[T], most: int | None = None) -> None:
        self._flush = flush
        self._most = most  # items a flush takes at most; the rest go in the next one
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._worker: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return not self._pending and (self._worker is None or self._worker.done())

    async def submit(self, item: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        try:
            await future
        except asyncio.CancelledError:  # e.g. the caller's deadline: an item not yet taken
            self._pending = [p for p in self._pending if p[1] is not future]  # is never sent
            raise

    async def _run(self) -> None:
        while self._pending:
            most = self._most or len(self._pending)
            batch, self._pending = self._pending[:most], self._pending[most:]
            try:
                outcomes: Sequence[BaseException | None] = await self._flush([i for i, _ in batch])
            except Exception as e:  # the whole call failed: every item in it did
                outcomes = [e] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)
