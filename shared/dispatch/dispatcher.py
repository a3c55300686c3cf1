"""Fan-out of system events to the matching connections, deliveries and their retries.

A delivery is one event to one connection (shared/deliveries.py). Each attempt at it is
sent by the publisher (shared/dispatch/publisher.py: isolation, claim check) and recorded by
the recorder (shared/dispatch/recorder.py: the record, the delivery's state, counters,
health); this module decides which attempts to make and what follows them.

Each delivery is independent: its own sender, its own record, its own retry. A failed
delivery never makes another connection's delivery wait or repeat, and a slow or dead
endpoint holds only its own share of the host (shared/dispatch/isolation.py): a queue-triggered
delivery beyond its connection's or account's bulkhead goes back on the retry queue instead of
waiting in a host slot.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from shared.clock import Clock
from shared.deliveries import Delivery, Origin
from shared.dispatch import healthnotice, outgoing, summary
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.healthtracker import HealthTracker
from shared.dispatch.isolation import Isolation, Slot
from shared.dispatch.publisher import Publisher, Sent
from shared.dispatch.readcache import SharedReads
from shared.dispatch.recorder import Attempt, DeliveryLog, Recorder
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.errors import NotFound
from shared.events import DeliveryRetry
from shared.failpoints import failpoint
from shared.models.events import SystemEvent
from shared.models.records import DeliveryError, ErrorCategory, RequestMetadata
from shared.settings import IsolationSettings
from shared.storage.logrecords import LoggedMessage

if TYPE_CHECKING:
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.dispatch")

__all__ = ["Attempt", "Dispatcher", "IncompleteDispatch", "Origin"]


class Connections(Protocol):
    """Where the dispatcher finds an account's connections (the connections table)."""

    async def for_account(self, account: str) -> list[StoredConnection]: ...

    async def get(self, account: str, uid: UUID) -> StoredConnection:
        """One connection, by a point read; NotFound when it is gone."""
        ...


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
# A retry stored again after a stop (see `_restore_retry`) comes this long after the one that
# may exist, which then makes its attempt first and leaves the second nothing to do.
RESTORED_RETRY_LAG_SECONDS = 5.0


class IncompleteDispatch(Exception):
    """Some connections of an event have no durable outcome: the message must come back."""


