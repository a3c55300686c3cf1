"""The retention purge: delivery attempts are kept `retention_days` (14), then they go.

The cutoff is rounded down to a whole hour, so an hour of the log goes as a whole with its
counter rows (shared/storage/logcounts.py) and the counts stay true: a record goes at the first
run after its hour is entirely older than the retention (within two hours of that, with the
hourly timer).

**Which partitions.** Writers note which log partitions received records on which day
(shared/storage/logdays.py); a run reads only the days that began before its cutoff and
works those partitions, then drops each day that is entirely past the cutoff. It never lists
every connection, except after an upgrade from a version without the day rows: until a full
scan has completed (LogDays.needs_full_scan), every live connection's partition is worked too.

A run deletes, in this order:
1. every row of deleted connections' log partitions (their tombstones), then the bodies stored
   for that partition, then the tombstone;
2. in each partition found by step "which partitions", what is older than the cutoff: the
   failure copies and the undelivered index rows (`u_`), then the records (one RowKey range),
   100 to a transaction, each preceded by their search index rows (`x_`) and followed by the
   bodies of its records and the delivery rows (`d_`) they made, then the counter rows of
   those hours; then the days done;
3. once 1 and 2 are done: stored bodies and event payloads past the retention. In Azure the
   lifecycle rule of infra/modules/storage.bicep deletes bodies and payloads (the day after
   the retention), so the purge deletes none (steps 1 and 2 included) and only counts, once a
   day, those the rule should have deleted by now (a warning when any are left). Azurite has
   no lifecycle management: with PURGE_DELETES_BODIES=true (the local runner, the tests) the
   purge deletes them itself, each run, as above;
4. the rows of bulk replays asked for before the retention (shared/service/replays.py).

A failure copy goes before its record, and a record before its body, never after: a reader
then finds a record with its body or no record at all. A run cut off between a transaction and
its bodies leaves only bodies no record points to; their names carry their record's time, so
step 3 of a later run finds them. The tombstone goes last, so a cut-off run leaves it for the
next.

Nothing is kept between runs but the day rows: each step deletes what is old now and asks
again, so a later run continues where an earlier one stopped (a day's rows go only once its
partitions are done). Two runs at once take partitions in random orders and mostly work
apart; where they meet, one finds records gone and skips them (see
MessageLog.delete_records), and each record is counted by the run that removed it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.events import EVENTS_PREFIX
from shared.storage.logdays import day_start
from shared.storage.logrecords import chunks

if TYPE_CHECKING:
    from shared.services import Services

log = logging.getLogger(__name__)

# Partitions worked at once. Azurite is no faster with more (one Node.js thread); Azure
# tables are, since each partition has its own throughput.
PARALLEL_PARTITIONS = 4
# Well inside the Functions timeout (10 minutes on Consumption); a longer backlog is finished
# by the next hourly runs.
DEFAULT_BUDGET_SECONDS = 240.0
# Longer than any delivery can take (sends time out after 20 s; a function after 10 min).
TOMBSTONE_GRACE = timedelta(hours=1)
# The lifecycle rule deletes a body a day after the retention; its engine runs about daily.
LIFECYCLE_DELAY = timedelta(days=2)


@dataclass
class PurgeResult:
    records_removed: int = 0
    bodies_removed: int = 0
    event_payloads_removed: int = 0
    replays_removed: int = 0
    portal_sign_ins_removed: int = 0  # expired codes and sessions
    confirmation_codes_removed: int = 0  # expired codes of Entra ID connections
    partitions_visited: int = 0  # partitions left with nothing older than the cutoff
    days_dropped: int = 0  # days of the work list done (shared/storage/logdays.py)
    full_scan: bool = False  # every connection was read (after an upgrade: see logdays.py)
    bodies_overdue: int = 0  # bodies and payloads the lifecycle rule should have deleted
    complete: bool = False  # False: the time budget ran out; the next run continues

    def describe(self) -> str:
        state = "complete" if self.complete else "stopped at its time budget (the next continues)"
        return (
            f"removed {self.records_removed} records, {self.bodies_removed} bodies and "
            f"{self.event_payloads_removed} event payloads, {self.replays_removed} replays and "
            f"{self.portal_sign_ins_removed} expired portal sign-ins, "
            f"{self.confirmation_codes_removed} expired confirmation codes; "
            f"{self.partitions_visited} partitions visited"
            f"{' (a full scan)' if self.full_scan else ''}, {self.days_dropped} days done"
            f"{f', {self.bodies_overdue} bodies overdue' if self.bodies_overdue else ''}; {state}"
        )


def log_cutoff(now: datetime, retention_days: int) -> datetime:
    """Where the log's retention begins at `now` (whole hours: see above): a purge at `now`
    deletes what is older. Every purge so far cut at or before it (the same rule at an earlier
    time), so a reader that hides what is older hides all any purge may be deleting, without
    reading the purge's mark (a search by EventId: shared/service/messages.py)."""
    exact = now - timedelta(days=retention_days)
    return exact.replace(minute=0, second=0, microsecond=0)


