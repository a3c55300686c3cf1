"""The retention purge against Azurite, with time injected.

Each test gets its own connections table, message table and bodies container, so a purge sees
exactly what the test made and the counts it reports can be checked to the record.
"""

import argparse
import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.cli import parse_instant, purge_command
from shared.crypto import KeyRing
from shared.errors import NotFound
from shared.events import EventStore, new_event
from shared.models.records import MessageQuery, MessageStatus
from shared.service.retention import TOMBSTONE_GRACE, PurgeResult, purge
from shared.services import Services
from shared.storage.connections import ConnectionRepository, StoredConnection
from shared.storage.logdays import LogDays
from shared.storage.logrecords import MAX_PROPERTY_CHARS, LoggedMessage, row_key
from shared.storage.logsearch import Terms
from shared.storage.messages import MessageLog
from shared.storage.portalsessions import PortalSessionRepository
from shared.storage.replays import ReplayRepository
from tests.factories import NOW, a_connection, a_record, a_replay
from tests.test_search import as_first_layout

DAY = timedelta(days=1)
BIG = "x" * (MAX_PROPERTY_CHARS + 1)  # stored in the bodies container, not in the table


@pytest.fixture
async def svc(services: Services) -> AsyncIterator[Services]:
    """The app's services over tables and a container of this test alone."""
    tag = uuid.uuid4().hex[:12]
    storage = services.storage
    names = f"retconn{tag}", f"retmsg{tag}", f"retention-{tag}", f"retreplays{tag}"
    sessions = f"retportal{tag}"
    log = MessageLog(await storage.table(names[1]), await storage.container(names[2]))
    await log.days.trust(NOW - 30 * DAY)  # a new installation: no records older than day rows
    yield replace(
        services,
        connections=ConnectionRepository(
            await storage.table(names[0]), KeyRing(services.settings.encryption_keys)
        ),
        messages=log,
        replays=ReplayRepository(await storage.table(names[3])),
        portal_sessions=PortalSessionRepository(await storage.table(sessions)),
    )
    await storage.tables.delete_table(names[0])
    await storage.tables.delete_table(names[1])
    await storage.blobs.delete_container(names[2])
    await storage.tables.delete_table(names[3])
    await storage.tables.delete_table(sessions)


async def logged(
    svc: Services, account: str, ages: Sequence[timedelta], body: str = "{}"
) -> tuple[StoredConnection, list[LoggedMessage]]:
    """A live connection with one record per age (how long before NOW it was sent)."""
    stored = await svc.connections.add(account, a_connection(), NOW - 30 * DAY)
    records = [a_record(stored.uid, NOW - age, MessageStatus.SUCCEEDED, body) for age in ages]
    await svc.messages.add(stored.log_partition, records)
    return stored, records


async def listed(svc: Services, stored: StoredConnection) -> list[uuid.UUID]:
    """What a reader sees (bodies included: a missing body would raise here)."""
    page = await svc.messages.page(stored.log_partition, MessageQuery(page_size=500))
    assert page.total_hits == len(page.messages)
    return [m.uid for m in page.messages]


async def row_keys(svc: Services) -> list[str]:
    """Of the log partitions (not the purge's day rows: test_purge_by_day checks those)."""
    rows = svc.messages.table.list_entities(select=["PartitionKey", "RowKey"])
    return [e["RowKey"] async for e in rows if not e["PartitionKey"].startswith("~")]


async def row_count(svc: Services) -> int:
    """Records only (their keys start with a digit); see log_rows for the rest."""
    return len([k for k in await row_keys(svc) if k < ":"])


async def log_rows(svc: Services) -> dict[str, int]:
    """The rows beside the records, by kind: counters ("c_") and failure copies ("f_")."""
    keys = [k[:2] for k in await row_keys(svc) if k >= ":"]
    return {kind: keys.count(kind) for kind in sorted(set(keys))}


async def blob_names(svc: Services) -> set[str]:
    return {name async for name in svc.messages.bodies.list_blob_names()}


def uids(records: Sequence[LoggedMessage]) -> list[uuid.UUID]:
    """Newest first, as a reader lists them."""
    return sorted((r.message.uid for r in records), key=lambda u: u.int, reverse=True)


