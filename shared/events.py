"""System events on storage queues: publishing them, and reading them back.

A Storage queue message holds at most 64 KB, so an event larger than that is stored in the
app's own blob container and the queue message carries a pointer to it (`EventBlob`).
Queue messages are base64 text, as the Functions host expects.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.clock import Clock, system_clock
from shared.models.base import ApiModel
from shared.models.events import SystemEvent
from shared.settings import Limits

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

INLINE_LIMIT = 48 * 1024  # raw bytes; base64 makes 64 KB of it
EVENTS_PREFIX = "events/"


class MalformedEvent(ValueError):
    """Not valid JSON, or a required field missing or wrong: never worth retrying."""


class EventTooLarge(ValueError):
    """An event over the size limit (LIMIT_EVENT_BYTES): refused before it is queued."""


def encode_queue_message(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


DEFAULT_WINDOW = timedelta(days=14)


class EventStore:
    """Turns events into queue message payloads and back, offloading large ones to blobs
    (`bodies`: the app's `message-bodies` container; without it events stay under 48 KB, as
    for a publisher that may only send to the queue). An event read back must lie within
    `window` of the clock's now, either way: what lies further is a mistake or an attack (a
    date the log cannot hold), never worth a retry."""

    def __init__(
        self,
        bodies: ContainerClient | None,
        max_bytes: int = Limits.event_bytes,
        clock: Clock = system_clock,
        window: timedelta = DEFAULT_WINDOW,
    ) -> None:
        self.bodies = bodies
        self.max_bytes = max_bytes  # the largest event (its JSON) the app takes
        self.clock = clock
        self.window = window

    async def to_payload(self, event: SystemEvent) -> dict[str, Any]:
        """The event inline, or a pointer to the blob holding it when it is large."""
        text = event.to_json()
        raw = json.dumps(text, separators=(",", ":")).encode()
        if len(raw) > self.max_bytes:
            raise EventTooLarge(f"the event is {len(raw)} bytes; at most {self.max_bytes}")
        if len(raw) <= INLINE_LIMIT:
            return text
        if self.bodies is None:
            raise EventTooLarge(
                f"the event is {len(raw)} bytes; over {INLINE_LIMIT} it goes through the app's "
                "blob container, which this publisher was not given"
            )
        # Named by the event: its retries point at the same blob instead of adding copies.
        name = f"{EVENTS_PREFIX}{event.account_id}/{event.event_id}.json"
        await self.bodies.upload_blob(name, raw, overwrite=True)
        return {"EventBlob": name}

    async def from_payload(self, payload: Any) -> SystemEvent:
        if isinstance(payload, dict) and set(payload) == {"EventBlob"}:
            name = str(payload["EventBlob"])
            if not name.startswith(EVENTS_PREFIX) or self.bodies is None:
                raise MalformedEvent("EventBlob must name a stored event")
            stream = await self.bodies.download_blob(name)
            if (stream.size or 0) > self.max_bytes:
                raise MalformedEvent(f"the stored event is larger than {self.max_bytes} bytes")
            payload = json.loads(await stream.readall())
        try:
            event = SystemEvent.model_validate(payload)
        except ValidationError as e:
            raise MalformedEvent(f"invalid event ({_fields(e)})") from None
        now = self.clock()
        if not now - self.window <= event.event_timestamp <= now + self.window:
            hours = self.window.total_seconds() / 3600
            raise MalformedEvent(
                f"EventTimestamp is outside the window of {hours:g} hours around now "
                "(EVENT_TIME_WINDOW_HOURS)"
            )
        return event

    async def event_from(self, body: bytes) -> SystemEvent:
        """A `system-events` message's event."""
        return await self.from_payload(parse_json(body))

    async def retry_from(self, body: bytes) -> tuple[DeliveryRetry, SystemEvent]:
        """A `delivery-retries` message and the event it retries."""
        try:
            retry = DeliveryRetry.model_validate(parse_json(body))
        except ValidationError as e:
            raise MalformedEvent(f"invalid retry ({_fields(e)})") from None
        return retry, await self.from_payload(retry.event)


def _fields(error: ValidationError) -> str:
    return ", ".join(".".join(map(str, err["loc"])) or "$" for err in error.errors())


def parse_json(body: bytes) -> Any:
    """A queue message's JSON; MalformedEvent if it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvent(f"not JSON: {e}") from None


def new_event(
    account: str, event_key: str, now: datetime, subject: str | None = None, data: Any = None
) -> SystemEvent:
    return SystemEvent(
        event_id=str(uuid.uuid4()),
        account_id=account,
        event_key=event_key,
        event_timestamp=now,
        subject=subject,
        data=data,
    )


class DeliveryRetry(ApiModel):
    """A scheduled retry on the `delivery-retries` queue: one event, one connection."""

    event: dict[str, Any]  # an EventStore payload
    connection_uid: uuid.UUID
    attempt: int
    parent_uid: uuid.UUID | None = None  # None: a first attempt put back by a full bulkhead
