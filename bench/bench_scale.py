"""Storage and Service Bus operations per delivery by path, memory, and the purge of a day, at
10,000 and 100,000 connections (issue 25; docs/CAPACITY.md takes its figures from here).

    python -m bench.bench_scale [--connections 10000,100000] [--deliveries N] [--records N]

It drives the real dispatcher (`Services.new_dispatcher`), the real replay run
(shared/service/replays.py) and the real purge (shared/service/retention.py). What they talk
to is counted, not timed:
- **Service Bus is a counting fake** (`CountingSender`, given to the sender pool): no
  emulator or namespace here takes sends for 100,000 queues at Azure's speed, and what a send
  costs at Service Bus is one operation whatever its speed. It refuses a message over the
  Standard tier's 256 KB as the link does (TooLarge), so the claim check runs as it would.
- **Table, queue and blob storage are Azurite behind a counting transport**
  (`CountingTransport`, installed for every storage client the app makes): every request the
  app's repositories send is counted by kind, so the counts are exact (the repositories send
  their own batch and query requests through the SDK's pipeline, which an in-memory fake of
  the SDK's methods would miss). Azurite answers 100,000 connections slowly, so its times are
  not Azure's: operation counts are the result, and the purge time of a day is extrapolated
  from a measured sample (stated when printed) and set against Azure's documented rates.

Each path runs `--deliveries` deliveries, each to a connection of its own account (one
connection an account, the worst case at scale: the 5 s connection cache rarely hits when a
connection gets an event every few seconds). Operations per delivery exclude the trigger's
own reading of the system-events queue (the Functions host: one get per 32 messages and one
delete per message) and health rows (written on change or once a minute per connection and
instance, not per delivery); both are printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.pipeline.transport import AioHttpTransport

from bench.common import Result, app_settings, azurite, new_keys, report
from shared.dispatch.errors import TooLarge
from shared.dispatch.isolation import Deadline
from shared.dispatch.outgoing import Outgoing
from shared.dispatch.readcache import MAX_KEYS
from shared.dispatch.servicebus import QueueSender, SenderPool
from shared.events import new_event
from shared.models.replays import ReplayRequest
from shared.service import replays, retention
from shared.services import Services
from shared.storage import clients
from shared.storage.healthrows import HEALTH_SUFFIX
from shared.storage.logrecords import LoggedMessage
from tests.factories import a_connection, log_records

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
STANDARD_MAX_MESSAGE = 256 * 1024  # Service Bus Standard: a message of at most 256 KB
LARGE_BODY = 300 * 1024  # over it: the claim check path
DAY_DELIVERIES = 10_000_000
TRIGGER_BATCH = 32  # host.json queues.batchSize: one get per 32 messages, a delete each
SEED_CONCURRENCY = 64
# Azure's documented targets (docs/CAPACITY.md has the sources).
ACCOUNT_REQUESTS_PER_SECOND = 20_000
PARTITION_ENTITIES_PER_SECOND = 2_000
HEARTBEAT = "health heartbeat"  # per connection a minute and instance, not per delivery


# ---------------------------------------------------------------- counting


class Counts:
    """Requests by kind (`table read`, `table batch`, `queue send`, ...), and entities in
    batches; reset between phases."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.batch_entities = 0

        self.counting = True

    def reset(self) -> None:
        self.requests.clear()
        self.batch_entities = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.counting = False
        try:
            yield
        finally:
            self.counting = True

    def take(self) -> tuple[dict[str, int], int]:
        taken = dict(self.requests), self.batch_entities
        self.reset()
        return taken


COUNTS = Counts()


