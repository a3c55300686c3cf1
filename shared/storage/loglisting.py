"""Reading the message log by its counters: TotalHits and page N without reading earlier pages.

The counter rows of the window's hours (one query) give hourly and per-minute counts.
TotalHits is the sum of the whole hours, plus the minutes of the (at most two) hours the
window's `since` or `until` cut through, where the minutes they cut are counted exactly from
the rows' offsets of their records in the minute (or, in a minute busier than the rows keep
offsets for, by reading the RowKeys of their part inside the window). Page N starts in the
hour, then the minute, where the running count passes (N-1) * pageSize; its first record is
found by reading that one minute's RowKeys, and the page is then one range read from there.
So a request costs the same few reads whatever the log's size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.storage.logcounts import (
    FAILURE,
    HOUR_MS,
    MAX_MILLIS,
    MINUTE_MS,
    MINUTES,
    OFFSETS_OF,
    PURGED,
    HourCounts,
    Minutes,
    counter_range,
    hour_of,
    hour_of_counter,
    key_range,
    logged_at,
    millis,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

log = logging.getLogger("shared.storage")

# Rows of a minute a page may read and drop to find its first row, rather than reading keys.
SKIP_BY_READING = 100
# Counter rows of a cut hour read again for their offsets, at most (one point read each).
OFFSET_READS = 8
# A window of at most this many hours reads its counter rows' offsets with them (up to 11 KB
# a row), so that the minutes its edges cut are counted without a second round trip.
OFFSETS_AT_ONCE_HOURS = 3
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
class Span:
    """A part (after, upto] of the window, a whole hour or (part of) a minute, and how many
    rows it holds. A whole hour keeps its counter rows' minutes, to be split when a page
    starts inside it or an edge of the window cuts it; a minute, its rows' offsets in it
    (milliseconds) when the counter rows hold them all."""

    after: int
    upto: int
    count: int
    rows: tuple[Minutes, ...] = ()
    offsets: tuple[int, ...] | None = None

    def minutes(self) -> list[Span]:
        """A whole hour's minutes with rows, newest first."""
        start = self.after + 1
        found = []
        for i in reversed(range(MINUTES)):
            n = sum(row.counts[i] for row in self.rows)
            known = [row.known(i) for row in self.rows]
            offsets = None if None in known else tuple(o for k in known for o in k or ())
            at = start + i * MINUTE_MS
            found += [Span(at - 1, at + MINUTE_MS - 1, n, offsets=offsets)] if n else []
        return found

    def count_in(self, after: int, upto: int) -> int | None:
        """How many of a minute's rows are in (after, upto], from its offsets (None: unknown)."""
        if self.offsets is None:
            return None
        start = self.after + 1
        return sum(after < start + o <= upto for o in self.offsets)


def _rows(table: TableClient, w: Window, keys: tuple[str, str], **options: Any) -> Any:
    params = {"pk": w.partition, "start": keys[0], "end": keys[1]}
    return table.query_entities(_WHERE, parameters=params, **options)


async def spans(table: TableClient, w: Window, now: int | None = None) -> list[Span]:
    """The window's rows as spans, newest first: its whole hours as they are counted, and the
    hours its edges cut through by minute, the (at most two) minutes they cut through counted
    from the offsets their counter rows hold, or by reading their keys when those do not hold
    them all. `now` (milliseconds): where a window without an end reaches, to tell whether it
    is short enough to read its offsets in the same query (OFFSETS_AT_ONCE_HOURS)."""
    first = hour_of(w.after + 1) if w.after is not None else 0
    last = hour_of(w.upto) if w.upto is not None else hour_of(MAX_MILLIS)
    total, per_minute = ("Failed", "FailedMinutes") if w.prefix == FAILURE else ("Total", "Minutes")
    totals: dict[int, int] = defaultdict(int)
    rows: dict[int, list[Any]] = defaultdict(list)
    reaches = w.upto if w.upto is not None else now
    at_once = reaches is not None and hour_of(reaches) - first < OFFSETS_AT_ONCE_HOURS * HOUR_MS
    columns = ["RowKey", total, per_minute, *([OFFSETS_OF[per_minute]] if at_once else [])]
    async for row in _rows(table, w, counter_range(first, last), select=columns):
        at = hour_of_counter(row["RowKey"])
        totals[at] += row.get(total) or 0
        rows[at].append(row)
    spans = [Span(h - 1, h + HOUR_MS - 1, totals[h]) for h in sorted(totals, reverse=True)]
    cut = [s.after + 1 for s in spans if s.count and _part(w, s) != (s.after, s.upto)]
    minutes = {h: tuple(Minutes.of(r, per_minute) for r in rows[h]) for h in totals}
    reread = [] if at_once else [h for h in cut if h in _minutes_cut(w)]
    again = await asyncio.gather(
        *(_with_offsets(table, w.partition, rows[h], per_minute) for h in reread)
    )
    minutes.update(zip(reread, again, strict=True))
    found: list[Span] = []
    for span in spans:
        hour = dataclasses.replace(span, rows=minutes[span.after + 1])
        if hour.count and hour.after + 1 not in cut:
            found.append(hour)
        elif hour.count:  # cut by an edge of the window
            for minute in hour.minutes():
                part = _part(w, minute)
                if part == (minute.after, minute.upto):
                    found.append(minute)
                elif part is not None:
                    n = minute.count_in(*part)
                    n = await _count(table, w, *part) if n is None else n
                    found += [Span(*part, n)] if n else []
    return found


