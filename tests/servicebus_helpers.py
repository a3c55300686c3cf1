"""Reading what a subscriber receives, through the official SDKs (Python, and JavaScript
scripts under tests/js)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.servicebus import ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient


class Subscriber:
    """One receiver kept open: in RECEIVE_AND_DELETE mode a closed receiver drops what was
    already sent to it, so a test that reads in several steps reads through one of these."""

    def __init__(self, connection_string: str, queue: str) -> None:
        self._client = ServiceBusClient.from_connection_string(connection_string)
        self._receiver = self._client.get_queue_receiver(
            queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, prefetch_count=0
        )

    async def __aenter__(self) -> Subscriber:
        await self._receiver.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._receiver.close()
        await self._client.close()

    async def receive(self, count: int, timeout: float = 20.0) -> list[Any]:
        """Up to `count` messages, or what came within `timeout`."""
        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            received += await self._receiver.receive_messages(
                max_message_count=min(count - len(received), 500), max_wait_time=1
            )
        return received


async def receive(
    connection_string: str, queue: str, count: int, timeout: float = 20.0
) -> list[Any]:
    """Receive (and delete) `count` messages, or what came within `timeout`."""
    async with Subscriber(connection_string, queue) as subscriber:
        return await subscriber.receive(count, timeout)


async def nothing_arrives(connection_string: str, queue: str, wait: float = 1.5) -> bool:
    return await receive(connection_string, queue, 1, timeout=wait) == []


def body_of(message: Any) -> bytes:
    return b"".join(message.body)


JS = Path(__file__).resolve().parent / "js"


async def run_javascript(script: str, *args: str) -> Any:
    """Run tests/js/<script> with node (the npm packages of package.json) and return the JSON
    it prints; it must exit 0."""
    run = await asyncio.to_thread(
        subprocess.run,
        ["node", str(JS / script), *args],
        cwd=JS.parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)
