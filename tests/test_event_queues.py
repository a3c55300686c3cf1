"""Ingestion over N system-events queues (shared/eventqueues.py): an account always on the same
queue, accounts spread evenly, each queue drained by the same trigger code end to end, N=1 the
single `system-events` queue of before. Against Azurite, the local host and the Service Bus
emulator."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import azure.functions as func
import pytest

from local.servicebus.emulator import Emulator
from shared.clock import system_clock
from shared.eventqueues import (
    is_system_event_queue,
    queue_name,
    queue_of,
    shard_of,
    system_event_queues,
)
from shared.events import encode_queue_message, new_event
from shared.publisher import EventPublisher, queue_for
from shared.service.poison import replay, replayable_queues
from shared.services import Services
from shared.settings import SettingsError, system_event_queue_count
from shared.storage.clients import POISON_SUFFIX, SYSTEM_EVENTS_QUEUE
from shared.triggers import add_system_event_triggers
from tests.factories import a_connection, eventually
from tests.plugins.localhost import ThreadedHost
from tests.servicebus_helpers import receive

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

ACCOUNTS = [f"account-{n}" for n in range(10_000)]


def test_one_queue_is_the_system_events_queue_of_before() -> None:
    assert system_event_queues(1) == (SYSTEM_EVENTS_QUEUE,)
    assert {queue_of(a, 1) for a in ACCOUNTS[:100]} == {"system-events"}
    assert system_event_queue_count({}) == 1
    event = new_event("acme", "Order.Shipped", system_clock(), "orders/1")
    assert queue_for(event, 1) == "system-events"


def test_an_account_always_maps_to_the_same_queue() -> None:
    # Pinned: a change of hash would move accounts between queues on upgrade (and reorder
    # their events while both queues drain), so it must be a deliberate one.
    assert [shard_of(a, 8) for a in ("acme", "contoso", "fabrikam", "")] == [1, 0, 5, 5]
    assert all(shard_of(a, 8) == shard_of(a, 8) for a in ACCOUNTS[:100])
    event = new_event("fabrikam", "Order.Shipped", system_clock(), "orders/1")
    assert queue_for(event, 8) == "system-events-5" == queue_of("fabrikam", 8)


@pytest.mark.parametrize("count", [2, 3, 8, 16])
def test_accounts_spread_evenly_over_the_queues(count: int) -> None:
    per_queue = Counter(shard_of(a, count) for a in ACCOUNTS)
    assert set(per_queue) == set(range(count))
    fair = len(ACCOUNTS) / count
    # Binomial spread: a standard deviation of about sqrt(fair); 15% is over 4 of them at 16.
    assert all(abs(n - fair) <= 0.15 * fair for n in per_queue.values()), per_queue


def test_one_more_queue_moves_only_its_share_of_accounts() -> None:
    moved = [a for a in ACCOUNTS if shard_of(a, 4) != shard_of(a, 5)]
    assert all(shard_of(a, 5) == 4 for a in moved)  # only to the new queue
    assert 0.15 < len(moved) / len(ACCOUNTS) < 0.25  # about 1/5


def test_queue_names_and_the_setting() -> None:
    assert system_event_queues(3) == ("system-events", "system-events-1", "system-events-2")
    assert queue_name(12) == "system-events-12"
    assert is_system_event_queue("system-events-12")
    for other in ("system-events-poison", "system-events-1-poison", "system-events-01", "x-1"):
        assert not is_system_event_queue(other), other
    assert system_event_queue_count({"SYSTEM_EVENT_QUEUE_COUNT": "4"}) == 4
    for bad in ("0", "65", "-1", "two", "1.5"):
        with pytest.raises(SettingsError, match="SYSTEM_EVENT_QUEUE_COUNT"):
            system_event_queue_count({"SYSTEM_EVENT_QUEUE_COUNT": bad})
    assert replayable_queues(2) == (
        "system-events",
        "system-events-1",
        "delivery-retries",
        "replays",
    )


def accounts_on_each_queue(count: int) -> list[str]:
    """One fresh account per queue, each hashing to its own."""
    found: dict[int, str] = {}
    while len(found) < count:
        account = f"acct-{uuid.uuid4().hex[:12]}"
        found.setdefault(shard_of(account, count), account)
    return [found[shard] for shard in range(count)]


def sharded_app(count: int) -> func.FunctionApp:
    """The app's dispatch triggers for `count` queues, generated as at import."""
    blueprint = func.Blueprint()
    add_system_event_triggers(blueprint, count)
    app = func.FunctionApp()
    app.register_functions(blueprint)
    return app


