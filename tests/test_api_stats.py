"""`GET /v1/azureservicebusconnections/{uid}/stats` over real HTTP, served from the counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.models.records import MessageStatus
from shared.services import Services
from tests.factories import a_connection, a_record
from tests.plugins.app import Api

PATH = "/v1/azureservicebusconnections"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

FAILED, SUCCEEDED = MessageStatus.FAILED, MessageStatus.SUCCEEDED


async def logged_connection(services: Services, account: str) -> Any:
    """A connection of `account` with 3 deliveries (1 failed) at 08:xx and 2 at 10:xx."""
    stored = await services.connections.add(account, a_connection(), T0 - timedelta(days=1))
    records = [
        a_record(stored.uid, T0 - 110 * MINUTE, latency_ms=30),
        a_record(stored.uid, T0 - 100 * MINUTE, latency_ms=30),
        a_record(stored.uid, T0 - 61 * MINUTE, status=FAILED, latency_ms=5000),
        a_record(stored.uid, T0, latency_ms=100),
        a_record(stored.uid, T0 + 59 * MINUTE, latency_ms=100),
    ]
    await services.messages.add(stored.log_partition, records)
    return stored


async def test_stats_per_hour_from_the_counters(api: Api, services: Services, account: str) -> None:
    stored = await logged_connection(services, account)
    status, stats = await api.call(
        "GET",
        f"{PATH}/{stored.uid}/stats",
        params={"since": "2026-11-26T08:30:00Z", "until": "2026-11-26T11:00:00Z"},
    )
    assert status == 200, stats
    assert stats == {
        "Hours": [
            {"Hour": "2026-11-26T08:00:00.000Z", "Succeeded": 2, "Failed": 1,
             "LatencyMsP50": 32, "LatencyMsP95": 8192},
            {"Hour": "2026-11-26T09:00:00.000Z", "Succeeded": 0, "Failed": 0,
             "LatencyMsP50": None, "LatencyMsP95": None},
            {"Hour": "2026-11-26T10:00:00.000Z", "Succeeded": 2, "Failed": 0,
             "LatencyMsP50": 128, "LatencyMsP95": 128},
        ]
    }  # fmt: skip
    status, default = await api.call("GET", f"{PATH}/{stored.uid}/stats")
    assert status == 200 and len(default["Hours"]) in (24, 25)  # the last 24 hours, by hour


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "2026-11-26T10:00:00Z", "until": "2026-11-26T09:00:00Z"},
        {"since": "2026-11-01T00:00:00Z", "until": "2026-11-16T00:00:00Z"},  # over 14 days
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "0001-01-01T00:00:00+01:00", "until": "0001-01-02T00:00:00Z"},
        {"until": "9999-12-31T23:59:59Z"},
    ],
)
async def test_bad_stats_parameters_are_400(
    api: Api, services: Services, account: str, query: dict[str, str]
) -> None:
    stored = await services.connections.add(account, a_connection(), T0)
    status, problem = await api.call("GET", f"{PATH}/{stored.uid}/stats", params=query)
    assert status == 400 and problem["errors"], problem
    assert set(problem["errors"]) <= {"Since", "Until"}


async def test_stats_of_unknown_or_other_accounts_connections_are_404(
    api: Api, services: Services
) -> None:
    other = await logged_connection(services, f"other-{uuid.uuid4().hex[:8]}")
    for uid in (other.uid, uuid.uuid4(), "not-a-uuid"):
        status, problem = await api.call("GET", f"{PATH}/{uid}/stats")
        assert status == 404, problem
