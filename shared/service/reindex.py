"""`log reindex`: counters, failure copies and search index rows for records written before
the log kept them.

Records written since carry `Counted` (their writer's counter row counts them); older ones do
not. For each hour of a partition, newest first, the command counts the records without it
into a counter row of its own (`c_<hour>_reindex`, absolute values) and copies the failed ones
to the failure index. A run is idempotent (it writes the same rows again) and resumable: the
hour's counter row and the progress row (`r_reindex`: where the next hour starts) are written
in one transaction, so a run cut off continues at the first hour it did not finish.

Search index rows (shared/storage/logsearch.py) the same way: records written since carry
`Indexed`; for the others a second pass writes their index rows, packed as the writer packs a
transaction's (an hour's records of one value in rows of at most 100 spanning at most a
minute), then marks them `Indexed` with the suffixes of their rows (so the purge deletes
their rows with them), an hour at a time, with its own progress row (`r_index`): a log
counted by an earlier run is still indexed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.storage import logsearch, transactions
from shared.storage.logcounts import (
    FAILURE,
    RECORDS_END,
    HourCounts,
    count_records,
    counter_key,
    hour_of,
    inverted,
    logged_at,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.services import Services

PROGRESS = "r_reindex"
INDEX_PROGRESS = "r_index"
WRITER = "reindex"


async def _hours(table: TableClient, partition: str, start: str) -> AsyncIterator[list[Any]]:
    """The records from RowKey `start` on, an hour at a time, newest hour first."""
    rows = table.query_entities(
        "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
        parameters={"pk": partition, "start": start, "end": RECORDS_END},
        results_per_page=1000,
    )
    hour: list[Any] = []
    async for row in rows:
        if hour and hour_of(logged_at(row)) != hour_of(logged_at(hour[0])):
            yield hour
            hour = []
        hour.append(row)
    if hour:
        yield hour


async def _resume_from(table: TableClient, partition: str, progress_row: str) -> str:
    """Where a pass over a partition left off, by its progress row; "" when it never ran."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return str((await table.get_entity(partition, progress_row))["Next"])
    except ResourceNotFoundError:
        return ""


async def reindex_partition(table: TableClient, partition: str) -> int:
    """Count one partition's uncounted records; how many this run counted."""
    start = await _resume_from(table, partition, PROGRESS)
    counted = 0
    async for rows in _hours(table, partition, start):
        old = [dict(r) for r in rows if not r.get("Counted")]
        hour = hour_of(logged_at(rows[0]))
        copies = [{**r, "RowKey": FAILURE + r["RowKey"]} for r in old if r["Status"] == 2]
        await transactions.submit(table, [("upsert", c) for c in copies])
        counts = count_records(old, logged_at).get(hour, HourCounts())
        counter = {"PartitionKey": partition, "RowKey": counter_key(hour, WRITER)}
        progress = {"PartitionKey": partition, "RowKey": PROGRESS, "Next": inverted(hour - 1)}
        operations: list[transactions.Operation] = [("upsert", progress)]
        if counts.total:
            operations.append(("upsert", {**counter, **counts.properties()}))
        await transactions.submit_one(table, operations)
        counted += len(old)
    return counted


async def index_partition(table: TableClient, partition: str) -> int:
    """Write the search index rows of one partition's records that have none; how many."""
    start = await _resume_from(table, partition, INDEX_PROGRESS)
    indexed = 0
    async for rows in _hours(table, partition, start):
        old = [dict(r) for r in rows if not r.get("Indexed")]
        operations, packed = logsearch.packed(partition, old)
        # after the rows (transactions commit in order): `Indexed` means they exist
        operations += [
            (
                "merge",
                {"PartitionKey": partition, "RowKey": key, "Indexed": True, logsearch.PACKED: p},
            )
            for key, p in packed.items()
        ]
        indexed += len(old)
        hour = hour_of(logged_at(rows[0]))
        progress = {"PartitionKey": partition, "RowKey": INDEX_PROGRESS, "Next": inverted(hour - 1)}
        await transactions.submit(table, [*operations, ("upsert", progress)])
    return indexed


async def reindex(services: Services, connection: UUID | None) -> tuple[int, int, int]:
    """Reindex one connection's partition, or every live one: (partitions, records counted,
    records indexed for search)."""
    if connection is not None:
        partitions = [await services.connections.log_partition_of(connection)]
    else:
        partitions = await services.connections.all_log_partitions()
    counted = indexed = 0
    for partition in partitions:
        counted += await reindex_partition(services.messages.table, partition)
        indexed += await index_partition(services.messages.table, partition)
    return len(partitions), counted, indexed
