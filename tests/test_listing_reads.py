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
}


async def requests_of(services: Services, records: int) -> dict[str, Counter[str]]:
    partition = uuid.uuid4().hex
    made = log_records(uuid.uuid4(), records, NOW, timedelta(days=2), failed_every=10)
    await services.messages.add(partition, made)
    table = CountingTable(services.messages.table)
    log = MessageLog(table, services.messages.bodies)  # type: ignore[arg-type]
    found = {}
    for name, query in LISTINGS.items():
        table.calls.clear()
        page = await log.page(partition, MessageQuery(page_size=10, **query))
        assert page.messages and page.total_hits > 0, name
        found[name] = Counter(table.calls)
    return found


async def test_a_listing_makes_the_same_few_requests_at_any_size(services: Services) -> None:
    small, large = await requests_of(services, 500), await requests_of(services, 1500)
    assert small == large
    # the page and the counter rows (for `since`, the part of the minute it cuts is counted
    # from their offsets), and the purge's cutoff: a point read
    assert large == {name: Counter(query_entities=2, get_entity=1) for name in LISTINGS}
