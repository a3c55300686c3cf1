"""Search of the message log (eventId, messageId, subject, eventKey, status) against Azurite:
every answer is what a brute-force filter of the written records says; values that keys
forbid are found; a search by EventId or MessageId reads its delivery, also past the attempts
its row forgot; records without index rows are found once `log reindex` ran; the query's rules
answer 400 naming the parameter. (The purge of index rows: tests/test_retention.py.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.clock import uuid7
from shared.crypto import KeyRing
from shared.deliveries import MAX_RECORDS, DeliveryWrite
from shared.dispatch.outgoing import message_id
from shared.errors import InvalidField, NotFound
from shared.models.records import MessageQuery, MessageStatus, RequestMetadata
from shared.service import messages
from shared.service.reindex import index_partition
from shared.service.retention import log_cutoff
from shared.services import Services
from shared.storage import logsearch, transactions
from shared.storage.clients import CONNECTIONS_TABLE
from shared.storage.connections import ConnectionRepository, StoredConnection
from shared.storage.deliveries import COPIED_BODY_CHARS
from shared.storage.logcounts import PURGED, logged_at
from shared.storage.logrecords import LoggedMessage, row_key
from shared.storage.messages import MessageLog
from tests.factories import a_connection, a_record
from tests.plugins.app import Api
from tests.test_api_messages import create
from tests.test_message_log import Failing

MINUTE, SECOND = timedelta(minutes=1), timedelta(seconds=1)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
FAILED, SUCCEEDED = MessageStatus.FAILED, MessageStatus.SUCCEEDED
# Subjects a tenant may send: characters keys forbid, non-ASCII, one past the key's length.
ODD_SUBJECTS = ["orders/7", "a#b?c\\d", "tab\there", "Zürich ✓", "x" * 1000, "a_b", "a"]
CONNECTION_STRING = "Endpoint=sb://localhost/;SharedAccessKeyName=a;SharedAccessKey=b"
KEYS = ["Order.Shipped", "Order.Created", "Employee.Created", "System.Test"]


def records(
    stored: StoredConnection, n: int = 60, gap: timedelta = 2 * MINUTE
) -> list[LoggedMessage]:
    """Records `gap` apart (over two hours by default: each its own index rows; 7 s: about
    nine to a packed row), each its own delivery, with shared subjects and keys."""
    made = []
    for i in range(n):
        r = a_record(
            stored.uid,
            T0 - i * gap,
            FAILED if i % 5 == 0 else SUCCEEDED,
            event_key=KEYS[i % len(KEYS)],
            account=stored.account,
        )
        subject = ODD_SUBJECTS[i % len(ODD_SUBJECTS)] if i % 9 else None
        made.append(dataclasses.replace(r, subject=subject))
    return made


def truth(written: list[LoggedMessage], **query: Any) -> list[str]:
    """Uids (hex) the query should find, newest first."""

    def keep(r: LoggedMessage) -> bool:
        m = r.message
        key = query.get("event_key")
        return (
            (query.get("subject") in (None, r.subject))
            and (
                key is None
                or (m.event_key.startswith(key[:-1]) if key.endswith("*") else m.event_key == key)
            )
            and (query.get("status") in (None, m.status))
            and (not query.get("only_failed") or m.status == FAILED)
            and (query.get("since") is None or m.request_timestamp > query["since"])
            and (query.get("until") is None or m.request_timestamp <= query["until"])
        )

    newest_first = sorted(written, key=lambda r: row_key(r.message.uid))
    return [row_key(r.message.uid)[-32:] for r in newest_first if keep(r)]


async def found(services: Services, stored: StoredConnection, **query: Any) -> list[str]:
    page = await messages.list_messages(services, stored, MessageQuery(page_size=500, **query))
    assert page.total_hits == len(page.messages), query
    return [m.uid.hex for m in page.messages]


async def a_connection_of(services: Services, account: str) -> StoredConnection:
    return await services.connections.add(account, a_connection(), services.clock())


@pytest.mark.parametrize("gap", [2 * MINUTE, timedelta(seconds=7)], ids=["apart", "packed"])
async def test_subject_event_key_and_status_find_what_the_records_say(
    services: Services, account: str, gap: timedelta
) -> None:
    """Also with records packed several to an index row: `since`/`until` cut inside rows."""
    stored = await a_connection_of(services, account)
    written = records(stored, gap=gap)
    step = gap / 2  # a minute for records two minutes apart
    await services.messages.add(stored.log_partition, written)
    queries: list[dict[str, Any]] = [
        *({"subject": s} for s in ODD_SUBJECTS),
        {"subject": "orders"},  # a prefix of a value is not the value
        {"event_key": "Order.Shipped"},
        {"event_key": "order.shipped"},  # the catalog's spelling, as connections take it
        {"event_key": "Order.*"},
        {"event_key": "Order.*", "status": FAILED},
        {"event_key": "Employee.Created", "only_failed": True},
        {"event_key": "Order.*", "status": SUCCEEDED},
        {"status": SUCCEEDED},
        {"status": FAILED},
        {"status": SUCCEEDED, "since": T0 - 31 * step, "until": T0 - 4 * step},
        {"subject": "a", "event_key": "Employee.Created"},
        {"subject": "orders/7", "event_key": "Order.*", "status": SUCCEEDED},
        {"event_key": "Order.*", "since": T0 - 60 * step, "until": T0 - 10 * step},
        {"event_key": "Nothing.Here"},  # a key outside the catalog: searched as given
        {"event_key": "*"},
    ]
    for query in queries:
        spelled = (
            {"event_key": "Order.Shipped"} if query.get("event_key") == "order.shipped" else {}
        )
        assert await found(services, stored, **query) == truth(written, **{**query, **spelled}), (
            query
        )
    # page 2 continues page 1, and a search lists without bodies when asked
    full = truth(written, event_key="Order.*")
    page2 = await messages.list_messages(
        services,
        stored,
        MessageQuery(event_key="Order.*", page=2, page_size=7, include_body=False),
    )
    assert [m.uid.hex for m in page2.messages] == full[7:14]
    assert page2.total_hits == len(full) and all(m.message_body is None for m in page2.messages)


def test_values_are_encoded_into_keys_the_table_accepts() -> None:
    for value in [*ODD_SUBJECTS, "\x00\x1f", "é" * 1024, "ab!21"]:
        text = logsearch.encoded(value)
        assert len(text) <= logsearch.MAX_ENCODED
        assert not any(c in text for c in "/\\#?_") and text.isprintable()
    # distinct values, distinct keys: also past the length where the rest is a hash
    assert logsearch.encoded("é" * 1000) != logsearch.encoded("é" * 999 + "e")
    assert logsearch.encoded("!") != "!"  # the escape itself is escaped


async def test_a_record_and_its_two_index_rows_are_one_transaction(
    services: Services, account: str
) -> None:
    """The writer puts at most two index rows (EventKey, Subject; a failed record also one
    of its key's failures) into the record's own transaction: when it is refused, none exists."""
    stored = await a_connection_of(services, account)
    [record] = records(stored, 2)[1:]
    seen: list[Any] = []

    async def refuse(table: Any, operations: Any) -> None:
        seen.extend(operations)
        from shared.storage.transactions import TransactionError

        raise TransactionError(409, "Refused")

    from shared.storage.messages import MessageLog

    log = MessageLog(services.messages.table, services.messages.bodies, submit=refuse)
    outcomes = await log.write(stored.log_partition, [record])
    assert outcomes[0] is not None
    keys = {op[1]["RowKey"] for op in seen}
    assert row_key(record.message.uid) in keys
    assert sorted(k[:4] for k in keys if k.startswith("x_")) == ["x_k_", "x_s_"]
    failed = dataclasses.replace(record, message=record.message.model_copy(update={"status": 2}))
    seen.clear()
    await log.write(stored.log_partition, [failed])  # and a failed one a row of its failures
    keys = {op[1]["RowKey"] for op in seen}
    assert sorted(k[:4] for k in keys if k.startswith("x_")) == ["x_f_", "x_k_", "x_s_"]
    assert await index_rows(services, stored.log_partition) == []


async def test_records_written_together_share_one_index_row_per_value(
    services: Services, account: str
) -> None:
    """A delivery costs two entities, not four: a transaction's records of one EventKey (and
    of one Subject) are listed in one row, whose RowKey ends with its newest record's; each
    record names its rows' suffixes (`Packed`) for the purge."""
    stored = await a_connection_of(services, account)
    partition, table = stored.log_partition, services.messages.table
    same = [
        dataclasses.replace(a_record(stored.uid, T0 - i * SECOND, account=account), subject="o/1")
        for i in range(20)
    ]
    await services.messages.add(partition, same)
    keys = [row_key(r.message.uid) for r in same]
    suffix = f"{keys[0]}_{hashlib.sha256(' '.join(keys).encode()).hexdigest()[:8]}"
    rows = [await table.get_entity(partition, k) for k in await index_rows(services, partition)]
    assert [r["RowKey"] for r in rows] == [
        logsearch.value_prefix(logsearch.EVENT_KEY, "Order.Shipped") + suffix,
        logsearch.value_prefix(logsearch.SUBJECT, "o/1") + suffix,
    ]
    assert rows[0][logsearch.RECORDS].split(" ") == [f"{k}:1" for k in keys]
    assert rows[1][logsearch.RECORDS].split(" ") == [f"{k}:1:Order.Shipped" for k in keys]
    oldest = await table.get_entity(partition, keys[-1])
    assert oldest[logsearch.PACKED] == f"{suffix} {suffix}"


