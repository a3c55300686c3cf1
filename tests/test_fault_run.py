"""A fault run: while events flow to several connections, the host and the Service Bus
emulator are killed (SIGKILL) and Azurite is restarted (SIGTERM) at seeded random moments;
every event still arrives in every matching queue (tests/faultrun.py says why Azurite gets
SIGTERM). Azurite runs on disk here, not in memory, so that it has something to keep.

FAULT_RUN_SEED picks another schedule (the seed is in every failure's message).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.faultrun import FAULTS, fault_run

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("FAULT_RUN_SEED", "22"))


async def test_every_event_arrives_while_the_host_the_emulator_and_storage_fail(
    tmp_path: Path,
) -> None:
    result = await fault_run(
        tmp_path, events=40, seed=SEED, faults=4, events_per_second=4, drain_timeout=120
    )
    assert set(result.faults) == set(FAULTS)  # each kind of fault happened
    why = f"seed {result.seed}, faults {result.faults}; host errors:\n{result.errors}"
    assert result.lost == [], why
    assert result.strays == [], why  # every repeat under its delivery's message_id


def test_bench_faults_runs_with_tiny_numbers() -> None:
    command = [sys.executable, "-m", "bench.bench_faults", "--events", "9", "--rate", "3"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\nlost 0\n" in done.stdout
    assert "\nduplicates " in done.stdout and "\ndrain " in done.stdout