async def purge(
    services: Services,
    now: datetime,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    *,
    timer: Callable[[], float] = time.monotonic,
) -> PurgeResult:
    """Delete what is older than `now - retention_days`, stopping when the budget is spent.

    `now` is the caller's (the timer's clock, a test's fixed time); `timer` measures the
    budget only."""
    exact = now - timedelta(days=services.settings.retention_days)
    run = _Run(
        services,
        (log_cutoff(now, services.settings.retention_days), exact),
        deadline=timer() + budget_seconds,
        timer=timer,
    )
    tombstones = await services.connections.tombstones()
    deleted = [t["RowKey"] for t in tombstones]
    # A delivery in flight when its connection was deleted may still write a record: keep
    # the tombstone (and so come back to the partition) until that cannot happen any more.
    run.settled = {t["RowKey"] for t in tombstones if t["DeletedAt"] <= now - TOMBSTONE_GRACE}
    days = services.messages.days
    full_scan = await days.needs_full_scan(now)
    live = await services.connections.all_log_partitions() if full_scan else []
    expired_days = await days.started_before(run.cutoff)
    run.result.complete = (
        await run.each(deleted, run.deleted_partition)
        and await run.each(live, run.live_partition)
        and await run.by_day(expired_days, worked=full_scan)
        and await run.leftovers()
        and await run.replays()
    )
    if full_scan and run.result.complete:
        await days.full_scan_completed(now)
    run.result.full_scan = full_scan
    run.result.portal_sign_ins_removed = await services.portal_sessions.delete_expired(now)
    run.result.confirmation_codes_removed = await services.ownership.delete_expired(now)
    await services.audit.purge(now)  # issue 26: entries older than 90 days
    log.info("purge of what is older than %s: %s", run.cutoff.isoformat(), run.result.describe())
    return run.result


