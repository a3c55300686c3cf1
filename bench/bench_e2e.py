"""End-to-end delivery rate (events/s): `system-events` queue -> local host -> Service Bus.

    python -m bench.bench_e2e [--quick] [--events N] [--rounds R]

Starts Azurite, the Service Bus emulator (own process) and the app as deployed in
`python -m local.host --app function_app:app` (own process, the project's host.json: 32
messages a poll, up to 96 invocations in flight). One account with one connection. A round
publishes N events with `Services.publish` (32 at a time, as a busy platform would, and at
most 256 published but not yet delivered, see OUTSTANDING) while an SDK receiver counts what
reaches the connection's queue; the figure is N over the time from the first publish to the
last arrival.

The raw baseline is the Storage queue part of that path with the SDK alone, through the same
Azurite in the same run: the same N messages sent 32 at a time (at most 256 not yet deleted),
received 32 a poll by two consumers and deleted one by one, from the first send to the last
delete. Every event makes
that trip whatever the dispatcher does, and Azurite's one Node.js thread serves it beside
the record writes, so it is the ceiling of this path on this machine; the gap to it is the
host, the function and the dispatch (measured alone by bench_dispatch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from bench.bench_dispatch import events_for, make_fanout
from bench.common import (
    CpuMeter,
    Result,
    app_environment,
    app_settings,
    arguments,
    azurite,
    azurite_transport,
    local_host,
    machine,
    new_keys,
    report,
    servicebus_emulator,
    unique,
)
from shared.events import encode_queue_message
from shared.models.events import SystemEvent
from shared.services import Services

PUBLISHERS = 32
# Events published and not yet arrived, at most: Azurite's queue costs grow with its depth
# (receive+delete: 3.7 ms of its CPU a message at 300 deep, 32 ms at 3,000), which Storage
# queues do not; an unbounded publisher would measure that rather than the app.
OUTSTANDING = 256
CONSUMERS = 2  # the raw side's pollers: 2 x 32 in flight, about the host's 48
PAGE = 32


async def in_parallel(
    items: Sequence[Any], work: Callable[[Any], Awaitable[Any]], n: int = PUBLISHERS
) -> None:
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(n)))


@dataclass
class Arrivals:
    first: float = 0.0
    last: float = 0.0
    count: int = 0


class Receiver:
    """Counts (and deletes) what reaches a Service Bus queue, from an open link."""

    def __init__(self, connection_string: str, queue: str) -> None:
        from azure.servicebus import ServiceBusReceiveMode
        from azure.servicebus.aio import ServiceBusClient

        self._client = ServiceBusClient.from_connection_string(connection_string)
        self._receiver = self._client.get_queue_receiver(
            queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, prefetch_count=500
        )

    async def wait_for(
        self, n: int, timeout: float, window: asyncio.Semaphore | None = None
    ) -> Arrivals:
        """Until `n` messages arrived (or `timeout`); each arrival frees a place in `window`."""
        arrivals = Arrivals()
        deadline = time.monotonic() + timeout
        while arrivals.count < n and time.monotonic() < deadline:
            batch = await self._receiver.receive_messages(max_message_count=500, max_wait_time=1)
            if batch:
                now = time.perf_counter()
                arrivals.first = arrivals.first or now
                arrivals.last = now
                arrivals.count += len(batch)
                if window is not None:
                    for _ in batch:
                        window.release()
        return arrivals

    async def close(self) -> None:
        await self._client.close()


async def ours(
    services: Services, receiver: Receiver, events: Sequence[SystemEvent], prime: SystemEvent
) -> tuple[float, str]:
    """Publish every event (at most OUTSTANDING not yet arrived) and wait until each has
    arrived; events/s and a note. One event goes through first, untimed, so the host polls at
    its fastest when the clock starts rather than after its empty-queue back-off (up to 2 s)."""
    await services.publish(prime)
    await receiver.wait_for(1, timeout=60)
    window = asyncio.Semaphore(OUTSTANDING)

    async def publish(event: SystemEvent) -> None:
        await window.acquire()
        await services.publish(event)

    counting = asyncio.create_task(receiver.wait_for(len(events), timeout=600, window=window))
    start = time.perf_counter()
    await in_parallel(events, publish)
    published = time.perf_counter()
    arrivals = await counting
    if arrivals.count != len(events):
        raise RuntimeError(f"{arrivals.count} of {len(events)} events arrived")
    steady = (arrivals.count - 1) / max(arrivals.last - arrivals.first, 1e-3)
    note = (
        f"publishing took {published - start:.1f} s; first arrival after "
        f"{arrivals.first - start:.2f} s; from first to last arrival {steady:,.0f}/s"
    )
    return len(events) / (arrivals.last - start), note


async def raw(storage: str, payloads: Sequence[str]) -> float:
    """The same messages through an Azurite queue with the SDK alone: send (at most
    OUTSTANDING not yet deleted), receive, delete."""
    from azure.storage.queue.aio import QueueClient

    name = unique("raw-events")
    transport = azurite_transport()
    async with QueueClient.from_connection_string(storage, name, transport=transport) as queue:
        await queue.create_queue()
        await queue.send_message(payloads[0])  # a connection open before the clock starts
        async for message in queue.receive_messages():
            await queue.delete_message(message)
        window = asyncio.Semaphore(OUTSTANDING)
        deleted: set[str] = set()

        async def send(payload: str) -> None:
            await window.acquire()
            await queue.send_message(payload)

        async def delete(message: Any) -> None:
            with contextlib.suppress(ResourceNotFoundError):  # deleted once already
                await queue.delete_message(message)
            if message.id not in deleted:
                deleted.add(message.id)
                window.release()

        async def consume() -> None:
            while len(deleted) < len(payloads):
                # A short lease, as a receive whose answer is lost (a dropped connection under
                # load) hides its messages that long; they come again and are counted once.
                pages = queue.receive_messages(messages_per_page=PAGE, visibility_timeout=30)
                got = []
                async for page in pages.by_page():
                    got = [m async for m in page]
                    break
                if not got:
                    await asyncio.sleep(0.1)
                    continue
                await asyncio.gather(*(delete(m) for m in got))

        start = time.perf_counter()
        work = asyncio.gather(in_parallel(payloads, send), consume(), consume())
        await asyncio.wait_for(work, timeout=600)
        return len(payloads) / (time.perf_counter() - start)


async def payloads_of(services: Services, events: Sequence[SystemEvent]) -> list[str]:
    """Queue messages as `Services.publish` makes them."""
    texts = [json.dumps(await services.events.to_payload(e), separators=(",", ":")) for e in events]
    return [encode_queue_message(text.encode()) for text in texts]


async def measure(quick: bool, n: int | None, rounds: int | None) -> list[Result]:
    n = n or (500 if quick else 3_000)
    rounds = rounds or (1 if quick else 2)
    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    notes: dict[str, str] = {}
    keys = new_keys()
    with azurite() as storage, servicebus_emulator() as emulator:
        services = await Services.open(app_settings(storage.connection_string, keys))
        fanout = await make_fanout(services, emulator.connection_string, 1)
        [prime] = events_for(fanout.account, 1)
        receiver = Receiver(emulator.connection_string, fanout.queues[0])
        try:
            with local_host(app_environment(storage.connection_string, keys)) as host:
                pids = {"azurite": storage.process.pid, "host": host.process.pid,
                        "emulator": emulator.process.pid, "bench": os.getpid()}  # fmt: skip
                # The first events open the host's clients and links; not timed.
                await ours(services, receiver, events_for(fanout.account, 10), prime)
                for r in range(rounds):
                    print(f"  round {r + 1}: {n} events...", flush=True)
                    for which in ("raw", "ours") if r % 2 == 0 else ("ours", "raw"):
                        events = events_for(fanout.account, n)
                        payloads = await payloads_of(services, events)
                        with CpuMeter(pids) as cpu:
                            if which == "raw":
                                rate, note = await raw(storage.connection_string, payloads), ""
                            else:
                                rate, note = await ours(services, receiver, events, prime)
                        rates[which].append(rate)
                        notes[which] = f"{which}: {note}{'; ' if note else ''}{cpu.summary()}"
                if "Traceback" in host.output():
                    print(host.output()[-3000:])
        finally:
            await receiver.close()
            await services.close()
    return [
        Result(
            "e2e",
            f"end to end, 1 connection ({n:,} events)",
            statistics.median(rates["ours"]),
            "events/s",
            raw=statistics.median(rates["raw"]),
            target=">= 300 events/s",
            note=f"{notes['ours']}\n      {notes['raw']} (Azurite queue send+receive+delete)",
            extra={"ours_rounds": rates["ours"], "raw_rounds": rates["raw"]},
        )
    ]


def main() -> None:
    args = arguments(
        __doc__,
        events=(int, "events per round (default 500 quick, 3,000 full)"),
        rounds=(int, "rounds, alternating which goes first (default 1 quick, 2 full)"),
    )
    print(f"e2e: {machine()}", flush=True)
    report(asyncio.run(measure(args.quick, args.events, args.rounds)))


if __name__ == "__main__":
    main()
