"""Health from delivery outcomes, without a write per delivery: each process gathers the
outcomes it sees per connection and merges them into the health row (shared/health.py has the
rule) when they change what the row says, at the next flush (every `flush_seconds`), and
otherwise at most once a `heartbeat_seconds` per connection: a steady connection costs one
write a minute, not one a flush. Whether the outcomes change anything is judged against the
state this process last wrote (a bounded map); outcomes not yet written wait for the next
flush. It also answers, from a short cache, which of an account's connections are suspended,
so the dispatcher keeps their events unsent. A write that changes the status publishes
`System.ConnectionHealthChanged` (shared/dispatch/healthnotice.py) through `notify`."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from uuid import UUID

from shared.clock import Clock
from shared.dispatch.cachecounts import CacheCounts
from shared.dispatch.healthnotice import health_changed
from shared.dispatch.readcache import SharedReads
from shared.health import HealthState, Outcomes, merge, says_more
from shared.models.connection import HealthStatus
from shared.models.events import SystemEvent
from shared.models.records import DeliveryError
from shared.storage.healthrows import HealthRepository

log = logging.getLogger("shared.dispatch")

HEARTBEAT_SECONDS = 60.0  # issue 25: at most one write a minute for a connection that is steady
CARRIED_MIN_SECONDS = 1.0  # outcomes kept for a heartbeat are looked at again this soon at most
KNOWN_STATES = 10_000  # connections whose last written state is remembered (LRU; a miss writes)

Notify = Callable[[SystemEvent], Awaitable[object]]  # publishes one event (Services.publish)


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
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        known_states: int = KNOWN_STATES,
        notify: Notify | None = None,
    ) -> None:
        """`breaker_open(connection_uid)`: whether this process's circuit breaker (issue 12)
        holds the connection's deliveries back; optional, so health does not depend on it.
        `notify(event)`: publishes a status change's event; None publishes nothing."""
        self.repository = repository
        self.clock = clock
        self.flush_seconds = flush_seconds
        self.suspend_after = timedelta(seconds=suspend_after_seconds)
        self.heartbeat = timedelta(seconds=heartbeat_seconds)
        self.breaker_open = breaker_open
        self.known_counts = CacheCounts(known_states)  # a miss is a write that may say nothing
        self.notify = notify
        self.writes = 0  # health rows written (a counter for logs and tests)
        self.notices = 0  # status changes published
        self._pending: dict[tuple[str, UUID], Outcomes] = {}
        self._titles: dict[tuple[str, UUID], str | None] = {}  # of the pending, for notices
        # What this process last wrote for a connection, and when.
        self._known: OrderedDict[tuple[str, UUID], tuple[HealthState, datetime]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._suspended = SharedReads(repository.suspended, cache_seconds)
        self._digest_day: date | None = None  # the UTC day of the last daily digest

    def observe(
        self,
        account: str,
        uid: UUID,
        at: datetime,
        error: DeliveryError | None,
        title: str | None = None,
    ) -> None:
        """One delivery's outcome; written with the others of the window. `title`: the
        connection's, for the notice of a status change."""
        outcomes = self._pending.get((account, uid))
        if outcomes is None:
            outcomes = self._pending[(account, uid)] = Outcomes()
            self._titles[(account, uid)] = title
        outcomes.add(at, error)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.flush_seconds, self._start_flush)

    def _start_flush(self) -> None:
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self, everything: bool = False) -> None:
        """Merge into the health rows the outcomes that change what they say, and those of
        connections whose heartbeat is due; keep the others for a later flush (the timer calls
        it; `everything`: write all now, as close does)."""
        if self._timer is not None:
            self._timer.cancel()
        pending, self._pending, self._timer = self._pending, {}, None
        titles, self._titles = self._titles, {}
        now = self.clock()
        due: dict[tuple[str, UUID], Outcomes] = {}
        for key, seen in pending.items():  # decided before any await: no observe interleaves
            if seen.empty:
                continue  # only outcomes that say nothing of the connection's health
            if everything or self._due(key, seen, now):
                due[key] = seen
            else:
                self._pending[key] = seen
                self._titles[key] = titles.get(key)
        if self._pending:  # looked at again next flush (not in a loop when flushes are 0 s)
            self._timer = asyncio.get_running_loop().call_later(
                max(self.flush_seconds, CARRIED_MIN_SECONDS), self._start_flush
            )
        changes: list[SystemEvent] = []
        for (account, uid), seen in due.items():
            before: list[HealthState] = []  # the row the write replaced (its last try's)
            try:
                state = await self.repository.update(account, uid, self._merging(uid, seen, before))
            except Exception:  # health is advisory: a failed write never fails a delivery
                log.warning("writing the health of connection %s failed", uid, exc_info=True)
                continue
            self.writes += 1
            self._remember((account, uid), state, now)
            if state.status == HealthStatus.SUSPENDED:
                self._suspended.forget(account)  # read again: this process stops at once
            if before and before[-1].status != state.status:
                title = titles.get((account, uid))
                changes.append(health_changed(account, uid, title, before[-1], state, now))
        await self._publish(changes)
        self._digest(now)

    def _digest(self, now: datetime) -> None:
        """Once a UTC day (the first flush of the day): one stats line per connection whose
        last written state here is not Healthy, so a connection failing for days is in the log
        every day, not only when it changed (issue 26)."""
        day = now.date()
        if self._digest_day == day:
            return
        self._digest_day = day
        for (account, uid), (state, _) in self._known.items():
            if state.status == HealthStatus.HEALTHY:
                continue
            error = state.last_error
            log.info(
                "health digest: connection %s of %s %s since %s, %d failures, last error %s",
                uid,
                account,
                state.status,
                state.since.isoformat(),
                state.consecutive_failures,
                f"{error.category} {error.type}" if error else "none",
            )

    async def _publish(self, changes: list[SystemEvent]) -> None:
        """Publish the status changes' events; a failure is logged, never raised: the health
        rows are written, and a delivery never waits on a notice."""
        if self.notify is None:
            return
        for event in changes:
            try:
                await self.notify(event)
            except Exception:
                log.warning("publishing the health change %s failed", event.subject, exc_info=True)
                continue
            self.notices += 1

    def _due(self, key: tuple[str, UUID], seen: Outcomes, now: datetime) -> bool:
        """Whether `seen` changes what the row says (judged against what this process last
        wrote), or the connection's heartbeat is due."""
        known = self._known.get(key)
        if known is None:
            self.known_counts.miss()
            return True
        self.known_counts.hit()
        state, written_at = known
        if state.status == HealthStatus.SUSPENDED:
            return True  # deliveries again: a resume or a save ended it; merge with that
        held_back = self.breaker_open is not None and self.breaker_open(key[1])
        estimate = merge(state, seen, now, self.suspend_after, held_back)
        return says_more(state, estimate) or now - written_at >= self.heartbeat

    def _remember(self, key: tuple[str, UUID], state: HealthState, now: datetime) -> None:
        self._known[key] = (state, now)
        self._known.move_to_end(key)
        while len(self._known) > self.known_counts.capacity:
            self._known.popitem(last=False)

    def _merging(
        self, uid: UUID, seen: Outcomes, before: list[HealthState]
    ) -> Callable[[HealthState | None], HealthState]:
        """The merge of `seen` into the stored row; appends each row it was given to
        `before` (the update may try again after a conflict: the last is the one replaced)."""
        held_back = self.breaker_open is not None and self.breaker_open(uid)

        def merged(stored: HealthState | None) -> HealthState:
            now = self.clock()
            base = stored or HealthState.new(now)
            before.append(base)
            return merge(base, seen, now, self.suspend_after, held_back)

        return merged

    def known_stats(self) -> dict[str, int]:
        """The stats line's fields of the states it last wrote (a miss writes at once)."""
        return self.known_counts.take(len(self._known))

    def suspended_stats(self) -> dict[str, int]:
        """The stats line's fields of the accounts' suspended sets it keeps."""
        return self._suspended.stats()

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
        await self.flush(everything=True)
