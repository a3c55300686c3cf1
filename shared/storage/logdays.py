"""Which log partitions received records on which day: the purge's work list, so that it
reads only the days past the retention instead of every connection (issue 25).

Rows in the `messages` table itself, beside the log partitions (whose keys are connection
Uids and never start with `~`):

    PartitionKey            RowKey             what
    ~logday_<YYYYMMDD>      <log partition>    the partition has records of that UTC day
    ~logdays                fallback           the full scan after an upgrade (see below)

A writer notes a (partition, day) before it writes the day's first record there (`note`), so a
record is never in the table without its day's row, whatever fails between the two. It
remembers what it noted (at most MAX_NOTED pairs, the oldest forgotten first: a forgotten pair
is noted again, an idempotent upsert), so a busy connection costs one upsert a day per process.
The purge reads the rows of the days that began before its cutoff (one PartitionKey range),
clears those partitions' expired ranges, and drops a day's rows once the whole day is past the
cutoff.

**Existing data.** Records written before this existed have no day rows. Until a full scan of
every connection (the purge as it was) has completed, the purge does one each run; it records
when the first one began, and trusts the day rows once a complete full scan began at least
FALLBACK_GRACE after that (by then no process of the previous version still writes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.storage import transactions
from shared.storage.logcounts import logged_at

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

DAY_PREFIX = "~logday_"
STATE_PARTITION, FALLBACK = "~logdays", "fallback"
DAY_MS = 86_400_000
MAX_NOTED = 100_000  # (partition, day) pairs a process remembers: ~10 MB at most
# Longer than a deployment leaves processes of the previous version running.
FALLBACK_GRACE = timedelta(hours=1)


def day_key(day_ms: int) -> str:
    return DAY_PREFIX + datetime.fromtimestamp(day_ms / 1000, UTC).strftime("%Y%m%d")


def day_start(key: str) -> datetime:
    return datetime.strptime(key[len(DAY_PREFIX) :], "%Y%m%d").replace(tzinfo=UTC)


class LogDays:
    def __init__(self, table: TableClient, max_noted: int = MAX_NOTED) -> None:
        self._table = table
        self._noted: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._max_noted = max_noted

    async def note(self, partition: str, entities: Iterable[dict[str, Any]]) -> None:
        """Before records are written: their partition has records on their days."""
        await self._note(partition, {logged_at(e) // DAY_MS * DAY_MS for e in entities})

    async def note_at(self, partition: str, at: datetime) -> None:
        """The partition has records on the day of `at` (a benchmark's steady state)."""
        await self._note(partition, {int(at.timestamp() * 1000) // DAY_MS * DAY_MS})

    async def _note(self, partition: str, days: set[int]) -> None:
        for day in days:
            if (partition, day) in self._noted:
                self._noted.move_to_end((partition, day))
                continue
            await self._table.upsert_entity({"PartitionKey": day_key(day), "RowKey": partition})
            self._noted[(partition, day)] = None
            if len(self._noted) > self._max_noted:
                self._noted.popitem(last=False)

    async def started_before(self, cutoff: datetime) -> dict[str, list[str]]:
        """The partitions of every noted day that began before `cutoff`, by day key (oldest
        first): only those days' rows are read."""
        last = day_key(int(cutoff.timestamp() * 1000) - 1)
        rows = self._table.query_entities(
            "PartitionKey ge @first and PartitionKey le @last",
            parameters={"first": DAY_PREFIX, "last": last},
            select=["PartitionKey", "RowKey"],
            results_per_page=1000,
        )
        days: dict[str, list[str]] = {}
        async for row in rows:
            days.setdefault(row["PartitionKey"], []).append(row["RowKey"])
        return dict(sorted(days.items()))

    async def drop(self, day: str, partitions: list[str]) -> None:
        """Forget a day whose partitions hold nothing of it any more."""
        for start in range(0, len(partitions), transactions.MAX_OPERATIONS):
            chunk = partitions[start : start + transactions.MAX_OPERATIONS]
            operations: list[transactions.Operation] = [
                ("delete", {"PartitionKey": day, "RowKey": p}) for p in chunk
            ]
            try:
                await transactions.submit(self._table, operations)
            except transactions.TransactionError as e:
                if e.code != "ResourceNotFound":  # another purge dropped some: the rest alone
                    raise
                for p in chunk:
                    await self._table.delete_entity(day, p)
        for p in partitions:  # a late write of that day notes it again
            self._noted.pop((p, int(day_start(day).timestamp() * 1000)), None)

    async def needs_full_scan(self, now: datetime) -> bool:
        """Whether this run must scan every connection (records older than the day rows may
        exist); the first such run records when it began."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            state = await self._table.get_entity(STATE_PARTITION, FALLBACK)
        except ResourceNotFoundError:
            entity = {"PartitionKey": STATE_PARTITION, "RowKey": FALLBACK, "FirstBegan": now}
            await self._table.upsert_entity(entity)
            return True
        return not state.get("Done")

    async def full_scan_completed(self, began: datetime) -> None:
        """A full scan that began at `began` completed: the day rows are trusted from now on if
        it began FALLBACK_GRACE after the first one."""
        state = await self._table.get_entity(STATE_PARTITION, FALLBACK)
        if began >= state["FirstBegan"] + FALLBACK_GRACE:
            await self._table.upsert_entity({**state, "Done": True})

    async def trust(self, now: datetime) -> None:
        """No records older than the day rows exist (a new installation, a benchmark)."""
        entity = {"PartitionKey": STATE_PARTITION, "RowKey": FALLBACK, "FirstBegan": now}
        await self._table.upsert_entity({**entity, "Done": True})
