"""Raw Service Bus SDK throughput against the local emulator (messages/s).

    python -m bench.bench_servicebus_raw [--quick] [--in-process | --journal write|fsync]

Starts its own emulator on a free loopback port (in a process of its own, or with
--in-process in this one; with --journal, journalling its queues) and measures, in one
run: sync single sends, sync batches, async single sends and async batches, one sender
each. Connection setup is left out of each figure (a first message opens the link). The
rate functions take a connection string, so the dispatcher benchmark can measure the raw
SDK beside itself on the same emulator and compare the two as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient

from bench.common import EVENT_BODY, EVENT_KEY
from local.process import start_emulator_process
from local.servicebus.emulator import Emulator


def _message(i: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        EVENT_BODY,
        message_id=f"bench-{i}",
        subject=EVENT_KEY,
        content_type="application/json",
        application_properties={"EventKey": EVENT_KEY, "SchemaVersion": 1},
    )


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def raw_sync_single_rate(connection_string: str, queue: str, n: int) -> float:
    """Messages/s for `n` one-at-a-time sends on one sync sender."""
    with (
        ServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        sender.send_messages(_message(-1))
        start = time.perf_counter()
        for i in range(n):
            sender.send_messages(_message(i))
        return n / (time.perf_counter() - start)


def raw_sync_batch_rate(connection_string: str, queue: str, n: int, batch_size: int = 100) -> float:
    """Messages/s for `n` messages sent as SDK batches of `batch_size` on one sync sender."""
    with (
        ServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        sender.send_messages(_message(-1))
        start = time.perf_counter()
        for chunk in _chunks(n, batch_size):
            batch = sender.create_message_batch()
            for i in chunk:
                batch.add_message(_message(i))
            sender.send_messages(batch)
        return n / (time.perf_counter() - start)


async def raw_async_single_rate(connection_string: str, queue: str, n: int) -> float:
    """Messages/s for `n` one-at-a-time awaited sends on one async sender."""
    async with (
        AsyncServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        await sender.send_messages(_message(-1))
        start = time.perf_counter()
        for i in range(n):
            await sender.send_messages(_message(i))
        return n / (time.perf_counter() - start)


async def raw_async_batch_rate(
    connection_string: str, queue: str, n: int, batch_size: int = 100
) -> float:
    """Messages/s for `n` messages sent as SDK batches of `batch_size` on one async sender."""
    async with (
        AsyncServiceBusClient.from_connection_string(connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        await sender.send_messages(_message(-1))
        start = time.perf_counter()
        for chunk in _chunks(n, batch_size):
            batch = await sender.create_message_batch()
            for i in chunk:
                batch.add_message(_message(i))
            await sender.send_messages(batch)
        return n / (time.perf_counter() - start)


@contextmanager
def emulator_process(journal: str = "") -> Iterator[str]:
    """The emulator as `make run` starts it, in a process of its own, so that it does not
    share the interpreter lock with the SDK (nor would Service Bus). `journal`: "" (none),
    "write" (its journal in a temporary folder) or "fsync" (and each record synced). Yields
    its connection string."""
    with tempfile.TemporaryDirectory(prefix="bench-servicebus-") as folder:
        data_dir = Path(folder) if journal else None
        emulator = start_emulator_process(
            data_dir=data_dir, args=["--fsync"] * (journal == "fsync")
        )
        try:
            yield emulator.connection_string
        finally:
            emulator.stop()


@contextmanager
def emulator_in_process() -> Iterator[str]:
    with Emulator() as emulator:
        yield emulator.connection_string


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, for a smoke run")
    parser.add_argument("--in-process", action="store_true", help="the emulator in this process")
    parser.add_argument(
        "--journal",
        choices=["write", "fsync"],
        default="",
        help="the emulator journals its queues (in a temporary folder), fsync: synced each time",
    )
    args = parser.parse_args()
    singles, batched = (200, 2_000) if args.quick else (1_000, 20_000)
    where = "this process" if args.in_process else "its own process"
    where += f", journal: {args.journal}" if args.journal else ""
    print(
        f"{os.cpu_count()} cpus, {platform.machine()}, python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; the emulator in {where}"
    )
    with emulator_in_process() if args.in_process else emulator_process(args.journal) as cs:
        runs: list[tuple[str, int, Callable[[], float]]] = [
            ("sync single sends", singles, lambda: raw_sync_single_rate(cs, "s1", singles)),
            ("sync batches of 100", batched, lambda: raw_sync_batch_rate(cs, "s100", batched)),
            (
                "async single sends",
                singles,
                lambda: asyncio.run(raw_async_single_rate(cs, "a1", singles)),
            ),
            (
                "async batches of 100",
                batched,
                lambda: asyncio.run(raw_async_batch_rate(cs, "a100", batched)),
            ),
        ]
        for name, count, run in runs:
            print(f"{name:<22} {count:>6} messages  {run():>8.0f} messages/s", flush=True)


if __name__ == "__main__":
    main()
