"""Test data, for tests and benchmarks alike: connections, and delivery records as the
dispatcher logs them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.clock import uuid7
from shared.deliveries import Delivery
from shared.dispatch.outgoing import message_id
from shared.errors import NotFound
from shared.events import new_event
from shared.models.connection import Connection
from shared.models.events import SystemEvent
from shared.models.records import (
    DeliveryError,
    ErrorCategory,
    Message,
    MessageQuery,
    MessageStatus,
    RequestMetadata,
)
from shared.services import Services
from shared.storage.apikeys import ApiKeyRepository
from shared.storage.clients import API_KEYS_TABLE
from shared.storage.connections import StoredConnection
from shared.storage.logrecords import LoggedMessage
from shared.storage.replays import ReplayRow

# A connection string that parses; nothing listens there.
SB = (
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=S3CRET="
)
STORAGE = (
    "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=QUNDT1VOVEtFWQ==;"
    "EndpointSuffix=core.windows.net"
)
PATH = "/v1/azureservicebusconnections"
# POST and PUT without the verification send: for tests of other things, and for hosts
# nothing listens on (a verification there would cost a second per save).
UNVERIFIED = PATH + "?verify=false"
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def body(**changes: Any) -> dict[str, Any]:
    """A connection as an API client posts it; `changes` are API property names."""
    return {
        "Title": "ERP integration",
        "ServiceBusConnectionString": SB,
        "QueueName": "platform-events",
        "BlobContainerConnectionString": STORAGE,
        "BlobContainerName": "large-events",
        "EnabledEvents": ["Employee.Created", "Order.*"],
        "AdvancedSettings": {"Employee.Created": {"EventSettingsType": "Reference"}},
        **changes,
    }


def an_event(account: str, key: str = "Employee.Created", data: Any = None) -> SystemEvent:
    """An event of `account` at NOW, with data unless given."""
    return new_event(
        account,
        key,
        NOW,
        subject="employees/1234",
        data={"EmployeeId": 1234, "Name": "Ada"} if data is None else data,
    )


async def connect(
    services: Services, account: str, connection_string: str, queue: str, **changes: Any
) -> StoredConnection:
    """A stored connection of `account` to `queue`, taking every event."""
    connection = a_connection(
        ServiceBusConnectionString=connection_string, QueueName=queue, **changes
    )
    return await services.connections.add(account, connection, NOW)


def a_connection(**changes: object) -> Connection:
    """A valid connection taking every event; `changes` are API property names."""
    return Connection.model_validate(
        {
            "Uid": str(uuid.uuid4()),
            "ServiceBusConnectionString": SB,
            "QueueName": "q",
            "EnabledEvents": ["*"],
            **changes,
        }
    )


async def uncached_api_keys(services: Services) -> ApiKeyRepository:
    """The API keys as another process sees them: no cache, every call reads the table."""
    return ApiKeyRepository(await services.storage.table(API_KEYS_TABLE), cache_seconds=0)


def a_record(
    connection_uid: uuid.UUID,
    at: datetime,
    status: MessageStatus = MessageStatus.SUCCEEDED,
    body: str = "{}",
    event_key: str = "Order.Shipped",
    account: str = "acme",
    latency_ms: int = 3,
) -> LoggedMessage:
    """One delivery record sent at `at` (its Uid's time), with the metadata the dispatcher
    writes; the send ends `latency_ms` after its event's time."""
    failed = status == MessageStatus.FAILED
    elapsed = min(latency_ms, 3)
    event_id = str(uuid.uuid4())
    metadata = RequestMetadata(
        queue_name="q",
        message_id=message_id(account, event_id, connection_uid),  # as the dispatcher's
        attempt=1,
        size_bytes=len(body.encode()),
        offloaded=False,
        error=DeliveryError(category=ErrorCategory.TRANSIENT, type="X", message="test")
        if failed
        else None,
    )
    message = Message(
        uid=uuid7(at),
        connection_uid=connection_uid,
        event_key=event_key,
        event_timestamp=at - timedelta(milliseconds=latency_ms - elapsed),
        request_timestamp=at,
        message_body=body,
        elapsed_milliseconds=elapsed,
        request_metadata=metadata.to_text(),
        status=status,
    )
    record = LoggedMessage(message, account=account, event_id=event_id)
    # a delivery of its own, as the log reads it back
    delivery = record.delivery_write().after.status()
    return dataclasses.replace(record, message=message.model_copy(update={"delivery": delivery}))


def log_records(
    connection_uid: uuid.UUID,
    n: int,
    newest: datetime,
    span: timedelta = timedelta(days=3),
    body: str = "{}",
    event_key: str = "Order.Shipped",
    failed_every: int = 20,
    account: str = "bench",
) -> list[LoggedMessage]:
    """`n` delivery records from just before `newest` back over `span` (1 in `failed_every`
    failed), newest first; `account`: the connection's (its message ids derive from it)."""
    return [
        a_record(
            connection_uid,
            newest - timedelta(seconds=1 + i * span.total_seconds() / n),
            MessageStatus.FAILED if i % failed_every == 0 else MessageStatus.SUCCEEDED,
            body,
            event_key,
            account=account,
        )
        for i in range(n)
    ]


def a_replay(created_at: datetime, matched: int = 3) -> ReplayRow:
    """A replay's row, asked for at `created_at` over the hour before."""
    return ReplayRow(
        partition=uuid.uuid4().hex,
        replay_id=uuid.uuid4(),
        account="acme",
        connection_uid=uuid.uuid4(),
        since=created_at - timedelta(hours=1),
        until=created_at,
        only_failed=True,
        event_keys=None,
        matched=matched,
        created_at=created_at,
    )


class MemoryConnections:
    """Connections held in memory, for dispatcher tests about what it does with them (a
    stand-in for the connections table, which test_dispatch.py uses for real)."""

    def __init__(self, *stored: StoredConnection) -> None:
        self.stored = list(stored)
        self.reads = 0  # of an account's partition
        self.point_reads = 0  # of one connection

    async def for_account(self, account: str) -> list[StoredConnection]:
        self.reads += 1
        return [s for s in self.stored if s.account == account]

    async def get(self, account: str, uid: uuid.UUID) -> StoredConnection:
        self.point_reads += 1
        found = [s for s in self.stored if s.account == account and s.uid == uid]
        if not found:
            raise NotFound(f"no connection {uid}")
        return found[0]


class MemoryRecords:
    """The message log in memory: what the dispatcher wrote, by log partition, and each
    delivery as the last record of it left it (no conditions checked)."""

    def __init__(self) -> None:
        self.written: dict[str, list[LoggedMessage]] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}

    async def add(self, partition: str, records: Sequence[LoggedMessage]) -> None:
        self.written.setdefault(partition, []).extend(records)
        for r in records:
            after = r.delivery_write().after
            kept = dataclasses.replace(after, stored=True, etag="*")
            self.deliveries[(partition, after.message_id)] = kept

    async def write(
        self, partition: str, records: Sequence[LoggedMessage]
    ) -> list[BaseException | None]:
        await self.add(partition, records)
        return [None] * len(records)

    async def delivery(self, partition: str, message_id: str) -> Delivery:
        return self.deliveries.get((partition, message_id)) or Delivery(message_id)


def stored(connection: Connection, account: str = "acme") -> StoredConnection:
    """A connection as the repository hands it to the dispatcher."""
    return StoredConnection(account, connection, log_partition=uuid.uuid4().hex)


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def records_of(services: Services, stored: StoredConnection) -> list[Message]:
    """The connection's first 500 records, newest first."""
    page = await services.messages.page(stored.log_partition, MessageQuery(page_size=500))
    return page.messages


async def eventually(check: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


class SetClock:
    """An injected clock that answers `now`, which only the test moves (from `start`, or
    the time the clock was made)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now
