"""Endpoints for Azure Service Bus connections: list, get, create, replace, delete."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import ApiError, Call, endpoint, parse_uid
from shared.services import get_services

if TYPE_CHECKING:
    from shared.models import Connection, ConnectionInput

bp = func.Blueprint()
COLLECTION = "v1/azureservicebusconnections"


@endpoint(bp, "GET", COLLECTION, returns="Connection", many=True)
async def list_connections(call: Call) -> list[Connection]:
    """List the account's connections (secrets shown as ***)."""
    services = await get_services()
    return [c.masked() for c in await services.connections.for_account(call.account)]


@endpoint(bp, "GET", COLLECTION + "/{uid}", returns="Connection", errors=(404,))
async def get_connection(call: Call) -> Connection:
    """Get one connection (secrets shown as ***)."""
    services = await get_services()
    uid = parse_uid(call.route["uid"], "connection")
    return (await services.connections.get(call.account, uid)).masked()


@endpoint(bp, "POST", COLLECTION, body="ConnectionInput", returns="Connection", errors=(400, 409))
async def create_connection(call: Call) -> Connection:
    """Create a connection; without Uid a new one is made. An existing Uid is a 409."""
    services = await get_services()
    sent: ConnectionInput = call.body
    if masked := sent.fields_holding_mask():
        raise ApiError(
            400,
            "Validation failed",
            "a new connection has no stored secret to keep",
            {name: ["send the secret itself; *** keeps a stored one on PUT"] for name in masked},
        )
    most = services.settings.limits.connections_per_account
    if await services.connections.count(call.account) >= most:
        raise ApiError(409, "Limit reached", f"an account has at most {most} connections")
    from shared.models import Connection

    connection = Connection(**{**dict(sent), "uid": sent.uid or uuid.uuid4()})
    stored = await services.connections.add(call.account, connection, services.clock())
    return stored.masked()


@endpoint(bp, "PUT", COLLECTION, body="ConnectionInput", returns="Connection", errors=(400, 404))
async def replace_connection(call: Call) -> Connection:
    """Replace a connection by Uid. Connection strings that still hold *** keep their secret."""
    services = await get_services()
    sent: ConnectionInput = call.body
    if sent.uid is None:
        raise ApiError(
            400,
            "Validation failed",
            "PUT needs the Uid of the connection",
            {"Uid": ["Field required"]},
        )
    from shared.models import Connection

    connection = Connection(**dict(sent))
    stored = await services.connections.replace(call.account, connection, services.clock())
    return stored.masked()


@endpoint(bp, "DELETE", COLLECTION + "/{uid}", errors=(404,))
async def delete_connection(call: Call) -> None:
    """Delete a connection; its message records become unreachable at once."""
    services = await get_services()
    uid = parse_uid(call.route["uid"], "connection")
    await services.connections.delete(call.account, uid, services.clock())
