"""Delivery options (issue 24): each option is one class that owns its rule, its stored form
and what it does to an outgoing message; `DELIVERY_OPTIONS` lists them, and the connection
model (validation), its storage (the `DeliveryOptions` column), the message builder and the
retry schedule iterate that list. The field itself, with its description for the OpenAPI
document, is declared on `ConnectionInput` under the option's `field` name."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import TypeAdapter, ValidationError

# The application properties every message carries (CONTRACT section 4): a connection's own
# ApplicationProperties may not shadow them, nor the CloudEvents binding's prefix.
RESERVED_PROPERTIES = (
    "EventKey",
    "EventId",
    "EventTimestamp",
    "AccountId",
    "IsRetry",
    "Offloaded",
    "SchemaVersion",
    "BlobName",
)
CLOUDEVENTS_PREFIX = "cloudEvents:"
MAX_APPLICATION_PROPERTIES = 20
MIN_TIME_TO_LIVE = timedelta(minutes=1)
MAX_TIME_TO_LIVE = timedelta(days=14)  # the Basic tier's longest; see docs/API.md

Parse = Callable[[Any], Any]


class DeliveryOption:
    """One delivery option. Defaults: no rule beyond the field's type, stored as its JSON,
    no effect on a message (an option may act elsewhere, as RetryPolicy does on retries)."""

    field: ClassVar[str]  # its field on ConnectionInput (the API's name is its PascalCase)

    @classmethod
    def check(cls, value: Any, parse: Parse) -> Any:
        """The value as sent, parsed by the field's type (`parse`) and checked; a ValueError
        becomes a 400 naming the field."""
        return parse(value)

    @classmethod
    def load(cls, stored: Any) -> Any:
        """The value from its stored JSON form (written by `model_dump(mode="json")`)."""
        return stored

    @classmethod
    def message_fields(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        """Arguments it adds to the `ServiceBusMessage` of an `Outgoing`."""
        return {}

    @classmethod
    def properties(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        """Application properties it adds to an `Outgoing`'s message."""
        return {}


class SessionIdSource(DeliveryOption):
    field = "session_id_source"

    @classmethod
    def message_fields(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        return {"session_id": outgoing.session_id}


class TimeToLive(DeliveryOption):
    field = "time_to_live"

    @classmethod
    def check(cls, value: Any, parse: Parse) -> Any:
        # ISO 8601 text in JSON, which the strict parsing of a body refuses for a timedelta
        if isinstance(value, str):
            try:
                value = TypeAdapter(timedelta).validate_python(value)
            except ValidationError:
                raise ValueError("an ISO 8601 duration such as PT1H is expected") from None
        ttl: timedelta | None = parse(value)
        if ttl is not None and not MIN_TIME_TO_LIVE <= ttl <= MAX_TIME_TO_LIVE:
            raise ValueError("must be from PT1M (1 minute) to P14D (14 days)")
        return ttl

    @classmethod
    def load(cls, stored: Any) -> Any:
        return stored and TypeAdapter(timedelta).validate_python(stored)

    @classmethod
    def message_fields(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        return {"time_to_live": value}


class ApplicationProperties(DeliveryOption):
    field = "application_properties"

    @classmethod
    def check(cls, value: Any, parse: Parse) -> Any:
        properties: dict[str, str] = parse(value)
        reserved = {name.lower(): name for name in RESERVED_PROPERTIES}
        for number, (name, text) in enumerate(properties.items()):
            if clash := reserved.get(name.lower()):  # our own name: safe to show
                raise ValueError(f"{clash} is set by the delivery service; use another name")
            if name.lower().startswith(CLOUDEVENTS_PREFIX.lower()):
                raise ValueError(f"the prefix {CLOUDEVENTS_PREFIX} is the CloudEvents binding's")
            if not re.fullmatch(r"[A-Za-z0-9._\-]{1,128}", name):  # by position: not echoed
                raise ValueError(f"name {number}: 1 to 128 letters, digits, '.', '-' or '_'")
            if len(text) > 1024:
                raise ValueError(f"value {number}: at most 1024 characters")
        return properties

    @classmethod
    def properties(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        return dict(value)  # names never clash with ours (checked above)


class MessageFormat(DeliveryOption):
    """CloudEvents: the binding's attributes as properties; the body is the event's data
    (shaped in `outgoing.build`, which asks `DeliveryOptions.cloud_events`)."""

    field = "message_format"

    @classmethod
    def properties(cls, value: Any, outgoing: Any) -> dict[str, Any]:
        return outgoing.cloud_event_attributes() if value == "CloudEvents" else {}


# A connection's retry schedules by name: the waits in seconds before each automatic retry
# (docs/API.md). Default is the app's own schedule (DELIVERY_RETRY_DELAYS), as before.
RetryPolicyName = Literal["Default", "Aggressive", "Patient", "None"]
RETRY_SCHEDULES: dict[str, tuple[float, ...] | None] = {
    "Default": None,  # 30 s, 2 min, 10 min, 1 h, 6 h unless DELIVERY_RETRY_DELAYS says else
    "Aggressive": (5, 10, 30, 60, 120, 300, 600),
    "Patient": (60, 600, 3600, 6 * 3600, 12 * 3600, 24 * 3600, 48 * 3600),
    "None": (),  # no automatic retry; a re-send or replay still can
}


class RetryPolicy(DeliveryOption):
    """When a failed delivery is tried again (shared/dispatch/retries.py); nothing on a message."""

    field = "retry_policy"

    @classmethod
    def schedule(cls, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        named = RETRY_SCHEDULES[name]
        return default if named is None else named


DELIVERY_OPTIONS: tuple[type[DeliveryOption], ...] = (
    SessionIdSource,
    TimeToLive,
    ApplicationProperties,
    MessageFormat,
    RetryPolicy,
)
OPTIONS_BY_FIELD = {option.field: option for option in DELIVERY_OPTIONS}
