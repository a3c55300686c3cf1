"""Endpoints for Azure Service Bus connections: list, get, create, replace, delete, resume."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import Call, connection_uid, endpoint
from shared.models.access import Scope
from shared.service import connections

if TYPE_CHECKING:
    from shared.models.connection import Connection

bp = func.Blueprint()
COLLECTION = "v1/azureservicebusconnections"


@endpoint(bp, "GET", COLLECTION, returns="Connection", many=True, scope=Scope.CONNECTIONS_READ)
async def list_connections(call: Call) -> list[Connection]:
    """List the account's connections (secrets shown as ***), each with its Health; a key
    restricted to some connections sees those only."""
    found = await connections.list_all(call.services, call.account)
    return [c for c in found if call.grant.may_use(c.uid)]


@endpoint(
    bp,
    "GET",
    COLLECTION + "/{uid}",
    returns="Connection",
    errors=(404,),
    scope=Scope.CONNECTIONS_READ,
)
async def get_connection(call: Call) -> Connection:
    """Get one connection (secrets shown as ***), with its Health."""
    return await connections.get(call.services, call.account, connection_uid(call))


@endpoint(
    bp,
    "POST",
    COLLECTION,
    body="ConnectionInput",
    query="SaveQuery",
    returns="Connection",
    errors=(400, 409),
    scope=Scope.CONNECTIONS_WRITE,
    audit="connection.create",
)
async def create_connection(call: Call) -> Connection:
    """Create a connection; without Uid a new one is made. An existing Uid is a 409. An
    active connection is verified first (a message sent): a failure is a 400 and nothing is
    saved. An Entra ID connection names a tenant consented through this account's link, and
    is saved unconfirmed: its verification message carries the code to confirm it with."""
    return await connections.create(call.services, call.account, call.body, call.query.verify)


@endpoint(
    bp,
    "PUT",
    COLLECTION,
    body="ConnectionInput",
    query="SaveQuery",
    returns="Connection",
    errors=(400, 404),
    scope=Scope.CONNECTIONS_WRITE,
    audit="connection.replace",
)
async def replace_connection(call: Call) -> Connection:
    """Replace a connection by Uid. Connection strings that still hold *** keep their secret.
    An active connection is verified first, with the stored secrets where *** was sent; a
    verified save ends a suspension. An Entra ID connection stays confirmed only while it
    sends where it was confirmed for; else its verification carries a new code."""
    return await connections.replace(call.services, call.account, call.body, call.query.verify)


@endpoint(
    bp,
    "POST",
    COLLECTION + "/{uid}/resume",
    returns="Connection",
    errors=(404,),
    scope=Scope.CONNECTIONS_WRITE,
    audit="connection.resume",
)
async def resume_connection(call: Call) -> Connection:
    """End a suspension: events are sent again (those kept meanwhile can be replayed)."""
    return await connections.resume(call.services, call.account, connection_uid(call))


@endpoint(
    bp,
    "DELETE",
    COLLECTION + "/{uid}",
    errors=(404,),
    scope=Scope.CONNECTIONS_WRITE,
    audit="connection.delete",
)
async def delete_connection(call: Call) -> None:
    """Delete a connection; its message records become unreachable at once."""
    await connections.delete(call.services, call.account, connection_uid(call))
