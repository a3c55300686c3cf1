"""API latency (p50, p99) at 1 and 16 concurrent clients, against the raw Table reads.

    python -m bench.bench_api [--quick] [--records N] [--requests N] [--only NAMES]

Starts Azurite and the app in `python -m local.host --no-triggers` (own process). One account
with one connection whose log holds 50,000 records (10,000 with --quick) over the 14 days of
retention less a day, 0.1% of them failed, written with `services.messages.add` (transactions
of 100 operations: counters, failure copies, delivery and index rows included) before the clock
starts, made and written in chunks by bench/logload.py (a million fit; it prints the rate
and Azurite's memory as it goes). `--only` times the figures whose name holds one of the
NAMES, separated by `|` (e.g. `GET messages, page|onlyFailed|since|GET connection`). Timed, over
HTTP (aiohttp, keep-alive, one request at a time per client):
- `GET /v1/azureservicebusconnections/{uid}` (1,000 requests a side and concurrency);
- `GET .../messages`: page 1 (100, newest first), page 50, `onlyFailed=true` page 1, and
  `since` = 1 hour before the newest record, each with TotalHits (checked).
- searches (each record has its own Subject, `orders/<n>`): `eventId=` and `messageId=` of one
  record's delivery, `subject=` of one record, and `eventKey=<prefix>.*&status=2` page 1 (the
  failed records), each with TotalHits (checked).
The raw baseline runs the Table work of the answer alone with the async SDK at the same
concurrency: a point read of the connection's entity; for a listing, the read of that page's
rows (a range query from the page's first RowKey, known beforehand; no count); for a search
of one record, a point read of that record's row (the bar of issue 26: within 2x of it; the
`eventId` search also called in this process, without HTTP, against the same), and
for `subject=`, served by a range, also the range read of its one index row; `eventId=` and
`messageId=` also with `includeBody=false`, and `eventId=` in process both ways (these by
point reads 20 times the requests of a listing, 200 at 1 client and 640 at 16, each client
alternating ours and raw so that other processes' load falls on both alike); for the
failed-records search, one range read of the same records' failure copies. Each pair
alternates which goes first.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bench.common import (
    EVENT_BODY,
    EVENT_KEY,
    CpuMeter,
    Result,
    Stopwatch,
    app_environment,
    app_settings,
    arguments,
    azurite,
    azurite_transport,
    local_host,
    machine,
    new_keys,
    percentile,
    report,
    unique,
)
from bench.logload import LoadedLog, LogShape, azurite_rss_mb, load_log
from shared.models.records import MessageQuery, RequestMetadata
from shared.service import messages
from shared.services import Services
from shared.storage import clients, logsearch
from shared.storage.connections import StoredConnection
from shared.storage.logcounts import FAILURE, RECORDS_END
from shared.storage.logrecords import LoggedMessage, row_key, row_key_bound
from shared.storage.transactions import MAX_OPERATIONS
from tests.factories import a_connection

PAGE_SIZE = 100  # the API's default
FEWEST_RECORDS = 50 * PAGE_SIZE  # page 50 is one of the figures
WRITERS = 8  # concurrent transaction chains while filling the log
CONCURRENCY = (1, 16)
# The log's records span the app's retention, as a busy connection's do, less this: a listing
# leaves out what is past the retention by the clock, and a million records take more than an
# hour to load here (a run that spanned the whole 14 days counted 997,623 of 1,000,000).
LOAD_MARGIN = timedelta(days=1)
FAILED_EVERY = 1000  # 0.1% failed


async def fill_log(
    services: Services, stored: StoredConnection, records: list[LoggedMessage]
) -> float:
    """Write the records to the connection's log; seconds taken."""
    n = len(records)
    share = -(-n // WRITERS // MAX_OPERATIONS) * MAX_OPERATIONS
    with Stopwatch() as watch:
        await asyncio.gather(
            *(
                services.messages.add(stored.log_partition, records[i : i + share])
                for i in range(0, n, share)
            )
        )
    return watch.seconds


async def latencies(
    call: Callable[[], Awaitable[None]], clients_: int, requests: int
) -> list[float]:
    """`requests` calls spread over `clients_` concurrent clients; each call's seconds."""
    samples: list[float] = []
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients_)))
    return samples


