"""The cost of the search index rows on the log's write path: records/s and CPU per record,
with and without them, on Azurite.

    python -m bench.bench_logwrite [--records N] [--rounds R]

Starts its own Azurite (in memory). Each round writes the same records (each with a Subject,
so each has both index rows: the most a record writes) into fresh log partitions, once with
the index rows (`MessageLog.write` as it is) and once without (`logsearch.operations`
replaced by nothing: the log write as it was before search), in two shapes:
- one record a transaction, 16 at once: what the dispatcher does (an attempt is recorded
  when it ends);
- 100-record `add`s, 4 at once: a bulk write (benchmarks' fill, `log reindex`).
Rounds alternate which goes first. It prints each round's figures, then the medians and the
ratio with/without (target <= 1.3x).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from unittest import mock

from bench.bench_purge import cpu_seconds
from bench.common import EVENT_BODY, EVENT_KEY
from local.azurite import Azurite, start_azurite
from shared.crypto import KeyRing
from shared.services import Services
from shared.settings import Settings, StorageTarget
from shared.storage import logsearch
from shared.storage.logrecords import LoggedMessage
from tests.factories import log_records

Write = Callable[[Services, list[LoggedMessage]], Awaitable[None]]


async def one_a_transaction(services: Services, records: list[LoggedMessage]) -> None:
    partition = uuid.uuid4().hex
    gate = asyncio.Semaphore(16)

    async def one(record: LoggedMessage) -> None:
        async with gate:
            await services.messages.add(partition, [record])

    await asyncio.gather(*map(one, records))


async def bulk(services: Services, records: list[LoggedMessage]) -> None:
    partition = uuid.uuid4().hex
    share = -(-len(records) // 4)
    await asyncio.gather(
        *(
            services.messages.add(partition, records[i : i + share])
            for i in range(0, len(records), share)
        )
    )


async def measure(
    services: Services, azurite: Azurite, records: list[LoggedMessage], write: Write, index: bool
) -> tuple[float, float]:
    """(records/s, ms of CPU per 1,000 records: this process and Azurite)."""
    gc.collect()
    await asyncio.sleep(1)  # let Azurite settle
    with mock.patch.object(logsearch, "operations", logsearch.operations if index else _none):
        cpu = time.process_time() + cpu_seconds(azurite.process.pid)
        start = time.perf_counter()
        await write(services, records)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + cpu_seconds(azurite.process.pid) - cpu
    return len(records) / elapsed, cpu * 1e6 / len(records)


def _none(partition: str, record: object) -> list[object]:
    return []


async def run(n: int, rounds: int) -> None:
    azurite = start_azurite()
    settings = Settings(
        storage=StorageTarget(connection_string=azurite.connection_string),
        encryption_keys=KeyRing.new_key_spec("bench"),
    )
    services = await Services.open(settings)
    try:
        now = datetime.now(UTC)
        made = log_records(uuid.uuid4(), n, now, timedelta(days=1), EVENT_BODY, EVENT_KEY)
        records = [dataclasses.replace(r, subject=f"orders/{i}") for i, r in enumerate(made)]
        print(f"{n} records a shape and variant, {rounds} round(s)")
        for write in (one_a_transaction, bulk):
            got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for r in range(1, rounds + 1):
                order = [False, True] if r % 2 else [True, False]
                for index in order:
                    got[index].append(await measure(services, azurite, records, write, index))
                (wr, wc), (nr, nc) = got[True][-1], got[False][-1]
                print(f"  {write.__name__} round {r}: with {wr:5.0f}/s ({wc:4.0f} ms CPU/1000), "
                      f"without {nr:5.0f}/s ({nc:4.0f} ms CPU/1000)")  # fmt: skip
            rate = {k: statistics.median(x[0] for x in v) for k, v in got.items()}
            cpu = {k: statistics.median(x[1] for x in v) for k, v in got.items()}
            print(f"{write.__name__}: median with {rate[True]:.0f}/s, without {rate[False]:.0f}/s: "
                  f"time per record {rate[False] / rate[True]:.2f}x; CPU per record "
                  f"{cpu[True]:.0f} vs {cpu[False]:.0f} ms/1000: "
                  f"{cpu[True] / cpu[False]:.2f}x (target <= 1.3x)")  # fmt: skip
    finally:
        await services.close()
        azurite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_logwrite", description=__doc__)
    parser.add_argument("--records", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=4, help="even: each goes first as often")
    args = parser.parse_args()
    asyncio.run(run(args.records, args.rounds))


if __name__ == "__main__":
    main()
