"""Search of the message log by Subject and EventKey: index rows written with the records.

Beside the records (RowKey `<record>`, the layout in shared/storage/messages.py), in their own
transaction, index rows packed per transaction: one row per value for the records of that
transaction holding it, and a row per failed record:

    x_k_<EventKey>_<newest record>_<digest>   lists its records' RowKeys and Statuses
                                              (`Records`)
    x_s_<Subject>_<newest record>_<digest>    the same, and each record's EventKey
    x_f_<EventKey>_<record>                   a failed record (rare): a failed-only search
                                              by EventKey reads these, never the successes
                                              of its key

A packed row's RowKey holds its newest record's (then a digest of the keys it lists, so a row
of other records never replaces it), and its records are at most SPAN_MS older (`packed`
splits a value's records otherwise), so a value's rows sort as their records do within
SPAN_MS: a search bounded by `until` reads SPAN_MS further and keeps the keys in its window,
which stays exact. Each record carries the suffixes of its
packed rows (`Packed`): the purge deletes a row with the newest record it lists. Rows of the
first layout (one record each, its key the suffix, Status and EventKey as properties) are
read the same way; they expire with their records, so they are never rewritten.

A search reads the range of its Subject, or of each EventKey it names (`Order.*` is the
catalog's keys under `Order.`, read side by side and merged), and keeps the records whose
Status and EventKey the query wants. EventId and MessageId need no rows: both name one
delivery, whose `d_` row lists its records (shared/storage/messages.py).

Two values, not one per filter and per prefix, and packed: every entity in a transaction
costs write time (docs/DESIGN.md has the figures). A search by Subject narrows by Status and
EventKey over its Subject's range (a Subject names few records).

Values are the tenant's: `encoded` keeps letters, digits, `.` and `-`, and writes every other
byte of its UTF-8 as `!XX`, so no key holds a character keys forbid (/ \\ # ? and control
characters), no value's encoding is another's followed by `_`, and one past MAX_ENCODED
characters is cut and ends with a hash of the whole value (a key holds 1 KiB).

TotalHits of a search counts at most SEARCH_LIMIT matches (reading their keys), and pages
reach no further: a search narrows by its filters or by `since`/`until`, never by page 500.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.models.records import MAX_SEARCHED, MessageStatus
from shared.storage.logcounts import MAX_MILLIS, key_range, logged_at

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.storage import transactions

INDEX = "x_"
EVENT_KEY, SUBJECT, FAILED_KEY = "k", "s", "f"  # the tags of the kinds of index row
SEARCH_LIMIT = MAX_SEARCHED  # matches a search counts and pages through
# Characters of an encoded value in a key, the rest a hash: a key holds 1 KiB (512 UTF-16
# characters, measured on Azurite), less the tag and the record RowKey (and a packed row's
# digest) after the value.
MAX_ENCODED = 400
_KEPT = MAX_ENCODED - 34  # an encoded value cut short: this much, "!!", 32 hex digits
_PLAIN = frozenset(string.ascii_letters + string.digits + ".-")
_FAILED = MessageStatus.FAILED
# A packed row: the records it lists (`entries`), at most MAX_PACKED of them (17,800 of the
# 32,000 characters a string property holds: a 46-character RowKey, its Status and a 128-
# character EventKey each), at most SPAN_MS older than its newest. `Packed` on a record: the
# suffixes of its rows (after the value: `_suffix`), in the order of `entries`.
RECORDS, PACKED = "Records", "Packed"
MAX_PACKED = 100
SPAN_MS = 60_000
DIGEST = 8  # hex digits of the digest ending a packed row's RowKey (see _suffix)


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


@functools.lru_cache(maxsize=4096)  # each record's values are asked for three times a write
def value_prefix(tag: str, value: str) -> str:
    """The RowKey prefix of one index's rows of one value."""
    return f"{INDEX}{tag}_{encoded(value)}_"


