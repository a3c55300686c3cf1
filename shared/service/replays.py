"""Bulk replay: the deliveries of a window of a connection's log sent again, oldest first,
each once, through a queue.

A replay acts on deliveries (shared/deliveries.py), not on attempts: with OnlyFailed (the
default) it takes the deliveries not delivered, from the undelivered index; otherwise every
delivery whose first attempt is in the window, by that record. The records written by retries,
re-sends and replays are never items of their own. Each delivery is re-sent as `POST .../retry`
does (`Dispatcher.resend`: its latest record's stored body, the same MessageId, IsRetry,
Parent set to that record): one more attempt at it, which also makes a pending automatic retry
do nothing once it delivered. A delivery delivered by its own retry before the replay reached
it is skipped.

Asking for a replay counts the window's deliveries, claims the connection's one running replay
(409 with the running one's id otherwise), counts them against the account's hourly budget
(429 past it), writes the replay's row and queues a message on `replays`; the API never waits
for the sends.

Each message on `replays` is one run: it sends chunks of CHUNK records from the row's cursor,
and after each chunk advances Sent, Failed and the cursor together in one conditional write
(shared/storage/replays.py). A host killed mid-chunk leaves the row as it was, the message
comes back, and the chunk is sent again (same MessageIds: the subscriber's duplicate
detection drops the repeats) but counted once, so a replay ends with Sent + Failed = Matched.
A run stops after RUN_SECONDS and queues the next, so no function runs long. Runs are paced
(`replay_records_per_second`) so that a replay leaves room for live deliveries.

The window's end is fixed when the replay is asked for (its Until, or now), so the deliveries
the replay makes itself are never part of it. Replaying a window twice with OnlyFailed false
sends it twice; with OnlyFailed, only what is still not delivered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from shared import catalog
from shared.deliveries import Delivery, Origin
from shared.errors import Conflict, InvalidField, NotFound, OverBudget
from shared.failpoints import failpoint
from shared.models.records import MessageStatus
from shared.models.replays import Replay, ReplayRequest, ReplayStarted
from shared.storage.clients import REPLAY_QUEUE
from shared.storage.deliveries import undelivered_cursor
from shared.storage.logrecords import LoggedMessage, row_key_bound
from shared.storage.replays import ReplayMoved, ReplayRow

if TYPE_CHECKING:
    from shared.dispatch.dispatcher import Dispatcher
    from shared.services import Services
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.service.replays")

CHUNK = 100  # deliveries read, sent and counted at once (one counted step of the row)
RUN_SECONDS = 60.0  # of one queue message; the next run continues


class MalformedReplay(ValueError):
    """A message on `replays` that names no replay: never worth retrying."""


def window(request: ReplayRequest, now: datetime, retention_days: int) -> tuple[datetime, datetime]:
    """(since, until] of a replay: Until or now, whichever is earlier, fixed now."""
    until = min(request.until or now, now)
    if request.since < now - timedelta(days=retention_days):
        raise InvalidField("Since", f"must be within the retention ({retention_days} days)")
    if request.since >= until:
        raise InvalidField("Since", "must be before Until and before now")
    return request.since, until


def wanted(event_keys: list[str] | None) -> Callable[[str], bool] | None:
    """Which event keys a replay sends; None: all."""
    if event_keys is None:
        return None
    return lambda key: any(catalog.matches(p, key) for p in event_keys)


async def start(
    services: Services, stored: StoredConnection, request: ReplayRequest, now: datetime
) -> ReplayStarted:
    """Count, claim, spend, then queue: a refused replay leaves nothing behind but its count."""
    since, until = window(request, now, services.settings.retention_days)
    log, partition, wants = services.messages, stored.log_partition, wanted(request.event_keys)
    if request.only_failed:
        matched = await log.count_undelivered(partition, (since, until), wants)
    else:
        matched = await log.count_first_attempts(partition, (since, until), wants)
    row = ReplayRow(
        partition=stored.log_partition,
        replay_id=uuid.uuid4(),
        account=stored.account,
        connection_uid=stored.uid,
        since=since,
        until=until,
        only_failed=request.only_failed,
        event_keys=request.event_keys,
        matched=matched,
        created_at=now,
        cursor=undelivered_cursor(since) if request.only_failed else row_key_bound(since),
        done=matched == 0,
    )
    if running := await services.replays.claim(row, now):
        raise Conflict(f"replay {running} of this connection is running", ReplayId=running)
    try:
        await _spend(services, stored.account, matched, now)
        await services.replays.add(row)
    except BaseException:
        await services.replays.release(row)
        raise
    if row.done:
        await services.replays.release(row)
    else:
        await queue_run(services, row)
    return ReplayStarted(replay_id=row.replay_id, matched=matched)


async def progress(services: Services, stored: StoredConnection, replay_id: UUID) -> Replay:
    """A replay of the connection as it stands; NotFound when it has none such."""
    return (await services.replays.get(stored.log_partition, replay_id)).view()


async def _spend(services: Services, account: str, matched: int, now: datetime) -> None:
    """Count a replay's deliveries against the account's budget of the hour, or OverBudget."""
    budget = services.settings.replay_deliveries_per_hour
    hour = now.replace(minute=0, second=0, microsecond=0)
    remaining = await services.replays.spend(account, hour, matched, budget)
    if remaining is None:
        return
    wait = (hour + timedelta(hours=1) - now).total_seconds()
    detail = f"replays of this account may send {budget} deliveries an hour; {remaining} remain"
    if matched > budget:
        detail += " (this one matches more: replay a shorter window)"
    raise OverBudget(detail, wait)


async def queue_run(services: Services, row: ReplayRow) -> None:
    text = json.dumps({"Partition": row.partition, "ReplayId": str(row.replay_id)})
    queue = await services.storage.queue(REPLAY_QUEUE)
    await queue.send_message(base64.b64encode(text.encode()).decode())


def replay_of(payload: bytes) -> tuple[str, UUID]:
    """The (partition, replay id) a message on `replays` names."""
    try:
        named = json.loads(payload)
        return str(named["Partition"]), UUID(named["ReplayId"])
    except (ValueError, TypeError, KeyError) as e:
        raise MalformedReplay(f"not a replay message: {type(e).__name__}") from None


async def run(
    services: Services, payload: bytes, timer: Callable[[], float] = time.monotonic
) -> None:
    """One run of a replay: chunks until it is done or RUN_SECONDS have passed."""
    partition, replay_id = replay_of(payload)
    try:
        row = await services.replays.get(partition, replay_id)
        if row.done:
            return
        stored = await services.connections.get(row.account, row.connection_uid)
    except NotFound:  # purged, or the connection was deleted: its records are unreachable
        log.info("replay %s stopped: the replay or its connection is gone", replay_id)
        return
    dispatcher = await services.dispatcher()
    pace = services.settings.replay_records_per_second
    deadline = timer() + RUN_SECONDS
    try:
        while not row.done:
            if timer() >= deadline:
                await queue_run(services, row)
                return
            began = timer()
            row, count = await chunk(services, dispatcher, stored, row)
            if pace > 0:
                await asyncio.sleep(max(0.0, count / pace - (timer() - began)))
    except ReplayMoved:  # another run of it is ahead (a message queued twice)
        log.info("replay %s: another run is ahead; this one stops", replay_id)


async def chunk(
    services: Services, dispatcher: Dispatcher, stored: StoredConnection, row: ReplayRow
) -> tuple[ReplayRow, int]:
    """Send the next CHUNK deliveries and count them; the row as advanced and how many were
    sent."""
    now = services.clock()
    cursor, batch = await _next(services, row)
    if cursor is None:
        skipped = max(0, row.matched - row.sent - row.failed)
        done = await services.replays.advance(
            replace(row, done=True, skipped=skipped, updated_at=now)
        )
        await services.replays.release(done)
        return done, 0
    wants = wanted(row.event_keys)
    chosen = [(r, d) for r, d in batch if wants is None or wants(r.message.event_key)]
    resent = await dispatcher.resend_in_order(stored, chosen, Origin.REPLAY)
    failpoint("replay-chunk-sent")
    failed = sum(1 for r in resent if r.message.status == MessageStatus.FAILED)
    sent = row.sent + len(resent) - failed
    advanced = replace(row, sent=sent, failed=row.failed + failed, cursor=cursor, updated_at=now)
    return await services.replays.advance(advanced), len(resent)


async def _next(
    services: Services, row: ReplayRow
) -> tuple[str | None, list[tuple[LoggedMessage, Delivery | None]]]:
    """Where the next CHUNK items after the cursor end (None: nothing is left), and their
    deliveries: those not delivered (as their latest attempt, with their state as the index
    holds it: no read each), or the first attempts among the window's records (the others are
    attempts of the same deliveries; each is read when re-sent)."""
    log = services.messages
    if row.only_failed:
        undelivered = await log.undelivered(row.partition, row.cursor, row.until, CHUNK)
        end = undelivered[-1][0] if undelivered else None
        return end, [(r, d) for _, r, d in undelivered if r]
    batch = await log.oldest(row.partition, False, row.cursor, row.until, CHUNK)
    firsts: list[tuple[LoggedMessage, Delivery | None]] = [
        (r, None) for _, r in batch if r and not r.message.is_retry
    ]
    return (batch[-1][0] if batch else None), firsts
