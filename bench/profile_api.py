"""Where the local host's CPU goes when it serves `GET /v1/azureservicebusconnections/{uid}`.

    python -m bench.profile_api [--requests N] [--clients N] [--profile]

Starts Azurite and `python -m local.host --no-triggers` (own process), one account with one
connection, then N requests (default 3,000) from 16 aiohttp clients with keep-alive, and as
many raw point reads of the connection's entity with the async Tables SDK from this process
(bench/bench_api.py's raw baseline), in four alternating rounds. Prints requests/s and the
CPU milliseconds a request of each process: ours is this process's HTTP client, the host and
Azurite; raw is this process's SDK and Azurite. With every core busy a p99 follows this
total, and unlike a p99 of a hundred requests it holds still under other sessions' load.
`--profile` runs the host under pyinstrument (on-CPU frames, a dev dependency) and prints
its call tree: the Tables SDK, aiohttp and our own code (local/host/, shared/api/http.py,
the service) apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.common import (
    CpuMeter,
    app_environment,
    app_settings,
    arguments,
    azurite,
    azurite_transport,
    new_keys,
)
from local.azurite import free_port
from shared.services import Services
from shared.storage import clients as clients_
from tests.factories import a_connection

ACCOUNT = "profile"
ROUNDS = 4  # alternating ours and raw, so another process's burst falls on both


def serve_profiled(report: str, host_args: list[str]) -> None:
    """The host itself, under pyinstrument; its call tree written to `report` on exit."""
    from pyinstrument import Profiler

    from local.host.runner import main

    profiler = Profiler(interval=0.0005, async_mode="disabled")  # on-CPU frames only
    profiler.start()
    try:
        main(host_args)
    finally:
        profiler.stop()
        Path(report).write_text(profiler.output_text())


async def spread(call: Callable[[], Awaitable[None]], requests: int, clients: int) -> None:
    """`requests` calls from `clients` concurrent clients."""
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(client() for _ in range(clients)))


async def drive(
    url: str, key: str, storage: str, path: str, requests: int, clients: int, pids: dict[str, int]
) -> dict[str, Rounds]:
    """Ours and raw, `requests` each round after a warm-up, in alternating rounds."""
    from azure.data.tables.aio import TableClient

    account, uid = ACCOUNT, path.rpartition("/")[2]
    connector = aiohttp.TCPConnector(limit=0)
    raw_table = TableClient.from_connection_string(
        storage, clients_.CONNECTIONS_TABLE, transport=azurite_transport()
    )
    async with (
        aiohttp.ClientSession(url, connector=connector, headers={"Authorization": key}) as s,
        raw_table,
    ):
        for _ in range(300):  # until the host answers
            try:
                async with s.get("/v1/health") as answer:
                    await answer.read()
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)

        async def ours() -> None:
            async with s.get(path) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()

        async def raw() -> None:
            await raw_table.get_entity(account, uid)

        sides = {"ours": ours, "raw": raw}
        rounds = {side: Rounds(CpuMeter(pids)) for side in sides}
        for call in sides.values():  # warm-up: 10 a client
            await spread(call, clients * 10, clients)
        for turn in range(ROUNDS):
            for side in sorted(sides, reverse=turn % 2 == 1):
                with rounds[side].cpu:
                    await spread(sides[side], requests, clients)
                rounds[side].requests += requests
        return rounds


@dataclass
class Rounds:
    """A side's rounds: requests, and a meter that sums their wall and CPU seconds."""

    cpu: CpuMeter
    requests: int = 0

    def per_request(self, names: list[str]) -> dict[str, float]:
        """CPU milliseconds a request of each of `names`, and their `total`."""
        per = {name: self.cpu.total[name] / self.requests * 1000 for name in names}
        return {**per, "total": sum(per.values())}


async def prepare(storage: str, keys: str) -> tuple[str, str]:
    """An API key and the path of a connection of one account."""
    services = await Services.open(app_settings(storage, keys))
    now = datetime.now(UTC)
    key, _ = await services.api_keys.create(ACCOUNT, now)
    stored = await services.connections.add(ACCOUNT, a_connection(), now)
    await services.close()
    return key, f"/v1/azureservicebusconnections/{stored.uid}"


def measure(requests: int, clients: int, profile: bool) -> None:
    keys = new_keys()
    with azurite() as storage, tempfile.TemporaryDirectory() as folder:
        key, path = asyncio.run(prepare(storage.connection_string, keys))
        port, report = free_port(), Path(folder) / "host.txt"
        host_args = ["--no-triggers", "--port", str(port), "--log-level", "WARNING"]
        wrapper = ["-m", "bench.profile_api", "--serve-profiled", str(report), "--"]
        command = [sys.executable, *(wrapper if profile else ["-m", "local.host"]), *host_args]
        env = {**os.environ, **app_environment(storage.connection_string, keys)}
        host = subprocess.Popen(command, env=env)
        try:
            pids = {"client": os.getpid(), "host": host.pid, "azurite": storage.process.pid}
            url = f"http://127.0.0.1:{port}"
            cs = storage.connection_string
            rounds = asyncio.run(drive(url, key, cs, path, requests, clients, pids))
        finally:
            host.send_signal(signal.SIGINT)
            host.wait(60)
        ours = rounds["ours"].per_request(["client", "host", "azurite"])
        raw = rounds["raw"].per_request(["client", "azurite"])
        for side, per in (("ours", ours), ("raw", raw)):
            done = rounds[side]
            print(
                f"GET connection, {side}, {clients} clients: "
                f"{done.requests / done.cpu.total_wall:,.0f} requests/s; CPU ms a request: "
                + ", ".join(f"{name} {ms:.2f}" for name, ms in per.items())
            )
        print(f"CPU a request, ours / raw: {ours['total'] / raw['total']:.2f}x")
        if profile:
            print(report.read_text())


def main() -> None:
    if sys.argv[1:2] == ["--serve-profiled"]:  # the host process of --profile
        serve_profiled(sys.argv[2], sys.argv[4:])
        return
    args = arguments(
        __doc__,
        requests=(int, "GET requests timed a round, each side (default 3,000)"),
        clients=(int, "concurrent clients (default 16)"),
        profile=(bool, "run the host under pyinstrument and print its call tree"),
    )
    measure(args.requests or 3000, args.clients or 16, bool(args.profile))


if __name__ == "__main__":
    main()
