"""The retry schedule: a failed delivery comes back on the `delivery-retries` queue, hidden
for the next delay of the schedule, until the schedule runs out. Failures that can never heal
(too large, suspended) are not retried; an attempt the breaker short-circuited (nothing was
tried) is always retried, past the end of the schedule too: it is never a dead end."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from shared.events import DeliveryRetry, EventStore, encode_queue_message
from shared.models.deliveryoptions import RetryPolicy
from shared.models.events import SystemEvent
from shared.models.records import DeliveryError, ErrorCategory

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger("shared.dispatch")

# Failures never retried: the message can never fit, or the connection is suspended.
FINAL_CATEGORIES = frozenset({ErrorCategory.TOO_LARGE, ErrorCategory.SUSPENDED})
CIRCUIT_OPEN = "CircuitOpen"  # Error.Type of an attempt the breaker did not let through


class RetryScheduler:
    def __init__(self, queue: QueueClient, delays: tuple[float, ...], events: EventStore) -> None:
        self.queue = queue
        self.delays = delays
        self._events = events

    def delay_after(
        self,
        event: SystemEvent,
        connection_uid: UUID,
        attempt: int,
        error: DeliveryError,
        policy: str = "Default",
    ) -> float | None:
        """The wait before the try after `attempt` failed with `error`, by the connection's
        RetryPolicy; None (and logged when the schedule ran out) when there is none."""
        if error.category in FINAL_CATEGORIES:
            return None
        delays = RetryPolicy.schedule(policy, self.delays)
        if attempt <= len(delays):
            return delays[attempt - 1]
        if error.type == CIRCUIT_OPEN:  # nothing was tried: the schedule's last wait again
            last = delays or self.delays  # RetryPolicy None: still owed its one try
            return last[-1] if last else 0.0
        log.error(
            "event %s to connection %s: giving up after %d attempts",
            event.event_id,
            connection_uid,
            attempt,
        )
        return None

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
