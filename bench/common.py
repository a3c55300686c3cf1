"""What the benchmarks share: the services they start, timing, and how a figure is printed.

Every benchmark starts what it needs on free loopback ports and stops it at the end: Azurite
(a Node.js process), the Service Bus emulator in a process of its own (so it never shares
our interpreter lock, as a real namespace would not), and the local Functions host when the
figure is about the app as deployed. A figure is printed beside its raw baseline measured in
the same run, with their ratio: the machines are shared and noisy, so only ratios compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.azurite import Azurite, start_azurite
from local.process import EmulatorProcess, HostProcess, start_emulator_process, start_host_process
from shared.crypto import KeyRing
from shared.settings import Limits, Settings, StorageTarget
from shared.storage.clients import KEEPALIVE_SECONDS

ROOT = Path(__file__).resolve().parent.parent
# Where `python -m bench` collects each benchmark's figures (one JSON object a line).
RESULTS_VARIABLE = "BENCH_RESULTS_FILE"
EVENT_KEY = "Employee.Created"
# An event's data of the size and shape the platform sends (the body is about 300 bytes).
EVENT_DATA = {"EmployeeId": 1234, "Name": "Ada", "Lines": [{"Sku": "A-1"}], "Note": "x" * 200}
# The body a subscriber receives, and the log keeps, for such an event.
EVENT_BODY = json.dumps(
    {
        "EventId": str(uuid.uuid4()),
        "EventKey": EVENT_KEY,
        "EventTimestamp": "2026-11-20T10:00:00.000Z",
        "Subject": "employees/1234",
        "Data": EVENT_DATA,
    },
    separators=(",", ":"),
)


# ---------------------------------------------------------------- the machine


def machine() -> str:
    """What `nproc`, `uname -m`, `python --version` and `date -u` would say, and the load."""
    load = ", load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    now = datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return (
        f"nproc {os.cpu_count()}, {platform.machine()}, Python {platform.python_version()}, "
        f"{now}{load}"
    )


# ---------------------------------------------------------------- figures


@dataclass
class Result:
    """One figure and its raw baseline from the same run. The ratio is ours/raw: a share for
    rates (100% = as fast as raw), a factor for times and sizes (1.00x = as small as raw)."""

    benchmark: str
    name: str
    ours: float
    unit: str
    raw: float | None = None
    target: str = ""
    higher_is_better: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.raw is None or not self.raw:
            return None
        return self.ours / self.raw

    def ratio_text(self) -> str:
        if self.ratio is None:
            return "-"
        return f"{self.ratio:.0%}" if self.higher_is_better else f"{self.ratio:.2f}x"

    def row(self) -> str:
        raw = "-" if self.raw is None else f"{_number(self.raw)} {self.unit}"
        line = (
            f"  {self.name:<46} {_number(self.ours):>8} {self.unit:<12} "
            f"{raw:<21} {self.ratio_text():>6}"
        )
        return line + (f"  ({self.target})" if self.target else "")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def header() -> str:
    return f"  {'figure':<46} {'ours':>8} {'':<12} {'raw baseline':<21} {'ratio':>6}"


def report(results: Sequence[Result]) -> None:
    """Print the figures; when run by `python -m bench`, hand them over too."""
    print(header())
    for result in results:
        print(result.row())
        if result.note:
            print(f"      {result.note}")
    path = os.environ.get(RESULTS_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            for result in results:
                out.write(json.dumps({**asdict(result), "ratio": result.ratio}) + "\n")
    sys.stdout.flush()


def arguments(description: str, **extra: Any) -> argparse.Namespace:
    """`--quick` for every benchmark, plus what one adds (name=(type, help))."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller figures, a few seconds each")
    for name, (kind, text) in extra.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=kind, help=text)
    return parser.parse_args()


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank: with 100 samples p99 is the 99th."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


