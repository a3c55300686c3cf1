"""Bulk replay: a window of a connection's log sent again, oldest first, through a queue.

Each record is re-sent as `POST .../retry` does (`Dispatcher.resend`: its stored body, the same
MessageId, IsRetry, Parent set to the record). Asking for a replay counts the window (from the
log's counters), writes the replay's row and queues a message on `replays`; the API never
waits for the sends.

Each message on `replays` is one run: it sends chunks of CHUNK records from the row's cursor,
and after each chunk advances Sent, Failed and the cursor together in one conditional write
(shared/storage/replays.py). A host killed mid-chunk leaves the row as it was, the message
comes back, and the chunk is sent again (same MessageIds: the subscriber's duplicate
detection drops the repeats) but counted once, so a replay ends with Sent + Failed = Matched.
A run stops after RUN_SECONDS and queues the next, so no function runs long. Runs are paced
(`replay_records_per_second`) so that a replay leaves room for live deliveries.

The window's end is fixed when the replay is asked for (its Until, or now), so the records the
replay writes itself are never part of it. Replaying a window twice sends it twice.
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
from shared.errors import InvalidField, NotFound
from shared.models import MessageStatus, ReplayRequest, ReplayStarted
from shared.storage.clients import REPLAY_QUEUE
from shared.storage.messages import row_key_bound
from shared.storage.replays import ReplayMoved, ReplayRow

if TYPE_CHECKING:
    from shared.dispatch.dispatcher import Dispatcher
    from shared.services import Services
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.replay")

CHUNK = 100  # records read, sent and counted at once (one counted step of the row)
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
    since, until = window(request, now, services.settings.retention_days)
    matched = await services.messages.count(
        stored.log_partition, request.only_failed, (since, until), wanted(request.event_keys)
    )
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
        cursor=row_key_bound(since),
        done=matched == 0,
    )
    await services.replays.add(row)
    if not row.done:
        await queue_run(services, row)
    return ReplayStarted(replay_id=row.replay_id, matched=matched)


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
    """Send the next CHUNK records and count them; the row as advanced and how many were sent."""
    batch = await services.messages.oldest(
        row.partition, row.only_failed, row.cursor, row.until, CHUNK
    )
    if not batch:
        return await services.replays.advance(replace(row, done=True)), 0
    wants = wanted(row.event_keys)
    records = [r for _, r in batch if r and (wants is None or wants(r.message.event_key))]
    resent = await asyncio.gather(*(dispatcher.resend(stored, r) for r in records))
    failed = sum(1 for r in resent if r.message.status == MessageStatus.FAILED)
    advanced = replace(
        row, sent=row.sent + len(resent) - failed, failed=row.failed + failed, cursor=batch[-1][0]
    )
    return await services.replays.advance(advanced), len(resent)
