"""Publishing system events: how the platform that raises them puts them in.

Importable without the Functions runtime: it needs `azure-storage-queue`, `pydantic`, and a
credential (`azure-identity`), nothing of `azure-functions`. The platform runs it as a
principal holding `Storage Queue Data Message Sender` on the system-events queue(s) only
(infra: `publisherPrincipalId`), so it never creates queues; `make run` and the app's own
callers (`Services.publish`, `python -m shared.cli event publish`) go through it too.

    from datetime import UTC, datetime
    from azure.identity.aio import DefaultAzureCredential
    from shared.events import new_event
    from shared.publisher import EventPublisher

    async with (
        DefaultAzureCredential() as credential,
        EventPublisher.for_account("https://<account>.queue.core.windows.net", credential) as p,
    ):
        await p.publish(new_event("acme", "Order.Shipped", datetime.now(UTC), "orders/42"))

- **Batching.** A Storage queue takes one message per request, so `publish(*events)` sends
  many at once over one connection pool, at most `concurrency` requests in flight.
- **Retries.** A send that fails for a reason that may pass (no connection, a timeout, 408,
  429, 5xx) is tried again after 0.5, 1, 2, 4 s (`RetryPolicy`); anything else (403: the
  principal lacks the role, 404: no such queue) fails at once. Events that still fail are
  named in `PublishError`; the others are on the queue. Publishing one again with the same
  EventId is safe: a subscriber gets the same `message_id` and drops the repeat.
- **Which queue.** Every event goes through `queue_for`, the one place that picks its
  queue: with `SYSTEM_EVENT_QUEUE_COUNT` queues (default 1; the platform's publisher reads the
  same setting as the app, or is given `queue_count`), the one its account hashes to
  (shared/eventqueues.py), so one account's events keep their order on one queue.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shared.eventqueues import queue_of
from shared.events import EventStore, encode_queue_message
from shared.settings import system_event_queue_count

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

    from shared.models.events import SystemEvent

# Statuses of a send worth trying again; any other answer is final.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

QueueFor = Callable[[str], Awaitable["QueueClient"]]


def queue_for(event: SystemEvent, queue_count: int) -> str:
    """The queue `event` goes to when there are `queue_count`: every publish asks here."""
    return queue_of(event.account_id, queue_count)


@dataclass(frozen=True)
class RetryPolicy:
    """Tries of one send, with exponential back-off (and jitter) between them."""

    attempts: int = 5
    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the `failed_attempt`th try (1-based)."""
        base = min(self.max_delay_seconds, self.first_delay_seconds * 2 ** (failed_attempt - 1))
        return base * random.uniform(0.8, 1.2)


class PublishError(Exception):
    """Some events could not be published; the others were (`published`, by EventId)."""

    def __init__(self, published: list[str], failed: dict[str, BaseException]) -> None:
        self.published, self.failed = published, failed
        reasons = "; ".join(f"{event_id}: {describe(e)}" for event_id, e in failed.items())
        total = len(published) + len(failed)
        super().__init__(f"{len(failed)} of {total} events not published: {reasons}")


def describe(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}" + (f" {status}" if status else "")


def retryable(error: BaseException) -> bool:
    """Worth another try: the request may not have reached the queue, or the service asked
    to come back (408, 429, 5xx)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, ServiceRequestError | ServiceResponseError | asyncio.TimeoutError):
        return True
    return isinstance(error, HttpResponseError) and error.status_code in RETRYABLE_STATUS


@dataclass
class EventPublisher:
    """Puts events on the system-events queue(s): the right queue, base64 as the Functions
    host reads it, events over 48 KB through the blob container when there is one."""

    queue: QueueFor  # the client of a queue, by name
    events: EventStore = field(default_factory=lambda: EventStore(None))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 16
    # System-events queues (SYSTEM_EVENT_QUEUE_COUNT): the app's trigger count must match.
    queue_count: int = field(default_factory=system_event_queue_count)
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # tests give one that waits less
    _close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def for_account(cls, account_url: str, credential: Any, **options: Any) -> EventPublisher:
        """A publisher for the app's storage account (`https://<account>.queue.core.windows.net`,
        or the queue endpoint of another cloud) signing in with `credential`. The SDK's own
        retries are off: `retry` is the one retry."""
        from azure.storage.queue.aio import QueueServiceClient

        service = QueueServiceClient(account_url, credential=credential, retry_total=0)
        return cls.for_service(service, **options)

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> EventPublisher:
        """The same with a connection string (Azurite, `UseDevelopmentStorage=true`)."""
        from azure.storage.queue.aio import QueueServiceClient

        service = QueueServiceClient.from_connection_string(connection_string, retry_total=0)
        return cls.for_service(service, **options)

    @classmethod
    def for_service(cls, service: QueueServiceClient, **options: Any) -> EventPublisher:
        async def queue(name: str) -> QueueClient:
            return service.get_queue_client(name)

        return cls(queue, _close=service.close, **options)

    async def __aenter__(self) -> EventPublisher:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._close is not None:
            await self._close()

    async def publish(self, *events: SystemEvent) -> list[str]:
        """Publish `events`, `concurrency` at a time; their EventIds. An event refused as it is
        (EventTooLarge) stops the call before anything is sent. PublishError when some could
        not be sent (after retries); the others were."""
        messages = [await self.message(event) for event in events]
        room = asyncio.Semaphore(self.concurrency)

        async def one(event: SystemEvent, message: str) -> BaseException | None:
            async with room:
                try:
                    await self.send(queue_for(event, self.queue_count), message)
                except Exception as e:  # collected, so one failure never hides the others
                    return e
                return None

        outcomes = await asyncio.gather(*map(one, events, messages))
        failed = {e.event_id: error for e, error in zip(events, outcomes, strict=True) if error}
        published = [e.event_id for e in events if e.event_id not in failed]
        if failed:
            raise PublishError(published, failed)
        return published

    async def message(self, event: SystemEvent) -> str:
        """The queue message of `event`, as the Functions host reads it: base64 of its JSON
        (or of a pointer to the blob holding it). EventTooLarge when it cannot be sent."""
        text = json.dumps(await self.events.to_payload(event), separators=(",", ":"))
        return encode_queue_message(text.encode())

    async def send(self, queue_name: str, message: str) -> None:
        """One message on its queue, tried again while the failure may pass."""
        queue = await self.queue(queue_name)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                await queue.send_message(message)
                return
            except Exception as e:
                if attempt == self.retry.attempts or not retryable(e):
                    raise
            await self.sleep(self.retry.delay(attempt))
