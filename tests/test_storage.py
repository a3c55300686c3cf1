"""Repositories against Azurite: connections with sealed secrets, API keys, the message log."""

import asyncio
import json
import uuid
from datetime import timedelta

import pytest

from shared.clock import uuid7
from shared.errors import Conflict, InvalidField, NotFound
from shared.models.records import MessageQuery, MessageStatus
from shared.services import Services
from shared.storage.logrecords import MAX_PROPERTY_CHARS
from tests.factories import NOW, SB, a_connection, a_record, uncached_api_keys


async def test_secrets_are_sealed_at_rest_and_masked_on_the_way_out(
    services: Services, account: str
) -> None:
    stored = await services.connections.add(account, a_connection(), NOW)
    raw = await services.storage.tables.get_table_client("connections").get_entity(
        account, str(stored.uid)
    )
    assert "S3CRET" not in json.dumps(dict(raw), default=str)
    again = await services.connections.get(account, stored.uid)
    assert again.connection.service_bus_connection_string == SB
    assert "S3CRET" not in str(again.masked().service_bus_connection_string)
    assert "SharedAccessKey=***" in str(again.masked().service_bus_connection_string)


async def test_duplicate_uid_conflicts_and_other_accounts_do_not_see_it(
    services: Services, account: str
) -> None:
    connection = a_connection()
    await services.connections.add(account, connection, NOW)
    with pytest.raises(Conflict):
        await services.connections.add(account, connection, NOW)
    with pytest.raises(NotFound):
        await services.connections.get("someone-else", connection.uid)
    assert [c.uid for c in await services.connections.for_account(account)] == [connection.uid]
    assert await services.connections.for_account("someone-else") == []


async def test_replace_keeps_a_masked_secret_and_takes_a_new_one(
    services: Services, account: str
) -> None:
    stored = await services.connections.add(account, a_connection(), NOW)
    masked = stored.masked().model_copy(update={"queue_name": "renamed"})
    replaced = await services.connections.replace(account, masked, NOW)
    assert replaced.connection.service_bus_connection_string == SB
    assert replaced.connection.queue_name == "renamed"
    assert replaced.log_partition == stored.log_partition
    new_key = SB.replace("S3CRET=", "N3W=")
    changed = await services.connections.replace(
        account, masked.model_copy(update={"service_bus_connection_string": new_key}), NOW
    )
    assert changed.connection.service_bus_connection_string == new_key
    no_blob_secret = masked.model_copy(
        update={
            "blob_container_connection_string": "AccountName=x;AccountKey=***",
            "blob_container_name": "abc",
        }
    )
    with pytest.raises(InvalidField) as error:
        await services.connections.replace(account, no_blob_secret, NOW)
    assert error.value.field == "BlobContainerConnectionString"
    with pytest.raises(NotFound):
        await services.connections.replace(account, a_connection(), NOW)


async def test_delete_leaves_a_tombstone_and_a_new_connection_gets_a_new_log(
    services: Services, account: str
) -> None:
    stored = await services.connections.add(account, a_connection(), NOW)
    await services.connections.delete(account, stored.uid, NOW)
    with pytest.raises(NotFound):
        await services.connections.get(account, stored.uid)
    with pytest.raises(NotFound):
        await services.connections.delete(account, stored.uid, NOW)
    assert stored.log_partition in {t["RowKey"] for t in await services.connections.tombstones()}
    again = await services.connections.add(account, stored.connection, NOW)
    assert again.log_partition != stored.log_partition


async def test_api_keys_are_stored_as_hashes_and_revocable(
    services: Services, account: str
) -> None:
    key, info = await services.api_keys.create(account, NOW)
    assert await services.api_keys.account_of(key) == account
    assert await services.api_keys.account_of(f"Bearer {key}") == account
    assert await services.api_keys.account_of(f"bearer   {key} ") == account
    assert await services.api_keys.account_of(key + "x") is None
    assert await services.api_keys.account_of(None) is None
    table = services.storage.tables.get_table_client("apikeys")
    assert key not in json.dumps([dict(e) async for e in table.list_entities()], default=str)
    assert [k.key_id for k in await services.api_keys.for_account(account)] == [info.key_id]
    await services.api_keys.revoke(info.key_id)
    # Another process, or this one after CACHE_SECONDS, asks the table again.
    assert await (await uncached_api_keys(services)).account_of(key) is None
    with pytest.raises(NotFound):
        await services.api_keys.revoke(info.key_id)
    with pytest.raises(ValueError):
        await services.api_keys.create("no spaces allowed", NOW)


