"""A table query sent through the table client's own pipeline, its answer parsed here.

`TableClient.query_entities` builds each request with the generated client's serializer and
reads each page with its deserializer and paging wrappers: measured here, 1.4-1.7 ms of CPU
for a query answering one row, against 1.1-1.3 ms when the same request is sent with
`send_request` and the JSON read with `json.loads` (1,000 queries on Azurite, 2026-12-03).
On a GET of a connection that difference is about a sixth of the local host's CPU. The
pipeline (authentication, retries, logging) is the client's; the URL and the reading are
ours. As in shared/storage/transactions.py, the pipeline is reached through private
attributes (`TableClient._client._client`, the generated client's `AsyncPipelineClient`; the
Tables SDK is pinned in requirements.txt). Where the pipeline would only send, a page
skips it (`_sent_directly`: signed by the client's own credential policy, sent on its own
aiohttp session). Each entity is made by the SDK's own converter, so what callers get is
what `query_entities` gives: a `TableEntity` with its Edm types and its `metadata` (etag,
timestamp).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.sdktracing import traced

if TYPE_CHECKING:
    from azure.data.tables import TableEntity
    from azure.data.tables.aio import TableClient

NEXT_KEYS = ("NextPartitionKey", "NextRowKey")  # continuation, as headers and query options
REQUEST_ID = "x-ms-client-request-id"  # as the pipeline's RequestIdPolicy sends it


async def query(
    table: TableClient, query_filter: str, parameters: Mapping[str, Any], top: int | None = None
) -> AsyncIterator[TableEntity]:
    """The entities matching `query_filter` (`@name` replaced by its quoted parameter, as
    `query_entities` does), every page of them; `top`: at most that many a page."""
    async for row in rows(table, query_filter, parameters, top):
        yield entity(row)


def entity(row: Mapping[str, Any]) -> TableEntity:
    """A row as the service sent it (`rows`), as the SDK's entity."""
    from azure.data.tables._deserialize import _convert_to_entity

    return _convert_to_entity(row)


def etag(row: Mapping[str, Any]) -> str | None:
    """A row's etag as the service sent it, i.e. `entity(row).metadata["etag"]`."""
    value = row.get("odata.etag")
    return None if value is None else str(value)