def kind(method: str, url: str, ports: dict[int, str], body: bytes = b"") -> str:
    """What a storage request is, from its method, URL (Azurite's path style) and body (a
    health row inserted names its key only there)."""
    parts = urlsplit(url)
    service = ports.get(parts.port or 0, "other")
    path = unquote(parts.path).split("/", 2)[-1]  # after the account name
    if service == "table":
        if path.startswith("$batch"):
            return "table batch"
        if path.startswith("Tables"):
            return "table create"
        health = HEALTH_SUFFIX in path or HEALTH_SUFFIX.encode() in body
        if method == "GET":
            what = "point read" if "PartitionKey=" in path else "query"
            return f"table {what}" + (" (health)" if health else "")
        return f"table write ({method})" + (" (health)" if health else "")
    if service == "queue":
        name = path.split("/")[0]
        return f"queue {method} {name}"
    if service == "blob":
        container = path.split("/")[0]
        scope = "app" if container == clients.BODIES_CONTAINER else "customer"
        if "restype=container" in (parts.query or "") and method == "PUT":
            return f"blob container create ({scope})"  # once: not an operation a delivery
        listing = "comp=list" in (parts.query or "")
        return f"blob {'list' if listing else method} ({scope})"
    return f"other {method}"


class CountingTransport(AioHttpTransport):
    """The SDKs' aiohttp transport, counting each request before it goes (bench only)."""

    ports: dict[int, str] = {}

    async def send(self, request: Any, **kwargs: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        what = kind(request.method, request.url, CountingTransport.ports, body)
        if COUNTS.counting:
            COUNTS.requests[what] += 1
        if what == "table batch" and COUNTS.counting:
            COUNTS.batch_entities += body.count(b"Content-Type: application/http")
        return await super().send(request, **kwargs)


class CountingSender(QueueSender):
    """A fake Service Bus sender: counts what it is given (one send operation each), never
    connects, refuses what the Standard tier refuses; `failing` makes every send fail as a
    busy namespace does (ConnectionError: transient, retried)."""

    sends = 0
    failing = False

    async def send(self, message: Outgoing, deadline: Deadline) -> None:
        if len(message.body) > STANDARD_MAX_MESSAGE:
            raise TooLarge(f"{len(message.body)} bytes over the link's {STANDARD_MAX_MESSAGE}")
        CountingSender.sends += 1
        if CountingSender.failing:
            raise ConnectionError("the fake namespace refuses (bench)")
        self.ready = True

    @property
    def answered(self) -> bool:
        return True

    def heard(self) -> float:
        return time.monotonic()

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- the run


def install_ports(storage: Any) -> None:
    """Every storage client made from now on counts its requests (they import the class when
    they make a transport), telling the services of `storage` (an Azurite) by port."""
    import azure.core.pipeline.transport as transport

    ports = {storage.table_port: "table", storage.queue_port: "queue", storage.blob_port: "blob"}
    CountingTransport.ports = {**CountingTransport.ports, **ports}
    transport.AioHttpTransport = CountingTransport


async def seed(services: Services, n: int, container_cs: str) -> list[Any]:
    """`n` connections, each of an account of its own, with a claim-check container (made
    now: a customer's container exists before its first large event, in steady state)."""
    from azure.storage.blob.aio import ContainerClient

    async with ContainerClient.from_connection_string(container_cs, "claims") as container:
        await container.create_container()
    stored: list[Any] = []

    async def one(i: int) -> None:
        c = a_connection(BlobContainerConnectionString=container_cs, BlobContainerName="claims")
        added = await services.connections.add(f"acct{i:07d}", c, NOW)
        # Delivered to earlier today, as in steady state: the purge's day row of its log
        # partition (once a partition, day and instance) is not a cost of each delivery.
        await services.messages.days.note_at(added.log_partition, services.clock())
        stored.append(added)

    for start in range(0, n, SEED_CONCURRENCY):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + SEED_CONCURRENCY))))
    return stored


def per_delivery(counts: dict[str, int], deliveries: int) -> dict[str, float]:
    return {k: v / deliveries for k, v in sorted(counts.items()) if "create" not in k}


def storage_ops(counts: dict[str, int]) -> int:
    """Requests that count against the account's rate (creating tables and queues once apart)."""
    return sum(v for k, v in counts.items() if "create" not in k and "PUT system" not in k)


async def phase(name: str, deliveries: int, work: Any) -> dict[str, Any]:
    COUNTS.reset()
    CountingSender.sends = 0
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    counts, entities = COUNTS.take()
    health = {k: v for k, v in counts.items() if "(health)" in k and name != HEARTBEAT}
    delivery = {k: v for k, v in counts.items() if k not in health}
    return {
        "path": name,
        "storage": storage_ops(delivery) / deliveries,
        "batch_entities": entities / deliveries,
        "servicebus": CountingSender.sends / deliveries,
        "by_kind": per_delivery(delivery, deliveries),
        "health": sum(health.values()),
        "seconds": seconds,
    }


