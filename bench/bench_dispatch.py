"""Dispatch throughput (deliveries/s) against the raw SDKs doing the same work, in one run.

    python -m bench.bench_dispatch [--quick] [--connections 1,10] [--events N] [--rounds R]
        [--profile]

Starts Azurite (in memory) and the Service Bus emulator (in a process of its own). For each
fan-out (1 and 10 connections of one account, each connection with its own queue), events
in hand are given to `Dispatcher.dispatch` with as many in flight as the project's host.json
lets one queue trigger run (batchSize + newBatchThreshold: 32 + 64 = 96); a delivery is
one message on a queue plus its record in the `messages` table. The raw baseline does the
same work with the SDKs alone: the same messages sent as batches of 100 (one client and
sender per queue, every queue at once) while the same entities are written in 100-entity
transactions (one chain per partition, every partition at once). Connection setup is left
out of both (links are opened first). Rounds alternate which goes first; the figure is the
median. `--profile` runs one more round of ours under pyinstrument and prints where the
process spent its CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError

from bench.common import (
    EVENT_DATA,
    EVENT_KEY,
    CpuMeter,
    EmulatorProcess,
    Result,
    app_settings,
    arguments,
    azurite,
    azurite_transport,
    machine,
    new_keys,
    report,
    servicebus_emulator,
    unique,
)
from local.azurite import ROOT, Azurite
from local.host.config import QueueOptions, load_host_json
from shared.dispatch.dispatcher import Dispatcher
from shared.events import new_event
from shared.models.events import SystemEvent
from shared.models.records import MessageStatus, RequestMetadata
from shared.services import Services
from shared.storage import clients
from shared.storage.connections import StoredConnection
from tests.factories import a_connection

IN_FLIGHT = QueueOptions.from_host_json(load_host_json(ROOT / "host.json")).max_in_flight
BATCH = 100  # Service Bus batch and table transaction size of the raw baseline


@dataclass
class Fanout:
    """One account whose connections all want the benchmark's events, each its own queue."""

    account: str
    connections: list[StoredConnection]

    @property
    def queues(self) -> list[str]:
        return [c.connection.queue_name for c in self.connections]


async def make_fanout(services: Services, servicebus: str, n: int) -> Fanout:
    account = unique("bench")
    now = datetime.now(UTC)
    stored = [
        await services.connections.add(
            account, a_connection(ServiceBusConnectionString=servicebus, QueueName=unique("q")), now
        )
        for _ in range(n)
    ]
    return Fanout(account, stored)


def events_for(account: str, n: int) -> list[SystemEvent]:
    now = datetime.now(UTC)
    return [new_event(account, EVENT_KEY, now, "employees/1234", EVENT_DATA) for _ in range(n)]


async def dispatch_all(
    dispatcher: Dispatcher, events: Sequence[SystemEvent], fanout: int, in_flight: int = IN_FLIGHT
) -> float:
    """Dispatch every event, `in_flight` at a time; seconds taken. Every delivery must be sent
    and succeed: one put back on the retry queue by a bulkhead has no record, and counts."""
    pending = iter(events)
    failed: list[str] = []
    deferred = 0

    async def worker() -> None:
        nonlocal deferred
        for event in pending:
            records = await dispatcher.dispatch(event)
            deferred += fanout - len(records)
            failed.extend(
                r.message.request_metadata
                for r in records
                if r.message.status != MessageStatus.SUCCEEDED
            )

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    if failed or deferred:
        example = f", e.g. {failed[0]}" if failed else ""
        raise RuntimeError(f"{len(failed)} deliveries failed, {deferred} deferred{example}")
    return elapsed


async def open_links(dispatcher: Dispatcher, fanout: Fanout) -> int:
    """One event, so that each connection's link opens with one delivery; then a burst of
    IN_FLIGHT through the open links. Events sent."""
    n = len(fanout.connections)
    await dispatch_all(dispatcher, events_for(fanout.account, 1), n)
    await dispatch_all(dispatcher, events_for(fanout.account, IN_FLIGHT), n)
    return 1 + IN_FLIGHT


# ---------------------------------------------------------------- the raw baseline


