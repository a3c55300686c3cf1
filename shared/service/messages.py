"""Messages of a connection: listing and search, one message, one delivery, re-send, the test
event. Each takes the connection as stored (its account already checked) and raises domain
errors; the HTTP handlers (shared/api/messages.py) parse, call one of these, and shape."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from shared import catalog
from shared.catalog import TEST_EVENT_KEY
from shared.errors import InvalidField
from shared.models.records import MAX_SEARCHED, MessageStatus
from shared.storage.logcounts import millis
from shared.storage.logsearch import Terms

if TYPE_CHECKING:
    from datetime import datetime

    from shared.models.records import Delivery, Message, MessagePage, MessageQuery
    from shared.services import Services
    from shared.storage.connections import StoredConnection

# The query's search filters by their API names.
SEARCH_FILTERS = {
    "EventId": "event_id",
    "MessageId": "message_id",
    "Subject": "subject",
    "EventKey": "event_key",
    "Status": "status",
}


def searched_by(query: MessageQuery) -> list[str]:
    """The API names of the search filters the query gives (`EventKey=*` filters nothing)."""
    return [
        name for name, field in SEARCH_FILTERS.items() if getattr(query, field) not in (None, "*")
    ]


def check_query(query: MessageQuery) -> None:
    """The rules between a listing's parameters: a search reaches its first MAX_SEARCHED
    matches, and the list of deliveries not delivered takes no search filter."""
    given = searched_by(query)
    if given and query.undelivered:
        raise InvalidField(given[0], "does not apply with Undelivered=true")
    if given and query.page * query.page_size > MAX_SEARCHED:
        raise InvalidField(
            "Page",
            f"a search pages through its first {MAX_SEARCHED} matches (Page * PageSize); "
            "narrow it with Since and Until",
        )


def event_keys(value: str | None) -> tuple[str, ...] | None:
    """The exact keys an EventKey filter names: a key (in the catalog's spelling when it
    has it), or the catalog's keys under `Prefix.*`; None for no filter."""
    if value is None or value == "*":
        return None
    canonical = catalog.canonical_entry(value)
    if not catalog.is_pattern(value):
        return (canonical or value,)  # a key outside the catalog is searched as given
    if canonical is None:
        raise InvalidField("EventKey", catalog.UNKNOWN_ENTRY)
    return tuple(k for k in catalog.catalog() if catalog.matches(canonical, k))


def search_terms(
    stored: StoredConnection, query: MessageQuery, kept_from: datetime | None = None
) -> Terms | None:
    """What the log searches for (None: a plain listing). EventId and MessageId both name a
    delivery: the message_id every attempt of an event to a connection carries (derived from
    the event, shared/dispatch/outgoing.py), so the search reads that delivery's row.
    `kept_from`: the retention's cutoff now (what is older is hidden)."""
    from shared.dispatch.outgoing import message_id

    if not searched_by(query):
        return None
    by_event = message_id(stored.account, query.event_id, stored.uid) if query.event_id else None
    delivery = query.message_id or by_event
    return Terms(
        delivery=delivery,
        empty=by_event is not None and delivery != by_event,
        event_id=query.event_id,
        subject=query.subject,
        event_keys=event_keys(query.event_key),
        status=MessageStatus.FAILED if query.only_failed else query.status,
        kept_from=millis(kept_from) if kept_from is not None else None,
    )


async def list_messages(
    services: Services, stored: StoredConnection, query: MessageQuery
) -> MessagePage:
    """A page of the connection's log, newest first, or of a search of it, or of its
    deliveries not delivered (oldest first), as the query says."""
    from shared.service.retention import log_cutoff
    from shared.service.stats import check_times

    retention, now = services.settings.retention_days, services.clock()
    check_times(now, retention, Since=query.since, Until=query.until)
    check_query(query)
    cutoff = log_cutoff(now, retention)  # hides what a purge may be deleting: no read of its mark
    terms = search_terms(stored, query, cutoff)
    return await services.messages.page(stored.log_partition, query, terms, cutoff, now)


async def get_message(services: Services, stored: StoredConnection, uid: UUID) -> Message:
    """One message (delivery attempt) of the connection; NotFound when it has none such."""
    return (await services.messages.get(stored.log_partition, uid)).message


async def get_delivery(services: Services, stored: StoredConnection, message_id: str) -> Delivery:
    """One delivery of the connection with every attempt it remembers, oldest first."""
    return await services.messages.attempts(stored.log_partition, message_id)


async def resend(services: Services, stored: StoredConnection, uid: UUID) -> Message:
    """Send a logged message again now, from its stored body: the new record."""
    record = await services.messages.get(stored.log_partition, uid)
    dispatcher = await services.dispatcher()
    return (await dispatcher.resend(stored, record)).message


async def send_test(services: Services, stored: StoredConnection) -> Message:
    """Deliver a System.Test event to the connection now: its record, whatever its Status
    (a failed test is not retried)."""
    from shared.deliveries import Origin
    from shared.dispatch.recorder import Attempt
    from shared.events import new_event

    event = new_event(
        stored.account,
        TEST_EVENT_KEY,
        services.clock(),
        subject=f"connections/{stored.uid}/test",
        data={"Message": "A test event from the event delivery service."},
    )
    dispatcher = await services.dispatcher()
    return (await dispatcher.deliver(event, stored, Attempt(Origin.TEST))).message