FAILED: collections.Counter[str] = collections.Counter()


def errors(outcomes: Sequence[object]) -> None:
    """Azurite under 100,000 connections sometimes resets a connection: such a delivery
    fails as it would in Azure (its event comes back), counted and shown, not fatal."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            FAILED[type(outcome).__name__] += 1


async def drain(services: Services, queue_name: str) -> list[bytes]:
    """What a queue holds, taken off it as the Functions host would (not counted: the host's
    reads are counted apart, per message)."""
    queue = await services.storage.queue(queue_name)
    bodies = []
    with COUNTS.paused():
        async for message in queue.receive_messages(messages_per_page=32):
            bodies.append(_decoded(message.content))
            await queue.delete_message(message)
    return bodies


async def paths(services: Services, stored: Sequence[Any], deliveries: int) -> list[dict[str, Any]]:
    """Each path over `deliveries` connections of their own (`stored` holds 3x that many)."""
    dispatcher = await services.dispatcher()  # the one the replay run uses too
    dispatcher.publisher.senders = SenderPool(make=CountingSender)
    ok, failing, large = (stored[i * deliveries : (i + 1) * deliveries] for i in range(3))

    def event(s: Any, n: int, data: Any = None) -> Any:
        return new_event(s.account, "Employee.Created", NOW, data=data or {"n": n})

    async def dispatch(events: Sequence[Any]) -> None:
        errors(
            await asyncio.gather(*(dispatcher.dispatch(e) for e in events), return_exceptions=True)
        )

    results = [
        await phase("first attempt", deliveries, lambda: dispatch([event(s, 0) for s in ok]))
    ]
    busy = ok[0]  # `deliveries` events to one connection: its account stays cached
    busy_events = [event(busy, n) for n in range(1, deliveries + 1)]
    results.append(await phase("first attempt, cached", deliveries, lambda: dispatch(busy_events)))

    CountingSender.failing = True
    results.append(
        await phase("failed attempt", deliveries, lambda: dispatch([event(s, 0) for s in failing]))
    )
    CountingSender.failing = False
    scheduled = await drain(services, clients.RETRY_QUEUE)

    async def retry() -> None:  # as the retry trigger: the message's retry and event
        async def one(body: bytes) -> None:
            retried, event = await services.events.retry_from(body)
            await dispatcher.retry(retried, event)

        errors(await asyncio.gather(*(one(b) for b in scheduled), return_exceptions=True))

    # A retry comes 30 s or more after its failure: the account's cached reads (connections,
    # suspended set; `connection_cache_seconds`) have expired by then, as here.
    await asyncio.sleep(services.settings.connection_cache_seconds)
    results.append(await phase("retry", len(scheduled), retry))

    async def replay() -> None:  # all of the busy connection's deliveries sent again
        now = services.clock()  # records are written at the clock's time, not the events'
        request = ReplayRequest.model_validate(
            {"Since": (now - timedelta(hours=1)).isoformat(), "OnlyFailed": False}
        )
        await replays.start(services, busy, request, now)
        for body in await drain(services, clients.REPLAY_QUEUE):
            await replays.run(services, body)

    results.append(await phase("replay", deliveries + 1, replay))
    big = [event(s, 0, {"Blob": "x" * LARGE_BODY}) for s in large]
    results.append(await phase("claim check", deliveries, lambda: dispatch(big)))
    if dispatcher.health is not None:  # every connection's outcomes written now: a heartbeat
        touched = 3 * deliveries
        results.append(await phase(HEARTBEAT, touched, dispatcher.health.close))
    return results


def _decoded(content: Any) -> bytes:
    import base64

    return base64.b64decode(content)


async def purge_run(services: Services) -> tuple[dict[str, int], int, float]:
    """One purge, counted and timed, of what is older than the retention at NOW + 1 day (the
    paths' records are young then; the seeded old ones are not); no time budget."""
    COUNTS.reset()
    started = time.perf_counter()
    await retention.purge(services, NOW + timedelta(days=1), budget_seconds=10**6)
    seconds = time.perf_counter() - started
    counts, entities = COUNTS.take()
    return counts, entities, seconds


async def purge_records(records: int) -> dict[str, float]:
    """The purge's cost a record, on a store of its own: `records` old records over
    records/100 connections, purged, less a purge of the same connections with nothing to
    delete (so the scan of the big store does not blur it)."""
    partitions = max(1, records // 100)
    with azurite() as storage:
        install_ports(storage)
        services = await Services.open(app_settings(storage.connection_string, new_keys()))
        try:
            with COUNTS.paused():
                await services.messages.days.trust(NOW)  # past the first full scan
                stored = await seed(services, partitions, storage.connection_string)
            scan, _, scan_seconds = await purge_run(services)
            share = -(-records // partitions)
            with COUNTS.paused():
                old = NOW - timedelta(days=15)
                for s in stored:
                    kept: list[LoggedMessage] = log_records(
                        s.uid, share, old, span=timedelta(hours=1)
                    )
                    await services.messages.add(s.log_partition, kept)
            full, entities, full_seconds = await purge_run(services)
        finally:
            await services.close()
    sample = share * partitions
    return {
        "sample records": sample,
        "ops per record": max(0, storage_ops(full) - storage_ops(scan)) / sample,
        "batched entities per record": entities / sample,
        "seconds per record": max(0.0, full_seconds - scan_seconds) / sample,
    }


async def purge_day(services: Services, connections: int, records: int) -> dict[str, float]:
    """The purge over every connection with nothing old (its cost a connection), and its cost
    a record (`purge_records`); a day of DAY_DELIVERIES extrapolated linearly from the two."""
    scan, _, scan_seconds = await purge_run(services)
    per_record = await purge_records(records)
    per_connection = storage_ops(scan) / connections
    day_ops = per_connection * connections + per_record["ops per record"] * DAY_DELIVERIES
    return {
        "connections": connections,
        "ops per connection": per_connection,
        "scan seconds": scan_seconds,
        **per_record,
        "day ops": day_ops,
        "day seconds here": scan_seconds + per_record["seconds per record"] * DAY_DELIVERIES,
        "day seconds at account rate": day_ops / ACCOUNT_REQUESTS_PER_SECOND,
    }


async def memory(services: Services, stored: Sequence[Any], accounts: int) -> dict[str, float]:
    """Bytes a cached account's connections take (tracemalloc over `accounts` reads), and the
    cache's most at its bound."""
    dispatcher = await services.dispatcher()
    sample = stored[:accounts]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for s in sample:
        await dispatcher.connections_of(s.account)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    per_account = grown / len(sample)
    return {
        "bytes per cached account": per_account,
        "cache at its bound MB": per_account * MAX_KEYS / 1e6,
        "unbounded MB": per_account * len(stored) / 1e6,
    }


async def measure(connections: int, deliveries: int, records: int) -> dict[str, Any]:
    with azurite() as storage:
        install_ports(storage)
        settings = app_settings(storage.connection_string, new_keys())
        # Retries due at once: the bench takes them off the queue as the trigger would.
        # Health written only when the bench asks (its heartbeat phase), not by a timer
        # firing in the middle of another path's count.
        settings = dataclasses.replace(
            settings, retry_delays_seconds=(0.0,) * 5, health_flush_seconds=3600.0
        )
        services = await Services.open(settings)
        try:
            started = time.perf_counter()
            with COUNTS.paused():
                # An installation past the purge's first full scan (shared/storage/logdays.py)
                await services.messages.days.trust(NOW)
                stored = await seed(services, connections, storage.connection_string)
            seeded = time.perf_counter() - started
            measured = {
                "connections": connections,
                "seed seconds": seeded,
                "deliveries": deliveries,
                "paths": await paths(services, stored, deliveries),
                "memory": await memory(services, stored[3 * deliveries :], deliveries),
                "purge": await purge_day(services, connections, records),
            }
        finally:
            await services.close()
    return measured


def show(measured: dict[str, Any]) -> list[Result]:
    n = measured["connections"]
    print(f"\n{n:,} connections (one an account; seeded in {measured['seed seconds']:.0f} s)")
    print(f"  {'path':<24} {'storage ops':>11} {'batched':>8} {'SB sends':>9}  by kind")
    results = []
    for p in measured["paths"]:
        if p["path"] != HEARTBEAT and p["servicebus"] < 1:  # the bench's own check
            raise SystemExit(f"{p['path']}: {p['servicebus']:.2f} sends a delivery, not 1")
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in p["by_kind"].items())
        print(
            f"  {p['path']:<24} {p['storage']:>11.2f} {p['batch_entities']:>8.2f} "
            f"{p['servicebus']:>9.2f}  {kinds}"
        )
        results.append(
            Result(
                "scale",
                f"storage ops/delivery, {p['path']} ({n:,} conns)",
                round(p["storage"], 2),
                "ops",
                higher_is_better=False,
                extra={"by_kind": p["by_kind"], "servicebus": p["servicebus"]},
            )
        )
    if FAILED:
        print(f"  deliveries failed on Azurite (counted as far as they went): {dict(FAILED)}")
        if sum(FAILED.values()) > 0.01 * len(measured["paths"]) * measured["deliveries"]:
            raise SystemExit("more than 1% of deliveries failed on Azurite: no figures")
        FAILED.clear()
    health = sum(p["health"] for p in measured["paths"])
    print(f"  health rows read or written meanwhile (per connection, not per delivery): {health}")
    print(
        f"  not counted above, per event: the publisher's put on system-events (1), the "
        f"trigger's get (1/{TRIGGER_BATCH}) and delete (1)"
    )
    m = measured["memory"]
    print(
        f"  memory: {m['bytes per cached account'] / 1000:.1f} KB a cached account; the "
        f"connection cache at its bound ({MAX_KEYS:,}) {m['cache at its bound MB']:.0f} MB; "
        f"unbounded it would hold {m['unbounded MB']:.0f} MB"
    )
    results.append(
        Result(
            "scale",
            f"KB a cached account ({n:,} conns)",
            round(m["bytes per cached account"] / 1000, 2),
            "KB",
            higher_is_better=False,
        )
    )
    q = measured["purge"]
    print(
        f"  purge: {q['ops per connection']:.2f} storage ops a connection "
        f"({q['scan seconds']:.1f} s for {n:,} with nothing to delete, Azurite); "
        f"{q['ops per record']:.3f} a record "
        f"({q['batched entities per record']:.2f} entities in batches; sample "
        f"{q['sample records']:,} records, {q['seconds per record'] * 1e3:.2f} ms each here)"
    )
    print(
        f"  purge of a day of {DAY_DELIVERIES:,} deliveries, extrapolated linearly from the "
        f"scan and that sample: {q['day ops'] / 1e6:.2f} M storage ops; "
        f"{q['day seconds here'] / 3600:.1f} h "
        f"at this machine's Azurite speed, {q['day seconds at account rate'] / 60:.1f} min "
        f"at the account's {ACCOUNT_REQUESTS_PER_SECOND:,} requests/s"
    )
    results.append(
        Result(
            "scale",
            f"purge of a 10M-delivery day, Azurite speed ({n:,} conns)",
            round(q["day seconds here"] / 3600, 2),
            "h",
            higher_is_better=False,
            note="extrapolated from a measured sample",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 50 deliveries")
    parser.add_argument("--connections", help="comma-separated (10000,100000)")
    parser.add_argument("--deliveries", type=int, help="per path (200)")
    parser.add_argument("--records", type=int, help="the purge's sample of old records (5000)")
    args = parser.parse_args()
    logging.getLogger("shared").setLevel(logging.ERROR)  # the failed path's warnings are meant
    quick = args.quick
    sizes = [int(n) for n in (args.connections or ("1000" if quick else "10000,100000")).split(",")]
    deliveries = args.deliveries or (50 if quick else 200)
    records = args.records or (1000 if quick else 5000)
    results: list[Result] = []
    for n in sizes:
        if n < 3 * deliveries:
            raise SystemExit(f"--connections {n}: at least 3 x --deliveries ({3 * deliveries})")
        results += show(asyncio.run(measure(n, deliveries, records)))
    print()
    report(results)


if __name__ == "__main__":
    main()