async def _with_offsets(
    table: TableClient, partition: str, rows: list[Any], per_minute: str
) -> tuple[Minutes, ...]:
    """The minutes of an hour's counter rows with their offsets: each row read again, those
    columns alone (up to 11 KB a row, so only for the hours a window cuts). An hour of more
    rows than OFFSET_READS is left without offsets: reading the cut minute costs less."""
    columns = [per_minute, OFFSETS_OF[per_minute]]
    if len(rows) > OFFSET_READS:
        return tuple(Minutes.of(row, per_minute) for row in rows)
    again = await asyncio.gather(*(_point(table, partition, r["RowKey"], columns) for r in rows))
    return tuple(Minutes.of(new or old, per_minute) for old, new in zip(rows, again, strict=True))


def _minutes_cut(w: Window) -> set[int]:
    """The hours in which an edge of the window cuts a minute (not on a minute's start)."""
    first = w.after + 1 if w.after is not None else None
    hours = {hour_of(first)} if first is not None and first % MINUTE_MS else set()
    return hours | ({hour_of(w.upto)} if w.upto is not None and (w.upto + 1) % MINUTE_MS else set())


def _part(w: Window, minute: Span) -> tuple[int, int] | None:
    """(after, upto] of the part of a minute inside the window; None when there is none."""
    after = minute.after if w.after is None else max(minute.after, w.after)
    upto = minute.upto if w.upto is None else min(minute.upto, w.upto)
    return (after, upto) if upto > after else None


async def _count(table: TableClient, w: Window, after: int, upto: int) -> int:
    rows = _rows(table, w, w.keys(after, upto), select=["RowKey"], results_per_page=1000)
    return len([r async for r in rows])


async def _nth_key(table: TableClient, w: Window, minute: Span, n: int) -> str:
    """The RowKey of the n-th row (from 0, newest first) of a minute."""
    keys = w.keys(minute.after, minute.upto)
    rows = _rows(table, w, keys, select=["RowKey"], results_per_page=min(n + 1, 1000))
    i = 0
    async for row in rows:
        if i == n:
            return str(row["RowKey"])
        i += 1
    return keys[1]  # fewer rows than counted (a purge is under way): an empty page


async def _read(
    table: TableClient, w: Window, start: str, size: int, end: str | None = None
) -> list[Any]:
    """Up to `size` rows from RowKey `start` to `end` (None: the window's end; see
    `tolerant`)."""

    async def read(select: list[str] | None) -> list[Any]:
        got: list[Any] = []
        keys = (start, end or w.keys()[1])
        rows = _rows(table, w, keys, results_per_page=size, select=select)
        async for page in rows.by_page():
            got += [e async for e in page]
            if len(got) >= size:
                break
        return got[:size]

    return await tolerant(read, table, w.partition)


class Unreadable:
    """Records that could not be read back, in this process: skipped, never a 500 (e.g. a
    date the Tables SDK writes but cannot parse, stored before events were bounded)."""

    def __init__(self) -> None:
        self.count = 0

    def skipped(self, count: int, partition: str) -> None:
        if count:
            self.count += count
            log.warning(
                "%d unreadable record(s) skipped in log partition %s (%d in this process)",
                count,
                partition,
                self.count,
                extra={"UnreadableRecords": self.count},
            )


unreadable = Unreadable()


async def tolerant(
    read: Callable[[list[str] | None], Awaitable[list[Any]]], table: TableClient, partition: str
) -> list[Any]:
    """`read(select)`'s rows. When one cannot be parsed (the SDK parses a page at once: one
    bad row fails it all), each is read alone and a bad one keeps its place as its RowKey
    only, so that pages still start where the counts say; reading it as a record fails, and
    MessageLog skips and counts it."""
    try:
        return await read(None)
    except ValueError:
        keys = [row["RowKey"] for row in await read(["RowKey"])]
    rows = await asyncio.gather(*(_point(table, partition, key) for key in keys))
    return [row or {"RowKey": key} for key, row in zip(keys, rows, strict=True)]


async def _point(
    table: TableClient, partition: str, key: str, select: list[str] | None = None
) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return await table.get_entity(partition, key, select=select)
    except (ValueError, ResourceNotFoundError):  # unreadable, or purged meanwhile
        return None


