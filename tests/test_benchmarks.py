"""Every benchmark runs once with tiny numbers (`python -m bench --smoke --only NAME`), so that
a change that breaks one fails here rather than at the next `make bench`. Its own checks run
(every message arrives, every delivery is sent and succeeds, counts add up); its figures are
not asserted: with tiny numbers on a shared machine they mean nothing.

Each runs in a process of its own, starting what it needs (Azurite, the emulator, the local
host) as `make bench` does. About 2 to 3 minutes in all here, most of it starting those.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.__main__ import BENCHMARKS, SMOKE, available
from tests.browser import find_chromium
from tests.factories import ROOT


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_the_benchmark_runs_and_its_checks_hold(name: str) -> None:
    assert name in SMOKE, f"bench/__main__.py: give {name!r} its tiny arguments in SMOKE"
    if SMOKE[name] is None:
        pytest.skip(f"{name} has a smoke test of its own")
    if not available(name):
        pytest.skip(f"{BENCHMARKS[name]} is not there")
    if name == "portal" and find_chromium() is None:
        pytest.skip("no Chromium for the portal benchmark (README, the browser tests)")
    command = [sys.executable, "-m", "bench", "--smoke", "--only", name]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{name}: FAILED" not in done.stdout
