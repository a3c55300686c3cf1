"""Bulk replay throughput (records/s) against the raw SDKs doing the same work, in one run.

    python -m bench.bench_replay [--quick] [--records N] [--rounds R]

Starts Azurite (in memory) and the Service Bus emulator (in a process of its own). Ours: N
Failed records are written to a connection's log (not timed), then a replay of them is asked
for and run to its end in this process, unpaced (`shared.service.replays.start` and `run`, the
function the `replays` queue trigger calls): each record read back from the log by chunks,
sent again by `Dispatcher.resend`, its new record written, the replay's row advanced per
chunk. The raw baseline (bench_dispatch's) sends N messages with the SDK in batches of 100
while writing N entities in 100-entity transactions. Rounds alternate which goes first; the
figure is the median.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.bench_dispatch import RawFanout, events_for
from bench.common import (
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
from shared.models.records import MessageStatus
from shared.models.replays import ReplayRequest
from shared.service import replays as replay
from shared.services import Services
from tests.factories import a_connection, a_record, log_records


async def ours(services: Services, servicebus: str, n: int) -> float:
    """Seconds from asking for a replay of n Failed records to its end."""
    connection = a_connection(ServiceBusConnectionString=servicebus, QueueName=unique("replay"))
    stored = await services.connections.add("bench", connection, services.clock())
    now = datetime.now(UTC)
    records = log_records(
        stored.uid, n, now - timedelta(seconds=1), timedelta(minutes=30), failed_every=1
    )
    await asyncio.gather(
        *(services.messages.add(stored.log_partition, records[i::4]) for i in range(4))
    )
    # links open, not timed: a record of its own, before the window
    warm_up = a_record(stored.uid, now - timedelta(hours=2), MessageStatus.FAILED, account="bench")
    await services.messages.add(stored.log_partition, [warm_up])
    await (await services.dispatcher()).resend(stored, warm_up)
    request = ReplayRequest(since=now - timedelta(hours=1))
    start = time.perf_counter()
    started = await replay.start(services, stored, request, services.clock())
    row = await services.replays.get(stored.log_partition, started.replay_id)
    payload = f'{{"Partition": "{row.partition}", "ReplayId": "{row.replay_id}"}}'.encode()
    while not row.done:
        await replay.run(services, payload)
        row = await services.replays.get(stored.log_partition, started.replay_id)
    elapsed = time.perf_counter() - start
    assert row.sent + row.failed == row.matched == n, row
    return elapsed


async def run(quick: bool, n: int | None, rounds: int | None) -> list[Result]:
    n = n or (2_000 if quick else 10_000)
    rounds = rounds or (1 if quick else 3)
    ours_s: list[float] = []
    raw_s: list[float] = []
    with azurite() as storage, servicebus_emulator() as emulator:
        settings = app_settings(storage.connection_string, new_keys())
        services = await Services.open(dataclasses.replace(settings, replay_records_per_second=0))
        try:
            for r in range(rounds):
                raw = RawFanout(
                    emulator.connection_string, storage.connection_string, [unique("raw")]
                )
                await raw.open()
                try:
                    for turn in ("raw", "ours")[:: 1 if r % 2 else -1]:
                        if turn == "raw":
                            raw_s.append(await raw.run(events_for("raw", n)))
                        else:
                            ours_s.append(await ours(services, emulator.connection_string, n))
                finally:
                    await raw.close()
        finally:
            await services.close()
    return [
        Result(
            "replay",
            f"replay of {n:,} Failed records, unpaced",
            n / statistics.median(ours_s),
            "records/s",
            raw=n / statistics.median(raw_s),
            note="raw: the same number of messages sent in batches of 100 and records written "
            "in 100-entity transactions",
        )
    ]


def main() -> None:
    args = arguments(
        __doc__,
        records=(int, "records per round (default 2,000 quick, 10,000 full)"),
        rounds=(int, "rounds, alternating which goes first (default 1 quick, 3 full)"),
    )
    print(f"replay: {machine()}", flush=True)
    report(asyncio.run(run(args.quick, args.records, args.rounds)))


if __name__ == "__main__":
    main()