@dataclass
class RawFanout:
    """The SDKs alone: a client and sender per queue, a table client, nothing of ours."""

    servicebus: str
    storage: str
    queues: list[str]
    partitions: list[str] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)
    _senders: list[Any] = field(default_factory=list)
    _table: Any = None

    async def open(self) -> None:
        from azure.data.tables.aio import TableClient
        from azure.servicebus.aio import ServiceBusClient

        self.partitions = [uuid.uuid4().hex for _ in self.queues]
        for queue in self.queues:
            client = ServiceBusClient.from_connection_string(self.servicebus)
            sender = client.get_queue_sender(queue)
            self._clients.append(client)
            self._senders.append(sender)
        self._table = TableClient.from_connection_string(
            self.storage, clients.MESSAGES_TABLE, transport=azurite_transport()
        )
        # Open the links (CBS, attach) and a table connection before the clock starts.
        await asyncio.gather(*(self._send(s, events_for("warmup", 1)) for s in self._senders))
        with contextlib.suppress(ResourceExistsError):
            await self._table.create_table()
        await self._table.upsert_entity({"PartitionKey": "warmup", "RowKey": "warmup"})

    async def run(self, events: Sequence[SystemEvent]) -> float:
        """Send every event to every queue and write a record per delivery; seconds taken."""
        start = time.perf_counter()
        await asyncio.gather(
            *(self._send(sender, events) for sender in self._senders),
            *(self._write(partition, events) for partition in self.partitions),
        )
        return time.perf_counter() - start

    async def _send(self, sender: Any, events: Sequence[SystemEvent]) -> None:
        from azure.servicebus import ServiceBusMessage

        for start in range(0, len(events), BATCH):
            batch = await sender.create_message_batch()
            for event in events[start : start + BATCH]:
                batch.add_message(
                    ServiceBusMessage(
                        _body(event),
                        message_id=str(uuid.uuid4()),
                        subject=event.event_key,
                        content_type="application/json",
                        correlation_id=event.event_id,
                        application_properties={
                            "EventKey": event.event_key,
                            "EventId": event.event_id,
                            "EventTimestamp": "2026-11-26T10:00:00.000Z",
                            "AccountId": event.account_id,
                            "IsRetry": False,
                            "Offloaded": False,
                            "SchemaVersion": 1,
                        },
                    )
                )
            await sender.send_messages(batch)

    async def _write(self, partition: str, events: Sequence[SystemEvent]) -> None:
        for start in range(0, len(events), BATCH):
            now = datetime.now(UTC)
            operations = [
                ("upsert", _entity(partition, event, now))
                for event in events[start : start + BATCH]
            ]
            await self._table.submit_transaction(operations)

    async def close(self) -> None:
        # At once: one after another, closing 100 clients takes a minute and a half.
        await asyncio.gather(*(client.close() for client in self._clients))
        if self._table is not None:
            await self._table.close()


def _body(event: SystemEvent) -> bytes:
    return json.dumps(
        {
            "EventId": event.event_id,
            "EventKey": event.event_key,
            "EventTimestamp": "2026-11-26T10:00:00.000Z",
            "Subject": event.subject,
            "Data": event.data,
        },
        separators=(",", ":"),
    ).encode()


def _entity(partition: str, event: SystemEvent, now: datetime) -> dict[str, Any]:
    """The same properties, of the same sizes, as a record the dispatcher logs."""
    body = _body(event)
    metadata = RequestMetadata(
        queue_name="q",
        message_id=str(uuid.uuid4()),
        attempt=1,
        size_bytes=len(body),
        offloaded=False,
    )
    return {
        "PartitionKey": partition,
        "RowKey": f"{10**13 - int(now.timestamp() * 1000):013d}_{uuid.uuid4().hex}",
        "ConnectionUid": str(uuid.uuid4()),
        "EventKey": event.event_key,
        "EventTimestamp": event.event_timestamp,
        "RequestTimestamp": now,
        "ElapsedMilliseconds": 3,
        "RequestMetadata": metadata.to_text(),
        "Status": 1,
        "IsRetry": False,
        "Account": event.account_id,
        "EventId": event.event_id,
        "Subject": event.subject,
        "MessageBody": body.decode(),
    }


# ---------------------------------------------------------------- one fan-out


