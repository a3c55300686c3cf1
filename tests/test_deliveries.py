"""Deliveries, not attempts (issue 22): a delivery's state on every record, the undelivered
index, retries that do nothing once their delivery is delivered, and one connection's failure
re-driving that connection alone. Against Azurite and the Service Bus emulator; where a test
needs a write or a queue to fail, it wraps the real one and says so."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from shared.clock import Clock
from shared.deliveries import MAX_RECORDS, Delivery, Origin
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.dispatcher import Dispatcher, IncompleteDispatch
from shared.dispatch.recorder import DeliveryLog
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.events import DeliveryRetry
from shared.models.events import SystemEvent
from shared.models.records import DeliveryState, MessageQuery, MessageStatus
from shared.services import Services
from shared.storage.logrecords import LoggedMessage
from tests.factories import connect, records_of
from tests.servicebus_helpers import Subscriber, nothing_arrives

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=2)

# ------------------------------------------------------------------ the rules


def test_a_failure_with_a_retry_is_pending_and_a_success_is_delivered_for_good() -> None:
    new = Delivery("m")
    pending = new.after("k1", failed=True, automatic=1, retry_at=LATER)
    assert (pending.state, pending.attempts, pending.next_attempt_at) == (
        DeliveryState.PENDING,
        1,
        LATER,
    )
    assert pending.wants(2) and not pending.wants(1)  # attempt 1 is made; 2 is to come
    delivered = pending.after("k2", failed=False, automatic=2, retry_at=None)
    assert (delivered.state, delivered.attempts, delivered.records) == (
        DeliveryState.DELIVERED,
        2,
        ("k1", "k2"),
    )
    assert delivered.failed == {"k1"}
    assert not delivered.wants(3)  # a retry of a delivered delivery does nothing
    # A later failed re-send does not undo it: the event arrived.
    resent = delivered.after("k3", failed=True, automatic=None, retry_at=None)
    assert resent.state == DeliveryState.DELIVERED and resent.attempts == 3


def test_a_failed_resend_leaves_the_schedule_as_it_was_and_the_last_failure_fails() -> None:
    pending = Delivery("m").after("k1", failed=True, automatic=1, retry_at=LATER)
    stored = Delivery(**{**pending.__dict__, "stored": True})
    resent = stored.after("k2", failed=True, automatic=None, retry_at=None)
    assert (resent.state, resent.next_attempt_at, resent.scheduled) == (
        DeliveryState.PENDING,
        LATER,
        1,
    )
    assert resent.wants(2)  # the retry still comes: a re-send is never a dead end
    last = resent.after("k3", failed=True, automatic=6, retry_at=None)
    assert (last.state, last.next_attempt_at) == (DeliveryState.FAILED, None)


def test_a_delivery_remembers_its_first_and_latest_attempts() -> None:
    d = Delivery("m")
    for n in range(MAX_RECORDS + 5):
        d = d.after(f"k{n}", failed=True, automatic=None, retry_at=None)
    assert len(d.records) == MAX_RECORDS and d.attempts == MAX_RECORDS + 5
    assert d.records[0] == "k0" and d.records[-1] == f"k{MAX_RECORDS + 4}"
    assert d.failed == set(d.records)


def test_what_started_an_attempt_says_how_it_is_handled() -> None:
    assert {o for o in Origin if o.automatic} == {Origin.SYSTEM_EVENT, Origin.RETRY}
    assert {o for o in Origin if o.queued} == {Origin.SYSTEM_EVENT, Origin.RETRY}
    assert {o.value for o in Origin} == {
        "SystemEvent",
        "Retry",
        "Replay",
        "Resend",
        "Test",
        "Verification",
    }


# ------------------------------------------------------------------ with the real log


class RetryQueue:
    """A retry queue of the test's own: what was scheduled, and the retries it holds."""

    def __init__(self, scheduler: RetryScheduler) -> None:
        self.scheduler = scheduler

    async def retries(self) -> list[DeliveryRetry]:
        messages = await self.scheduler.queue.peek_messages(max_messages=32)
        return [
            DeliveryRetry.model_validate(json.loads(base64.b64decode(m.content))) for m in messages
        ]


@pytest.fixture
async def retry_queue(services: Services) -> AsyncIterator[RetryQueue]:
    """Retries visible at once (delay 0), so that the test can read and run them."""
    queue = await services.storage.queue(f"retries-{uuid.uuid4().hex[:12]}")
    yield RetryQueue(RetryScheduler(queue, (0, 0, 0, 0, 0), services.events))
    await queue.delete_queue()


def dispatcher_of(
    services: Services,
    retries: RetryQueue,
    records: DeliveryLog | None = None,
    clock: Clock | None = None,
) -> Dispatcher:
    return Dispatcher(
        connections=services.connections,
        records=records or services.messages,
        retries=retries.scheduler,
        clock=clock or services.clock,
        connection_cache_seconds=0,
        senders=SenderPool(),
        claims=ClaimCheckStore(),
    )


