"""The message log: attempts, deliveries, their errors and metadata, the log queries and stats."""

from __future__ import annotations

import json
import re
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from shared.models.base import ApiModel, Timestamp
from shared.models.events import EVENT_ID_PATTERN

if TYPE_CHECKING:
    pass


class MessageStatus(IntEnum):
    SUCCEEDED = 1
    FAILED = 2


class DeliveryState(StrEnum):
    """Where a delivery (one event to one connection) stands, whatever its attempts said."""

    PENDING = "Pending"  # not delivered yet; the next attempt is scheduled (NextAttemptAt)
    DELIVERED = "Delivered"  # an attempt reached the queue (later failures do not undo it)
    FAILED = "Failed"  # not delivered, and nothing more is scheduled: replay it after a fix


class DeliveryStatus(ApiModel):
    """The delivery an attempt belongs to, as it stands now (not as it stood at the attempt)."""

    message_id: str = Field(description="The Service Bus message_id, the delivery's key.")
    state: DeliveryState
    attempts: int = Field(description="Attempts made so far: retries, re-sends and replays.")
    next_attempt_at: Timestamp | None = Field(None, description="While Pending: when.")


class Message(ApiModel):
    """One delivery attempt to one connection."""

    uid: UUID
    connection_uid: UUID
    event_key: str
    event_timestamp: Timestamp
    request_timestamp: Timestamp = Field(description="When the send began.")
    message_body: str | None = Field(
        description="The body sent to Service Bus, as text; null in a listing with "
        "includeBody=false."
    )
    elapsed_milliseconds: int
    request_metadata: str = Field(description="JSON object as text: QueueName, MessageId, ...")
    status: MessageStatus = Field(description="1 Succeeded, 2 Failed.")
    parent_service_bus_message_uid: UUID | None = None
    is_retry: bool = False
    delivery: DeliveryStatus | None = Field(
        None,
        description="Its delivery now: a failed attempt of an event that arrived later "
        "reads Delivered.",
    )


class Delivery(DeliveryStatus):
    """One delivery with every attempt it had (oldest first)."""

    messages: list[Message]


class ErrorCategory(StrEnum):
    """What a failed delivery needs: time, the customer, or nothing (it can never fit)."""

    TRANSIENT = "Transient"  # retried on the schedule
    CONFIGURATION = "Configuration"  # retried, but the customer has to act
    TOO_LARGE = "TooLarge"  # final: never retried
    SUSPENDED = "Suspended"  # not sent: the connection is suspended; kept for a replay


class DeliveryError(ApiModel):
    """Why a delivery failed, as its record keeps it (secrets already removed)."""

    model_config = ConfigDict(extra="ignore")

    category: ErrorCategory
    type: str
    message: str


class RequestMetadata(ApiModel):
    """What a record keeps about its request; `Message.RequestMetadata` is this as JSON text.

    `to_text` gives exactly the text records have always had (`json.dumps` spacing, absent
    keys left out), so stored and listed records read the same as before.
    """

    model_config = ConfigDict(extra="ignore")  # read back whatever a newer writer added

    queue_name: str
    message_id: str
    attempt: int
    size_bytes: int
    offloaded: bool
    blob_name: str | None = None
    error: DeliveryError | None = None
    session_id: str | None = None  # set when the connection's SessionIdSource is not None

    def to_text(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    @classmethod
    def from_text(cls, text: str) -> RequestMetadata | None:
        """The metadata of a record, or None when it has none (records written by hand)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None


class MessagePage(ApiModel):
    messages: list[Message]
    page: int
    total_hits: int


MAX_LISTED = 50_000  # the deepest row a listing reaches (Page * PageSize)
MAX_SEARCHED = 10_000  # the matches a search counts and pages through (storage/logsearch.py)


def _naive_is_utc(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"[\d\-]+T[\d:.]+", value):
        return value + "Z"
    return value


# A date-time in a query string; without an offset it is UTC.
QueryTime = Annotated[AwareDatetime, BeforeValidator(_naive_is_utc)]


class MessageQuery(ApiModel):
    """Query string of the message listing (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    since: QueryTime | None = Field(None, description="Only messages sent after this.")
    until: QueryTime | None = Field(
        None,
        description="Only messages sent at or before this: pass the time of your first "
        "request to page through a listing that newer messages do not shift.",
    )
    only_failed: bool = False
    undelivered: bool = Field(
        False,
        description="Deliveries not delivered (Pending or Failed), each as its latest attempt, "
        "oldest first; Since and Until bound their first attempt.",
    )
    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=EVENT_ID_PATTERN,  # what an EventId can be
        description="Search: only attempts of this event (its delivery to this connection).",
    )
    message_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Search: only attempts with this Service Bus message_id (one delivery).",
    )
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=1024,  # what a Subject can be: any text
        description="Search: only attempts of events with this Subject (exact).",
    )
    event_key: str | None = Field(
        None,
        max_length=130,
        pattern=r"^(\*|[A-Za-z0-9_-][A-Za-z0-9._-]*(\.\*)?)$",
        description="Search: an event key, or `Prefix.*` for the catalog's keys under it.",
    )
    status: MessageStatus | None = Field(None, description="Search: 1 Succeeded or 2 Failed.")
    page: int = Field(
        1,
        ge=1,
        le=MAX_LISTED,
        description=f"Page * PageSize is at most {MAX_LISTED} ({MAX_SEARCHED} in a search).",
    )
    page_size: int = Field(100, ge=1, le=500)
    include_body: bool = Field(
        True, description="False: each message's MessageBody is null (no body is read)."
    )

    @field_validator("status")
    @classmethod
    def _status_agrees(cls, value: MessageStatus | None, info: ValidationInfo) -> Any:
        if value == MessageStatus.SUCCEEDED and info.data.get("only_failed"):
            raise ValueError("OnlyFailed=true lists Status 2 only")
        return value

    @field_validator("page_size")
    @classmethod
    def _window_is_bounded(cls, value: int, info: ValidationInfo) -> int:
        # Each page counts and skips the rows before it: deep pages would scan the whole log.
        if info.data.get("page", 1) * value > MAX_LISTED:
            raise ValueError(
                f"Page * PageSize is at most {MAX_LISTED}; use Since to reach older messages"
            )
        return value


class SaveQuery(ApiModel):
    """Query string of POST and PUT of a connection (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    verify: bool = Field(
        True,
        description="false: save without sending the verification message (automation, "
        "namespaces not reachable at save time). Inactive connections are never verified.",
    )


class StatsQuery(ApiModel):
    """Query string of the delivery stats (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    since: QueryTime | None = Field(
        None, description="Start of the window (its hour included); default: 24 h before until."
    )
    until: QueryTime | None = Field(
        None, description="End of the window (excluded); default: now. At most 14 days long."
    )


class HourStats(ApiModel):
    """Deliveries of one hour (UTC). Latency: from EventTimestamp to the end of the send, as
    the upper bound of a power-of-two bucket of milliseconds (within a factor of 2)."""

    hour: Timestamp
    succeeded: int
    failed: int
    latency_ms_p50: int | None
    latency_ms_p95: int | None


class DeliveryStats(ApiModel):
    hours: list[HourStats]