class Stopwatch:
    """`with Stopwatch() as w: ...` then `w.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


class CpuMeter:
    """CPU time each process used over a stretch of wall time, and what the rest of the
    machine used meanwhile: it tells which process bounds a figure (Linux /proc only).

        with CpuMeter({"azurite": pid, "bench": os.getpid()}) as cpu: ...
        cpu.summary()  # "wall 7.1 s; CPU s: azurite 5.2 (73% of wall), bench 3.1 ..."
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.used: dict[str, float] = {}
        self.wall = 0.0
        # The same over every stretch measured: a meter entered once a round sums its rounds.
        self.total: dict[str, float] = {}
        self.total_wall = 0.0

    @staticmethod
    def process_seconds(pid: int) -> float:
        """User + system CPU seconds of a process (all its threads), 0 if unreadable."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def machine_seconds() -> float:
        """Busy CPU seconds of the whole machine, all cores."""
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return 0.0
        idle = values[3] + values[4]  # idle, iowait
        return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> dict[str, float]:
        sample = {name: self.process_seconds(pid) for name, pid in self.pids.items()}
        return {**sample, "~machine": self.machine_seconds()}

    def __enter__(self) -> CpuMeter:
        self._start, self._started = self._sample(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._started
        end = self._sample()
        self.used = {name: end[name] - self._start[name] for name in end}
        self.total_wall += self.wall
        for name, seconds in self.used.items():
            self.total[name] = self.total.get(name, 0.0) + seconds

    def summary(self) -> str:
        machine_busy = self.used.get("~machine", 0.0)
        ours = {k: v for k, v in self.used.items() if k != "~machine"}
        parts = [
            f"{name} {seconds:.1f} ({seconds / self.wall:.0%})" for name, seconds in ours.items()
        ]
        others = max(0.0, machine_busy - sum(ours.values()))
        return (
            f"wall {self.wall:.1f} s; CPU s (share of one core): {', '.join(parts)}, "
            f"other processes {others:.1f} ({others / self.wall:.0%}) of {os.cpu_count()} cores"
        )


# ---------------------------------------------------------------- what runs beside us


@contextmanager
def azurite() -> Iterator[Azurite]:
    """Azurite in memory on free loopback ports (`.connection_string`, `.process.pid`)."""
    started = start_azurite()
    try:
        yield started
    finally:
        started.stop()


@contextmanager
def servicebus_emulator() -> Iterator[EmulatorProcess]:
    """The emulator in a process of its own on a free loopback port, stopped at the end."""
    emulator = start_emulator_process()
    try:
        yield emulator
    finally:
        emulator.stop()


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not end in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_host(
    env: Mapping[str, str], *args: str, app: str = "function_app:app", timeout: float = 60.0
) -> Iterator[HostProcess]:
    """Serve the app with `python -m local.host` (host.json of the project) on a free port,
    until the end of the block. The host starts its triggers before HTTP, so once the port
    answers the queue listeners run too."""
    host = start_host_process(app, env=env, args=args, timeout=timeout)
    try:
        yield host
    finally:
        host.stop()
        host.log_path.unlink(missing_ok=True)


def azurite_transport() -> Any:
    """For a raw SDK client of Azurite (call it in a coroutine): an aiohttp transport that
    closes idle connections before Azurite (Node.js) drops them after 5 s, as the app's own
    clients do; else a POST on a dropped connection fails ("Server disconnected")."""
    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport

    connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS)
    return AioHttpTransport(session=aiohttp.ClientSession(connector=connector), session_owner=True)


# Benchmarks measure the app, not its rate limits: one key sends everything.
RATES_OFF = {"request_burst": 10**9, "send_burst": 10**9, "failed_keys_per_minute": 10**9}
UNLIMITED_RATES = Limits(**RATES_OFF)


def app_settings(storage_connection_string: str, keys: str) -> Settings:
    """The app's settings as the functions read them, for a benchmark that wires Services."""
    return Settings(
        storage=StorageTarget(connection_string=storage_connection_string),
        encryption_keys=keys,
        allow_local_endpoints=True,  # the emulator and Azurite listen on loopback
        limits=UNLIMITED_RATES,
    )


def new_keys() -> str:
    return KeyRing.new_key_spec("bench")


def app_environment(storage_connection_string: str, keys: str) -> dict[str, str]:
    """The same settings as environment variables, for a host process."""
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "ENCRYPTION_KEYS": keys,
        "ALLOW_LOCAL_ENDPOINTS": "true",
        **{f"LIMIT_{name.upper()}": str(value) for name, value in RATES_OFF.items()},
    }


# ---------------------------------------------------------------- data


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