@dataclass
class Target:
    """What is timed: our endpoint over HTTP, and the raw Table work it stands for."""

    name: str
    ours: Callable[[], Awaitable[None]]
    raw: Callable[[], Awaitable[None]]
    requests: dict[int, int]  # by concurrency
    # each client alternates ours and raw, so a burst of another process's load falls on
    # both sides alike (for figures of a few milliseconds on a shared machine)
    interleaved: bool = False


async def interleaved(
    sides: dict[str, Callable[[], Awaitable[None]]], clients_: int, requests: int
) -> dict[str, list[float]]:
    """`requests` calls of each side spread over `clients_` concurrent clients, each client
    calling one side then the other (which first alternates); each call's seconds by side."""
    samples: dict[str, list[float]] = {side: [] for side in sides}
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            for side in sorted(sides, reverse=left % 2 == 0):
                start = time.perf_counter()
                await sides[side]()
                samples[side].append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients_)))
    return samples


def targets(
    services: Services,
    session: aiohttp.ClientSession,
    raw_connections: Any,
    raw_messages: Any,
    stored: StoredConnection,
    log: LoadedLog,
    requests: int,
    page_requests: dict[int, int],
) -> list[Target]:
    path = f"/v1/azureservicebusconnections/{stored.uid}"
    n_records = log.count

    async def get_connection() -> None:
        async with session.get(path) as response:
            body = await response.json()
            assert response.status == 200 and body["Uid"] == str(stored.uid), body

    async def raw_get_connection() -> None:
        await raw_connections.get_entity(stored.account, str(stored.uid))

    def listing(
        name: str, query: dict[str, str], first_key: str, total: int, end: str = RECORDS_END
    ) -> Target:
        """Our page over HTTP against reading the same rows from their first RowKey (to `end`,
        where the listing's range ends)."""
        expected = min(PAGE_SIZE, total - (int(query.get("page", 1)) - 1) * PAGE_SIZE)

        async def ours() -> None:
            async with session.get(path + "/messages", params=query) as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["TotalHits"] == total and len(body["Messages"]) == expected, body

        async def raw() -> None:
            rows = raw_messages.query_entities(
                "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
                parameters={"pk": stored.log_partition, "start": first_key, "end": end},
                results_per_page=PAGE_SIZE,
            )
            async for page in rows.by_page():
                assert len([e async for e in page]) == expected
                break

        return Target(f"GET messages, {name}, {n_records:,} records", ours, raw, page_requests)

    first_failed, hour_ago, middle = log.first_failed, log.hour_ago, log.middle

    # a search by point reads takes milliseconds: more samples for steadier percentiles
    point_requests = {c: n * 20 for c, n in page_requests.items()}

    def search(
        name: str, query: dict[str, str], raw: Callable[[], Awaitable[None]], point: bool = False
    ) -> Target:
        """A search that finds the middle record, against `raw`; `point`: one served by point
        reads (more requests, the sides interleaved)."""

        async def ours() -> None:
            async with session.get(path + "/messages", params=query) as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["TotalHits"] == 1, body
                assert body["Messages"][0]["Uid"] == str(middle.message.uid), body

        name = f"search {name}, {n_records:,} records"
        return Target(name, ours, raw, point_requests if point else page_requests, point)

    async def point_read() -> None:
        await raw_messages.get_entity(stored.log_partition, row_key(middle.message.uid))

    async def index_range() -> None:
        prefix = logsearch.value_prefix(logsearch.SUBJECT, middle.subject or "")
        rows = raw_messages.query_entities(
            "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
            parameters={"pk": stored.log_partition, "start": prefix, "end": prefix + RECORDS_END},
        )
        assert len([e async for e in rows]) == 1

    metadata = RequestMetadata.from_text(middle.message.request_metadata)
    assert metadata is not None
    by_subject = {"subject": middle.subject or ""}

    def without_http(include_body: bool) -> Callable[[], Awaitable[None]]:
        """The search's own work as the handler calls it: the connection (kept briefly, as
        the handler reads it), then the delivery's row (no HTTP, no auth)."""
        query = MessageQuery(event_id=middle.event_id, include_body=include_body)

        async def call() -> None:
            connection = await services.connections.recent(stored.account, stored.uid)
            page = await messages.list_messages(services, connection, query)
            assert page.total_hits == 1 and page.messages[0].uid == middle.message.uid

        return call

    no_body = {"includeBody": "false"}
    return [
        Target(f"search eventId in process (no HTTP); raw: point read, {n_records:,} records",
               without_http(True), point_read, point_requests, interleaved=True),
        Target("search eventId includeBody=false in process (no HTTP); raw: point read, "
               f"{n_records:,} records", without_http(False), point_read, point_requests,
               interleaved=True),
        search("eventId; raw: point read", {"eventId": middle.event_id}, point_read, True),
        search("eventId includeBody=false; raw: point read",
               {"eventId": middle.event_id, **no_body}, point_read, True),
        search("messageId; raw: point read", {"messageId": metadata.message_id}, point_read,
               True),
        search("messageId includeBody=false; raw: point read",
               {"messageId": metadata.message_id, **no_body}, point_read, True),
        search("subject; raw: point read", by_subject, point_read),
        search("subject; raw: range read of its index row", by_subject, index_range),
        listing("search eventKey=Prefix.* status=2 page 1; raw: the failure copies",
                {"eventKey": EVENT_KEY.split(".")[0] + ".*", "status": "2"},
                FAILURE + row_key(first_failed.message.uid), log.failed, FAILURE + RECORDS_END),
        Target("GET connection", get_connection, raw_get_connection,
               dict.fromkeys(CONCURRENCY, requests)),
        listing("page 1", {}, log.page_start(1), n_records),
        listing("page 50", {"page": "50"}, log.page_start(50), n_records),
        listing("onlyFailed page 1", {"onlyFailed": "true"},
                FAILURE + row_key(first_failed.message.uid), log.failed, FAILURE + RECORDS_END),
        listing("since 1 h ago", {"since": hour_ago.isoformat()},
                log.page_start(1), log.recent, row_key_bound(hour_ago)),
    ]  # fmt: skip