async def test_records_spread_in_time_still_share_transactions(
    services: Services, account: str
) -> None:
    """A bulk write of records minutes apart (a fill, older records) is not cut into one
    transaction per record: the writer counts a row per record for a value spread past
    SPAN_MS, packs what it can, and every transaction holds at most 100 operations."""
    stored = await a_connection_of(services, account)
    sizes: list[int] = []

    async def counted(table: Any, operations: Any) -> None:
        sizes.append(len(operations))
        await transactions.submit_one(table, operations)

    log = MessageLog(services.messages.table, services.messages.bodies, submit=counted)
    spread, close = records(stored, 30, gap=5 * MINUTE), records(stored, 40, gap=SECOND)
    await log.add(stored.log_partition, spread + close)
    assert len(sizes) <= 4 and max(sizes) <= transactions.MAX_OPERATIONS, sizes
    for query in ({"subject": "a"}, {"event_key": "Order.*", "until": T0 - 30 * SECOND}):
        assert await found(services, stored, **query) == truth(spread + close, **query)


@pytest.mark.parametrize(
    "retried",
    [slice(0, 10), slice(1, None)],
    ids=["newest with fewer of the others", "all but the newest"],
)
async def test_a_retry_of_part_of_a_transaction_finds_each_record_once(
    services: Services, account: str, retried: slice
) -> None:
    """A transaction whose answer was lost, retried with its records grouped otherwise: its
    newest record with fewer of the others makes a row of its own (the digest of the keys
    listed), so the first row, still listing the records not retried, stays; without its
    newest, two rows list the same records (a row's RowKey is its newest record's). Either
    way each record is found, and once."""
    stored = await a_connection_of(services, account)
    written = records(stored, 20, gap=SECOND)
    table, bodies = services.messages.table, services.messages.bodies
    lost = MessageLog(table, bodies, submit=Failing(1, after_sending=True))
    with pytest.raises(ConnectionError):
        await lost.add(stored.log_partition, written)
    await lost.add(stored.log_partition, written[retried])
    for query in ({"subject": "a"}, {"event_key": "Order.*"}, {"status": SUCCEEDED}):
        assert await found(services, stored, **query) == truth(written, **query), query


