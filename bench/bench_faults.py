"""Nothing lost while the parts fail: a fault run with its figures (tests/faultrun.py).

    python -m bench.bench_faults [--events 500] [--seed N] [--faults F] [--rate R] [--quick]

Starts Azurite on disk, the Service Bus emulator with its journal and the app in the local
host, each in a process of its own, and publishes `--events` events at `--rate` a second
to two accounts (two connections and one: 1.5 deliveries an event). Meanwhile, at seeded
random moments, it kills the host or the emulator (SIGKILL) or restarts Azurite (SIGTERM:
see tests/faultrun.py for why), and starts each again after a pause of 0.2 to 1.5 s. Then it
reads every queue until each delivery has arrived and prints:

    lost N           deliveries that never arrived (the promise: 0)
    duplicates N     extra copies, each under its delivery's message_id
    drain S s        from the last publish and fault until the last delivery arrived

It exits with 1 if anything was lost or arrived under another message_id. There is no raw
baseline: the figure is a count, and the drain time is bounded by the retry schedule of the
run (DELIVERY_RETRY_DELAYS 1,2,3,5,8 s) and the hosts' lease (3 s), not by speed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from bench.common import Result, arguments, machine, report
from tests.faultrun import fault_run


def main() -> int:
    args = arguments(
        __doc__,
        events=(int, "events to publish (default 500; --quick: 60)"),
        seed=(int, "the seed of the fault schedule (default 22)"),
        faults=(int, "faults during the run (default: one per 50 events, at least 3)"),
        rate=(float, "events published a second (default 20)"),
    )
    events = args.events or (60 if args.quick else 500)
    seed = 22 if args.seed is None else args.seed
    faults = args.faults or max(3, events // 50)
    print(f"bench_faults: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="faults-") as workdir:
        run = fault_run(Path(workdir), events, seed, faults, args.rate or 20.0)
        result = asyncio.run(run)
    deliveries = result.owed
    print(f"events {result.events}, deliveries {deliveries}, faults: {', '.join(result.faults)}")
    print(f"lost {len(result.lost)}")
    print(f"duplicates {result.duplicates} ({result.duplicates / max(deliveries, 1):.1%})")
    print(f"drain {result.drain_seconds:.1f} s")
    if result.strays:
        print(f"under another message_id: {len(result.strays)}, e.g. {result.strays[:3]}")
    if result.lost:
        print(f"lost (message_ids): {result.lost[:10]}\nhost errors:\n{result.errors}")
    report(
        [
            Result("faults", f"lost, {deliveries} deliveries", len(result.lost), "deliveries",
                   target="0", higher_is_better=False),
            Result("faults", "duplicates", result.duplicates, "copies", higher_is_better=False),
            Result("faults", "drain after the last fault", result.drain_seconds, "s",
                   higher_is_better=False),
        ]
    )  # fmt: skip
    return 1 if result.lost or result.strays else 0


if __name__ == "__main__":
    sys.exit(main())
