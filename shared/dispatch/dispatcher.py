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
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from shared import connstrings
from shared.clock import Clock, uuid7
from shared.dispatch import outgoing, summary
from shared.dispatch.claimcheck import BlobIdentity, ClaimCheckStore
from shared.dispatch.coalesce import Coalescer
from shared.dispatch.entra import CredentialFactory, EntraTarget
from shared.dispatch.errors import TooLarge, classify
from shared.dispatch.health import HealthTracker
from shared.dispatch.isolation import Deadline, Isolation, Slot
from shared.dispatch.readcache import SharedReads
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.endpoints import DEFAULT_GUARD, ConnectGuard, blob_endpoint
from shared.events import DeliveryRetry
from shared.models import (
    Connection,
    DeliveryError,
    ErrorCategory,
    Message,
    MessageStatus,
    RequestMetadata,
    SystemEvent,
)
from shared.settings import IsolationSettings
from shared.storage.messages import LoggedMessage

if TYPE_CHECKING:
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.dispatch")


class Connections(Protocol):
    """Where the dispatcher finds an account's connections (the connections table)."""

    async def for_account(self, account: str) -> list[StoredConnection]: ...


class Records(Protocol):
    """Where the dispatcher writes its records (the message log)."""

    async def add(self, partition: str, records: Sequence[LoggedMessage]) -> None: ...


def secrets_of(stored: StoredConnection) -> list[str]:
    c = stored.connection
    found = []
    for value in (c.service_bus_connection_string, c.blob_container_connection_string):
        if value:
            try:
                parts = connstrings.parse_any(value)
            except connstrings.ConnectionStringError:  # scrub() still masks the usual shapes
                continue
            found += [v for k, v in parts.items() if k in connstrings.SECRET_PARTS]
    return found


# Failures never retried: the message can never fit, or the connection is suspended.
FINAL_CATEGORIES = frozenset({ErrorCategory.TOO_LARGE, ErrorCategory.SUSPENDED})
SUSPENDED_ERROR = DeliveryError(
    category=ErrorCategory.SUSPENDED,
    type="ConnectionSuspended",
    message="not sent: the connection is suspended after failing for a long time; fix and "
    "save it (PUT) or resume it, then replay these messages",
)
UNCONFIRMED_ERROR = DeliveryError(
    category=ErrorCategory.SUSPENDED,
    type="ConnectionUnconfirmed",
    message="not sent: the connection's owner has not confirmed it yet (POST .../confirm with "
    "the code of its verification message); replay these messages once it is confirmed",
)


def kept_error(stored: StoredConnection, suspended: bool) -> DeliveryError | None:
    """Why a delivery is kept, not sent: the connection is suspended, or it is an Entra ID
    connection its owner has not confirmed (issue 23). None: send it."""
    if suspended:
        return SUSPENDED_ERROR
    return None if stored.connection.confirmed else UNCONFIRMED_ERROR


@dataclass(frozen=True)
class Attempt:
    """Which try this is, and what it answers to."""

    number: int = 1
    parent: UUID | None = None
    retry_event: SystemEvent | None = None  # set when a failure should be retried


@dataclass(frozen=True)
class Sent:
    """What one send ended with: the message as sent (maybe a claim check), and how."""

    message: outgoing.Outgoing
    started: datetime
    elapsed_milliseconds: int
    error: DeliveryError | None


