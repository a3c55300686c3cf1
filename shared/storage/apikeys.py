"""The `apikeys` table: API keys stored only as SHA-256 hashes, each owned by one account.

A key is `sbd_<key id><secret>`; the 8-character key id is not secret and names the key in
`apikey list` and `apikey revoke`. Keys are 256-bit random, so a fast hash is enough.

One row per secret: a rotated key has a row for its new secret and keeps the old one's row,
with an expiry at the end of the overlap, until it is purged at the next rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.clock import Clock, system_clock
from shared.errors import NotFound
from shared.models.access import EVERY_SCOPE, Scope, scopes_from_text, scopes_to_text

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

_PARTITION = "key"
_PREFIX = "sbd_"
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    account: str
    created_at: datetime
    scopes: frozenset[Scope] = EVERY_SCOPE
    name: str = ""
    connections: frozenset[UUID] | None = None  # None: every connection of the account
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Grant:
    """What a caller proved: its account, and what it may do there."""

    account: str
    scopes: frozenset[Scope] = EVERY_SCOPE
    key_id: str = ""  # "" for a portal session
    connections: frozenset[UUID] | None = None  # None: every connection of the account
    expires_at: datetime | None = None

    def may_use(self, connection: UUID) -> bool:
        return self.connections is None or connection in self.connections


@dataclass(frozen=True)
class NewKey:
    """What a key is made with, besides its account."""

    scopes: frozenset[Scope] = EVERY_SCOPE
    name: str = ""
    connections: frozenset[UUID] | None = None
    expires_at: datetime | None = None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyRepository:
    # Accounts of keys seen recently, so each API call does not read the table; a revoked
    # key stops working within this many seconds in every process.
    CACHE_SECONDS = 10.0

    CACHE_MOST = 10_000  # only keys that exist are cached, and never more than this

    def __init__(
        self, table: TableClient, cache_seconds: float = CACHE_SECONDS, clock: Clock = system_clock
    ) -> None:
        self._table = table
        self._clock = clock  # expiry and rotation overlaps
        self.cache_seconds = cache_seconds  # 0: every call reads the table
        self._cache: OrderedDict[str, tuple[float, Grant]] = OrderedDict()

    async def create(
        self, account: str, now: datetime, scopes: frozenset[Scope] | NewKey = EVERY_SCOPE
    ) -> tuple[str, ApiKeyInfo]:
        new = scopes if isinstance(scopes, NewKey) else NewKey(scopes)
        if not ACCOUNT_ID.match(account):
            raise ValueError("account: 1-64 letters, digits, '.', '_' or '-'")
        if not new.scopes:
            raise ValueError("scopes: a key holds at least one")
        info = ApiKeyInfo(
            secrets.token_hex(4), account, now, new.scopes, new.name, new.connections,
            new.expires_at,
        )  # fmt: skip
        return await self._add_secret(info, now), info

    async def _add_secret(self, info: ApiKeyInfo, now: datetime) -> str:
        key = f"{_PREFIX}{info.key_id}{secrets.token_urlsafe(32)}"
        entity: dict[str, Any] = {
            "PartitionKey": _PARTITION,
            "RowKey": _hash(key),
            "KeyId": info.key_id,
            "Account": info.account,
            "CreatedAt": info.created_at,
            "IssuedAt": now,
            "Name": info.name,
            **rights_columns(info.scopes, info.connections),
        }
        if info.expires_at is not None:
            entity["ExpiresAt"] = info.expires_at
        await self._table.create_entity(entity)
        return key

    async def _rows(self, key_id: str | None = None) -> list[Any]:
        if key_id is None:
            query = self._table.query_entities("PartitionKey eq @p", parameters={"p": _PARTITION})
        else:
            query = self._table.query_entities(
                "PartitionKey eq @p and KeyId eq @id", parameters={"p": _PARTITION, "id": key_id}
            )
        return [e async for e in query]

    async def for_account(self, account: str | None = None) -> list[ApiKeyInfo]:
        """The keys (of `account`, or all), oldest first; one entry per key, however many
        secrets it has during a rotation's overlap."""
        now = self._clock()
        latest: dict[str, Any] = {}
        for row in await self._rows():
            if account in (None, row["Account"]) and not _expired(row, now):
                known = latest.get(row["KeyId"])
                if known is None or _issued(row) > _issued(known):
                    latest[row["KeyId"]] = row
        return sorted((_info(e) for e in latest.values()), key=lambda k: k.created_at)

    async def get(self, key_id: str, account: str) -> ApiKeyInfo:
        found = [k for k in await self.for_account(account) if k.key_id == key_id]
        if not found:
            raise NotFound(f"no API key {key_id!r}")
        return found[0]

    async def owner_of(self, key_id: str) -> str:
        """The account of a key (expired or not); NotFound if there is none."""
        rows = await self._rows(key_id)
        if not rows:
            raise NotFound(key_id)
        return str(rows[0]["Account"])

    async def revoke(self, key_id: str, account: str | None = None) -> ApiKeyInfo:
        """Delete every secret of the key (of `account`, when given: another's is not found)."""
        found = [e for e in await self._rows(key_id) if account in (None, e["Account"])]
        if not found:
            raise NotFound(key_id)
        for entity in found:
            await self._table.delete_entity(_PARTITION, entity["RowKey"])
        self._cache.clear()  # this process stops honouring it at once
        return _info(max(found, key=_issued))

    async def rotate(
        self, key_id: str, account: str, overlap: timedelta
    ) -> tuple[str, ApiKeyInfo, datetime]:
        """A new secret for the key; its current secrets stop working after `overlap`.
        The new secret, the key, and when the old secret stops."""
        now = self._clock()
        rows = [e for e in await self._rows(key_id) if e["Account"] == account]
        live = [e for e in rows if not _expired(e, now)]
        if not live:
            raise NotFound(f"no API key {key_id!r}")
        info = _info(max(live, key=_issued))
        old_ends = now + overlap
        for row in rows:
            if _expired(row, now):
                await self._table.delete_entity(_PARTITION, row["RowKey"])
                continue
            ends = min(old_ends, row.get("ExpiresAt") or old_ends)
            await self._table.update_entity(
                {"PartitionKey": _PARTITION, "RowKey": row["RowKey"], "ExpiresAt": ends},
                mode=_merge(),
            )
        self._cache.clear()
        return await self._add_secret(info, now), info, old_ends

    @staticmethod
    def digest_of(authorization: str | None) -> str:
        """A name for the key in an `Authorization` header (its hash), e.g. for rate limits."""
        return _hash(_key_of(authorization))

    async def account_of(self, authorization: str | None) -> str | None:
        """The account of an `Authorization: <key>` or `Bearer <key>` header; None if unknown."""
        grant = await self.grant_of(authorization)
        return grant.account if grant else None

    async def grant_of(self, authorization: str | None) -> Grant | None:
        """The account and scopes of an `Authorization: <key>` or `Bearer <key>` header; None
        if unknown.

        Keys are found by their SHA-256, so lookup time says nothing about a stored key; the
        stored hash is still compared in constant time. Unknown keys are never cached.
        """
        from azure.core.exceptions import ResourceNotFoundError

        key = _key_of(authorization)
        if not key.startswith(_PREFIX) or len(key) > 200:
            return None
        digest = _hash(key)
        cached = self._cache.get(digest)
        if cached and cached[0] > time.monotonic():
            ends = cached[1].expires_at
            return None if ends is not None and ends <= self._clock() else cached[1]
        try:
            entity = await self._table.get_entity(_PARTITION, digest)
        except ResourceNotFoundError:
            return None
        if not hmac.compare_digest(str(entity["RowKey"]), digest):
            return None
        info = _info(entity)
        grant = Grant(info.account, info.scopes, info.key_id, info.connections, info.expires_at)
        if _expired(entity, self._clock()):
            return None
        self._cache[digest] = (time.monotonic() + self.cache_seconds, grant)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.CACHE_MOST:
            self._cache.popitem(last=False)
        return grant


