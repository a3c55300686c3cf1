"""The `connectionhealth` table: PartitionKey = account, RowKey = connection Uid, one small
row per connection. Its own table, so health writes never touch the connection row's etag
that PUT relies on. A connection without a row is Healthy since it was saved."""

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


class HealthRepository:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def get(self, account: str, uid: UUID) -> HealthState | None:
        """A query rather than a point read: most connections have no row, and the SDK's
        404 is an exception it takes longer to build than the answer."""
        query = self._table.query_entities(
            "PartitionKey eq @account and RowKey eq @uid",
            parameters={"account": account, "uid": str(uid)},
        )
        async for entity in query:
            return _from_entity(entity)
        return None

    async def for_account(self, account: str) -> dict[UUID, HealthState]:
        query = self._table.query_entities(
            "PartitionKey eq @account", parameters={"account": account}
        )
        return {UUID(e["RowKey"]): _from_entity(e) async for e in query}

    async def suspended(self, account: str) -> set[UUID]:
        query = self._table.query_entities(
            "PartitionKey eq @account and Status eq @s",
            parameters={"account": account, "s": str(HealthStatus.SUSPENDED)},
            select=["RowKey"],
        )
        return {UUID(e["RowKey"]) async for e in query}

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
                entity = await self._table.get_entity(account, str(uid))
            except ResourceNotFoundError:
                entity = None
            state = change(_from_entity(entity) if entity else None)
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
            await self._table.delete_entity(account, str(uid))


def _to_entity(account: str, uid: UUID, state: HealthState) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": account,
        "RowKey": str(uid),
        "Status": str(state.status),
        "Since": state.since,
        "LastSuccessAt": state.last_success_at,
        "LastFailureAt": state.last_failure_at,
        "ConsecutiveFailures": state.consecutive_failures,
        "LastError": state.last_error and state.last_error.model_dump_json(by_alias=True),
        "FailingSince": state.failing_since,
    }
    return {k: v for k, v in entity.items() if v is not None}


def _from_entity(entity: Any) -> HealthState:
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