def test_packed_rows_span_at_most_span_ms_and_list_at_most_max_packed() -> None:
    """`log reindex` packs an hour's records: one value's rows split by time and by count,
    each record listed once, each row's RowKey ending with its newest record's."""
    made: list[dict[str, Any]] = [
        {"RowKey": row_key(uuid7(T0 - i * step)), "EventKey": key, "Status": 1}
        for key, step in (("Slow.Key", SECOND), ("Fast.Key", SECOND / 10))
        for i in range(150)
    ]
    operations, packed = logsearch.packed("p", made)
    lists = [op[1][logsearch.RECORDS].split(" ") for op in operations]
    keys = [entry.split(":")[0] for entries in lists for entry in entries]
    assert sorted(keys) == sorted(r["RowKey"] for r in made)
    for op, entries in zip(operations, lists, strict=True):
        times = [logged_at({"RowKey": e.split(":")[0]}) for e in entries]
        assert len(entries) <= logsearch.MAX_PACKED and max(times) - min(times) <= 60_000
        suffix = op[1]["RowKey"].split("_", 3)[3]  # after x_k_<key>_
        assert suffix.startswith(min(e.split(":")[0] for e in entries))
        assert all(packed[e.split(":")[0]] == suffix for e in entries)
    # 150 s of Slow.Key: 61, 61 and 28 records (by time); 15 s of Fast.Key: 100 and 50
    assert sorted(len(entries) for entries in lists) == [28, 50, 61, 61, 100]


