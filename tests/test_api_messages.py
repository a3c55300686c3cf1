"""End to end over real HTTP: events through `system-events`, the local host's triggers, the
emulator; the message log, re-sending and test deliveries (CONTRACT sections 2 to 5)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from shared.events import new_event
from shared.services import Services
from shared.storage.clients import SYSTEM_EVENTS_QUEUE
from tests.plugins.app import Api
from tests.servicebus_helpers import body_of, nothing_arrives, receive

PATH = "/v1/azureservicebusconnections"
UNVERIFIED = PATH + "?verify=false"  # these tests count what arrives: no verification message


async def create(api: Api, connection_string: str, queue: str, **changes: Any) -> dict[str, Any]:
    status, created = await api.call(
        "POST",
        UNVERIFIED,
        {
            "ServiceBusConnectionString": connection_string,
            "QueueName": queue,
            "EnabledEvents": ["*"],
            **changes,
        },
    )
    assert status == 200, created
    return created


async def messages(api: Api, uid: str, at_least: int, timeout: float = 20.0, **query: str) -> Any:
    """The message page once it holds `at_least` records."""
    deadline = time.monotonic() + timeout
    while True:
        status, page = await api.call("GET", f"{PATH}/{uid}/messages", params=query)
        assert status == 200, page
        if page["TotalHits"] >= at_least or time.monotonic() > deadline:
            return page
        await asyncio.sleep(0.2)


async def publish(services: Services, account: str, key: str = "Order.Shipped", **kw: Any) -> str:
    event = new_event(account, key, services.clock(), subject="orders/7", data={"OrderId": 7}, **kw)
    await services.publish(event)
    return event.event_id


async def test_a_published_event_is_delivered_and_logged(
    api: Api, services: Services, account: str, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    cs = servicebus_emulator.connection_string
    connection = await create(api, cs, unique_queue)
    event_id = await publish(services, account)
    [got] = await receive(cs, unique_queue, 1)
    assert got.correlation_id == event_id
    page = await messages(api, connection["Uid"], 1)
    [record] = page["Messages"]
    assert page["TotalHits"] == 1 and page["Page"] == 1
    assert record["Status"] == 1 and record["EventKey"] == "Order.Shipped"
    assert record["ConnectionUid"] == connection["Uid"] and record["IsRetry"] is False
    assert record["MessageBody"] == body_of(got).decode()
    assert json.loads(record["RequestMetadata"])["MessageId"] == got.message_id
    assert record["EventTimestamp"].endswith("Z") and record["RequestTimestamp"].endswith("Z")
    status, one = await api.call("GET", f"{PATH}/{connection['Uid']}/messages/{record['Uid']}")
    assert (status, one) == (200, record)


async def test_test_endpoint_and_manual_retry(
    api: Api, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    cs = servicebus_emulator.connection_string
    connection = await create(api, cs, unique_queue, EnabledEvents=[])  # test events go anyway
    status, tested = await api.call("POST", f"{PATH}/{connection['Uid']}/test")
    assert status == 200 and tested["EventKey"] == "System.Test" and tested["Status"] == 1
    [got] = await receive(cs, unique_queue, 1)
    assert got.subject == "System.Test"

    status, retried = await api.call(
        "POST", f"{PATH}/{connection['Uid']}/messages/{tested['Uid']}/retry"
    )
    assert status == 200 and retried["Status"] == 1
    assert retried["IsRetry"] is True and retried["ParentServiceBusMessageUid"] == tested["Uid"]
    assert retried["Uid"] != tested["Uid"] and retried["MessageBody"] == tested["MessageBody"]
    [again] = await receive(cs, unique_queue, 1)
    assert again.message_id == got.message_id  # the subscriber's duplicate detection drops it
    assert again.application_properties[b"IsRetry"] is True
    page = await messages(api, connection["Uid"], 2)
    assert [m["Uid"] for m in page["Messages"]] == [retried["Uid"], tested["Uid"]]


async def test_a_test_delivery_that_fails_is_returned_as_failed(
    api: Api, unique_queue: str
) -> None:
    down = Emulator().start()
    down.stop()
    connection = await create(api, down.connection_string, unique_queue)
    status, tested = await api.call("POST", f"{PATH}/{connection['Uid']}/test")
    assert status == 200 and tested["Status"] == 2
    assert json.loads(tested["RequestMetadata"])["Error"]["Category"] == "Transient"


@pytest.mark.parametrize(
    "query",
    [
        {"page": "0"},
        {"pageSize": "501"},
        {"pageSize": "ten"},
        {"since": "last week"},
        {"onlyFailed": "maybe"},
        {"includeBody": "maybe"},
    ],
)
async def test_bad_listing_parameters_are_400(
    api: Api, servicebus_emulator: Emulator, unique_queue: str, query: dict[str, str]
) -> None:
    connection = await create(api, servicebus_emulator.connection_string, unique_queue)
    status, problem = await api.call("GET", f"{PATH}/{connection['Uid']}/messages", params=query)
    assert status == 400 and problem["errors"]
    name = next(iter(query))
    assert name[0].upper() + name[1:] in problem["errors"]


async def test_messages_of_unknown_or_other_connections_are_404(
    api: Api, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    connection = await create(api, servicebus_emulator.connection_string, unique_queue)
    other = await create(api, servicebus_emulator.connection_string, unique_queue)
    _, tested = await api.call("POST", f"{PATH}/{connection['Uid']}/test")
    for path in [
        f"{PATH}/{uuid.uuid4()}/messages",
        f"{PATH}/{connection['Uid']}/messages/{uuid.uuid4()}",
        f"{PATH}/{connection['Uid']}/messages/not-a-uuid",
        f"{PATH}/{other['Uid']}/messages/{tested['Uid']}",
    ]:
        assert (await api.call("GET", path))[0] == 404, path
    assert (await api.call("POST", f"{PATH}/{uuid.uuid4()}/test"))[0] == 404


async def test_listing_since_only_failed_and_paging(
    api: Api,
    services: Services,
    account: str,
    unique_queue: str,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    connection = await create(api, emulator.connection_string, unique_queue)
    uid = connection["Uid"]
    for _ in range(3):
        await api.call("POST", f"{PATH}/{uid}/test")
    emulator.refuse_sends(60)
    _, failed = await api.call("POST", f"{PATH}/{uid}/test")
    assert failed["Status"] == 2
    assert json.loads(failed["RequestMetadata"])["Error"]["Category"] == "Transient"

    page = await messages(api, uid, 4, pageSize="2", page="2")
    assert page["TotalHits"] == 4 and page["Page"] == 2 and len(page["Messages"]) == 2
    only_failed = await messages(api, uid, 1, onlyFailed="true")
    assert [m["Uid"] for m in only_failed["Messages"]] == [failed["Uid"]]
    since = await messages(api, uid, 1, since=failed["RequestTimestamp"].replace("Z", "+00:00"))
    assert since["TotalHits"] == 0  # `since` is exclusive: nothing after the newest


async def test_a_listing_without_bodies_has_the_same_messages_with_null_bodies(
    api: Api, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    uid = (await create(api, servicebus_emulator.connection_string, unique_queue))["Uid"]
    for _ in range(2):
        await api.call("POST", f"{PATH}/{uid}/test")
    whole = await messages(api, uid, 2)
    bare = await messages(api, uid, 2, includeBody="false")
    assert all(m["MessageBody"] for m in whole["Messages"])  # the default keeps the bodies
    assert [m["MessageBody"] for m in bare["Messages"]] == [None, None]
    without = [{**m, "MessageBody": None} for m in whole["Messages"]]
    assert (bare["Messages"], bare["TotalHits"]) == (without, whole["TotalHits"])


async def test_a_malformed_event_goes_to_the_poison_queue_with_a_log_line(
    api: Api, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    queue = await services.storage.queue(SYSTEM_EVENTS_QUEUE)
    poison = await services.storage.queue(SYSTEM_EVENTS_QUEUE + "-poison")
    marker = uuid.uuid4().hex
    bad = {"EventId": marker, "AccountId": "acme"}  # no EventKey, no EventTimestamp
    for payload in (json.dumps(bad).encode(), b"not json " + marker.encode()):
        await queue.send_message(base64.b64encode(payload).decode())
    deadline = time.monotonic() + 20
    found: list[bytes] = []
    while len(found) < 2 and time.monotonic() < deadline:
        found = [base64.b64decode(m.content) for m in await poison.peek_messages(max_messages=32)]
        found = [f for f in found if marker.encode() in f]
        await asyncio.sleep(0.2)
    assert len(found) == 2
    assert "system-events-poison" in caplog.text and "EventKey" in caplog.text


async def test_failed_deliveries_are_retried_until_service_bus_is_back(
    api: Api,
    services: Services,
    account: str,
    unique_queue: str,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    connection = await create(api, emulator.connection_string, unique_queue)
    emulator.stop()  # Service Bus is down
    event_id = await publish(services, account)
    first = (await messages(api, connection["Uid"], 1))["Messages"][-1]
    assert first["Status"] == 2 and first["IsRetry"] is False
    emulator.start()  # back on the same port; retries come every second in tests
    page = await messages(api, connection["Uid"], 1, onlyFailed="false", timeout=30)
    deadline = time.monotonic() + 30
    while page["Messages"][0]["Status"] != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        page = await messages(api, connection["Uid"], 1)
    succeeded = page["Messages"][0]
    assert succeeded["Status"] == 1 and succeeded["IsRetry"] is True
    assert succeeded["ParentServiceBusMessageUid"] == first["Uid"]
    attempts = [json.loads(m["RequestMetadata"])["Attempt"] for m in reversed(page["Messages"])]
    assert attempts == list(range(1, len(attempts) + 1))
    [got] = await receive(emulator.connection_string, unique_queue, 1)
    assert got.correlation_id == event_id and got.application_properties[b"IsRetry"] is True


async def test_connection_changes_reach_the_dispatcher_within_ten_seconds(
    api: Api, services: Services, account: str, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    cs = servicebus_emulator.connection_string
    connection = await create(api, cs, unique_queue, EnabledEvents=["Order.*"])
    await publish(services, account)
    assert len(await receive(cs, unique_queue, 1)) == 1
    status, _ = await api.call(
        "PUT",
        UNVERIFIED,
        {**connection, "ServiceBusConnectionString": cs, "EnabledEvents": ["Employee.*"]},
    )
    assert status == 200
    await asyncio.sleep(services.settings.connection_cache_seconds + 0.5)
    await publish(services, account)
    assert await nothing_arrives(cs, unique_queue, wait=3)
