"""Issues 25 and 28: a connection's health row beside it (one storage request per GET of a
connection and per list), written when it changes plus a heartbeat a minute, and the move of
an older version's rows (`health migrate`). Against Azurite; requests are counted with the
Tables SDK's own response hook, time with an injected clock."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.crypto import KeyRing
from shared.dispatch.healthtracker import HealthTracker
from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.models.records import DeliveryError, ErrorCategory
from shared.service import connections as connection_service
from shared.service.healthmove import OLD_TABLE, migrate_health
from shared.services import Services
from shared.storage.clients import CONNECTIONS_TABLE
from shared.storage.connections import ConnectionRepository
from shared.storage.healthrows import HealthRepository
from tests.factories import SetClock, a_connection, cli

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FAILURE = DeliveryError(category=ErrorCategory.TRANSIENT, type="ServiceBusError", message="m")


@pytest.fixture
async def counted(
    services: Services, storage_connection_string: str
) -> AsyncIterator[tuple[Services, list[str]]]:
    """`services` whose connections and health rows go through a table client that notes the
    method and URL of every storage response."""
    from azure.data.tables.aio import TableClient

    seen: list[str] = []
    table = TableClient.from_connection_string(
        storage_connection_string,
        CONNECTIONS_TABLE,
        raw_response_hook=lambda r: seen.append(f"{r.http_request.method} {r.http_request.url}"),
    )
    keys = KeyRing(services.settings.encryption_keys)
    own = dataclasses.replace(
        services, connections=ConnectionRepository(table, keys), health=HealthRepository(table)
    )
    yield own, seen
    await table.close()


async def test_get_and_list_are_one_storage_request_each_with_health(
    counted: tuple[Services, list[str]], account: str
) -> None:
    services, requests = counted
    with_row = await services.connections.add(account, a_connection(), T0)
    without = await services.connections.add(account, a_connection(), T0)
    suspended = HealthState(HealthStatus.SUSPENDED, T0, None, T0, 3, FAILURE, T0)
    await services.health.put(account, with_row.uid, suspended)

    requests.clear()
    got = await connection_service.get(services, account, with_row.uid)
    assert got.health is not None and got.health.status == HealthStatus.SUSPENDED
    assert got.health.consecutive_failures == 3
    healthy = await connection_service.get(services, account, without.uid)
    assert healthy.health is not None and healthy.health.status == HealthStatus.HEALTHY
    assert len(requests) == 2, requests  # one each

    requests.clear()
    listed = {c.uid: c.health for c in await connection_service.list_all(services, account)}
    assert len(requests) == 1, requests
    assert set(listed) == {with_row.uid, without.uid}  # health rows are not connections
    shown = listed[with_row.uid]
    assert shown is not None and shown.status == HealthStatus.SUSPENDED
    assert await services.connections.count(account) == 2
    assert await services.health.suspended(account) == {with_row.uid}


async def test_a_health_write_leaves_the_connection_row_and_its_etag_alone(
    counted: tuple[Services, list[str]], account: str, storage_connection_string: str
) -> None:
    from azure.data.tables.aio import TableClient

    services, _ = counted
    stored = await services.connections.add(account, a_connection(), T0)
    async with TableClient.from_connection_string(
        storage_connection_string, CONNECTIONS_TABLE
    ) as table:
        before = (await table.get_entity(account, str(stored.uid))).metadata["etag"]
        await services.health.put(account, stored.uid, HealthState.new(T0))
        after = (await table.get_entity(account, str(stored.uid))).metadata["etag"]
    assert before == after
    partitions = await services.connections.all_log_partitions()
    assert stored.log_partition in partitions and all(partitions)  # no health row's None
    await connection_service.delete(services, account, stored.uid)
    assert await services.health.get(account, stored.uid) is None  # gone with its connection


async def test_a_row_read_again_unchanged_is_not_parsed_again_and_a_changed_one_is(
    services: Services, account: str
) -> None:
    table = await services.storage.table(CONNECTIONS_TABLE)
    repository = ConnectionRepository(table, KeyRing(services.settings.encryption_keys), 1)
    first = await repository.add(account, a_connection(Title="one"), T0)
    other = await repository.add(account, a_connection(), T0)
    read = await repository.get(account, first.uid)
    assert (await repository.get(account, first.uid)) is read  # kept, by its etag
    assert (await repository.read(account, first.uid))[0] is read  # the same etag as JSON
    assert (repository.parsed_hits, repository.parsed_misses) == (2, 1)
    renamed = read.connection.model_copy(update={"title": "two"})
    await repository.replace(account, renamed, T0)  # parses the row it replaces
    assert (await repository.get(account, first.uid)).connection.title == "two"
    await repository.get(account, other.uid)  # one row kept at most: the first goes
    misses = repository.parsed_misses
    await repository.get(account, first.uid)
    assert repository.parsed_misses == misses + 1


async def test_a_steady_connection_writes_once_a_minute_and_a_change_at_the_next_flush(
    services: Services, account: str
) -> None:
    clock = SetClock(T0)
    tracker = HealthTracker(
        services.health, clock, flush_seconds=3600, suspend_after_seconds=60, cache_seconds=0
    )  # the test flushes itself, every 15 s of its clock
    uid = uuid.uuid4()
    writes_at: list[float] = []
    for tick in range(21):  # 5 minutes of successes, flushed every 15 s
        clock.now = T0 + timedelta(seconds=15 * tick)
        tracker.observe(account, uid, clock.now, None)
        before = tracker.writes
        await tracker.flush()
        if tracker.writes > before:
            writes_at.append(15 * tick)
    assert writes_at == [0, 60, 120, 180, 240, 300]  # the first, then a heartbeat a minute
    state = await services.health.get(account, uid)
    assert state is not None and state.last_success_at == T0 + timedelta(seconds=300)

    clock.now += timedelta(seconds=15)  # a failure changes the status: written at once
    tracker.observe(account, uid, clock.now, FAILURE)
    await tracker.flush()
    state = await services.health.get(account, uid)
    assert state is not None and state.status == HealthStatus.DEGRADED
    assert tracker.writes == 7

    clock.now += timedelta(seconds=15)  # more of the same failure: counts wait for a heartbeat
    tracker.observe(account, uid, clock.now, FAILURE)
    await tracker.flush()
    assert tracker.writes == 7
    await tracker.close()  # what is still pending is written on the way out
    state = await services.health.get(account, uid)
    assert state is not None and state.consecutive_failures == 2
    assert tracker.writes == 8


async def test_after_a_suspension_or_once_forgotten_outcomes_are_written_at_once(
    services: Services, account: str
) -> None:
    """Outcomes after a suspension this process wrote mean a resume or a save ended it
    elsewhere; a connection pushed out of the bounded map of what was written is written
    as one never seen."""
    clock = SetClock(T0)
    tracker = HealthTracker(
        services.health,
        clock,
        flush_seconds=3600,
        suspend_after_seconds=0,  # the first Configuration failure suspends
        cache_seconds=0,
        known_states=1,
    )
    suspended, other = uuid.uuid4(), uuid.uuid4()
    config = DeliveryError(category=ErrorCategory.CONFIGURATION, type="T", message="m")
    tracker.observe(account, suspended, T0, config)
    await tracker.flush()
    state = await services.health.get(account, suspended)
    assert state is not None and state.status == HealthStatus.SUSPENDED
    await services.health.put(account, suspended, state.resumed(T0))  # the owner resumes
    tracker.observe(account, suspended, T0, None)
    await tracker.flush()  # within the minute, yet written
    assert tracker.writes == 2
    state = await services.health.get(account, suspended)
    assert state is not None and state.status == HealthStatus.HEALTHY

    tracker.observe(account, other, T0, None)
    await tracker.flush()  # `other` takes the one place: `suspended` is forgotten
    tracker.observe(account, suspended, T0, None)
    await tracker.flush()
    assert tracker.writes == 4
    # The stats line's counts: only the second flush found what it had written (issue 25).
    assert tracker.known_stats() == {"size": 1, "capacity": 1, "hits": 1, "misses": 3}
    await tracker.close()


async def test_outcomes_that_say_nothing_of_health_write_nothing(
    services: Services, account: str
) -> None:
    tracker = HealthTracker(
        services.health, SetClock(T0), flush_seconds=3600, suspend_after_seconds=60, cache_seconds=0
    )
    uid = uuid.uuid4()
    too_large = DeliveryError(category=ErrorCategory.TOO_LARGE, type="T", message="m")
    tracker.observe(account, uid, T0, too_large)  # the event's size, not the connection's
    await tracker.close()
    assert tracker.writes == 0 and await services.health.get(account, uid) is None


async def test_health_migrate_moves_old_rows_keeps_newer_ones_and_drops_orphans(
    services: Services, account: str, app_environment: dict[str, str]
) -> None:
    """The operator's command (a process) moves them; run again, it finds nothing."""
    from azure.data.tables import UpdateMode

    def old_row(uid: uuid.UUID, state: HealthState) -> dict[str, Any]:
        error = state.last_error and state.last_error.model_dump_json(by_alias=True)
        row = {
            "PartitionKey": account,
            "RowKey": str(uid),
            "Status": str(state.status),
            "Since": state.since,
            "ConsecutiveFailures": state.consecutive_failures,
            "LastError": error,
            "LastFailureAt": state.last_failure_at,
            "FailingSince": state.failing_since,
        }
        return {k: v for k, v in row.items() if v is not None}

    add = services.connections.add
    moved, newer, suspended = [(await add(account, a_connection(), T0)).uid for _ in range(3)]
    orphan = uuid.uuid4()
    failing = HealthState(HealthStatus.FAILING, T0, None, T0, 4, FAILURE, T0)
    stopped = HealthState(HealthStatus.SUSPENDED, T0, None, T0, 9, FAILURE, T0)
    healthy_now = HealthState.new(T0 + timedelta(hours=1))
    await services.health.put(account, newer, healthy_now)  # written by this version since
    await services.health.put(account, suspended, healthy_now)
    old = await services.storage.table(OLD_TABLE)
    for uid, state in ((moved, failing), (newer, failing), (suspended, stopped), (orphan, failing)):
        await old.upsert_entity(old_row(uid, state), mode=UpdateMode.REPLACE)

    command = cli(app_environment, "health", "migrate")
    assert command.returncode == 0, command.stderr
    assert "2 rows of connectionhealth moved" in command.stdout, command.stdout
    assert "1 already there (newer), 1 of deleted connections dropped" in command.stdout
    assert command.stdout.splitlines()[-1] == "2"
    assert await services.health.get(account, moved) == failing
    assert await services.health.get(account, newer) == healthy_now
    assert await services.health.get(account, suspended) == stopped  # only a resume ends it
    assert await services.health.get(account, orphan) is None
    assert [row async for row in old.list_entities()] == []
    assert (await migrate_health(services)).moved == 0  # once more: nothing left to move


def test_the_get_profile_runs_and_names_our_code() -> None:
    """bench/profile_api.py, with tiny numbers: the figures are not asserted (a shared
    machine), only that it measures and that its call tree reaches our handler."""
    import subprocess
    import sys

    from tests.factories import ROOT

    command = [sys.executable, "-m", "bench.profile_api", "--requests", "40", "--clients", "2"]
    done = subprocess.run(
        [*command, "--profile"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "requests/s; CPU ms a request: client" in done.stdout
    assert "LocalHost._handle" in done.stdout


async def test_health_migrate_without_the_old_table_moves_nothing(
    own_storage: tuple[str, Services],
) -> None:
    """A deployment made with this version has no `connectionhealth` table at all."""
    _, services = own_storage
    done = await migrate_health(services)
    assert (done.moved, done.kept, done.orphans) == (0, 0, 0)