async def measure(
    quick: bool, n_records: int | None, requests: int | None, only: str | None = None
) -> list[Result]:
    n_records = n_records or (10_000 if quick else 50_000)
    # GET connection takes milliseconds: 1,000 requests even in quick mode, so that a p99 is
    # the tenth slowest, not the second (one stall decided it)
    requests = requests or 1_000
    page_requests = {1: 8, 16: 16} if quick else {1: 10, 16: 32}
    keys = new_keys()
    results: list[Result] = []
    # Azurite keeps about 8 KB a record in its heap (measured: 0.9 GB at 100,000 records), more
    # than Node's default heap limit holds at a million
    heap_mb = max(4096, n_records * 16 // 1024)
    os.environ["NODE_OPTIONS"] = f"--max-old-space-size={heap_mb}"
    with azurite() as started:
        from azure.data.tables.aio import TableClient

        storage = started.connection_string
        services = await Services.open(app_settings(storage, keys))
        account = unique("bench")
        now = datetime.now(UTC)
        key, _ = await services.api_keys.create(account, now)
        stored = await services.connections.add(account, a_connection(), now)
        # each its own Subject, so that a search by it finds one
        span = timedelta(days=services.settings.retention_days) - LOAD_MARGIN
        shape = LogShape(n_records, now, span, EVENT_BODY, EVENT_KEY, FAILED_EVERY, account)
        pid = started.process.pid
        with CpuMeter({"azurite": pid, "bench": os.getpid()}) as meter:  # which one bounds it
            log = await load_log(services, stored, shape, progress=max(n_records // 10, 10_000),
                                 rss_of=pid)  # fmt: skip
        print(f"  {n_records:,} records written in {log.seconds:.1f} s "
              f"({n_records / log.seconds:,.0f}/s), Azurite RSS {azurite_rss_mb(pid):,.0f} MB; "
              f"{meter.summary()}", flush=True)  # fmt: skip
        raw_connections = TableClient.from_connection_string(
            storage, clients.CONNECTIONS_TABLE, transport=azurite_transport()
        )
        raw_messages = TableClient.from_connection_string(
            storage, clients.MESSAGES_TABLE, transport=azurite_transport()
        )
        try:
            with local_host(app_environment(storage, keys), "--no-triggers") as host:
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(
                    host.url, connector=connector, headers={"Authorization": key}
                ) as session:
                    for target in targets(services, session, raw_connections, raw_messages, stored,
                                          log, requests, page_requests):  # fmt: skip
                        if only and not any(part in target.name for part in only.split("|")):
                            continue
                        for turn, c in enumerate(CONCURRENCY):
                            pids = {"azurite": started.process.pid, "host": host.process.pid,
                                    "bench": os.getpid()}  # fmt: skip
                            results += await compare(target, c, target.requests[c], turn, pids)
        finally:
            await raw_connections.close()
            await raw_messages.close()
            await services.close()
    return results


async def compare(
    target: Target, concurrency: int, requests: int, turn: int, pids: dict[str, int]
) -> list[Result]:
    """Both sides at one concurrency (warmed up first); p50 and p99 of each."""
    for call in (target.ours, target.raw):
        await latencies(call, concurrency, concurrency)  # connections open, caches warm
    sides = {"ours": target.ours, "raw": target.raw}
    order = ["raw", "ours"] if turn % 2 == 0 else ["ours", "raw"]
    samples: dict[str, list[float]] = {}
    cpu: dict[str, str] = {}
    if target.interleaved:
        with CpuMeter(pids) as meter:
            samples = await interleaved(sides, concurrency, requests)
        cpu = {side: f"{side}: {meter.summary()} (both sides, interleaved)" for side in sides}
    for side in order if not target.interleaved else ():
        with CpuMeter(pids) as meter:
            samples[side] = await latencies(sides[side], concurrency, requests)
        cpu[side] = f"{side}: {meter.summary()}"
    name = f"{target.name}, {concurrency} client{'s' if concurrency > 1 else ''}"
    print(f"  {name}: {requests} requests each", flush=True)
    return [
        Result(
            "api",
            f"{name}, p{p}",
            percentile(samples["ours"], p) * 1000,
            "ms",
            raw=percentile(samples["raw"], p) * 1000,
            higher_is_better=False,
            note="" if p == 99 else f"{cpu['ours']}\n      {cpu['raw']}",
            extra={"requests": requests},
        )
        for p in (50, 99)
    ]


def main() -> None:
    args = arguments(
        __doc__,
        records=(int, "records in the connection's log (default 10,000 quick, 50,000 full)"),
        requests=(int, "GET connection requests per concurrency (default 1,000)"),
        only=(str, "time only the figures whose name holds one of these, separated by |"),
    )
    if args.records is not None and args.records < FEWEST_RECORDS:
        raise SystemExit(f"--records: at least {FEWEST_RECORDS:,} (page 50 is timed)")
    print(f"api: {machine()}", flush=True)
    report(asyncio.run(measure(args.quick, args.records, args.requests, args.only)))


if __name__ == "__main__":
    main()
