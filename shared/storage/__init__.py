"""Adapters to the app's own storage account: one small class per table, queue or container."""

from __future__ import annotations

from datetime import datetime
from typing import Any


async def delete_expired(table: Any, now: datetime) -> int:
    """Remove a table's rows whose `ExpiresAt` has passed (the purge); how many went. For
    small tables of short-lived proofs: one filtered scan."""
    rows = table.query_entities(
        "ExpiresAt le @now", parameters={"now": now}, select=["PartitionKey", "RowKey"]
    )
    expired = [(row["PartitionKey"], row["RowKey"]) async for row in rows]
    for partition, row_key in expired:
        await table.delete_entity(partition, row_key)
    return len(expired)
