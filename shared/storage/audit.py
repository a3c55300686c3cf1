"""The `audit` table: who changed what (issue 26), one row per change, kept 90 days.

PartitionKey is the UTC day (`YYYYMMDD`), so the purge deletes whole past days; RowKey is
`<account>|<inverted milliseconds>|<random>`, so an account's entries of a day are one range,
newest first. An account id never holds `|` (shared/storage/apikeys.ACCOUNT_ID).

An entry is written `attempted` before its change and completed after it (`done`, or
`refused` when the change was refused and nothing changed): see shared/service/audit.py.
Rows written before outcomes existed read as `done`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

KEEP_DAYS = 90
_MOST_MILLIS = 10**15

ATTEMPTED = "attempted"  # written before the change: it may or may not have been made
DONE = "done"
REFUSED = "refused"  # the change was refused (a 4xx): nothing changed


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    key_id: str  # "" for a portal session
    action: str  # e.g. connection.create, apikey.rotate
    target: str  # a connection uid or a key id; never a secret
    outcome: str = DONE


@dataclass(frozen=True)
class EntryRef:
    """Where an entry was written, to complete it."""

    partition: str
    row: str


def _day(at: datetime) -> str:
    return at.strftime("%Y%m%d")


class AuditLog:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def record(self, account: str, entry: AuditEntry) -> EntryRef:
        inverted = _MOST_MILLIS - int(entry.at.timestamp() * 1000)
        ref = EntryRef(_day(entry.at), f"{account}|{inverted:015d}|{secrets.token_hex(4)}")
        await self._table.create_entity(
            {
                "PartitionKey": ref.partition,
                "RowKey": ref.row,
                "At": entry.at,
                "KeyId": entry.key_id,
                "Action": entry.action,
                "Target": entry.target,
                "Outcome": entry.outcome,
            }
        )
        return ref

    async def complete(self, ref: EntryRef, outcome: str, target: str) -> None:
        """Set an entry's outcome, and its target once known (a new connection's uid)."""
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": ref.partition, "RowKey": ref.row, "Outcome": outcome}
        await self._table.update_entity({**entity, "Target": target}, mode=UpdateMode.MERGE)

    async def page(
        self, account: str, now: datetime, size: int, after: str | None = None
    ) -> tuple[list[AuditEntry], str | None]:
        """Up to `size` entries of the account, newest first, after the cursor `after`
        (`<day>:<row key>` of the last one seen); and the cursor of the next page, if any."""
        start_day, start_row = after.split(":", 1) if after else (_day(now), f"{account}|")
        if not start_row.startswith(f"{account}|"):  # another account's cursor reads nothing
            raise ValueError("not a cursor of this account")
        entries: list[tuple[str, AuditEntry]] = []
        day = datetime.strptime(start_day, "%Y%m%d").replace(tzinfo=now.tzinfo)  # ValueError
        oldest = now - timedelta(days=KEEP_DAYS + 1)
        while day >= oldest and len(entries) <= size:
            query = self._table.query_entities(
                "PartitionKey eq @d and RowKey gt @from and RowKey lt @to",
                parameters={"d": _day(day), "from": start_row, "to": f"{account}}}"},
                results_per_page=size + 1,
            )
            async for e in query:
                entries.append((f"{_day(day)}:{e['RowKey']}", _entry(e)))
                if len(entries) > size:
                    break
            day, start_row = day - timedelta(days=1), f"{account}|"
        more = len(entries) > size
        return [e for _, e in entries[:size]], entries[size - 1][0] if more else None

    async def purge(self, now: datetime) -> int:
        """Delete the days older than KEEP_DAYS; how many entries went."""
        query = self._table.query_entities(
            "PartitionKey lt @d", parameters={"d": _day(now - timedelta(days=KEEP_DAYS))},
            select=["PartitionKey", "RowKey"],
        )  # fmt: skip
        removed = 0
        async for e in query:
            await self._table.delete_entity(e["PartitionKey"], e["RowKey"])
            removed += 1
        return removed


def _entry(e: dict[str, object]) -> AuditEntry:
    at = e["At"]
    assert isinstance(at, datetime)
    outcome = str(e.get("Outcome") or DONE)
    return AuditEntry(at, str(e["KeyId"]), str(e["Action"]), str(e["Target"]), outcome)
