"""Filling a connection's log with a million records without holding them: a streaming loader.

The records are made in chunks as the writers ask for them and written with
`services.messages.add` (so with their counters, failure copies, delivery rows and search
index rows: what the app would have written), by several writers at once, each through its
own stretch of the log's time, one chunk at a time. Only what a benchmark's timed part needs
is kept (`LoadedLog`): a few records and RowKeys, and counts. Building all records first
would hold about 4 KB a record (4 GB at a million) in the benchmark's process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import Stopwatch
from shared.models.records import MessageStatus
from shared.services import Services
from shared.storage.connections import StoredConnection
from shared.storage.logrecords import LoggedMessage, row_key
from tests.factories import a_record

WRITERS = 8  # concurrent chains of transactions
RETRIES = 3  # of a chunk whose transaction got no answer
CHUNK = 500  # records a writer makes and writes at a time (in transactions of 100 operations)


@dataclass(frozen=True)
class LogShape:
    """`count` records from just before `newest` back over `span`, newest first (record i is
    sent `1 + i * span / count` seconds before `newest`), 1 in `failed_every` failed (i a
    multiple), each with its own Subject `orders/<i>`: as `tests.factories.log_records`."""

    count: int
    newest: datetime
    span: timedelta
    body: str
    event_key: str
    failed_every: int
    account: str

    def at(self, i: int) -> datetime:
        return self.newest - timedelta(seconds=1 + i * self.span.total_seconds() / self.count)

    def failed(self, i: int) -> bool:
        return i % self.failed_every == 0

    def record(self, connection: StoredConnection, i: int) -> LoggedMessage:
        status = MessageStatus.FAILED if self.failed(i) else MessageStatus.SUCCEEDED
        made = a_record(
            connection.uid, self.at(i), status, self.body, self.event_key, account=self.account
        )
        return dataclasses.replace(made, subject=f"orders/{i}")


@dataclass
class LoadedLog:
    """What a benchmark of the log needs once it is written: counts and a few records."""

    count: int
    newest: LoggedMessage  # record 0
    middle: LoggedMessage  # record count // 2
    first_failed: LoggedMessage  # the newest failed record
    failed: int
    recent: int  # records sent in the hour before the newest one's time
    hour_ago: datetime
    page_starts: dict[int, str] = field(default_factory=dict)  # page -> its first RowKey
    seconds: float = 0.0  # to write them all

    def page_start(self, page: int) -> str:
        return self.page_starts[page]


def azurite_rss_mb(pid: int) -> float:
    """Resident memory of a process (Azurite's), in MB (Linux /proc; 0 if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def load_log(
    services: Services,
    stored: StoredConnection,
    shape: LogShape,
    pages: tuple[int, ...] = (1, 50),
    page_size: int = 100,
    progress: int = 0,
    rss_of: int | None = None,
) -> LoadedLog:
    """Write `shape`'s records to the connection's log in chunks; what is kept of them. Every
    `progress` records (0: never) a line with the rate so far (and Azurite's RSS, `rss_of`)."""
    n = shape.count
    starts = {p: (p - 1) * page_size for p in pages if (p - 1) * page_size < n}
    hour_ago = shape.newest - timedelta(seconds=1) - timedelta(hours=1)
    kept: dict[int, LoggedMessage] = {}
    wanted = {0, n // 2, *starts.values()}
    counts = {"failed": 0, "recent": 0, "written": 0, "reported": 0}

    def chunks(first: int, end: int) -> Iterator[list[LoggedMessage]]:
        for start in range(first, end, CHUNK):
            chunk = []
            for i in range(start, min(start + CHUNK, end)):
                r = shape.record(stored, i)
                chunk.append(r)
                if i in wanted:
                    kept[i] = r
                counts["failed"] += shape.failed(i)
                counts["recent"] += r.message.request_timestamp > hour_ago
            yield chunk

    async def add(chunk: list[LoggedMessage]) -> None:
        """The chunk; when a transaction got no answer (Azurite, at a full core for minutes,
        resets a connection now and then), again with the records not in the table (a
        transaction writes all or nothing; those that did commit are counted already)."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        for attempt in range(RETRIES + 1):
            try:
                return await services.messages.add(stored.log_partition, chunk)
            except (ServiceRequestError, ServiceResponseError):
                if attempt == RETRIES:
                    raise
                print("    no answer from the table: its unwritten records again", flush=True)
                chunk = await unwritten(chunk)

    async def unwritten(chunk: list[LoggedMessage]) -> list[LoggedMessage]:
        keys = sorted(row_key(r.message.uid) for r in chunk)
        rows = services.messages.table.query_entities(
            "PartitionKey eq @pk and RowKey ge @first and RowKey le @last",
            parameters={"pk": stored.log_partition, "first": keys[0], "last": keys[-1]},
            select=["RowKey"],
        )
        written = {e["RowKey"] async for e in rows}
        return [r for r in chunk if row_key(r.message.uid) not in written]

    async def writer(first: int, end: int) -> None:
        for chunk in chunks(first, end):
            await add(chunk)
            counts["written"] += len(chunk)
            if progress and counts["written"] - counts["reported"] >= progress:
                counts["reported"] = counts["written"]
                rate = counts["written"] / (time.perf_counter() - started)
                rss = f", Azurite RSS {azurite_rss_mb(rss_of):,.0f} MB" if rss_of else ""
                print(f"    {counts['written']:,} written ({rate:,.0f}/s{rss})", flush=True)

    # Each writer a stretch of time of its own, as the dispatcher writes a partition one
    # transaction at a time in each process: so an hour has one counter row, not one for each
    # writer that took a chunk of it.
    share = -(-n // WRITERS)
    started = time.perf_counter()
    with Stopwatch() as watch:
        await asyncio.gather(*(writer(i, min(i + share, n)) for i in range(0, n, share)))
    return LoadedLog(
        count=n,
        newest=kept[0],
        middle=kept[n // 2],
        first_failed=kept[0],  # record 0 is failed: 0 is a multiple of failed_every
        failed=counts["failed"],
        recent=counts["recent"],
        hour_ago=hour_ago,
        page_starts={p: row_key(kept[i].message.uid) for p, i in starts.items()},
        seconds=watch.seconds,
    )
