"""The `apikeys` table: API keys stored only as SHA-256 hashes, each owned by one account.

A key is `sbd_<key id><secret>`; the 8-character key id is not secret and names the key in
`apikey list` and `apikey revoke`. Keys are 256-bit random, so a fast hash is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

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


@dataclass(frozen=True)
class Grant:
    """What a caller proved: its account, and what it may do there."""

    account: str
    scopes: frozenset[Scope] = EVERY_SCOPE


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyRepository:
    # Accounts of keys seen recently, so each API call does not read the table; a revoked
    # key stops working within this many seconds in every process.
    CACHE_SECONDS = 10.0

    CACHE_MOST = 10_000  # only keys that exist are cached, and never more than this

    def __init__(self, table: TableClient, cache_seconds: float = CACHE_SECONDS) -> None:
        self._table = table
        self.cache_seconds = cache_seconds  # 0: every call reads the table
        self._cache: OrderedDict[str, tuple[float, Grant]] = OrderedDict()

    async def create(
        self, account: str, now: datetime, scopes: frozenset[Scope] = EVERY_SCOPE
    ) -> tuple[str, ApiKeyInfo]:
        if not ACCOUNT_ID.match(account):
            raise ValueError("account: 1-64 letters, digits, '.', '_' or '-'")
        if not scopes:
            raise ValueError("scopes: a key holds at least one")
        key_id = secrets.token_hex(4)
        key = f"{_PREFIX}{key_id}{secrets.token_urlsafe(32)}"
        info = ApiKeyInfo(key_id, account, now, scopes)
        await self._table.create_entity(
            {
                "PartitionKey": _PARTITION,
                "RowKey": _hash(key),
                "KeyId": key_id,
                "Account": account,
                "CreatedAt": now,
                "Scopes": "" if scopes == EVERY_SCOPE else scopes_to_text(scopes),
            }
        )
        return key, info

    async def for_account(self, account: str | None = None) -> list[ApiKeyInfo]:
        query = self._table.query_entities(
            "PartitionKey eq @p",
            parameters={"p": _PARTITION},
            select=["KeyId", "Account", "CreatedAt", "Scopes"],
        )
        keys = [_info(e) async for e in query]
        return sorted((k for k in keys if account in (None, k.account)), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        query = self._table.query_entities(
            "PartitionKey eq @p and KeyId eq @id", parameters={"p": _PARTITION, "id": key_id}
        )
        found = [e async for e in query]
        if not found:
            raise NotFound(key_id)
        for entity in found:
            await self._table.delete_entity(_PARTITION, entity["RowKey"])
        return _info(found[0])

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
            return cached[1]
        try:
            entity = await self._table.get_entity(
                _PARTITION, digest, select=["Account", "RowKey", "Scopes"]
            )
        except ResourceNotFoundError:
            return None
        if not hmac.compare_digest(str(entity["RowKey"]), digest):
            return None
        grant = Grant(str(entity["Account"]), scopes_from_text(entity.get("Scopes")))
        self._cache[digest] = (time.monotonic() + self.cache_seconds, grant)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.CACHE_MOST:
            self._cache.popitem(last=False)
        return grant


def _key_of(authorization: str | None) -> str:
    key = (authorization or "").strip()
    return key[7:].strip() if key[:7].lower() == "bearer " else key


def _info(entity: Any) -> ApiKeyInfo:
    scopes = scopes_from_text(entity.get("Scopes"))
    return ApiKeyInfo(entity["KeyId"], entity["Account"], entity["CreatedAt"], scopes)
