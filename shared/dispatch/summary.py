"""Delivery summaries: one information line per connection and minute, not one per delivery.

A line per successful delivery would cost as much telemetry as the deliveries themselves
(1,000 a second); failures keep their own warning line each, which the alerts count. Each
process counts its own deliveries and logs what it counted when the minute is over, so
Application Insights gets at most one line per connection, minute and instance, with the
counts and latency percentiles the workbook charts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from uuid import UUID

log = logging.getLogger("shared.dispatch")


class _Counts:
    """One connection's deliveries in the current window."""

    __slots__ = ("elapsed", "failed")

    def __init__(self) -> None:
        self.elapsed: list[int] = []  # milliseconds of every attempt, failed ones too
        self.failed: Counter[str] = Counter()  # by error category


def percentile(ordered: list[int], fraction: float) -> int:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


class DeliverySummary:
    """Counts delivery attempts per connection; logs and resets them every `interval_seconds`
    of `clock` (seconds, monotonic)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval_seconds: float = 60.0
    ) -> None:
        self.clock = clock
        self.interval_seconds = interval_seconds
        self._counts: dict[UUID, _Counts] = {}
        self._opened: float | None = None  # when the current window started
        self._timer: asyncio.TimerHandle | None = None
        # Caches whose size and hit counts go in each window's stats line, by name.
        self._caches: dict[str, Callable[[], dict[str, int]]] = {}

    def watch(self, name: str, stats: Callable[[], dict[str, int]]) -> None:
        """Log `stats()` (size, capacity, hits and misses since the last call, and any other
        counts) with each window, in the one stats line; names are camelCase."""
        self._caches[name] = stats

    def add(self, connection_uid: UUID, elapsed_milliseconds: int, failure: str | None) -> None:
        """One attempt: `failure` is its error category, None when it was delivered."""
        now = self.clock()
        if self._opened is not None and now - self._opened >= self.interval_seconds:
            self.flush()
        if self._opened is None:
            self._opened = now
            self._flush_when_over()
        counts = self._counts.get(connection_uid)
        if counts is None:
            counts = self._counts[connection_uid] = _Counts()
        counts.elapsed.append(elapsed_milliseconds)
        if failure is not None:
            counts.failed[failure] += 1

    def flush(self) -> None:
        """Log one line per connection for what was counted, and start a new window."""
        if self._timer is not None:
            self._timer.cancel()
        counted, opened = self._counts, self._opened
        self._counts, self._opened, self._timer = {}, None, None
        seconds = round(self.clock() - opened) if opened is not None else 0
        for connection_uid, counts in counted.items():
            _log_summary(connection_uid, counts, seconds)
        if counted and self._caches:  # a quiet process: no line
            _log_caches({name: stats() for name, stats in self._caches.items()}, seconds)

    def _flush_when_over(self) -> None:
        """So that the last window of a burst is logged without waiting for the next delivery
        (while the process lives; a process that ends loses at most one window)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not called from a coroutine: the next add() flushes
            return
        self._timer = loop.call_later(self.interval_seconds, self.flush)


def _log_summary(connection_uid: UUID, counts: _Counts, seconds: int) -> None:
    ordered = sorted(counts.elapsed)
    failed = sum(counts.failed.values())
    fields: dict[str, object] = {
        "ConnectionUid": str(connection_uid),
        "Deliveries": len(ordered),
        "Succeeded": len(ordered) - failed,
        "Failed": failed,
        **{f"Failed{category}": n for category, n in sorted(counts.failed.items())},
        "ElapsedMillisecondsP50": percentile(ordered, 0.50),
        "ElapsedMillisecondsP95": percentile(ordered, 0.95),
        "ElapsedMillisecondsMax": ordered[-1],
        "IntervalSeconds": seconds,
    }
    log.info(
        "deliveries to connection %s over %d s: %d succeeded, %d failed; p50 %d ms, p95 %d ms",
        connection_uid,
        seconds,
        fields["Succeeded"],
        failed,
        fields["ElapsedMillisecondsP50"],
        fields["ElapsedMillisecondsP95"],
        extra=fields,
    )


def _log_caches(caches: dict[str, dict[str, int]], seconds: int) -> None:
    """One line for every cache: `Cache<Name><Count>` fields (counts only, never a key), and
    `Cache<Name>HitRate` when it was asked anything."""
    fields: dict[str, object] = {"Caches": ",".join(caches), "IntervalSeconds": seconds}
    said = []
    for name, stats in caches.items():
        prefix = f"Cache{_pascal(name)}"
        fields.update({f"{prefix}{_pascal(k)}": v for k, v in stats.items()})
        asked = stats.get("hits", 0) + stats.get("misses", 0)
        rate = f"{stats.get('hits', 0) / asked:.0%} hit" if asked else "unused"
        if asked:
            fields[f"{prefix}HitRate"] = round(stats.get("hits", 0) / asked, 4)
        said.append(f"{name} {stats.get('size')}/{stats.get('capacity')} {rate}")
    log.info("caches over %d s: %s", seconds, ", ".join(said), extra=fields)


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


# The process's one summary: the dispatcher's outcome path feeds it.
deliveries = DeliverySummary()
