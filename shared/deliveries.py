"""Deliveries, not attempts: a delivery is one event for one connection, keyed by its stable
Service Bus `message_id`; every attempt at it (a message record) is part of its history.

The rules here are plain Python; shared/storage/deliveries.py keeps them beside the log.

- A delivery is `Pending` while an automatic attempt is scheduled, `Delivered` once any attempt
  reached the queue (a later failed re-send does not undo that), `Failed` when nothing more is
  scheduled (the schedule ran out, or the failure is final: too large, suspended).
- An automatic attempt (the first, then the schedule's retries) is made once: a retry does
  nothing when its delivery is delivered or its attempt was already made (`wants`).
- A replay or re-send is one more attempt. It supersedes the pending retry by succeeding:
  the retry then finds the delivery delivered and does nothing, so the customer gets one
  copy. A re-send that fails leaves the schedule as it was, so it never ends a delivery's
  retries (no dead end).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from shared.models.records import DeliveryState, DeliveryStatus

# RowKeys of attempts a delivery remembers: its first and the latest ones. Automatic attempts
# are 6 at most; only many re-sends of one delivery go past it (the middle ones then keep
# the state they had when the list let go of them).
MAX_RECORDS = 20


class Origin(StrEnum):
    """What started an attempt."""

    SYSTEM_EVENT = "SystemEvent"  # the first attempt, from `system-events`
    RETRY = "Retry"  # the schedule's next attempt, or a first one put back by a full bulkhead
    REPLAY = "Replay"  # a bulk replay
    RESEND = "Resend"  # POST .../messages/{uid}/retry
    TEST = "Test"  # POST .../test: a delivery of its own, never retried
    VERIFICATION = "Verification"  # the send on save: no record, no delivery

    @property
    def automatic(self) -> bool:
        """Made by the schedule: failures are retried, and each attempt is made once."""
        return self in (Origin.SYSTEM_EVENT, Origin.RETRY)

    @property
    def queued(self) -> bool:
        """Runs in a queue-triggered invocation that holds a host slot: a full bulkhead puts
        it back on the retry queue rather than let it wait."""
        return self.automatic


@dataclass(frozen=True)
class Delivery:
    """A delivery as stored (or new). `stored` says whether a read found it; `etag` is the
    ETag of the row it was read from, `guard` that row's RowKey (its delivery row, or the
    undelivered index row, which changes with every change of an undelivered delivery)."""

    message_id: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    scheduled: int = 0  # the number of the last automatic attempt made (0: none yet)
    records: tuple[str, ...] = ()  # RowKeys of its attempt records, oldest first
    failed: frozenset[str] = frozenset()  # those of failed attempts (they have failure copies)
    stored: bool = False
    etag: str | None = None
    guard: str | None = None

    @property
    def delivered(self) -> bool:
        return self.state == DeliveryState.DELIVERED

    def wants(self, attempt: int) -> bool:
        """Whether the automatic attempt `attempt` is still to be made."""
        return not self.delivered and self.scheduled < attempt

    def retry_lost(self, attempt: int) -> bool:
        """Whether automatic attempt `attempt` was made and its retry may not have been stored:
        Pending with that attempt the last made (the process may have stopped in between)."""
        return self.state == DeliveryState.PENDING and self.scheduled == attempt

    def after(
        self, key: str, failed: bool, automatic: int | None, retry_at: datetime | None
    ) -> Delivery:
        """The delivery once attempt `key` is recorded. `automatic`: the schedule's number of
        the attempt, None for a re-send; `retry_at`: when the next one is scheduled, if one is."""
        if not failed or self.delivered:
            state, next_at = DeliveryState.DELIVERED, None
        elif retry_at is not None:
            state, next_at = DeliveryState.PENDING, retry_at
        elif automatic is None and self.state == DeliveryState.PENDING and self.stored:
            state, next_at = self.state, self.next_attempt_at  # its retry still comes
        else:
            state, next_at = DeliveryState.FAILED, None
        records = (*self.records, key)
        if len(records) > MAX_RECORDS:
            records = records[:1] + records[len(records) - MAX_RECORDS + 1 :]
        return replace(
            self,
            state=state,
            attempts=self.attempts + 1,
            next_attempt_at=next_at,
            scheduled=max(self.scheduled, automatic or 0),
            records=records,
            failed=frozenset(k for k in self.failed | ({key} if failed else set()) if k in records),
        )

    def status(self) -> DeliveryStatus:
        return DeliveryStatus(
            message_id=self.message_id,
            state=self.state,
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at,
        )


@dataclass(frozen=True)
class DeliveryWrite:
    """What recording an attempt does to its delivery: `before` as read (None: not read, for
    a first attempt, which writes without reading), `after` as it becomes; `earlier`: also
    show the new state in its earlier rows (off when one of them turned out to be purged)."""

    after: Delivery
    before: Delivery | None = None
    earlier: bool = True
