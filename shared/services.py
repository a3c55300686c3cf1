"""Wiring: settings, storage clients and repositories, made once per process and event loop."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.clock import Clock, system_clock
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.dispatch.dispatcher import Dispatcher
    from shared.events import EventStore
    from shared.models import SystemEvent
    from shared.storage.apikeys import ApiKeyRepository
    from shared.storage.clients import StorageClients
    from shared.storage.connections import ConnectionRepository
    from shared.storage.messages import MessageLog


@dataclass
class Services:
    settings: Settings
    storage: StorageClients
    connections: ConnectionRepository
    api_keys: ApiKeyRepository
    messages: MessageLog
    events: EventStore
    clock: Clock = field(default=system_clock)
    _dispatcher: Dispatcher | None = None

    @classmethod
    async def open(cls, settings: Settings, clock: Clock = system_clock) -> Services:
        from shared.crypto import KeyRing
        from shared.events import EventStore
        from shared.storage import clients
        from shared.storage.apikeys import ApiKeyRepository
        from shared.storage.connections import ConnectionRepository
        from shared.storage.messages import MessageLog

        storage = clients.StorageClients(settings.storage)
        keys = KeyRing(settings.encryption_keys)
        bodies = await storage.container(clients.BODIES_CONTAINER)
        return cls(
            settings=settings,
            storage=storage,
            connections=ConnectionRepository(await storage.table(clients.CONNECTIONS_TABLE), keys),
            api_keys=ApiKeyRepository(await storage.table(clients.API_KEYS_TABLE)),
            messages=MessageLog(await storage.table(clients.MESSAGES_TABLE), bodies),
            events=EventStore(bodies, settings.limits.event_bytes),
            clock=clock,
        )

    async def dispatcher(self) -> Dispatcher:
        """The dispatcher and its Service Bus senders, made on first use (HTTP-only callers
        never pay for them)."""
        if self._dispatcher is None:
            from shared.dispatch.dispatcher import Dispatcher
            from shared.storage import clients

            retry_queue = await self.storage.queue(clients.RETRY_QUEUE)
            self._dispatcher = Dispatcher(self, retry_queue, self.settings.retry_delays_seconds)
        return self._dispatcher

    async def publish(self, event: SystemEvent) -> None:
        """Put an event on the `system-events` queue, as the platform does."""
        from shared.events import encode_queue_message
        from shared.storage import clients

        queue = await self.storage.queue(clients.SYSTEM_EVENTS_QUEUE)
        payload = json.dumps(await self.events.to_payload(event), separators=(",", ":"))
        await queue.send_message(encode_queue_message(payload.encode()))

    async def close(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.close()
        await self.storage.close()


# Async SDK clients belong to the loop that made them; the Functions worker runs one loop.
_per_loop: dict[asyncio.AbstractEventLoop, asyncio.Task[Services]] = {}


async def get_services() -> Services:
    loop = asyncio.get_running_loop()
    task = _per_loop.get(loop)
    if task is None or (task.done() and task.exception() is not None):
        task = _per_loop[loop] = loop.create_task(Services.open(Settings.from_environment()))
    return await asyncio.shield(task)
