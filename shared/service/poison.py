"""Poison queues: the messages the host gave up on, and sending them back once the cause is
fixed.

A message lands in `<queue>-poison` when it is malformed (at once, with an error log line) or
after failing `maxDequeueCount` times, e.g. while the app's own storage was failing.
`replay` sends every well-formed one back to its queue, where it is processed like any new
message (delivery is at least once; a subscriber's duplicate detection drops repeats by
`message_id`). A malformed one stays where it is.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.eventqueues import is_system_event_queue, system_event_queues
from shared.storage.clients import POISON_SUFFIX, REPLAY_QUEUE, RETRY_QUEUE

if TYPE_CHECKING:
    from shared.services import Services

log = logging.getLogger("shared.service.poison")
OTHER_REPLAYABLE = (RETRY_QUEUE, REPLAY_QUEUE)
HIDE_SECONDS = 600  # while a run looks at the queue, what it has seen stays out of its way
PAGE = 32


def replayable_queues(system_event_queue_count: int) -> tuple[str, ...]:
    """Every queue whose poison queue `replay` empties: each system-events queue, retries,
    replays."""
    return (*system_event_queues(system_event_queue_count), *OTHER_REPLAYABLE)


def is_replayable(queue: str) -> bool:
    return is_system_event_queue(queue) or queue in OTHER_REPLAYABLE


@dataclass
class Replayed:
    replayed: int = 0
    kept: int = 0


def _check(services: Services, queue: str) -> Callable[[bytes], Awaitable[Any]]:
    """What the queue's trigger reads first: it raises for a message that can never work."""
    from shared.service.replays import replay_of

    async def names_a_replay(payload: bytes) -> Any:
        return replay_of(payload)

    if is_system_event_queue(queue):
        return services.events.event_from
    readers = {RETRY_QUEUE: services.events.retry_from, REPLAY_QUEUE: names_a_replay}
    return readers[queue]


async def replay(services: Services, queue: str) -> Replayed:
    from azure.core.exceptions import ResourceNotFoundError

    check = _check(services, queue)
    poison = await services.storage.queue(queue + POISON_SUFFIX)
    target = await services.storage.queue(queue)
    result = Replayed()
    kept: dict[str, Any] = {}
    try:
        while True:
            page = poison.receive_messages(
                messages_per_page=PAGE, max_messages=PAGE, visibility_timeout=HIDE_SECONDS
            )
            messages = [m async for m in page if m.id not in kept]
            if not messages:
                return result
            for message in messages:
                try:
                    await check(base64.b64decode(message.content, validate=True))
                except (ValueError, ResourceNotFoundError) as e:  # MalformedEvent, bad base64
                    log.warning("message %s stays in %s%s: %s", message.id, queue, POISON_SUFFIX, e)
                    kept[message.id] = message
                    continue
                await target.send_message(message.content)
                await poison.delete_message(message)  # after the send: a crash here duplicates
                result.replayed += 1
    finally:
        result.kept = len(kept)
        for message in kept.values():  # visible again, as they were found
            await poison.update_message(message, visibility_timeout=0)
