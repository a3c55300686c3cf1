"""Backing up what cannot be made again, and putting it back: `python -m shared.cli backup
export DIR` and `backup restore DIR` (docs/DEPLOYMENT.md, "Backup and restore").

The connections (their secrets stay sealed with the key ring: a backup is useless without
the ring, which is backed up from Key Vault), with the health rows kept beside them, and the
API keys (only their hashes). The other tables are short-lived (portal sessions, replays) or a
14-day log of what was delivered (messages): not worth restoring.

One JSON Lines file per table, an entity a line, every property with its Table type (`Edm.*`),
so that a restore writes back exactly what was read. A restore upserts: run twice, or onto a
table that still holds some of it, it leaves one copy of each entity.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.storage.clients import API_KEYS_TABLE, CONNECTIONS_TABLE, OWNERSHIP_TABLE

if TYPE_CHECKING:
    from shared.storage.clients import StorageClients

DEFAULT_TABLES = (CONNECTIONS_TABLE, API_KEYS_TABLE, OWNERSHIP_TABLE)
SUFFIX = ".jsonl"


def encode(entity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An entity as JSON: {name: {"Edm.<Type>": value}}."""
    from azure.data.tables import EntityProperty

    def typed(value: Any) -> dict[str, Any]:
        if isinstance(value, EntityProperty):
            return {str(getattr(value.edm_type, "value", value.edm_type)): str(value.value)}
        if isinstance(value, bool):
            return {"Edm.Boolean": value}
        if isinstance(value, int):
            return {"Edm.Int32" if -(2**31) <= value < 2**31 else "Edm.Int64": value}
        if isinstance(value, float):
            return {"Edm.Double": value}
        if isinstance(value, datetime):
            return {"Edm.DateTime": value.isoformat()}
        if isinstance(value, bytes):
            return {"Edm.Binary": base64.b64encode(value).decode()}
        if isinstance(value, uuid.UUID):
            return {"Edm.Guid": str(value)}
        return {"Edm.String": str(value)}

    return {name: typed(value) for name, value in entity.items()}


def decode(line: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The entity `encode` wrote, with the same Table types."""
    from azure.data.tables import EdmType, EntityProperty

    def value(typed: dict[str, Any]) -> Any:
        ((kind, raw),) = typed.items()
        if kind == "Edm.Int64":
            return EntityProperty(int(raw), EdmType.INT64)
        if kind == "Edm.DateTime":
            return datetime.fromisoformat(raw)
        if kind == "Edm.Binary":
            return base64.b64decode(raw)
        if kind == "Edm.Guid":
            return uuid.UUID(raw)
        return raw  # String, Int32, Double, Boolean: JSON keeps them

    return {name: value(typed) for name, typed in line.items()}


async def export(storage: StorageClients, folder: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Every entity of `tables` into `folder/<table>.jsonl`; how many, by table. (The files
    are written as the entities come: the command line's loop has nothing else to run.)"""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in tables:
        table, count = await storage.table(name), 0
        with (folder / f"{name}{SUFFIX}").open("w", encoding="utf-8") as out:
            async for entity in table.list_entities():
                out.write(json.dumps(encode(dict(entity)), ensure_ascii=False) + "\n")
                count += 1
        counts[name] = count
    return counts


async def restore(storage: StorageClients, folder: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Upsert the entities of `folder/<table>.jsonl` (as `export` wrote them); how many."""
    from azure.data.tables import UpdateMode

    counts: dict[str, int] = {}
    for name in tables:
        table, count = await storage.table(name), 0
        async for entity in _entities(folder / f"{name}{SUFFIX}"):
            await table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            count += 1
        counts[name] = count
    return counts


async def _entities(path: Path) -> AsyncIterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield decode(json.loads(line))