def _key_of(authorization: str | None) -> str:
    key = (authorization or "").strip()
    return key[7:].strip() if key[:7].lower() == "bearer " else key


def rights_columns(scopes: frozenset[Scope], connections: frozenset[UUID] | None) -> dict[str, str]:
    """The columns a row keeps a caller's scopes and connections in: a key's row here, a
    portal session's (shared/storage/portalsessions.py). Read back by `rights_of`."""
    columns = {"Scopes": "" if scopes == EVERY_SCOPE else scopes_to_text(scopes)}
    if connections is not None:
        columns["Connections"] = ",".join(sorted(str(c) for c in connections))
    return columns


def rights_of(entity: Any) -> tuple[frozenset[Scope], frozenset[UUID] | None]:
    """The scopes and connections `rights_columns` wrote (every scope when none is named;
    None: every connection)."""
    uids = entity.get("Connections")
    connections = None if uids is None else frozenset(UUID(u) for u in uids.split(",") if u)
    return scopes_from_text(entity.get("Scopes")), connections


def _info(entity: Any) -> ApiKeyInfo:
    scopes, connections = rights_of(entity)
    return ApiKeyInfo(
        entity["KeyId"], entity["Account"], entity["CreatedAt"], scopes,
        entity.get("Name") or "", connections, entity.get("ExpiresAt"),
    )  # fmt: skip


def _expired(entity: Any, now: datetime) -> bool:
    ends = entity.get("ExpiresAt")
    return ends is not None and ends <= now


def _issued(entity: Any) -> datetime:
    issued: datetime = entity.get("IssuedAt") or entity["CreatedAt"]
    return issued


def _merge() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.MERGE
