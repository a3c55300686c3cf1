"""The platform's way in (shared/publisher.py): batches of typed events onto the system-events
queue, tried again while storage is away, refused at once when retrying cannot help, every
event through the one function that picks its queue. Against Azurite and, end to end, the
app's host and the Service Bus emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from azure.storage.queue.aio import QueueClient

from local.azurite import Azurite, free_port, start_azurite
from local.azurite import connection_string as azurite_connection_string
from local.servicebus.emulator import Emulator
from shared import publisher as publishing
from shared.clock import system_clock
from shared.events import INLINE_LIMIT, EventTooLarge, new_event
from shared.models.events import SystemEvent
from shared.publisher import EventPublisher, PublishError, RetryPolicy
from shared.services import Services
from shared.storage.clients import SYSTEM_EVENTS_QUEUE
from tests.factories import a_connection
from tests.servicebus_helpers import receive

QUICK = RetryPolicy(attempts=3, first_delay_seconds=0.05)


def events(account: str, count: int, **data: object) -> list[SystemEvent]:
    return [
        new_event(account, "Order.Shipped", system_clock(), f"orders/{n}", {"N": n, **data})
        for n in range(count)
    ]


async def queued(connection_string: str, queue: str, count: int) -> list[dict[str, object]]:
    """The events on `queue`, as the Functions host would decode them (taken off it)."""
    found: list[dict[str, object]] = []
    async with QueueClient.from_connection_string(connection_string, queue) as client:
        while len(found) < count:
            batch = [m async for m in client.receive_messages(messages_per_page=32)]
            assert batch, f"only {len(found)} of {count} on {queue}"
            for message in batch:
                found.append(json.loads(base64.b64decode(message.content)))
                await client.delete_message(message)
    return found


def test_it_imports_without_the_functions_runtime() -> None:
    # azure.functions made unimportable: the platform's process does not have it.
    code = "import sys; sys.modules['azure.functions'] = None; import shared.publisher"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


async def test_a_batch_reaches_the_subscriber_through_the_app(
    api_host: str,
    services: Services,
    storage_connection_string: str,
    account: str,
    servicebus_emulator: Emulator,
    unique_queue: str,
) -> None:
    cs = servicebus_emulator.connection_string
    connection = a_connection(ServiceBusConnectionString=cs, QueueName=unique_queue)
    await services.connections.add(account, connection, services.clock())
    batch = events(account, 40)
    async with EventPublisher.from_connection_string(storage_connection_string) as platform:
        assert await platform.publish(*batch) == [e.event_id for e in batch]
    received = await receive(cs, unique_queue, 40)
    assert sorted(m.correlation_id for m in received) == sorted(e.event_id for e in batch)


async def test_every_event_goes_to_the_queue_queue_for_picks(
    monkeypatch: pytest.MonkeyPatch, storage_connection_string: str, account: str
) -> None:
    # Where spreading events over several queues plugs in: one function decides.
    shard = f"shard-{uuid.uuid4().hex[:8]}"
    async with QueueClient.from_connection_string(storage_connection_string, shard) as client:
        await client.create_queue()
    monkeypatch.setattr(publishing, "queue_for", lambda event, count: shard)
    batch = events(account, 3)
    async with EventPublisher.from_connection_string(storage_connection_string) as platform:
        await platform.publish(*batch)
    on_shard = await queued(storage_connection_string, shard, 3)
    assert sorted(str(e["EventId"]) for e in on_shard) == sorted(e.event_id for e in batch)
    assert {e["AccountId"] for e in on_shard} == {account}


@dataclass
class LateStorage:
    """An Azurite whose ports are chosen but which is not started until `start()`."""

    ports: tuple[int, int, int] = field(
        default_factory=lambda: (free_port(), free_port(), free_port())
    )
    started: list[Azurite] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        return azurite_connection_string("127.0.0.1", *self.ports)

    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        """Started once (and its queue made), however many ask at once."""
        async with self._lock:
            if self.started:
                return
            self.started.append(await asyncio.to_thread(start_azurite, ports=self.ports))
            async with QueueClient.from_connection_string(
                self.connection_string, SYSTEM_EVENTS_QUEUE
            ) as client:
                await client.create_queue()


@pytest.fixture
def late_storage() -> Iterator[LateStorage]:
    storage = LateStorage()
    yield storage
    for azurite in storage.started:
        azurite.stop()


async def test_a_send_is_tried_again_until_storage_answers(
    late_storage: LateStorage, account: str
) -> None:
    waits: list[float] = []

    async def storage_comes_back(seconds: float) -> None:
        """The publisher's wait between tries: the first one brings storage up."""
        waits.append(seconds)
        await late_storage.start()

    batch = events(account, 2)
    cs = late_storage.connection_string
    async with EventPublisher.from_connection_string(
        cs, retry=QUICK, sleep=storage_comes_back
    ) as platform:
        assert await platform.publish(*batch) == [e.event_id for e in batch]
    assert len(waits) == 2  # each event failed once (refused connection), waited, went through
    first = QUICK.first_delay_seconds
    assert all(first * 0.8 <= wait <= first * 1.2 for wait in waits)
    on_queue = await queued(cs, SYSTEM_EVENTS_QUEUE, 2)
    assert sorted(str(e["EventId"]) for e in on_queue) == sorted(e.event_id for e in batch)


async def test_a_failure_retrying_cannot_help_fails_at_once_and_spares_the_others(
    monkeypatch: pytest.MonkeyPatch, storage_connection_string: str, account: str
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    batch = events(account, 4)
    lost = batch[1].event_id
    monkeypatch.setattr(
        publishing,
        "queue_for",
        lambda e, count: missing if e.event_id == lost else SYSTEM_EVENTS_QUEUE,
    )
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    async with EventPublisher.from_connection_string(
        storage_connection_string, retry=QUICK, sleep=no_wait
    ) as platform:
        with pytest.raises(PublishError) as refused:
            await platform.publish(*batch)
    assert waits == []  # 404: no such queue, tried once
    assert list(refused.value.failed) == [lost]
    assert "ResourceNotFoundError 404" in str(refused.value)
    assert refused.value.published == [e.event_id for e in batch if e.event_id != lost]


async def test_an_event_over_48_kb_needs_the_blob_container(account: str) -> None:
    # The platform's principal may only send to the queue: no blob, so no large event, and
    # a batch holding one is refused before anything of it is sent.
    (small,) = events(account, 1)
    (large,) = events(account, 1, Text="x" * INLINE_LIMIT)
    requests: list[str] = []

    async def queue(name: str) -> QueueClient:
        requests.append(name)
        raise AssertionError("no request for a batch refused before sending")

    with pytest.raises(EventTooLarge, match="blob container"):
        await EventPublisher(queue).publish(small, large)
    assert requests == []
