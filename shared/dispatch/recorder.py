"""Writing what an attempt did: its record, its delivery's new state (shared/deliveries.py),
the log's counters (they ride in the record's transaction: shared/storage/logwriter.py), the
connection's health, and the outcome's log line.

Records of one partition written at once go together in table transactions (a Coalescer per
partition). An attempt that read its delivery first writes it on the condition that it is
unchanged; when another attempt of the same delivery wrote it meanwhile, the delivery is read
again and the record written with the state that follows from both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from shared.clock import Clock, uuid7
from shared.deliveries import Delivery, DeliveryWrite, Origin
from shared.dispatch import summary
from shared.dispatch.coalesce import Coalescer
from shared.dispatch.healthtracker import HealthTracker
from shared.dispatch.publisher import Sent
from shared.models.events import SystemEvent
from shared.models.records import Message, MessageStatus, RequestMetadata
from shared.storage.logrecords import LoggedMessage, row_key
from shared.storage.transactions import TransactionError

if TYPE_CHECKING:
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.dispatch")

# Tries to write a record whose delivery row changed since it was read (each reads it again).
# A refusal means another attempt of the delivery was written: each round, one gets through.
_WRITE_TRIES = 10
# Refusals that a fresh read of the delivery settles: it changed (412), it was made meanwhile
# (409), a row the write expected is gone (404: the delivery or an earlier record, purged).
_STALE = {404, 409, 412}


class DeliveryLog(Protocol):
    """Where the recorder writes (the message log, shared/storage/messages.py)."""

    async def write(
        self, partition: str, records: Sequence[LoggedMessage]
    ) -> list[BaseException | None]: ...

    async def delivery(self, partition: str, message_id: str) -> Delivery: ...


@dataclass(frozen=True)
class Attempt:
    """An attempt at a delivery: what started it, its number (the schedule's, or a re-send's:
    the one it re-sends plus one), the record it answers to, and for an automatic attempt the
    event (its retry carries it)."""

    origin: Origin
    number: int = 1
    parent: UUID | None = None
    event: SystemEvent | None = None


class Recorder:
    def __init__(self, log: DeliveryLog, clock: Clock, health: HealthTracker | None) -> None:
        self.log = log
        self.clock = clock
        self.health = health
        self._writers: dict[str, Coalescer[LoggedMessage]] = {}

    async def delivery(self, stored: StoredConnection, message_id: str) -> Delivery:
        return await self.log.delivery(stored.log_partition, message_id)

    async def record(
        self,
        stored: StoredConnection,
        sent: Sent,
        origin: SystemEvent | LoggedMessage,
        attempt: Attempt,
        before: Delivery | None,
        retry_at: datetime | None,
    ) -> LoggedMessage:
        """Write the attempt's record with its delivery's new state; `before` is the delivery
        as read (None: not read, for a first attempt). The record, as written."""
        uid = uuid7(sent.started)
        key, message_id = row_key(uid), sent.message.message_id
        automatic = attempt.number if attempt.origin.automatic else None
        failed, earlier = sent.error is not None, True
        for tries_left in reversed(range(_WRITE_TRIES)):
            base = before or Delivery(message_id)
            write = DeliveryWrite(base.after(key, failed, automatic, retry_at), before, earlier)
            record = _record(stored, sent, origin, attempt, uid, write)
            try:
                await self._writer(stored.log_partition).submit(record)
                break
            except TransactionError as e:
                if e.status not in _STALE or not tries_left:
                    raise
                earlier = earlier and e.status != 404  # gone: leave earlier rows alone
            before = await self.log.delivery(stored.log_partition, message_id)
        _report(record, sent, attempt)
        if self.health is not None:
            title = stored.connection.title
            self.health.observe(stored.account, stored.uid, sent.started, sent.error, title)
        return record

    def _writer(self, partition: str) -> Coalescer[LoggedMessage]:
        writer = self._writers.get(partition)
        if writer is None:
            if len(self._writers) > 1000:  # forget idle partitions now and then
                self._writers = {p: w for p, w in self._writers.items() if not w.idle}
            writer = self._writers[partition] = Coalescer(
                lambda records: self.log.write(partition, records)
            )
        return writer

    async def close(self) -> None:
        if self.health is not None:
            await self.health.close()


def _record(
    stored: StoredConnection,
    sent: Sent,
    origin: SystemEvent | LoggedMessage,
    attempt: Attempt,
    uid: UUID,
    write: DeliveryWrite,
) -> LoggedMessage:
    """The attempt's record, carrying its delivery's state as this write makes it (built
    whole, once a write: a copy of the model to change that state was 3-4% of a profiled
    dispatch, bench_dispatch --profile)."""
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
            uid=uid,
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
            delivery=write.after.status(),
        ),
        account=message.account,
        event_id=message.event_id,
        subject=origin.subject,
        delivery=write,
    )


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
