"""Reading what a subscriber receives, through the official SDK."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.servicebus import ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient


async def receive(
    connection_string: str, queue: str, count: int, timeout: float = 20.0
) -> list[Any]:
    """Receive (and delete) `count` messages, or what came within `timeout`."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        receiver = client.get_queue_receiver(
            queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, prefetch_count=0
        )
        async with receiver:
            while len(received) < count and time.monotonic() < deadline:
                batch = await receiver.receive_messages(
                    max_message_count=min(count - len(received), 500), max_wait_time=1
                )
                received += batch
    return received


async def nothing_arrives(connection_string: str, queue: str, wait: float = 1.5) -> bool:
    await asyncio.sleep(0)
    return await receive(connection_string, queue, 1, timeout=wait) == []


def body_of(message: Any) -> bytes:
    return b"".join(message.body)