async def rows(
    table: TableClient, query_filter: str, parameters: Mapping[str, Any], top: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """As `query`, each row as the service sent it (JSON with `odata.etag` and `@odata.type`
    annotations), for a caller that converts only some of them (`entity`)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.core.rest import HttpRequest
    from azure.data.tables._serialize import _parameter_filter_substitution

    substituted = _parameter_filter_substitution(dict(parameters), query_filter)
    url = f"{table.scheme}://{table._primary_hostname}/{table.table_name}()"
    url += f"?$filter={quote(substituted, safe='')}" + (f"&$top={top}" if top else "")
    headers = {
        "x-ms-version": table.api_version,
        "DataServiceVersion": "3.0",
        "MaxDataServiceVersion": "3.0;NetFx",
        "Accept": "application/json;odata=minimalmetadata",  # etags and Edm types
    }
    page = url
    while True:
        answer = await _sent_directly(table, page, headers)
        if answer is None:
            # The pipeline client itself: the generated client's `send_request` deep-copies
            # each request first (4% of a GET's host CPU), needless for one made here.
            pipeline = table._client._client
            response = await pipeline.send_request(HttpRequest("GET", page, headers=headers))
            if response.status_code == 404:
                raise ResourceNotFoundError(response=response)
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            answer = json.loads(response.content), response.headers
        body, answer_headers = answer
        for row in body["value"]:
            yield row
        following = [(k, answer_headers.get(f"x-ms-continuation-{k}")) for k in NEXT_KEYS]
        if not any(value for _, value in following):
            return
        page = url + "".join(f"&{k}={quote(v, safe='')}" for k, v in following if v)


async def _sent_directly(
    table: TableClient, url: str, headers: Mapping[str, str]
) -> tuple[Any, Mapping[str, str]] | None:
    """A 200's JSON and headers, the request signed by the client's own credential policy
    and sent on the client's own aiohttp session, without the rest of azure-core's pipeline
    and transport wrappers (0.8-1.1 ms of CPU a read through them, 0.3-0.5 without, on
    Azurite, 2026-12-04). None, for the caller to send it through the pipeline, when that
    would do more: when Azure SDK tracing is on (shared/sdktracing.py), or the client's
    request log is on, or it has hooks or another transport (`_direct_parts`), the answer is
    not a 200 (the pipeline's errors), or signing or sending failed (the pipeline's
    retries)."""
    import inspect
    import uuid
    from wsgiref.handlers import format_date_time

    import aiohttp
    from azure.core.exceptions import AzureError
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.rest import HttpRequest

    session, signer = _direct_parts(table)
    if session is None or signer is None or traced():
        return None
    now = format_date_time(time.time())
    request = HttpRequest("GET", url, headers=dict(headers))
    request.headers.update({"x-ms-date": now, "Date": now, REQUEST_ID: str(uuid.uuid4())})
    try:  # anything that fails here fails again, or is retried, in the pipeline
        signed = signer.on_request(PipelineRequest(request, PipelineContext(None)))
        if inspect.isawaitable(signed):  # a token credential's policy
            await signed
        async with session.get(url, headers=dict(request.headers)) as response:
            if response.status != 200:
                return None
            return json.loads(await response.read()), response.headers
    except (TimeoutError, aiohttp.ClientError, ValueError, AzureError):
        return None


@dataclass(frozen=True)
class _DirectParts:
    """What a client fixes when it is built: its aiohttp transport (whose session opens on
    its first request when not given), its credential policy, and the policies that may log
    its requests (their level can change, so is asked each time)."""

    transport: Any
    signer: Any
    request_logs: tuple[Any, ...]


# Per client, as its policies and transport never change: scanning them cost 3-4% of a GET's
# host CPU (pyinstrument, 2026-12-04). Weak, so a client dropped is forgotten.
_parts_of: weakref.WeakKeyDictionary[Any, _DirectParts | None] = weakref.WeakKeyDictionary()


def _direct_parts(table: TableClient) -> tuple[Any, Any]:
    """The client's aiohttp session and credential policy; Nones where not found, or when
    the client was given hooks or its network trace (`logging_enable`), or its request log
    would log, which only its pipeline does, or a transport other than azure-core's aiohttp
    one (a subclass that counts or changes requests, as bench/bench_scale.py's)."""
    if table not in _parts_of:
        _parts_of[table] = _fixed_parts(table)
    parts = _parts_of[table]
    if parts is None or any(_logs_requests(p) for p in parts.request_logs):
        return None, None
    return getattr(parts.transport, "session", None), parts.signer


def _fixed_parts(table: TableClient) -> _DirectParts | None:
    """`_direct_parts` of a client as built; None when it has hooks, its network trace or
    another transport."""
    from azure.core.pipeline.transport._aiohttp import AioHttpTransport

    policies = table._policies
    if any(
        getattr(p, "_request_callback", None)
        or getattr(p, "_response_callback", None)
        or getattr(p, "enable_http_logger", False)
        for p in policies
    ):
        return None
    transport = getattr(table._client._client._pipeline._transport, "_transport", None)
    if type(transport) is not AioHttpTransport:
        return None
    signer = next((p for p in policies if "Credential" in type(p).__name__), None)
    request_logs = tuple(p for p in policies if getattr(p, "logger", None) is not None)
    return _DirectParts(transport, signer, request_logs)


def _logs_requests(policy: Any) -> bool:
    """Whether the policy is the client's request log (azure-core's HttpLoggingPolicy: its own
    logger, by default azure.core.pipeline.policies.http_logging_policy) and would log."""
    logger, level = getattr(policy, "logger", None), getattr(policy, "http_logging_level", None)
    return logger is not None and level is not None and logger.isEnabledFor(level)
