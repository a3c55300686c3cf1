"""The benchmarks' streaming loader (bench/logload.py) against Azurite: it writes what
`log_records` and `services.messages.add` would (the same records, with their counters and
failure copies), and what it keeps for the timed part is what a read of the log says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bench import logload
from bench.logload import LogShape, load_log
from shared.models.records import MessageQuery
from shared.services import Services
from shared.storage.logrecords import row_key
from tests.factories import a_connection, log_records

NOW = datetime(2026, 11, 26, 10, 0, 7, tzinfo=UTC)


def a_shape(count: int) -> LogShape:
    return LogShape(count, NOW, timedelta(hours=5), "{}", "Order.Shipped", 7, "acme")


def test_the_shape_gives_the_records_log_records_gives() -> None:
    shape = a_shape(50)
    made = log_records(uuid.uuid4(), 50, NOW, shape.span, shape.body, shape.event_key, 7, "acme")
    assert [shape.at(i) for i in range(50)] == [r.message.request_timestamp for r in made]
    assert [shape.failed(i) for i in range(50)] == [r.message.status == 2 for r in made]


async def test_what_the_loader_keeps_is_what_the_log_says(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logload, "CHUNK", 5)  # many chunks, written by several writers
    stored = await services.connections.add("acme", a_connection(), NOW)
    shape = a_shape(250)
    loaded = await load_log(services, stored, shape, pages=(1, 5), page_size=20)

    partition = stored.log_partition
    page = await services.messages.page(partition, MessageQuery(page_size=500))
    assert page.total_hits == 250 and loaded.count == 250
    keys = [row_key(m.uid) for m in page.messages]  # newest first
    assert loaded.page_starts == {1: keys[0], 5: keys[80]}
    assert row_key(loaded.newest.message.uid) == keys[0]
    assert row_key(loaded.middle.message.uid) == keys[125]
    assert loaded.middle.subject == "orders/125"

    failed = await services.messages.page(partition, MessageQuery(page_size=500, only_failed=True))
    assert failed.total_hits == loaded.failed == 36  # 0, 7, ..., 245
    assert failed.messages[0].uid == loaded.first_failed.message.uid
    recent = await services.messages.page(
        partition, MessageQuery(page_size=500, since=loaded.hour_ago)
    )
    assert recent.total_hits == loaded.recent == 50  # 5 hours over 250 records

    # each writer its own stretch of time, as one dispatcher process writes a partition: an
    # hour has one counter row, and a second only where two writers' stretches meet
    counters = services.messages.table.query_entities(
        "PartitionKey eq @pk and RowKey ge 'c_' and RowKey lt 'c`'", parameters={"pk": partition}
    )
    hours = [row["RowKey"][2:15] async for row in counters]
    assert len(hours) <= len(set(hours)) + logload.WRITERS - 1
