"""The message log's counters and failure index against Azurite: TotalHits, page N, onlyFailed
and the stats always agree with a brute-force read of the records, whatever writes, fails,
retries or purges in between. Time is given (records carry their own times; `now` is passed)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from shared.models.records import MessageQuery, MessageStatus, StatsQuery
from shared.service.reindex import PROGRESS, reindex_partition
from shared.service.stats import delivery_stats
from shared.services import Services
from shared.storage import transactions
from shared.storage.logcounts import (
    OFFSETS_KEPT,
    CounterSlots,
    HourCounts,
    bucket,
    hour_of_counter,
    logged_at,
    millis,
    percentile,
)
from shared.storage.logrecords import LoggedMessage
from shared.storage.messages import MessageLog
from tests.factories import a_connection, a_record
from tests.plugins.localhost import ROOT

HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # on an hour

FAILED, SUCCEEDED = MessageStatus.FAILED, MessageStatus.SUCCEEDED


def new_log(services: Services, **options: Any) -> MessageLog:
    """Another writer (as another process would be) over the same table."""
    return MessageLog(services.messages.table, services.messages.bodies, **options)


async def records_in(log: MessageLog, partition: str) -> list[dict[str, Any]]:
    """Every record of the partition, read directly (the truth the counters must match)."""
    rows = log.table.query_entities(
        "PartitionKey eq @pk and RowKey lt ':'", parameters={"pk": partition}
    )
    return [dict(e) async for e in rows]


def expected(
    rows: list[dict[str, Any]],
    since: datetime | None = None,
    until: datetime | None = None,
    only_failed: bool = False,
) -> list[str]:
    """Uids (hex) a listing should give, newest first."""
    keep = [
        r
        for r in rows
        if (since is None or logged_at(r) > millis(since))
        and (until is None or logged_at(r) <= millis(until))
        and (not only_failed or r["Status"] == 2)
    ]
    return [r["RowKey"][-32:] for r in sorted(keep, key=lambda r: r["RowKey"])]


async def lists_as_read(
    log: MessageLog, partition: str, rows: list[Any], now: datetime | None = None, **query: Any
) -> None:
    """Page 1 (500) of the listing and its TotalHits are what the records say. With `now`
    (after the newest record), a window of a few hours reads its counter rows' offsets in
    the same query as the rows, instead of reading the rows of the cut hours again."""
    page = await log.page(partition, MessageQuery(page_size=500, **query), now=now)
    truth = expected(rows, **query)
    assert page.total_hits == len(truth), query
    assert [m.uid.hex for m in page.messages] == truth[:500], query


def spread(uid: uuid.UUID, n: int, start: datetime, span: timedelta, failed_every: int = 7):
    rng = random.Random(n)
    times = sorted(start + span * rng.random() for _ in range(n))
    return [
        a_record(uid, at, status=FAILED if i % failed_every == 0 else SUCCEEDED)
        for i, at in enumerate(times)
    ]


async def test_total_hits_with_concurrent_writers(services: Services) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    records = spread(uid, 900, T0 - 2 * HOUR, 3 * HOUR)
    writers = [new_log(services) for _ in range(3)]
    # three processes, each writing from several tasks at once, batches interleaved in time
    batches = [records[i::9] for i in range(9)]
    await asyncio.gather(*(writers[i % 3].add(partition, batch) for i, batch in enumerate(batches)))

    rows = await records_in(writers[0], partition)
    assert len(rows) == 900
    for since in [None, T0 - 2 * HOUR, T0 - HOUR + 17 * MS, T0, T0 + 30 * timedelta(minutes=1)]:
        await lists_as_read(writers[1], partition, rows, since=since)
    counters = [
        e["RowKey"]
        async for e in writers[0].table.query_entities(
            "PartitionKey eq @pk and RowKey ge 'c_' and RowKey lt 'c`'",
            parameters={"pk": partition},
        )
    ]
    assert len({k.rsplit("_", 1)[1] for k in counters}) >= 3  # each writer its own rows


async def test_since_and_until_at_and_between_hour_and_minute_boundaries(
    services: Services,
) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    minute = timedelta(minutes=1)
    edges = [T0 - HOUR, T0 - MS, T0, T0 + MS, T0 + minute - MS, T0 + minute, T0 + 30 * minute]
    edges += [T0 + HOUR - MS, T0 + HOUR, T0 + HOUR + 59 * minute + 59_999 * MS]
    records = [
        a_record(uid, at, status=FAILED if i % 2 == 0 else SUCCEEDED) for i, at in enumerate(edges)
    ]
    records += [a_record(uid, at + 7 * MS) for at in edges]  # a few in the same minutes
    await services.messages.add(partition, records)
    rows = await records_in(services.messages, partition)

    bounds = sorted({b + d for b in edges for d in (-MS, timedelta(0), MS)})
    for now in (None, edges[-1]):  # with `now`, a `since` within three hours reads at once
        for since in [None, *bounds]:
            for failed in (False, True):
                await lists_as_read(
                    services.messages, partition, rows, now, since=since, only_failed=failed
                )
    for since, until in [(T0 - MS, T0), (T0, T0 + HOUR), (T0 - HOUR, T0 + minute - MS)]:
        await lists_as_read(services.messages, partition, rows, since=since, until=until)


@pytest.mark.parametrize("size", [7, 100])
async def test_page_n_matches_a_brute_force_listing(services: Services, size: int) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    await services.messages.add(partition, spread(uid, 1000, T0 - 3 * HOUR, 3 * HOUR))
    rows = await records_in(services.messages, partition)
    since, until = T0 - 2 * HOUR - 17 * MS, T0 - HOUR + 123 * MS
    queries: list[dict[str, Any]] = [{}, {"only_failed": True}, {"since": since, "until": until}]
    for query in queries:
        truth = expected(rows, **query)
        pages = -(-len(truth) // size)
        numbers = range(1, pages + 2) if size == 100 else [1, 2, pages // 2, pages, pages + 1]
        for n in numbers:
            page = await services.messages.page(
                partition, MessageQuery(page=n, page_size=size, **query)
            )
            assert page.total_hits == len(truth)
            assert [m.uid.hex for m in page.messages] == truth[(n - 1) * size : n * size], n


async def test_page_n_inside_a_busy_minute(services: Services) -> None:
    # more rows before the page than it reads and drops: their keys are read first
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    await services.messages.add(partition, spread(uid, 400, T0, timedelta(seconds=30)))
    truth = expected(await records_in(services.messages, partition))
    for n in [1, 2, 15, 16, 40, 57, 58]:
        page = await services.messages.page(partition, MessageQuery(page=n, page_size=7))
        assert page.total_hits == 400
        assert [m.uid.hex for m in page.messages] == truth[(n - 1) * 7 : n * 7], n


async def test_a_cut_minute_without_offsets_in_its_counters_is_counted_from_its_records(
    services: Services,
) -> None:
    # a minute busier than the offsets a counter row keeps, and a minute whose counter row
    # was written before rows kept offsets: `since` and `until` cutting them stay exact
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    busy = spread(uid, OFFSETS_KEPT + 40, T0, timedelta(seconds=50))
    quiet = spread(uid, 30, T0 - HOUR, HOUR / 2)
    await services.messages.add(partition, [*busy, *quiet])
    table = services.messages.table
    async for row in table.query_entities(
        "PartitionKey eq @pk and RowKey ge 'c_' and RowKey lt 'c`'", parameters={"pk": partition}
    ):
        if hour_of_counter(row["RowKey"]) < millis(T0):
            older = {k: v for k, v in row.items() if k not in ("Offsets", "FailedOffsets")}
            await table.upsert_entity(older, mode=UpdateMode.REPLACE)
    rows = await records_in(services.messages, partition)
    for at in [r.message.request_timestamp for r in [busy[50], busy[-1], quiet[7], quiet[8]]]:
        for edge in (at - MS, at, at + MS):
            for now in (None, T0 + HOUR):
                await lists_as_read(services.messages, partition, rows, now, since=edge)
            await lists_as_read(services.messages, partition, rows, until=edge, only_failed=True)


def test_offsets_are_kept_to_the_millisecond_up_to_a_number_a_minute() -> None:
    counts = HourCounts()
    for at in [T0, T0 + MS, T0 + 59_999 * MS, T0 + 61_000 * MS]:
        counts.count(millis(at), False, 1)
    back = HourCounts.of(counts.properties()).plus(HourCounts())
    assert back.minutes.known(0) == [0, 1, 59_999] and back.minutes.known(1) == [1_000]
    for _ in range(OFFSETS_KEPT):
        counts.count(millis(T0 + 120_000 * MS), True, 1)
    back = HourCounts.of(counts.properties())
    assert back.minutes.counts[2] == OFFSETS_KEPT and back.minutes.known(2) == [0] * OFFSETS_KEPT
    counts.count(millis(T0 + 120_000 * MS), True, 1)
    back = HourCounts.of(counts.properties())
    assert back.minutes.known(2) is None and back.failed_minutes.known(2) is None
    assert back.minutes.known(0) == [0, 1, 59_999]


class Failing:
    """A transaction sender that fails the n-th transaction: before sending (the service never
    saw it) or after (it committed and the answer was lost). The storage stays real; only the
    failure of the network is made up, since nothing here can cut a connection at will."""

    def __init__(self, nth: int, after_sending: bool) -> None:
        self.nth, self.after_sending, self.calls = nth, after_sending, 0

    async def __call__(self, table: Any, operations: Sequence[transactions.Operation]) -> None:
        self.calls += 1
        if self.calls == self.nth and not self.after_sending:
            raise ConnectionError("made up: no answer")
        await transactions.submit_one(table, operations)
        if self.calls == self.nth:
            raise ConnectionError("made up: committed, answer lost")


async def check_counts(log: MessageLog, partition: str) -> None:
    rows = await records_in(log, partition)
    await lists_as_read(log, partition, rows)
    await lists_as_read(log, partition, rows, only_failed=True)


@pytest.mark.parametrize("after_sending", [False, True])
async def test_a_crash_between_transactions_and_a_restart(
    services: Services, after_sending: bool
) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    crashing = new_log(services, submit=Failing(2, after_sending))
    with pytest.raises(ConnectionError):
        await crashing.add(partition, spread(uid, 250, T0, HOUR / 2))  # three transactions
    written = len(await records_in(crashing, partition))
    assert 0 < written < 250  # one transaction (two when the lost answer was a commit)
    await check_counts(crashing, partition)  # what committed is counted, nothing else
    # the process is gone; a new one (a new writer) delivers again: new records, same hours
    await new_log(services).add(partition, spread(uid, 250, T0, HOUR / 2))
    await check_counts(services.messages, partition)
    assert len(await records_in(services.messages, partition)) == written + 250


@pytest.mark.parametrize("after_sending", [False, True])
async def test_a_retry_after_a_later_transaction_without_an_answer_counts_once(
    services: Services, after_sending: bool
) -> None:
    """The first transaction of a write commits, the second gets no answer: the caller hears
    only of the failure, and writes the same records again."""
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    records = spread(uid, 120, T0, HOUR / 4)  # more than one transaction
    log = new_log(services, submit=Failing(2, after_sending))
    with pytest.raises(ConnectionError):
        await log.add(partition, records)
    await log.add(partition, records)  # the retry
    await check_counts(log, partition)
    assert len(await records_in(log, partition)) == 120


@pytest.mark.parametrize("after_sending", [False, True])
async def test_retries_and_writes_after_an_unknown_outcome_count_once(
    services: Services, after_sending: bool
) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    first, second = spread(uid, 60, T0, HOUR / 4), spread(uid, 61, T0 + HOUR / 4, HOUR)
    third = spread(uid, 62, T0, HOUR / 4)
    log = new_log(services, submit=Failing(1, after_sending))
    with pytest.raises(ConnectionError):
        await log.add(partition, first)
    # other writes of the same process first, from two tasks: the writer must not guess
    await asyncio.gather(log.add(partition, second[:30]), log.add(partition, second[30:]))
    await check_counts(log, partition)
    await asyncio.gather(log.add(partition, first), log.add(partition, third))  # the retry
    await check_counts(log, partition)
    assert len(await records_in(log, partition)) == 60 + 61 + 62


async def test_stats_equal_the_counts_of_the_records(services: Services) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    rng = random.Random(3)
    records = [
        a_record(
            uid,
            T0 - 5 * HOUR + timedelta(seconds=rng.randrange(5 * 3600)),
            FAILED if rng.random() < 0.2 else SUCCEEDED,
            latency_ms=rng.choice([2, 40, 900, 31_000, 4_000_000]),
        )
        for _ in range(400)
    ]
    await asyncio.gather(*(new_log(services).add(partition, records[i::2]) for i in range(2)))

    stats = await delivery_stats(
        services.messages, partition, StatsQuery(since=T0 - 6 * HOUR), now=T0 + HOUR / 2
    )
    assert [h.hour for h in stats.hours] == [T0 - 6 * HOUR + i * HOUR for i in range(7)]
    for h in stats.hours:
        mine = [r.message for r in records if h.hour <= r.message.request_timestamp < h.hour + HOUR]
        assert h.failed == sum(m.status == 2 for m in mine)
        assert h.succeeded == len(mine) - h.failed
        latencies = [
            (m.request_timestamp - m.event_timestamp).total_seconds() * 1000
            + m.elapsed_milliseconds
            for m in mine
        ]
        histogram = [0] * 28
        for latency in latencies:
            histogram[bucket(latency)] += 1
        assert (h.latency_ms_p50, h.latency_ms_p95) == (
            percentile(histogram, 50),
            percentile(histogram, 95),
        )
        if latencies:  # the figure bounds the true percentile within a factor of two
            true_p50 = sorted(latencies)[-(-len(latencies) // 2) - 1]
            assert h.latency_ms_p50 is not None and true_p50 <= h.latency_ms_p50 < 2 * true_p50


def test_latency_buckets_are_powers_of_two() -> None:
    assert [bucket(x) for x in (-5, 0, 1, 2, 3, 4, 5, 1024, 1025)] == [0, 0, 0, 1, 2, 2, 3, 10, 11]
    assert bucket(10**12) == 27
    assert percentile([0] * 28, 50) is None
    assert percentile([1, 0, 3] + [0] * 25, 50) == 4
    assert percentile([1, 0, 3] + [0] * 25, 25) == 1


async def add_legacy(log: MessageLog, partition: str, records: list[LoggedMessage]) -> None:
    """Records as the log wrote them before counters existed."""
    entities = [await log.entity(partition, r) for r in records]
    for e in entities:
        del e["Counted"]
    await transactions.submit(log.table, [("upsert", e) for e in entities])


async def test_reindex_counts_records_written_before_counters_once(
    services: Services, account: str, app_environment: dict[str, str]
) -> None:
    stored = await services.connections.add(account, a_connection(), T0 - 30 * timedelta(days=1))
    partition, uid = stored.log_partition, stored.uid
    log = services.messages
    await add_legacy(log, partition, spread(uid, 700, T0 - 5 * HOUR, 4 * HOUR, failed_every=5))
    await log.add(partition, spread(uid, 300, T0 - 2 * HOUR, 3 * HOUR))  # after the upgrade
    rows = await records_in(log, partition)
    assert (await log.page(partition, MessageQuery())).total_hits == 300  # the old ones unseen

    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.cli", "log", "reindex", "--connection", str(uid)],
        cwd=ROOT,
        env={**os.environ, **app_environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "700"
    await check_counts(log, partition)
    stats = await delivery_stats(log, partition, StatsQuery(since=T0 - 6 * HOUR), now=T0 + HOUR)
    assert sum(h.succeeded + h.failed for h in stats.hours) == len(rows)

    assert await reindex_partition(log.table, partition) == 0  # done: nothing more
    await log.table.delete_entity(partition, PROGRESS)  # from the start again: same rows
    assert await reindex_partition(log.table, partition) == 700
    await check_counts(log, partition)


async def test_large_failed_records_are_split_into_transactions_that_fit(
    services: Services,
) -> None:
    partition, uid = uuid.uuid4().hex, uuid.uuid4()
    body = 'é"' * 15_000  # 30,000 characters: 2 bytes each in UTF-8 or once JSON-escaped
    records = [
        replace(r, message=r.message.model_copy(update={"message_body": body}))
        for r in spread(uid, 60, T0, HOUR, failed_every=1)
    ]
    await services.messages.add(partition, records)  # 120 rows of about 90 KB, and counters
    await check_counts(services.messages, partition)
    page = await services.messages.page(partition, MessageQuery(only_failed=True, page_size=3))
    assert [m.message_body for m in page.messages] == [body] * 3


def test_idle_slots_are_forgotten_past_a_number_of_partitions() -> None:
    slots = CounterSlots("w")
    slots.MAX_PARTITIONS = 2
    a = slots.take("p1")
    slots.give_back("p1", a)
    slots.give_back("p2", slots.take("p2"))
    assert slots.take("p1") is a
    slots.give_back("p1", a)
    slots.give_back("p3", slots.take("p3"))  # a third partition: the idle ones are forgotten
    assert slots.take("p1") is not a
