"""The process dies mid-delivery (SIGKILL): after a restart every event is delivered, and
repeats carry the same message_id (CONTRACT section 5)."""

import time
from collections import defaultdict
from collections.abc import Callable

from local.servicebus.emulator import Emulator
from shared.events import new_event
from shared.services import Services
from tests.factories import a_connection
from tests.plugins.localhost import HostProcess
from tests.servicebus_helpers import Subscriber


async def test_events_survive_a_killed_process(
    app_environment: dict[str, str],
    own_storage: tuple[str, Services],
    unique_queue: str,
    servicebus_emulator_factory: Callable[..., Emulator],
    local_host_process_factory: Callable[..., HostProcess],
) -> None:
    storage, services = own_storage
    env = {**app_environment, "AzureWebJobsStorage": storage}
    emulator = servicebus_emulator_factory()
    emulator.delay_sends(300)  # slow enough that the kill lands mid-way
    cs = emulator.connection_string
    account = "crash-test"
    connection = a_connection(ServiceBusConnectionString=cs, QueueName=unique_queue)
    await services.connections.add(account, connection, services.clock())
    events = [
        new_event(account, "Order.Created", services.clock(), data={"N": n}) for n in range(60)
    ]
    for event in events:
        await services.publish(event)

    lease = ["--message-lease", "3"]  # a killed host's messages come back after 3 s
    async with Subscriber(cs, unique_queue) as subscriber:
        first = local_host_process_factory("function_app:app", env=env, args=lease)
        received = await subscriber.receive(1, timeout=30)
        first.kill()
        assert 1 <= len(received) < len(events)  # killed in the middle

        emulator.delay_sends(0)
        local_host_process_factory("function_app:app", env=env, args=lease)
        deadline = time.monotonic() + 60
        ids = {e.event_id for e in events}
        while {m.correlation_id for m in received} < ids and time.monotonic() < deadline:
            received += await subscriber.receive(60, timeout=3)

    by_event: dict[str, set[str]] = defaultdict(set)
    for message in received:
        by_event[message.correlation_id].add(message.message_id)
    assert set(by_event) == ids  # every event delivered
    assert all(len(message_ids) == 1 for message_ids in by_event.values())  # same id on repeats
