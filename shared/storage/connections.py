"""The `connections` table: PartitionKey = account, RowKey = connection Uid.

Both connection strings are stored sealed (AES-GCM, see crypto.py), whole; the masked form
the API shows is derived from them on read. Each connection's health row sorts right after
it (shared/storage/healthrows.py): `read` and `for_account_with_health` take both in one
query; the other reads skip health rows. `LogPartition` names the connection's partition
of the message log: new for every connection made, so a deleted and re-made Uid never shows
the old records. A deleted connection leaves a tombstone (PartitionKey `~deleted`) from which
the purge removes its records.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared import connstrings
from shared.crypto import KeyRing
from shared.dispatch.readcache import SharedReads
from shared.errors import Conflict, InvalidField, NotFound
from shared.models.connection import Connection
from shared.models.connectioninput import EventSettings
from shared.models.deliveryoptions import OPTIONS_BY_FIELD
from shared.service.ownership import confirmed_after_change, destination
from shared.storage import tablequery
from shared.storage.healthrows import HEALTH_SUFFIX, health_from_entity, is_health_row, uid_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from azure.data.tables.aio import TableClient

    from shared.health import HealthState

TOMBSTONES = "~deleted"
# The `DeliveryOptions` column: every delivery option's field, and the Entra ID settings.
ENTRA_ID_FIELDS = {
    "authentication",
    "fully_qualified_namespace",
    "tenant_id",
    "blob_service_uri",
}
OPTION_FIELDS = set(OPTIONS_BY_FIELD) | ENTRA_ID_FIELDS
REPLACE_ATTEMPTS = 10  # `~` sorts after every account name and is refused in one
# Rows kept parsed, by etag: opening both secrets and building the model cost 84 us a row,
# the largest part of our own CPU in a GET (docs/BENCHMARKS.md). A few KB each.
PARSED_ROWS = 10_000


@dataclass(frozen=True)
class StoredConnection:
    """A connection with its real secrets, as the dispatcher needs it. Never returned as is."""

    account: str
    connection: Connection
    log_partition: str
    updated_at: datetime | None = None

    @property
    def uid(self) -> UUID:
        return self.connection.uid

    def masked(self) -> Connection:
        """The connection as shown (secrets as ***); made once per parsed row (a parse is kept
        per etag, and parsing the connection strings again was 2% of a GET's host CPU)."""
        return self._masked

    @cached_property
    def _masked(self) -> Connection:
        def mask(value: str | None) -> str | None:
            return value and connstrings.masked(value)

        c = self.connection
        return c.model_copy(
            update={
                "service_bus_connection_string": mask(c.service_bus_connection_string),
                "blob_container_connection_string": mask(c.blob_container_connection_string),
            }
        )


class ConnectionRepository:
    """`recent_seconds`: how old a connection `recent` answers with may be (`timer`: seconds
    on a clock that never goes back)."""

    def __init__(
        self,
        table: TableClient,
        keys: KeyRing,
        parsed_rows: int = PARSED_ROWS,
        *,
        recent_seconds: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._keys = keys
        self.parsed_rows = parsed_rows
        self.parsed_hits = self.parsed_misses = 0  # counters for logs and tests
        # (account, Uid) -> (etag, the row parsed): a row read again unchanged is not reparsed
        self._parsed: OrderedDict[tuple[str, str], tuple[str, StoredConnection]] = OrderedDict()
        self._recent: SharedReads[tuple[str, UUID], StoredConnection] = SharedReads(
            lambda key: self.get(*key), recent_seconds, timer=timer
        )

    # ----------------------------------------------------------- reads

    async def for_account(self, account: str) -> list[StoredConnection]:
        return [c for c, _ in await self.for_account_with_health(account)]

    async def for_account_with_health(
        self, account: str
    ) -> list[tuple[StoredConnection, HealthState | None]]:
        """The account's connections, each with its health row if it has one: one query."""
        rows = tablequery.rows(self._table, "PartitionKey eq @account", {"account": account})
        connections: dict[UUID, StoredConnection] = {}
        health: dict[UUID, HealthState] = {}
        async for row in rows:
            if is_health_row(row["RowKey"]):
                health[uid_of(row["RowKey"])] = health_from_entity(tablequery.entity(row))
            else:
                connections[uid_of(row["RowKey"])] = self._from_row(row)
        return [(c, health.get(uid)) for uid, c in connections.items()]

    async def count(self, account: str) -> int:
        query = self._table.query_entities(
            "PartitionKey eq @account", parameters={"account": account}, select=["RowKey"]
        )
        return len([e async for e in query if not is_health_row(e["RowKey"])])

    async def get(self, account: str, uid: UUID) -> StoredConnection:
        return self._from_entity(await self._get_entity(account, uid))

    async def recent(self, account: str, uid: UUID) -> StoredConnection:
        """The connection as read at most `recent_seconds` ago by this process: for reads of
        its log, which need only its account (the key of the read) and its log partition.
        What this process writes or deletes is seen at once (each write forgets its key);
        another process's change within `recent_seconds`. NotFound is never kept."""
        return await self._recent.get((account, uid))

    async def read(self, account: str, uid: UUID) -> tuple[StoredConnection, HealthState | None]:
        """A connection and its health row if it has one, in one range query (NotFound
        without the connection): the two rows are neighbours."""
        rows = tablequery.rows(
            self._table,
            "PartitionKey eq @account and RowKey ge @uid and RowKey le @health",
            {"account": account, "uid": str(uid), "health": f"{uid}{HEALTH_SUFFIX}"},
        )
        stored: StoredConnection | None = None
        health: HealthState | None = None
        async for row in rows:
            if is_health_row(row["RowKey"]):
                health = health_from_entity(tablequery.entity(row))
            else:
                stored = self._from_row(row)
        if stored is None:  # a health row alone: deleted meanwhile
            raise NotFound(f"no connection {uid}")
        return stored, health

    async def tombstones(self) -> list[dict[str, Any]]:
        query = self._table.query_entities(
            "PartitionKey eq @p",
            parameters={"p": TOMBSTONES},
            select=["RowKey", "Account", "DeletedAt"],
        )
        return [e async for e in query]

    async def all_log_partitions(self) -> list[str]:
        """Every live connection's log partition, across accounts (for the purge)."""
        query = self._table.query_entities(
            "PartitionKey ne @p", parameters={"p": TOMBSTONES}, select=["LogPartition"]
        )
        return [e["LogPartition"] async for e in query if e.get("LogPartition")]  # not health

    async def log_partition_of(self, uid: UUID) -> str:
        """A live connection's log partition, whatever its account (for operators' commands)."""
        query = self._table.query_entities(
            "RowKey eq @uid and PartitionKey ne @p",
            parameters={"uid": str(uid), "p": TOMBSTONES},
            select=["LogPartition"],
        )
        async for e in query:
            return str(e["LogPartition"])
        raise NotFound(f"no connection {uid}")

    async def exists(self, account: str, uid: UUID) -> bool:
        try:
            await self._get_entity(account, uid)
        except NotFound:
            return False
        return True

    async def with_stored_secrets(self, account: str, connection: Connection) -> StoredConnection:
        """`connection` as a PUT would store it now: `***` replaced by the stored secrets."""
        current = await self.get(account, connection.uid)
        complete = _with_secrets_of(connection, current.connection)
        return StoredConnection(account, complete, current.log_partition, current.updated_at)

    # ---------------------------------------------------------- writes

    async def add(self, account: str, connection: Connection, now: datetime) -> StoredConnection:
        from azure.core.exceptions import ResourceExistsError

        stored = StoredConnection(account, connection, secrets.token_hex(16), now)
        try:
            await self._table.create_entity(self._to_entity(stored))
        except ResourceExistsError:
            raise Conflict(f"connection {connection.uid} exists already") from None
        finally:  # after the write: a read begun before it may have kept the old answer
            self._recent.forget((account, connection.uid))
        return stored

    async def replace(
        self, account: str, connection: Connection, now: datetime
    ) -> StoredConnection:
        """Replace a connection; `***` in its connection strings keeps the stored secrets.

        The write is conditional on what was read, so a concurrent delete is never undone
        and a concurrent replace is merged against the newest secrets (last writer wins).
        """
        try:
            return await self._replace(account, connection, now)
        finally:
            self._recent.forget((account, connection.uid))

    async def _replace(
        self, account: str, connection: Connection, now: datetime
    ) -> StoredConnection:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        for _ in range(REPLACE_ATTEMPTS):
            current_entity = await self._get_entity(account, connection.uid)
            current = self._from_entity(current_entity)
            stored = StoredConnection(
                account,
                _with_secrets_of(connection, current.connection),
                current.log_partition,
                now,
            )
            try:
                await self._table.update_entity(
                    self._to_entity(stored),
                    mode=UpdateMode.REPLACE,
                    etag=current_entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return stored
            except ResourceNotFoundError:
                raise NotFound(f"no connection {connection.uid}") from None
            except ResourceModifiedError:  # changed since we read it: read again, a bit later
                await asyncio.sleep(random.uniform(0, 0.02))
        raise Conflict(f"connection {connection.uid} keeps changing; try again")

    async def confirm(self, account: str, uid: UUID, confirmed_for: str) -> StoredConnection:
        """Mark a connection confirmed, if it still sends where the code was issued for
        (InvalidField naming Code otherwise); conditional on what was read."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import UpdateMode

        entity = await self._get_entity(account, uid)
        current = self._from_entity(entity)
        if destination(current.connection) != confirmed_for:
            raise InvalidField("Code", "the connection changed since the code was sent")
        try:
            await self._table.update_entity(
                {"PartitionKey": account, "RowKey": str(uid), "Confirmed": True},
                mode=UpdateMode.MERGE,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            raise Conflict(f"connection {uid} changed meanwhile; try again") from None
        finally:
            self._recent.forget((account, uid))
        confirmed = current.connection.model_copy(update={"confirmed": True})
        return StoredConnection(account, confirmed, current.log_partition, current.updated_at)

    async def delete(self, account: str, uid: UUID, now: datetime) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        entity = await self._get_entity(account, uid)
        tombstone = {
            "PartitionKey": TOMBSTONES,
            "RowKey": entity["LogPartition"],
            "Account": account,
            "ConnectionUid": str(uid),
            "DeletedAt": now,
        }
        await self._table.upsert_entity(tombstone)
        try:
            await self._table.delete_entity(account, str(uid))
        except ResourceNotFoundError:
            raise NotFound(f"no connection {uid}") from None
        finally:  # after the delete: 404 at once in this process (`recent`)
            self._recent.forget((account, uid))

    async def forget_tombstone(self, log_partition: str) -> None:
        await self._table.delete_entity(TOMBSTONES, log_partition)

    # --------------------------------------------------------- mapping

    async def _get_entity(self, account: str, uid: UUID) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await self._table.get_entity(account, str(uid))
        except ResourceNotFoundError:
            raise NotFound(f"no connection {uid}") from None

    def _to_entity(self, stored: StoredConnection) -> dict[str, Any]:
        c = stored.connection
        owner = f"{stored.account}/{c.uid}"
        entity: dict[str, Any] = {
            "PartitionKey": stored.account,
            "RowKey": str(c.uid),
            "Title": c.title,
            "QueueName": c.queue_name,
            "BlobContainerName": c.blob_container_name,
            "Active": c.active,
            "EnabledEvents": json.dumps(c.enabled_events),
            "AdvancedSettings": json.dumps(
                {k: v.to_json() for k, v in c.advanced_settings.items()}
            ),
            "LogPartition": stored.log_partition,
            "UpdatedAt": stored.updated_at,
            "Confirmed": c.confirmed,  # issue 23: an Entra ID connection's owner confirmed it
            # The delivery options (issue 16) in one column; absent means every default.
            "DeliveryOptions": json.dumps(c.model_dump(mode="json", include=OPTION_FIELDS)),
        }
        if c.service_bus_connection_string:  # none with Authentication EntraId
            entity["ServiceBusConnectionString"] = self._keys.seal(
                c.service_bus_connection_string, owner
            )
        if c.blob_container_connection_string:
            entity["BlobContainerConnectionString"] = self._keys.seal(
                c.blob_container_connection_string, owner
            )
        return {k: v for k, v in entity.items() if v is not None}

    def _from_entity(self, entity: Any) -> StoredConnection:
        """The SDK's entity as a StoredConnection; parsed again only when its etag changed."""
        etag = getattr(entity, "metadata", {}).get("etag")
        return self._kept_or(entity["PartitionKey"], entity["RowKey"], etag, lambda: entity)

    def _from_row(self, row: dict[str, Any]) -> StoredConnection:
        """A row as the service sent it (shared/storage/tablequery.py), converted to an entity
        only when its etag changed (the conversion, dates parsed, was 4% of a GET's CPU)."""
        etag = tablequery.etag(row)
        return self._kept_or(
            row["PartitionKey"], row["RowKey"], etag, lambda: tablequery.entity(row)
        )

    def _kept_or(
        self, account: str, uid: str, etag: str | None, entity: Callable[[], Any]
    ) -> StoredConnection:
        key = (account, uid)
        kept = self._parsed.get(key)
        if etag and kept is not None and kept[0] == etag:
            self.parsed_hits += 1
            self._parsed.move_to_end(key)
            return kept[1]
        self.parsed_misses += 1
        stored = self._parse(entity())
        if etag:
            self._parsed[key] = (etag, stored)
            self._parsed.move_to_end(key)
            while len(self._parsed) > self.parsed_rows:
                self._parsed.popitem(last=False)
        return stored

    def _parse(self, entity: Any) -> StoredConnection:
        account, uid = entity["PartitionKey"], entity["RowKey"]
        owner = f"{account}/{uid}"
        blob = entity.get("BlobContainerConnectionString")
        sb = entity.get("ServiceBusConnectionString")
        connection = Connection.model_construct(  # stored data was validated on the way in
            uid=UUID(uid),
            title=entity.get("Title"),
            service_bus_connection_string=sb and self._keys.open(sb, owner),
            queue_name=entity["QueueName"],
            blob_container_connection_string=blob and self._keys.open(blob, owner),
            blob_container_name=entity.get("BlobContainerName"),
            active=entity.get("Active", True),
            enabled_events=json.loads(entity.get("EnabledEvents", "[]")),
            advanced_settings={
                k: EventSettings.model_validate(v)
                for k, v in json.loads(entity.get("AdvancedSettings", "{}")).items()
            },
        )
        if options := entity.get("DeliveryOptions"):
            connection = connection.model_copy(update=_options(json.loads(options)))
        # Saved before confirmations existed: an Entra ID connection is unconfirmed then.
        confirmed = entity.get("Confirmed", connection.authentication != "EntraId")
        connection = connection.model_copy(update={"confirmed": confirmed})
        return StoredConnection(
            account, connection, entity["LogPartition"], entity.get("UpdatedAt")
        )


def _options(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored delivery options as field values (validated when saved)."""
    options = {k: v for k, v in stored.items() if k in OPTION_FIELDS}
    for name, option in OPTIONS_BY_FIELD.items():
        if name in options:
            options[name] = option.load(options[name])
    if options.get("tenant_id"):
        options["tenant_id"] = UUID(options["tenant_id"])
    return options


def _with_secrets_of(sent: Connection, stored: Connection) -> Connection:
    """`sent` with the stored secrets where it says `***`, and confirmed only if it was and
    still sends where it was confirmed for."""
    return sent.model_copy(
        update={
            "confirmed": confirmed_after_change(stored, sent),
            "service_bus_connection_string": _restore(
                "ServiceBusConnectionString",
                sent.service_bus_connection_string,
                stored.service_bus_connection_string,
            ),
            "blob_container_connection_string": _restore(
                "BlobContainerConnectionString",
                sent.blob_container_connection_string,
                stored.blob_container_connection_string,
            ),
        }
    )


def _restore(field: str, sent: str | None, stored: str | None) -> str | None:
    if sent is None or connstrings.MASK not in sent:
        return sent
    parts = connstrings.parse_any(sent)
    try:
        return connstrings.render(
            connstrings.restore_masked(parts, connstrings.parse_any(stored) if stored else None)
        )
    except connstrings.ConnectionStringError as e:
        raise InvalidField(field, str(e)) from None
