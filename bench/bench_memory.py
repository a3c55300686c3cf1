"""Peak memory (RSS) of the process that runs the functions, dispatching to 100 connections.

    python -m bench.bench_memory [--quick] [--connections N] [--events N]

Starts Azurite and the Service Bus emulator, then runs the dispatch benchmark's work in a
fresh child process: one account with 100 connections (each its own queue, so 100 cached
senders, each with its own AMQP connection), events given to `Dispatcher.dispatch` with 64
in flight. The child reads its own peak RSS with `resource.getrusage` at the end. The raw
baseline is another fresh child doing the same deliveries with the SDKs alone (100 clients
and senders, one table client). Target: under 300 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from bench.bench_dispatch import (
    RawFanout,
    dispatch_all,
    events_for,
    make_fanout,
)
from bench.common import (
    ROOT,
    Result,
    app_settings,
    arguments,
    azurite,
    machine,
    new_keys,
    report,
    servicebus_emulator,
    unique,
)
from shared.services import Services

STORAGE_VARIABLE = "BENCH_STORAGE"
SERVICEBUS_VARIABLE = "BENCH_SERVICEBUS"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def child_ours(storage: str, servicebus: str, connections: int, events: int) -> float:
    services = await Services.open(app_settings(storage, new_keys()))
    try:
        fanout = await make_fanout(services, servicebus, connections)
        dispatcher = await services.new_dispatcher()
        try:
            await dispatch_all(dispatcher, events_for(fanout.account, 1), connections)  # links
            seconds = await dispatch_all(
                dispatcher, events_for(fanout.account, events), connections
            )
            assert len(dispatcher.publisher.senders) == connections
        finally:
            await dispatcher.close()
    finally:
        await services.close()
    return events * connections / seconds


async def child_raw(storage: str, servicebus: str, connections: int, events: int) -> float:
    raw = RawFanout(servicebus, storage, [unique("raw") for _ in range(connections)])
    try:
        await raw.open()
        seconds = await raw.run(events_for("raw", events))
    finally:
        await raw.close()
    return events * connections / seconds


def child(which: str, connections: int, events: int) -> None:
    """In the child: do the work, then print what it cost as one JSON line."""
    at_start = peak_rss_mb()
    storage, servicebus = os.environ[STORAGE_VARIABLE], os.environ[SERVICEBUS_VARIABLE]
    work = child_ours if which == "ours" else child_raw
    rate = asyncio.run(work(storage, servicebus, connections, events))
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "after_imports_mb": at_start, "rate": rate}))


def run_child(which: str, storage: str, servicebus: str, connections: int, events: int) -> Any:
    command = [sys.executable, "-m", "bench.bench_memory", "--child", which,
               "--connections", str(connections), "--events", str(events)]  # fmt: skip
    env = {**os.environ, STORAGE_VARIABLE: storage, SERVICEBUS_VARIABLE: servicebus}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the {which} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, connections: int = 100, events: int | None = None) -> list[Result]:
    events = events or (30 if quick else 200)
    with azurite() as storage_process, servicebus_emulator() as emulator:
        storage, cs = storage_process.connection_string, emulator.connection_string
        print(f"  {connections} connections, {events} events each...", flush=True)
        started = time.perf_counter()
        raw = run_child("raw", storage, cs, connections, events)
        ours = run_child("ours", storage, cs, connections, events)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    deliveries = connections * events
    return [
        Result(
            "memory",
            f"peak RSS, {connections} connections ({deliveries:,} deliveries)",
            ours["peak_rss_mb"],
            "MB",
            raw=raw["peak_rss_mb"],
            target="< 300 MB",
            higher_is_better=False,
            note=(
                f"after imports: ours {ours['after_imports_mb']:.0f} MB, raw "
                f"{raw['after_imports_mb']:.0f} MB; rate: ours {ours['rate']:,.0f}, raw "
                f"{raw['rate']:,.0f} deliveries/s"
            ),
            extra={"ours": ours, "raw": raw},
        )
    ]


def main() -> None:
    args = arguments(
        __doc__,
        connections=(int, "connections (default 100)"),
        events=(int, "events, each to every connection (default 30 quick, 200 full)"),
        child=(str, "internal: run one side (ours or raw) in this process"),
    )
    if args.child:
        child(args.child, args.connections, args.events)
        return
    print(f"memory: {machine()}", flush=True)
    report(run(args.quick, args.connections or 100, args.events))


if __name__ == "__main__":
    main()
