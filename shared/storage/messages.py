"""The `messages` table: the log of delivery attempts, kept for the retention period.

PartitionKey = the connection's log partition; RowKey = inverted milliseconds of the message's
time-ordered (v7) Uid, then the Uid. So a partition reads newest first, `since` is a RowKey
range, and reading one message is a point read derived from its Uid alone. Bodies over what a
table property holds go to the app's own `message-bodies` container.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.clock import uuid7_millis
from shared.errors import NotFound
from shared.models import Message, MessagePage, MessageQuery, MessageStatus
from shared.storage import transactions

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient

_MAX_MILLIS = 10**13 - 1  # year 2286
MAX_PROPERTY_CHARS = 32_000  # a table string property holds 32 K UTF-16 characters


def row_key(uid: UUID) -> str:
    return f"{_MAX_MILLIS - uuid7_millis(uid):013d}_{uid.hex}"


def row_key_bound(at: datetime) -> str:
    """RowKeys below this belong to messages after `at` (in whole milliseconds)."""
    return f"{_MAX_MILLIS - int(at.timestamp() * 1000):013d}"


@dataclass(frozen=True)
class LoggedMessage:
    """A message record and what the log keeps beside it for re-sending."""

    message: Message
    account: str
    event_id: str
    subject: str | None = None


async def _count_rows(rows: AsyncIterator[Any]) -> int:
    return sum([1 async for _ in rows])


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """Slices of at most one transaction's operations."""
    size = transactions.MAX_OPERATIONS
    return (items[i : i + size] for i in range(0, len(items), size))


