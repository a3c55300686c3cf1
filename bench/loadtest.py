"""Load test of the API through a running app (`make run`): N clients for S seconds mixing
reads and writes; reports requests/s, latency percentiles, errors and 5xx. Loopback only.

    .venv/bin/python -m bench.loadtest --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import aiohttp

from shared.services import Services
from shared.settings import Settings, load_local_settings

EMULATOR = (
    "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
)
PATH = "/v1/azureservicebusconnections"


def connection(queue: str) -> dict[str, Any]:
    return {"ServiceBusConnectionString": EMULATOR, "QueueName": queue, "EnabledEvents": ["*"]}


async def client(
    session: aiohttp.ClientSession, uid: str, until: float, latencies: list[float],
    statuses: Counter[int],
) -> None:  # fmt: skip
    """One client: 60% reads of a connection, 20% message pages, 10% list, 10% writes."""
    while time.monotonic() < until:
        roll = random.random()
        if roll < 0.6:
            method, path, body = "GET", f"{PATH}/{uid}", None
        elif roll < 0.8:
            method, path, body = "GET", f"{PATH}/{uid}/messages", None
        elif roll < 0.9:
            method, path, body = "GET", PATH, None
        elif roll < 0.95:
            method, path, body = "PUT", PATH, {**connection("load"), "Uid": uid, "Title": "t"}
        else:
            method, path, body = "POST", f"{PATH}/{uid}/test", None
        started = time.perf_counter()
        try:
            async with session.request(method, path, json=body) as response:
                await response.read()
                statuses[response.status] += 1
        except aiohttp.ClientError:
            statuses[0] += 1
        latencies.append(time.perf_counter() - started)


async def run(url: str, clients: int, seconds: float) -> int:
    load_local_settings()
    services = await Services.open(Settings.from_environment())
    key, _ = await services.api_keys.create("loadtest", services.clock())
    await services.close()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    headers = {"Authorization": key}
    async with aiohttp.ClientSession(url, headers=headers) as session:
        async with session.post(PATH, json=connection("load")) as response:
            uid = (await response.json())["Uid"]
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(client(session, uid, until, latencies, statuses) for _ in range(clients))
        )
        async with session.delete(f"{PATH}/{uid}"):
            pass
    latencies.sort()
    total = len(latencies)
    server_errors = sum(n for status, n in statuses.items() if status >= 500 or status == 0)
    print(f"{clients} clients, {seconds:.0f} s: {total} requests, {total / seconds:.0f} req/s")
    print(f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(total * 0.99) - 1] * 1000:.1f} ms")  # fmt: skip
    print(f"statuses: {dict(sorted(statuses.items()))}; errors or 5xx: {server_errors}")
    return 1 if server_errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7071")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load test only targets this machine's loopback")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be between 0 and 600")
    return asyncio.run(run(args.url, args.clients, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
