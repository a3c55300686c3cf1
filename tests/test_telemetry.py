"""What Application Insights receives about deliveries: the per-connection summary line each
minute, one warning line per failure, and their fields as custom dimensions.

The summary is driven by an injected clock. The export test runs the Azure Monitor
OpenTelemetry exporter the Python worker uses (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY)
against a local HTTP server that stands in for the Application Insights ingestion endpoint:
the one fake here, as no Application Insights can run on this machine.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from shared.clock import system_clock
from shared.dispatch import summary
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.dispatch.summary import DeliverySummary, percentile
from shared.events import new_event
from shared.services import Services
from tests.factories import NOW, MemoryConnections, MemoryRecords, a_connection, stored

ROOT = Path(__file__).resolve().parents[1]
INFORMATION, WARNING = 1, 2  # Application Insights severity levels
REFUSED = "Endpoint=sb://x.example/;SharedAccessKeyName=s;SharedAccessKey=S3CRET;Z=1"


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "Deliveries")]


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50, 95)
    assert percentile([7], 0.5) == percentile([7], 0.95) == 7
    assert percentile([1, 2], 0.5) == 1 and percentile([1, 2], 0.95) == 2


def test_one_line_per_connection_once_the_minute_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, a, b = Clock(), uuid.uuid4(), uuid.uuid4()
    counted = DeliverySummary(clock, interval_seconds=60)
    caplog.set_level(logging.INFO, logger="shared.dispatch")
    for elapsed in range(1, 21):  # 20 attempts to a: 17 delivered, 2 transient, 1 configuration
        failure = {5: "Transient", 6: "Transient", 20: "Configuration"}.get(elapsed)
        counted.add(a, elapsed, failure)
        clock.now += 1
    counted.add(b, 300, None)
    clock.now += 39.5
    counted.add(b, 100, None)
    assert summaries(caplog) == []  # 59.5 s: the minute is not over
    clock.now += 0.5
    counted.add(b, 40, None)  # the first attempt of the next window
    lines = {vars(line)["ConnectionUid"]: line for line in summaries(caplog)}
    assert set(lines) == {str(a), str(b)}
    assert all(line.levelno == logging.INFO for line in lines.values())
    first = lines[str(a)].__dict__
    assert {k: first[k] for k in ("Deliveries", "Succeeded", "Failed")} == {
        "Deliveries": 20,
        "Succeeded": 17,
        "Failed": 3,
    }
    assert (first["FailedTransient"], first["FailedConfiguration"]) == (2, 1)
    assert "FailedTooLarge" not in first
    assert (first["ElapsedMillisecondsP50"], first["ElapsedMillisecondsP95"]) == (10, 19)
    assert (first["ElapsedMillisecondsMax"], first["IntervalSeconds"]) == (20, 60)
    second = lines[str(b)].__dict__
    assert (second["Deliveries"], second["Failed"], second["ElapsedMillisecondsP95"]) == (2, 0, 300)
    assert "17 succeeded, 3 failed; p50 10 ms, p95 19 ms" in lines[str(a)].getMessage()

    caplog.clear()
    clock.now += 60
    counted.flush()  # the window that the 40 ms attempt opened
    [line] = summaries(caplog)
    assert (
        vars(line)["ConnectionUid"],
        vars(line)["Deliveries"],
        vars(line)["ElapsedMillisecondsP50"],
    ) == (str(b), 1, 40)
    caplog.clear()
    counted.flush()
    assert summaries(caplog) == []  # nothing counted, nothing logged


async def test_a_quiet_window_is_logged_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    counted = DeliverySummary(interval_seconds=0.01)  # the real clock and the loop's timer
    caplog.set_level(logging.INFO, logger="shared.dispatch")
    connection = uuid.uuid4()

    def ours() -> list[logging.LogRecord]:
        # Only this connection's: the session's app host, in this process and loop, logs
        # the summaries of other tests' deliveries meanwhile.
        return [r for r in summaries(caplog) if vars(r)["ConnectionUid"] == str(connection)]

    counted.add(connection, 12, None)
    assert ours() == []
    await asyncio.sleep(0.05)  # no further delivery: the timer closes the window
    [line] = ours()
    assert vars(line)["Deliveries"] == 1


# ------------------------------------------------------------- from the dispatcher


@pytest.fixture
async def retries(services: Services) -> AsyncIterator[RetryScheduler]:
    queue = await services.storage.queue(f"retries-{uuid.uuid4().hex[:12]}")
    yield RetryScheduler(queue, (30,), services.events)
    await queue.delete_queue()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The dispatcher's summary, on a clock of this test."""
    clock = Clock()
    monkeypatch.setattr(summary, "deliveries", DeliverySummary(clock, interval_seconds=60))
    return clock


