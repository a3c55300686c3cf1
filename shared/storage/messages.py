"""The `messages` table: the log of delivery attempts, kept for the retention period.

PartitionKey = the connection's log partition. A partition's RowKeys fall in ranges that never
mix, so each query reads one range:

    RowKey                                         what
    0000000000000_<uid> .. 9999999999999_<uid>     records: inverted milliseconds of the
      (newest first)                               message's time-ordered (v7) Uid, then the Uid
    ':'                                            (sorts after every digit: records end here)
    c_<inverted hour start>_<writer slot>          counters: one row per writer slot and hour
      (newest hour first)                          (Total, Failed, per-minute counts, latency
                                                   histogram; see shared/storage/logcounts.py)
    f_<record RowKey>                              failure index: a copy of each failed record
      (newest first)                               (onlyFailed=true reads only these)
    d_<message_id>                                 a delivery (one event to this connection):
                                                   its state and its records' RowKeys
    p_purged                                       the purge's cutoff: readers ignore what
                                                   is older while a purge is deleting it
    r_reindex, r_index                             progress of `log reindex` (service/reindex.py)
    u_<first attempt millis>_<uid>                 undelivered index: while a delivery is not
      (oldest first)                               delivered, a copy of its latest record
    x_k_<EventKey>_<newest record RowKey>_<digest> search index: per transaction, one row per
    x_s_<Subject>_<newest record RowKey>_<digest>  EventKey and per Subject listing its records;
    x_f_<EventKey>_<record RowKey>                 one per failed record (logsearch.py)

A record, its failure copy, its writer's counter row of that hour, its search index rows and its
delivery's rows (the `d_` row, the `u_` row, the new state in the delivery's earlier records:
see shared/storage/deliveries.py) are written in one transaction, so counts and states never
disagree with the records, whatever fails when. That write is `write`, the one place a record
and what goes with it are put together. `since`/`until`
are RowKey bounds; reading one message is a point read derived from its Uid alone; page N
starts where the per-minute counts say (shared/storage/loglisting.py). Bodies over what a
table property holds go to the app's own `message-bodies` container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.deliveries import Delivery
from shared.errors import NotFound
from shared.models.records import Delivery as DeliveryView
from shared.models.records import MessagePage, MessageQuery, MessageStatus
from shared.storage import deliveries, loglisting, logsearch, transactions
from shared.storage.logcounts import FAILURE, MAX_MILLIS, HourCounts, hour_of, logged_at, millis
from shared.storage.logdays import LogDays
from shared.storage.logrecords import LoggedMessage, row_key
from shared.storage.logretention import LogRetention
from shared.storage.logwriter import CountingWriter, Submit

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient


class MessageLog(LogRetention):
    """`writer` names this writer's counter rows (random: a new one per process, so a
    restarted process never continues a row whose last write it cannot know); `submit`
    commits one transaction (tests wrap it to make one fail)."""

    def __init__(
        self,
        table: TableClient,
        bodies: ContainerClient,
        *,
        writer: str | None = None,
        submit: Submit = transactions.submit_one,
    ) -> None:
        super().__init__(table, bodies)
        self._writer = CountingWriter(table, writer, submit)
        self.deliveries = deliveries.DeliveryRows(table)
        self.days = LogDays(table)  # the purge's work list (shared/storage/logdays.py)

    async def write(
        self, partition: str, records: Sequence[LoggedMessage]
    ) -> list[BaseException | None]:
        """Write records of one partition with their counts, failure copies and delivery rows,
        as many to a transaction as its limits allow; one outcome per record (None, or the
        TransactionError that refused it: its delivery row changed since it was read, or a
        row it expected is gone). When it raised, calling it again with the same records (a
        retry) counts each of them once (shared/storage/logwriter.py)."""
        items = []
        for r in records:
            entity = await self.entity(partition, r)
            rows = deliveries.operations(partition, entity, r.delivery_write())
            items.append((entity, rows))  # the writer adds the search index rows per transaction
        await self.days.note(partition, [e for e, _ in items])  # before: never a record without
        return await self._writer.write(partition, items)

    async def add(self, partition: str, records: Sequence[LoggedMessage]) -> None:
        """`write`, raising the first refusal."""
        for outcome in await self.write(partition, records):
            if outcome is not None:
                raise outcome

    async def delivery(self, partition: str, message_id: str) -> Delivery:
        """A delivery as stored (`stored` False when there is none)."""
        return await self.deliveries.get(partition, message_id)

    async def attempts(self, partition: str, message_id: str) -> DeliveryView:
        """A delivery with every attempt it remembers, oldest first."""
        found, entities = await self.deliveries.with_records(partition, message_id)
        if not found.stored:
            raise NotFound(f"no delivery {message_id}")
        records = await self._records(partition, entities)
        messages = [r.message for r in records if r]
        return DeliveryView(**found.status().model_dump(), messages=messages)

    async def get(self, partition: str, uid: UUID) -> LoggedMessage:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(partition, row_key(uid))
        except (ResourceNotFoundError, ValueError):
            raise NotFound(f"no message {uid}") from None
        return await self._from_entity(entity)

    async def page(
        self,
        partition: str,
        query: MessageQuery,
        terms: logsearch.Terms | None = None,
        kept_from: datetime | None = None,
        now: datetime | None = None,
    ) -> MessagePage:
        """One page, newest first, and the count of all matches, from the counters; or with
        `undelivered`, the latest attempts of deliveries not delivered, oldest first; or of
        a search (`terms`: by EventId or MessageId, its delivery's row and records; else its
        index ranges). `kept_from`: the retention's cutoff now; a listing leaves out what is
        older instead of reading the purge's mark (None: it reads the mark). `now`: where a
        listing without `until` ends, for reading a short window's counts in one query."""
        if query.undelivered:
            return await self._undelivered_page(partition, query)
        if terms is not None and terms.empty:
            return MessagePage(messages=[], page=query.page, total_hits=0)
        if terms is not None and terms.delivery is not None:
            return await self._delivery_page(partition, query, terms)
        if terms is not None and terms.by_index():
            return await self._search_page(partition, query, terms)
        failed = query.only_failed or (terms is not None and terms.status == MessageStatus.FAILED)
        window = loglisting.Window(
            partition,
            FAILURE if failed else "",
            millis(query.since) if query.since else None,
            millis(query.until) if query.until else None,
        )
        total, entities = await loglisting.page(
            self._table,
            window,
            query.page,
            query.page_size,
            millis(kept_from) if kept_from is not None else None,
            millis(now) if now is not None else None,
        )
        records = await self._records(partition, entities, query.include_body)
        return MessagePage(
            messages=[r.message for r in records if r], page=query.page, total_hits=total
        )

    async def _delivery_page(
        self, partition: str, query: MessageQuery, terms: logsearch.Terms
    ) -> MessagePage:
        """A search's page from its delivery's row and the records it lists, filtered here (a
        delivery has few; the row holds a copy of the latest). A delivery of more than
        MAX_RECORDS attempts lists its first and its latest ones: the attempts it forgot are
        found by their EventId between those two."""
        assert terms.delivery is not None
        floor, (found, entities) = await asyncio.gather(
            self._kept_from(partition, terms),
            self.deliveries.with_records(partition, terms.delivery, query.include_body),
        )
        if not found.stored:
            return MessagePage(messages=[], page=query.page, total_hits=0)
        if len(found.records) < found.attempts and len(found.records) > 1 and entities:
            entities += await self._forgotten(partition, found.records, entities[0]["EventId"])
        after = max(
            floor - 1 if floor is not None else -1, millis(query.since) if query.since else -1
        )
        upto = millis(query.until) if query.until else MAX_MILLIS
        wanted = [e for e in entities if after < logged_at(e) <= upto and terms.matches(e)]
        wanted.sort(key=lambda e: e["RowKey"])  # newest first
        start = (query.page - 1) * query.page_size
        chosen = wanted[start : start + query.page_size]
        records = await self._records(partition, chosen, query.include_body)
        messages = [r.message for r in records if r]
        return MessagePage(messages=messages, page=query.page, total_hits=len(wanted))

    async def _kept_from(self, partition: str, terms: logsearch.Terms) -> int | None:
        """Where the search's records begin: the retention's cutoff when the caller gave it
        (no read), else the purge's mark."""
        if terms.kept_from is not None:
            return terms.kept_from
        return await loglisting.purged_before(self._table, partition)

    async def _forgotten(self, partition: str, kept: Sequence[str], event_id: str) -> list[Any]:
        """The attempts a delivery row forgot: records of its event between its first attempt
        and the next it kept (RowKeys sort newest first)."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @newer and RowKey lt @first and EventId eq @e",
            parameters={"pk": partition, "newer": kept[1], "first": kept[0], "e": event_id},
            results_per_page=1000,
        )
        return [r async for r in rows]

    async def _search_page(
        self, partition: str, query: MessageQuery, terms: logsearch.Terms
    ) -> MessagePage:
        """A page of a search served by index ranges: their keys (TotalHits), then the page's
        records (point reads, side by side)."""
        window = (
            millis(query.since) if query.since else None,
            millis(query.until) if query.until else None,
        )
        floor, keys = await asyncio.gather(
            loglisting.purged_before(self._table, partition),
            logsearch.matching_keys(self._table, partition, logsearch.ranges(terms), window),
        )
        total, page = logsearch.page_of(keys, floor, query.page, query.page_size)
        entities = await self.deliveries.records(partition, page)
        records = await self._records(partition, entities, query.include_body)
        messages = [r.message for r in records if r]
        return MessagePage(messages=messages, page=query.page, total_hits=total)

    async def _undelivered_page(self, partition: str, query: MessageQuery) -> MessagePage:
        after, upto = await self._undelivered_window(partition, query.since, query.until)
        total, rows = await self.deliveries.page(
            partition, after, upto, query.page, query.page_size
        )
        records = await self._records(partition, rows, query.include_body)
        messages = [r.message for r in records if r]
        return MessagePage(messages=messages, page=query.page, total_hits=total)

    async def _undelivered_window(
        self, partition: str, since: datetime | None, until: datetime | None
    ) -> tuple[int | None, int | None]:
        """(after, upto] in milliseconds of first attempts, raised to the purge's cutoff."""
        floor = await loglisting.purged_before(self._table, partition)
        after = millis(since) if since else None
        if floor is not None and (after is None or after < floor - 1):
            after = floor - 1
        return after, millis(until) if until else None

    async def count_undelivered(
        self,
        partition: str,
        window: tuple[datetime, datetime],
        wants: Callable[[str], bool] | None = None,
    ) -> int:
        """Deliveries not delivered whose first attempt is in (since, until]."""
        after, upto = await self._undelivered_window(partition, *window)
        return await self.deliveries.count(partition, after, upto, wants)

    async def undelivered(
        self, partition: str, cursor: str, until: datetime, size: int
    ) -> list[tuple[str, LoggedMessage | None, Delivery | None]]:
        """Up to `size` deliveries not delivered, oldest first, after `cursor` (a `u_` RowKey,
        or `undelivered_cursor(since)`) and first attempted at or before `until`: each with
        its cursor (its `u_` RowKey), its latest attempt (None: unreadable) and its state as that
        row holds it."""
        keys = (cursor + "~", deliveries.undelivered_end(until))
        rows = await self.deliveries.first(partition, keys, size)
        records = await self._records(partition, rows)
        return [
            (e["RowKey"], r, deliveries.delivery_of(e) if r else None)
            for e, r in zip(rows, records, strict=True)
        ]

    # ---- replays

    def _replay_window(
        self, partition: str, only_failed: bool, after: int, upto: int
    ) -> loglisting.Window:
        return loglisting.Window(partition, FAILURE if only_failed else "", after, upto)

    async def count_first_attempts(
        self,
        partition: str,
        window: tuple[datetime, datetime],
        wants: Callable[[str], bool] | None = None,
    ) -> int:
        """Deliveries first attempted in (since, until] (of the event keys `wants` takes): the
        window's records that are no retry or re-send, by reading their keys. (The counters
        count attempts, not deliveries.)"""
        start, end = self._replay_window(partition, False, *map(millis, window)).keys()
        floor = await loglisting.purged_before(self._table, partition) or 0
        rows = self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
            parameters={"pk": partition, "start": start, "end": end},
            select=["RowKey", "EventKey", "IsRetry"],
            results_per_page=1000,
        )
        return len(
            [
                r
                async for r in rows
                if not r.get("IsRetry")
                and (wants is None or wants(r["EventKey"]))
                and logged_at(r) >= floor
            ]
        )

    async def oldest(
        self, partition: str, only_failed: bool, cursor: str, until: datetime, size: int
    ) -> list[tuple[str, LoggedMessage | None]]:
        """Up to `size` records (or failed ones) after `cursor` and at or before `until`,
        oldest first, each with its cursor. A cursor is a record's RowKey (what comes after
        it is newer), or `row_key_bound(since)` to start with the records after `since`. A
        record that cannot be read is None (skipped, counted in a log line)."""
        prefix = FAILURE if only_failed else ""
        at = MAX_MILLIS - int(cursor[:13])
        rows: list[Any] = []
        # The rest of the cursor's millisecond first (newer ones sort before the cursor); one
        # page of it, since one millisecond holds far fewer than 1,000 records of a connection.
        if len(cursor) > 13:
            rows = list(
                reversed(
                    await self._first_rows(
                        partition, prefix + cursor[:13], prefix + cursor, None, 1000
                    )
                )
            )[:size]
        if not rows:
            w = self._replay_window(partition, only_failed, at, millis(until))
            rows = await loglisting.oldest(self._table, w, size)
        records = await self._records(partition, rows)
        return [(e["RowKey"][len(prefix) :], r) for e, r in zip(rows, records, strict=True)]

    async def hourly(
        self, partition: str, since: datetime, until: datetime
    ) -> dict[int, HourCounts]:
        """The counts of each hour from the one holding `since` to the one before `until`."""
        return await loglisting.hourly(
            self._table, partition, hour_of(millis(since)), hour_of(millis(until) - 1)
        )
