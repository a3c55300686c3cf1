"""The `replays` table: one row per bulk replay, its window and its progress; which replay
of a connection runs; what each account replayed per hour.

    PartitionKey               RowKey        what
    connection log partition   replay id     a replay (a re-created connection has none)
    connection log partition   `running`     the replay running now: one at a time
    `budget_<account>`         `YYYYMMDDHH`  deliveries the account's replays matched that hour

The worker advances Sent, Failed and Cursor together, in one write after each chunk, on the
condition that the row is as it read it (its ETag): a chunk run twice (a killed host) is sent
twice but counted once, and two runs of one replay never both count. The `running` row is
made with an insert, so of two requests at once one gets it; it is taken over when its replay
is done, gone, or has not moved for STALE (its queue message poisoned, say). Every row has a
CreatedAt, by which the purge removes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.errors import NotFound
from shared.models.replays import Replay

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient


RUNNING = "running"
STALE = timedelta(minutes=15)  # a replay that long without progress no longer blocks another
_TRIES = 5  # of a write that lost a race with another request


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
    skipped: int = 0
    updated_at: datetime | None = None  # of the last chunk counted
    etag: str | None = None

    def running(self, now: datetime) -> bool:
        """Not done, and moving (or started) within STALE."""
        return not self.done and now - (self.updated_at or self.created_at) < STALE

    def view(self) -> Replay:
        return Replay(
            replay_id=self.replay_id,
            matched=self.matched,
            sent=self.sent,
            failed=self.failed,
            skipped=self.skipped,
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

    async def claim(self, row: ReplayRow, now: datetime) -> UUID | None:
        """Make `row` its connection's running replay; None when it is, else the id of the
        replay that still runs."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode

        mark = {
            "PartitionKey": row.partition,
            "RowKey": RUNNING,
            "ReplayId": str(row.replay_id),
            "CreatedAt": now,
        }
        for _ in range(_TRIES):
            try:
                await self._table.create_entity(mark)
                return None
            except ResourceExistsError:
                pass
            try:
                current = await self._table.get_entity(row.partition, RUNNING)
            except ResourceNotFoundError:  # released meanwhile
                continue
            other = UUID(current["ReplayId"])
            if await self._runs(row.partition, other, current["CreatedAt"], now):
                return other
            try:
                await self._table.update_entity(
                    mark,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return None
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # another request moved it first: look again
        raise RuntimeError(f"could not claim the running replay of {row.partition}")

    async def _runs(
        self, partition: str, replay_id: UUID, claimed: datetime, now: datetime
    ) -> bool:
        """Whether the replay holding the `running` row still runs. Its own row is written
        just after the claim: until then, the claim's age says."""
        try:
            return (await self.get(partition, replay_id)).running(now)
        except NotFound:
            return now - claimed < timedelta(minutes=1)

    async def release(self, row: ReplayRow) -> None:
        """Its connection may run another replay (if this one is still the running one)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            current = await self._table.get_entity(row.partition, RUNNING)
            if current["ReplayId"] == str(row.replay_id):
                await self._table.delete_entity(
                    row.partition,
                    RUNNING,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # released already, or taken over

    async def spend(self, account: str, hour: datetime, deliveries: int, budget: int) -> int | None:
        """Count `deliveries` against the account's `budget` for the hour starting at `hour`;
        None when they fit, else how many of the budget remain (nothing is counted)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode

        keys = {"PartitionKey": f"budget_{account}", "RowKey": f"{hour:%Y%m%d%H}"}
        for _ in range(_TRIES):
            try:
                current = await self._table.get_entity(keys["PartitionKey"], keys["RowKey"])
                used, etag = current["Replayed"], current.metadata["etag"]
            except ResourceNotFoundError:
                used, etag = 0, None
            if used + deliveries > budget:
                return max(0, budget - used)
            counted = {**keys, "Replayed": used + deliveries, "CreatedAt": hour}
            try:
                if etag is None:
                    await self._table.create_entity(counted)
                else:
                    await self._table.update_entity(
                        counted,
                        mode=UpdateMode.REPLACE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                return None
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another request counted first: count again
        raise RuntimeError(f"could not count the replays of {account}")

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
        "Skipped": row.skipped,
        "UpdatedAt": row.updated_at or row.created_at,
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
        skipped=e.get("Skipped") or 0,
        updated_at=e.get("UpdatedAt"),
        etag=e.metadata["etag"],
    )
