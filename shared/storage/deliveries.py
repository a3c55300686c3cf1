"""Delivery rows beside the message log (layout: shared/storage/messages.py; rules:
shared/deliveries.py).

    d_<message_id>          a delivery: State, Attempts, NextAttemptAt, Scheduled, Records,
                            and a copy of its latest record (RecordKey names it; its body
                            only up to COPIED_BODY_CHARS)
    u_<millis>_<uid>        while a delivery is not delivered: a copy of its latest attempt,
      (oldest first)        keyed by its first attempt's time (milliseconds, not inverted)
                            and Uid

Recording an attempt writes, in the transaction of its record (`operations`): the delivery row
(written blind by a first attempt, which reads nothing; else conditional on the ETag read, or
an insert when the read found none), its `u_` row (replaced while undelivered, deleted once
delivered), and its new state into its earlier records and their failure copies (property
`Delivery`), so that every attempt reads the delivery as it is now without a read per record.

The copy of the latest record (issue 26) makes a search by EventId or MessageId of a delivery
of one attempt one point read, as the `u_` row's copy does for the list of deliveries not
delivered: Azurite serves one request at a time, so each read is felt. Its size is bounded: the
record's (whose body is inline up to 32 K characters, else a blob named in it) less a body
over COPIED_BODY_CHARS (such a search reads the record for it), plus at most MAX_RECORDS keys.
Rows written before it have no copy: their records are read, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.deliveries import Delivery, DeliveryWrite
from shared.models.records import DeliveryState, DeliveryStatus, RequestMetadata
from shared.storage import loglisting, transactions
from shared.storage.logcounts import FAILURE, MAX_MILLIS, RECORDS_END, millis

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

DELIVERY = "d_"
UNDELIVERED = "u_"
_FAILED_MARK = "!"  # after a RowKey in `Records`: that attempt failed (it has a failure copy)
# A body longer than this stays out of the delivery row's copy: an event is usually a few KB,
# and every dispatch reads the row again (a re-send, a retry).
COPIED_BODY_CHARS = 8_000
# The record's marks for the purge and `log reindex`: they belong to the record, not the copy.
_NOT_COPIED = ("PartitionKey", "RowKey", "Counted", "Indexed", "OpensDelivery")


def delivery_key(message_id: str) -> str:
    return DELIVERY + message_id


def undelivered_key(first_record: str) -> str:
    """The `u_` RowKey of a delivery whose first attempt has RowKey `first_record`."""
    inverted_millis, uid = first_record[:13], first_record[14:]
    return f"{UNDELIVERED}{MAX_MILLIS - int(inverted_millis):013d}_{uid}"


def undelivered_range(after: int | None, upto: int | None) -> tuple[str, str]:
    """[start, end) of the `u_` rows whose first attempt is after `after` and at most `upto`
    (milliseconds; None: unbounded)."""
    start = UNDELIVERED + (f"{after + 1:013d}" if after is not None else "")
    end = UNDELIVERED + (f"{upto + 1:013d}" if upto is not None else RECORDS_END)
    return start, end


def undelivered_cursor(since: datetime) -> str:
    """A cursor before the `u_` rows first attempted after `since` (whole milliseconds)."""
    return f"{UNDELIVERED}{millis(since):013d}_~"  # '~' sorts after every hex digit


def undelivered_end(until: datetime) -> str:
    """Where the `u_` rows first attempted after `until` begin."""
    return undelivered_range(None, millis(until))[1]


# ------------------------------------------------------------------ mapping


def status_text(delivery: Delivery) -> str:
    """The `Delivery` property of its records."""
    return delivery.status().model_dump_json(by_alias=True, exclude_none=True)


def status_of(entity: Any) -> DeliveryStatus:
    """A record's delivery; a record written before deliveries existed is a delivery of its
    own, Delivered or Failed as its Status says."""
    if text := entity.get("Delivery"):
        return DeliveryStatus.model_validate_json(text)
    metadata = RequestMetadata.from_text(entity.get("RequestMetadata") or "")
    return DeliveryStatus(
        message_id=metadata.message_id if metadata else "",
        state=DeliveryState.DELIVERED if entity["Status"] == 1 else DeliveryState.FAILED,
        attempts=metadata.attempt if metadata else 1,
    )


def _state(d: Delivery) -> dict[str, Any]:
    """A delivery's properties, in its row and in its `u_` row."""
    state: dict[str, Any] = {
        "State": str(d.state),
        "Attempts": d.attempts,
        "Scheduled": d.scheduled,
        "Records": ",".join(k + _FAILED_MARK * (k in d.failed) for k in d.records),
    }
    if d.next_attempt_at is not None:
        state["NextAttemptAt"] = d.next_attempt_at
    return state


