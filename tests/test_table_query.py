"""shared/storage/tablequery.py against Azurite: what it reads is what the SDK's
`query_entities` reads (values, Edm types, etags), over every page, with parameters quoted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty

from shared.services import Services
from shared.storage import tablequery


async def test_a_query_reads_every_page_as_the_sdk_does(
    services: Services, storage_connection_string: str
) -> None:
    from azure.data.tables.aio import TableClient

    await services.storage.table("tablequerytest")  # made once
    pages: list[str] = []
    table = TableClient.from_connection_string(
        storage_connection_string,
        "tablequerytest",
        raw_response_hook=lambda r: pages.append(r.http_request.url),
    )
    partition = f"O'Brien {uuid.uuid4().hex[:8]}"  # a quote: parameters are escaped
    for n in range(3):
        await table.create_entity(
            {
                "PartitionKey": partition,
                "RowKey": f"r{n}",
                "When": datetime(2026, 12, 3, 10, n, tzinfo=UTC),
                "Big": EntityProperty(2**40 + n, EdmType.INT64),
                "Small": n,
                "Flag": n % 2 == 0,
                "Text": "a ~ b & c",
            }
        )
    await table.create_entity({"PartitionKey": partition + "x", "RowKey": "other"})
    flt = "PartitionKey eq @p and RowKey ge @low"
    parameters = {"p": partition, "low": "r0"}
    pages.clear()
    ours = [e async for e in tablequery.query(table, flt, parameters, top=1)]
    assert len(pages) >= 3, pages  # a row a page: the continuation was followed
    sdk = [e async for e in table.query_entities(flt, parameters=parameters)]
    await table.close()
    assert [e["RowKey"] for e in ours] == ["r0", "r1", "r2"]
    assert ours == sdk
    assert [e.metadata["etag"] for e in ours] == [e.metadata["etag"] for e in sdk]
    assert isinstance(ours[0]["When"], datetime) and ours[2]["Big"].value == 2**40 + 2


async def test_a_query_of_a_missing_table_is_not_found(services: Services) -> None:
    missing = services.storage.tables.get_table_client(f"missing{uuid.uuid4().hex[:8]}")
    with pytest.raises(ResourceNotFoundError):
        [e async for e in tablequery.query(missing, "PartitionKey eq @p", {"p": "a"})]
