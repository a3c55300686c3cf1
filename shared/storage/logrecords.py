"""Records of the message log as table entities, and the reads every part of the log shares.

A record's RowKey is derived from its time-ordered (v7) Uid alone (`row_key`), so reading one
message is a point read; the layout of the whole partition is in shared/storage/messages.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.clock import uuid7_millis
from shared.deliveries import Delivery, DeliveryWrite
from shared.models.records import Message, MessageStatus, RequestMetadata
from shared.storage import deliveries, loglisting, transactions
from shared.storage.logcounts import inverted, millis

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient

MAX_PROPERTY_CHARS = 32_000  # a table string property holds 32 K UTF-16 characters


def row_key(uid: UUID) -> str:
    return f"{inverted(uuid7_millis(uid))}_{uid.hex}"


def row_key_bound(at: datetime) -> str:
    """RowKeys below this belong to messages after `at` (in whole milliseconds)."""
    return inverted(millis(at))


@dataclass(frozen=True)
class LoggedMessage:
    """A message record and what the log keeps beside it for re-sending; `delivery`, when it
    is written, what it does to its delivery (None: the first attempt of a delivery of its
    own, as its Status says: records written by tests and benchmarks)."""

    message: Message
    account: str
    event_id: str
    subject: str | None = None
    delivery: DeliveryWrite | None = None

    def delivery_write(self) -> DeliveryWrite:
        if self.delivery is not None:
            return self.delivery
        m = self.message
        metadata = RequestMetadata.from_text(m.request_metadata)
        new = Delivery(metadata.message_id if metadata else str(m.uid))
        failed = m.status == MessageStatus.FAILED
        return DeliveryWrite(
            new.after(row_key(m.uid), failed, metadata.attempt if metadata else 1, None)
        )


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """Slices of at most one transaction's operations."""
    size = transactions.MAX_OPERATIONS
    return (items[i : i + size] for i in range(0, len(items), size))


class LogRows:
    """The log's table and bodies container, and records to and from their entities."""

    def __init__(self, table: TableClient, bodies: ContainerClient) -> None:
        self._table = table
        self.bodies = bodies

    @property
    def table(self) -> TableClient:
        """The table client itself (benchmarks measure the SDK alone against it)."""
        return self._table

    async def entity(self, partition: str, record: LoggedMessage) -> dict[str, Any]:
        m = record.message
        key = row_key(m.uid)
        write = record.delivery_write()
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
            "Counted": True,  # by its writer's counter row (`log reindex` counts the others)
            "Indexed": True,  # has its search index rows (`log reindex` writes the others')
            "Account": record.account,
            "EventId": record.event_id,
            "Delivery": deliveries.status_text(write.after),
        }
        if deliveries.opens(write):
            entity["OpensDelivery"] = True  # the purge removes the delivery row with it
        if m.parent_service_bus_message_uid:
            entity["ParentServiceBusMessageUid"] = str(m.parent_service_bus_message_uid)
        if record.subject is not None:
            entity["Subject"] = record.subject
        body = m.message_body or ""  # a record to write always has its body
        if len(body) <= MAX_PROPERTY_CHARS:
            entity["MessageBody"] = body
        else:
            blob_name = f"{partition}/{key}"
            await self.bodies.upload_blob(blob_name, body.encode(), overwrite=True)
            entity["BodyBlob"] = blob_name
        return entity

    async def _records(
        self, partition: str, entities: Sequence[Any], with_body: bool = True
    ) -> list[LoggedMessage | None]:
        """The entities as records; None for one that cannot be read (counted, logged)."""

        async def record(entity: Any) -> LoggedMessage | None:
            try:
                return await self._from_entity(entity, with_body)
            except (KeyError, ValueError):  # a missing or malformed property
                return None

        found = await asyncio.gather(*map(record, entities))
        loglisting.unreadable.skipped(found.count(None), partition)
        return found

    async def _from_entity(self, entity: Any, with_body: bool = True) -> LoggedMessage:
        body = (entity.get("MessageBody") or "") if with_body else None
        if with_body and not body and entity.get("BodyBlob"):
            stream = await self.bodies.download_blob(entity["BodyBlob"])
            body = (await stream.readall()).decode()
        parent = entity.get("ParentServiceBusMessageUid")
        message = Message(
            # records, their failure copies, and `u_` copies (which name their record)
            uid=UUID((entity.get("RecordKey") or entity["RowKey"])[-32:]),
            connection_uid=UUID(entity["ConnectionUid"]),
            event_key=entity["EventKey"],
            event_timestamp=entity["EventTimestamp"],
            request_timestamp=entity["RequestTimestamp"],
            message_body=body,
            elapsed_milliseconds=entity["ElapsedMilliseconds"],
            request_metadata=entity["RequestMetadata"],
            status=MessageStatus(entity["Status"]),
            parent_service_bus_message_uid=UUID(parent) if parent else None,
            is_retry=entity.get("IsRetry", False),
            delivery=deliveries.status_of(entity),
        )
        return LoggedMessage(message, entity["Account"], entity["EventId"], entity.get("Subject"))

    async def _first_rows(
        self, partition: str, start: str, end: str, select: list[str] | None, limit: int
    ) -> list[Any]:
        async def read(chosen: list[str] | None) -> list[Any]:
            pages = self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
                parameters={"pk": partition, "start": start, "end": end},
                select=chosen,
                results_per_page=limit,
            ).by_page()
            async for page in pages:  # the service may answer an empty page with a continuation
                rows = [e async for e in page]
                if rows:
                    return rows
            return []

        if select is not None:  # chosen columns parse (keys, texts)
            return await read(select)
        return await loglisting.tolerant(read, self._table, partition)
