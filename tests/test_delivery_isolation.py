"""Delivery isolation through the dispatcher and the official SDKs: black holes (a listener
that never answers, an emulator that never attaches) cost one deadline per attempt, then
fail fast; a full bulkhead puts a delivery back on the retry queue (docs/API.md, "Delivery
isolation")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from local.blackhole import BlackHole
from local.servicebus.emulator import Emulator
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.isolation import BreakerState, Isolation
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.endpoints import ConnectGuard
from shared.events import DeliveryRetry
from shared.models.records import MessageStatus
from shared.services import Services
from shared.settings import IsolationSettings
from shared.storage.logrecords import LoggedMessage
from tests.factories import an_event, connect, records_of
from tests.servicebus_helpers import receive

DEADLINE = 1.0


@pytest.fixture
async def retry_queue(services: Services) -> AsyncIterator[QueueClient]:
    """A retry queue of this test's own: no host in the session takes what is put on it."""
    queue = await services.storage.queue(f"retries-{uuid.uuid4().hex[:12]}")
    yield queue
    await queue.delete_queue()


@pytest.fixture
def isolated(
    services: Services, retry_queue: QueueClient
) -> Callable[..., AsyncIterator[Dispatcher]]:
    """`async with isolated(**IsolationSettings changes) as dispatcher` (deadline 1 s)."""

    @contextlib.asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[Dispatcher]:
        isolation = IsolationSettings(attempt_timeout_seconds=DEADLINE, **changes)
        guard = ConnectGuard(allow_local=True)
        dispatcher = Dispatcher(
            connections=services.connections,
            records=services.messages,
            retries=RetryScheduler(retry_queue, (1, 1), services.events),
            clock=services.clock,
            connection_cache_seconds=services.settings.connection_cache_seconds,
            isolation=Isolation(isolation),
            senders=SenderPool(guard=guard),
            claims=ClaimCheckStore(guard),
        )
        try:
            yield dispatcher
        finally:
            await dispatcher.close()

    return make  # type: ignore[return-value]


async def retries_on(queue: QueueClient, count: int = 1) -> list[DeliveryRetry]:
    """The retries put on `queue`, once `count` are visible (or after 10 s)."""
    found: list[DeliveryRetry] = []
    for _ in range(50):
        async for message in queue.receive_messages(visibility_timeout=60, max_messages=32):
            found.append(DeliveryRetry.model_validate_json(base64.b64decode(message.content)))
        if len(found) >= count:
            break
        await asyncio.sleep(0.2)
    return found


def error_of(record: LoggedMessage) -> dict[str, str]:
    error: dict[str, str] = json.loads(record.message.request_metadata)["Error"]
    return error


async def test_a_black_hole_attempt_ends_as_timeout_and_is_retried(
    services: Services,
    isolated: Callable[..., Any],
    retry_queue: QueueClient,
    black_hole: BlackHole,
    account: str,
) -> None:
    stored = await connect(services, account, black_hole.connection_string, "orders")
    async with isolated() as dispatcher:
        [record] = await asyncio.wait_for(dispatcher.dispatch(an_event(account)), DEADLINE + 5)
    assert record.message.status == MessageStatus.FAILED
    assert error_of(record)["Category"] == "Transient"
    assert error_of(record)["Type"] == "Timeout"
    assert record.message.elapsed_milliseconds < (DEADLINE + 1) * 1000
    [retry] = await retries_on(retry_queue)
    assert (retry.connection_uid, retry.attempt) == (stored.uid, 2)
    assert retry.parent_uid == record.message.uid