class MessageLog:
    def __init__(self, table: TableClient, bodies: ContainerClient) -> None:
        self._table = table
        self.bodies = bodies
        self._counting: dict[tuple[str, Any], asyncio.Future[int]] = {}

    @property
    def table(self) -> TableClient:
        """The table client itself (benchmarks measure the SDK alone against it)."""
        return self._table

    @property
    def counts_in_flight(self) -> int:
        """Counts being read now for pages (none is kept once answered)."""
        return len(self._counting)

    async def add(self, partition: str, records: Sequence[LoggedMessage]) -> None:
        """Write records of one partition, as many to a transaction as its limits allow."""
        entities = [await self._to_entity(partition, r) for r in records]
        await transactions.submit(self._table, [("upsert", e) for e in entities])

    async def get(self, partition: str, uid: UUID) -> LoggedMessage:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(partition, row_key(uid))
        except (ResourceNotFoundError, ValueError):
            raise NotFound(f"no message {uid}") from None
        return await self._from_entity(entity)

    async def page(self, partition: str, query: MessageQuery) -> MessagePage:
        """One page, newest first, and the count of all matches (a RowKey-only scan)."""
        where, params = self._where(partition, query)
        skip = (query.page - 1) * query.page_size

        async def count_and_window() -> tuple[int, list[str]]:
            keys = [
                e["RowKey"]
                async for e in self._table.query_entities(
                    where, parameters=params, select=["RowKey"], results_per_page=1000
                )
            ]
            return len(keys), keys[skip : skip + query.page_size]

        async def first_rows(limit: int, extra: str = "", **bounds: str) -> list[Any]:
            rows = []
            pages = self._table.query_entities(
                where + extra, parameters={**params, **bounds}, results_per_page=limit
            ).by_page()
            async for page in pages:
                rows += [e async for e in page]
                if len(rows) >= limit:
                    break
            return rows[:limit]

        if query.page == 1:  # the common case: the count and the rows at once
            total, entities = await asyncio.gather(
                self._count(where, params), first_rows(query.page_size)
            )
        else:
            total, window = await count_and_window()
            entities = (
                await first_rows(
                    len(window),
                    " and RowKey ge @first and RowKey le @last",
                    first=window[0],
                    last=window[-1],
                )
                if window
                else []
            )
        records = await asyncio.gather(*(self._from_entity(e) for e in entities))
        return MessagePage(messages=[r.message for r in records], page=query.page, total_hits=total)

    async def _count(self, where: str, params: dict[str, Any]) -> int:
        """How many rows match, counted once for every request asking at the same time
        (the count reads every matching RowKey: the one slow part of a page)."""
        key = (where, tuple(sorted(params.items())))
        counting = self._counting.get(key)
        if counting is None:
            rows = self._table.query_entities(
                where, parameters=params, select=["RowKey"], results_per_page=1000
            )
            counting = asyncio.ensure_future(_count_rows(rows))
            self._counting[key] = counting
            counting.add_done_callback(lambda _: self._counting.pop(key, None))
        return await asyncio.shield(counting)

    @staticmethod
    def _where(partition: str, query: MessageQuery) -> tuple[str, dict[str, Any]]:
        where, params = "PartitionKey eq @pk", {"pk": partition}
        if query.since:
            where += " and RowKey lt @since"
            params["since"] = row_key_bound(query.since)
        if query.only_failed:
            where += f" and Status eq {int(MessageStatus.FAILED)}"  # an Int32 literal
        return where, params

    # --------------------------------------------------------- mapping

    async def _to_entity(self, partition: str, record: LoggedMessage) -> dict[str, Any]:
        m = record.message
        key = row_key(m.uid)
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": key,
            "ConnectionUid": str(m.connection_uid),
            "EventKey": m.event_key,
            "EventTimestamp": m.event_timestamp,
            "RequestTimestamp": m.request_timestamp,
            "ElapsedMilliseconds": m.elapsed_milliseconds,
            "RequestMetadata": m.request_metadata,
            "Status": int(m.status),
            "IsRetry": m.is_retry,
            "Account": record.account,
            "EventId": record.event_id,
        }
        if m.parent_service_bus_message_uid:
            entity["ParentServiceBusMessageUid"] = str(m.parent_service_bus_message_uid)
        if record.subject is not None:
            entity["Subject"] = record.subject
        if len(m.message_body) <= MAX_PROPERTY_CHARS:
            entity["MessageBody"] = m.message_body
        else:
            blob_name = f"{partition}/{key}"
            await self.bodies.upload_blob(blob_name, m.message_body.encode(), overwrite=True)
            entity["BodyBlob"] = blob_name
        return entity

    async def _from_entity(self, entity: Any) -> LoggedMessage:
        body = entity.get("MessageBody")
        if body is None and entity.get("BodyBlob"):
            stream = await self.bodies.download_blob(entity["BodyBlob"])
            body = (await stream.readall()).decode()
        parent = entity.get("ParentServiceBusMessageUid")
        message = Message(
            uid=UUID(entity["RowKey"].split("_", 1)[1]),
            connection_uid=UUID(entity["ConnectionUid"]),
            event_key=entity["EventKey"],
            event_timestamp=entity["EventTimestamp"],
            request_timestamp=entity["RequestTimestamp"],
            message_body=body or "",
            elapsed_milliseconds=entity["ElapsedMilliseconds"],
            request_metadata=entity["RequestMetadata"],
            status=MessageStatus(entity["Status"]),
            parent_service_bus_message_uid=UUID(parent) if parent else None,
            is_retry=entity.get("IsRetry", False),
        )
        return LoggedMessage(message, entity["Account"], entity["EventId"], entity.get("Subject"))

    # ---- retention

    async def old_records(
        self, partition: str, before: datetime | None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The first `limit` records older than `before` (all records when None): their RowKey
        and BodyBlob. Old records are at the end of a partition, so this is one RowKey range;
        the purge deletes what it gets and asks again, so it never holds a continuation."""
        where, params = "PartitionKey eq @pk", {"pk": partition}
        if before is not None:
            where += " and RowKey ge @bound"
            params["bound"] = row_key_bound(before)
        pages = self._table.query_entities(
            where, parameters=params, select=["RowKey", "BodyBlob"], results_per_page=limit
        ).by_page()
        async for page in pages:  # the service may answer an empty page with a continuation
            rows = [{"RowKey": e["RowKey"], "BodyBlob": e.get("BodyBlob")} async for e in page]
            if rows:
                return rows
        return []

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
