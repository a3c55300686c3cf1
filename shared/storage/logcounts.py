"""Counts of the message log kept as it is written: one row per writer and hour.

A writer (one `MessageLog` in one process, or one of its slots when it writes a partition
from several tasks at once) owns its counter rows: nobody else writes them, so it keeps its
running totals in memory and writes the new absolute values in the same transaction as the
records they count (an upsert, no etag, no read). Readers sum the rows of every writer.

A row holds, for its hour (UTC): Total, Failed, per-minute counts of all records and of
failed ones (for `TotalHits` and for finding where page N starts without reading earlier
pages), the millisecond offsets of each minute's records and failed ones while the minute
holds at most OFFSETS_KEPT of them (so that the part of a minute a `since` or `until` cuts is
counted from the row, not by reading its records), and a latency histogram for the stats (see
`bucket`).
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
# Offsets of a minute's records a row keeps (3 characters each: 60 full minutes are 11 KB);
# past that, the minute keeps none and a reader counts its cut part from its records.
OFFSETS_KEPT = 64
OFFSETS_OF = {"Minutes": "Offsets", "FailedMinutes": "FailedOffsets"}  # their columns
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"  # 64**3 > MINUTE_MS
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


def offsets(text: str | None) -> list[list[int]]:
    """Each minute's offsets (milliseconds into it) as a row holds them."""
    minutes = text.split(",") if text else []
    found = [[_number(m[i : i + 3]) for i in range(0, len(m), 3)] for m in minutes]
    return found + [[] for _ in range(MINUTES - len(found))]


def _number(code: str) -> int:
    return sum(_DIGITS.index(c) * 64**i for i, c in enumerate(reversed(code)))


def _offsets_text(minutes: list[list[int]]) -> str:
    codes = [
        "".join(_DIGITS[o // 4096] + _DIGITS[o // 64 % 64] + _DIGITS[o % 64] for o in m)
        for m in minutes
    ]
    while codes and not codes[-1]:
        codes.pop()
    return ",".join(codes)


def _no_offsets() -> list[list[int]]:
    return [[] for _ in range(MINUTES)]


@dataclass
class Minutes:
    """Per-minute counts of an hour's records (all, or failed ones), with their offsets in
    the minute where a minute holds at most OFFSETS_KEPT (else none: see `known`)."""

    counts: list[int] = field(default_factory=lambda: [0] * MINUTES)
    offsets: list[list[int]] = field(default_factory=_no_offsets)

    def count(self, at_ms: int) -> None:
        minute = at_ms % HOUR_MS // MINUTE_MS
        self.counts[minute] += 1
        self.offsets[minute] = self._kept(minute, [*self.offsets[minute], at_ms % MINUTE_MS])

    def plus(self, other: Minutes) -> Minutes:
        counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        joined = [a + b for a, b in zip(self.offsets, other.offsets, strict=True)]
        summed = Minutes(counts)
        summed.offsets = [summed._kept(m, o) for m, o in enumerate(joined)]
        return summed

    def known(self, minute: int) -> list[int] | None:
        """The minute's offsets, when the row holds all of them (written before they were
        kept, or past OFFSETS_KEPT, it holds none)."""
        found = self.offsets[minute]
        return found if len(found) == self.counts[minute] else None

    def _kept(self, minute: int, found: list[int]) -> list[int]:
        return found if self.counts[minute] <= OFFSETS_KEPT else []

    def properties(self, name: str) -> dict[str, str]:
        return {name: _text(self.counts), OFFSETS_OF[name]: _offsets_text(self.offsets)}

    @classmethod
    def of(cls, row: Any, name: str) -> Minutes:
        """From a counter row's `name` (Minutes, FailedMinutes) and its offsets (a reader
        that did not select them sees none)."""
        return cls(ints(row.get(name), MINUTES), offsets(row.get(OFFSETS_OF[name])))


@dataclass
class HourCounts:
    total: int = 0
    failed: int = 0
    minutes: Minutes = field(default_factory=Minutes)
    failed_minutes: Minutes = field(default_factory=Minutes)
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def count(self, at_ms: int, failed: bool, latency_ms: float) -> None:
        self.total += 1
        self.minutes.count(at_ms)
        if failed:
            self.failed += 1
            self.failed_minutes.count(at_ms)
        self.latency[bucket(latency_ms)] += 1

    def plus(self, other: HourCounts) -> HourCounts:
        return HourCounts(
            self.total + other.total,
            self.failed + other.failed,
            self.minutes.plus(other.minutes),
            self.failed_minutes.plus(other.failed_minutes),
            [x + y for x, y in zip(self.latency, other.latency, strict=True)],
        )

    def properties(self) -> dict[str, Any]:
        return {
            "Total": self.total,
            "Failed": self.failed,
            **self.minutes.properties("Minutes"),
            **self.failed_minutes.properties("FailedMinutes"),
            "Latency": _text(self.latency),
        }

    @classmethod
    def of(cls, row: Any) -> HourCounts:
        """From a counter row (or the properties a query selected of it)."""
        return cls(
            row.get("Total") or 0,
            row.get("Failed") or 0,
            Minutes.of(row, "Minutes"),
            Minutes.of(row, "FailedMinutes"),
            ints(row.get("Latency"), BUCKETS),
        )


def count_records(entities: Iterable[dict[str, Any]], at_ms: Any) -> dict[int, HourCounts]:
    """Counts by hour of record entities; `at_ms(entity)` is a record's time in the log."""
    counts: dict[int, HourCounts] = {}
    for e in entities:
        at = at_ms(e)
        done = e["RequestTimestamp"].timestamp() * 1000 + e["ElapsedMilliseconds"]
        latency = done - e["EventTimestamp"].timestamp() * 1000
        start = hour_of(at)
        hour = counts.get(start)
        if hour is None:  # not setdefault: an HourCounts is 120 lists, built for each record
            hour = counts[start] = HourCounts()
        hour.count(at, e["Status"] == 2, latency)
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
