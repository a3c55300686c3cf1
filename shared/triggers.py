"""Queue- and timer-triggered functions: dispatch of system events (one function per
system-events queue, shared/eventqueues.py), retries, the purge.

The core is imported inside the functions: indexing the app stays fast (cold start).
"""

import base64
import logging
from collections.abc import Awaitable, Callable

import azure.functions as func

from shared.eventqueues import dispatch_function_name, system_event_queues
from shared.failpoints import failpoint
from shared.services import get_services
from shared.settings import system_event_queue_count
from shared.storage.clients import POISON_SUFFIX, REPLAY_QUEUE, RETRY_QUEUE

bp = func.Blueprint()
log = logging.getLogger("shared.dispatch")


async def to_poison(queue: str, msg: func.QueueMessage, reason: str) -> None:
    """A message that can never succeed goes straight to the poison queue, not 5 tries."""
    services = await get_services()
    poison = await services.storage.queue(queue + POISON_SUFFIX)
    await poison.send_message(base64.b64encode(msg.get_body()).decode())
    failpoint("after-poison")
    log.error("message %s of %s moved to %s%s: %s", msg.id, queue, queue, POISON_SUFFIX, reason)


def add_system_event_triggers(blueprint: func.Blueprint, queue_count: int) -> None:
    """One trigger per system-events queue, each running `dispatch_system_event` (the host
    binds one queue per function): the queues' count comes from the setting at import."""
    for shard, queue in enumerate(system_event_queues(queue_count)):
        trigger = blueprint.queue_trigger(
            arg_name="msg", queue_name=queue, connection="AzureWebJobsStorage"
        )
        blueprint.function_name(dispatch_function_name(shard))(trigger(_draining(queue)))


def _draining(queue: str) -> Callable[[func.QueueMessage], Awaitable[None]]:
    async def dispatch_queue(msg: func.QueueMessage) -> None:
        await dispatch_system_event(queue, msg)

    return dispatch_queue


async def dispatch_system_event(queue: str, msg: func.QueueMessage) -> None:
    from shared.events import MalformedEvent

    services = await get_services()
    try:
        event = await services.events.event_from(msg.get_body())
    except MalformedEvent as e:
        await to_poison(queue, msg, str(e))
        return
    dispatcher = await services.dispatcher()
    # Completed only once every connection has a durable outcome (Dispatcher.dispatch); a
    # message that comes back re-drives only the connections without one.
    await dispatcher.dispatch(event, redelivered=(msg.dequeue_count or 1) > 1)


add_system_event_triggers(bp, system_event_queue_count())


@bp.queue_trigger(arg_name="msg", queue_name=RETRY_QUEUE, connection="AzureWebJobsStorage")
async def retry_delivery(msg: func.QueueMessage) -> None:
    from shared.events import MalformedEvent

    services = await get_services()
    try:
        retry, event = await services.events.retry_from(msg.get_body())
    except MalformedEvent as e:
        await to_poison(RETRY_QUEUE, msg, str(e))
        return
    dispatcher = await services.dispatcher()
    await dispatcher.retry(retry, event, redelivered=(msg.dequeue_count or 1) > 1)


@bp.queue_trigger(arg_name="msg", queue_name=REPLAY_QUEUE, connection="AzureWebJobsStorage")
async def replay_records(msg: func.QueueMessage) -> None:
    """One run of a bulk replay (shared/service/replays.py): a failure leaves its counts as
    they were and the host tries the message again, up to `maxDequeueCount`, then
    `replays-poison`."""
    from shared.service.replays import MalformedReplay, run

    services = await get_services()
    try:
        await run(services, msg.get_body())
    except MalformedReplay as e:
        await to_poison(REPLAY_QUEUE, msg, str(e))


@bp.timer_trigger(arg_name="timer", schedule="0 15 * * * *")
async def purge_old_messages(timer: func.TimerRequest) -> None:
    """Hourly: records, their stored bodies and event payloads older than the retention go.
    A run stops after its time budget (240 s); the next one continues."""
    from shared.service.retention import purge

    services = await get_services()
    await purge(services, services.clock())  # logs its own summary
