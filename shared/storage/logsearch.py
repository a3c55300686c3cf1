"""Search of the message log by Subject and EventKey: index rows written with each record.

Beside each record (RowKey `<record>`, the layout in shared/storage/messages.py), in the
record's own transaction, at most two small index rows (three for a failed one):

    x_k_<EventKey>_<record>     every record; holds its Status
    x_s_<Subject>_<record>      records of events with a Subject; holds Status and EventKey
    x_f_<EventKey>_<record>     failed records only (rare): a failed-only search by EventKey
                                reads these, never the successes of its key

Within one value the rows sort as the records do (newest first), so `since`/`until` bound the
range. A search reads the range of its Subject, or of each EventKey it names (`Order.*` is the
catalog's keys under `Order.`, read side by side and merged), and the table service drops
the rows whose Status or EventKey the query refuses. EventId and MessageId need no rows: both
name one delivery, whose `d_` row lists its records (shared/storage/messages.py).

Two rows, not one per filter and per prefix: every row in a transaction costs write time
(docs/DESIGN.md has the figures). A search by Subject narrows by Status and EventKey with a
filter over its Subject's range (a Subject names few records).

Values are the tenant's: `encoded` keeps letters, digits, `.` and `-`, and writes every other
byte of its UTF-8 as `!XX`, so no key holds a character keys forbid (/ \\ # ? and control
characters), no value's encoding is another's followed by `_`, and one past MAX_ENCODED
characters is cut and ends with a hash of the whole value (a key holds 1 KiB).

TotalHits of a search counts at most SEARCH_LIMIT matches (reading their keys), and pages
reach no further: a search narrows by its filters or by `since`/`until`, never by page 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.models.records import MAX_SEARCHED, MessageStatus
from shared.storage.logcounts import key_range, logged_at

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.storage import transactions

INDEX = "x_"
EVENT_KEY, SUBJECT, FAILED_KEY = "k", "s", "f"  # the tags of the kinds of index row
SEARCH_LIMIT = MAX_SEARCHED  # matches a search counts and pages through
# Characters of an encoded value in a key, the rest a hash: a key holds 1 KiB (512 UTF-16
# characters, measured on Azurite), less the tag and the record RowKey after the value.
MAX_ENCODED = 400
_KEPT = MAX_ENCODED - 34  # an encoded value cut short: this much, "!!", 32 hex digits
_PLAIN = frozenset(string.ascii_letters + string.digits + ".-")
_FAILED = MessageStatus.FAILED


def encoded(value: str) -> str:
    """A value as it appears in a key (see the module's doc)."""
    text = "".join(
        c if c in _PLAIN else "".join(f"!{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in value
    )
    if len(text) <= MAX_ENCODED:
        return text
    raw = value.encode("utf-8", "surrogatepass")
    return text[:_KEPT] + "!!" + hashlib.sha256(raw).hexdigest()[:32]  # "!!" is never encoded


def value_prefix(tag: str, value: str) -> str:
    """The RowKey prefix of one index's rows of one value."""
    return f"{INDEX}{tag}_{encoded(value)}_"


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's index rows without their PartitionKey, from its RowKey, EventKey, Subject
    and Status."""
    key, event_key, status = record["RowKey"], record["EventKey"], record["Status"]
    rows = [{"RowKey": value_prefix(EVENT_KEY, event_key) + key, "Status": status}]
    if record.get("Subject") is not None:  # EventKey too, for a search by both
        subject = value_prefix(SUBJECT, record["Subject"]) + key
        rows.append({"RowKey": subject, "Status": status, "EventKey": event_key})
    if status == int(_FAILED):
        rows.append({"RowKey": value_prefix(FAILED_KEY, event_key) + key})
    return rows


def index_keys(record: dict[str, Any]) -> list[str]:
    """The RowKeys of a record's index rows."""
    return [row["RowKey"] for row in _rows(record)]


def operations(partition: str, record: dict[str, Any]) -> list[transactions.Operation]:
    """The upserts of a record's index rows (`record`: its entity), for its transaction."""
    return [("upsert", {"PartitionKey": partition, **row}) for row in _rows(record)]


@dataclass(frozen=True)
class Terms:
    """A search as the log serves it (shared/service/messages.py makes it from the query):
    `delivery`, the message_id its EventId or MessageId names (None: neither given); `empty`,
    when those two name different deliveries; `event_keys`, the exact keys wanted (None: any);
    `status` (onlyFailed is status 2); `kept_from`, the retention's cutoff now (milliseconds,
    shared/service/retention.py): a search by delivery hides what is older instead of reading
    the purge's mark (None: it reads the mark)."""

    delivery: str | None = None
    empty: bool = False
    event_id: str | None = None
    subject: str | None = None
    event_keys: tuple[str, ...] | None = None
    status: MessageStatus | None = None
    kept_from: int | None = None

    def by_index(self) -> bool:
        """Whether index ranges serve it: by Subject or EventKey, or successes only. (A search
        by EventId or MessageId reads its delivery; failures alone are the failure copies.)"""
        return (
            self.subject is not None
            or self.event_keys is not None
            or self.status == MessageStatus.SUCCEEDED
        )

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a record in hand (its entity) passes the filters."""
        return (
            (self.event_id is None or record.get("EventId") == self.event_id)
            and (self.subject is None or record.get("Subject") == self.subject)
            and (self.event_keys is None or record.get("EventKey") in self.event_keys)
            and (self.status is None or record.get("Status") == int(self.status))
        )


@dataclass(frozen=True)
class Ranges:
    """What the table reads for a search: RowKey prefixes (their records' keys follow) and a
    filter on the rows' properties for the query's other conditions."""

    prefixes: tuple[str, ...]
    where: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()


def ranges(terms: Terms) -> Ranges:
    """The index ranges (or the records themselves, prefix "") that serve a search by Subject,
    EventKey or Status: the Subject's one range, or one range per EventKey (of its failures
    alone for a failed-only search)."""
    where: list[str] = []
    parameters: dict[str, Any] = {}
    if terms.subject is None and terms.event_keys is not None and terms.status == _FAILED:
        return Ranges(tuple(value_prefix(FAILED_KEY, k) for k in terms.event_keys))
    if terms.status is not None:
        where.append(f"Status eq {int(terms.status)}")  # a literal: the SDK writes 1 as `true`
    if terms.subject is not None:
        prefixes: tuple[str, ...] = (value_prefix(SUBJECT, terms.subject),)
        if terms.event_keys is not None:
            names = [f"EventKey{i}" for i in range(len(terms.event_keys))]
            # spaces around the parentheses: the SDK finds parameters between spaces
            where.append("( " + " or ".join(f"EventKey eq @{n}" for n in names) + " )")
            parameters |= dict(zip(names, terms.event_keys, strict=True))
    elif terms.event_keys is not None:
        prefixes = tuple(value_prefix(EVENT_KEY, k) for k in terms.event_keys)
    else:
        prefixes = ("",)  # Status alone: the records, the others dropped by the service
    return Ranges(prefixes, " and ".join(where), tuple(parameters.items()))


async def matching_keys(
    table: TableClient, partition: str, search: Ranges, window: tuple[int | None, int | None]
) -> list[str]:
    """The record RowKeys the search matches in (after, upto] milliseconds, newest first, at
    most SEARCH_LIMIT + 1 of them: each range's keys, read side by side, merged."""

    async def keys_of(prefix: str) -> list[str]:
        start, end = key_range(prefix, *window)
        where = "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end"
        if search.where:
            where += " and " + search.where
        rows = table.query_entities(
            where,
            parameters={"pk": partition, "start": start, "end": end, **dict(search.parameters)},
            select=["RowKey"],
            results_per_page=1000,
        )
        keys: list[str] = []
        async for row in rows:
            keys.append(row["RowKey"][len(prefix) :])
            if len(keys) > SEARCH_LIMIT:
                break
        return keys

    found = await asyncio.gather(*map(keys_of, search.prefixes))
    return list(heapq.merge(*found))[: SEARCH_LIMIT + 1]  # RowKeys sort newest first


def page_of(
    keys: Sequence[str], floor: int | None, number: int, size: int
) -> tuple[int, Sequence[str]]:
    """TotalHits (at most SEARCH_LIMIT) and the keys of page `number`, leaving out what a
    purge under way is deleting (older than `floor`)."""
    kept = [k for k in keys if floor is None or logged_at({"RowKey": k}) >= floor]
    return min(len(kept), SEARCH_LIMIT), kept[(number - 1) * size : number * size]
