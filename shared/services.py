"""Wiring (the composition root): settings, storage clients, repositories and the dispatcher,
made once per process and event loop. Nothing here decides anything; the parts do."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.clock import Clock, system_clock
from shared.settings import IsolationSettings, Settings

if TYPE_CHECKING:
    from shared.crypto import KeyRing
    from shared.dispatch.dispatcher import Dispatcher
    from shared.dispatch.entra import CredentialFactory
    from shared.events import EventStore
    from shared.models.events import SystemEvent
    from shared.service.ownership import ConsentStates
    from shared.storage.apikeys import ApiKeyRepository
    from shared.storage.audit import AuditLog
    from shared.storage.clients import StorageClients
    from shared.storage.connections import ConnectionRepository
    from shared.storage.healthrows import HealthRepository
    from shared.storage.messages import MessageLog
    from shared.storage.ownership import OwnershipRepository
    from shared.storage.portalsessions import PortalSessionRepository
    from shared.storage.replays import ReplayRepository


@dataclass
class Services:
    settings: Settings
    storage: StorageClients
    connections: ConnectionRepository
    api_keys: ApiKeyRepository
    portal_sessions: PortalSessionRepository
    messages: MessageLog
    events: EventStore
    health: HealthRepository
    replays: ReplayRepository
    ownership: OwnershipRepository
    consent_states: ConsentStates
    audit: AuditLog
    clock: Clock = field(default=system_clock)
    _dispatcher: Dispatcher | None = None
    _making_dispatcher: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def open(cls, settings: Settings, clock: Clock = system_clock) -> Services:
        # Imported on first use, not with this module: the API modules import it at start-up,
        # and cryptography and the repositories are not needed to index the app (cold start).
        from shared.crypto import KeyRing
        from shared.storage import clients

        storage = clients.StorageClients(settings.storage)
        try:
            return await cls._made(settings, storage, KeyRing(settings.encryption_keys), clock)
        except BaseException:  # cancelled (Ctrl-C) or failed: close what was opened
            await storage.close()
            raise

    @classmethod
    async def _made(
        cls, settings: Settings, storage: StorageClients, keys: KeyRing, clock: Clock
    ) -> Services:
        from shared.events import EventStore
        from shared.service.ownership import ConsentStates
        from shared.storage import clients
        from shared.storage.apikeys import ApiKeyRepository
        from shared.storage.audit import AuditLog
        from shared.storage.connections import ConnectionRepository
        from shared.storage.healthrows import HealthRepository
        from shared.storage.messages import MessageLog
        from shared.storage.ownership import OwnershipRepository
        from shared.storage.portalsessions import PortalSessionRepository
        from shared.storage.replays import ReplayRepository

        bodies = await storage.container(clients.BODIES_CONTAINER)
        return cls(
            settings=settings,
            storage=storage,
            connections=ConnectionRepository(
                await storage.table(clients.CONNECTIONS_TABLE),
                keys,
                recent_seconds=settings.connection_cache_seconds,
            ),
            api_keys=ApiKeyRepository(await storage.table(clients.API_KEYS_TABLE), clock=clock),
            portal_sessions=PortalSessionRepository(
                await storage.table(clients.PORTAL_SESSIONS_TABLE)
            ),
            messages=MessageLog(await storage.table(clients.MESSAGES_TABLE), bodies),
            events=EventStore(
                bodies,
                settings.limits.event_bytes,
                clock,
                timedelta(hours=settings.event_window_hours),
            ),
            health=HealthRepository(await storage.table(clients.CONNECTIONS_TABLE)),
            replays=ReplayRepository(await storage.table(clients.REPLAYS_TABLE)),
            ownership=OwnershipRepository(
                await storage.table(clients.OWNERSHIP_TABLE), keys.derived("confirmation codes")
            ),
            consent_states=ConsentStates(keys.derived("consent states")),
            audit=AuditLog(await storage.table(clients.AUDIT_TABLE)),
            clock=clock,
        )

    async def dispatcher(self) -> Dispatcher:
        """The dispatcher and its Service Bus senders, made on first use (HTTP-only callers
        never pay for them). Made once: the first burst of invocations asks at once, and each
        dispatcher has its own bulkheads and senders."""
        async with self._making_dispatcher:
            if self._dispatcher is None:
                self._dispatcher = await self.new_dispatcher()
        return self._dispatcher

    async def new_dispatcher(
        self,
        retry_delays: tuple[float, ...] | None = None,
        credentials: CredentialFactory | None = None,
        blob_options: dict[str, Any] | None = None,
        isolation: IsolationSettings | None = None,
    ) -> Dispatcher:
        """A dispatcher of its own (tests and benchmarks; the app uses `dispatcher()`)."""
        # Imported here, not at the top: the dispatch code and the Service Bus SDK stay out of
        # the cold start of HTTP-only workers.
        from shared.dispatch.claimcheck import ClaimCheckStore
        from shared.dispatch.dispatcher import Dispatcher
        from shared.dispatch.healthtracker import HealthTracker
        from shared.dispatch.isolation import Isolation
        from shared.dispatch.retries import RetryScheduler
        from shared.dispatch.servicebus import SenderPool
        from shared.endpoints import ConnectGuard
        from shared.storage import clients

        retries = RetryScheduler(
            await self.storage.queue(clients.RETRY_QUEUE),
            retry_delays or self.settings.retry_delays_seconds,
            self.events,
        )
        isolated = Isolation(isolation or self.settings.isolation)
        guard = ConnectGuard(self.settings.allow_local_endpoints)
        read_timeout = isolated.settings.attempt_timeout_seconds
        return Dispatcher(
            connections=self.connections,
            records=self.messages,
            retries=retries,
            clock=self.clock,
            connection_cache_seconds=self.settings.connection_cache_seconds,
            isolation=isolated,
            # None: Entra ID tokens through the managed identity
            senders=SenderPool(guard=guard, credentials=credentials),
            claims=ClaimCheckStore(guard, blob_options, read_timeout=read_timeout),
            health=HealthTracker(
                self.health,
                self.clock,
                flush_seconds=self.settings.health_flush_seconds,
                suspend_after_seconds=self.settings.suspend_after_seconds,
                cache_seconds=self.settings.connection_cache_seconds,
                breaker_open=isolated.breakers.is_open,
                notify=self.publish,  # System.ConnectionHealthChanged, as any event
            ),
        )

    async def publish(self, *events: SystemEvent) -> list[str]:
        """Put events on the system-events queue(s) as the platform does (shared/publisher.py),
        making the queue where it is missing; their EventIds."""
        from shared.publisher import EventPublisher

        count = self.settings.system_event_queue_count
        publisher = EventPublisher(self.storage.queue, self.events, queue_count=count)
        return await publisher.publish(*events)

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
