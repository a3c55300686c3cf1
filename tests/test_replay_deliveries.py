"""Replays act on deliveries (issue 22): over real HTTP through the local host, with the
`system-events`, `delivery-retries` and `replays` queues it runs, sending over AMQP to the
Service Bus emulator. And the replay's guards: one running replay per connection, a budget
of replayed deliveries per account and hour."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from local.servicebus.emulator import Emulator
from shared.errors import Conflict, OverBudget
from shared.events import new_event
from shared.models.records import MessageStatus
from shared.models.replays import ReplayRequest
from shared.service import replays as replay
from shared.services import Services
from tests.factories import PATH, SB, a_record, connect
from tests.plugins.app import Api
from tests.plugins.localhost import HostProcess
from tests.servicebus_helpers import Subscriber, nothing_arrives


async def until(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 60
) -> Any:
    """`read()` again and again until `done` says yes (or the time is up: its last answer)."""
    deadline = time.monotonic() + timeout
    value = await read()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        value = await read()
    return value


async def test_a_replay_while_retries_are_pending_sends_each_delivery_once(
    app_environment: dict[str, str],
    own_storage: tuple[str, Services],
    servicebus_emulator_factory: Callable[..., Emulator],
    local_host_process_factory: Callable[..., HostProcess],
) -> None:
    """4 events fail twice each (their queue does not exist), the third attempt an hour away;
    the queue is made and the failed deliveries replayed: 4 messages arrive, not 12."""
    storage, services = own_storage
    emulator = servicebus_emulator_factory(strict=True)  # no queue yet: entity not found
    cs = emulator.connection_string
    account = f"acct-{uuid.uuid4().hex[:12]}"
    key, _ = await services.api_keys.create(account, services.clock())
    env = {
        **app_environment,
        "AzureWebJobsStorage": storage,
        "DELIVERY_RETRY_DELAYS": "1,3600,3600,3600,3600",
        # 4 deliveries take 4 s: the replay still runs when the second request comes
        "REPLAY_RECORDS_PER_SECOND": "1",
    }
    host = local_host_process_factory("function_app:app", env=env)
    async with aiohttp.ClientSession(host.url, headers={"Authorization": key}) as session:
        api = Api(session)
        connection = {
            "ServiceBusConnectionString": cs,
            "QueueName": "orders",
            "EnabledEvents": ["*"],
        }
        status, created = await api.call("POST", PATH + "?verify=false", connection)
        assert status == 200, created
        uid = created["Uid"]
        for n in range(4):
            await services.publish(
                new_event(account, "Order.Shipped", services.clock(), data={"N": n})
            )

        async def undelivered() -> Any:
            return (await api.call("GET", f"{PATH}/{uid}/messages?undelivered=true"))[1]

        def failed_twice(page: Any) -> bool:
            deliveries = [m["Delivery"] for m in page["Messages"]]
            return len(deliveries) == 4 and all(d["Attempts"] == 2 for d in deliveries)

        page = await until(undelivered, failed_twice)
        assert failed_twice(page), page
        assert {m["Delivery"]["State"] for m in page["Messages"]} == {"Pending"}
        assert page["TotalHits"] == 4

        emulator.add_queue("orders")
        since = {"Since": (services.clock() - timedelta(hours=1)).isoformat()}
        path = f"{PATH}/{uid}/messages/replay"
        answers = await asyncio.gather(api.call("POST", path, since), api.call("POST", path, since))
        assert sorted(status for status, _ in answers) == [202, 409], answers
        [started] = [body for status, body in answers if status == 202]
        [refused] = [body for status, body in answers if status == 409]
        assert started["Matched"] == 4  # deliveries, not their 8 failed attempts
        assert refused["ReplayId"] == started["ReplayId"]

        async def progress() -> Any:
            return (await api.call("GET", f"{PATH}/{uid}/replays/{started['ReplayId']}"))[1]

        done = await until(progress, lambda r: r["Done"])
        assert (done["Done"], done["Sent"], done["Failed"], done["Skipped"]) == (True, 4, 0, 0)

        async with Subscriber(cs, "orders") as subscriber:
            received = await subscriber.receive(4)
        assert len({m.message_id for m in received}) == 4
        assert await nothing_arrives(cs, "orders")  # the pending retries sent nothing

        status, again = await api.call("POST", path, since)
        assert (status, again["Matched"]) == (202, 0)  # nothing is left undelivered

        status, log = await api.call("GET", f"{PATH}/{uid}/messages")
        assert len(log["Messages"]) == 12  # 8 failed attempts, 4 replayed
        assert {m["Delivery"]["State"] for m in log["Messages"]} == {"Delivered"}
        assert {m["Delivery"]["Attempts"] for m in log["Messages"]} == {3}
        message_id = log["Messages"][0]["Delivery"]["MessageId"]
        status, delivery = await api.call("GET", f"{PATH}/{uid}/deliveries/{message_id}")
        assert status == 200, delivery
        statuses = [m["Status"] for m in delivery["Messages"]]
        assert statuses == [MessageStatus.FAILED, MessageStatus.FAILED, MessageStatus.SUCCEEDED]
        assert (delivery["State"], delivery["Attempts"]) == ("Delivered", 3)
        status, _ = await api.call("GET", f"{PATH}/{uid}/deliveries/{uuid.uuid4()}")
        assert status == 404


async def test_past_the_hourly_budget_a_replay_is_a_429_with_retry_after(
    api: Api, services: Services, account: str
) -> None:
    stored = await connect(services, account, SB, "q")
    at = services.clock() - timedelta(minutes=5)
    record = a_record(stored.uid, at, MessageStatus.FAILED, account=account)
    await services.messages.add(stored.log_partition, [record])
    budget = services.settings.replay_deliveries_per_hour
    hour = services.clock().replace(minute=0, second=0, microsecond=0)
    for h in (hour, hour + timedelta(hours=1)):  # whichever hour the request lands in
        assert await services.replays.spend(account, h, budget, budget) is None

    since = {"Since": (at - timedelta(minutes=1)).isoformat()}
    async with api.session.post(f"{PATH}/{stored.uid}/messages/replay", json=since) as response:
        problem = await response.json(content_type=None)
        assert response.status == 429, problem
        assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert "0 remain" in problem["detail"]


# ------------------------------------------------------------------ the guards, with a clock


@pytest.fixture
def alone(own_storage: tuple[str, Services]) -> Services:
    """Storage no host runs: the replays these tests ask for stay queued, never run."""
    return own_storage[1]


@pytest.fixture
def budget_of_5(alone: Services) -> Services:
    settings = dataclasses.replace(alone.settings, replay_deliveries_per_hour=5)
    return dataclasses.replace(alone, settings=settings)


async def failed_connection(services: Services, account: str, at: datetime, n: int) -> Any:
    stored = await connect(services, account, SB, "q")
    records = [
        a_record(stored.uid, at - timedelta(seconds=i), MessageStatus.FAILED, account=account)
        for i in range(n)
    ]
    await services.messages.add(stored.log_partition, records)
    return stored


async def test_an_accounts_replays_share_an_hourly_budget_of_deliveries(
    budget_of_5: Services, account: str
) -> None:
    services = budget_of_5
    now = datetime.now(UTC).replace(minute=50, second=0, microsecond=0)
    request = ReplayRequest(since=now - timedelta(hours=1))
    first = await failed_connection(services, account, now - timedelta(minutes=1), 3)
    second = await failed_connection(services, account, now - timedelta(minutes=1), 3)
    assert (await replay.start(services, first, request, now)).matched == 3
    with pytest.raises(OverBudget) as refused:
        await replay.start(services, second, request, now)  # 3 + 3 > 5
    assert refused.value.retry_after == 600  # the hour ends in 10 minutes
    assert "2 remain" in str(refused.value)
    next_hour = now + timedelta(minutes=11)
    assert (await replay.start(services, second, request, next_hour)).matched == 3


async def test_one_replay_runs_per_connection_until_it_is_done_or_stuck(
    alone: Services, account: str
) -> None:
    services = alone
    now = datetime.now(UTC)
    stored = await failed_connection(services, account, now - timedelta(minutes=1), 2)
    request = ReplayRequest(since=now - timedelta(hours=1))
    running = await replay.start(services, stored, request, now)
    with pytest.raises(Conflict) as refused:
        await replay.start(services, stored, request, now + timedelta(minutes=1))
    assert refused.value.extensions == {"ReplayId": running.replay_id}
    other = await failed_connection(services, account, now - timedelta(minutes=1), 1)
    assert (await replay.start(services, other, request, now)).matched == 1  # its own
    # No progress for 15 minutes (its queue message poisoned, say): no longer in the way.
    later = now + timedelta(minutes=16)
    assert (await replay.start(services, stored, request, later)).matched == 2
