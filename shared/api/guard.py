"""What the endpoint machinery (shared/api/http.py) checks and records around a handler,
beyond the key's scope: a key restricted to connections (one check, reading the route and
the body), and the audit entry of a change (shared/service/audit.audited).

Refusals are `Forbidden` (shared/errors.py), answered as 403 by http.py's one table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.errors import Forbidden

if TYPE_CHECKING:
    from shared.api.http import Call
    from shared.storage.apikeys import Grant

# The public routes name a connection's id `{uid}` (connections, ownership) or
# `{connectionUid}` (messages, replays, stats), as the seed did; inside the code it is the
# connection uid, read by shared/api/http.connection_uid.
CONNECTION_ROUTE_NAMES = ("uid", "connectionUid")
FORBIDDEN_CONNECTION = "this API key may not use this connection"
ACCOUNT_WIDE = "this API key is restricted to connections; this route is account-wide"


def check_account_wide(grant: Grant, restricted_keys: bool) -> None:
    """Forbidden when a key restricted to connections calls an account-wide route (checked
    before its body or query is looked at)."""
    if grant.connections is not None and not restricted_keys:
        raise Forbidden(ACCOUNT_WIDE)


def check_connections(grant: Grant, route: dict[str, str], body: Any) -> None:
    """Forbidden when a key restricted to some connections names another, in the route's
    path or as a body's `Uid` (a restricted key makes no connection without naming one of
    its own). The one check of the connections a call names."""
    if grant.connections is None:
        return
    named: list[tuple[str, object]] = [(n, route[n]) for n in CONNECTION_ROUTE_NAMES if n in route]
    if hasattr(body, "uid"):
        named.append(("Uid", body.uid))
    for name, value in named:
        try:
            allowed = value is not None and grant.may_use(UUID(str(value)))
        except ValueError:
            allowed = False
        if not allowed:
            raise Forbidden(FORBIDDEN_CONNECTION, name)


def audit_target(call: Call) -> str:
    """What an audited change is to, as known before it: the id in the route or body."""
    for name in (*CONNECTION_ROUTE_NAMES, "keyId"):
        if name in call.route:
            return call.route[name]
    return str(getattr(call.body, "uid", None) or "")


def target_of(result: Any) -> str:
    """What a change made, from its answer: a new connection's uid, a new key's id."""
    return str(getattr(result, "uid", None) or getattr(result, "key_id", None) or "")


async def run_audited(
    handler: Callable[[Call], Awaitable[Any]],
    call: Call,
    action: str,
    refusals: tuple[type[Exception], ...],
) -> Any:
    """The handler's result, its change audited as `action` by the caller's key;
    `refusals` (besides the domain errors) mean nothing was changed."""
    from shared.service.audit import REFUSALS, audited

    target = audit_target(call)
    key_id = call.grant.key_id
    refused = (*REFUSALS, *refusals)
    async with audited(call.services, call.account, key_id, action, target, refused) as change:
        result = await handler(call)
        change.target = change.target or target_of(result)
    return result