async def test_until_finds_records_listed_in_rows_that_begin_after_it(
    services: Services, account: str
) -> None:
    """A packed row's RowKey is its newest record's: `until` reads SPAN_MS further, `since`
    and `until` keep exactly the records in the window, and an `until` anywhere is exact."""
    stored = await a_connection_of(services, account)
    written = records(stored, 40, gap=5 * SECOND)
    await services.messages.add(stored.log_partition, written)
    first_layout = len(written) + len([r for r in written if r.subject]) + len(written) // 5
    assert len(await index_rows(services, stored.log_partition)) < first_layout / 1.5
    for r in written[::3]:
        at = r.message.request_timestamp
        for query in (
            {"event_key": "Order.*", "until": at},
            {"subject": "a", "since": at - 50 * SECOND, "until": at},
            {"event_key": "System.Test", "status": SUCCEEDED, "since": at},
        ):
            assert await found(services, stored, **query) == truth(written, **query), query


async def test_total_hits_stop_at_the_limit_across_packed_rows(
    services: Services, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading stops once no row can list a key among the first SEARCH_LIMIT + 1 (a row lists
    records up to SPAN_MS older than its RowKey): the count and pages stay exact."""
    monkeypatch.setattr(logsearch, "SEARCH_LIMIT", 10)
    stored = await a_connection_of(services, account)
    written = [
        dataclasses.replace(
            a_record(stored.uid, T0 - i * SECOND, FAILED if i % 5 else SUCCEEDED, account=account),
            subject="o/1",
        )
        for i in range(60)
    ]
    for half in (written[::2], written[1::2]):  # two writers: their rows' times overlap
        await services.messages.add(stored.log_partition, half)
    for query in (
        {"event_key": "Order.Shipped"},
        {"subject": "o/1", "status": FAILED},
        {"event_key": "Order.*", "status": SUCCEEDED},
    ):
        want = truth(written, **query)
        page = await messages.list_messages(
            services, stored, MessageQuery(page=2, page_size=4, **query)
        )
        assert page.total_hits == min(len(want), 10), query
        assert [m.uid.hex for m in page.messages] == want[4:8], query


async def as_first_layout(services: Services, partition: str, written: list[LoggedMessage]) -> None:
    """Index rows as the first layout wrote them: one per record and value, holding Status
    (and EventKey, by Subject), the record without `Packed`."""
    table = services.messages.table
    for key in await index_rows(services, partition):
        if not key.startswith("x_f_"):
            await table.delete_entity(partition, key)
    for r in written:
        entity = await table.get_entity(partition, row_key(r.message.uid))
        del entity[logsearch.PACKED]
        await table.upsert_entity(entity, mode="replace")
        key, status, event_key = entity["RowKey"], entity["Status"], entity["EventKey"]
        rows = [(logsearch.EVENT_KEY, event_key, {"Status": status})]
        if r.subject is not None:
            rows.append((logsearch.SUBJECT, r.subject, {"Status": status, "EventKey": event_key}))
        for tag, value, properties in rows:
            row_key_ = logsearch.value_prefix(tag, value) + key
            await table.upsert_entity({"PartitionKey": partition, "RowKey": row_key_, **properties})


async def test_rows_of_the_first_layout_are_read_beside_packed_ones(
    services: Services, account: str
) -> None:
    """Rows written before packing (one record each, its key the suffix) are read as they
    are: no migration, they expire with their records."""
    stored = await a_connection_of(services, account)
    partition = stored.log_partition
    older = records(stored, 30, gap=7 * SECOND)
    await services.messages.add(partition, older)
    await as_first_layout(services, partition, older)
    newer = records(stored, 30, gap=7 * SECOND)  # the same times, a µs apart: interleaved
    await services.messages.add(partition, newer)
    written = older + newer
    for query in (
        {"subject": "a"},
        {"event_key": "Order.*", "status": SUCCEEDED},
        {"subject": "orders/7", "event_key": "Order.Shipped"},
        {"event_key": "Employee.Created", "only_failed": True},
        {"event_key": "Order.*", "since": T0 - 90 * SECOND, "until": T0 - 20 * SECOND},
    ):
        assert await found(services, stored, **query) == truth(written, **query), query


async def index_rows(services: Services, partition: str) -> list[str]:
    rows = services.messages.table.query_entities(
        "PartitionKey eq @pk and RowKey ge 'x_' and RowKey lt 'x`'", parameters={"pk": partition}
    )
    return [e["RowKey"] async for e in rows]


async def attempts(
    services: Services, stored: StoredConnection, event_id: str, n: int
) -> list[LoggedMessage]:
    """`n` attempts of one event's delivery to the connection (failed but the last), written
    one after the other as the dispatcher writes them."""
    mid = message_id(stored.account, event_id, stored.uid)
    made = []
    for i in range(n):
        failed = i < n - 1
        r = a_record(stored.uid, T0 + i * MINUTE, FAILED if failed else SUCCEEDED)
        metadata = RequestMetadata.model_validate_json(r.message.request_metadata)
        text = metadata.model_copy(update={"message_id": mid, "attempt": i + 1}).to_text()
        before = await services.messages.delivery(stored.log_partition, mid)
        after = before.after(row_key(r.message.uid), failed, None, None)
        message = r.message.model_copy(update={"request_metadata": text, "is_retry": i > 0})
        record = LoggedMessage(
            message, stored.account, event_id, "orders/1", DeliveryWrite(after, before)
        )
        await services.messages.add(stored.log_partition, [record])
        made.append(record)
    return made


async def test_event_id_and_message_id_read_the_delivery_with_every_attempt(
    services: Services, account: str
) -> None:
    """Point reads of its delivery's row and records, filtered like the index ranges; past
    MAX_RECORDS attempts, the ones the row forgot are found by EventId between the two it
    kept. No index row is needed: they are deleted first."""
    stored = await a_connection_of(services, account)
    many = await attempts(services, stored, "evt-many", MAX_RECORDS + 3)
    few = await attempts(services, stored, "evt-few", 3)
    others = records(stored, 4)
    await services.messages.add(stored.log_partition, others)
    for key in await index_rows(services, stored.log_partition):
        await services.messages.table.delete_entity(stored.log_partition, key)
    newest_first = [r.message.uid.hex for r in reversed(many)]
    mid = message_id(account, "evt-few", stored.uid)

    assert await found(services, stored, event_id="evt-many") == newest_first
    assert await found(services, stored, message_id=mid) == [r.message.uid.hex for r in few[::-1]]
    assert await found(services, stored, event_id="evt-few", status=FAILED) == [
        r.message.uid.hex for r in few[1::-1]
    ]
    assert await found(services, stored, event_id="evt-few", only_failed=True) == [
        r.message.uid.hex for r in few[1::-1]
    ]
    assert await found(services, stored, event_id="evt-few", event_key="Employee.*") == []
    assert await found(services, stored, event_id="evt-few", subject="orders/1") != []
    assert await found(services, stored, event_id="evt-few", until=T0 + MINUTE) == [
        r.message.uid.hex for r in few[1::-1]
    ]
    assert await found(services, stored, event_id="evt-many", message_id=mid) == []
    assert await found(services, stored, event_id="no-such-event") == []
    assert await found(services, stored, event_id=others[2].event_id) == [others[2].message.uid.hex]


@pytest.mark.parametrize("gap", [2 * MINUTE, timedelta(seconds=7)], ids=["apart", "packed"])
async def test_reindex_writes_the_rows_of_records_written_without_them(
    services: Services, account: str, gap: timedelta
) -> None:
    """Packed like the writer's, and each record names its rows (the purge's keys)."""
    stored = await a_connection_of(services, account)
    partition, table = stored.log_partition, services.messages.table
    written = records(stored, 20, gap=gap)
    await services.messages.add(partition, written)
    # as records written before the log kept an index: no rows, no `Indexed`
    for key in await index_rows(services, partition):
        await table.delete_entity(partition, key)
    for r in written:
        entity = await table.get_entity(partition, row_key(r.message.uid))
        del entity["Indexed"], entity[logsearch.PACKED]
        await table.upsert_entity(entity, mode="replace")
    assert await found(services, stored, subject="a") == []

    assert await index_partition(table, partition) == len(written)
    entities = [await table.get_entity(partition, row_key(r.message.uid)) for r in written]
    named = {k for e in entities for k in logsearch.index_keys(e)}
    assert named == set(await index_rows(services, partition))
    for query in ({"subject": "a"}, {"event_key": "Order.*", "status": FAILED}):
        assert await found(services, stored, **query) == truth(written, **query)
    assert await index_partition(table, partition) == 0  # once done, nothing more


def test_the_query_model_checks_each_search_value() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"eventId": ""}, "EventId"),
        ({"eventId": "a\x00b"}, "EventId"),
        ({"eventId": "x" * 129}, "EventId"),
        ({"subject": "x" * 1025}, "Subject"),
        ({"eventId": "a/b"}, "EventId"),  # no EventId holds it
        ({"messageId": "\x7f"}, "MessageId"),
        ({"eventKey": "Order/Shipped"}, "EventKey"),
        ({"eventKey": "Order.**"}, "EventKey"),
        ({"status": "3"}, "Status"),
        ({"onlyFailed": "true", "status": "1"}, "Status"),
    ]
    for params, field in bad:
        with pytest.raises(ValidationError) as raised:
            MessageQuery.model_validate(params)
        names = [".".join(str(p) for p in e["loc"]) for e in raised.value.errors()]
        assert any(field.lower() in n.lower().replace("_", "") for n in names), (params, names)
    good = MessageQuery.model_validate({"eventKey": "Order.*", "status": "2", "subject": "a/b#?"})
    assert good.status == FAILED and good.event_key == "Order.*"


def test_the_service_checks_rules_between_parameters() -> None:
    def refused(query: MessageQuery) -> str:
        with pytest.raises(InvalidField) as raised:
            messages.check_query(query)
            messages.event_keys(query.event_key)
        return raised.value.field

    assert refused(MessageQuery(undelivered=True, subject="x")) == "Subject"
    assert refused(MessageQuery(event_key="Order.*", page=21, page_size=500)) == "Page"
    assert refused(MessageQuery(event_key="Nothing.*")) == "EventKey"  # no catalog key
    messages.check_query(MessageQuery(page=21, page_size=500))  # a listing reaches further
    assert messages.event_keys("order.*") == ("Order.Created", "Order.Shipped", "Order.Cancelled")
    assert messages.event_keys("*") is None


async def test_one_message_one_delivery_and_a_bad_window_without_http(
    services: Services, account: str
) -> None:
    stored = await a_connection_of(services, account)
    [record] = records(stored, 1)
    await services.messages.add(stored.log_partition, [record])
    got = await messages.get_message(services, stored, record.message.uid)
    assert got.uid == record.message.uid and got.message_body == record.message.message_body
    mid = message_id(account, record.event_id, stored.uid)
    delivery = await messages.get_delivery(services, stored, mid)
    assert [m.uid for m in delivery.messages] == [record.message.uid]
    with pytest.raises(NotFound):
        await messages.get_message(services, stored, uuid7(T0))
    with pytest.raises(NotFound):
        await messages.get_delivery(services, stored, str(uuid.uuid4()))
    with pytest.raises(InvalidField):
        old = services.clock() - timedelta(days=30)
        await messages.list_messages(services, stored, MessageQuery(since=old))


async def test_search_over_http_and_a_bad_value_is_a_problem_naming_it(api: Api) -> None:
    created = await create(api, CONNECTION_STRING, "q")
    path = f"/v1/azureservicebusconnections/{created['Uid']}/messages"
    status, page = await api.call("GET", path, params={"eventKey": "Order.*", "status": "2"})
    assert (status, page["TotalHits"], page["Messages"]) == (200, 0, [])
    for odd in [  # valid, and awkward in a filter or a key: answered, never a 500
        {"eventId": "it's", "subject": "s"},
        {"subject": "' or PartitionKey ne '"},
        {"subject": "x" * 1024, "eventKey": "Order.*", "status": "1"},
        {"messageId": "Zürich ✓", "onlyFailed": "true"},
        {"eventKey": "_Not.In.The.Catalog"},
    ]:
        status, page = await api.call("GET", path, params=odd)
        assert (status, page["TotalHits"]) == (200, 0), (odd, page)
    for params, field in [
        ({"eventId": "a#b"}, "EventId"),
        ({"undelivered": "true", "eventId": "e"}, "EventId"),
        ({"eventKey": "Nothing.*"}, "EventKey"),
    ]:
        status, problem = await api.call("GET", path, params=params)
        assert status == 400 and field in problem["errors"], problem


async def test_a_delivery_the_dispatcher_made_is_found_by_each_filter_over_http(
    api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    """The write path as it runs: a test event sent through the emulator, then searched for."""
    created = await create(api, servicebus_connection_string, unique_queue)
    uid = created["Uid"]
    status, sent = await api.call("POST", f"/v1/azureservicebusconnections/{uid}/test")
    assert status == 200 and sent["Status"] == 1, sent
    metadata = json.loads(sent["RequestMetadata"])
    path = f"/v1/azureservicebusconnections/{uid}/messages"
    for params in [
        {"messageId": metadata["MessageId"]},
        {"subject": f"connections/{uid}/test"},
        {"eventKey": "System.*", "status": "1", "includeBody": "false"},
        {"eventKey": "system.test", "subject": f"connections/{uid}/test"},
    ]:
        status, page = await api.call("GET", path, params=params)
        assert status == 200 and page["TotalHits"] == 1, (params, page)
        assert page["Messages"][0]["Uid"] == sent["Uid"], params
    status, page = await api.call("GET", path, params={"eventKey": "System.*", "status": "2"})
    assert (status, page["TotalHits"]) == (200, 0)


async def test_a_log_read_takes_the_connection_kept_briefly_and_sees_a_delete_here_at_once(
    services: Services, account: str
) -> None:
    """Issue 26: a search reads the connection from `recent` (kept `connection_cache_seconds`):
    the process that deletes it answers NotFound at once, another one within the lifetime; a
    connection of another account is never answered, and NotFound is never kept."""
    table = await services.storage.table(CONNECTIONS_TABLE)
    keys = KeyRing(services.settings.encryption_keys)
    seconds = [0.0]  # the other process's timer
    here = ConnectionRepository(table, keys, recent_seconds=5)
    elsewhere = ConnectionRepository(table, keys, recent_seconds=5, timer=lambda: seconds[0])
    connection = a_connection()
    with pytest.raises(NotFound):
        await elsewhere.recent(account, connection.uid)
    stored = await here.add(account, connection, T0)
    assert (await elsewhere.recent(account, connection.uid)).log_partition == stored.log_partition
    assert (await here.recent(account, connection.uid)).log_partition == stored.log_partition
    with pytest.raises(NotFound):
        await here.recent(f"{account}-other", connection.uid)

    await here.delete(account, connection.uid, T0)
    with pytest.raises(NotFound):
        await here.recent(account, connection.uid)
    assert (await elsewhere.recent(account, connection.uid)).uid == connection.uid  # kept
    seconds[0] += 5
    with pytest.raises(NotFound):
        await elsewhere.recent(account, connection.uid)

    again = await here.add(account, connection, T0)  # the same Uid made again: a new log
    assert (await here.recent(account, connection.uid)).log_partition == again.log_partition
    assert again.log_partition != stored.log_partition


async def test_a_deleted_connections_log_is_a_404_at_once_over_http(api: Api) -> None:
    created = await create(api, CONNECTION_STRING, "q")
    connection = f"/v1/azureservicebusconnections/{created['Uid']}"
    assert (await api.call("GET", connection + "/messages", params={"eventId": "e"}))[0] == 200
    assert (await api.call("DELETE", connection))[0] in (200, 204)
    for path in ("/messages", f"/deliveries/{uuid.uuid4()}", f"/messages/{uuid7(T0)}"):
        status, problem = await api.call("GET", connection + path)
        assert status == 404, (path, problem)


async def test_a_search_by_delivery_hides_what_the_retention_no_longer_keeps_by_the_clock(
    services: Services, account: str
) -> None:
    """Issue 26: no read of the purge's mark; what is older than the retention's cutoff now
    (whole hours, as the purge cuts) is left out, whether or not a purge removed it yet."""
    now = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    clocked = dataclasses.replace(services, clock=lambda: now)
    stored = await a_connection_of(clocked, account)
    cutoff = log_cutoff(now, services.settings.retention_days)
    assert cutoff == now.replace(minute=0) - timedelta(days=services.settings.retention_days)
    old, kept = (
        a_record(stored.uid, at, SUCCEEDED, account=account)
        for at in (cutoff - MINUTE, cutoff + MINUTE)
    )
    await services.messages.add(stored.log_partition, [old, kept])
    # a mark that would hide everything, were it read
    mark = {"PartitionKey": stored.log_partition, "RowKey": PURGED, "Before": now}
    await services.messages.table.upsert_entity(mark)
    assert await found(clocked, stored, event_id=kept.event_id) == [kept.message.uid.hex]
    assert await found(clocked, stored, event_id=old.event_id) == []


class CountedReads:
    """The real table client, counting the reads made through it (a spy, not a fake)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("get_entity", "query_entities"):
            self.reads += 1
        return getattr(self._table, name)


