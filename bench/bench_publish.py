"""Publishing rate (events/s) of shared.publisher against raw queue sends, on Azurite.

    python -m bench.bench_publish [--quick] [--events N]

Starts its own Azurite (in memory). Each round publishes the same number of events twice,
alternating which goes first: once through `EventPublisher.publish(*events)` (validation,
the queue chosen per event, base64, retries armed, 16 sends in flight), once as the raw
baseline: the same SDK client sending the same pre-encoded messages, 16 at a time with a
semaphore. It prints each round and the best rates with their ratio (target >= 90%): what
the publisher costs over the sends it makes.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from bench.common import EVENT_DATA, EVENT_KEY, Result, arguments, machine, report
from local.azurite import start_azurite
from shared.events import EventStore, encode_queue_message, new_event
from shared.publisher import EventPublisher
from shared.storage.clients import SYSTEM_EVENTS_QUEUE

CONCURRENCY = 16


async def raw(publisher: EventPublisher, messages: list[str]) -> float:
    """The baseline: the same client, the same messages, 16 sends in flight; events/s."""
    queue = await publisher.queue(SYSTEM_EVENTS_QUEUE)
    room = asyncio.Semaphore(CONCURRENCY)

    async def send(message: str) -> None:
        async with room:
            await queue.send_message(message)

    started = time.perf_counter()
    await asyncio.gather(*(send(m) for m in messages))
    return len(messages) / (time.perf_counter() - started)


async def ours(publisher: EventPublisher, count: int) -> float:
    now = datetime.now(UTC)
    events = [
        new_event("bench", EVENT_KEY, now, f"employees/{n}", EVENT_DATA) for n in range(count)
    ]
    started = time.perf_counter()
    await publisher.publish(*events)
    return count / (time.perf_counter() - started)


async def measure(count: int, rounds: int) -> list[Result]:
    azurite = start_azurite()
    try:
        async with EventPublisher.from_connection_string(
            azurite.connection_string, concurrency=CONCURRENCY
        ) as publisher:
            await (await publisher.queue(SYSTEM_EVENTS_QUEUE)).create_queue()
            store, now = EventStore(None), datetime.now(UTC)
            event = new_event("bench", EVENT_KEY, now, "employees/1", EVENT_DATA)
            text = json.dumps(await store.to_payload(event), separators=(",", ":"))
            messages = [encode_queue_message(text.encode())] * count
            await ours(publisher, 50)  # warm: connections, pydantic's schema
            best_raw = best_ours = 0.0
            for r in range(rounds):
                if r % 2:
                    mine, base = await ours(publisher, count), await raw(publisher, messages)
                else:
                    base, mine = await raw(publisher, messages), await ours(publisher, count)
                print(f"round {r}: raw {base:6.0f} events/s, publisher {mine:6.0f} events/s")
                best_raw, best_ours = max(best_raw, base), max(best_ours, mine)
    finally:
        azurite.stop()
    return [
        Result(
            "publish",
            f"publish {count} events, {CONCURRENCY} in flight",
            best_ours,
            "events/s",
            raw=best_raw,
            target=">= 90%",
        )
    ]


def main() -> None:
    args = arguments(__doc__ or "", events=(int, "events per round (default 2000; quick 500)"))
    count = args.events or (500 if args.quick else 2000)
    print(f"publish benchmark: {machine()}")
    report(asyncio.run(measure(count, rounds=2 if args.quick else 4)))


if __name__ == "__main__":
    main()
