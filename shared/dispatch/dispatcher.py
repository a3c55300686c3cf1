"""Fan-out of system events to the matching connections, one record per attempt, retries.

Each delivery is independent: its own sender, its own record, its own retry. A failed
delivery never makes another connection's delivery wait or repeat, and a slow or dead
endpoint holds only its own share of the host (shared/dispatch/isolation.py): every attempt
has a deadline, a queue-triggered delivery beyond its connection's or account's bulkhead goes
back on the retry queue instead of waiting in a host slot, and a breaker fails deliveries to
an unreachable endpoint fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared import connstrings
from shared.clock import uuid7
from shared.dispatch import outgoing
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.coalesce import Coalescer
from shared.dispatch.isolation import Deadline, Isolation, Slot
from shared.dispatch.servicebus import DeliveryError, SenderPool, TooLarge, classify
from shared.events import DeliveryRetry, encode_queue_message
from shared.models import Message, MessageStatus, SystemEvent
from shared.storage.messages import LoggedMessage

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.services import Services
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.dispatch")


def secrets_of(stored: StoredConnection) -> list[str]:
    c = stored.connection
    found = []
    for value in (c.service_bus_connection_string, c.blob_container_connection_string):
        if value:
            parts = connstrings.parse_any(value)
            found += [v for k, v in parts.items() if k in connstrings.SECRET_PARTS]
    return found


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.cancelled() or future.exception() is not None


@dataclass(frozen=True)
class Attempt:
    """Which try this is, and what it answers to."""

    number: int = 1
    parent: UUID | None = None
    retry_event: SystemEvent | None = None  # set when a failure should be retried


class Dispatcher:
    def __init__(
        self,
        services: Services,
        retry_queue: QueueClient,
        retry_delays: tuple[float, ...],
    ) -> None:
        self.services = services
        self.isolation = Isolation(services.settings.isolation)
        self.senders = SenderPool()
        self.claims = ClaimCheckStore(
            read_timeout=services.settings.isolation.attempt_timeout_seconds
        )
        self.events = services.events
        self._retry_queue = retry_queue
        self._retry_delays = retry_delays
        self._writers: dict[str, Coalescer[LoggedMessage]] = {}
        self._connections: dict[str, tuple[float, asyncio.Future[list[StoredConnection]]]] = {}

    # ------------------------------------------------------------ entry points

    async def dispatch(self, event: SystemEvent) -> list[LoggedMessage]:
        """Deliver an event to every active connection of its account that wants it."""
        targets = [
            c
            for c in await self.connections_of(event.account_id)
            if c.connection.wants(event.event_key)
        ]
        first = Attempt(retry_event=event)
        delivered = await asyncio.gather(
            *(self._deliver_or_defer(event, c, first) for c in targets)
        )
        return [record for record in delivered if record is not None]

    async def deliver(
        self,
        event: SystemEvent,
        stored: StoredConnection,
        attempt: Attempt | None = None,
        slot: Slot | None = None,
    ) -> LoggedMessage:
        """Deliver now; without a bulkhead `slot` in hand, wait for one within the deadline."""
        attempt = attempt or Attempt(retry_event=event)
        connection = stored.connection
        message = outgoing.build(
            event,
            connection.uid,
            connection.event_settings_type(event.event_key),
            is_retry=attempt.number > 1,
        )
        return await self._send_and_log(stored, message, event, attempt, slot)

    async def _deliver_or_defer(
        self, event: SystemEvent, stored: StoredConnection, attempt: Attempt
    ) -> LoggedMessage | None:
        """From a queue trigger, which holds a host slot meanwhile: deliver if the bulkheads
        have room, waiting only while those in flight keep moving; else put the delivery
        back on the retry queue (same attempt, no record), so that a stuck tenant's backlog
        never waits in host slots."""
        slot = await self._room(event.account_id, stored)
        if slot is None:
            await self._defer(event, stored, attempt, self._stuck_for(event.account_id, stored))
            return None
        with slot:
            return await self.deliver(event, stored, attempt, slot)

    async def _room(self, account: str, stored: StoredConnection) -> Slot | None:
        """A place in the account's and then the connection's bulkhead, both released when
        the attempt ends (before its record is written: that is our storage's time)."""
        wait = self.isolation.settings.bulkhead_wait_seconds
        in_account = await self.isolation.accounts.enter_unless_stuck(account, wait)
        if in_account is None:
            return None
        try:
            in_connection = await self.isolation.connections.enter_unless_stuck(stored.uid, wait)
        except BaseException:  # cancelled while waiting: the account's place is not kept
            in_account.release()
            raise
        if in_connection is None:
            in_account.release()
            return None

        def release() -> None:
            in_connection.release()
            in_account.release()

        return Slot(release)

    def _stuck_for(self, account: str, stored: StoredConnection) -> float:
        """How long the attempts a delivery found no room behind have stood still."""
        isolation = self.isolation
        return max(isolation.connections.still(stored.uid), isolation.accounts.still(account))

    async def _defer(
        self, event: SystemEvent, stored: StoredConnection, attempt: Attempt, stuck_for: float
    ) -> None:
        """Back on the retry queue until the attempts in the way have ended (their deadline),
        so that a stuck tenant's backlog comes back once, to a breaker that has decided.
        (Coming back sooner, as long as they had stood still, cost the other tenants more:
        Y's p99 2.0x its alone figure against 1.9x, docs/BENCHMARKS.md.)"""
        settings = self.isolation.settings
        left = math.ceil(settings.attempt_timeout_seconds - stuck_for)
        await self._enqueue_retry(
            event, stored, attempt.number, attempt.parent, max(settings.busy_defer_seconds, left)
        )

    async def retry(self, retry: DeliveryRetry, event: SystemEvent) -> LoggedMessage | None:
        """A scheduled retry; dropped when the connection is gone or no longer wants the event."""
        stored = next(
            (
                c
                for c in await self.connections_of(event.account_id, fresh=True)
                if c.uid == retry.connection_uid
            ),
            None,
        )
        if stored is None or not stored.connection.wants(event.event_key):
            log.info(
                "retry of event %s dropped: connection %s gone, inactive or no longer subscribed",
                event.event_id,
                retry.connection_uid,
            )
            return None
        attempt = Attempt(retry.attempt, retry.parent_uid, event)
        return await self._deliver_or_defer(event, stored, attempt)

    async def resend(self, stored: StoredConnection, record: LoggedMessage) -> LoggedMessage:
        """Send a logged message again, from its stored body, now (not retried automatically)."""
        m = record.message
        metadata = json.loads(m.request_metadata)
        message = outgoing.Outgoing(
            body=m.message_body.encode(),
            message_id=metadata.get("MessageId")
            or outgoing.message_id(record.account, record.event_id, stored.uid),
            event_key=m.event_key,
            event_id=record.event_id,
            event_timestamp=outgoing.iso_utc(m.event_timestamp),
            account=record.account,
            is_retry=True,
            blob_name=metadata.get("BlobName"),
        )
        attempt = Attempt(int(metadata.get("Attempt", 1)) + 1, parent=m.uid)
        return await self._send_and_log(stored, message, record, attempt)

    # --------------------------------------------------------------- internals

    async def connections_of(self, account: str, fresh: bool = False) -> list[StoredConnection]:
        """The account's connections, cached briefly (changes arrive within seconds); one
        read at a time per account, however many events wait for it."""
        now = time.monotonic()
        cached = self._connections.get(account)
        stale = cached is None or (cached[1].done() and (cached[0] <= now or _failed(cached[1])))
        if stale or fresh:
            read = asyncio.ensure_future(self.services.connections.for_account(account))
            cached = (now + self.services.settings.connection_cache_seconds, read)
            self._connections[account] = cached
        assert cached is not None
        return await asyncio.shield(cached[1])

    async def _send_and_log(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        origin: SystemEvent | LoggedMessage,
        attempt: Attempt,
        slot: Slot | None = None,
    ) -> LoggedMessage:
        connection = stored.connection
        subject = origin.subject
        started = self.services.clock()
        clock_start = time.perf_counter()
        error: DeliveryError | None = None
        try:
            message = await self._attempt(stored, message, subject, slot)
        except Exception as e:
            error = classify(e, secrets_of(stored))
        elapsed = round((time.perf_counter() - clock_start) * 1000)

        metadata: dict[str, Any] = {
            "QueueName": connection.queue_name,
            "MessageId": message.message_id,
            "Attempt": attempt.number,
            "SizeBytes": len(message.body),
            "Offloaded": message.offloaded,
        }
        if message.blob_name:
            metadata["BlobName"] = message.blob_name
        if error:
            metadata["Error"] = error.to_json()
        event_timestamp = (
            origin.event_timestamp
            if isinstance(origin, SystemEvent)
            else origin.message.event_timestamp
        )
        record = LoggedMessage(
            Message(
                uid=uuid7(started),
                connection_uid=connection.uid,
                event_key=message.event_key,
                event_timestamp=event_timestamp,
                request_timestamp=started,
                message_body=message.body.decode(),
                elapsed_milliseconds=elapsed,
                request_metadata=json.dumps(metadata),
                status=MessageStatus.FAILED if error else MessageStatus.SUCCEEDED,
                parent_service_bus_message_uid=attempt.parent,
                is_retry=attempt.number > 1 or attempt.parent is not None,
            ),
            account=message.account,
            event_id=message.event_id,
            subject=subject,
        )
        await self._writer(stored.log_partition).submit(record)
        if error:
            log.warning(
                "delivery of event %s to connection %s failed (attempt %d, %s %s): %s",
                message.event_id,
                connection.uid,
                attempt.number,
                error.category,
                error.type,
                error.message,
            )
            await self._schedule_retry(stored, record, error, attempt)
        return record

    async def _attempt(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None,
    ) -> outgoing.Outgoing:
        """One attempt within the isolation rules: CircuitOpen at once while the connection's
        breaker is open, else everything (a wait for a slot included) under one deadline."""
        breaker = self.isolation.breakers.get(stored.uid)
        if not breaker.admit():
            raise breaker.open_error()
        deadline = self.isolation.deadline()
        try:
            async with deadline.scope():
                held = slot or await self.isolation.connections.enter(stored.uid)
                with held:
                    sent = await self._send(stored, message, subject, deadline)
        except BaseException as e:
            breaker.record(e)
            raise
        breaker.record(None)
        return sent

    async def _send(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        deadline: Deadline,
    ) -> outgoing.Outgoing:
        """Send; a message too large for the link goes by claim check when there is a container."""
        c = stored.connection
        sender = self.senders.get(c.service_bus_connection_string, c.queue_name)
        try:
            await sender.send(message, deadline)
            return message
        except TooLarge:
            if message.offloaded or not c.blob_container_connection_string:
                raise
        name = outgoing.claim_check_blob_name(message, c.uid)
        container = c.blob_container_name or ""  # the model makes both come together
        await self.claims.upload(c.blob_container_connection_string, container, name, message.body)
        reference = message.claim_check(container, name, subject)
        await sender.send(reference, deadline)
        return reference

    async def _schedule_retry(
        self,
        stored: StoredConnection,
        record: LoggedMessage,
        error: DeliveryError,
        attempt: Attempt,
    ) -> None:
        if attempt.retry_event is None or error.category == "TooLarge":
            return
        if attempt.number > len(self._retry_delays):
            log.error(
                "event %s to connection %s: giving up after %d attempts",
                record.event_id,
                stored.uid,
                attempt.number,
            )
            return
        parent = attempt.parent or record.message.uid
        delay = self._retry_delays[attempt.number - 1]
        await self._enqueue_retry(attempt.retry_event, stored, attempt.number + 1, parent, delay)

    async def _enqueue_retry(
        self,
        event: SystemEvent,
        stored: StoredConnection,
        number: int,
        parent: UUID | None,
        delay: float,
    ) -> None:
        retry = DeliveryRetry(
            event=await self.events.to_payload(event),
            connection_uid=stored.uid,
            attempt=number,
            parent_uid=parent,
        )
        await self._retry_queue.send_message(
            encode_queue_message(json.dumps(retry.to_json()).encode()),
            visibility_timeout=int(delay),
        )

    def _writer(self, partition: str) -> Coalescer[LoggedMessage]:
        writer = self._writers.get(partition)
        if writer is None:
            if len(self._writers) > 1000:  # forget idle partitions now and then
                self._writers = {p: w for p, w in self._writers.items() if not w.idle}
            writer = self._writers[partition] = Coalescer(
                lambda records: self._write_records(partition, records)
            )
        return writer

    async def _write_records(self, partition: str, records: Any) -> list[BaseException | None]:
        await self.services.messages.add(partition, records)
        return [None] * len(records)

    async def close(self) -> None:
        await self.senders.close()
        await self.claims.close()