def entries(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(row prefix, entry) of each packed row listing a record (its EventKey's, its
    Subject's): the entry is `<RowKey>:<Status>`, and `:<EventKey>` in the Subject's, for a
    search by both. (EventKeys hold neither ` ` nor `:`: the catalog's grammar.)"""
    key, event_key, status = record["RowKey"], record["EventKey"], record["Status"]
    found = [(value_prefix(EVENT_KEY, event_key), f"{key}:{status}")]
    if record.get("Subject") is not None:
        found.append((value_prefix(SUBJECT, record["Subject"]), f"{key}:{status}:{event_key}"))
    return found


def _failed_key(record: dict[str, Any]) -> str:
    return value_prefix(FAILED_KEY, record["EventKey"]) + record["RowKey"]


def packed(
    partition: str, records: Sequence[dict[str, Any]]
) -> tuple[list[transactions.Operation], dict[str, str]]:
    """The index rows of records written together (their entities), and each record's
    `Packed` property by its RowKey. One row per value, split when its records span more than
    SPAN_MS or number more than MAX_PACKED; upserts, so writing the same records again
    writes the same rows."""
    by_value: dict[str, list[tuple[str, str]]] = {}
    for record in sorted(records, key=lambda r: r["RowKey"]):  # newest first
        for prefix, entry in entries(record):
            by_value.setdefault(prefix, []).append((record["RowKey"], entry))
    operations: list[transactions.Operation] = []
    newest: dict[tuple[str, str], str] = {}  # (prefix, record) -> its row's suffix
    for prefix, listed in by_value.items():
        for run in _runs(listed):
            suffix = _suffix(run)
            row = {"PartitionKey": partition, "RowKey": prefix + suffix}
            operations.append(("upsert", {**row, RECORDS: " ".join(e for _, e in run)}))
            newest |= {(prefix, key): suffix for key, _ in run}
    operations += [
        ("upsert", {"PartitionKey": partition, "RowKey": _failed_key(r)})
        for r in records
        if r["Status"] == _FAILED
    ]
    suffixes = {
        r["RowKey"]: " ".join(newest[prefix, r["RowKey"]] for prefix, _ in entries(r))
        for r in records
    }
    return operations, suffixes


def _suffix(run: list[tuple[str, str]]) -> str:
    """A packed row's RowKey after its value: its newest record's, and a digest of the keys
    it lists, so a row of other records (a retry of some of a transaction's records, grouped
    otherwise) never replaces it and drops the others from the search."""
    digest = hashlib.sha256(" ".join(key for key, _ in run).encode()).hexdigest()
    return f"{run[0][0]}_{digest[:DIGEST]}"


def _runs(listed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """(RowKey, entry) pairs, newest first, in runs of at most MAX_PACKED spanning at most
    SPAN_MS."""
    runs: list[list[tuple[str, str]]] = []
    for key, entry in listed:
        if not runs or len(runs[-1]) == MAX_PACKED or _at(runs[-1][0][0]) - _at(key) > SPAN_MS:
            runs.append([])
        runs[-1].append((key, entry))
    return runs


def _at(key: str) -> int:
    return logged_at({"RowKey": key})


def index_keys(record: dict[str, Any], older: str = "") -> list[str]:
    """The RowKeys of a record's index rows that list no record newer than RowKey `older`
    ("": all of them): the purge deletes those with the record, and a packed row with its
    newest record (the row's suffix begins with that record's RowKey). A record without
    `Packed` has rows of the first layout, one per value, each ending with its own RowKey."""
    key = record["RowKey"]
    suffixes = record[PACKED].split(" ") if record.get(PACKED) else [key, key]
    keys = [
        prefix + s
        for (prefix, _), s in zip(entries(record), suffixes, strict=False)
        if s[: len(key)] >= older
    ]
    return [*keys, _failed_key(record)] if record["Status"] == _FAILED else keys


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
    """What the table reads for a search: RowKey prefixes of index rows ("": the records
    themselves), and the Status and EventKeys of the records wanted among theirs (None: any)."""

    prefixes: tuple[str, ...]
    status: int | None = None
    event_keys: tuple[str, ...] | None = None

    def wants(self, status: int | None, event_key: str | None) -> bool:
        return (self.status is None or status == self.status) and (
            self.event_keys is None or event_key in self.event_keys
        )


def ranges(terms: Terms) -> Ranges:
    """The index ranges (or the records themselves, prefix "") that serve a search by Subject,
    EventKey or Status: the Subject's one range, or one range per EventKey (of its failures
    alone for a failed-only search)."""
    if terms.subject is None and terms.event_keys is not None and terms.status == _FAILED:
        return Ranges(tuple(value_prefix(FAILED_KEY, k) for k in terms.event_keys))
    status = None if terms.status is None else int(terms.status)
    if terms.subject is not None:
        return Ranges((value_prefix(SUBJECT, terms.subject),), status, terms.event_keys)
    if terms.event_keys is not None:
        return Ranges(tuple(value_prefix(EVENT_KEY, k) for k in terms.event_keys), status)
    return Ranges(("",), status)  # Status alone: the records


def _listed(prefix: str, row: dict[str, Any]) -> list[tuple[str, int | None, str | None]]:
    """(RowKey, Status, EventKey) of each record an index row lists; a row of the first
    layout (or a record, prefix "") is one record, its key the RowKey's suffix."""
    if row.get(RECORDS) is None:
        return [(row["RowKey"][len(prefix) :], row.get("Status"), row.get("EventKey"))]
    listed: list[tuple[str, int | None, str | None]] = []
    for entry in row[RECORDS].split(" "):
        key, status, *event_key = entry.split(":", 2)
        listed.append((key, int(status), event_key[0] if event_key else None))
    return listed


def _first(keys: list[str]) -> list[str]:
    return sorted(set(keys))[: SEARCH_LIMIT + 1]  # a retried write may list a record twice


async def matching_keys(
    table: TableClient, partition: str, search: Ranges, window: tuple[int | None, int | None]
) -> list[str]:
    """The record RowKeys the search matches in (after, upto] milliseconds, newest first, at
    most SEARCH_LIMIT + 1 of them: each range's keys, read side by side, merged. An index
    range reads SPAN_MS past `until` (a packed row's RowKey is its newest record's)."""
    after, upto = window
    first, end = key_range("", after, upto)  # the keys wanted

    async def keys_of(prefix: str) -> list[str]:
        wider = upto if upto is None or not prefix else min(upto + SPAN_MS, MAX_MILLIS)
        start, stop = key_range(prefix, after, wider)
        where = "PartitionKey eq @pk and RowKey ge @start and RowKey lt @stop"
        if not prefix and search.status is not None:  # the records: the service filters
            where += f" and Status eq {search.status}"  # a literal: the SDK writes 1 as `true`
        rows = table.query_entities(
            where,
            parameters={"pk": partition, "start": start, "stop": stop},
            select=["RowKey", RECORDS, "Status", "EventKey"],
            results_per_page=1000,
        )
        keys: list[str] = []
        cut = None  # past SEARCH_LIMIT keys, the last one kept: rows after it list older ones
        async for row in rows:
            if cut is not None and row["RowKey"][len(prefix) :] > cut:
                break
            listed = _listed(prefix, row)
            keys += [k for k, s, e in listed if first <= k < end and search.wants(s, e)]
            if len(keys) > (SEARCH_LIMIT if cut is None else 2 * SEARCH_LIMIT):
                keys = _first(keys)
                cut = keys[-1] if len(keys) > SEARCH_LIMIT else None
        return _first(keys)

    found = await asyncio.gather(*map(keys_of, search.prefixes))
    return list(heapq.merge(*found))[: SEARCH_LIMIT + 1]  # RowKeys sort newest first


def page_of(
    keys: Sequence[str], floor: int | None, number: int, size: int
) -> tuple[int, Sequence[str]]:
    """TotalHits (at most SEARCH_LIMIT) and the keys of page `number`, leaving out what a
    purge under way is deleting (older than `floor`)."""
    kept = [k for k in keys if floor is None or logged_at({"RowKey": k}) >= floor]
    return min(len(kept), SEARCH_LIMIT), kept[(number - 1) * size : number * size]