def test_each_queue_has_its_own_function() -> None:
    functions = sharded_app(3).get_functions()
    triggers = {f.get_function_name(): f.get_trigger() for f in functions}
    bound = {name: t.get_dict_repr() for name, t in triggers.items() if t is not None}
    assert {name: t["queueName"] for name, t in bound.items()} == {
        "dispatch_system_event": "system-events",
        "dispatch_system_event_1": "system-events-1",
        "dispatch_system_event_2": "system-events-2",
    }
    assert {t["type"] for t in bound.values()} == {"queueTrigger"}


async def test_events_on_every_queue_are_dispatched_end_to_end(
    local_host_factory: Callable[..., ThreadedHost],
    services: Services,
    servicebus_emulator: Emulator,
    unique_queue: str,
) -> None:
    count = 3
    cs = servicebus_emulator.connection_string
    accounts = accounts_on_each_queue(count)
    for account in accounts:
        connection = a_connection(ServiceBusConnectionString=cs, QueueName=unique_queue)
        await services.connections.add(account, connection, services.clock())
    local_host_factory(sharded_app(count))
    events = [
        new_event(account, "Order.Shipped", services.clock(), f"orders/{n}", {"N": n})
        for account in accounts
        for n in range(2)
    ]
    publisher = EventPublisher(services.storage.queue, services.events, queue_count=count)
    await publisher.publish(*events)

    received = await receive(cs, unique_queue, len(events))
    assert sorted(m.correlation_id for m in received) == sorted(e.event_id for e in events)
    for queue in system_event_queues(count):  # each drained by its own trigger
        client = await services.storage.queue(queue)
        assert await eventually(drained(client)), queue


def drained(queue: QueueClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await queue.get_queue_properties()).approximate_message_count == 0

    return check


async def test_a_malformed_event_goes_to_its_own_queues_poison_and_back(
    local_host_factory: Callable[..., ThreadedHost], services: Services
) -> None:
    queue = queue_name(2)
    local_host_factory(sharded_app(3))
    malformed = json.dumps({"EventId": uuid.uuid4().hex}).encode()
    await (await services.storage.queue(queue)).send_message(encode_queue_message(malformed))
    poison = await services.storage.queue(queue + POISON_SUFFIX)

    async def poisoned() -> bool:
        found = [base64.b64decode(m.content) for m in await poison.peek_messages(32)]
        return malformed in found

    await eventually(poisoned)
    # A well-formed one in that poison queue goes back to its queue, not to system-events.
    event = new_event("acme", "Order.Shipped", services.clock(), "orders/1")
    await poison.send_message(encode_queue_message(json.dumps(event.to_json()).encode()))
    replayed = await replay(services, queue)
    assert replayed.replayed >= 1 and replayed.kept >= 1


def test_the_app_generates_its_triggers_from_the_setting_at_import() -> None:
    code = (
        "import function_app\n"
        "for f in function_app.app.get_functions():\n"
        "    t = f.get_trigger().get_dict_repr()\n"
        "    if t['type'] == 'queueTrigger': print(f.get_function_name(), t['queueName'])\n"
    )
    env = {**os.environ, "SYSTEM_EVENT_QUEUE_COUNT": "3"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    bound = dict(line.split() for line in run.stdout.splitlines())
    assert {n: q for n, q in bound.items() if q.startswith("system-events")} == {
        "dispatch_system_event": "system-events",
        "dispatch_system_event_1": "system-events-1",
        "dispatch_system_event_2": "system-events-2",
    }
    assert {"retry_delivery", "replay_records"} <= set(bound)