def now_event(services: Services, account: str) -> SystemEvent:
    from shared.events import new_event

    return new_event(account, "Order.Shipped", services.clock(), "orders/1", {"OrderId": 1})


async def run_retry(d: Dispatcher, retry: DeliveryRetry, **options: Any) -> LoggedMessage | None:
    event = SystemEvent.model_validate(retry.event)
    return await d.retry(retry, event, **options)


async def test_a_connections_retry_policy_sets_when_it_is_tried_again(
    services: Services, account: str, servicebus_emulator_factory: Callable[..., Emulator]
) -> None:
    """RetryPolicy (issue 26): the first wait of each named schedule, at the injected clock;
    Default is the app's schedule, None schedules no retry."""
    emulator = servicebus_emulator_factory()
    queue = await services.storage.queue(f"retries-{uuid.uuid4().hex[:12]}")
    scheduler = RetryScheduler(queue, (30, 120), services.events)
    d = dispatcher_of(services, RetryQueue(scheduler), clock=lambda: T0)
    emulator.refuse_sends(60)
    waits: dict[str, float | None] = {}
    try:
        for number, policy in enumerate(("Default", "Aggressive", "Patient", "None")):
            tenant = f"{account}{number}"
            await connect(services, tenant, emulator.connection_string, "q", RetryPolicy=policy)
            [failed] = await d.dispatch(now_event(services, tenant))
            delivery = failed.message.delivery
            assert delivery is not None and failed.message.status == MessageStatus.FAILED
            at = delivery.next_attempt_at
            waits[policy] = None if at is None else (at - T0).total_seconds()
    finally:
        await d.close()
        await queue.delete_queue()
    assert waits == {"Default": 30, "Aggressive": 5, "Patient": 60, "None": None}