def delivery_of(entity: Any) -> Delivery:
    """The delivery of its row, or of its `u_` row (which holds the same state beside a copy
    of its latest record)."""
    key = entity["RowKey"]
    marked = [k for k in (entity.get("Records") or "").split(",") if k]
    return Delivery(
        message_id=key[len(DELIVERY) :]
        if key.startswith(DELIVERY)
        else status_of(entity).message_id,
        state=DeliveryState(entity["State"]),
        attempts=entity["Attempts"],
        next_attempt_at=entity.get("NextAttemptAt"),
        scheduled=entity.get("Scheduled") or 0,
        records=tuple(k.rstrip(_FAILED_MARK) for k in marked),
        failed=frozenset(k.rstrip(_FAILED_MARK) for k in marked if k.endswith(_FAILED_MARK)),
        stored=True,
        etag=entity.metadata["etag"],
        guard=key,
    )


def copied(record: dict[str, Any]) -> dict[str, Any]:
    """What the delivery row keeps of its latest record (`record`: its entity)."""
    copy = {k: v for k, v in record.items() if k not in _NOT_COPIED}
    if len(copy.get("MessageBody") or "") > COPIED_BODY_CHARS:
        del copy["MessageBody"]
    return {**copy, "RecordKey": record["RowKey"]}


def latest_of(entity: Any, with_body: bool) -> Any | None:
    """The copy of the latest record in a delivery row, shaped as the record (its RowKey);
    None when the row has none (written before the copy), or `with_body` and it left the
    body out."""
    if "RecordKey" not in entity:
        return None
    if with_body and "MessageBody" not in entity and "BodyBlob" not in entity:
        return None
    return {**entity, "RowKey": entity["RecordKey"]}


def opens(write: DeliveryWrite) -> bool:
    """Whether this attempt's record made the delivery row (the purge removes the row with it)."""
    return write.before is None or not write.before.stored


def operations(
    partition: str, record: dict[str, Any], write: DeliveryWrite
) -> list[transactions.Operation]:
    """What goes with a record (`record`, its entity) into its transaction: the delivery row,
    its `u_` row, and (with `write.earlier`) the new state in its earlier records.

    The condition on what was read: the delivery row's ETag; or, for a delivery read from its
    `u_` row (a replay of deliveries not delivered reads nothing else), that row's ETag. Every
    write of an undelivered delivery replaces or deletes its `u_` row, so that ETag moves with
    every change of it; the delivery row is then written whole, without a condition."""
    before, after = write.before, write.after
    row = {
        **copied(record),
        "PartitionKey": partition,
        "RowKey": delivery_key(after.message_id),
        **_state(after),
    }
    by_index = (
        before is not None and before.guard is not None and before.guard.startswith(UNDELIVERED)
    )
    if before is None or by_index:
        ops: list[transactions.Operation] = [("replace", row)]
    elif before.etag is None:
        ops = [("insert", row)]
    else:
        ops = [("update", {**row, transactions.ETAG: before.etag})]
    guard = {transactions.ETAG: before.etag} if by_index and before is not None else {}
    if not after.delivered:
        index = {
            **record,
            **_state(after),
            "RowKey": undelivered_key(after.records[0]),
            "RecordKey": record["RowKey"],
        }
        ops.append(("update", {**index, **guard}) if guard else ("replace", index))
    elif (
        before is not None and not before.delivered and before.records and (write.earlier or guard)
    ):
        gone = {"PartitionKey": partition, "RowKey": undelivered_key(before.records[0])}
        ops.append(("delete", {**gone, **guard}))
    if write.earlier and before is not None:
        state = {"Delivery": record["Delivery"]}
        for key in (k for k in after.records if k in before.records):
            ops.append(("merge", {"PartitionKey": partition, "RowKey": key, **state}))
            if key in after.failed:
                ops.append(("merge", {"PartitionKey": partition, "RowKey": FAILURE + key, **state}))
    return ops


