"""Health from delivery outcomes, without a write per delivery: each process gathers the
outcomes it sees per connection and merges them into the health row at most every
`flush_seconds` (shared/health.py has the rule). It also answers, from a short cache, which
of an account's connections are suspended, so the dispatcher keeps their events unsent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from shared.clock import Clock
from shared.dispatch.readcache import SharedReads
from shared.health import HealthState, Outcomes, merge
from shared.models.connection import HealthStatus
from shared.models.records import DeliveryError
from shared.storage.healthrows import HealthRepository

log = logging.getLogger("shared.dispatch")


class HealthTracker:
    def __init__(
        self,
        repository: HealthRepository,
        clock: Clock,
        *,
        flush_seconds: float,
        suspend_after_seconds: float,
        cache_seconds: float,
        breaker_open: Callable[[UUID], bool] | None = None,
    ) -> None:
        """`breaker_open(connection_uid)`: whether this process's circuit breaker (issue 12)
        holds the connection's deliveries back; optional, so health does not depend on it."""
        self.repository = repository
        self.clock = clock
        self.flush_seconds = flush_seconds
        self.suspend_after = timedelta(seconds=suspend_after_seconds)
        self.breaker_open = breaker_open
        self._pending: dict[tuple[str, UUID], Outcomes] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._suspended = SharedReads(repository.suspended, cache_seconds)

    def observe(self, account: str, uid: UUID, at: datetime, error: DeliveryError | None) -> None:
        """One delivery's outcome; written with the others of the window."""
        outcomes = self._pending.get((account, uid))
        if outcomes is None:
            outcomes = self._pending[(account, uid)] = Outcomes()
        outcomes.add(at, error)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.flush_seconds, self._start_flush)

    def _start_flush(self) -> None:
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        """Merge what was seen into the health rows now (the timer calls it; so do close and
        tests)."""
        if self._timer is not None:
            self._timer.cancel()
        pending, self._pending, self._timer = self._pending, {}, None
        for (account, uid), seen in pending.items():
            try:
                state = await self.repository.update(account, uid, self._merging(uid, seen))
            except Exception:  # health is advisory: a failed write never fails a delivery
                log.warning("writing the health of connection %s failed", uid, exc_info=True)
                continue
            if state.status == HealthStatus.SUSPENDED:
                self._suspended.forget(account)  # read again: this process stops at once

    def _merging(self, uid: UUID, seen: Outcomes) -> Callable[[HealthState | None], HealthState]:
        held_back = self.breaker_open is not None and self.breaker_open(uid)

        def merged(stored: HealthState | None) -> HealthState:
            now = self.clock()
            base = stored or HealthState.new(now)
            return merge(base, seen, now, self.suspend_after, held_back)

        return merged

    async def suspended(self, account: str, uid: UUID) -> bool:
        """Whether the connection is suspended, as of at most `cache_seconds` ago."""
        try:
            return uid in await self._suspended.get(account)
        except Exception:  # health is advisory: deliver rather than fail on its table
            log.warning("reading the suspended connections of %s failed", account, exc_info=True)
            return False

    async def close(self) -> None:
        if self._flushing is not None:
            await self._flushing  # a write the timer started
        await self.flush()
