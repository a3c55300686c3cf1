"""Health rows, kept in the `connections` table beside their connection: PartitionKey =
account, RowKey = `<connection Uid>~health`, which sorts right after the connection's own row
(Uids are all 36 characters), so one range query reads a connection with its health and one
partition query an account's connections with theirs. A separate entity, so health writes
never touch the connection row's etag that PUT relies on. A connection without a row is
Healthy since it was saved.

The rows of an older version, in the table `connectionhealth` (RowKey = Uid), are not read:
`health migrate` (shared/service/healthmove.py) moves them here once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.models.records import DeliveryError

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

UPDATE_ATTEMPTS = 10
HEALTH_SUFFIX = "~health"  # `~` sorts after every character of a Uid


def health_key(uid: UUID) -> str:
    return f"{uid}{HEALTH_SUFFIX}"


def is_health_row(row_key: str) -> bool:
    return row_key.endswith(HEALTH_SUFFIX)


def uid_of(row_key: str) -> UUID:
    """The connection Uid of a connection's row or of its health row."""
    return UUID(row_key.removesuffix(HEALTH_SUFFIX))


class HealthRepository:
    """`table` is the connections table (shared/storage/connections.py reads both kinds of
    row at once; this class writes health rows and reads them alone)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def get(self, account: str, uid: UUID) -> HealthState | None:
        """A query rather than a point read: most connections have no row, and the SDK's
        404 is an exception it takes longer to build than the answer."""
        query = self._table.query_entities(
            "PartitionKey eq @account and RowKey eq @key",
            parameters={"account": account, "key": health_key(uid)},
        )
        async for entity in query:
            return health_from_entity(entity)
        return None

    async def suspended(self, account: str) -> set[UUID]:
        """Only health rows have a Status."""
        query = self._table.query_entities(
            "PartitionKey eq @account and Status eq @s",
            parameters={"account": account, "s": str(HealthStatus.SUSPENDED)},
            select=["RowKey"],
        )
        return {uid_of(e["RowKey"]) async for e in query}

    async def put(self, account: str, uid: UUID, state: HealthState) -> None:
        """Write `state` whatever is stored (a save or a resume decides it)."""
        from azure.data.tables import UpdateMode

        await self._table.upsert_entity(_to_entity(account, uid, state), mode=UpdateMode.REPLACE)

    async def update(
        self,
        account: str,
        uid: UUID,
        change: Callable[[HealthState | None], HealthState],
    ) -> HealthState:
        """Write `change(stored)`, conditional on the stored row not changing meanwhile (other
        processes merge their outcomes too: none is lost)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode

        for _ in range(UPDATE_ATTEMPTS):
            try:
                entity = await self._table.get_entity(account, health_key(uid))
            except ResourceNotFoundError:
                entity = None
            state = change(health_from_entity(entity) if entity else None)
            new = _to_entity(account, uid, state)
            try:
                if entity is None:
                    await self._table.create_entity(new)
                else:
                    await self._table.update_entity(
                        new,
                        mode=UpdateMode.REPLACE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                return state
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                await asyncio.sleep(random.uniform(0, 0.02))  # another writer: merge again
        raise RuntimeError(f"health of connection {uid} keeps changing")

    async def delete(self, account: str, uid: UUID) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            await self._table.delete_entity(account, health_key(uid))


def _to_entity(account: str, uid: UUID, state: HealthState) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": account,
        "RowKey": health_key(uid),
        "Status": str(state.status),
        "Since": state.since,
        "LastSuccessAt": state.last_success_at,
        "LastFailureAt": state.last_failure_at,
        "ConsecutiveFailures": state.consecutive_failures,
        "LastError": state.last_error and state.last_error.model_dump_json(by_alias=True),
        "FailingSince": state.failing_since,
    }
    return {k: v for k, v in entity.items() if v is not None}


def health_from_entity(entity: Any) -> HealthState:
    """A health row as read (also a row of the older `connectionhealth` table)."""
    error = entity.get("LastError")
    return HealthState(
        status=HealthStatus(entity["Status"]),
        since=entity["Since"],
        last_success_at=entity.get("LastSuccessAt"),
        last_failure_at=entity.get("LastFailureAt"),
        consecutive_failures=int(entity.get("ConsecutiveFailures", 0)),
        last_error=DeliveryError.model_validate(json.loads(error)) if error else None,
        failing_since=entity.get("FailingSince"),
    )
