"""Counts of the message log kept as it is written: one row per writer and hour.

A writer (one `MessageLog` in one process, or one of its slots when it writes a partition
from several tasks at once) owns its counter rows: nobody else writes them, so it keeps its
running totals in memory and writes the new absolute values in the same transaction as the
records they count (an upsert, no etag, no read). Readers sum the rows of every writer.

A row holds, for its hour (UTC): Total, Failed, per-minute counts of all records and of
failed ones (for `TotalHits` and for finding where page N starts without reading earlier
pages), and a latency histogram for the stats (see `bucket`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_MILLIS = 10**13 - 1  # year 2286
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
MINUTES = 60
# Latency bucket b holds (2**(b-1), 2**b] ms; the last one everything above 2**26 ms (18.6 h).
BUCKETS = 28

COUNTER = "c_"  # RowKey prefixes: see the layout in shared/storage/messages.py
FAILURE = "f_"
PURGED = "p_purged"
RECORDS_END = ":"  # record keys start with a digit; ':' sorts right after '9'


def inverted(millis: int) -> str:
    return f"{MAX_MILLIS - millis:013d}"


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def logged_at(entity: Any) -> int:
    """A record's (or failure copy's) time in the log, in milliseconds, from its RowKey."""
    return MAX_MILLIS - int(entity["RowKey"][-46:-33])


def hour_of(ms: int) -> int:
    return ms - ms % HOUR_MS


def counter_key(hour: int, writer: str) -> str:
    return f"{COUNTER}{inverted(hour)}_{writer}"


def hour_of_counter(row_key: str) -> int:
    return MAX_MILLIS - int(row_key[len(COUNTER) : len(COUNTER) + 13])


def key_range(prefix: str, after: int | None, upto: int | None) -> tuple[str, str]:
    """[start, end) of the RowKeys of records (prefix "") or failure copies (FAILURE) whose
    time in milliseconds is after `after` and at most `upto` (None: unbounded)."""
    start = prefix + (inverted(upto) if upto is not None else "")
    end = prefix + (inverted(after) if after is not None else RECORDS_END)
    return start, end


def counter_range(first_hour: int, last_hour: int) -> tuple[str, str]:
    """[start, end) of the counter rows of the hours first_hour..last_hour (hour starts)."""
    return COUNTER + inverted(last_hour), COUNTER + inverted(first_hour) + "`"  # '`' > '_'


def bucket(latency_ms: float) -> int:
    return min(max(int(latency_ms) - 1, 0).bit_length(), BUCKETS - 1)


def percentile(histogram: list[int], p: float) -> int | None:
    """The upper bound (ms) of the bucket holding the p-th percentile: the true value is at
    most that and more than half of it. None for an empty histogram."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, -(-total * p // 100))
    seen = 0
    for b, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return int(2**b)
    raise AssertionError("unreachable")


def ints(text: str | None, size: int) -> list[int]:
    values = [int(v) for v in text.split(",")] if text else []
    return values + [0] * (size - len(values))


def _text(values: list[int]) -> str:
    while values and values[-1] == 0:  # trailing zeros left out: shorter rows
        values = values[:-1]
    return ",".join(map(str, values))


@dataclass
class HourCounts:
    total: int = 0
    failed: int = 0
    minutes: list[int] = field(default_factory=lambda: [0] * MINUTES)
    failed_minutes: list[int] = field(default_factory=lambda: [0] * MINUTES)
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def count(self, at_ms: int, failed: bool, latency_ms: float) -> None:
        minute = at_ms % HOUR_MS // MINUTE_MS
        self.total += 1
        self.minutes[minute] += 1
        if failed:
            self.failed += 1
            self.failed_minutes[minute] += 1
        self.latency[bucket(latency_ms)] += 1

    def plus(self, other: HourCounts) -> HourCounts:
        def add(a: list[int], b: list[int]) -> list[int]:
            return [x + y for x, y in zip(a, b, strict=True)]

        return HourCounts(
            self.total + other.total,
            self.failed + other.failed,
            add(self.minutes, other.minutes),
            add(self.failed_minutes, other.failed_minutes),
            add(self.latency, other.latency),
        )

    def properties(self) -> dict[str, Any]:
        return {
            "Total": self.total,
            "Failed": self.failed,
            "Minutes": _text(self.minutes),
            "FailedMinutes": _text(self.failed_minutes),
            "Latency": _text(self.latency),
        }

    @classmethod
    def of(cls, row: Any) -> HourCounts:
        """From a counter row (or the properties a query selected of it)."""
        return cls(
            row.get("Total") or 0,
            row.get("Failed") or 0,
            ints(row.get("Minutes"), MINUTES),
            ints(row.get("FailedMinutes"), MINUTES),
            ints(row.get("Latency"), BUCKETS),
        )


def count_records(entities: Iterable[dict[str, Any]], at_ms: Any) -> dict[int, HourCounts]:
    """Counts by hour of record entities; `at_ms(entity)` is a record's time in the log."""
    counts: dict[int, HourCounts] = {}
    for e in entities:
        at = at_ms(e)
        done = e["RequestTimestamp"].timestamp() * 1000 + e["ElapsedMilliseconds"]
        latency = done - e["EventTimestamp"].timestamp() * 1000
        counts.setdefault(hour_of(at), HourCounts()).count(at, e["Status"] == 2, latency)
    return counts


@dataclass
class CounterSlot:
    """One writer's counter rows in one partition, and its totals of the recent hours."""

    name: str
    totals: dict[int, HourCounts] = field(default_factory=dict)
    # True while every hour not in `totals` has no row of this slot in the table.
    complete: bool = True
    # The last transaction's outcome is unknown (no answer): it may have committed.
    dirty: bool = False

    KEEP_HOURS = 3  # hours of totals kept in memory; an older one is read back if needed

    def forget_old_hours(self) -> None:
        if len(self.totals) > self.KEEP_HOURS:
            for hour in sorted(self.totals)[: -self.KEEP_HOURS]:
                del self.totals[hour]
            self.complete = False


class CounterSlots:
    """The slots of one writer: a partition written by several tasks at once gets a slot per
    task, so no two transactions ever race on one counter row."""

    MAX_PARTITIONS = 10_000  # partitions whose idle slots are kept (a few KB each)

    def __init__(self, writer: str | None = None) -> None:
        self.writer = writer or secrets.token_hex(5)
        self._free: dict[str, list[CounterSlot]] = {}
        self._made = 0

    def take(self, partition: str) -> CounterSlot:
        free = self._free.get(partition)
        if free:
            return free.pop()
        self._made += 1
        return CounterSlot(f"{self.writer}{self._made:04d}")

    def give_back(self, partition: str, slot: CounterSlot) -> None:
        if len(self._free) >= self.MAX_PARTITIONS and partition not in self._free:
            self._free.clear()  # forget idle slots now and then: new ones get new rows
        self._free.setdefault(partition, []).append(slot)


def utc_hour(ms: int) -> datetime:
    return datetime.fromtimestamp(hour_of(ms) / 1000, UTC)
