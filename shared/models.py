"""Pydantic models of the contract: the one definition of every JSON shape.

Property names are PascalCase (aliases); input names match case-insensitively and unknown
input properties are refused, as ASP.NET-style clients expect.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_pascal

from shared import catalog, connstrings


def iso_utc(value: datetime) -> str:
    """`2025-10-13T14:22:10.652Z`: milliseconds, UTC, as the seed shows."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[AwareDatetime, PlainSerializer(iso_utc, return_type=str)]


class ApiModel(BaseModel):
    # Schemas are built on first use, not at import: a shorter cold start.
    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="forbid", defer_build=True
    )

    @model_validator(mode="before")
    @classmethod
    def _names_ignore_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        by_lower = {(f.alias or n).lower(): f.alias or n for n, f in cls.model_fields.items()}
        named: dict[Any, Any] = {}
        for key, value in data.items():
            name = by_lower.get(key.lower(), key) if isinstance(key, str) else key
            if name in named:
                raise ValueError(f"property {name} is given twice (names ignore case)")
            named[name] = value
        return named

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def error_map(error: ValidationError) -> dict[str, list[str]]:
    """Validation errors by property path, as clients name properties (`EnabledEvents[2]`)."""
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        path = "".join(
            f"[{part}]"
            if isinstance(part, int)
            # a defaulted field reports its Python name; clients know the PascalCase one
            else f".{to_pascal(part) if re.fullmatch('[a-z0-9_]+', part) else part}"
            for part in item["loc"]
        ).lstrip(".")
        errors.setdefault(path or "$", []).append(item["msg"].removeprefix("Value error, "))
    return errors


# ---------------------------------------------------------------- connections

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9._\-/]{1,260}$")
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


class EventSettings(ApiModel):
    event_settings_type: Literal["Full", "Reference"] = Field(
        "Full", description="Full: the message carries Data. Reference: identity and Subject only."
    )


