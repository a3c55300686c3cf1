"""Endpoints for Azure Service Bus connections: list, get, create, replace, delete, resume."""

from __future__ import annotations

import asyncio
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
    """List the account's connections (secrets shown as ***), each with its Health."""
    from shared.service.verification import with_health

    services = await get_services()
    health = await services.health.for_account(call.account)
    now = services.clock()
    return [
        with_health(c, health.get(c.uid), now)
        for c in await services.connections.for_account(call.account)
    ]


@endpoint(bp, "GET", COLLECTION + "/{uid}", returns="Connection", errors=(404,))
async def get_connection(call: Call) -> Connection:
    """Get one connection (secrets shown as ***), with its Health."""
    from shared.service.verification import with_health

    services = await get_services()
    uid = parse_uid(call.route["uid"], "connection")
    # Both rows at once (two tables: the health row's writes never touch the connection's etag).
    stored, health = await asyncio.gather(
        services.connections.get(call.account, uid), services.health.get(call.account, uid)
    )
    return with_health(stored, health, services.clock())


@endpoint(
    bp,
    "POST",
    COLLECTION,
    body="ConnectionInput",
    query="SaveQuery",
    returns="Connection",
    errors=(400, 409),
)
async def create_connection(call: Call) -> Connection:
    """Create a connection; without Uid a new one is made. An existing Uid is a 409. An
    active connection is verified first (a message sent): a failure is a 400 and nothing is
    saved. An Entra ID connection names a tenant consented through this account's link, and
    is saved unconfirmed: its verification message carries the code to confirm it with."""
    from shared.api.ownership import check_tenant, confirmation_code, keep_code
    from shared.models import Connection
    from shared.service.verification import health_after_save, with_health
    from shared.storage.connections import StoredConnection

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
    if sent.uid and await services.connections.exists(call.account, sent.uid):
        raise ApiError(409, "Conflict", f"connection {sent.uid} exists already")  # unverified
    connection = Connection(**{**dict(sent), "uid": sent.uid or uuid.uuid4()})
    await check_tenant(services, call.account, connection)
    unsaved = StoredConnection(call.account, connection, "")
    code = confirmation_code(connection, call.query.verify)
    health = await health_after_save(services, unsaved, call.query.verify, None, code)
    stored = await services.connections.add(call.account, connection, services.clock())
    await keep_code(services, stored, code)
    if health is not None:
        await services.health.put(call.account, connection.uid, health)
    return with_health(stored, health, services.clock())


@endpoint(
    bp,
    "PUT",
    COLLECTION,
    body="ConnectionInput",
    query="SaveQuery",
    returns="Connection",
    errors=(400, 404),
)
async def replace_connection(call: Call) -> Connection:
    """Replace a connection by Uid. Connection strings that still hold *** keep their secret.
    An active connection is verified first, with the stored secrets where *** was sent; a
    verified save ends a suspension. An Entra ID connection stays confirmed only while it
    sends where it was confirmed for; else its verification carries a new code."""
    from shared.api.ownership import check_tenant, confirmation_code, keep_code
    from shared.models import Connection
    from shared.service.verification import health_after_save, with_health

    services = await get_services()
    sent: ConnectionInput = call.body
    if sent.uid is None:
        raise ApiError(
            400,
            "Validation failed",
            "PUT needs the Uid of the connection",
            {"Uid": ["Field required"]},
        )
    connection = Connection(**dict(sent))
    await check_tenant(services, call.account, connection)
    complete = await services.connections.with_stored_secrets(call.account, connection)
    previous = await services.health.get(call.account, connection.uid)
    code = confirmation_code(complete.connection, call.query.verify)
    health = await health_after_save(services, complete, call.query.verify, previous, code)
    stored = await services.connections.replace(call.account, connection, services.clock())
    await keep_code(services, stored, code)
    if health is not None:
        await services.health.put(call.account, connection.uid, health)
    return with_health(stored, health or previous, services.clock())


@endpoint(bp, "POST", COLLECTION + "/{uid}/resume", returns="Connection", errors=(404,))
async def resume_connection(call: Call) -> Connection:
    """End a suspension: events are sent again (those kept meanwhile can be replayed)."""
    from shared.health import HealthState
    from shared.models import HealthStatus
    from shared.service.verification import with_health

    services = await get_services()
    uid = parse_uid(call.route["uid"], "connection")
    stored = await services.connections.get(call.account, uid)
    now = services.clock()

    def resumed(state: HealthState | None) -> HealthState:
        if state is None:
            return HealthState.new(now)
        return state.resumed(now) if state.status == HealthStatus.SUSPENDED else state

    return with_health(stored, await services.health.update(call.account, uid, resumed), now)


@endpoint(bp, "DELETE", COLLECTION + "/{uid}", errors=(404,))
async def delete_connection(call: Call) -> None:
    """Delete a connection; its message records become unreachable at once."""
    services = await get_services()
    uid = parse_uid(call.route["uid"], "connection")
    await services.connections.delete(call.account, uid, services.clock())
    await services.health.delete(call.account, uid)
    await services.ownership.forget_code(call.account, uid)
