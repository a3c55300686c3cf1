"""`health migrate`: move the health rows of an older version (table `connectionhealth`,
RowKey = connection Uid) beside their connections (shared/storage/healthrows.py).

Run once right after deploying; until then a connection whose row has not moved shows Healthy
and is not held back as Suspended. A row is written to the new place unless one is there
already (this version wrote it since: newer), except that a Suspended row always moves, since
only an owner's resume or verified save ends a suspension. Each row is deleted from the old
table once moved, and a health row whose connection is gone is deleted alone, so a run is
idempotent and a run cut off continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from shared.errors import NotFound
from shared.models.connection import HealthStatus
from shared.storage.healthrows import health_from_entity

if TYPE_CHECKING:
    from shared.services import Services

OLD_TABLE = "connectionhealth"


@dataclass
class Moved:
    moved: int = 0  # written beside their connection
    kept: int = 0  # the new place held a newer row
    orphans: int = 0  # their connection is gone


async def migrate_health(services: Services) -> Moved:
    """Move every row of the old table (none if the table does not exist)."""
    from azure.core.exceptions import ResourceNotFoundError

    old = services.storage.tables.get_table_client(OLD_TABLE)
    done = Moved()
    try:
        rows = [row async for row in old.list_entities()]
    except ResourceNotFoundError:
        return done
    for row in rows:
        account, uid = row["PartitionKey"], UUID(row["RowKey"])
        state = health_from_entity(row)
        try:
            _, current = await services.connections.read(account, uid)
        except NotFound:
            done.orphans += 1
        else:
            if current is None or state.status == HealthStatus.SUSPENDED:
                await services.health.put(account, uid, state)
                done.moved += 1
            else:
                done.kept += 1
        await old.delete_entity(account, row["RowKey"])
    return done
