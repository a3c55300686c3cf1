"""Hand-built table transactions against Azurite, checked through the Tables SDK's own calls."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.services import Services
from shared.storage import transactions
from shared.storage.transactions import MAX_BODY_BYTES, MAX_OPERATIONS, TransactionError

NOW = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)


def entity(partition: str, row: str, **more: Any) -> dict[str, Any]:
    return {
        "PartitionKey": partition,
        "RowKey": row,
        "Text": "héllo \"quoted\" \\ 'single' \u2603 \U0001f600",
        "Count": 7,
        "Ratio": 0.25,
        "Flag": True,
        "When": NOW,
        **more,
    }


@pytest.fixture
async def table(services: Services) -> Any:
    name = f"tx{uuid.uuid4().hex[:12]}"
    client = await services.storage.table(name)
    yield client
    await services.storage.tables.delete_table(name)


async def test_what_a_transaction_writes_reads_back_as_the_sdk_writes_it(table: Any) -> None:
    partition = "p 'quoted' é+&=%"  # no '/': the service forbids it in keys
    ours = [entity(partition, f"ours-{i}'") for i in range(3)]
    await transactions.submit(table, [("upsert", e) for e in ours])
    sdk = entity(partition, "sdk")
    await table.upsert_entity(sdk)

    reference = dict(await table.get_entity(partition, "sdk"))
    del reference["RowKey"]
    for e in ours:
        back = dict(await table.get_entity(partition, e["RowKey"]))
        assert back.pop("RowKey") == e["RowKey"]
        assert back == reference
        assert back["When"] == NOW and back["Flag"] is True


async def test_an_upsert_merges_into_an_existing_entity(table: Any) -> None:
    await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Kept": "yes", "Count": 1})
    await transactions.submit(table, [("upsert", {"PartitionKey": "p", "RowKey": "r", "Count": 2})])
    back = await table.get_entity("p", "r")
    assert (back["Kept"], back["Count"]) == ("yes", 2)


async def test_more_than_one_transaction_of_operations_all_commit(table: Any) -> None:
    rows = [entity("p", f"{i:04d}") for i in range(2 * MAX_OPERATIONS + 50)]
    await transactions.submit(table, [("upsert", e) for e in rows])
    keys = [e["RowKey"] async for e in table.list_entities(select=["RowKey"])]
    assert keys == [e["RowKey"] for e in rows]

    await transactions.submit(table, [("delete", e) for e in rows[:150]])
    keys = [e["RowKey"] async for e in table.list_entities(select=["RowKey"])]
    assert keys == [e["RowKey"] for e in rows[150:]]


async def test_bodies_past_4_mib_are_split_and_all_commit(table: Any) -> None:
    # 100 entities of 30,000 three-byte characters: about 9 MB of JSON, over 4 MiB.
    rows = [entity("p", f"{i:03d}", Body="€" * 30_000) for i in range(MAX_OPERATIONS)]
    await transactions.submit(table, [("upsert", e) for e in rows])
    back = [e async for e in table.list_entities(select=["RowKey", "Body"])]
    assert len(back) == MAX_OPERATIONS
    assert all(e["Body"] == "€" * 30_000 for e in back)


def test_groups_keep_to_100_operations_and_4_mib() -> None:
    small = [b"x" * 100] * 250
    assert [len(g) for g in transactions.groups(small)] == [100, 100, 50]
    large = [b"x" * 1_000_000] * 9
    sizes = [len(g) for g in transactions.groups(large)]
    assert sum(sizes) == 9 and max(sizes) == 4
    assert all(sum(map(len, g)) < MAX_BODY_BYTES for g in transactions.groups(large))
    assert [len(g) for g in transactions.groups([b"x" * (5 * 2**20)])] == [1]  # alone, as is


async def test_a_refused_operation_fails_the_transaction_and_names_itself(table: Any) -> None:
    await table.upsert_entity(entity("p", "there"))
    operations: list[transactions.Operation] = [
        ("upsert", entity("p", "new")),
        ("delete", {"PartitionKey": "p", "RowKey": "there"}),
        ("delete", {"PartitionKey": "p", "RowKey": "missing"}),
    ]
    with pytest.raises(TransactionError) as refused:
        await transactions.submit(table, operations)
    assert (refused.value.status, refused.value.code) == (404, "ResourceNotFound")
    assert refused.value.index == 2
    keys = [e["RowKey"] async for e in table.list_entities(select=["RowKey"])]
    assert keys == ["there"]  # nothing of the transaction took effect


async def test_a_missing_table_is_an_error_not_a_silent_success(services: Services) -> None:
    missing = services.storage.tables.get_table_client(f"none{uuid.uuid4().hex[:10]}")
    with pytest.raises(TransactionError) as refused:
        await transactions.submit(missing, [("upsert", entity("p", "r"))])
    assert refused.value.status == 404


def test_properties_are_typed_as_the_sdk_types_them() -> None:
    """The fast path for strings, int32s and bools writes what the SDK's own conversion
    writes, in the same order; any other value goes through the SDK."""
    from enum import StrEnum

    from azure.data.tables._serialize import _add_entity_properties

    class Kind(StrEnum):
        A = "a"

    e = entity(
        "p",
        "r",
        Big=2**31 - 1,
        Low=-(2**31),
        Zero=0,
        Off=False,
        Nothing=None,
        Id=uuid.uuid4(),
        Raw=b"\x00\x01",
        Tagged=("5", "Edm.Int64"),
        Named=Kind.A,
        Empty="",
        When=datetime(2026, 12, 4, 10, 11, 12, 345678, tzinfo=UTC),
        Elsewhere=datetime(2026, 12, 4, 10, 11, tzinfo=timezone(timedelta(hours=2))),
    )
    expected = _add_entity_properties(e)
    got = transactions._properties({**e, transactions.ETAG: 'W/"x"'})  # the ETag is no property
    assert got == expected and list(got) == list(expected)


def test_keys_are_encoded_only_when_they_need_it() -> None:
    assert (
        transactions._key("x_k_Order.Created_0123456789_a-b~c")
        == "x_k_Order.Created_0123456789_a-b~c"
    )
    assert transactions._key("it's a/b") == "it%27%27s%20a%2Fb"
    assert transactions._key("x_k_Order!5FCreated_01") == "x_k_Order%215FCreated_01"
