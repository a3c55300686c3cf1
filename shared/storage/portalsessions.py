"""The `portalsessions` table: one-time sign-in codes and portal sessions, as SHA-256 hashes.

PartitionKey `code` or `session`, RowKey the hash of the secret, so a stolen table gives no
way in. A code is deleted as it is redeemed, with its ETag: of two redeemers only one wins.
A session is deleted at sign-out, or when it is shown after its expiry. Each row carries its
own expiry and is refused after it; rows never shown again stay (one per link or sign-in).

Each row carries the rights of whoever issued it (`Scopes`, `Connections`, `KeyId`,
`KeyExpiresAt`, as an API key's row does): a session acts with at most the rights of the key
that made its link or signed it in, never more (issue 26). Rows without them (a link of the
command line, or made before rights were kept) hold every right of the account.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.storage.apikeys import Grant

CODE_PREFIX = "sbdc_"
SESSION_PREFIX = "sbds_"
SESSION_LIFETIME = timedelta(hours=1)
LINK_MINUTES_MOST = 24 * 60


@dataclass(frozen=True)
class PortalSession:
    token: str  # the cookie's value; never stored
    account: str
    expires_at: datetime
    grant: Grant  # what the session may do: the rights of the key that issued it

    @property
    def csrf_token(self) -> str:
        """The synchronizer token of this session: derived, so never stored or sent in a cookie."""
        return csrf_token_of(self.token)


def csrf_token_of(session_token: str) -> str:
    return hashlib.sha256(f"csrf:{session_token}".encode()).hexdigest()[:32]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PortalSessionRepository:
    def __init__(self, table: TableClient, lifetime: timedelta = SESSION_LIFETIME) -> None:
        self._table = table
        self.lifetime = lifetime

    async def new_code(
        self, account: str, minutes: int, now: datetime, grant: Grant | None = None
    ) -> str:
        """A one-time sign-in code for `account`, valid `minutes` (1 to a day), whose session
        holds the rights of `grant` (None: every right of the account)."""
        return (await self.new_link_code(account, minutes, now, grant))[0]

    async def new_link_code(
        self, account: str, minutes: int, now: datetime, grant: Grant | None = None
    ) -> tuple[str, datetime]:
        """`new_code`, and when the code expires: never after the grant's key does."""
        from shared.storage.apikeys import ACCOUNT_ID, Grant

        if not ACCOUNT_ID.match(account):
            raise ValueError("account: 1-64 letters, digits, '.', '_' or '-'")
        if not 1 <= minutes <= LINK_MINUTES_MOST:
            raise ValueError(f"minutes: 1 to {LINK_MINUTES_MOST}")
        grant = grant or Grant(account)
        if grant.account != account:
            raise ValueError("grant: of another account")
        code = CODE_PREFIX + secrets.token_urlsafe(32)
        expires = _no_later(now + timedelta(minutes=minutes), grant)
        await self._table.create_entity(_row("code", code, expires, grant))
        return code, expires

    async def redeem(self, code: str, now: datetime) -> PortalSession | None:
        """The new session for a valid, unused, unexpired code; the code is used up."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if not code.startswith(CODE_PREFIX) or len(code) > 100:
            return None
        try:
            entity = await self._table.get_entity("code", _hash(code))
            await self._table.delete_entity(
                "code",
                entity["RowKey"],
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        if entity["ExpiresAt"] <= now:
            return None
        return await self.start(str(entity["Account"]), now, _grant_of(entity))

    async def start(self, account: str, now: datetime, grant: Grant | None = None) -> PortalSession:
        """A session for an account whose caller proved it (a code, or an API key), with the
        rights of `grant` (None: every right of the account); it ends by the key's expiry."""
        from shared.storage.apikeys import Grant

        grant = grant or Grant(account)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        session = PortalSession(token, account, _no_later(now + self.lifetime, grant), grant)
        await self._table.create_entity(_row("session", session.token, session.expires_at, grant))
        return session

    async def get(self, token: str | None, now: datetime) -> PortalSession | None:
        from azure.core.exceptions import ResourceNotFoundError

        if not token or not token.startswith(SESSION_PREFIX) or len(token) > 100:
            return None
        digest = _hash(token)
        try:
            entity = await self._table.get_entity("session", digest)
        except ResourceNotFoundError:
            return None
        if not hmac.compare_digest(str(entity["RowKey"]), digest):
            return None
        if entity["ExpiresAt"] <= now:
            await self.end(token)  # an expired session is removed when it is next shown
            return None
        return PortalSession(token, str(entity["Account"]), entity["ExpiresAt"], _grant_of(entity))

    async def delete_expired(self, now: datetime) -> int:
        """Remove codes never redeemed and sessions never ended, once expired (the purge);
        how many went. The table holds the sign-ins of a day at most."""
        from shared.storage import delete_expired

        return await delete_expired(self._table, now)

    async def end(self, token: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):  # ended already
            await self._table.delete_entity("session", _hash(token))


def _no_later(when: datetime, grant: Grant) -> datetime:
    return when if grant.expires_at is None else min(when, grant.expires_at)


def _row(kind: str, secret: str, expires: datetime, grant: Grant) -> dict[str, object]:
    from shared.storage.apikeys import rights_columns

    row: dict[str, object] = {
        "PartitionKey": kind,
        "RowKey": _hash(secret),
        "Account": grant.account,
        "ExpiresAt": expires,
        "KeyId": grant.key_id,
        **rights_columns(grant.scopes, grant.connections),
    }
    if grant.expires_at is not None:
        row["KeyExpiresAt"] = grant.expires_at
    return row


def _grant_of(entity: Any) -> Grant:
    """The rights a row carries (every right of its account when it names none)."""
    from shared.storage.apikeys import Grant, rights_of

    scopes, connections = rights_of(entity)
    return Grant(
        str(entity["Account"]),
        scopes,
        str(entity.get("KeyId") or ""),
        connections,
        entity.get("KeyExpiresAt"),
    )
