"""Delivery to Service Bus through the official SDK, against Azurite and the local emulator."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.storage.blob.aio import ContainerClient

from local.host.config import QueueOptions, load_host_json
from local.servicebus.emulator import Emulator
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.outgoing import message_id
from shared.events import DeliveryRetry
from shared.models.events import SystemEvent
from shared.models.records import MessageQuery, MessageStatus
from shared.services import Services
from shared.storage.clients import RETRY_QUEUE
from shared.storage.connections import StoredConnection
from tests.factories import ROOT, an_event, connect, records_of
from tests.servicebus_helpers import body_of, nothing_arrives, receive

HOST_IN_FLIGHT = QueueOptions.from_host_json(load_host_json(ROOT / "host.json")).max_in_flight


@pytest.fixture
async def dispatcher(services: Services) -> AsyncIterator[Dispatcher]:
    d = await services.new_dispatcher(retry_delays=(30, 120, 600, 3600, 21600))
    yield d
    await d.close()


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


async def test_an_event_arrives_with_the_contract_properties_and_one_record(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
) -> None:
    cs = servicebus_emulator.connection_string
    stored = await connect(services, account, cs, queue)
    e = an_event(account)
    [record] = await dispatcher.dispatch(e)

    [received] = await receive(cs, queue, 1)
    assert received.message_id == message_id(account, e.event_id, stored.uid)
    assert received.subject == "Employee.Created"
    assert received.content_type == "application/json"
    assert received.correlation_id == e.event_id
    props = {
        k.decode(): v.decode() if isinstance(v, bytes) else v
        for k, v in received.application_properties.items()
    }
    assert props == {
        "EventKey": "Employee.Created",
        "EventId": e.event_id,
        "EventTimestamp": "2026-11-26T10:00:00.000Z",
        "AccountId": account,
        "IsRetry": False,
        "Offloaded": False,
        "SchemaVersion": 1,
    }
    assert json.loads(body_of(received)) == {
        "EventId": e.event_id,
        "EventKey": "Employee.Created",
        "EventTimestamp": "2026-11-26T10:00:00.000Z",
        "Subject": "employees/1234",
        "Data": {"EmployeeId": 1234, "Name": "Ada"},
    }

    [logged] = await records_of(services, stored)
    assert logged == record.message
    assert logged.status == MessageStatus.SUCCEEDED and not logged.is_retry
    assert logged.message_body == body_of(received).decode()
    expected = {
        "QueueName": queue,
        "MessageId": received.message_id,
        "Attempt": 1,
        "SizeBytes": len(body_of(received)),
        "Offloaded": False,
    }
    assert logged.request_metadata == json.dumps(expected)  # the text, keys in this order
    assert "SAS_KEY_VALUE" not in json.dumps(logged.to_json())


async def test_matching_reference_inactive_and_other_accounts(
    services: Services, dispatcher: Dispatcher, servicebus_emulator: Emulator, account: str
) -> None:
    cs = servicebus_emulator.connection_string
    queues = {
        name: f"{name}-{uuid.uuid4().hex[:8]}"
        for name in ("all", "orders", "reference", "employees", "inactive", "none")
    }
    await connect(services, account, cs, queues["all"], EnabledEvents=["*"])
    await connect(services, account, cs, queues["orders"], EnabledEvents=["Order.*"])
    await connect(
        services,
        account,
        cs,
        queues["reference"],
        EnabledEvents=["Order.Shipped"],
        AdvancedSettings={"Order.Shipped": {"EventSettingsType": "Reference"}},
    )
    await connect(services, account, cs, queues["employees"], EnabledEvents=["Employee.Created"])
    await connect(services, account, cs, queues["inactive"], EnabledEvents=["*"], Active=False)
    await connect(services, account, cs, queues["none"], EnabledEvents=[])
    other = await connect(services, "another-account", cs, f"other-{uuid.uuid4().hex[:8]}")

    records = await dispatcher.dispatch(an_event(account, "Order.Shipped", data={"OrderId": 7}))
    assert len(records) == 3

    for name in ("all", "orders"):
        [got] = await receive(cs, queues[name], 1)
        assert json.loads(body_of(got))["Data"] == {"OrderId": 7}
    [thin] = await receive(cs, queues["reference"], 1)
    assert set(json.loads(body_of(thin))) == {"EventId", "EventKey", "EventTimestamp", "Subject"}
    for name in ("employees", "inactive", "none"):
        assert await nothing_arrives(cs, queues[name], wait=0.5)
    assert await nothing_arrives(cs, other.connection.queue_name, wait=0.5)


async def test_a_large_event_is_offloaded_to_the_subscribers_container(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
    storage_connection_string: str,
) -> None:
    cs = servicebus_emulator.connection_string
    container = f"large-{uuid.uuid4().hex[:10]}"  # does not exist yet: made on first use
    stored = await connect(
        services,
        account,
        cs,
        queue,
        BlobContainerName=container,
        BlobContainerConnectionString=storage_connection_string,
    )
    e = an_event(account, "Document.Uploaded", data={"Content": "x" * 400_000})
    [record] = await dispatcher.dispatch(e)
    assert record.message.status == MessageStatus.SUCCEEDED, record.message.request_metadata

    [got] = await receive(cs, queue, 1)
    reference = json.loads(body_of(got))
    assert got.application_properties[b"Offloaded"] is True
    assert got.application_properties[b"BlobName"].decode() == reference["BlobName"]
    assert got.message_id == message_id(account, e.event_id, stored.uid)
    assert set(reference) == {
        "EventId",
        "EventKey",
        "EventTimestamp",
        "Subject",
        "BlobContainerName",
        "BlobName",
        "ContentLength",
        "ContentSha256",
    }
    async with ContainerClient.from_connection_string(storage_connection_string, container) as c:
        blob = await (await c.download_blob(reference["BlobName"])).readall()
    assert hashlib.sha256(blob).hexdigest() == reference["ContentSha256"]
    assert len(blob) == reference["ContentLength"]
    assert json.loads(blob)["Data"]["Content"] == "x" * 400_000
    metadata = json.loads(record.message.request_metadata)
    assert metadata["Offloaded"] is True and metadata["BlobName"] == reference["BlobName"]
    assert record.message.message_body == body_of(got).decode()


async def test_a_large_event_without_a_container_fails_as_too_large_and_is_not_retried(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
) -> None:
    retries = await services.storage.queue(RETRY_QUEUE)
    before = (await retries.get_queue_properties()).approximate_message_count
    await connect(services, account, servicebus_emulator.connection_string, queue)
    [record] = await dispatcher.dispatch(an_event(account, data={"Content": "x" * 400_000}))
    assert record.message.status == MessageStatus.FAILED
    assert json.loads(record.message.request_metadata)["Error"]["Category"] == "TooLarge"
    assert (await retries.get_queue_properties()).approximate_message_count == before


async def failed_delivery(
    services: Services, dispatcher: Dispatcher, account: str, connection_string: str, queue: str
) -> tuple[StoredConnection, dict[str, Any]]:
    stored = await connect(services, account, connection_string, queue)
    [record] = await dispatcher.dispatch(an_event(account))
    assert record.message.status == MessageStatus.FAILED
    return stored, json.loads(record.message.request_metadata)


async def test_a_wrong_key_is_a_configuration_failure_without_the_secret(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
) -> None:
    wrong = servicebus_emulator.connection_string_with_key("WRONG_KEY_VALUE")
    _, metadata = await failed_delivery(services, dispatcher, account, wrong, queue)
    assert metadata["Error"]["Category"] == "Configuration"
    assert "WRONG_KEY_VALUE" not in json.dumps(metadata)


async def test_an_unknown_queue_is_a_configuration_failure(
    services: Services, dispatcher: Dispatcher, account: str
) -> None:
    with Emulator(strict=True, queues=["known"]) as strict:
        _, metadata = await failed_delivery(
            services, dispatcher, account, strict.connection_string, "unknown"
        )
    assert metadata["Error"]["Category"] == "Configuration"
    assert metadata["Error"]["Type"] == "MessagingEntityNotFoundError"


async def test_server_busy_is_transient_and_a_retry_is_scheduled_that_succeeds(
    services: Services, dispatcher: Dispatcher, account: str, queue: str
) -> None:
    with Emulator() as emulator:
        emulator.refuse_sends(60)
        stored, metadata = await failed_delivery(
            services, dispatcher, account, emulator.connection_string, queue
        )
        assert metadata["Error"]["Category"] == "Transient"
        emulator.refuse_sends(0)
        first = (await records_of(services, stored))[0]
        retry = DeliveryRetry(
            event=an_event(account).to_json(),
            connection_uid=stored.uid,
            attempt=2,
            parent_uid=first.uid,
        )
        record = await dispatcher.retry(retry, SystemEvent.model_validate(retry.event))
        assert record is not None and record.message.status == MessageStatus.SUCCEEDED
        assert (
            record.message.is_retry and record.message.parent_service_bus_message_uid == first.uid
        )
        assert json.loads(record.message.request_metadata)["Attempt"] == 2
        [got] = await receive(emulator.connection_string, queue, 1)
        assert got.application_properties[b"IsRetry"] is True


async def test_service_bus_down_is_transient(
    services: Services, dispatcher: Dispatcher, account: str, queue: str
) -> None:
    emulator = Emulator().start()
    emulator.stop()  # nothing listens on its port now
    _, metadata = await failed_delivery(
        services, dispatcher, account, emulator.connection_string, queue
    )
    assert metadata["Error"]["Category"] == "Transient"


async def test_a_failure_schedules_a_hidden_retry_on_the_retry_queue(
    services: Services, dispatcher: Dispatcher, account: str, queue: str
) -> None:
    retries = await services.storage.queue(RETRY_QUEUE)
    before = (await retries.get_queue_properties()).approximate_message_count or 0
    emulator = Emulator().start()
    emulator.stop()
    stored, _ = await failed_delivery(
        services, dispatcher, account, emulator.connection_string, queue
    )
    assert (await retries.get_queue_properties()).approximate_message_count == before + 1
    # Hidden for the first delay (30 s here): a peek does not see it yet.
    visible = [base64.b64decode(m.content) for m in await retries.peek_messages(max_messages=32)]
    assert not any(str(stored.uid).encode() in body for body in visible)


async def test_one_failing_connection_does_not_hold_up_another(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
) -> None:
    with Emulator() as slow:
        slow.delay_sends(3000)
        await connect(services, account, slow.connection_string, "slow")
        fast = await connect(services, account, servicebus_emulator.connection_string, queue)
        dispatch = asyncio.create_task(dispatcher.dispatch(an_event(account)))
        [got] = await receive(servicebus_emulator.connection_string, queue, 1, timeout=2.5)
        assert got is not None and not dispatch.done()  # the fast one arrived first
        records = await dispatch
    assert all(r.message.status == MessageStatus.SUCCEEDED for r in records)
    assert len(await records_of(services, fast)) == 1


async def test_a_thousand_events_to_ten_connections(
    services: Services, dispatcher: Dispatcher, servicebus_emulator: Emulator, account: str
) -> None:
    cs = servicebus_emulator.connection_string
    connections = [
        await connect(services, account, cs, f"fan-{i}-{uuid.uuid4().hex[:6]}") for i in range(10)
    ]
    events = [an_event(account, "Order.Created", data={"N": n}) for n in range(1000)]
    # As many events at once as a host runs (host.json), each fanned out to 10 new links: the
    # first ones wait while the links open, none is put back on the retry queue (issue 22).
    semaphore = asyncio.Semaphore(HOST_IN_FLIGHT)

    async def one(e: SystemEvent) -> None:
        async with semaphore:
            assert len(await dispatcher.dispatch(e)) == len(connections)

    await asyncio.gather(*(one(e) for e in events))
    for stored in connections:
        got = await receive(cs, stored.connection.queue_name, 1000, timeout=30)
        ids = [m.message_id for m in got]
        assert len(ids) == 1000 and len(set(ids)) == 1000
        page = await services.messages.page(stored.log_partition, MessageQuery(page_size=1))
        assert page.total_hits == 1000


async def test_concurrent_deliveries_fill_several_batches_and_a_large_one_goes_by_claim_check(
    services: Services,
    dispatcher: Dispatcher,
    servicebus_emulator: Emulator,
    account: str,
    queue: str,
    storage_connection_string: str,
) -> None:
    cs = servicebus_emulator.connection_string
    await connect(
        services,
        account,
        cs,
        queue,
        BlobContainerName="overflow",
        BlobContainerConnectionString=storage_connection_string,
    )
    sizes = [60_000] * 12 + [400_000]  # 12 need 3+ batches of 256 KB; the last fits none
    events = [an_event(account, data={"Content": "x" * size}) for size in sizes]
    records = [
        r for rs in await asyncio.gather(*(dispatcher.dispatch(e) for e in events)) for r in rs
    ]
    assert all(r.message.status == MessageStatus.SUCCEEDED for r in records)
    offloaded = [json.loads(r.message.request_metadata)["Offloaded"] for r in records]
    assert offloaded == [False] * 12 + [True]
    got = await receive(cs, queue, 13)
    assert sorted(m.correlation_id for m in got) == sorted(e.event_id for e in events)


async def test_large_events_travel_on_queues_as_a_pointer_to_one_blob(
    services: Services, account: str
) -> None:
    small, large = an_event(account), an_event(account, data={"Content": "x" * 100_000})
    assert await services.events.to_payload(small) == small.to_json()
    pointer = await services.events.to_payload(large)
    assert set(pointer) == {"EventBlob"}
    assert await services.events.to_payload(large) == pointer  # a retry reuses the blob
    assert await services.events.from_payload(pointer) == large