async def measure(
    services: Services,
    emulator: EmulatorProcess,
    storage: Azurite,
    n_connections: int,
    n_events: int,
    rounds: int,
    profile: bool = False,
) -> Result:
    fanout = await make_fanout(services, emulator.connection_string, n_connections)
    dispatcher = await services.new_dispatcher()
    raw_queues = [unique("raw") for _ in fanout.queues]
    raw = RawFanout(emulator.connection_string, storage.connection_string, raw_queues)
    deliveries = n_events * n_connections
    ours_rates: list[float] = []
    raw_rates: list[float] = []
    pids = {"azurite": storage.process.pid, "emulator": emulator.process.pid, "bench": os.getpid()}
    meters = {"ours": CpuMeter(pids), "raw": CpuMeter(pids)}  # each sums its side's rounds
    try:
        await raw.open()
        warm_up = await open_links(dispatcher, fanout)
        for r in range(rounds):
            order = ("raw", "ours") if r % 2 == 0 else ("ours", "raw")
            for which in order:
                with meters[which]:
                    if which == "raw":
                        raw_rates.append(deliveries / await raw.run(events_for("raw", n_events)))
                    else:
                        events = events_for(fanout.account, n_events)
                        seconds = await dispatch_all(dispatcher, events, n_connections)
                        ours_rates.append(deliveries / seconds)
        if profile:
            await profiled(dispatcher, events_for(fanout.account, n_events), n_connections)
    finally:
        await dispatcher.close()
        await raw.close()
    expected = warm_up + n_events * (rounds + profile)
    arrived = [emulator.count(q) for q in fanout.queues]
    if any(count != expected for count in arrived):
        raise RuntimeError(f"expected {expected} messages on each queue, found {arrived}")
    ours, baseline = statistics.median(ours_rates), statistics.median(raw_rates)
    plural = "s" if n_connections > 1 else ""
    target = ">= 70% of raw" + (", >= 1,000/s" if n_connections == 10 else "")
    return Result(
        "dispatch",
        f"dispatch, {n_connections} connection{plural} ({deliveries:,} deliveries)",
        ours,
        "deliveries/s",
        raw=baseline,
        target=target,
        note="\n      ".join(
            f"{which}: {meters[which].summary()}\n"
            f"{' ' * 12}{per_delivery(meters[which].total, deliveries * rounds)}"
            for which in ("ours", "raw")
        ),
        extra={"ours_rounds": ours_rates, "raw_rounds": raw_rates},
    )


def per_delivery(spent: dict[str, float], deliveries: int) -> str:
    """CPU per delivery of each process over all timed rounds, finer than the summary's
    tenths of a second of the last: the column that counts when other sessions load the
    machine."""
    return "CPU ms a delivery, all rounds: " + ", ".join(
        f"{name} {seconds * 1000 / deliveries:.3f}"
        for name, seconds in spent.items()
        if not name.startswith("~")
    )


async def profiled(dispatcher: Dispatcher, events: Sequence[SystemEvent], fanout: int) -> None:
    """One more round of ours under pyinstrument; its tree printed and saved as HTML."""
    import tempfile

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")  # on-CPU frames, idle as select
    profiler.start()
    seconds = await dispatch_all(dispatcher, events, fanout)
    profiler.stop()
    print(
        f"\nprofiled round: {len(events) * fanout / seconds:,.0f} deliveries/s under the profiler"
    )
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"dispatch-{fanout}-", suffix=".html", delete=False
    ) as out:
        out.write(profiler.output_html())
    print(f"(HTML profile: {out.name})")


async def run(
    quick: bool,
    fanouts: Sequence[int] = (1, 10),
    n_events: int | None = None,
    rounds: int | None = None,
    profile: bool = False,
) -> list[Result]:
    # A quick round lasts about a second, so one stall or a half-filled pipeline at its start
    # swings it by a third: three rounds, and their median, even in quick mode.
    rounds = rounds or 3
    results = []
    with azurite() as storage, servicebus_emulator() as emulator:
        services = await Services.open(app_settings(storage.connection_string, new_keys()))
        try:
            for n in fanouts:
                # About the same number of deliveries whatever the fan-out.
                events = n_events or max(100, (2_000 if quick else 10_000) // n)
                print(f"  {n} connection(s): {events} events x {rounds} round(s)...", flush=True)
                result = await measure(services, emulator, storage, n, events, rounds, profile)
                results.append(result)
        finally:
            await services.close()
    return results


def main() -> None:
    args = arguments(
        __doc__,
        connections=(str, "fan-outs to measure, comma-separated (default 1,10)"),
        events=(int, "events per round (default: about 2,000 deliveries quick, 10,000 full)"),
        rounds=(int, "rounds, alternating which goes first (default 3)"),
        profile=(bool, "one more round of ours under pyinstrument, printed"),
    )
    fanouts = [int(n) for n in (args.connections or "1,10").split(",")]
    print(f"dispatch: {machine()}; {IN_FLIGHT} events in flight", flush=True)
    results = asyncio.run(run(args.quick, fanouts, args.events, args.rounds, args.profile))
    report(results)


if __name__ == "__main__":
    main()