class _Run:
    def __init__(
        self,
        services: Services,
        cutoffs: tuple[datetime, datetime],  # the log's (whole hours), event payloads'
        deadline: float,
        timer: Callable[[], float],
    ) -> None:
        self.messages = services.messages
        self.connections = services.connections
        self.deletes_bodies = services.settings.purge_deletes_bodies
        self.replay_rows = services.replays
        self.cutoff, self.payloads_cutoff = cutoffs
        self.deadline = deadline
        self.timer = timer
        self.result = PurgeResult()
        self.settled: set[str] = set()  # deleted partitions no late write can reach

    def out_of_time(self) -> bool:
        return self.timer() >= self.deadline

    async def each(self, partitions: Sequence[str], work: Callable[[str], Awaitable[bool]]) -> bool:
        """`work` on every partition, a few at once, in random order; False if time ran out."""
        pending = iter(random.sample(partitions, len(partitions)))
        finished = True

        async def worker() -> None:
            nonlocal finished
            for partition in pending:  # one iterator for all workers: each partition once
                if self.out_of_time() or not await work(partition):
                    finished = False
                    return

        async with asyncio.TaskGroup() as workers:
            for _ in range(PARALLEL_PARTITIONS):
                workers.create_task(worker())
        return finished

    async def by_day(self, days: dict[str, list[str]], worked: bool) -> bool:
        """Work each partition of the days that began before the cutoff (unless a full scan
        has `worked` them all), then drop the days that are entirely past it."""
        partitions = sorted({p for listed in days.values() for p in listed})
        if not worked and not await self.each(partitions, self.live_partition):
            return False
        for day, listed in days.items():
            if day_start(day) + timedelta(days=1) <= self.cutoff and not self.out_of_time():
                await self.messages.days.drop(day, listed)
                self.result.days_dropped += 1
        return not self.out_of_time()

    async def live_partition(self, partition: str) -> bool:
        if not await self.messages.anything_older(partition, self.cutoff):
            self.result.partitions_visited += 1
            return True
        await self.messages.mark_purged(partition, self.cutoff)  # readers ignore it from now
        return await self.clear(partition, self.cutoff)

    async def deleted_partition(self, partition: str) -> bool:
        if not await self.clear(partition, None):
            return False
        if self.deletes_bodies:  # else the lifecycle rule (the module's doc, step 3)
            await self.delete_bodies(await self.messages.bodies_of(partition))
        if partition in self.settled:
            await self.connections.forget_tombstone(partition)
        return True

    async def clear(self, partition: str, before: datetime | None) -> bool:
        """Delete a partition's log older than `before` (all when None): failure copies and
        undelivered rows first (they name the same bodies), records, counter rows last; False
        if time ran out."""
        return (
            await self.clear_rows(partition, self.messages.old_failure_copies, before)
            and await self.clear_rows(partition, self.messages.old_undelivered, before)
            and await self.clear_records(partition, before)
            and await self.clear_rows(partition, self.messages.old_counters, before)
        )

    async def clear_rows(
        self,
        partition: str,
        old: Callable[[str, datetime | None], Awaitable[list[str]]],
        before: datetime | None,
    ) -> bool:
        """Delete the rows `old` finds (failure copies, `u_` rows, counters): not records."""
        while not self.out_of_time():
            keys = await old(partition, before)
            if not keys:
                return True
            for chunk in chunks(keys):
                await self.messages.delete_records(partition, chunk)
        return False

    async def clear_records(self, partition: str, before: datetime | None) -> bool:
        """Delete a partition's records older than `before` (all when None), each transaction
        followed by the bodies of its records; False if time ran out first."""
        while not self.out_of_time():
            rows = await self.messages.old_records(partition, before)
            if not rows:
                self.result.partitions_visited += 1
                return True
            for chunk in chunks(rows):
                if self.out_of_time():
                    return False
                # search index rows before their records: a run cut off between finds the
                # records again, and from them their rows' keys (a packed row's records
                # all name it: once)
                for index in chunks(list(dict.fromkeys(k for r in chunk for k in r["Index"]))):
                    await self.messages.delete_records(partition, index)  # missing ones skipped
                keys = [r["RowKey"] for r in chunk]
                removed = await self.messages.delete_records(partition, keys)
                self.result.records_removed += removed  # not `+= await`: see delete_bodies
                # After the records (see the module's doc). A body's record may have been
                # removed by another run, which removes the body too: the first one counts it.
                await self.delete_bodies([r["BodyBlob"] for r in chunk if r["BodyBlob"]])
                if made := [r["Delivery"] for r in chunk if r["Delivery"]]:
                    await self.messages.delete_records(partition, made)  # missing ones skipped
                if removed < len(chunk):
                    break  # another run is here: ask again rather than chase what it removed
        return False

    async def leftovers(self) -> bool:
        """Blobs no record needs any more. Only after every partition is done: an old body
        whose record was not yet removed must stay until it is. Without PURGE_DELETES_BODIES
        (Azure: the lifecycle rule deletes them) only a count of the overdue ones, once a day
        (the run that finishes a day): it lists the whole container."""
        if self.out_of_time():
            return False
        if not self.deletes_bodies:
            if self.result.days_dropped:
                await self.count_overdue()
            return not self.out_of_time()
        await self.delete_bodies(await self.messages.old_bodies(self.cutoff))
        if self.out_of_time():
            return False
        # Event payloads share the bodies container (Services.open) and are needed only while
        # their deliveries are retried (~8 h). Their names carry no time: the blob's own
        # last-modified time (the storage service's clock) says how old they are.
        payloads = self.messages.bodies.list_blobs(name_starts_with=EVENTS_PREFIX)
        old = [b.name async for b in payloads if b.last_modified <= self.payloads_cutoff]
        removed = await self.messages.delete_bodies(old)
        self.result.event_payloads_removed += removed
        return True

    async def replays(self) -> bool:
        """Rows of replays asked for before the retention (as old as the oldest records)."""
        for partition, replay_id in await self.replay_rows.created_before(self.payloads_cutoff):
            if self.out_of_time():
                return False
            await self.replay_rows.delete(partition, replay_id)
            self.result.replays_removed += 1
        return True

    async def count_overdue(self) -> None:
        """Bodies and payloads past the retention plus the rule's delay (a day, and a day for
        its engine, which runs about once a day): the rule is missing or failing."""
        overdue = self.payloads_cutoff - LIFECYCLE_DELAY
        bodies = await self.messages.old_bodies(overdue)
        payloads = self.messages.bodies.list_blobs(name_starts_with=EVENTS_PREFIX)
        late = [b.name async for b in payloads if b.last_modified <= overdue]
        self.result.bodies_overdue = len(bodies) + len(late)
        if self.result.bodies_overdue:
            log.warning(
                "%d stored bodies and event payloads are past the retention and the lifecycle "
                "rule's delay: is the storage account's lifecycle rule in place "
                "(infra/modules/storage.bicep)?",
                self.result.bodies_overdue,
            )

    async def delete_bodies(self, names: list[str]) -> None:
        if names and self.deletes_bodies:
            removed = await self.messages.delete_bodies(names)
            # Added after the await: `total += await ...` reads the total before awaiting and
            # would lose what the other workers added meanwhile.
            self.result.bodies_removed += removed
