"""Endpoints for a connection's message log, re-sending, and test deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import Call, endpoint, parse_uid
from shared.models.access import Scope
from shared.service import messages
from shared.services import Services

if TYPE_CHECKING:
    from shared.models.records import Delivery, DeliveryStats, Message, MessagePage
    from shared.models.replays import Replay, ReplayStarted
    from shared.storage.connections import StoredConnection

bp = func.Blueprint()
CONNECTION = "v1/azureservicebusconnections/{connectionUid}"


async def connection_of(
    call: Call, services: Services, name: str = "connectionUid"
) -> StoredConnection:
    uid = parse_uid(call.route[name], "connection")
    return await services.connections.get(call.account, uid)


async def log_of(call: Call) -> StoredConnection:
    """The connection whose log a read looks at, as this process read it within
    `connection_cache_seconds` (issue 26: a search is a point read or two, and the connection's
    read was one of them): the account and the log partition are all a read of the log needs."""
    uid = parse_uid(call.route["connectionUid"], "connection")
    return await call.services.connections.recent(call.account, uid)


@endpoint(
    bp,
    "GET",
    CONNECTION + "/messages",
    query="MessageQuery",
    returns="MessagePage",
    errors=(404,),
    scope=Scope.MESSAGES_READ,
)
async def list_messages(call: Call) -> MessagePage:
    """A page of the connection's messages, newest first; TotalHits counts all matches. With
    search filters: the matching messages. With undelivered=true: the deliveries not
    delivered, each as its latest attempt, oldest first."""
    stored = await log_of(call)
    return await messages.list_messages(call.services, stored, call.query)


@endpoint(
    bp,
    "GET",
    CONNECTION + "/messages/{messageUid}",
    returns="Message",
    errors=(404,),
    scope=Scope.MESSAGES_READ,
)
async def get_message(call: Call) -> Message:
    """One message (delivery attempt) of the connection."""
    stored = await log_of(call)
    uid = parse_uid(call.route["messageUid"], "message")
    return await messages.get_message(call.services, stored, uid)


@endpoint(
    bp,
    "GET",
    CONNECTION + "/deliveries/{messageId}",
    returns="Delivery",
    errors=(404,),
    scope=Scope.MESSAGES_READ,
)
async def get_delivery(call: Call) -> Delivery:
    """One delivery (its event to this connection, by the message_id its messages carry): its
    state and every attempt, oldest first."""
    stored = await log_of(call)
    message_id = str(parse_uid(call.route["messageId"], "delivery"))
    return await messages.get_delivery(call.services, stored, message_id)


@endpoint(
    bp,
    "POST",
    CONNECTION + "/messages/{messageUid}/retry",
    returns="Message",
    errors=(404,),
    sends=True,
    scope=Scope.MESSAGES_SEND,
)
async def retry_message(call: Call) -> Message:
    """Send the message again now, from its stored body; 200 with the new record."""
    stored = await connection_of(call, call.services)
    uid = parse_uid(call.route["messageUid"], "message")
    return await messages.resend(call.services, stored, uid)


@endpoint(
    bp,
    "POST",
    "v1/azureservicebusconnections/{uid}/messages/replay",
    body="ReplayRequest",
    returns="ReplayStarted",
    errors=(404, 409, 429),
    sends=True,
    status=202,
    scope=Scope.MESSAGES_SEND,
    audit="connection.replay",
)
async def replay_messages(call: Call) -> ReplayStarted:
    """Send the window's deliveries again (by default those not delivered), oldest first, each
    once as a re-send of its latest record (same MessageId, IsRetry, Parent); 202 at once with
    the replay's id and how many deliveries match. 409 (with the running ReplayId) while
    another replay of the connection runs; 429 past the account's replays per hour."""
    from shared.service.replays import start

    services = call.services
    stored = await connection_of(call, services, "uid")
    return await start(services, stored, call.body, services.clock())


@endpoint(
    bp,
    "GET",
    "v1/azureservicebusconnections/{uid}/replays/{replayId}",
    returns="Replay",
    errors=(404,),
    scope=Scope.MESSAGES_READ,
)
async def get_replay(call: Call) -> Replay:
    """A replay's progress: done when Sent + Failed = Matched."""
    from shared.service.replays import progress

    stored = await connection_of(call, call.services, "uid")
    replay_id = parse_uid(call.route["replayId"], "replay")
    return await progress(call.services, stored, replay_id)


@endpoint(
    bp,
    "GET",
    "v1/azureservicebusconnections/{uid}/stats",
    query="StatsQuery",
    returns="DeliveryStats",
    errors=(404,),
    scope=Scope.MESSAGES_READ,
)
async def delivery_stats(call: Call) -> DeliveryStats:
    """Deliveries per hour (UTC): Succeeded, Failed, latency percentiles.

    Served from the counters kept as the log is written. Default window: the last 24 hours;
    at most 14 days."""
    from shared.service.stats import delivery_stats

    services = call.services
    stored = await connection_of(call, services, "uid")
    return await delivery_stats(
        services.messages,
        stored.log_partition,
        call.query,
        services.clock(),
        services.settings.retention_days,
    )


@endpoint(
    bp,
    "POST",
    "v1/azureservicebusconnections/{uid}/test",
    returns="Message",
    errors=(404,),
    sends=True,
    scope=Scope.MESSAGES_SEND,
)
async def test_connection(call: Call) -> Message:
    """Deliver a System.Test event to this connection now; 200 with the record, whatever
    its Status (a failed test is not retried)."""
    return await messages.send_test(call.services, await connection_of(call, call.services, "uid"))