class ConnectionInput(ApiModel):
    """An Azure Service Bus connection as a client sends it (POST and PUT)."""

    uid: UUID | None = Field(
        None, description="Optional on POST (a new one is made); PUT needs it."
    )
    title: str | None = Field(None, max_length=200)
    service_bus_connection_string: str = Field(
        max_length=2048,
        examples=[
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
            "SharedAccessKey=c2VjcmV0"
        ],
        description="Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=... "
        "Secrets come back as ***; send *** to keep the stored one.",
    )
    queue_name: str = Field(description="Queue (or topic) to deliver to.", examples=["events"])
    blob_container_connection_string: str | None = Field(
        None,
        max_length=2048,
        examples=[
            "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=a2V5;"
            "EndpointSuffix=core.windows.net"
        ],
    )
    blob_container_name: str | None = Field(
        None,
        validate_default=True,
        description="Container for large bodies.",
        examples=["large-events"],
    )
    active: bool = True
    enabled_events: list[str] = Field(
        default_factory=list,
        max_length=100,
        examples=[["Employee.Created", "Order.*"]],
        description="Event keys, `Prefix.*` or `*`. Empty: the connection gets nothing.",
    )
    advanced_settings: dict[str, EventSettings] = Field(
        default_factory=dict, description="Per enabled event key (or pattern) settings."
    )

    @field_validator("service_bus_connection_string")
    @classmethod
    def _service_bus_connection_string(cls, value: str) -> str:
        connstrings.check_service_bus(value)
        return value

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, value: str, info: ValidationInfo) -> str:
        if not _QUEUE_NAME.match(value) or value.startswith("/") or value.endswith("/"):
            raise ValueError(
                "1 to 260 letters, digits, '.', '-', '_' or '/', not starting or ending with '/'"
            )
        entity_path = connstrings.entity_path(info.data.get("service_bus_connection_string"))
        if entity_path not in (None, value):
            raise ValueError("must equal the EntityPath of ServiceBusConnectionString")
        return value

    @field_validator("blob_container_connection_string")
    @classmethod
    def _storage_connection_string(cls, value: str | None) -> str | None:
        if value is not None:
            connstrings.check_storage(value)
        return value

    @field_validator("blob_container_name")
    @classmethod
    def _container_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _CONTAINER_NAME.match(value):
            raise ValueError(
                "3-63 lowercase letters, digits and single hyphens, "
                "starting and ending with a letter or digit"
            )
        if "blob_container_connection_string" in info.data:  # else that field failed already
            paired = info.data["blob_container_connection_string"] is not None
            if paired != (value is not None):
                raise ValueError("comes together with BlobContainerConnectionString, or neither")
        return value

    @field_validator("enabled_events")
    @classmethod
    def _enabled_events(cls, values: list[str]) -> list[str]:
        canonical = [catalog.canonical_entry(v) for v in values]
        unknown = [v for v, c in zip(values, canonical, strict=True) if c is None]
        if unknown:
            raise ValueError(f"unknown event key or pattern: {', '.join(unknown)}")
        return list(dict.fromkeys(c for c in canonical if c))

    @field_validator("advanced_settings")
    @classmethod
    def _advanced_settings(
        cls, value: dict[str, EventSettings], info: ValidationInfo
    ) -> dict[str, EventSettings]:
        enabled: list[str] = info.data.get("enabled_events", [])
        for key in value:
            named = key in enabled or (
                key in catalog.catalog() and any(catalog.matches(p, key) for p in enabled)
            )
            if not named:
                raise ValueError(f"{key!r} is not an enabled event key or pattern")
        return value

    def fields_holding_mask(self) -> list[str]:
        """Connection strings that still hold the `***` a response showed in place of a secret."""
        strings = {
            "ServiceBusConnectionString": self.service_bus_connection_string,
            "BlobContainerConnectionString": self.blob_container_connection_string,
        }
        return [name for name, value in strings.items() if value and connstrings.MASK in value]

    def event_settings_type(self, event_key: str) -> str:
        entry = catalog.most_specific(list(self.advanced_settings), event_key)
        return self.advanced_settings[entry].event_settings_type if entry else "Full"

    def wants(self, event_key: str) -> bool:
        return self.active and any(catalog.matches(p, event_key) for p in self.enabled_events)


class Connection(ConnectionInput):
    """A stored connection, as the API returns it (secrets shown as ***)."""

    uid: UUID


# ------------------------------------------------------------------ messages


class MessageStatus(IntEnum):
    SUCCEEDED = 1
    FAILED = 2


class Message(ApiModel):
    """One delivery attempt to one connection."""

    uid: UUID
    connection_uid: UUID
    event_key: str
    event_timestamp: Timestamp
    request_timestamp: Timestamp = Field(description="When the send began.")
    message_body: str = Field(description="The body sent to Service Bus, as text.")
    elapsed_milliseconds: int
    request_metadata: str = Field(description="JSON object as text: QueueName, MessageId, ...")
    status: MessageStatus = Field(description="1 Succeeded, 2 Failed.")
    parent_service_bus_message_uid: UUID | None = None
    is_retry: bool = False


class MessagePage(ApiModel):
    messages: list[Message]
    page: int
    total_hits: int


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
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(100, ge=1, le=500)


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


# -------------------------------------------------------------------- events


class CatalogEntry(ApiModel):
    event_key: str
    description: str


class SystemEvent(ApiModel):
    """An event the platform raises, as it arrives on the `system-events` queue."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f/\\#?]+$")
    account_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    event_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    event_timestamp: Timestamp
    subject: str | None = Field(None, max_length=1024)
    data: Any = None


# -------------------------------------------------------------------- other


class Health(ApiModel):
    status: Literal["Healthy"]
    storage: str
    version: str


class Problem(BaseModel):
    """RFC 9457 problem details (lowercase names, as the RFC spells them)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: dict[str, list[str]] | None = None
