"""Replays: what to send again and how a replay stands."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
)

from shared import catalog
from shared.models.base import ApiModel, Timestamp

if TYPE_CHECKING:
    pass


MAX_REPLAY_KEYS = 20  # a replay filters by these as it reads: a handful is what a repair needs


def _date_time(value: Any) -> Any:
    """A JSON body carries a date-time as text; bodies are parsed strictly, so it is read here."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# A date-time in a JSON body: ISO 8601 with an offset.
BodyTime = Annotated[Timestamp, BeforeValidator(_date_time)]


class ReplayRequest(ApiModel):
    """What to send again: the deliveries of a window (by their first attempt), oldest first,
    each once."""

    since: BodyTime = Field(
        description="Deliveries first attempted after this; within the retention."
    )
    until: BodyTime | None = Field(
        None, description="Deliveries first attempted at or before this; default and at most: now."
    )
    only_failed: bool = Field(
        True, description="Only deliveries not delivered (default: Pending or Failed), or all."
    )
    event_keys: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_REPLAY_KEYS,
        description="Event keys or `Prefix.*` of the catalog; default: every event.",
    )

    @field_validator("event_keys")
    @classmethod
    def _event_keys(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        canonical = [catalog.canonical_entry(v) for v in values]
        unknown = [str(i) for i, c in enumerate(canonical) if c is None]
        if unknown:  # by position, as for EnabledEvents: input is never echoed
            raise ValueError(f"not an event key or pattern of the catalog: [{', '.join(unknown)}]")
        return list(dict.fromkeys(c for c in canonical if c))


class ReplayStarted(ApiModel):
    replay_id: UUID
    matched: int = Field(description="Deliveries in the window when the replay was asked for.")


class Replay(ApiModel):
    """A replay's progress: when done, Sent + Failed + Skipped = Matched."""

    replay_id: UUID
    matched: int
    sent: int = Field(description="Deliveries re-sent successfully.")
    failed: int = Field(description="Deliveries whose re-send failed (each has a new record).")
    skipped: int = Field(
        0, description="Matched deliveries delivered (by their own retry) before their turn."
    )
    done: bool
    since: Timestamp
    until: Timestamp = Field(description="The window's end, fixed when the replay was asked for.")
    only_failed: bool
    event_keys: list[str] | None
