"""Where the local host's CPU goes when it serves `GET /v1/azureservicebusconnections/{uid}`.

    python -m bench.profile_api [--requests N] [--clients N] [--profile]

Starts Azurite and `python -m local.host --no-triggers` (own process), one account with one
connection, then N requests (default 3,000) from 16 aiohttp clients with keep-alive. Prints
requests/s and the CPU milliseconds a request of the host and of Azurite. `--profile` runs
the host under pyinstrument (on-CPU frames, a dev dependency) and prints its call tree: the
Tables SDK, aiohttp and our own code (local/host/, shared/api/http.py, the service) apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.common import CpuMeter, app_environment, app_settings, arguments, azurite, new_keys
from local.azurite import free_port
from shared.services import Services
from tests.factories import a_connection


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


async def drive(url: str, key: str, path: str, requests: int, clients: int, cpu: CpuMeter) -> float:
    """`requests` GETs from `clients` clients after a warm-up; seconds taken, `cpu` meters
    them."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(url, connector=connector, headers={"Authorization": key}) as s:
        for _ in range(300):  # until the host answers
            try:
                async with s.get("/v1/health") as answer:
                    await answer.read()
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        left = requests + clients * 10

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with s.get(path) as answer:
                    assert answer.status == 200, await answer.text()
                    await answer.read()

        await asyncio.gather(*(client() for _ in range(clients)))  # warm-up: 10 a client
        left = requests
        started = time.perf_counter()
        with cpu:
            await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started


async def prepare(storage: str, keys: str) -> tuple[str, str]:
    """An API key and the path of a connection of one account."""
    services = await Services.open(app_settings(storage, keys))
    now = datetime.now(UTC)
    key, _ = await services.api_keys.create("profile", now)
    stored = await services.connections.add("profile", a_connection(), now)
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
            cpu = CpuMeter({"host": host.pid, "azurite": storage.process.pid})
            url = f"http://127.0.0.1:{port}"
            seconds = asyncio.run(drive(url, key, path, requests, clients, cpu))
            per = {name: used / requests * 1000 for name, used in cpu.used.items()}
            print(
                f"GET connection, {clients} clients: {requests / seconds:,.0f} requests/s; "
                f"CPU a request: host {per['host']:.2f} ms, azurite {per['azurite']:.2f} ms"
            )
        finally:
            host.send_signal(signal.SIGINT)
            host.wait(60)
        if profile:
            print(report.read_text())


def main() -> None:
    if sys.argv[1:2] == ["--serve-profiled"]:  # the host process of --profile
        serve_profiled(sys.argv[2], sys.argv[4:])
        return
    args = arguments(
        __doc__,
        requests=(int, "GET requests timed (default 3,000)"),
        clients=(int, "concurrent clients (default 16)"),
        profile=(bool, "run the host under pyinstrument and print its call tree"),
    )
    measure(args.requests or 3000, args.clients or 16, bool(args.profile))


if __name__ == "__main__":
    main()