async def test_only_records_older_than_the_retention_go(svc: Services, account: str) -> None:
    second = timedelta(seconds=1)
    ages = [15 * DAY, 14 * DAY + second, 14 * DAY - second, 13 * DAY, timedelta(hours=1)]
    stored, records = await logged(svc, account, ages)

    result = await purge(svc, NOW)

    assert result == PurgeResult(
        records_removed=2, partitions_visited=1, days_dropped=1, complete=True
    )
    assert await listed(svc, stored) == uids(records[2:])
    again = await purge(svc, NOW)
    assert again.records_removed == 0 and await listed(svc, stored) == uids(records[2:])


async def test_retention_is_a_setting(svc: Services, account: str) -> None:
    stored, records = await logged(svc, account, [8 * DAY, 6 * DAY])
    assert (await purge(svc, NOW)).records_removed == 0

    week = replace(svc, settings=replace(svc.settings, retention_days=7))
    assert (await purge(week, NOW)).records_removed == 1
    assert await listed(svc, stored) == uids(records[1:])


async def test_thousands_of_records_across_many_partitions(svc: Services, account: str) -> None:
    # One partition needs more than one query (1,000 a time); the others several transactions.
    old_counts = [1100] + [30] * 29
    young = [timedelta(hours=h) for h in (1, 30, 100, 200, 300)]
    connections = await asyncio.gather(
        *(
            logged(svc, account, [15 * DAY + timedelta(minutes=i) for i in range(n)] + young)
            for n in old_counts
        )
    )

    result = await purge(svc, NOW)

    assert result.records_removed == sum(old_counts)
    assert result.partitions_visited == len(old_counts) and result.complete
    assert await row_count(svc) == len(young) * len(old_counts)
    # a counter row for each young hour, a delivery row and a search index row (its EventKey)
    # for each young record; the purge's mark in each partition
    left = len(young) * len(old_counts)
    assert await log_rows(svc) == {"c_": left, "d_": left, "p_": len(old_counts), "x_": left}
    for stored, records in connections:
        assert await listed(svc, stored) == uids(records[-len(young) :])


async def test_bodies_stored_for_purged_records_are_removed(svc: Services, account: str) -> None:
    stored, records = await logged(svc, account, [15 * DAY, 20 * DAY, DAY], body=BIG)
    small, _ = await logged(svc, account, [15 * DAY])
    assert len(await blob_names(svc)) == 3

    result = await purge(svc, NOW)

    assert (result.records_removed, result.bodies_removed) == (3, 2)
    young = await svc.messages.page(stored.log_partition, MessageQuery())
    assert [m.uid for m in young.messages] == uids(records[2:])
    assert young.messages[0].message_body == BIG
    assert await blob_names(svc) == {f"{stored.log_partition}/{row_key(records[2].message.uid)}"}
    assert await listed(svc, small) == []


async def test_a_deleted_connections_records_all_go_and_its_tombstone_is_forgotten(
    svc: Services, account: str
) -> None:
    deleted, _ = await logged(svc, account, [15 * DAY, DAY, timedelta(minutes=1)])
    await svc.messages.add(
        deleted.log_partition, [a_record(deleted.uid, NOW, MessageStatus.FAILED, BIG)]
    )
    kept, kept_records = await logged(svc, account, [DAY, timedelta(minutes=1)])
    await svc.connections.delete(account, deleted.uid, NOW - timedelta(hours=2))

    result = await purge(svc, NOW)

    assert (result.records_removed, result.bodies_removed) == (4, 1)
    assert result.partitions_visited == 2 and result.complete
    assert await listed(svc, deleted) == []
    assert await svc.connections.tombstones() == []
    assert await blob_names(svc) == set()
    assert await listed(svc, kept) == uids(kept_records)


async def test_a_fresh_tombstone_stays_until_no_late_record_can_arrive(
    svc: Services, account: str
) -> None:
    deleted, _ = await logged(svc, account, [DAY])
    await svc.connections.delete(account, deleted.uid, NOW - timedelta(minutes=5))
    assert (await purge(svc, NOW)).records_removed == 1
    assert [t["RowKey"] for t in await svc.connections.tombstones()] == [deleted.log_partition]
    # a delivery that was in flight at the delete writes its record late
    await svc.messages.add(
        deleted.log_partition, [a_record(deleted.uid, NOW, MessageStatus.SUCCEEDED)]
    )
    later = await purge(svc, NOW + TOMBSTONE_GRACE)
    assert later.records_removed == 1
    assert await svc.connections.tombstones() == []