async def test_a_delivery_of_one_attempt_is_one_read_from_its_rows_copy(
    services: Services, account: str
) -> None:
    """Issue 26: the delivery row holds a copy of its latest record, so a search by EventId or
    MessageId of a delivery of one attempt is one point read, with or without its body; a body
    over COPIED_BODY_CHARS stays out of the copy (the record is read for it); a row written
    before the copy still serves, from its records; the record's own marks are not copied."""
    stored = await a_connection_of(services, account)
    partition, table = stored.log_partition, services.messages.table
    small, large = (
        a_record(stored.uid, T0 - i * MINUTE, account=account, body=body)
        for i, body in enumerate(['{"a": 1}', "x" * (COPIED_BODY_CHARS + 1)])
    )
    await services.messages.add(partition, [small, large])
    several = await attempts(services, stored, "evt-three", 3)
    counted = CountedReads(table)
    log = MessageLog(counted, services.messages.bodies)  # type: ignore[arg-type]
    kept_from = log_cutoff(services.clock(), services.settings.retention_days)

    async def search(record: LoggedMessage, by: str, include_body: bool) -> tuple[list[Any], int]:
        mid = message_id(account, record.event_id, stored.uid)
        query = (
            MessageQuery(event_id=record.event_id, include_body=include_body)
            if by == "event_id"
            else MessageQuery(message_id=mid, include_body=include_body)
        )
        terms = messages.search_terms(stored, query, kept_from)
        counted.reads = 0
        page = await log.page(partition, query, terms)
        return [(m.uid, m.message_body) for m in page.messages], counted.reads

    for by in ("event_id", "message_id"):
        assert await search(small, by, True) == ([(small.message.uid, '{"a": 1}')], 1)
        assert await search(small, by, False) == ([(small.message.uid, None)], 1)
        assert await search(large, by, False) == ([(large.message.uid, None)], 1)
        body = large.message.message_body
        assert await search(large, by, True) == ([(large.message.uid, body)], 2)
    newest_first = [(r.message.uid, r.message.message_body) for r in reversed(several)]
    assert await search(several[0], "event_id", True) == (newest_first, 3)  # + the 2 earlier

    row = await table.get_entity(partition, "d_" + message_id(account, small.event_id, stored.uid))
    assert row["RecordKey"] == row_key(small.message.uid) and row["MessageBody"] == '{"a": 1}'
    assert not {"Counted", "Indexed", "OpensDelivery"} & set(row)
    row = await table.get_entity(partition, "d_" + message_id(account, large.event_id, stored.uid))
    assert "MessageBody" not in row and row["RecordKey"] == row_key(large.message.uid)

    # a row as written before the copy: the delivery's state alone
    state = ("State", "Attempts", "Scheduled", "Records", "NextAttemptAt")
    old = {k: v for k, v in row.items() if k in state}
    await table.upsert_entity(
        {**old, "PartitionKey": partition, "RowKey": row["RowKey"]}, "replace"
    )
    assert await search(large, "event_id", True) == ([(large.message.uid, body)], 2)
    assert await search(large, "event_id", False) == ([(large.message.uid, None)], 2)
