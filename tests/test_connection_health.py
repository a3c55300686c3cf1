"""Issue 15: verification on save, Health on every connection, suspension that keeps events.

Over real HTTP (the local host) against the Service Bus emulator and Azurite. The outage
itself is driven by a dispatcher of the test's own (the same parts the app wires) with an
injected clock, so three days of failures take no time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.healthtracker import HealthTracker
from shared.dispatch.retries import RetryScheduler
from shared.health import HealthState, Outcomes, merge
from shared.models.connection import HealthStatus
from shared.models.records import DeliveryError, ErrorCategory, MessageQuery, MessageStatus
from shared.services import Services
from shared.storage.clients import CONNECTIONS_TABLE
from shared.storage.healthrows import HealthRepository
from tests.factories import PATH, UNVERIFIED, SetClock, an_event
from tests.plugins.app import Api
from tests.servicebus_helpers import body_of, nothing_arrives, receive

SUSPEND_AFTER = timedelta(hours=72)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def connection(cs: str, queue: str, **changes: Any) -> dict[str, Any]:
    return {"ServiceBusConnectionString": cs, "QueueName": queue, "EnabledEvents": ["*"]} | changes


@pytest.fixture
async def outage(services: Services) -> AsyncIterator[tuple[Dispatcher, SetClock, str]]:
    """A dispatcher with an injected clock, SUSPEND_AFTER, no caches, and a retry queue of
    its own (so the test can see what was scheduled, and the host retries nothing)."""
    clock = SetClock()
    settings = dataclasses.replace(
        services.settings,
        suspend_after_seconds=SUSPEND_AFTER.total_seconds(),
        connection_cache_seconds=0,
        health_flush_seconds=3600,  # the test flushes when it wants the row written
    )
    own = dataclasses.replace(services, settings=settings, clock=clock, _dispatcher=None)
    dispatcher = await own.new_dispatcher()
    retry_queue = f"test-retries-{uuid.uuid4().hex[:8]}"
    dispatcher.retries = RetryScheduler(
        await services.storage.queue(retry_queue), (30,), services.events
    )
    yield dispatcher, clock, retry_queue
    await dispatcher.close()
    await services.storage.queues.delete_queue(retry_queue)


async def health_of(api: Api, uid: str) -> dict[str, Any]:
    status, got = await api.call("GET", f"{PATH}/{uid}")
    assert status == 200, got
    return dict(got["Health"])


# ------------------------------------------------------------- verification on save


async def test_a_wrong_key_is_a_400_naming_the_property_and_nothing_is_stored(
    api: Api, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    wrong = servicebus_emulator.connection_string_with_key("WRONGKEYVALUE0123=")
    status, problem = await api.call("POST", PATH, connection(wrong, unique_queue))
    assert status == 400, problem
    assert problem["title"] == "Verification failed"
    assert list(problem["errors"]) == ["ServiceBusConnectionString"]
    assert "authentication failed" in problem["errors"]["ServiceBusConnectionString"][0]
    assert "WRONGKEYVALUE" not in json.dumps(problem)
    assert await api.call("GET", PATH) == (200, [])


async def test_an_unknown_queue_in_strict_mode_is_a_400_and_a_known_one_gets_the_message(
    api: Api, servicebus_emulator_factory: Callable[..., Emulator]
) -> None:
    strict = servicebus_emulator_factory(strict=True, queues=["known"])
    cs = strict.connection_string
    status, problem = await api.call("POST", PATH, connection(cs, "unknown"))
    assert status == 400 and list(problem["errors"]) == ["QueueName"], problem
    assert await api.call("GET", PATH) == (200, [])

    status, created = await api.call("POST", PATH, connection(cs, "known"))
    assert status == 200, created
    health = created["Health"]
    assert health["Status"] == "Healthy" and health["LastSuccessAt"] is not None
    assert health["ConsecutiveFailures"] == 0 and health["LastError"] is None
    [message] = await receive(cs, "known", 1)
    assert json.loads(body_of(message))["EventKey"] == "System.ConnectionVerified"
    assert message.application_properties[b"EventKey"] == b"System.ConnectionVerified"
    again = connection(cs, "known", Uid=created["Uid"])
    assert (await api.call("POST", PATH, again))[0] == 409
    assert await nothing_arrives(cs, "known")  # a conflict is found before any send


async def test_the_claim_check_container_is_probed_and_a_refused_one_is_named(
    api: Api, servicebus_emulator: Emulator, storage_connection_string: str, unique_queue: str
) -> None:
    from azure.storage.blob.aio import ContainerClient

    container = f"probe-{uuid.uuid4().hex[:8]}"
    blob = {"BlobContainerConnectionString": storage_connection_string}
    sb = servicebus_emulator.connection_string
    wrong = re.sub(r"AccountKey=[^;]+", "AccountKey=V1JPTkdLRVk=", storage_connection_string)
    refused = connection(sb, unique_queue, BlobContainerConnectionString=wrong)
    status, problem = await api.call("POST", PATH, refused | {"BlobContainerName": container})
    assert status == 400, problem
    assert list(problem["errors"]) == ["BlobContainerConnectionString"]
    assert "V1JPTkdLRVk" not in json.dumps(problem)

    sent = connection(sb, unique_queue, BlobContainerName=container, **blob)
    status, created = await api.call("POST", PATH, sent)
    assert status == 200 and created["Health"]["Status"] == "Healthy", created
    async with ContainerClient.from_connection_string(storage_connection_string, container) as c:
        assert await c.exists()  # made by the probe, which left nothing behind
        assert [b.name async for b in c.list_blobs()] == []


async def test_verify_false_saves_without_sending_and_inactive_connections_are_not_verified(
    api: Api, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    cs = servicebus_emulator.connection_string
    status, created = await api.call("POST", UNVERIFIED, connection(cs, unique_queue))
    assert status == 200, created
    assert created["Health"]["Status"] == "Healthy"
    assert created["Health"]["LastSuccessAt"] is None  # nothing was sent
    wrong = servicebus_emulator.connection_string_with_key("WRONGKEYVALUE0123=")
    status, inactive = await api.call("POST", PATH, connection(wrong, unique_queue, Active=False))
    assert status == 200, inactive
    assert await nothing_arrives(cs, unique_queue)


async def test_a_namespace_that_gives_no_answer_of_its_own_is_unreachable_and_not_saved(
    api: Api, servicebus_emulator_factory: Callable[..., Emulator], unique_queue: str
) -> None:
    busy = servicebus_emulator_factory()
    busy.refuse_sends(600)  # a Transient failure, as a timeout or a closed port would be
    status, problem = await api.call("POST", PATH, connection(busy.connection_string, unique_queue))
    assert status == 400, problem
    assert problem["errors"] == {
        "ServiceBusConnectionString": ["the namespace could not be reached"]
    }
    assert await api.call("GET", PATH) == (200, [])
    status, saved = await api.call("POST", UNVERIFIED, connection(busy.connection_string, "q"))
    assert status == 200 and saved["Health"]["Status"] == "Healthy"  # ?verify=false saves


# ------------------------------------------------------------- health and suspension


async def test_health_goes_failing_then_suspended_keeps_events_and_a_fixed_put_heals_it(
    api: Api,
    services: Services,
    account: str,
    outage: tuple[Dispatcher, SetClock, str],
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    dispatcher, clock, retry_queue = outage
    assert dispatcher.health is not None
    strict = servicebus_emulator_factory(strict=True, queues=["known"])
    cs = strict.connection_string
    # Saved unverified (the namespace "was not reachable"), pointing at a missing queue.
    status, created = await api.call("POST", UNVERIFIED, connection(cs, "missing"))
    assert status == 200 and created["Health"]["Status"] == "Healthy", created
    uid = uuid.UUID(created["Uid"])

    async def deliver(data: Any) -> Any:
        stored = await services.connections.get(account, uid)
        return await dispatcher.deliver(an_event(account, data=data), stored)

    failed = await deliver({"N": 0})
    assert failed.message.status == MessageStatus.FAILED
    await dispatcher.health.flush()
    health = await health_of(api, created["Uid"])
    assert (health["Status"], health["ConsecutiveFailures"]) == ("Failing", 1)
    assert health["LastError"]["Category"] == "Configuration"
    assert health["LastError"]["Type"] == "MessagingEntityNotFoundError"

    clock.now += SUSPEND_AFTER  # every delivery has failed with Configuration for 3 days
    await deliver({"N": 1})
    await dispatcher.health.flush()
    health = await health_of(api, created["Uid"])
    assert (health["Status"], health["ConsecutiveFailures"]) == ("Suspended", 2)
    assert health["LastError"]["Category"] == "Configuration"  # why, for the operators
    scheduled_before = await queue_length(services, retry_queue)
    assert scheduled_before == 2  # the two Configuration failures were retried

    kept = [await deliver({"N": n, "Name": "Ada"}) for n in (2, 3)]
    await dispatcher.health.flush()
    for record in kept:
        metadata = json.loads(record.message.request_metadata)
        assert record.message.status == MessageStatus.FAILED
        assert metadata["Error"]["Category"] == "Suspended"
        assert json.loads(record.message.message_body)["Data"]["Name"] == "Ada"
    assert await queue_length(services, retry_queue) == scheduled_before  # not retried
    assert (await health_of(api, created["Uid"]))["ConsecutiveFailures"] == 2
    stored = await services.connections.get(account, uid)
    page = await services.messages.page(stored.log_partition, MessageQuery(only_failed=True))
    assert page.total_hits == 4  # the kept events are in the log, with their bodies

    status, got = await api.call("GET", f"{PATH}/{uid}")
    status, fixed = await api.call("PUT", PATH, {**got, "QueueName": "known"})  # *** kept
    assert status == 200, fixed
    assert fixed["Health"]["Status"] == "Healthy" and fixed["Health"]["LastSuccessAt"]
    assert (await health_of(api, created["Uid"]))["Status"] == "Healthy"
    delivered = await deliver({"N": 4})
    assert delivered.message.status == MessageStatus.SUCCEEDED


async def test_resume_ends_a_suspension_and_is_404_for_an_unknown_connection(
    api: Api, services: Services, account: str, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    cs = servicebus_emulator.connection_string
    _, created = await api.call("POST", UNVERIFIED, connection(cs, unique_queue))
    uid = uuid.UUID(created["Uid"])
    error = DeliveryError(category=ErrorCategory.CONFIGURATION, type="X", message="m")
    suspended = HealthState(HealthStatus.SUSPENDED, T0, None, T0, 9, error, T0)
    await services.health.put(account, uid, suspended)
    assert (await health_of(api, created["Uid"]))["Status"] == "Suspended"

    status, resumed = await api.call("POST", f"{PATH}/{uid}/resume")
    assert status == 200, resumed
    assert resumed["Health"]["Status"] == "Healthy"
    assert resumed["Health"]["ConsecutiveFailures"] == 0
    assert resumed["Health"]["LastFailureAt"] is not None  # the history is kept
    assert await health_of(api, created["Uid"]) == resumed["Health"]
    assert (await api.call("POST", f"{PATH}/{uuid.uuid4()}/resume"))[0] == 404


# ------------------------------------------------------------- the merge rule


def seen(*outcomes: tuple[int, ErrorCategory | None]) -> Outcomes:
    result = Outcomes()
    for minute, category in outcomes:
        error = DeliveryError(category=category, type="T", message="m") if category else None
        result.add(T0 + timedelta(minutes=minute), error)
    return result


CONFIG, TRANSIENT = ErrorCategory.CONFIGURATION, ErrorCategory.TRANSIENT


def test_merging_writers_adds_failures_and_a_success_starts_them_over() -> None:
    state = HealthState.new(T0)
    now = T0 + timedelta(minutes=10)
    state = merge(state, seen((1, CONFIG), (2, CONFIG)), now, SUSPEND_AFTER)
    assert (state.status, state.consecutive_failures, state.failing_since) == (
        HealthStatus.FAILING,
        2,
        T0 + timedelta(minutes=1),
    )
    other = merge(state, seen((3, CONFIG)), now, SUSPEND_AFTER)  # another process's window
    assert other.consecutive_failures == 3 and other.failing_since == state.failing_since
    assert other.since == state.since  # still Failing: Since unchanged
    healed = merge(other, seen((4, CONFIG), (5, None)), now, SUSPEND_AFTER)
    assert (healed.status, healed.consecutive_failures) == (HealthStatus.HEALTHY, 0)
    assert healed.last_success_at == T0 + timedelta(minutes=5) and healed.since == now


def test_a_transient_failure_breaks_the_run_that_leads_to_suspension() -> None:
    failing = merge(HealthState.new(T0), seen((0, CONFIG)), T0, SUSPEND_AFTER)
    later = T0 + SUSPEND_AFTER
    degraded = merge(failing, seen((1, TRANSIENT)), later, SUSPEND_AFTER)
    assert degraded.status == HealthStatus.DEGRADED and degraded.failing_since is None
    again = merge(degraded, seen((2, CONFIG)), later, SUSPEND_AFTER)
    assert again.status == HealthStatus.FAILING  # a new run starts now
    suspended = merge(failing, seen((1, CONFIG)), later, SUSPEND_AFTER)
    assert suspended.status == HealthStatus.SUSPENDED
    assert merge(suspended, seen((3, None)), later, SUSPEND_AFTER) == suspended  # only a resume


def test_an_open_breaker_makes_a_healthy_connection_degraded() -> None:
    state = merge(HealthState.new(T0), seen((1, None)), T0, SUSPEND_AFTER, breaker_open=True)
    assert state.status == HealthStatus.DEGRADED
    assert merge(HealthState.new(T0), seen((1, None)), T0, SUSPEND_AFTER).status == "Healthy"


async def test_many_outcomes_cost_one_write_per_flush(services: Services, account: str) -> None:
    writes: list[uuid.UUID] = []

    class Counting(HealthRepository):
        async def update(self, account: str, uid: uuid.UUID, change: Any) -> HealthState:
            writes.append(uid)
            return await super().update(account, uid, change)

    repository = Counting(await services.storage.table(CONNECTIONS_TABLE))
    tracker = HealthTracker(
        repository, lambda: T0, flush_seconds=3600, suspend_after_seconds=60, cache_seconds=0
    )
    uid = uuid.uuid4()
    error = DeliveryError(category=TRANSIENT, type="T", message="m")
    for _ in range(500):
        tracker.observe(account, uid, T0, error)
    await tracker.flush()
    assert writes == [uid]
    state = await repository.get(account, uid)
    assert state is not None and state.consecutive_failures == 500
    assert state.status == HealthStatus.DEGRADED


async def test_outcomes_are_written_by_the_timer_without_a_call(
    services: Services, account: str
) -> None:
    repository = HealthRepository(await services.storage.table(CONNECTIONS_TABLE))
    tracker = HealthTracker(
        repository, lambda: T0, flush_seconds=0.1, suspend_after_seconds=60, cache_seconds=0
    )
    uid = uuid.uuid4()
    tracker.observe(account, uid, T0, None)
    for _ in range(100):  # polled, not timed: the timer writes within its interval
        if (state := await repository.get(account, uid)) is not None:
            break
        await asyncio.sleep(0.1)
    assert state is not None and state.last_success_at == T0


async def queue_length(services: Services, name: str) -> int:
    queue = await services.storage.queue(name)
    return (await queue.get_queue_properties()).approximate_message_count or 0  # delayed too