async def test_a_purge_cut_off_midway_is_finished_by_the_next_without_redoing_work(
    svc: Services, account: str
) -> None:
    old = [15 * DAY + timedelta(minutes=i) for i in range(150)]
    live = [await logged(svc, account, [*old, DAY], body=BIG if n == 0 else "{}") for n in range(4)]
    deleted, _ = await logged(svc, account, old[:120])
    await svc.connections.delete(account, deleted.uid, NOW - 2 * TOMBSTONE_GRACE)
    total = 4 * 150 + 120
    ticks = itertools.count()  # the budget in checks of the clock, not seconds: deterministic

    first = await purge(svc, NOW, budget_seconds=10, timer=lambda: next(ticks))
    assert not first.complete and 0 < first.records_removed < total

    second = await purge(svc, NOW)
    assert second.complete
    assert second.records_removed == total - first.records_removed
    assert first.bodies_removed + second.bodies_removed == 150
    assert await row_count(svc) == 4
    assert await svc.connections.tombstones() == []
    for stored, records in live:
        assert await listed(svc, stored) == uids(records[-1:])
    assert (await purge(svc, NOW)).records_removed == 0


async def test_a_purge_cancelled_anywhere_never_leaves_a_record_without_its_body(
    svc: Services, account: str
) -> None:
    """The Functions host may kill a run at any point: cancel runs ever later, and check after
    each that every record a reader can list still has its body."""
    connections = [
        await logged(svc, account, [15 * DAY + timedelta(minutes=i) for i in range(25)], BIG)
        for _ in range(2)
    ]
    timeout = 0.01
    while True:
        try:
            result = await asyncio.wait_for(purge(svc, NOW), timeout)
            break
        except TimeoutError:
            for stored, _ in connections:
                await listed(svc, stored)  # downloads every listed record's body
            timeout *= 1.5
    assert result.complete
    assert await row_count(svc) == 0 and await blob_names(svc) == set()


async def test_a_body_left_by_a_run_cut_off_before_its_bodies_goes_with_the_next_run(
    svc: Services, account: str
) -> None:
    stored, records = await logged(svc, account, [15 * DAY, DAY], body=BIG)
    # What a run killed between a transaction and the bodies of its records leaves behind:
    await svc.messages.delete_records(stored.log_partition, [row_key(records[0].message.uid)])
    assert len(await blob_names(svc)) == 2

    result = await purge(svc, NOW)

    assert (result.records_removed, result.bodies_removed) == (0, 1)
    assert await blob_names(svc) == {f"{stored.log_partition}/{row_key(records[1].message.uid)}"}
    assert await listed(svc, stored) == uids(records[1:])


async def test_two_purges_at_once_remove_everything_exactly_once(
    svc: Services, account: str
) -> None:
    old = [15 * DAY + timedelta(minutes=i) for i in range(300)]
    live = [await logged(svc, account, [*old, DAY]) for _ in range(2)]
    await logged(svc, account, old[:20], body=BIG)
    deleted, _ = await logged(svc, account, old[:150])
    await svc.connections.delete(account, deleted.uid, NOW - 2 * TOMBSTONE_GRACE)

    results = await asyncio.gather(purge(svc, NOW), purge(svc, NOW))

    assert all(r.complete for r in results)
    assert sum(r.records_removed for r in results) == 2 * 300 + 20 + 150
    assert sum(r.bodies_removed for r in results) == 20
    assert await row_count(svc) == 2 and await blob_names(svc) == set()
    assert await svc.connections.tombstones() == []
    for stored, records in live:
        assert await listed(svc, stored) == uids(records[-1:])


async def test_a_transaction_meeting_a_record_already_gone_deletes_the_rest_one_by_one(
    svc: Services, account: str
) -> None:
    stored, records = await logged(
        svc, account, [15 * DAY + timedelta(minutes=i) for i in range(10)]
    )
    keys = [row_key(r.message.uid) for r in records]
    assert await svc.messages.delete_records(stored.log_partition, keys[:3]) == 3
    assert await svc.messages.delete_records(stored.log_partition, keys) == 7
    assert await svc.messages.delete_records(stored.log_partition, keys) == 0
    assert await row_count(svc) == 0