async def test_failed_twice_then_delivered_every_record_reads_delivered(
    services: Services,
    account: str,
    retry_queue: RetryQueue,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    stored = await connect(services, account, emulator.connection_string, "orders")
    d = dispatcher_of(services, retry_queue)
    try:
        emulator.refuse_sends(60)
        [first] = await d.dispatch(now_event(services, account))
        [retry] = await retry_queue.retries()
        second = await run_retry(d, retry)
        assert second is not None and second.message.status == MessageStatus.FAILED
        assert second.message.delivery is not None
        assert second.message.delivery.state == DeliveryState.PENDING
        assert second.message.delivery.next_attempt_at is not None

        pending = await services.messages.page(stored.log_partition, MessageQuery(undelivered=True))
        assert [m.uid for m in pending.messages] == [second.message.uid]  # the latest attempt
        assert pending.total_hits == 1

        emulator.refuse_sends(0)
        [_, third_retry] = await retry_queue.retries()
        third = await run_retry(d, third_retry)
        assert third is not None and third.message.status == MessageStatus.SUCCEEDED
    finally:
        await d.close()

    records = await records_of(services, stored)
    assert [r.status for r in records] == [MessageStatus.SUCCEEDED] + [MessageStatus.FAILED] * 2
    for r in records:  # the failed attempts too: the event arrived
        assert r.delivery is not None
        assert (r.delivery.state, r.delivery.attempts) == (DeliveryState.DELIVERED, 3)
    failed = await services.messages.page(stored.log_partition, MessageQuery(only_failed=True))
    assert {m.delivery.state for m in failed.messages if m.delivery} == {DeliveryState.DELIVERED}
    assert (
        await services.messages.page(stored.log_partition, MessageQuery(undelivered=True))
    ).messages == []

    message_id = first.message.delivery.message_id if first.message.delivery else ""
    delivery = await services.messages.attempts(stored.log_partition, message_id)
    assert [m.uid for m in delivery.messages] == [
        first.message.uid,
        second.message.uid,
        third.message.uid,
    ]
    assert delivery.state == DeliveryState.DELIVERED and delivery.attempts == 3


async def test_a_retry_does_nothing_once_a_resend_delivered(
    services: Services,
    account: str,
    retry_queue: RetryQueue,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    stored = await connect(services, account, emulator.connection_string, "orders")
    d = dispatcher_of(services, retry_queue)
    try:
        emulator.refuse_sends(60)
        [first] = await d.dispatch(now_event(services, account))
        [pending_retry] = await retry_queue.retries()
        emulator.refuse_sends(0)
        resent = await d.resend(stored, first)
        assert resent.message.delivery is not None
        assert resent.message.delivery.state == DeliveryState.DELIVERED

        assert await run_retry(d, pending_retry) is None  # superseded: nothing sent
        assert await run_retry(d, pending_retry, redelivered=True) is None
    finally:
        await d.close()
    async with Subscriber(emulator.connection_string, "orders") as subscriber:
        assert len(await subscriber.receive(1)) == 1
    assert await nothing_arrives(emulator.connection_string, "orders")
    assert len(await records_of(services, stored)) == 2
    assert len(await retry_queue.retries()) == 1  # the one run twice above; nothing new


class FailingWrites:
    """The real message log, except that writes to one partition fail `times` times (as a
    storage outage of that partition would)."""

    def __init__(self, log: DeliveryLog, partition: str, times: int = 1) -> None:
        self.log, self.partition, self.times = log, partition, times

    async def write(
        self, partition: str, records: Sequence[LoggedMessage]
    ) -> list[BaseException | None]:
        if partition == self.partition and self.times:
            self.times -= 1
            raise ConnectionError("the table did not answer")
        return await self.log.write(partition, records)

    async def delivery(self, partition: str, message_id: str) -> Delivery:
        return await self.log.delivery(partition, message_id)


async def test_one_connections_failed_record_re_drives_that_connection_alone(
    services: Services,
    account: str,
    retry_queue: RetryQueue,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    cs = emulator.connection_string
    healthy = await connect(services, account, cs, "healthy")
    broken = await connect(services, account, cs, "broken")
    d = dispatcher_of(services, retry_queue, FailingWrites(services.messages, broken.log_partition))
    event = now_event(services, account)
    try:
        with pytest.raises(IncompleteDispatch):
            await d.dispatch(event)  # the host would not complete the message
        again = await d.dispatch(event, redelivered=True)
    finally:
        await d.close()
    assert [r.message.connection_uid for r in again] == [broken.uid]  # healthy was skipped
    async with Subscriber(cs, "healthy") as subscriber:
        assert len(await subscriber.receive(1)) == 1
    assert await nothing_arrives(cs, "healthy")
    async with Subscriber(cs, "broken") as subscriber:  # sent twice, recorded once
        received = await subscriber.receive(2)
    assert len({m.message_id for m in received}) == 1
    assert len(await records_of(services, healthy)) == len(await records_of(services, broken)) == 1


class FailingQueue:
    """A retry scheduler whose queue fails the first `times` sends (an outage of it)."""

    def __init__(self, scheduler: RetryScheduler, times: int = 1) -> None:
        self.scheduler, self.times = scheduler, times
        self.delays = scheduler.delays

    def delay_after(self, *args: Any) -> float | None:
        return self.scheduler.delay_after(*args)

    async def defer(self, *args: Any) -> None:
        if self.times:
            self.times -= 1
            raise ConnectionError("the queue did not answer")
        await self.scheduler.defer(*args)


async def test_a_redelivered_event_stores_the_retry_it_may_have_lost_and_sends_nothing(
    services: Services,
    account: str,
    retry_queue: RetryQueue,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    emulator = servicebus_emulator_factory()
    emulator.refuse_sends(60)
    stored = await connect(services, account, emulator.connection_string, "orders")
    d = dispatcher_of(services, retry_queue)
    d.retries = FailingQueue(retry_queue.scheduler)  # type: ignore[assignment]
    event = now_event(services, account)
    try:
        with pytest.raises(IncompleteDispatch):
            await d.dispatch(event)  # recorded Pending, but its retry was not stored
        assert await retry_queue.retries() == []
        assert await d.dispatch(event, redelivered=True) == []  # no second attempt
    finally:
        await d.close()
    # stored again, visible a little after the first would have been (RESTORED_RETRY_LAG)
    deadline = time.monotonic() + 30
    retries = await retry_queue.retries()
    while not retries and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        retries = await retry_queue.retries()
    [restored] = retries
    assert (restored.connection_uid, restored.attempt) == (stored.uid, 2)
    [record] = await records_of(services, stored)
    assert restored.parent_uid == record.uid


async def test_concurrent_attempts_of_one_delivery_are_all_counted(
    services: Services,
    account: str,
    retry_queue: RetryQueue,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    """Each re-send reads the delivery and writes it on the condition that it is unchanged;
    those that lose the race read it again, so no attempt is lost from its count."""
    emulator = servicebus_emulator_factory()
    stored = await connect(services, account, emulator.connection_string, "orders")
    d = dispatcher_of(services, retry_queue)
    try:
        [first] = await d.dispatch(now_event(services, account))
        resent = await asyncio.gather(*(d.resend(stored, first) for _ in range(6)))
    finally:
        await d.close()
    assert first.message.delivery is not None
    delivery = await services.messages.delivery(
        stored.log_partition, first.message.delivery.message_id
    )
    assert delivery.attempts == 7 and len(delivery.records) == 7
    for r in await records_of(services, stored):
        assert r.delivery is not None and r.delivery.attempts == 7
    assert {r.message.uid for r in resent} <= {uuid.UUID(k[-32:]) for k in delivery.records}
