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


class SystemEvent(ApiModel):
    """An event the platform raises, as it arrives on the `system-events` queue."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(min_length=1, max_length=128, pattern=EVENT_ID_PATTERN)
    account_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    event_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    event_timestamp: Timestamp
    subject: str | None = Field(None, max_length=1024)
    data: Any = None