class Dispatcher:
    """Given its parts: where connections come from, where records go, the retry schedule, a
    clock, the Service Bus senders and claim-check store, and how long an account's
    connections may be reused before reading them again (0: every delivery reads them)."""

    def __init__(
        self,
        *,
        connections: Connections,
        records: DeliveryLog,
        retries: RetryScheduler,
        clock: Clock,
        connection_cache_seconds: float,
        senders: SenderPool,
        claims: ClaimCheckStore,
        isolation: Isolation | None = None,
        health: HealthTracker | None = None,
    ) -> None:
        self.health = health
        self.retries = retries
        self.clock = clock
        self.isolation = isolation = isolation or Isolation(IsolationSettings())
        self.publisher = Publisher(senders, claims, isolation, clock)
        self.recorder = Recorder(records, clock, health)
        self._repository = connections
        self._connections = SharedReads(connections.for_account, connection_cache_seconds)
        summary.deliveries.watch("connections", self._connections.stats)
        summary.deliveries.watch("senders", senders.stats)
        summary.deliveries.watch("containers", claims.stats)
        if health is not None:
            summary.deliveries.watch("healthStates", health.known_stats)
            summary.deliveries.watch("suspended", health.suspended_stats)

    # ------------------------------------------------------------ entry points

    async def dispatch(self, event: SystemEvent, redelivered: bool = False) -> list[LoggedMessage]:
        """Deliver an event to every active connection of its account that wants it.

        The invariant (docs/API.md, "Delivery guarantees"): the system-events trigger completes
        its message only when this returns, that is once each connection has a durable
        outcome: delivered and recorded, failed and recorded with its retry stored, or put back
        on the retry queue. A connection whose outcome could not be made durable (its record
        or its retry could not be written) makes this raise, after the others finished, so the
        message comes back; that redelivery (`redelivered`) reads each delivery first and
        skips those with an outcome, so the failure re-drives that connection alone. The
        duplicates this allows all carry the delivery's message_id: a message sent again
        because its record was not written, and a retry stored twice (see `_restore_retry`).
        """
        targets = [
            c
            for c in await self.connections_of(event.account_id)
            if c.connection.wants(event.event_key) and not healthnotice.is_about(event, c.uid)
        ]
        outcomes = await asyncio.gather(
            *(self._first_attempt(event, c, redelivered) for c in targets), return_exceptions=True
        )
        failed = [
            (c, e) for c, e in zip(targets, outcomes, strict=True) if isinstance(e, BaseException)
        ]
        for c, e in failed:
            if not isinstance(e, Exception):
                raise e  # cancelled: the whole invocation is going away
            log.error(
                "event %s to connection %s: no durable outcome; the event comes back for it",
                event.event_id,
                c.uid,
                exc_info=e,
            )
        if failed:
            raise IncompleteDispatch(f"{len(failed)} of {len(targets)} connections")
        return [r for r in outcomes if isinstance(r, LoggedMessage)]

    async def retry(
        self, retry: DeliveryRetry, event: SystemEvent, redelivered: bool = False
    ) -> LoggedMessage | None:
        """A scheduled retry (or a first attempt put back by a full bulkhead); it does nothing
        when its delivery was delivered or its attempt made meanwhile, and is dropped when the
        connection is gone or no longer wants the event."""
        stored = await self._one_connection(event.account_id, retry.connection_uid)
        if stored is None or not stored.connection.wants(event.event_key):
            log.info(
                "retry of event %s dropped: connection %s gone, inactive or no longer subscribed",
                event.event_id,
                retry.connection_uid,
            )
            return None
        attempt = Attempt(Origin.RETRY, retry.attempt, retry.parent_uid, event)
        before = await self.recorder.delivery(stored, _message_id(event, stored))
        if not await self._still_to_make(stored, attempt, before, redelivered):
            return None
        return await self._deliver_or_defer(stored, attempt, before)

    async def deliver(
        self,
        event: SystemEvent,
        stored: StoredConnection,
        attempt: Attempt | None = None,
        slot: Slot | None = None,
        before: Delivery | None = None,
    ) -> LoggedMessage:
        """Deliver now; without a bulkhead `slot` in hand, wait for one within the deadline.
        `before`: the delivery as read (None: a first attempt, which writes without reading)."""
        attempt = attempt or Attempt(Origin.SYSTEM_EVENT, event=event)
        connection = stored.connection
        message = outgoing.build(
            event,
            connection.uid,
            connection.event_settings_type(event.event_key),
            is_retry=attempt.number > 1,
            options=outgoing.DeliveryOptions.of(connection),
        )
        sent = await self._send_unless_held(stored, message, event.subject, slot)
        return await self._record(stored, sent, event, attempt, before)

    async def resend(
        self,
        stored: StoredConnection,
        record: LoggedMessage,
        origin: Origin = Origin.RESEND,
        before: Delivery | None = None,
    ) -> LoggedMessage:
        """Send a logged message again, from its stored body, now: one more attempt at its
        delivery, not retried automatically (a pending retry of it still comes, and does
        nothing if this one delivered). `before`: its delivery as read, if it was."""
        return (await self.resend_in_order(stored, [(record, before)], origin))[0]

    async def resend_in_order(
        self,
        stored: StoredConnection,
        records: list[tuple[LoggedMessage, Delivery | None]],
        origin: Origin,
    ) -> list[LoggedMessage]:
        """Re-send several logged messages at once, arriving in the order given: the
        deliveries not yet read are read first, so that no read's latency reorders the
        sends (they queue on the connection's sender in the order they start)."""
        again = [self._again(stored, r, origin) for r, _ in records]
        befores = await asyncio.gather(
            *(
                _known(before) if before else self.recorder.delivery(stored, m.message_id)
                for (m, _), (_, before) in zip(again, records, strict=True)
            )
        )
        return await asyncio.gather(
            *(
                self._resend(stored, message, attempt, record, before)
                for (message, attempt), (record, _), before in zip(
                    again, records, befores, strict=True
                )
            )
        )

    def _again(
        self, stored: StoredConnection, record: LoggedMessage, origin: Origin
    ) -> tuple[outgoing.Outgoing, Attempt]:
        """What a re-send of a record sends, and which attempt it is: its stored body under
        its delivery's id, with the connection's delivery options of today (not of then); the
        attempt numbered after the one it re-sends."""
        m = record.message
        metadata = RequestMetadata.from_text(m.request_metadata)
        attempt = Attempt(origin, (metadata.attempt if metadata else 1) + 1, parent=m.uid)
        message = outgoing.Outgoing(
            body=(m.message_body or "").encode(),  # a record read whole: never None
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
            options=outgoing.DeliveryOptions.of(stored.connection),
        )
        return message, attempt

    async def _resend(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        attempt: Attempt,
        record: LoggedMessage,
        before: Delivery,
    ) -> LoggedMessage:
        sent = await self._send_unless_held(stored, message, record.subject, suspension=False)
        return await self._record(stored, sent, record, attempt, before)

    async def send_unrecorded(self, stored: StoredConnection, message: outgoing.Outgoing) -> None:
        """The verification on save (Origin.VERIFICATION): no record, no retry, no delivery."""
        await self.publisher.send_unrecorded(stored, message)

    async def probe_claim_check(self, stored: StoredConnection) -> None:
        await self.publisher.probe_claim_check(stored)

    async def connections_of(self, account: str, fresh: bool = False) -> list[StoredConnection]:
        """The account's connections, cached briefly (changes arrive within seconds); one
        read at a time per account, however many events wait for it."""
        return await self._connections.get(account, fresh)

    # --------------------------------------------------------------- internals

    async def _one_connection(self, account: str, uid: UUID) -> StoredConnection | None:
        """A retry's connection as stored now: one point read, not the account's partition
        (issue 25: an account of 10,000 connections read 10,000 rows per retry)."""
        try:
            return await self._repository.get(account, uid)
        except NotFound:
            return None

    async def _first_attempt(
        self, event: SystemEvent, stored: StoredConnection, redelivered: bool
    ) -> LoggedMessage | None:
        """A first attempt reads nothing before it writes, unless its event came back."""
        attempt = Attempt(Origin.SYSTEM_EVENT, event=event)
        before = None
        if redelivered:
            before = await self.recorder.delivery(stored, _message_id(event, stored))
            if not await self._still_to_make(stored, attempt, before, redelivered):
                return None
        return await self._deliver_or_defer(stored, attempt, before)

    async def _still_to_make(
        self, stored: StoredConnection, attempt: Attempt, delivery: Delivery, redelivered: bool
    ) -> bool:
        """Whether an automatic attempt is still to be made: not when its delivery was
        delivered (by a re-send or replay, say) or the attempt already made (a message that
        came back, or a retry stored twice)."""
        if delivery.wants(attempt.number):
            return True
        if redelivered and delivery.retry_lost(attempt.number):
            await self._restore_retry(stored, attempt, delivery)
        log.info(
            "attempt %d of event %s to connection %s not made: %s",
            attempt.number,
            attempt.event.event_id if attempt.event else "",
            stored.uid,
            "delivered" if delivery.delivered else "made already",
        )
        return False

    async def _restore_retry(
        self, stored: StoredConnection, attempt: Attempt, delivery: Delivery
    ) -> None:
        """The message of an attempt that was made and recorded came back: the process may
        have stopped before it stored the retry, so it is stored again (a little later than
        the first, which then makes the attempt and leaves this one nothing to do)."""
        assert attempt.event is not None and delivery.next_attempt_at is not None
        wait = (delivery.next_attempt_at - self.clock()).total_seconds()
        parent = attempt.parent or UUID(delivery.records[0][-32:])
        delay = max(0.0, wait) + RESTORED_RETRY_LAG_SECONDS
        await self.retries.defer(attempt.event, stored.uid, attempt.number + 1, parent, delay)

    async def _deliver_or_defer(
        self, stored: StoredConnection, attempt: Attempt, before: Delivery | None
    ) -> LoggedMessage | None:
        """From a queue trigger, which holds a host slot meanwhile: deliver if the bulkheads
        have room, waiting only while those in flight keep moving; else put the delivery
        back on the retry queue (same attempt, no record), so that a stuck tenant's backlog
        never waits in host slots."""
        assert attempt.event is not None
        event = attempt.event
        sender = self.publisher.sender(stored.connection)
        slot = await self.isolation.room(event.account_id, stored.uid, sender)
        if slot is None:
            delay = self.isolation.defer_seconds(event.account_id, stored.uid)
            await self.retries.defer(event, stored.uid, attempt.number, attempt.parent, delay)
            failpoint("after-defer")
            return None
        with slot:
            return await self.deliver(event, stored, attempt, slot, before)

    async def _send_unless_held(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None = None,
        suspension: bool = True,
    ) -> Sent:
        """Send, unless the connection's deliveries are kept (a Failed record with the full
        body, for a replay): the one place that decides it. A suspended connection (not for a
        re-send, which a customer asks for), or an Entra ID connection its owner has not
        confirmed (issue 23)."""
        held = None
        if (
            suspension
            and self.health is not None
            and await self.health.suspended(stored.account, stored.uid)
        ):
            held = SUSPENDED_ERROR
        elif not stored.connection.confirmed:
            held = UNCONFIRMED_ERROR
        if held is not None:
            return Sent(message, self.clock(), 0, held)
        return await self.publisher.publish(stored, message, subject, slot)

    async def _record(
        self,
        stored: StoredConnection,
        sent: Sent,
        origin: SystemEvent | LoggedMessage,
        attempt: Attempt,
        before: Delivery | None,
    ) -> LoggedMessage:
        """Record the attempt, then store the retry that follows it, if one does: a delivery
        recorded Pending has its retry stored unless the process stopped in between, which
        the message's return repairs (`_restore_retry`)."""
        failpoint("after-send")
        delay = None
        if sent.error is not None and attempt.origin.automatic and attempt.event is not None:
            delay = self.retries.delay_after(
                attempt.event,
                stored.uid,
                attempt.number,
                sent.error,
                stored.connection.retry_policy,
            )
        retry_at = self.clock() + timedelta(seconds=delay) if delay is not None else None
        record = await self.recorder.record(stored, sent, origin, attempt, before, retry_at)
        failpoint("after-record")
        if delay is not None and attempt.event is not None:
            parent = attempt.parent or record.message.uid
            await self.retries.defer(attempt.event, stored.uid, attempt.number + 1, parent, delay)
            failpoint("after-retry")
        return record

    async def close(self) -> None:
        await self.recorder.close()
        await self.publisher.close()


def _message_id(event: SystemEvent, stored: StoredConnection) -> str:
    return outgoing.message_id(event.account_id, event.event_id, stored.uid)


async def _known(delivery: Delivery) -> Delivery:
    return delivery