async def purged_before(table: TableClient, partition: str) -> int | None:
    """The cutoff of the last purge (milliseconds): what is older is gone or going."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return millis((await table.get_entity(partition, PURGED))["Before"])
    except ResourceNotFoundError:
        return None


async def page(
    table: TableClient,
    w: Window,
    number: int,
    size: int,
    kept_from: int | None = None,
    now: int | None = None,
) -> tuple[int, list[Any]]:
    """TotalHits and the rows of page `number` (from 1) of `size` rows, newest first. What
    a purge under way is deleting is left out, from the counts and from the page alike:
    older than `kept_from` (milliseconds, whole hours) when the caller knows where the
    retention begins, else than the purge's mark (a point read). Page 1 of the failures reads
    its page first: failures are rare, and when the window holds no more than the page, their
    number is TotalHits without reading the counters. `now`: see `spans`."""
    if kept_from is not None:  # the window starts there: nothing older to leave out
        w = dataclasses.replace(w, after=max(kept_from - 1, -1 if w.after is None else w.after))
    marked = purged_before(table, w.partition) if kept_from is None else _nothing()
    if number == 1 and w.prefix == FAILURE:  # failures are rare: the page may hold them all
        floor, rows = await asyncio.gather(marked, _read(table, w, w.keys()[0], size + 1))
        rows = [r for r in rows if floor is None or logged_at(r) >= floor]
        if len(rows) <= size:  # the window holds no more than these: no counters to read
            return len(rows), rows
        found = await spans(table, w, now)
    elif number == 1:  # where it starts is known: read it while counting
        floor, found, rows = await asyncio.gather(
            marked, spans(table, w, now), _read(table, w, w.keys()[0], size)
        )
    else:
        floor, found = await _counted(table, w, marked, now)
        start = _start(found, (number - 1) * size)
        last = _start(found, number * size - 1)  # the minute of the page's last row, if any
        bound = last[0].after if last else None
        rows = await _read_from(table, w, *start, size, bound) if start else []
    total = sum(m.count for m in _kept(found, floor))
    return total, [r for r in rows if floor is None or logged_at(r) >= floor][:size]


async def _nothing() -> None:
    return None


async def _counted(
    table: TableClient,
    w: Window,
    marked: Awaitable[int | None] | None = None,
    now: int | None = None,
) -> tuple[int | None, list[Span]]:
    """The purge's cutoff (`marked`, else its mark read) and the window's spans that it
    leaves."""
    floor, found = await asyncio.gather(
        marked or purged_before(table, w.partition), spans(table, w, now)
    )
    return floor, _kept(found, floor)


async def count(table: TableClient, w: Window) -> int:
    """How many rows the window holds, from the counters."""
    _, found = await _counted(table, w)
    return sum(m.count for m in found)


async def oldest(table: TableClient, w: Window, size: int) -> list[Any]:
    """The `size` oldest rows of the window, oldest first (a replay's next chunk). Where they
    start is found from the counters, as for page N: the same few reads whatever the size."""
    floor, found = await _counted(table, w)
    skip = sum(m.count for m in found) - size
    start = _start(found, skip) if skip > 0 else None
    rows = (
        await _read_from(table, w, *start, size)
        if start
        else await _read(table, w, w.keys()[0], size)
    )
    return [r for r in reversed(rows) if floor is None or logged_at(r) >= floor]


async def _read_from(
    table: TableClient, w: Window, minute: Span, skip: int, size: int, after: int | None = None
) -> Any:
    """A page starting after `skip` rows of a minute. A few rows to skip are read and
    dropped (one round trip); many (a busy minute) are skipped by reading their keys first.
    `after`: the time past which the counts say the page does not reach (the start of the
    minute, or unsplit hour, holding its last row): the read stops there, and reads on to the
    window's end only if the rows fell short of the counts. Azurite sorts every row a query's
    range holds before it returns the first page of them: a range to the window's end (a
    million rows for page 50 of a full log) cost it more than its scan of the table."""
    end = w.keys(after=after)[1] if after is not None else None
    if skip <= SKIP_BY_READING:
        start, dropped = w.keys(minute.after, minute.upto)[0], skip
    else:
        start, dropped = await _nth_key(table, w, minute, skip), 0
    wanted = dropped + size
    rows = await _read(table, w, start, wanted, end)
    if end is not None and len(rows) < wanted:  # fewer rows than counted in the bound
        rows += await _read(table, w, end, wanted - len(rows))
    return rows[dropped:]


def _start(found: list[Span], skip: int) -> tuple[Span, int] | None:
    """The minute where a page starts after `skip` rows, and how many of its rows come first."""
    for span in found:
        if skip < span.count:
            if not span.rows:
                return span, skip
            return _start(span.minutes(), skip)
        skip -= span.count
    return None


def _kept(found: list[Span], floor: int | None) -> list[Span]:
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