async def test_event_payloads_older_than_the_retention_go(svc: Services, account: str) -> None:
    events = EventStore(svc.messages.bodies)
    large = new_event(account, "Order.Shipped", NOW, data={"Text": "y" * 60_000})
    name = (await events.to_payload(large))["EventBlob"]
    # Payload names carry no time: their age is the storage service's clock, so is this test's.
    blob = svc.messages.bodies.get_blob_client(name)
    stored_at = (await blob.get_blob_properties()).last_modified
    stored = await svc.connections.add(account, a_connection(), stored_at)
    young = a_record(stored.uid, stored_at + timedelta(hours=1), MessageStatus.SUCCEEDED, BIG)
    await svc.messages.add(stored.log_partition, [young])

    assert (await purge(svc, stored_at + 13 * DAY)).event_payloads_removed == 0
    result = await purge(svc, stored_at + 14 * DAY + timedelta(minutes=1))
    assert result.event_payloads_removed == 1
    assert (result.records_removed, result.bodies_removed) == (0, 0)
    assert await blob_names(svc) == {f"{stored.log_partition}/{row_key(young.message.uid)}"}


async def test_the_command_prints_the_counts_on_its_last_line(
    svc: Services, account: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await logged(svc, account, [15 * DAY, 16 * DAY], body=BIG)
    await logged(svc, account, [DAY])
    assert await purge_command(svc, argparse.Namespace(now=NOW)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 2"
    assert parse_instant("2026-11-26T10:00:00Z") == NOW == parse_instant("2026-11-26T10:00:00")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_instant("yesterday")


async def test_counts_failure_copies_and_deliveries_go_with_their_hours(
    svc: Services, account: str
) -> None:
    stored = await svc.connections.add(account, a_connection(), NOW - 30 * DAY)
    now = NOW + timedelta(minutes=17)  # the cutoff is rounded down to NOW - 14 days
    sent = [now - timedelta(hours=h, minutes=h) for h in range(0, 16 * 24, 5)]
    records = [
        replace(
            a_record(stored.uid, at, MessageStatus.FAILED if i % 3 else MessageStatus.SUCCEEDED),
            subject=f"orders/{i}" if i % 2 else None,
        )
        for i, at in enumerate(sent)
    ]
    await svc.messages.add(stored.log_partition, records)

    await purge(svc, now)
    kept = [r for r in records if r.message.request_timestamp >= NOW - 14 * DAY]
    assert await listed(svc, stored) == uids(kept)  # and TotalHits equals what is listed
    failed = await svc.messages.page(
        stored.log_partition, MessageQuery(only_failed=True, page_size=500)
    )
    assert failed.total_hits == len(failed.messages)
    assert [m.uid for m in failed.messages] == uids(
        [r for r in kept if r.message.status == MessageStatus.FAILED]
    )
    hours = {r.message.request_timestamp.replace(minute=0, second=0) for r in kept}
    # each record here is a delivery of its own: its row, and the failed ones' index rows
    # (`u_`), go with it; so do its search index rows (`x_`: its EventKey, its Subject, a failure's)
    failures = len(failed.messages)
    assert await log_rows(svc) == {
        "c_": len(hours),
        "d_": len(kept),
        "f_": failures,
        "p_": 1,
        "u_": failures,
        "x_": len(kept) + len([r for r in kept if r.subject]) + failures,
    }

    await svc.connections.delete(account, stored.uid, now - 2 * TOMBSTONE_GRACE)
    await purge(svc, now)
    assert await row_count(svc) == 0 and await log_rows(svc) == {}  # every kind of row


async def test_a_packed_index_row_goes_with_the_newest_record_it_lists(
    svc: Services, account: str
) -> None:
    """Records written together list in one row per value (shared/storage/logsearch.py): the
    purge keeps a row while a record it lists is kept (a search still finds exactly the kept
    ones) and deletes it with its newest record; rows of the first layout, one per record,
    go with their records."""
    stored = await svc.connections.add(account, a_connection(), NOW - 30 * DAY)
    partition, cutoff, second = stored.log_partition, NOW - 14 * DAY, timedelta(seconds=1)
    first_layout = [
        replace(a_record(stored.uid, cutoff - h * 3600 * second), subject="o/1") for h in (1, 2)
    ]
    await svc.messages.add(partition, first_layout)
    await as_first_layout(svc, partition, first_layout)
    # 25 s after the cutoff to 85 s before, 10 s apart: two writes' worth of rows (a row
    # spans at most 60 s), the newer one across the cutoff
    packed = [
        replace(a_record(stored.uid, cutoff + (25 - 10 * i) * second), subject="o/1")
        for i in range(12)
    ]
    await svc.messages.add(partition, packed)
    assert (await log_rows(svc))["x_"] == 2 * len(first_layout) + 4

    await purge(svc, NOW)
    kept = packed[:3]
    assert (await log_rows(svc))["x_"] == 2  # the row (by EventKey, by Subject) of the 3 kept
    for terms in (Terms(subject="o/1"), Terms(event_keys=("Order.Shipped",))):
        page = await svc.messages.page(partition, MessageQuery(page_size=500), terms)
        assert [m.uid for m in page.messages] == uids(kept) and page.total_hits == len(kept)

    await purge(svc, NOW + DAY)
    assert await row_count(svc) == 0 and "x_" not in await log_rows(svc)


async def test_replays_asked_for_before_the_retention_go(svc: Services) -> None:
    old, recent = a_replay(NOW - 15 * DAY), a_replay(NOW - 13 * DAY)
    for row in (old, recent):
        await svc.replays.add(row)
    assert (await purge(svc, NOW)).replays_removed == 1
    assert (await svc.replays.get(recent.partition, recent.replay_id)).matched == recent.matched
    with pytest.raises(NotFound):
        await svc.replays.get(old.partition, old.replay_id)


async def test_expired_portal_sign_ins_go_and_live_ones_stay(svc: Services) -> None:
    sessions = svc.portal_sessions
    unused_code = await sessions.new_code("acme", 5, NOW - timedelta(minutes=10))
    live_code = await sessions.new_code("acme", 60, NOW)
    old_session = await sessions.start("acme", NOW - 2 * sessions.lifetime)
    live_session = await sessions.start("acme", NOW)
    assert (await purge(svc, NOW)).portal_sign_ins_removed == 2
    assert await sessions.get(old_session.token, NOW - 2 * sessions.lifetime) is None
    assert await sessions.get(live_session.token, NOW) is not None
    assert await sessions.redeem(unused_code, NOW - timedelta(minutes=10)) is None
    assert await sessions.redeem(live_code, NOW) is not None


# ---------------------------------------------------------------- the day rows (issue 25)


async def day_rows(svc: Services) -> dict[str, set[str]]:
    """The purge's work list: log partitions by noted day."""
    rows = svc.messages.table.query_entities(
        "PartitionKey ge @a and PartitionKey lt @b", parameters={"a": "~logday_", "b": "~logday`"}
    )
    days: dict[str, set[str]] = {}
    async for e in rows:
        days.setdefault(e["PartitionKey"].removeprefix("~logday_"), set()).add(e["RowKey"])
    return days


def no_scan(monkeypatch: pytest.MonkeyPatch, svc: Services) -> None:
    async def scan() -> list[str]:
        raise AssertionError("the purge listed every connection")

    monkeypatch.setattr(svc.connections, "all_log_partitions", scan)


async def test_the_purge_works_only_the_partitions_of_expired_days(
    svc: Services, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = [await logged(svc, account, [DAY, 2 * DAY]) for _ in range(20)]
    old = [await logged(svc, account, [16 * DAY, 15 * DAY, DAY]) for _ in range(2)]
    noted = await day_rows(svc)
    assert noted["20261110"] == noted["20261111"] == {s.log_partition for s, _ in old}
    no_scan(monkeypatch, svc)

    result = await purge(svc, NOW)

    assert result.records_removed == 4 and result.complete and not result.full_scan
    assert result.partitions_visited == 2 and result.days_dropped == 2
    assert "20261110" not in await day_rows(svc) and "20261111" not in await day_rows(svc)
    for stored, records in old:
        assert await listed(svc, stored) == uids(records[2:])
    for stored, records in idle:
        assert await listed(svc, stored) == uids(records)


async def test_a_partly_expired_day_is_worked_each_hour_and_dropped_once_past(
    svc: Services, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NOW is 10:00, so the cutoff is 10:00 of the day 14 days ago: half of that day is past it.
    hour = timedelta(hours=1)
    stored, records = await logged(svc, account, [14 * DAY + 5 * hour, 14 * DAY - 5 * hour])
    no_scan(monkeypatch, svc)

    first = await purge(svc, NOW)
    assert first.records_removed == 1 and first.days_dropped == 0
    assert await listed(svc, stored) == uids(records[1:])
    assert stored.log_partition in (await day_rows(svc))["20261112"]  # kept: more to come

    later = await purge(svc, NOW + DAY)
    assert later.records_removed == 1 and later.days_dropped == 1
    assert await day_rows(svc) == {}


async def test_a_day_is_noted_before_its_records_once_per_process(
    svc: Services, account: str
) -> None:
    stored = await svc.connections.add(account, a_connection(), NOW)
    refused = MessageLog(svc.messages.table, svc.messages.bodies, submit=refuse)
    with pytest.raises(RuntimeError):
        await refused.add(stored.log_partition, [a_record(stored.uid, NOW - 20 * DAY)])
    assert await day_rows(svc) == {"20261106": {stored.log_partition}}  # never a record without

    with upserts_counted(svc.messages.table, "PartitionKey") as writes:
        for minute in range(5):
            at = NOW - timedelta(minutes=minute)
            await svc.messages.add(stored.log_partition, [a_record(stored.uid, at)])
    assert writes.count("~logday_20261126") == 1


async def test_what_a_writer_remembers_is_bounded(svc: Services) -> None:
    days = LogDays(svc.messages.table, max_noted=2)
    record = {"RowKey": row_key(a_record(uuid.uuid4(), NOW).message.uid)}
    with upserts_counted(svc.messages.table, "RowKey") as writes:
        for partition in ("a", "b", "a", "c", "b", "a"):
            await days.note(partition, [record])
    # a, b noted; a remembered; c pushes b out (a was used last); b again pushes a out.
    assert writes == ["a", "b", "c", "b", "a"]


@contextlib.contextmanager
def upserts_counted(table: Any, column: str) -> Iterator[list[str]]:
    """The `column` of each entity upserted into `table` meanwhile (the upserts still run)."""
    writes: list[str] = []
    upsert = table.upsert_entity

    async def counted(entity: dict[str, object], **kwargs: Any) -> object:
        writes.append(str(entity[column]))
        return await upsert(entity, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(table, "upsert_entity", counted)
        yield writes


async def refuse(table: object, operations: object) -> None:
    raise RuntimeError("storage is down")


async def test_the_first_runs_after_an_upgrade_scan_every_connection(
    svc: Services, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records of a version without day rows: their rows removed, and no purge state yet.
    stored, records = await logged(svc, account, [20 * DAY, 16 * DAY, DAY])
    table = svc.messages.table
    rows = table.query_entities("PartitionKey ge '~'", select=["PartitionKey", "RowKey"])
    for e in [e async for e in rows]:
        await table.delete_entity(e["PartitionKey"], e["RowKey"])
    assert await day_rows(svc) == {}
    fresh = replace(svc, messages=MessageLog(table, svc.messages.bodies))

    first = await purge(fresh, NOW)
    assert first.full_scan and first.complete and first.records_removed == 2
    assert await listed(svc, stored) == uids(records[2:])
    # A process of the old version may still write for a while: scans go on for an hour.
    assert (await purge(fresh, NOW + TOMBSTONE_GRACE / 2)).full_scan
    assert (await purge(fresh, NOW + TOMBSTONE_GRACE)).full_scan
    no_scan(monkeypatch, fresh)
    after = await purge(fresh, NOW + 2 * TOMBSTONE_GRACE)
    assert not after.full_scan and after.complete


async def test_in_azure_the_lifecycle_rule_deletes_bodies_and_the_purge_counts_the_overdue(
    svc: Services, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    azure = replace(svc, settings=replace(svc.settings, purge_deletes_bodies=False))
    await logged(azure, account, [17 * DAY, 15 * DAY, DAY], body=BIG)
    assert len(await blob_names(svc)) == 3

    result = await purge(azure, NOW)

    assert result.records_removed == 2 and result.bodies_removed == 0
    assert len(await blob_names(svc)) == 3  # the rule's, a day after the retention
    # Once a day, with the day done: the one 17 days old should be gone by now (16 days).
    assert result.days_dropped == 2 and result.bodies_overdue == 1
    assert "lifecycle rule" in caplog.text
    again = await purge(azure, NOW + timedelta(hours=1))
    assert again.days_dropped == 0 and again.bodies_overdue == 0  # not counted each hour
