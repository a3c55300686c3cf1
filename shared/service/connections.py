"""Connections: list, get, create, replace, resume, delete and confirm, with the rules a save
obeys (secrets not masked on create, the account's limit, the tenant's consent, verification
first, the Entra ID confirmation code). Knows nothing of HTTP: raises shared/errors.py."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING
from uuid import UUID

from shared.errors import Conflict, Invalid, LimitReached
from shared.service.verification import health_after_save, with_health

if TYPE_CHECKING:
    from shared.health import HealthState
    from shared.models.connection import Connection
    from shared.models.connectioninput import ConnectionInput
    from shared.services import Services
    from shared.storage.connections import StoredConnection

log = logging.getLogger("shared.service")

WRONG_CODE = "the code is wrong, used up or expired: save the connection again for a new one"
NOT_CONSENTED = (
    "no administrator of this tenant has granted consent through this account's link "
    "(GET /v1/entra/consent)"
)


async def list_all(services: Services, account: str) -> list[Connection]:
    """The account's connections (secrets shown as ***), each with its Health: one query."""
    now = services.clock()
    stored = await services.connections.for_account_with_health(account)
    return [with_health(c, health, now) for c, health in stored]


async def get(services: Services, account: str, uid: UUID) -> Connection:
    """One range query: the health row sorts right after its connection's."""
    stored, health = await services.connections.read(account, uid)
    return with_health(stored, health, services.clock())


async def create(
    services: Services, account: str, sent: ConnectionInput, verify: bool
) -> Connection:
    """A new connection, verified first when active (nothing saved if that fails)."""
    from shared.models.connection import Connection
    from shared.storage.connections import StoredConnection

    if masked := sent.fields_holding_mask():
        reason = "send the secret itself; *** keeps a stored one on PUT"
        raise Invalid(
            "a new connection has no stored secret to keep", {name: [reason] for name in masked}
        )
    most = services.settings.limits.connections_per_account
    if await services.connections.count(account) >= most:
        raise LimitReached(f"an account has at most {most} connections")
    if sent.uid and await services.connections.exists(account, sent.uid):
        raise Conflict(f"connection {sent.uid} exists already")  # unverified
    connection = Connection(**{**dict(sent), "uid": sent.uid or uuid.uuid4()})
    await check_tenant(services, account, connection)
    code = confirmation_code(connection, verify)
    unsaved = StoredConnection(account, connection, "")
    health = await health_after_save(services, unsaved, verify, None, code)
    stored = await services.connections.add(account, connection, services.clock())
    return await _kept(services, stored, code, health, None)


async def replace(
    services: Services, account: str, sent: ConnectionInput, verify: bool
) -> Connection:
    """A connection replaced by Uid; *** keeps a stored secret; a verified save resumes; an
    Entra ID connection stays confirmed only while it sends where it was confirmed for."""
    from shared.models.connection import Connection

    if sent.uid is None:
        raise Invalid("PUT needs the Uid of the connection", {"Uid": ["Field required"]})
    connection = Connection(**dict(sent))
    await check_tenant(services, account, connection)
    complete = await services.connections.with_stored_secrets(account, connection)
    previous = await services.health.get(account, connection.uid)
    code = confirmation_code(complete.connection, verify)
    health = await health_after_save(services, complete, verify, previous, code)
    stored = await services.connections.replace(account, connection, services.clock())
    return await _kept(services, stored, code, health, previous)


async def _kept(
    services: Services,
    stored: StoredConnection,
    code: str | None,
    health: HealthState | None,
    previous: HealthState | None,
) -> Connection:
    """After the write: the confirmation code and the health kept; the connection as shown."""
    await keep_code(services, stored, code)
    if health is not None:
        await services.health.put(stored.account, stored.uid, health)
        await notify_health_change(services, stored, previous, health)
    return with_health(stored, health or previous, services.clock())


async def notify_health_change(
    services: Services, stored: StoredConnection, old: HealthState | None, new: HealthState
) -> None:
    """`System.ConnectionHealthChanged` when a save or a resume, not the health tracker,
    wrote another status (a suspension ended); once: the tracker judges its next write
    against the row written here. A failed publish is logged, never raised: the change is
    made, and health notices are advisory, as the tracker's are."""
    from shared.dispatch.healthnotice import health_changed

    if old is None or old.status == new.status:
        return
    now = services.clock()
    title = stored.connection.title
    try:
        await services.publish(health_changed(stored.account, stored.uid, title, old, new, now))
    except Exception:
        log.warning("publishing the health change of %s failed", stored.uid, exc_info=True)


async def resume(services: Services, account: str, uid: UUID) -> Connection:
    """End a suspension: events are sent again (those kept meanwhile can be replayed)."""
    from shared.health import HealthState
    from shared.models.connection import HealthStatus

    stored = await services.connections.get(account, uid)
    now = services.clock()
    before: list[HealthState | None] = []  # the row the write replaced (its last try's)

    def resumed(state: HealthState | None) -> HealthState:
        before.append(state)
        if state is None:
            return HealthState.new(now)
        return state.resumed(now) if state.status == HealthStatus.SUSPENDED else state

    health = await services.health.update(account, uid, resumed)
    await notify_health_change(services, stored, before[-1], health)
    return with_health(stored, health, now)


async def delete(services: Services, account: str, uid: UUID) -> None:
    """Its message records become unreachable at once."""
    await services.connections.delete(account, uid, services.clock())
    await services.health.delete(account, uid)
    await services.ownership.forget_code(account, uid)


async def confirm(services: Services, account: str, uid: UUID, code: str) -> Connection:
    """Confirm an Entra ID connection with its one-time code; one that needs none, or is
    confirmed already, is answered as it is."""
    from shared.service.ownership import destination, needs_code

    stored, health = await services.connections.read(account, uid)
    now = services.clock()
    if needs_code(stored.connection):
        where = destination(stored.connection)
        if not await services.ownership.redeem(account, uid, where, code, now):
            raise Invalid(WRONG_CODE, {"Code": [WRONG_CODE]})
        stored = await services.connections.confirm(account, uid, where)
    return with_health(stored, health, now)


# ------------------------------------------------------------ what a save asks of the owner


async def check_tenant(services: Services, account: str, connection: Connection) -> None:
    """An Entra ID connection names a tenant bound to the account by admin consent; before
    anything is sent there (Invalid naming TenantId otherwise)."""
    if connection.authentication != "EntraId":
        return
    if not await services.ownership.tenant_bound(account, str(connection.tenant_id)):
        raise Invalid(NOT_CONSENTED, {"TenantId": [NOT_CONSENTED]})


def confirmation_code(connection: Connection, verify: bool) -> str | None:
    """The code a save's verification message carries, when the connection needs one."""
    from shared.service.ownership import needs_code, new_code

    verifies = verify and connection.active
    return new_code() if verifies and needs_code(connection) else None


async def keep_code(services: Services, stored: StoredConnection, code: str | None) -> None:
    """Once saved: the code the verification message carried, kept as its HMAC."""
    from shared.service.ownership import destination

    if code is not None:
        where = destination(stored.connection)
        await services.ownership.keep_code(
            stored.account, stored.uid, where, code, services.clock()
        )
