"""Reads and deletes of the retention purge (shared/service/retention.py): what is older than
a cutoff, in each of the log's RowKey ranges (the layout: shared/storage/messages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from shared.storage import deliveries, loglisting, logsearch, transactions
from shared.storage.logcounts import (
    COUNTER,
    FAILURE,
    HOUR_MS,
    PURGED,
    RECORDS_END,
    inverted,
    millis,
)
from shared.storage.logrecords import LogRows, row_key_bound


class LogRetention(LogRows):
    async def old_records(
        self, partition: str, before: datetime | None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The first `limit` records older than `before` (all records when None): their RowKey,
        BodyBlob, and `Delivery`: the RowKey of the delivery row the record made, if it made
        one (it goes with the record: every attempt it had is at least as old, or gone soon);
        and `Index`: its search index rows that list no record newer than `before` (a packed
        row goes with the newest record it lists: shared/storage/logsearch.py).
        Old records are at the end of the records' range, so this is one RowKey range; the
        purge deletes what it gets and asks again, so it never holds a continuation."""
        bound = row_key_bound(before) if before is not None else ""
        select = ["RowKey", "BodyBlob", "OpensDelivery", "Delivery", "RequestMetadata", "Status"]
        select += ["Indexed", logsearch.PACKED, "EventKey", "Subject"]
        rows = await self._first_rows(partition, bound, RECORDS_END, select, limit)
        return [
            {
                "RowKey": e["RowKey"],
                "BodyBlob": e.get("BodyBlob"),
                "Delivery": deliveries.delivery_key(deliveries.status_of(e).message_id)
                if e.get("OpensDelivery")
                else None,
                "Index": logsearch.index_keys(e, bound) if e.get("Indexed") else [],
            }
            for e in rows
        ]

    async def old_undelivered(
        self, partition: str, before: datetime | None, limit: int = 1000
    ) -> list[str]:
        """RowKeys of the first `limit` `u_` rows of deliveries first attempted before `before`
        (all when None)."""
        start, end = deliveries.undelivered_range(None, None)
        if before is not None:
            end = deliveries.undelivered_range(None, millis(before) - 1)[1]
        return [
            e["RowKey"] for e in await self._first_rows(partition, start, end, ["RowKey"], limit)
        ]

    async def old_failure_copies(
        self, partition: str, before: datetime | None, limit: int = 1000
    ) -> list[str]:
        """RowKeys of the first `limit` failure copies of records older than `before` (all
        when None)."""
        bound = row_key_bound(before) if before is not None else ""
        end = FAILURE + RECORDS_END
        return [
            e["RowKey"]
            for e in await self._first_rows(partition, FAILURE + bound, end, ["RowKey"], limit)
        ]

    async def old_counters(
        self, partition: str, before: datetime | None, limit: int = 1000
    ) -> list[str]:
        """RowKeys of the first `limit` counter rows of hours that ended by `before`; when None,
        every row that is neither a record nor a failure copy (counters, reindex progress)."""
        if before is None:
            start, end = RECORDS_END, "~"  # every prefix of the layout is below '~'
        else:
            start, end = COUNTER + inverted(millis(before) - HOUR_MS), COUNTER + RECORDS_END
        return [
            e["RowKey"] for e in await self._first_rows(partition, start, end, ["RowKey"], limit)
        ]

    async def anything_older(self, partition: str, before: datetime) -> bool:
        """Whether the partition holds a record or counter row older than `before`."""
        counters, records = await asyncio.gather(
            self.old_counters(partition, before, limit=1),
            self.old_records(partition, before, limit=1),
        )
        return bool(counters or records)

    async def mark_purged(self, partition: str, before: datetime) -> None:
        """Say that everything older than `before` is going (never lowering what was said):
        from now on readers ignore it, so counts stay true while it is deleted."""
        floor = await loglisting.purged_before(self._table, partition)
        if floor is None or floor < millis(before):
            entity = {"PartitionKey": partition, "RowKey": PURGED, "Before": before}
            await self._table.upsert_entity(entity)

    async def delete_records(self, partition: str, row_keys: Sequence[str]) -> int:
        """Delete up to 100 records of one partition in one transaction; returns how many this
        call removed. When another purge removed some first, the transaction fails as a whole,
        so the rest go one by one and the missing ones are skipped."""
        if len(row_keys) > 1:
            keys = [{"PartitionKey": partition, "RowKey": k} for k in row_keys]
            try:
                await transactions.submit(self._table, [("delete", k) for k in keys])
                return len(keys)
            except transactions.TransactionError as e:
                if e.code != "ResourceNotFound":
                    raise

        # delete_entity takes a missing entity for success; the status of its response says
        # who removed what when two purges meet. (Plain deletes, not one-entity transactions:
        # more than twice as fast on Azurite.)
        status: dict[str, int] = {}
        gate = asyncio.Semaphore(16)

        async def delete_one(key: str) -> None:
            def record(response: Any) -> None:
                status[key] = response.http_response.status_code

            async with gate:
                await self._table.delete_entity(partition, key, raw_response_hook=record)

        await asyncio.gather(*(delete_one(k) for k in row_keys))
        return sum(1 for code in status.values() if code == 204)

    async def bodies_of(self, partition: str) -> list[str]:
        """Names of every body stored for a partition (`_to_entity` names them `partition/key`)."""
        names = self.bodies.list_blob_names(name_starts_with=f"{partition}/")
        return [name async for name in names]

    async def old_bodies(self, before: datetime) -> list[str]:
        """Names of stored bodies of records older than `before`, in any partition: a name ends
        with its record's RowKey, which carries the time. Other blobs of the container (event
        payloads) do not have that shape and are left alone."""
        bound = row_key_bound(before)
        old = []
        async for name in self.bodies.list_blob_names():
            _, _, key = name.partition("/")
            is_row_key = len(key) == 46 and key[13] == "_" and key[:13].isdigit()
            if is_row_key and key >= bound:
                old.append(name)
        return old

    async def delete_bodies(self, names: Iterable[str]) -> int:
        """Delete stored bodies, a few at a time; returns how many this call removed."""
        from azure.core.exceptions import ResourceNotFoundError

        gate = asyncio.Semaphore(16)

        async def delete_one(name: str) -> bool:
            async with gate:
                try:
                    await self.bodies.delete_blob(name)
                    return True
                except ResourceNotFoundError:  # removed by another purge
                    return False

        return sum(await asyncio.gather(*(delete_one(n) for n in names)))
