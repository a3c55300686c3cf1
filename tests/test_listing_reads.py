"""A listing of the message log makes the same few storage requests whatever the log's size
(page 1, page 50, onlyFailed, since), against Azurite. The table client is the real one,
wrapped to count the requests it is asked for (a spy, not a stand-in): Azurite's own time per
query grows with its table (it scans it), so the count, not a timing, is what is ours."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.models.records import MessageQuery
from shared.services import Services
from shared.storage.logrecords import row_key
from shared.storage.messages import MessageLog
from tests.factories import log_records

NOW = datetime(2026, 11, 26, 10, 0, 7, tzinfo=UTC)


class CountingTable:
    """The table client, counting the calls that reach storage by method."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: Counter[str] = Counter()

    def query_entities(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["query_entities"] += 1
        return self._table.query_entities(*args, **kwargs)

    async def get_entity(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["get_entity"] += 1
        return await self._table.get_entity(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


LISTINGS: dict[str, dict[str, Any]] = {
    "page 1": {},
    "page 50": {"page": 50},
    "onlyFailed": {"only_failed": True},
    "since": {"since": NOW - timedelta(hours=1, milliseconds=1234)},  # cuts a minute
    "since 5 h": {"since": NOW - timedelta(hours=5, milliseconds=1234)},
    "onlyFailed, all on page 1": {"only_failed": True, "since": NOW - timedelta(hours=2)},
}


KEPT_FROM = NOW - timedelta(days=1, minutes=NOW.minute, seconds=NOW.second)  # an hour's start


async def requests_of(services: Services, records: int) -> dict[str, Counter[str]]:
    partition = uuid.uuid4().hex
    made = log_records(uuid.uuid4(), records, NOW, timedelta(days=2), failed_every=10)
    await services.messages.add(partition, made)
    table = CountingTable(services.messages.table)
    log = MessageLog(table, services.messages.bodies)  # type: ignore[arg-type]
    before_all = KEPT_FROM - timedelta(days=1)
    found = {}
    for name, query in LISTINGS.items():
        table.calls.clear()
        page = await log.page(
            partition, MessageQuery(page_size=10, **query), None, before_all, now=NOW
        )
        assert page.messages and page.total_hits > 0, name
        found[name] = Counter(table.calls)
    return found


async def test_a_listing_makes_the_same_few_requests_at_any_size(services: Services) -> None:
    small, large = await requests_of(services, 500), await requests_of(services, 1500)
    assert small == large
    # the page and the counter rows; for `since`, the part of the minute it cuts is counted
    # from the offsets its hour's counter row holds: read with the counter rows when the
    # window reaches back three hours at most, else a point read of that row afterwards (one
    # writer here); failures that fit on page 1 are their own count (no counters read);
    # where the records begin is the retention's cutoff: no read of the purge's mark
    assert large == {
        "page 1": Counter(query_entities=2),
        "page 50": Counter(query_entities=2),
        "onlyFailed": Counter(query_entities=2),
        "since": Counter(query_entities=2),
        "since 5 h": Counter(query_entities=2, get_entity=1),
        "onlyFailed, all on page 1": Counter(query_entities=1),
    }


async def test_records_past_the_retention_cutoff_are_left_out_of_page_and_count(
    services: Services,
) -> None:
    # not purged yet (the purge runs hourly), they are older than where the retention begins
    partition = uuid.uuid4().hex
    made = log_records(uuid.uuid4(), 300, NOW, timedelta(days=2), failed_every=3)
    await services.messages.add(partition, made)
    listings: list[dict[str, Any]] = [
        {},
        {"only_failed": True},
        {"only_failed": True, "since": NOW - timedelta(hours=6)},  # all on page 1
        {"page": 2},
        {"since": KEPT_FROM - timedelta(hours=5, milliseconds=17)},
        {"until": KEPT_FROM + timedelta(hours=1, milliseconds=5), "page": 3},
    ]
    for query in listings:
        kept = [
            r.message
            for r in made  # newest first
            if r.message.request_timestamp >= KEPT_FROM
            and (not query.get("only_failed") or r.message.status == 2)
            and query.get("since", KEPT_FROM)
            < r.message.request_timestamp
            <= query.get("until", NOW)
        ]
        page = await services.messages.page(
            partition, MessageQuery(page_size=25, **query), None, KEPT_FROM
        )
        first = (query.get("page", 1) - 1) * 25
        assert page.total_hits == len(kept), query
        assert [m.uid for m in page.messages] == [m.uid for m in kept[first : first + 25]], query


class RangeRecordingTable(CountingTable):
    """Also keeps each range query's [start, end) (its RowKey parameters)."""

    def __init__(self, table: Any) -> None:
        super().__init__(table)
        self.ranges: list[tuple[str, str]] = []

    def query_entities(self, *args: Any, **kwargs: Any) -> Any:
        parameters = kwargs.get("parameters") or {}
        if "start" in parameters:
            self.ranges.append((parameters["start"], parameters["end"]))
        return super().query_entities(*args, **kwargs)


async def test_page_n_reads_no_further_than_the_counts_say_it_reaches(
    services: Services,
) -> None:
    """Azurite sorts every row in a query's range before it answers: page N's read ends
    where its last row lies by the counts, not at the window's end (a million rows). Rows
    the counts promise but the range lacks (here deleted behind the counters' back) are read
    on from there: the page stays whole."""
    partition = uuid.uuid4().hex
    made = log_records(uuid.uuid4(), 400, NOW, timedelta(days=2), failed_every=10)
    await services.messages.add(partition, made)
    table = RangeRecordingTable(services.messages.table)
    log = MessageLog(table, services.messages.bodies)  # type: ignore[arg-type]
    query = MessageQuery(page=3, page_size=20)
    page = await log.page(partition, query, None, NOW - timedelta(days=3))
    assert [m.uid for m in page.messages] == [r.message.uid for r in made[40:60]]
    start, end = table.ranges[-1]  # the page's read (the counters' is first)
    in_range = [r for r in made if start <= row_key(r.message.uid) < end]
    # its own rows, and at most the rest of the minutes it begins and ends in (a record
    # every 7 minutes here), not the 360 rows from its start to the window's end
    assert 20 <= len(in_range) <= 22

    for gone in made[40:45]:  # deleted without their counts: the counts now promise more
        await services.messages.table.delete_entity(partition, row_key(gone.message.uid))
    table.ranges.clear()
    page = await log.page(partition, query, None, NOW - timedelta(days=3))
    assert [m.uid for m in page.messages] == [r.message.uid for r in made[45:65]]
    assert len(table.ranges) == 3  # the counters, the bounded read, and the read on from it
