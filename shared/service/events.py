"""Events sent in by publishers outside Azure (`POST /v1/events`): checked as the catalog
says, then put on the system-events queue(s) as the platform's own publisher does."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from shared import catalog
from shared.errors import InvalidField, Unavailable
from shared.events import EventTooLarge
from shared.models.events import EventsToPublish, PublishedEvents, SystemEvent
from shared.publisher import PublishError

if TYPE_CHECKING:
    from shared.services import Services


async def publish(services: Services, account: str, request: EventsToPublish) -> PublishedEvents:
    """Queue the events for `account` (the caller's: a publisher never names another); their
    EventIds, in the order sent. Nothing is queued when one of them is refused."""
    now = services.clock()
    events = []
    for i, sent in enumerate(request.events):
        try:
            event_key = catalog.known_key(sent.event_key)
        except ValueError:
            raise InvalidField(f"Events[{i}].EventKey", catalog.UNKNOWN_ENTRY) from None
        window = services.events.window  # the dispatcher refuses what lies outside it
        if sent.event_timestamp and abs(sent.event_timestamp - now) > window:
            within = f"within {window.total_seconds() / 3600:g} hours of now"
            raise InvalidField(f"Events[{i}].EventTimestamp", within)
        events.append(
            SystemEvent(
                event_id=sent.event_id or str(uuid.uuid4()),
                account_id=account,
                event_key=event_key,
                event_timestamp=sent.event_timestamp or now,
                subject=sent.subject,
                data=sent.data,
            )
        )
    try:
        return PublishedEvents(event_ids=await services.publish(*events))
    except EventTooLarge as e:
        raise InvalidField("Events", str(e)) from None
    except PublishError as e:  # some were queued: the caller sends the batch again, and a
        # delivery's message id is the EventId's, so set EventIds to keep copies out
        detail = f"{len(e.failed)} of {len(events)} events could not be queued; send again"
        raise Unavailable(detail) from None
