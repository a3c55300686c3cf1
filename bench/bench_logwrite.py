"""The cost of the search index rows on the log's write path: records/s and CPU per record,
with and without them, on Azurite.

    python -m bench.bench_logwrite [--quick] [--records N] [--rounds R] [--copy]

Starts its own Azurite (in memory). Each round writes the same records (each with a Subject,
so each has both index rows: the most a record writes) into fresh log partitions, once with
the index rows (`MessageLog.write` as it is) and once without (`logsearch.packed` writing no
row: the log write as it was before search, except that the writer still leaves room in each
transaction for the rows), in two shapes:
- one record a transaction, 16 at once: what the dispatcher does (an attempt is recorded
  when it ends);
- 100-record `add`s, 4 at once: a bulk write (benchmarks' fill, `log reindex`).
With `--copy`, "without" is instead the delivery row without its copy of the latest record
(`deliveries.copied` replaced by nothing: the row as it was before issue 26's one-read search),
index rows written in both. Rounds alternate which goes first. It prints each round's figures,
then the medians: records/s with (ours) against without (raw), target >= 77% (1.3x the time
per record), and CPU per record. Defaults: 2,000 records, 4 rounds (500 and 2 with --quick).
"""

from __future__ import annotations

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
from bench.common import EVENT_BODY, EVENT_KEY, Result, arguments, machine, report
from local.azurite import Azurite, start_azurite
from shared.crypto import KeyRing
from shared.services import Services
from shared.settings import Settings, StorageTarget
from shared.storage import deliveries, logsearch
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
    services: Services,
    azurite: Azurite,
    records: list[LoggedMessage],
    write: Write,
    index: bool,
    copy: bool = False,
) -> tuple[float, float]:
    """(records/s, ms of CPU per 1,000 records: this process and Azurite). `index` False: as
    it was before what is measured (`copy`: the delivery row's copy; else the index rows)."""
    gc.collect()
    await asyncio.sleep(1)  # let Azurite settle
    module, name, nothing = (
        (deliveries, "copied", _no_copy) if copy else (logsearch, "packed", _none)
    )
    with mock.patch.object(module, name, getattr(module, name) if index else nothing):
        cpu = time.process_time() + cpu_seconds(azurite.process.pid)
        start = time.perf_counter()
        await write(services, records)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + cpu_seconds(azurite.process.pid) - cpu
    return len(records) / elapsed, cpu * 1e6 / len(records)


def _none(partition: str, records: list[dict[str, str]]) -> tuple[list[object], dict[str, str]]:
    return [], {r["RowKey"]: "" for r in records}


def _no_copy(record: object) -> dict[str, object]:
    return {}


async def run(n: int, rounds: int, copy: bool = False) -> list[Result]:
    azurite = start_azurite()
    settings = Settings(
        storage=StorageTarget(connection_string=azurite.connection_string),
        encryption_keys=KeyRing.new_key_spec("bench"),
    )
    services = await Services.open(settings)
    results = []
    try:
        now = datetime.now(UTC)
        made = log_records(uuid.uuid4(), n, now, timedelta(days=1), EVENT_BODY, EVENT_KEY)
        records = [dataclasses.replace(r, subject=f"orders/{i}") for i, r in enumerate(made)]
        what = "the delivery row's copy" if copy else "index rows"
        print(f"{n} records a shape and variant, {rounds} round(s), with and without {what}")
        for write in (one_a_transaction, bulk):
            got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for r in range(1, rounds + 1):
                order = [False, True] if r % 2 else [True, False]
                for index in order:
                    got[index].append(await measure(services, azurite, records, write, index, copy))
                (wr, wc), (nr, nc) = got[True][-1], got[False][-1]
                print(f"  {write.__name__} round {r}: with {wr:5.0f}/s ({wc:4.0f} ms CPU/1000), "
                      f"without {nr:5.0f}/s ({nc:4.0f} ms CPU/1000)")  # fmt: skip
            rate = {k: statistics.median(x[0] for x in v) for k, v in got.items()}
            cpu = {k: statistics.median(x[1] for x in v) for k, v in got.items()}
            name = write.__name__.replace("_", " ")
            cpu_note = f"CPU per 1,000 records: {cpu[True]:.0f} ms with, {cpu[False]:.0f} without"
            results.append(
                Result("logwrite", f"log write with {what}, {name}", rate[True],
                       "records/s", raw=rate[False], target=">= 77%: 1.3x the time",
                       note=cpu_note)
            )  # fmt: skip
    finally:
        await services.close()
        azurite.stop()
    return results


def main() -> None:
    args = arguments(
        __doc__,
        records=(int, "records a shape and variant (default 2,000; 500 quick)"),
        rounds=(int, "rounds, even: each goes first as often (default 4; 2 quick)"),
        copy=(bool, "without: the delivery row without its copy of the latest record"),
    )
    print(f"logwrite: {machine()}", flush=True)
    records = args.records or (500 if args.quick else 2_000)
    rounds = args.rounds or (2 if args.quick else 4)
    report(asyncio.run(run(records, rounds, args.copy)))


if __name__ == "__main__":
    main()
