"""System events as they arrive, and the catalogue of event keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import (
    ConfigDict,
    Field,
)

from shared.models.base import ApiModel, Timestamp

if TYPE_CHECKING:
    pass


# Table keys forbid these characters, and an EventId names its payload's blob.
EVENT_ID_PATTERN = r"^[^\x00-\x1f/\\#?]+$"


class CatalogEntry(ApiModel):
    event_key: str
    description: str


# A POST /v1/events takes at most this many events: each is one queue message.
MOST_EVENTS_PER_REQUEST = 100


class EventToPublish(ApiModel):
    """One event a publisher sends to `POST /v1/events`; its account is the key's."""

    event_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    event_id: str | None = Field(None, min_length=1, max_length=128, pattern=EVENT_ID_PATTERN)
    event_timestamp: Timestamp | None = None  # default: when it is received
    subject: str | None = Field(None, max_length=1024)
    data: Any = None


class EventsToPublish(ApiModel):
    """The body of `POST /v1/events`: a batch of events (one is a batch of one)."""

    events: list[EventToPublish] = Field(min_length=1, max_length=MOST_EVENTS_PER_REQUEST)


class PublishedEvents(ApiModel):
    """The EventIds of the events accepted, in the order sent."""

    event_ids: list[str]


class SystemEvent(ApiModel):
    """An event the platform raises, as it arrives on the `system-events` queue."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(min_length=1, max_length=128, pattern=EVENT_ID_PATTERN)
    account_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    event_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    event_timestamp: Timestamp
    subject: str | None = Field(None, max_length=1024)
    data: Any = None
