"""The retry schedule: a failed delivery comes back on the `delivery-retries` queue, hidden
for the next delay of the schedule, until the schedule runs out."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from shared.events import DeliveryRetry, EventStore, encode_queue_message
from shared.models import SystemEvent

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger("shared.dispatch")


class RetryScheduler:
    def __init__(self, queue: QueueClient, delays: tuple[float, ...], events: EventStore) -> None:
        self.queue = queue
        self.delays = delays
        self._events = events

    async def schedule(
        self, event: SystemEvent, connection_uid: UUID, attempt: int, parent_uid: UUID
    ) -> bool:
        """Schedule the try after `attempt`; False (and logged) when the schedule ran out."""
        if attempt > len(self.delays):
            log.error(
                "event %s to connection %s: giving up after %d attempts",
                event.event_id,
                connection_uid,
                attempt,
            )
            return False
        await self.defer(event, connection_uid, attempt + 1, parent_uid, self.delays[attempt - 1])
        return True

    async def defer(
        self,
        event: SystemEvent,
        connection_uid: UUID,
        attempt: int,
        parent_uid: UUID | None,
        delay: float,
    ) -> None:
        """Try `attempt` after `delay`: the schedule's next try, or the same attempt again
        when its bulkhead was full (nothing was sent, no record was written)."""
        retry = DeliveryRetry(
            event=await self._events.to_payload(event),
            connection_uid=connection_uid,
            attempt=attempt,
            parent_uid=parent_uid,
        )
        await self.queue.send_message(
            encode_queue_message(json.dumps(retry.to_json()).encode()),
            visibility_timeout=int(delay),
        )
