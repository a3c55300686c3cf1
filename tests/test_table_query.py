"""shared/storage/tablequery.py against Azurite: what it reads is what the SDK's
`query_entities` reads (values, Edm types, etags), over every page, with parameters quoted."""

from __future__ import annotations

import logging
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


async def test_a_plain_client_reads_directly_and_alike(services: Services) -> None:
    """Without hooks, tracing or the SDK's request log, a page is signed by the client's own
    credential policy and sent on its session (no pipeline), and reads what the SDK reads."""
    table = await services.storage.table("tablequerytest")
    partition = f"direct {uuid.uuid4().hex[:8]}"
    for n in range(3):
        await table.create_entity({"PartitionKey": partition, "RowKey": f"r{n}", "N": n})
    flt, parameters = "PartitionKey eq @p", {"p": partition}
    url = f"{table.scheme}://{table._primary_hostname}/{table.table_name}()"
    assert await tablequery._sent_directly(table, url, {"Accept": "application/json"})
    ours = [e async for e in tablequery.query(table, flt, parameters, top=2)]  # two pages
    sdk = [e async for e in table.query_entities(flt, parameters=parameters)]
    assert ours == sdk and [e["N"] for e in ours] == [0, 1, 2]
    assert [e.metadata["etag"] for e in ours] == [e.metadata["etag"] for e in sdk]


HTTP_LOG = "azure.core.pipeline.policies.http_logging_policy"  # the SDK's request log


async def test_what_the_pipeline_observes_goes_through_the_pipeline(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's request log on, a hook or a network trace on the client: the direct send
    declines, so each still sees every request; the log turned on for a client that has
    sent directly already (its parts are kept per client, its log level is not)."""
    table = await services.storage.table("tablequerytest")
    url = f"{table.scheme}://{table._primary_hostname}/{table.table_name}()"
    caplog.set_level(logging.WARNING, logger=HTTP_LOG)
    assert await tablequery._sent_directly(table, url, {"Accept": "application/json"})
    caplog.set_level(logging.INFO, logger=HTTP_LOG)
    assert await tablequery._sent_directly(table, url, {}) is None
    [e async for e in tablequery.query(table, "PartitionKey eq @p", {"p": "none"})]
    assert any("Request URL" in r.getMessage() for r in caplog.records)
    caplog.set_level(logging.WARNING, logger=HTTP_LOG)
    hooked = services.storage.tables.get_table_client("tablequerytest", raw_response_hook=print)
    traced = services.storage.tables.get_table_client("tablequerytest", logging_enable=True)
    for client in (hooked, traced):
        assert await tablequery._sent_directly(client, url, {}) is None
