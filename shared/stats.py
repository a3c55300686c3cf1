"""Delivery stats of a connection: per hour, from the log's counters (never from its records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.errors import InvalidField
from shared.models import DeliveryStats, HourStats, StatsQuery
from shared.storage.logcounts import HOUR_MS, HourCounts, hour_of, millis, percentile, utc_hour

if TYPE_CHECKING:
    from shared.storage.messages import MessageLog

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=14)
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)  # what the log's keys can hold, with a day spare
LATEST = datetime(2286, 1, 1, tzinfo=UTC)


def window(query: StatsQuery, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) of a stats request: the last 24 hours unless it says, at most 14 days."""
    until = query.until or now
    since = query.since or until - DEFAULT_WINDOW
    for name, at in (("Since", since), ("Until", until)):
        if not EARLIEST <= at <= LATEST:
            raise InvalidField(name, "must be between 1970 and 2286")
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
    log: MessageLog, partition: str, query: StatsQuery, now: datetime
) -> DeliveryStats:
    """Every hour from the one holding `since` to the one before `until`, oldest first; an
    hour without deliveries has zero counts and no latency."""
    since, until = window(query, now)
    counted = await log.hourly(partition, since, until)
    first, last = hour_of(millis(since)), hour_of(millis(until) - 1)
    return DeliveryStats(
        hours=[
            hour_stats(h, counted.get(h) or HourCounts()) for h in range(first, last + 1, HOUR_MS)
        ]
    )
