"""The `ownership` table: one-time confirmation codes of Entra ID connections, and the Entra
tenants bound to an account by admin consent (shared/service/ownership.py says why).

PartitionKey = account. RowKey `code_<connection uid>`: the code's HMAC (keyed by a key
derived from ENCRYPTION_KEYS, bound to the account, the connection and its destination), its
expiry and the tries left; a new code replaces the last. RowKey `tenant_<tenant id>`: when
consent was granted. A stolen table gives no code: they are kept only as HMACs.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from shared.service.ownership import CODE_LIFETIME, CODE_TRIES, normalized

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient


class OwnershipRepository:
    def __init__(self, table: TableClient, key: bytes) -> None:
        self._table = table
        self._key = key

    async def keep_code(
        self, account: str, uid: UUID, destination: str, code: str, now: datetime
    ) -> None:
        """The connection's code (the last one stops working); only its HMAC is kept."""
        row = {
            "PartitionKey": account,
            "RowKey": f"code_{uid}",
            "CodeHash": self._digest(account, uid, destination, code),
            "ExpiresAt": now + CODE_LIFETIME,
            "TriesLeft": CODE_TRIES,
        }
        await self._table.upsert_entity(row)

    async def redeem(
        self, account: str, uid: UUID, destination: str, code: str, now: datetime
    ) -> bool:
        """Whether `code` is the connection's unexpired code for this destination, within its
        tries; a right one is used up, a wrong one costs a try. Each write is conditional, so
        concurrent guesses cannot share a try."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            row = await self._table.get_entity(account, f"code_{uid}")
        except ResourceNotFoundError:
            return False
        if row["ExpiresAt"] <= now or row["TriesLeft"] <= 0:
            return False
        right = hmac.compare_digest(row["CodeHash"], self._digest(account, uid, destination, code))
        etag, unchanged = row.metadata["etag"], MatchConditions.IfNotModified
        try:
            if right:
                await self._table.delete_entity(
                    account, row["RowKey"], etag=etag, match_condition=unchanged
                )
            else:
                spent = {"PartitionKey": account, "RowKey": row["RowKey"]}
                await self._table.update_entity(
                    {**spent, "TriesLeft": row["TriesLeft"] - 1},
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=unchanged,
                )
        except (ResourceModifiedError, ResourceNotFoundError):  # another try came first
            return False
        return right

    async def forget_code(self, account: str, uid: UUID) -> None:
        # delete_entity takes a missing entity for success
        await self._table.delete_entity(account, f"code_{uid}")

    async def delete_expired(self, now: datetime) -> int:
        """Codes never redeemed, once expired (the purge); how many went."""
        from shared.storage import delete_expired

        return await delete_expired(self._table, now)

    async def bind_tenant(self, account: str, tenant: str, now: datetime) -> None:
        row = {"PartitionKey": account, "RowKey": f"tenant_{tenant.lower()}", "ConsentedAt": now}
        await self._table.upsert_entity(row)

    async def tenant_bound(self, account: str, tenant: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            await self._table.get_entity(account, f"tenant_{tenant.lower()}")
        except ResourceNotFoundError:
            return False
        return True

    def _digest(self, account: str, uid: UUID, destination: str, code: str) -> str:
        message = f"{account}\n{uid}\n{destination}\n{normalized(code)}".encode()
        return hmac.digest(self._key, message, "sha256").hex()
