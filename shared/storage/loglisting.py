"""Reading the message log by its counters: TotalHits and page N without reading earlier pages.

The counter rows of the window's hours (one query) give per-minute counts. TotalHits is their
sum, except for the minutes the window's `since` or `until` cut through: those are counted
exactly, by reading the RowKeys of their part inside the window (at most two minutes of
records). Page N starts in the minute where the running count passes (N-1) * pageSize; its
first record is found by reading that one minute's RowKeys, and the page is then one range
read from there. So a request costs the same few reads whatever the log's size.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.storage.logcounts import (
    FAILURE,
    MAX_MILLIS,
    MINUTE_MS,
    MINUTES,
    PURGED,
    HourCounts,
    counter_range,
    hour_of,
    hour_of_counter,
    ints,
    key_range,
    logged_at,
    millis,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

_WHERE = "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end"


@dataclass(frozen=True)
class Window:
    """The rows a listing reads: records (prefix "") or failure copies (FAILURE) whose time
    in milliseconds is after `after` and at most `upto` (None: unbounded)."""

    partition: str
    prefix: str
    after: int | None
    upto: int | None

    def keys(self, after: int | None = None, upto: int | None = None) -> tuple[str, str]:
        """[start, end) of the window's RowKeys, narrowed to (after, upto] when given."""
        return key_range(
            self.prefix,
            self.after if after is None else after,
            self.upto if upto is None else upto,
        )


@dataclass(frozen=True)
class Minute:
    """The part (after, upto] of one minute inside the window, and how many rows it holds."""

    after: int
    upto: int
    count: int


def _rows(table: TableClient, w: Window, keys: tuple[str, str], **options: Any) -> Any:
    params = {"pk": w.partition, "start": keys[0], "end": keys[1]}
    return table.query_entities(_WHERE, parameters=params, **options)


async def minutes(table: TableClient, w: Window) -> list[Minute]:
    """The minutes with rows in the window, newest first."""
    first = hour_of(w.after + 1) if w.after is not None else 0
    last = hour_of(w.upto) if w.upto is not None else hour_of(MAX_MILLIS)
    column = "FailedMinutes" if w.prefix == FAILURE else "Minutes"
    counts: dict[int, int] = defaultdict(int)
    async for row in _rows(table, w, counter_range(first, last), select=["RowKey", column]):
        hour = hour_of_counter(row["RowKey"])
        for i, n in enumerate(ints(row.get(column), MINUTES)):
            if n:
                counts[hour + i * MINUTE_MS] += n

    async def part(start: int, n: int) -> Minute | None:
        whole = start - 1, start + MINUTE_MS - 1
        after = whole[0] if w.after is None else max(whole[0], w.after)
        upto = whole[1] if w.upto is None else min(whole[1], w.upto)
        if upto <= after:
            return None  # outside the window
        if (after, upto) != whole:
            n = await _count(table, w, after, upto)  # cut by an edge: counted exactly
        return Minute(after, upto, n) if n else None

    found = await asyncio.gather(*(part(m, n) for m, n in sorted(counts.items(), reverse=True)))
    return [m for m in found if m is not None]


async def _count(table: TableClient, w: Window, after: int, upto: int) -> int:
    rows = _rows(table, w, w.keys(after, upto), select=["RowKey"], results_per_page=1000)
    return len([r async for r in rows])


async def _nth_key(table: TableClient, w: Window, minute: Minute, n: int) -> str:
    """The RowKey of the n-th row (from 0, newest first) of a minute."""
    keys = w.keys(minute.after, minute.upto)
    rows = _rows(table, w, keys, select=["RowKey"], results_per_page=min(n + 1, 1000))
    i = 0
    async for row in rows:
        if i == n:
            return str(row["RowKey"])
        i += 1
    return keys[1]  # fewer rows than counted (a purge is under way): an empty page


async def _read(table: TableClient, w: Window, start: str, size: int) -> list[Any]:
    """Up to `size` rows from RowKey `start` to the window's end."""
    got: list[Any] = []
    async for page in _rows(table, w, (start, w.keys()[1]), results_per_page=size).by_page():
        got += [e async for e in page]
        if len(got) >= size:
            break
    return got[:size]


async def purged_before(table: TableClient, partition: str) -> int | None:
    """The cutoff of the last purge (milliseconds): what is older is gone or going."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return millis((await table.get_entity(partition, PURGED))["Before"])
    except ResourceNotFoundError:
        return None


async def page(table: TableClient, w: Window, number: int, size: int) -> tuple[int, list[Any]]:
    """TotalHits and the rows of page `number` (from 1) of `size` rows, newest first. What
    a purge under way is deleting is left out, from the counts and from the page alike."""
    if number == 1:  # where it starts is known: read it while counting
        floor, found, rows = await asyncio.gather(
            purged_before(table, w.partition), minutes(table, w), _read(table, w, w.keys()[0], size)
        )
    else:
        floor, found = await asyncio.gather(purged_before(table, w.partition), minutes(table, w))
        rows = []
        skip = (number - 1) * size
        for minute in _kept(found, floor):
            if skip < minute.count:
                start = await _nth_key(table, w, minute, skip)
                rows = await _read(table, w, start, size)
                break
            skip -= minute.count
    total = sum(m.count for m in _kept(found, floor))
    return total, [r for r in rows if floor is None or logged_at(r) >= floor]


def _kept(found: list[Minute], floor: int | None) -> list[Minute]:
    return [m for m in found if floor is None or m.upto >= floor]


async def hourly(
    table: TableClient, partition: str, first: int, last: int
) -> dict[int, HourCounts]:
    """The summed counter rows of the hours first..last (hour starts in milliseconds)."""
    w = Window(partition, "", None, None)
    columns = ["RowKey", "Total", "Failed", "Latency"]
    floor = await purged_before(table, partition) or 0
    hours: dict[int, HourCounts] = {}
    async for row in _rows(table, w, counter_range(first, last), select=columns):
        hour = hour_of_counter(row["RowKey"])
        if hour < floor:
            continue  # being purged
        counts = HourCounts.of(row)
        hours[hour] = hours[hour].plus(counts) if hour in hours else counts
    return hours