async def deliver_one_ok_one_refused(
    emulator: Emulator, queue: str, retries: RetryScheduler
) -> tuple[str, str]:
    """One event to two connections of one account: one delivered, one whose connection string
    our parser refuses (Configuration). Their Uids, delivered first."""
    ok = a_connection(ServiceBusConnectionString=emulator.connection_string, QueueName=queue)
    refused = a_connection().model_copy(update={"service_bus_connection_string": REFUSED})
    dispatcher = Dispatcher(
        connections=MemoryConnections(stored(ok), stored(refused)),
        records=MemoryRecords(),
        retries=retries,
        clock=system_clock,
        connection_cache_seconds=60,
        senders=SenderPool(),
        claims=ClaimCheckStore(),
    )
    try:
        await dispatcher.dispatch(new_event("acme", "Order.Shipped", NOW, "orders/1", {"Id": 1}))
    finally:
        await dispatcher.close()
    return str(ok.uid), str(refused.uid)


async def test_the_dispatcher_counts_every_attempt_in_the_summary(
    servicebus_emulator: Emulator,
    unique_queue: str,
    retries: RetryScheduler,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shared.dispatch")
    ok, refused = await deliver_one_ok_one_refused(servicebus_emulator, unique_queue, retries)
    assert summaries(caplog) == []
    clock.now += 60
    summary.deliveries.flush()
    lines = {vars(line)["ConnectionUid"]: line.__dict__ for line in summaries(caplog)}
    assert (lines[ok]["Succeeded"], lines[ok]["Failed"]) == (1, 0)
    assert (lines[refused]["Succeeded"], lines[refused]["FailedConfiguration"]) == (0, 1)
    assert not any(
        r.levelno == logging.INFO and r.getMessage().startswith("delivered") for r in caplog.records
    )


# ------------------------------------------------------------- into Application Insights


class Ingestion(ThreadingHTTPServer):
    """Answers POST /v2.1/track as Application Insights does, and keeps the items."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Track)
        self.items: list[dict[str, Any]] = []


class _Track(BaseHTTPRequestHandler):
    server: Ingestion

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        items = json.loads(body)
        self.server.items += items
        answer = json.dumps(
            {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingestion]:
    """The `shared` logger exported as the worker sets it up with
    PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME=shared, to a local ingestion endpoint."""
    from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    for own_telemetry in ("STATSBEAT_DISABLED_ALL", "SDKSTATS_DISABLED"):  # not from here
        monkeypatch.setenv(f"APPLICATIONINSIGHTS_{own_telemetry}", "true")
    server = Ingestion()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    exporter = AzureMonitorLogExporter(
        connection_string=f"InstrumentationKey={uuid.UUID(int=0)};IngestionEndpoint={endpoint}",
        disable_offline_storage=True,
    )
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    shared = logging.getLogger("shared")
    level = shared.level
    shared.setLevel(logging.INFO)  # the worker's level: information and above
    shared.addHandler(handler)
    try:
        yield server
    finally:
        shared.removeHandler(handler)
        shared.setLevel(level)
        provider.shutdown()
        server.shutdown()
        server.server_close()


async def test_delivery_fields_reach_custom_dimensions(
    servicebus_emulator: Emulator,
    unique_queue: str,
    retries: RetryScheduler,
    clock: Clock,
    exported: Ingestion,
) -> None:
    ok, refused = await deliver_one_ok_one_refused(servicebus_emulator, unique_queue, retries)
    clock.now += 60
    summary.deliveries.flush()
    ours = [
        item["data"]["baseData"]
        for item in exported.items
        if item["data"]["baseType"] == "MessageData"
        # This test's connections: the process's summary also counts what other tests'
        # connections still retry in the background (the local host shares the process).
        and item["data"]["baseData"].get("properties", {}).get("ConnectionUid") in (ok, refused)
    ]
    [failure] = [d for d in ours if d["severityLevel"] == WARNING]
    dimensions = failure["properties"]
    assert dimensions["ConnectionUid"] == refused
    assert (dimensions["ErrorCategory"], dimensions["ErrorType"]) == (
        "Configuration",
        "ConnectionStringError",
    )
    assert dimensions["EventId"] and int(dimensions["ElapsedMilliseconds"]) >= 0
    assert "Category" not in dimensions  # the host's name stays the host's
    assert "S3CRET" not in json.dumps(failure)
    summaries_ = {
        d["properties"]["ConnectionUid"]: d for d in ours if "Deliveries" in d["properties"]
    }
    assert set(summaries_) == {ok, refused}
    assert summaries_[ok]["severityLevel"] == INFORMATION
    delivered = summaries_[ok]["properties"]
    assert (delivered["Succeeded"], delivered["Failed"]) == ("1", "0")
    assert int(delivered["ElapsedMillisecondsP95"]) >= 0
    assert summaries_[refused]["properties"]["FailedConfiguration"] == "1"
    assert len(ours) == 3  # the delivered event has no line of its own (debug is not exported)


# ------------------------------------------------------------- how the worker is told


def test_the_worker_exports_the_app_loggers_and_the_host_does_not_relay_them() -> None:
    # The app settings are checked in test_infra; these are the parts in the package.
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"  # else the host relays the lines too
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"azure-monitor-opentelemetry==[\d.]+", r) for r in requirements)
    # PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME=shared exports these loggers, and only these.
    names = {
        name
        for path in (ROOT / "shared").rglob("*.py")
        for name in re.findall(r"getLogger\(([^)]*)\)", path.read_text())
    }
    assert names and all(n == "__name__" or n.startswith('"shared.') for n in names), names


def test_loading_the_app_imports_no_telemetry_package() -> None:
    """Cold start: only the worker imports the exporter, and only when the setting is on."""
    probe = (
        "import sys, function_app; print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_each_window_logs_the_watched_caches_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line for all caches: size, bound, hits, misses and hit rate of each, counts only
    (a sender pool keyed by connection strings logs none of them)."""
    clock = Clock()
    counted = DeliverySummary(clock, interval_seconds=60)
    counted.watch("connections", lambda: {"size": 3, "capacity": 10, "hits": 9, "misses": 1})
    pool = SenderPool(max_senders=5)
    secret = "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=s3cr3tKey="
    pool.get(secret, "q")
    counted.watch("senders", pool.stats)
    caplog.set_level(logging.INFO, logger="shared.dispatch")
    counted.flush()
    assert [r for r in caplog.records if "Caches" in vars(r)] == []  # nothing counted, no line
    counted.add(uuid.uuid4(), 5, None)
    counted.flush()
    [line] = [r for r in caplog.records if "Caches" in vars(r)]
    fields = vars(line)
    assert fields["Caches"] == "connections,senders"
    assert {k: v for k, v in fields.items() if k.startswith("CacheConnections")} == {
        "CacheConnectionsSize": 3,
        "CacheConnectionsCapacity": 10,
        "CacheConnectionsHits": 9,
        "CacheConnectionsMisses": 1,
        "CacheConnectionsHitRate": 0.9,
    }
    assert (fields["CacheSendersSize"], fields["CacheSendersMisses"]) == (1, 1)
    assert fields["CacheSendersAmqpConnections"] == 0  # made, never connected
    assert "connections 3/10 90% hit" in line.getMessage()
    assert "s3cr3t" not in line.getMessage() and "s3cr3t" not in repr(fields)