class Dispatcher:
    """Given its parts: where connections come from, where records go, the retry schedule,
    a clock, and how long an account's connections may be reused before reading them again
    (0: every delivery reads them)."""

    def __init__(
        self,
        *,
        connections: Connections,
        records: Records,
        retries: RetryScheduler,
        clock: Clock,
        connection_cache_seconds: float,
        isolation: Isolation | None = None,
        guard: ConnectGuard = DEFAULT_GUARD,
        credentials: CredentialFactory | None = None,
        blob_options: dict[str, Any] | None = None,
        health: HealthTracker | None = None,
    ) -> None:
        self.connections = connections
        self.health = health
        self.records = records
        self.retries = retries
        self.clock = clock
        self.isolation = isolation = isolation or Isolation(IsolationSettings())
        self.senders = SenderPool(guard=guard, credentials=credentials)
        self.claims = ClaimCheckStore(
            guard, blob_options, read_timeout=isolation.settings.attempt_timeout_seconds
        )
        self._writers: dict[str, Coalescer[LoggedMessage]] = {}
        self._connections = SharedReads(connections.for_account, connection_cache_seconds)

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
            options=outgoing.DeliveryOptions.of(connection),
        )
        suspended = self.health is not None and await self.health.suspended(
            stored.account, stored.uid
        )
        return await self._send_and_log(stored, message, event, attempt, slot, suspended)

    async def _deliver_or_defer(
        self, event: SystemEvent, stored: StoredConnection, attempt: Attempt
    ) -> LoggedMessage | None:
        """From a queue trigger, which holds a host slot meanwhile: deliver if the bulkheads
        have room, waiting only while those in flight keep moving; else put the delivery
        back on the retry queue (same attempt, no record), so that a stuck tenant's backlog
        never waits in host slots."""
        slot = await self.isolation.room(event.account_id, stored.uid)
        if slot is None:
            delay = self.isolation.defer_seconds(event.account_id, stored.uid)
            await self.retries.defer(event, stored.uid, attempt.number, attempt.parent, delay)
            return None
        with slot:
            return await self.deliver(event, stored, attempt, slot)

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
        metadata = RequestMetadata.from_text(m.request_metadata)
        message = outgoing.Outgoing(
            body=m.message_body.encode(),
            message_id=metadata.message_id
            if metadata
            else outgoing.message_id(record.account, record.event_id, stored.uid),
            event_key=m.event_key,
            event_id=record.event_id,
            event_timestamp=outgoing.iso_utc(m.event_timestamp),
            account=record.account,
            is_retry=True,
            blob_name=metadata.blob_name if metadata else None,
            subject=record.subject,
            options=outgoing.DeliveryOptions.of(stored.connection),  # today's, not then's
        )
        attempt = Attempt((metadata.attempt if metadata else 1) + 1, parent=m.uid)
        return await self._send_and_log(stored, message, record, attempt)

    async def send_unrecorded(self, stored: StoredConnection, message: outgoing.Outgoing) -> None:
        """Send with no record and no retry (the verification on save), under one deadline
        and past the breaker: a connection being fixed is tried whatever its past."""
        deadline = self.isolation.deadline()
        async with deadline.scope():
            await self._send(stored, message, None, deadline)

    async def probe_claim_check(self, stored: StoredConnection) -> None:
        """Upload and delete a small blob in the connection's container, if it has one."""
        c = stored.connection
        if c.blob_container_name:
            cs = c.blob_container_connection_string
            await self.claims.probe(cs, c.blob_container_name, self._blob_identity(c))

    # --------------------------------------------------------------- internals

    async def connections_of(self, account: str, fresh: bool = False) -> list[StoredConnection]:
        """The account's connections, cached briefly (changes arrive within seconds); one
        read at a time per account, however many events wait for it."""
        return await self._connections.get(account, fresh)

    async def _send_and_log(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        origin: SystemEvent | LoggedMessage,
        attempt: Attempt,
        slot: Slot | None = None,
        suspended: bool = False,
    ) -> LoggedMessage:
        kept = kept_error(stored, suspended)
        if kept is not None:  # kept, not sent: a Failed record with the full body, for a replay
            sent = Sent(message, self.clock(), 0, kept)
        else:
            sent = await self._attempt(stored, message, origin.subject, slot)
        record = self._record(stored, sent, origin, attempt)
        await self._writer(stored.log_partition).submit(record)
        _report(record, sent, attempt)
        if self.health is not None:
            self.health.observe(stored.account, stored.uid, sent.started, sent.error)
        if sent.error:
            await self._schedule_retry(stored, record, sent.error, attempt)
        return record

    async def _attempt(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None,
    ) -> Sent:
        """Send, and say how it went: any failure becomes a DeliveryError, never an exception."""
        started = self.clock()
        clock_start = time.perf_counter()
        error: DeliveryError | None = None
        try:
            message = await self._isolated_send(stored, message, subject, slot)
        except Exception as e:
            error = classify(e, secrets_of(stored))
        elapsed = round((time.perf_counter() - clock_start) * 1000)
        return Sent(message, started, elapsed, error)

    @staticmethod
    def _record(
        stored: StoredConnection,
        sent: Sent,
        origin: SystemEvent | LoggedMessage,
        attempt: Attempt,
    ) -> LoggedMessage:
        connection, message = stored.connection, sent.message
        metadata = RequestMetadata(
            queue_name=connection.queue_name,
            message_id=message.message_id,
            attempt=attempt.number,
            size_bytes=len(message.body),
            offloaded=message.offloaded,
            blob_name=message.blob_name or None,
            error=sent.error,
            session_id=message.session_id,
        )
        event_timestamp = (
            origin.event_timestamp
            if isinstance(origin, SystemEvent)
            else origin.message.event_timestamp
        )
        return LoggedMessage(
            Message(
                uid=uuid7(sent.started),
                connection_uid=connection.uid,
                event_key=message.event_key,
                event_timestamp=event_timestamp,
                request_timestamp=sent.started,
                message_body=message.body.decode(),
                elapsed_milliseconds=sent.elapsed_milliseconds,
                request_metadata=metadata.to_text(),
                status=MessageStatus.FAILED if sent.error else MessageStatus.SUCCEEDED,
                parent_service_bus_message_uid=attempt.parent,
                is_retry=attempt.number > 1 or attempt.parent is not None,
            ),
            account=message.account,
            event_id=message.event_id,
            subject=origin.subject,
        )

    async def _isolated_send(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None,
    ) -> outgoing.Outgoing:
        """One send within the isolation rules: CircuitOpen at once while the connection's
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
        entra = EntraTarget(c.fully_qualified_namespace or "", str(c.tenant_id))
        sender = self.senders.get(
            c.service_bus_connection_string or "",
            c.queue_name,
            entra if c.authentication == "EntraId" else None,
        )
        try:
            await sender.send(message, deadline)
            return message
        except TooLarge:
            if message.offloaded or not c.blob_container_name:
                raise
        name = outgoing.claim_check_blob_name(message, c.uid)
        container = c.blob_container_name  # the model makes it come with a blob store
        identity = self._blob_identity(c)
        cs = c.blob_container_connection_string
        await self.claims.upload(cs, container, name, message.body, identity)
        url = identity.account_url if identity else blob_endpoint(connstrings.parse_any(cs or ""))
        link = f"{url.rstrip('/')}/{container}/{name}"
        reference = message.claim_check(container, name, subject, link)
        await sender.send(reference, deadline)
        return reference

    def _blob_identity(self, c: Connection) -> BlobIdentity | None:
        """With Authentication EntraId, the blob endpoint and a token of the customer's tenant."""
        if c.authentication != "EntraId" or not c.blob_service_uri:
            return None
        tenant = str(c.tenant_id)
        return BlobIdentity(c.blob_service_uri, tenant, self.senders.credentials(tenant))

    async def _schedule_retry(
        self,
        stored: StoredConnection,
        record: LoggedMessage,
        error: DeliveryError,
        attempt: Attempt,
    ) -> None:
        if attempt.retry_event is None or error.category in FINAL_CATEGORIES:
            return
        parent = attempt.parent or record.message.uid
        await self.retries.schedule(attempt.retry_event, stored.uid, attempt.number, parent)

    def _writer(self, partition: str) -> Coalescer[LoggedMessage]:
        writer = self._writers.get(partition)
        if writer is None:
            if len(self._writers) > 1000:  # forget idle partitions now and then
                self._writers = {p: w for p, w in self._writers.items() if not w.idle}
            writer = self._writers[partition] = Coalescer(
                lambda records: self._write_records(partition, records)
            )
        return writer

    async def _write_records(
        self, partition: str, records: Sequence[LoggedMessage]
    ) -> list[BaseException | None]:
        await self.records.add(partition, records)
        return [None] * len(records)

    async def close(self) -> None:
        if self.health is not None:
            await self.health.close()
        await self.senders.close()
        await self.claims.close()


def _report(record: LoggedMessage, sent: Sent, attempt: Attempt) -> None:
    """The outcome's log line, with fields Application Insights keeps as custom dimensions
    (not `Category`: that one is the host's logger category)."""
    error = sent.error
    m = record.message
    summary.deliveries.add(
        m.connection_uid, sent.elapsed_milliseconds, error.category if error else None
    )
    if error is None and not log.isEnabledFor(logging.DEBUG):
        return  # the common case costs a count in the summary, no line
    fields: dict[str, Any] = {
        "ConnectionUid": str(m.connection_uid),
        "EventId": record.event_id,
        "Attempt": attempt.number,
        "ElapsedMilliseconds": sent.elapsed_milliseconds,
    }
    where = (record.event_id, m.connection_uid, attempt.number)
    if error is None:
        log.debug(
            "delivered event %s to connection %s (attempt %d, %d ms)",
            *where,
            sent.elapsed_milliseconds,
            extra=fields,
        )
        return
    log.warning(
        "delivery of event %s to connection %s failed (attempt %d, %s %s): %s",
        *(*where, error.category, error.type, error.message),
        extra={**fields, "ErrorCategory": str(error.category), "ErrorType": error.type},
    )