# ------------------------------------------------------------------ reading


class DeliveryRows:
    """Reads of a partition's delivery rows and undelivered index."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def _row(self, partition: str, message_id: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await self._table.get_entity(partition, delivery_key(message_id))
        except ResourceNotFoundError:
            return None

    async def get(self, partition: str, message_id: str) -> Delivery:
        """The stored delivery, or a new one (`stored` False) when there is none."""
        row = await self._row(partition, message_id)
        return Delivery(message_id) if row is None else delivery_of(row)

    async def with_records(
        self, partition: str, message_id: str, with_body: bool = True
    ) -> tuple[Delivery, list[Any]]:
        """The stored delivery (or a new one, `stored` False) and the records it lists that are
        still there, oldest first: its latest from the row's copy when that serves (`with_body`:
        a copy with the body), the others by point reads side by side."""
        row = await self._row(partition, message_id)
        if row is None:
            return Delivery(message_id), []
        found = delivery_of(row)
        latest = latest_of(row, with_body)
        kept = {latest["RowKey"]: latest} if latest is not None else {}
        read = await self.records(partition, [k for k in found.records if k not in kept])
        by_key = kept | {e["RowKey"]: e for e in read}
        return found, [by_key[k] for k in found.records if k in by_key]

    def _rows(self, partition: str, keys: tuple[str, str], **options: Any) -> Any:
        """Rows with RowKey in [start, end). A start made of a key and '~' starts after that
        key: no key ends with '~', which sorts after every character keys hold."""
        return self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
            parameters={"pk": partition, "start": keys[0], "end": keys[1]},
            **options,
        )

    async def count(
        self,
        partition: str,
        after: int | None,
        upto: int | None,
        wants: Callable[[str], bool] | None = None,
    ) -> int:
        """Undelivered deliveries first attempted in (after, upto] (of the event keys `wants`
        takes), by reading their keys: deliveries not delivered are few next to the log."""
        select = ["RowKey"] if wants is None else ["RowKey", "EventKey"]
        rows = self._rows(
            partition, undelivered_range(after, upto), select=select, results_per_page=1000
        )
        return len([r async for r in rows if wants is None or wants(r["EventKey"])])

    async def page(
        self, partition: str, after: int | None, upto: int | None, number: int, size: int
    ) -> tuple[int, list[Any]]:
        """The count of undelivered deliveries in (after, upto] and page `number` of them,
        oldest first: the keys before the page are read, then the page."""
        keys = undelivered_range(after, upto)
        skip = (number - 1) * size
        skipped = await self._keys(partition, keys, skip) if skip else []
        if skip and len(skipped) < skip:  # past the end
            return len(skipped), []
        start = (skipped[-1] + "~", keys[1]) if skipped else keys
        return await asyncio.gather(
            self.count(partition, after, upto), self.first(partition, start, size)
        )

    async def _keys(self, partition: str, keys: tuple[str, str], limit: int) -> list[str]:
        found: list[str] = []
        rows = self._rows(partition, keys, select=["RowKey"], results_per_page=min(limit, 1000))
        async for row in rows:
            found.append(row["RowKey"])
            if len(found) >= limit:
                break
        return found

    async def first(self, partition: str, keys: tuple[str, str], size: int) -> list[Any]:
        """Up to `size` rows from the start of [start, end); one that cannot be parsed keeps
        its place as its RowKey only (`loglisting.tolerant`)."""

        async def read(select: list[str] | None) -> list[Any]:
            got: list[Any] = []
            rows = self._rows(partition, keys, results_per_page=size, select=select)
            async for page in rows.by_page():
                got += [e async for e in page]
                if len(got) >= size:
                    break
            return got[:size]

        return await loglisting.tolerant(read, self._table, partition)

    async def records(self, partition: str, keys: Sequence[str]) -> list[Any]:
        """The records with these RowKeys that are still there, in that order."""
        from azure.core.exceptions import ResourceNotFoundError

        async def one(key: str) -> Any:
            try:
                return await self._table.get_entity(partition, key)
            except ResourceNotFoundError:  # purged
                return None

        found = await asyncio.gather(*(one(k) for k in keys))
        return [e for e in found if e is not None]