async def test_message_log_pages_newest_first_with_total_hits(services: Services) -> None:
    partition, connection_uid = uuid.uuid4().hex, uuid.uuid4()
    records = [
        a_record(
            connection_uid,
            NOW + timedelta(seconds=i),
            MessageStatus.FAILED if i % 3 == 0 else MessageStatus.SUCCEEDED,
        )
        for i in range(250)
    ]
    await services.messages.add(partition, records)
    newest_first = [r.message.uid for r in reversed(records)]

    page = await services.messages.page(partition, MessageQuery(page_size=100))
    assert page.total_hits == 250 and [m.uid for m in page.messages] == newest_first[:100]
    third = await services.messages.page(partition, MessageQuery(page=3, page_size=100))
    assert [m.uid for m in third.messages] == newest_first[200:]
    beyond = await services.messages.page(partition, MessageQuery(page=4, page_size=100))
    assert beyond.messages == [] and beyond.total_hits == 250

    failed = await services.messages.page(partition, MessageQuery(only_failed=True, page_size=500))
    assert failed.total_hits == 84
    assert all(m.status == MessageStatus.FAILED for m in failed.messages)

    since = await services.messages.page(
        partition, MessageQuery(since=NOW + timedelta(seconds=239, milliseconds=500))
    )
    assert [m.uid for m in since.messages] == newest_first[:10]

    one = await services.messages.get(partition, records[7].message.uid)
    assert one.message == records[7].message
    with pytest.raises(NotFound):
        await services.messages.get(partition, uuid7(NOW))
    with pytest.raises(NotFound):
        await services.messages.get(uuid.uuid4().hex, records[7].message.uid)


async def test_bodies_too_large_for_a_table_property_go_to_blob(services: Services) -> None:
    partition = uuid.uuid4().hex
    body = json.dumps({"Data": "é" * (MAX_PROPERTY_CHARS + 10)})
    record = a_record(uuid.uuid4(), NOW, MessageStatus.SUCCEEDED, body)
    await services.messages.add(partition, [record])
    assert (await services.messages.get(partition, record.message.uid)).message.message_body == body
    page = await services.messages.page(partition, MessageQuery())
    assert page.messages[0].message_body == body


async def test_concurrent_replaces_all_succeed_and_the_last_one_wins(
    services: Services, account: str
) -> None:
    stored = await services.connections.add(account, a_connection(), NOW)
    masked = stored.masked()
    titles = [f"title {i}" for i in range(8)]
    results = await asyncio.gather(
        *(
            services.connections.replace(account, masked.model_copy(update={"title": t}), NOW)
            for t in titles
        )
    )
    assert {r.connection.title for r in results} == set(titles)
    final = await services.connections.get(account, stored.uid)
    assert final.connection.title in titles
    assert final.connection.service_bus_connection_string == SB


async def test_concurrent_identical_listings_agree(services: Services) -> None:
    partition = uuid.uuid4().hex
    records = [
        a_record(uuid.uuid4(), NOW + timedelta(milliseconds=i), MessageStatus.SUCCEEDED)
        for i in range(30)
    ]
    await services.messages.add(partition, records)
    pages = await asyncio.gather(
        *(services.messages.page(partition, MessageQuery(page_size=5)) for _ in range(8))
    )
    assert all(p.total_hits == 30 and len(p.messages) == 5 for p in pages)
    await services.messages.add(partition, [a_record(uuid.uuid4(), NOW, MessageStatus.FAILED)])
    assert (await services.messages.page(partition, MessageQuery())).total_hits == 31