async def test_a_peer_that_never_attaches_costs_one_deadline_and_the_sender_recovers(
    services: Services,
    isolated: Callable[..., Any],
    servicebus_emulator_factory: Callable[..., Emulator],
    account: str,
) -> None:
    emulator = servicebus_emulator_factory()
    emulator.hold_attaches()
    cs = emulator.connection_string
    await connect(services, account, cs, "held")
    async with isolated(breaker_failures=100) as dispatcher:
        # Ten at once share one flush on one sender: all of them end at the deadline.
        dispatches = [dispatcher.dispatch(an_event(account, data={"N": n})) for n in range(10)]
        records = [r for rs in await asyncio.wait_for(asyncio.gather(*dispatches), 10) for r in rs]
        assert [error_of(r)["Type"] for r in records] == ["Timeout"] * 10

        emulator.hold_attaches(False)
        [record] = await asyncio.wait_for(dispatcher.dispatch(an_event(account)), 10)
        # Sent on a fresh connection, not on the one cut off mid-attach.
        assert record.message.status == MessageStatus.SUCCEEDED
    [got] = await receive(cs, "held", 2, timeout=3)
    assert got.message_id == json.loads(record.message.request_metadata)["MessageId"]


async def test_after_k_timeouts_deliveries_fail_fast_as_circuit_open(
    services: Services,
    isolated: Callable[..., Any],
    black_hole: BlackHole,
    retry_queue: QueueClient,
    account: str,
) -> None:
    stored = await connect(services, account, black_hole.connection_string, "orders")
    async with isolated(breaker_failures=2, breaker_cool_down_seconds=600) as dispatcher:
        for _ in range(2):
            [timed_out] = await dispatcher.dispatch(an_event(account))
            assert error_of(timed_out)["Type"] == "Timeout"
        [fast] = await asyncio.wait_for(dispatcher.dispatch(an_event(account)), DEADLINE)
        assert dispatcher.isolation.breakers.states() == {stored.uid: BreakerState.OPEN}
    assert fast.message.status == MessageStatus.FAILED
    assert error_of(fast)["Category"] == "Transient" and error_of(fast)["Type"] == "CircuitOpen"
    retries = await retries_on(retry_queue, 3)  # retried on the normal schedule, like the rest
    assert sorted(r.attempt for r in retries) == [2, 2, 2]
    assert fast.message.uid in {r.parent_uid for r in retries}


@pytest.mark.parametrize("full", ["connection", "account"])
async def test_a_full_bulkhead_puts_the_delivery_back_without_a_record(
    services: Services,
    isolated: Callable[..., Any],
    servicebus_emulator: Emulator,
    retry_queue: QueueClient,
    account: str,
    full: str,
) -> None:
    cs = servicebus_emulator.connection_string
    stored = await connect(services, account, cs, f"busy-{uuid.uuid4().hex[:8]}")
    busy = {f"max_in_flight_per_{full}": 1, "bulkhead_wait_seconds": 0.1}
    async with isolated(busy_defer_seconds=1, **busy) as dispatcher:
        bulkheads = dispatcher.isolation
        held = (  # one attempt in flight, standing still
            bulkheads.connections.try_enter(stored.uid)
            if full == "connection"
            else bulkheads.accounts.try_enter(account)
        )
        assert held is not None
        assert await dispatcher.dispatch(an_event(account)) == []
        held.release()
        assert bulkheads.accounts.in_flight(account) == 0  # nothing half-taken is left
        assert bulkheads.connections.in_flight(stored.uid) == 0
    [deferred] = await retries_on(retry_queue)
    assert (deferred.connection_uid, deferred.attempt, deferred.parent_uid) == (stored.uid, 1, None)
    assert await records_of(services, stored) == []  # not a failure: nothing recorded


async def test_a_claim_check_upload_to_a_black_hole_ends_as_timeout(
    services: Services,
    isolated: Callable[..., Any],
    servicebus_emulator_factory: Callable[..., Emulator],
    black_hole: BlackHole,
    account: str,
) -> None:
    emulator = servicebus_emulator_factory(max_message_size=4096)
    await connect(
        services,
        account,
        emulator.connection_string,
        "large",
        BlobContainerName="claims",
        BlobContainerConnectionString=black_hole.blob_connection_string,
    )
    async with isolated() as dispatcher:
        big = an_event(account, data={"Content": "x" * 10_000})
        [record] = await asyncio.wait_for(dispatcher.dispatch(big), DEADLINE + 5)
    assert error_of(record)["Type"] == "Timeout"
    assert record.message.elapsed_milliseconds < (DEADLINE + 1) * 1000
