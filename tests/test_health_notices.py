"""Issue 26: `System.ConnectionHealthChanged`, published when a connection's health changes
status and delivered to the account's other connections that enable it.

Over the real path: the test's own dispatcher (the app's parts, an injected clock) writes the
health row and publishes the notice to the system-events queue on Azurite; the app's local
host, triggers and all, dispatches it to the connections on the Service Bus emulator.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from shared import catalog
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.healthnotice import ACTIONS
from shared.dispatch.healthtracker import HealthTracker
from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.models.events import SystemEvent
from shared.models.records import DeliveryError, ErrorCategory, MessageQuery, MessageStatus
from shared.services import Services
from tests.factories import PATH, UNVERIFIED, SetClock, an_event
from tests.plugins.app import Api
from tests.servicebus_helpers import Subscriber, body_of, nothing_arrives

KEY = catalog.HEALTH_CHANGED_EVENT_KEY


@pytest.fixture
async def watched(services: Services) -> AsyncIterator[tuple[Dispatcher, SetClock]]:
    """A dispatcher with an injected clock and no connection cache; the test flushes health."""
    clock = SetClock()
    settings = dataclasses.replace(
        services.settings, connection_cache_seconds=0, health_flush_seconds=3600
    )
    own = dataclasses.replace(services, settings=settings, clock=clock, _dispatcher=None)
    dispatcher = await own.new_dispatcher(retry_delays=(3600,))
    yield dispatcher, clock
    await dispatcher.close()


def data_of(message: Any) -> dict[str, Any]:
    body = json.loads(body_of(message))
    assert body["EventKey"] == KEY, body
    return dict(body["Data"]) | {"Subject": body["Subject"]}


async def test_other_connections_hear_a_connection_fail_and_recover_but_not_itself(
    api: Api,
    services: Services,
    account: str,
    watched: tuple[Dispatcher, SetClock],
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    dispatcher, clock = watched
    assert dispatcher.health is not None
    emulator = servicebus_emulator_factory(strict=True, queues=["fixed", "watcher", "everything"])
    cs = emulator.connection_string

    async def create(queue: str, events: list[str], title: str) -> uuid.UUID:
        body = {"ServiceBusConnectionString": cs, "QueueName": queue, "EnabledEvents": events}
        status, created = await api.call("POST", UNVERIFIED, body | {"Title": title})
        assert status == 200, created
        return uuid.UUID(created["Uid"])

    # The broken one enables the notice too: it must still not be sent its own alarm.
    broken = await create("missing", ["Order.*", KEY], "Orders")
    await create("watcher", [KEY], "Watcher")
    await create("everything", ["*"], "Everything")  # `*` is business events only
    stored = await services.connections.get(account, broken)

    async with Subscriber(cs, "watcher") as watcher:
        failed = await dispatcher.deliver(an_event(account, "Order.Created"), stored)
        assert failed.message.status == MessageStatus.FAILED
        await dispatcher.health.flush()
        [notice] = await watcher.receive(1)
        data = data_of(notice)
        assert data["Subject"] == f"connections/{broken}"
        assert (data["ConnectionUid"], data["Title"]) == (str(broken), "Orders")
        assert (data["OldState"], data["NewState"]) == ("Healthy", "Failing")
        assert data["Reason"]["Category"] == "Configuration"
        assert data["Reason"]["Type"] == "MessagingEntityNotFoundError"
        assert data["Action"] == ACTIONS[HealthStatus.FAILING]
        assert datetime.fromisoformat(data["At"]) == clock.now

        clock.now += timedelta(minutes=5)  # the customer fixed the queue's name
        fixed = dataclasses.replace(
            stored, connection=stored.connection.model_copy(update={"queue_name": "fixed"})
        )
        succeeded = await dispatcher.deliver(an_event(account, "Order.Created"), fixed)
        assert succeeded.message.status == MessageStatus.SUCCEEDED
        await dispatcher.health.flush()
        [recovered] = await watcher.receive(1)
        data = data_of(recovered)
        assert (data["OldState"], data["NewState"]) == ("Failing", "Healthy")
        assert data["Reason"] is None and data["Action"] == ACTIONS[HealthStatus.HEALTHY]

        # A heartbeat writes the row again, the same status: no notice.
        writes, notices = dispatcher.health.writes, dispatcher.health.notices
        clock.now += timedelta(minutes=2)
        await dispatcher.deliver(an_event(account, "Order.Created"), fixed)
        await dispatcher.health.flush()
        assert (dispatcher.health.writes, dispatcher.health.notices) == (writes + 1, notices)
        assert await watcher.receive(1, timeout=2) == []

    assert await nothing_arrives(cs, "everything")
    page = await services.messages.page(stored.log_partition, MessageQuery())
    assert {m.event_key for m in page.messages} == {"Order.Created"}  # never its own notice


async def test_a_failed_publish_never_breaks_the_health_write(
    services: Services, account: str
) -> None:
    async def refuse(event: SystemEvent) -> None:
        raise ConnectionError("the queue is down")

    clock = SetClock()
    tracker = HealthTracker(
        services.health,
        clock,
        flush_seconds=3600,
        suspend_after_seconds=3600,
        cache_seconds=0,
        notify=refuse,
    )
    uid = uuid.uuid4()
    error = DeliveryError(category=ErrorCategory.CONFIGURATION, type="T", message="m")
    tracker.observe(account, uid, clock.now, error, "Title")
    await tracker.flush()
    assert (tracker.writes, tracker.notices) == (1, 0)
    state = await services.health.get(account, uid)
    assert state is not None and state.status == HealthStatus.FAILING


def test_star_leaves_out_system_events_which_are_enabled_by_name_or_prefix() -> None:
    assert KEY in catalog.catalog()
    assert not catalog.delivers("*", KEY)
    assert catalog.delivers("System.*", KEY) and catalog.delivers(KEY, KEY)
    assert catalog.delivers("*", "Order.Created")


async def test_a_daily_digest_line_names_each_connection_that_is_not_healthy(
    services: Services, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SetClock()
    clock.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    tracker = HealthTracker(
        services.health, clock, flush_seconds=3600, suspend_after_seconds=3600, cache_seconds=0
    )
    failing, healthy = uuid.uuid4(), uuid.uuid4()
    error = DeliveryError(category=ErrorCategory.CONFIGURATION, type="T", message="secret-free")

    def digest_lines() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if "health digest" in r.getMessage()]
        caplog.clear()
        return lines

    caplog.set_level("INFO", logger="shared.dispatch")
    tracker.observe(account, failing, clock.now, error)
    tracker.observe(account, healthy, clock.now, None)
    await tracker.flush()
    [line] = digest_lines()
    assert str(failing) in line and "Failing" in line and "Configuration T" in line

    clock.now += timedelta(hours=1)  # the same day: no second digest
    tracker.observe(account, failing, clock.now, error)
    await tracker.flush(everything=True)
    assert digest_lines() == []

    clock.now += timedelta(days=1)  # the next day's first flush lists it again
    tracker.observe(account, healthy, clock.now, None)
    await tracker.flush(everything=True)
    [line] = digest_lines()
    assert str(failing) in line and str(healthy) not in line


async def test_a_suspension_ended_by_resume_or_a_verified_save_is_heard_once(
    api: Api,
    services: Services,
    account: str,
    servicebus_emulator_factory: Callable[..., Emulator],
) -> None:
    """Health written outside the tracker (a resume, a verified PUT) publishes the notice
    too, once: a second resume changes nothing and says nothing."""
    emulator = servicebus_emulator_factory(strict=True, queues=["broken", "watcher"])
    cs = emulator.connection_string
    broken = {"ServiceBusConnectionString": cs, "QueueName": "broken", "Title": "Orders"}
    status, created = await api.call("POST", UNVERIFIED, broken)
    assert status == 200, created
    uid = uuid.UUID(created["Uid"])
    watcher = {"ServiceBusConnectionString": cs, "QueueName": "watcher", "EnabledEvents": [KEY]}
    assert (await api.call("POST", UNVERIFIED, watcher))[0] == 200
    error = DeliveryError(category=ErrorCategory.CONFIGURATION, type="T", message="m")
    now = datetime.now(UTC)
    suspended = HealthState(HealthStatus.SUSPENDED, now, None, now, 9, error, now)

    async with Subscriber(cs, "watcher") as heard:
        await services.health.put(account, uid, suspended)
        assert (await api.call("POST", f"{PATH}/{uid}/resume"))[0] == 200
        [notice] = await heard.receive(1)
        data = data_of(notice)
        assert (data["ConnectionUid"], data["Title"]) == (str(uid), "Orders")
        assert (data["OldState"], data["NewState"]) == ("Suspended", "Healthy")
        assert data["Action"] == ACTIONS[HealthStatus.HEALTHY]
        assert (await api.call("POST", f"{PATH}/{uid}/resume"))[0] == 200  # Healthy already
        assert await heard.receive(1, timeout=2) == []

        await services.health.put(account, uid, suspended)
        saved = await api.call("PUT", PATH, broken | {"Uid": str(uid)})  # verified: it ends
        assert saved[0] == 200 and saved[1]["Health"]["Status"] == "Healthy", saved
        [notice] = await heard.receive(1)
        assert (data_of(notice)["OldState"], data_of(notice)["NewState"]) == (
            "Suspended",
            "Healthy",
        )
        assert await heard.receive(1, timeout=2) == []
