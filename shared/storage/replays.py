"""The `replays` table: one row per bulk replay, its window and its progress.

PartitionKey = the connection's log partition (a re-created connection starts without any),
RowKey = the replay id. The worker advances Sent, Failed and Cursor together, in one write
after each chunk, on the condition that the row is as it read it (its ETag): a chunk run twice
(a killed host) is sent twice but counted once, and two runs of one replay never both count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.errors import NotFound
from shared.models import Replay

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient


class ReplayMoved(Exception):
    """The row changed since it was read: another run of the same replay is ahead."""


@dataclass(frozen=True)
class ReplayRow:
    partition: str  # the connection's log partition
    replay_id: UUID
    account: str
    connection_uid: UUID
    since: datetime
    until: datetime
    only_failed: bool
    event_keys: list[str] | None
    matched: int
    created_at: datetime
    sent: int = 0
    failed: int = 0
    cursor: str = ""  # the last record done (see MessageLog.oldest)
    done: bool = False
    etag: str | None = None

    def view(self) -> Replay:
        return Replay(
            replay_id=self.replay_id,
            matched=self.matched,
            sent=self.sent,
            failed=self.failed,
            done=self.done,
            since=self.since,
            until=self.until,
            only_failed=self.only_failed,
            event_keys=self.event_keys,
        )


class ReplayRepository:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def add(self, row: ReplayRow) -> None:
        await self._table.create_entity(_to_entity(row))

    async def get(self, partition: str, replay_id: UUID) -> ReplayRow:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(partition, str(replay_id))
        except ResourceNotFoundError:
            raise NotFound(f"no replay {replay_id}") from None
        return _from_entity(entity)

    async def advance(self, row: ReplayRow) -> ReplayRow:
        """Write the row's progress if nobody wrote it since `row` was read; the row as
        written (with its new ETag), else ReplayMoved."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            written = await self._table.update_entity(
                _to_entity(row),
                mode=UpdateMode.REPLACE,
                etag=row.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ReplayMoved(str(row.replay_id)) from None
        return replace(row, etag=written["etag"])

    async def created_before(self, before: datetime) -> list[tuple[str, str]]:
        """(PartitionKey, RowKey) of the rows of replays asked for before `before`; the table
        holds a few rows per connection and fortnight, so one filtered scan is enough."""
        rows = self._table.query_entities(
            "CreatedAt lt @before", parameters={"before": before}, select=["PartitionKey", "RowKey"]
        )
        return [(r["PartitionKey"], r["RowKey"]) async for r in rows]

    async def delete(self, partition: str, replay_id: str) -> None:
        await self._table.delete_entity(partition, replay_id)


def _to_entity(row: ReplayRow) -> dict[str, Any]:
    return {
        "PartitionKey": row.partition,
        "RowKey": str(row.replay_id),
        "Account": row.account,
        "ConnectionUid": str(row.connection_uid),
        "Since": row.since,
        "Until": row.until,
        "OnlyFailed": row.only_failed,
        "EventKeys": json.dumps(row.event_keys),
        "Matched": row.matched,
        "CreatedAt": row.created_at,
        "Sent": row.sent,
        "Failed": row.failed,
        "Cursor": row.cursor,
        "Done": row.done,
    }


def _from_entity(e: Any) -> ReplayRow:
    return ReplayRow(
        partition=e["PartitionKey"],
        replay_id=UUID(e["RowKey"]),
        account=e["Account"],
        connection_uid=UUID(e["ConnectionUid"]),
        since=e["Since"],
        until=e["Until"],
        only_failed=e["OnlyFailed"],
        event_keys=json.loads(e["EventKeys"]),
        matched=e["Matched"],
        created_at=e["CreatedAt"],
        sent=e["Sent"],
        failed=e["Failed"],
        cursor=e["Cursor"],
        done=e["Done"],
        etag=e.metadata["etag"],
    )
