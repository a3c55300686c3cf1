"""Delivery stats of a connection: per hour, from the log's counters (never from its records)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.errors import InvalidField
from shared.models.records import DeliveryStats, HourStats, StatsQuery
from shared.storage.logcounts import HOUR_MS, HourCounts, hour_of, millis, percentile, utc_hour

if TYPE_CHECKING:
    from shared.storage.messages import MessageLog

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=14)
CLOCK_GRACE = timedelta(days=1)  # clients' clocks differ from ours


def check_times(now: datetime, retention_days: int, **times: datetime | None) -> None:
    """A query's date-times (by their API names) lie within the retention, with a day of
    grace for clocks, and at most a day ahead: before it the log holds nothing, and far
    dates break the arithmetic of the log's keys. InvalidField (a 400) naming the first
    that does not."""
    earliest = now - timedelta(days=retention_days) - CLOCK_GRACE
    for name, at in times.items():
        if at is not None and not earliest <= at <= now + CLOCK_GRACE:
            raise InvalidField(
                name, f"must be within the last {retention_days} days (and at most a day ahead)"
            )


def window(query: StatsQuery, now: datetime, retention_days: int) -> tuple[datetime, datetime]:
    """[since, until) of a stats request: the last 24 hours unless it says, at most 14 days."""
    check_times(now, retention_days, Since=query.since, Until=query.until)
    until = query.until or now
    since = query.since or until - DEFAULT_WINDOW
    check_times(now, retention_days, Since=since)
    if since >= until:
        raise InvalidField("Since", "must be before Until")
    if until - since > MAX_WINDOW:
        raise InvalidField("Since", "the window from Since to Until is at most 14 days")
    return since, until


def hour_stats(hour: int, counts: HourCounts) -> HourStats:
    return HourStats(
        hour=utc_hour(hour),
        succeeded=counts.total - counts.failed,
        failed=counts.failed,
        latency_ms_p50=percentile(counts.latency, 50),
        latency_ms_p95=percentile(counts.latency, 95),
    )


async def delivery_stats(
    log: MessageLog, partition: str, query: StatsQuery, now: datetime, retention_days: int = 14
) -> DeliveryStats:
    """Every hour from the one holding `since` to the one before `until`, oldest first; an
    hour without deliveries has zero counts and no latency."""
    since, until = window(query, now, retention_days)
    counted = await log.hourly(partition, since, until)
    first, last = hour_of(millis(since)), hour_of(millis(until) - 1)
    return DeliveryStats(
        hours=[
            hour_stats(h, counted.get(h) or HourCounts()) for h in range(first, last + 1, HOUR_MS)
        ]
    )
