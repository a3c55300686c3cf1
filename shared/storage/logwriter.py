"""Writing records with their counts: the counter rows, failure copies and search index rows
ride in the records' own transactions (see the layout in shared/storage/messages.py, the counts
in logcounts.py, the index rows packed per transaction in logsearch.py).

A slot's totals advance in memory only when the service said yes. A refused transaction wrote
nothing. A transaction without an answer may or may not have committed: its slot reads its
counter rows back before its next write (they are the truth for that slot), and the write's
records are remembered as uncertain (those of its transactions that committed too: the caller
hears only of the failure), so when they are written again (the caller's retry) the ones
already in the table are not counted a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from shared.storage import logsearch, transactions
from shared.storage.logcounts import (
    FAILURE,
    CounterSlot,
    CounterSlots,
    HourCounts,
    count_records,
    counter_key,
    hour_of,
    logged_at,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

# Bytes of transaction body a group of records may fill: the 4 MiB limit, less room for the
# counter rows and an estimate that errs on the large side (see _size).
_GROUP_BYTES = 3_500_000
# Past this many, a record retried after a transaction without an answer may be counted twice:
# a bound on memory for a storage outage that lasts (the dispatcher's retries make new records).
_MAX_UNCERTAIN = 100_000
_FAILED = 2  # MessageStatus.FAILED

Submit = Callable[["TableClient", Sequence[transactions.Operation]], Awaitable[None]]
# A record's entity and the operations that go with it into its transaction (its delivery's
# rows: shared/storage/deliveries.py).
Item = tuple[dict[str, Any], Sequence[transactions.Operation]]


def _size(entity: dict[str, Any]) -> int:
    """More than the entity's bytes in a transaction body (JSON escapes at most double text).
    ASCII text is as long as its UTF-8, so only other text is encoded to be measured."""
    size = 400
    for v in entity.values():
        if type(v) is str:
            size += 2 * (len(v) if v.isascii() else len(v.encode()))
        else:
            size += 40
    return size


def _grown(
    values: dict[str, tuple[int, int, int]], prefixes: list[str], at: int
) -> dict[str, tuple[int, int, int]]:
    """A group's values (index row prefixes: their oldest and newest record's time, and
    their number of records) with a record of these values logged `at`."""
    grown = dict(values)
    for prefix in prefixes:
        oldest, newest, n = grown.get(prefix, (at, at, 0))
        grown[prefix] = (min(oldest, at), max(newest, at), n + 1)
    return grown


def _index_rows(values: dict[str, tuple[int, int, int]]) -> int:
    """At most the packed rows `logsearch.packed` writes for a group: one per value whose
    records span at most SPAN_MS (the dispatcher's: written within milliseconds), else one
    per record (a bulk write of older records, spread in time: as many as unpacked)."""
    return sum(
        1 if newest - oldest <= logsearch.SPAN_MS else n for oldest, newest, n in values.values()
    )


class CountingWriter:
    def __init__(self, table: TableClient, writer: str | None, submit: Submit) -> None:
        self._table = table
        self._slots = CounterSlots(writer)
        self._submit = submit
        # RowKeys of records whose transaction got no answer, by partition.
        self._uncertain: dict[str, set[str]] = {}

    async def write(self, partition: str, items: Sequence[Item]) -> list[BaseException | None]:
        """Commit the items, as many to a transaction as fit; one outcome per item: None, or
        the TransactionError that refused it. Any other failure (no answer) raises, and the
        caller hears nothing of the transactions that committed before it: every item is then
        uncertain, so that a retry counts none of them twice."""
        slot = self._slots.take(partition)
        outcomes: list[BaseException | None] = []
        try:
            for group in self._groups(items):
                outcomes += await self._commit_or_split(partition, slot, group)
        except BaseException:
            self._may_be_written(partition, {e["RowKey"] for e, _ in items})
            raise
        finally:
            self._slots.give_back(partition, slot)
        return outcomes

    async def _commit_or_split(
        self, partition: str, slot: CounterSlot, group: list[Item]
    ) -> list[BaseException | None]:
        try:
            await self._commit(partition, slot, group)
            return [None] * len(group)
        except transactions.TransactionError as e:
            if len(group) == 1:
                return [e]
        # One item's condition failed (its delivery row changed since it was read): the others
        # must not fail with it, so each goes on its own. Rare: only retries and re-sends read.
        outcomes: list[BaseException | None] = []
        for item in group:
            try:
                await self._commit(partition, slot, [item])
                outcomes.append(None)
            except transactions.TransactionError as e:
                outcomes.append(e)
        return outcomes

    @staticmethod
    def _groups(items: Sequence[Item]) -> list[list[Item]]:
        """Items in groups that fit one transaction with their copies, counter rows and
        packed index rows (see _index_rows), no entity twice in one (two attempts of one
        delivery go in two)."""
        groups: list[list[Item]] = []
        group: list[Item] = []
        operations, size, hours, keys = 0, 0, set[int](), set[str]()
        values: dict[str, tuple[int, int, int]] = {}
        for item in items:
            e, extra = item
            failed = e["Status"] == _FAILED
            rows = 1 + 2 * failed + len(extra)  # with a failure's copy and `x_f_` row
            listed = logsearch.entries(e)
            touched = {e["RowKey"], *(op[1]["RowKey"] for op in extra)}
            at = logged_at(e)
            bytes_ = (1 + failed) * _size(e) + sum(_size(op[1]) for op in extra)
            bytes_ += sum(2 * (len(prefix) + len(entry)) + 400 for prefix, entry in listed)
            grown = _grown(values, [prefix for prefix, _ in listed], at)
            if group and (
                operations + rows + _index_rows(grown) + len(hours | {hour_of(at)})
                > transactions.MAX_OPERATIONS
                or size + bytes_ > _GROUP_BYTES
                or touched & keys
            ):
                groups.append(group)
                group, operations, size, hours, keys = [], 0, 0, set(), set()
                grown = _grown({}, [prefix for prefix, _ in listed], at)
            group.append(item)
            operations, size = operations + rows, size + bytes_
            hours.add(hour_of(at))
            keys |= touched
            values = grown
        return [*groups, group] if group else groups

    async def _commit(self, partition: str, slot: CounterSlot, items: list[Item]) -> None:
        """One transaction: the records, copies of the failed ones, what goes with each, and
        the slot's new totals for their hours. Totals advance in memory only once the service
        said yes."""
        index, packed = logsearch.packed(partition, [e for e, _ in items])
        group = [{**e, logsearch.PACKED: packed[e["RowKey"]]} for e, _ in items]
        extra = [op for _, ops in items for op in ops] + index
        uncertain = self._uncertain.setdefault(partition, set())
        keys = {e["RowKey"] for e in group}
        retried = bool(keys & uncertain)
        uncounted = group
        if retried:  # written before? the table knows
            uncounted = await self._not_written(partition, group)
        if slot.dirty:  # its last transaction may have committed: its totals are in the table
            slot.totals.clear()
            slot.complete, slot.dirty = False, False
        totals = {}
        for hour, counts in count_records(uncounted, logged_at).items():
            before = slot.totals.get(hour)
            if before is None:
                before = (
                    HourCounts() if slot.complete else await self._stored(partition, slot, hour)
                )
            totals[hour] = before.plus(counts)
        counters = [
            {"PartitionKey": partition, "RowKey": counter_key(h, slot.name), **c.properties()}
            for h, c in totals.items()
        ]
        copies = [{**e, "RowKey": FAILURE + e["RowKey"]} for e in group if e["Status"] == _FAILED]
        try:
            rows: list[transactions.Operation] = [("upsert", e) for e in group + copies + counters]
            await self._submit(self._table, [*rows, *extra])
        except transactions.TransactionError:
            raise  # refused: nothing was written
        except BaseException:  # no answer (timeout, cancelled, connection lost)
            slot.dirty = True
            raise
        slot.totals.update(totals)
        slot.forget_old_hours()
        if retried:
            uncertain.difference_update(keys)

    def _may_be_written(self, partition: str, keys: set[str]) -> None:
        uncertain = self._uncertain.setdefault(partition, set())
        if len(uncertain) < _MAX_UNCERTAIN:
            uncertain.update(keys)

    async def _not_written(self, partition: str, group: list[dict[str, Any]]) -> list[Any]:
        keys = sorted(e["RowKey"] for e in group)
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @first and RowKey le @last",
            parameters={"pk": partition, "first": keys[0], "last": keys[-1]},
            select=["RowKey"],
        )
        written = {e["RowKey"] async for e in rows}
        return [e for e in group if e["RowKey"] not in written]

    async def _stored(self, partition: str, slot: CounterSlot, hour: int) -> HourCounts:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return HourCounts.of(
                await self._table.get_entity(partition, counter_key(hour, slot.name))
            )
        except ResourceNotFoundError:
            return HourCounts()
