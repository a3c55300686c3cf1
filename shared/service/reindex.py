"""`log reindex`: counters and failure copies for records written before the log kept them.

Records written since carry `Counted` (their writer's counter row counts them); older ones do
not. For each hour of a partition, newest first, the command counts the records without it
into a counter row of its own (`c_<hour>_reindex`, absolute values) and copies the failed ones
to the failure index. A run is idempotent (it writes the same rows again) and resumable: the
hour's counter row and the progress row (`r_reindex`: where the next hour starts) are written
in one transaction, so a run cut off continues at the first hour it did not finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.storage import transactions
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


async def reindex_partition(table: TableClient, partition: str) -> int:
    """Count one partition's uncounted records; how many this run counted."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        start = (await table.get_entity(partition, PROGRESS))["Next"]
    except ResourceNotFoundError:
        start = ""
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


async def reindex(services: Services, connection: UUID | None) -> tuple[int, int]:
    """Reindex one connection's partition, or every live one: (partitions, records counted)."""
    if connection is not None:
        partitions = [await services.connections.log_partition_of(connection)]
    else:
        partitions = await services.connections.all_log_partitions()
    counted = 0
    for partition in partitions:
        counted += await reindex_partition(services.messages.table, partition)
    return len(partitions), counted
