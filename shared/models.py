"""Pydantic models of the contract: the one definition of every JSON shape.

Property names are PascalCase (aliases); input names match case-insensitively and unknown
input properties are refused, as ASP.NET-style clients expect.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_pascal

from shared import catalog, connstrings

if TYPE_CHECKING:
    from shared.endpoints import EndpointRule


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


def _endpoint_rule(info: ValidationInfo) -> EndpointRule | None:
    """The endpoint rule the API validates a request body with (models built in code, from
    data already checked, have none)."""
    return (info.context or {}).get("endpoints")


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9._\-/]{1,260}$")
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


class EventSettings(ApiModel):
    event_settings_type: Literal["Full", "Reference"] = Field(
        "Full", description="Full: the message carries Data. Reference: identity and Subject only."
    )


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


def _entra_id_field(value: object, info: ValidationInfo) -> bool:
    """A field required with Authentication EntraId and refused without it: whether it is
    there to check further."""
    if "authentication" not in info.data:
        return False  # that field failed already
    entra = info.data["authentication"] == "EntraId"
    if entra and value is None:
        raise ValueError("required with Authentication EntraId")
    if not entra and value is not None:
        raise ValueError("only with Authentication EntraId")
    return value is not None


class ConnectionInput(ApiModel):
    """An Azure Service Bus connection as a client sends it (POST and PUT)."""

    uid: UUID | None = Field(
        None, description="Optional on POST (a new one is made); PUT needs it."
    )
    title: str | None = Field(None, max_length=200)
    service_bus_connection_string: str | None = Field(
        None,
        max_length=2048,
        examples=[
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
            "SharedAccessKey=c2VjcmV0"
        ],
        description="Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=... "
        "Secrets come back as ***; send *** to keep the stored one. Required unless "
        "Authentication is EntraId.",
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
    blob_service_uri: str | None = Field(
        None,
        max_length=300,
        examples=["https://contoso.blob.core.windows.net"],
        description="With Authentication EntraId, instead of BlobContainerConnectionString: "
        "the storage account's blob endpoint, on which the customer grants our application "
        "Storage Blob Data Contributor.",
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
        default_factory=dict,
        max_length=100,
        description="Per enabled event key (or pattern) settings.",
    )
    session_id_source: Literal["None", "Subject", "EventKey", "AccountId"] = Field(
        "None",
        description="What each message's SessionId is (for session-enabled queues). "
        "An event without a Subject gets its EventId.",
    )
    time_to_live: timedelta | None = Field(
        None,
        description="ISO 8601 duration set as every message's TimeToLive, PT1M to P14D.",
        examples=["PT1H"],
    )
    application_properties: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_APPLICATION_PROPERTIES,
        description="Up to 20 static application properties added to every message.",
        examples=[{"Tenant": "contoso", "Route": "hr"}],
    )
    message_format: Literal["Default", "CloudEvents"] = Field(
        "Default",
        description="CloudEvents: the CloudEvents 1.0 AMQP binding, binary content mode.",
    )
    authentication: Literal["ConnectionString", "EntraId"] = Field(
        "ConnectionString",
        validate_default=True,
        description="EntraId: no secret; the customer grants our multi-tenant application "
        "Azure Service Bus Data Sender (FullyQualifiedNamespace and TenantId required).",
    )
    fully_qualified_namespace: str | None = Field(
        None,
        max_length=300,
        validate_default=True,
        examples=["contoso.servicebus.windows.net"],
        description="With Authentication EntraId: the namespace's host name.",
    )
    tenant_id: UUID | None = Field(
        None,
        validate_default=True,
        description="With Authentication EntraId: the customer's Entra ID tenant.",
    )

    @field_validator("service_bus_connection_string")
    @classmethod
    def _service_bus_connection_string(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:  # Authentication EntraId; its validator says when it is missing
            return value
        parts = connstrings.check_service_bus(value)
        if rule := _endpoint_rule(info):
            rule.check_service_bus(parts)
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
    def _storage_connection_string(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parts = connstrings.check_storage(value)
            if rule := _endpoint_rule(info):
                rule.check_storage(parts)
        return value

    @field_validator("blob_service_uri")
    @classmethod
    def _blob_service_uri(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9]+)?/?", value):
                raise ValueError("the blob endpoint, e.g. https://contoso.blob.core.windows.net")
            if rule := _endpoint_rule(info):  # the production rule of connection strings
                rule.check_storage({"BlobEndpoint": value})
        return value and value.rstrip("/")

    @field_validator("blob_container_name")
    @classmethod
    def _container_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _CONTAINER_NAME.match(value):
            raise ValueError(
                "3-63 lowercase letters, digits and single hyphens, "
                "starting and ending with a letter or digit"
            )
        stores = ("blob_container_connection_string", "blob_service_uri")
        if all(name in info.data for name in stores):  # else one of them failed already
            given = [info.data[name] is not None for name in stores]
            if all(given):
                raise ValueError("BlobContainerConnectionString or BlobServiceUri, not both")
            if any(given) != (value is not None):
                raise ValueError(
                    "comes together with BlobContainerConnectionString (or BlobServiceUri), "
                    "or neither"
                )
        return value

    @field_validator("enabled_events")
    @classmethod
    def _enabled_events(cls, values: list[str]) -> list[str]:
        canonical = [catalog.canonical_entry(v) for v in values]
        unknown = [str(i) for i, c in enumerate(canonical) if c is None]
        if unknown:  # named by position: input is never echoed (it may hold anything)
            raise ValueError(f"not an event key or pattern of the catalog: [{', '.join(unknown)}]")
        return list(dict.fromkeys(c for c in canonical if c))

    @field_validator("advanced_settings")
    @classmethod
    def _advanced_settings(
        cls, value: dict[str, EventSettings], info: ValidationInfo
    ) -> dict[str, EventSettings]:
        enabled: list[str] = info.data.get("enabled_events", [])
        for number, key in enumerate(value):
            named = key in enabled or (
                key in catalog.catalog() and any(catalog.matches(p, key) for p in enabled)
            )
            if not named:  # named by position: input is never echoed
                raise ValueError(f"entry {number} is not an enabled event key or pattern")
        return value

    @field_validator("authentication")
    @classmethod
    def _authentication(cls, value: str, info: ValidationInfo) -> str:
        if "service_bus_connection_string" not in info.data:
            return value  # that field failed already
        given = info.data["service_bus_connection_string"] is not None
        if value == "ConnectionString" and not given:
            raise ValueError("ServiceBusConnectionString is required (or Authentication EntraId)")
        if value == "EntraId" and given:
            raise ValueError("EntraId takes no ServiceBusConnectionString: send null")
        if value == "EntraId" and info.data.get("blob_container_connection_string"):
            raise ValueError("EntraId takes BlobServiceUri, not BlobContainerConnectionString")
        if value == "ConnectionString" and info.data.get("blob_service_uri"):
            raise ValueError("BlobServiceUri is only for Authentication EntraId")
        return value

    @field_validator("fully_qualified_namespace")
    @classmethod
    def _namespace(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not _entra_id_field(value, info) or value is None:
            return value
        if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", value):
            raise ValueError("a host name, e.g. contoso.servicebus.windows.net")
        if rule := _endpoint_rule(info):  # the production rule of connection strings
            rule.check_service_bus({"Endpoint": f"sb://{value}"})
        return value.lower()

    @field_validator("tenant_id")
    @classmethod
    def _tenant_id(cls, value: UUID | None, info: ValidationInfo) -> UUID | None:
        _entra_id_field(value, info)
        return value

    @field_validator("time_to_live", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        # ISO 8601 text in JSON, which the strict parsing of a body refuses for a timedelta
        if isinstance(value, str):
            try:
                return TypeAdapter(timedelta).validate_python(value)
            except ValidationError:
                raise ValueError("an ISO 8601 duration such as PT1H is expected") from None
        return value

    @field_validator("time_to_live")
    @classmethod
    def _time_to_live(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not MIN_TIME_TO_LIVE <= value <= MAX_TIME_TO_LIVE:
            raise ValueError("must be from PT1M (1 minute) to P14D (14 days)")
        return value

    @field_validator("application_properties")
    @classmethod
    def _application_properties(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {name.lower(): name for name in RESERVED_PROPERTIES}
        for number, (name, text) in enumerate(value.items()):
            if clash := reserved.get(name.lower()):  # our own name: safe to show
                raise ValueError(f"{clash} is set by the delivery service; use another name")
            if name.lower().startswith(CLOUDEVENTS_PREFIX.lower()):
                raise ValueError(f"the prefix {CLOUDEVENTS_PREFIX} is the CloudEvents binding's")
            if not re.fullmatch(r"[A-Za-z0-9._\-]{1,128}", name):  # by position: not echoed
                raise ValueError(f"name {number}: 1 to 128 letters, digits, '.', '-' or '_'")
            if len(text) > 1024:
                raise ValueError(f"value {number}: at most 1024 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_only_properties(cls, data: Any) -> Any:
        """`Health` and `Confirmed` as sent are dropped (a client may PUT back what it got);
        only a stored Connection carries them."""
        if isinstance(data, dict) and "health" not in cls.model_fields:
            return {
                k: v
                for k, v in data.items()
                if not (isinstance(k, str) and k.lower() in ("health", "confirmed"))
            }
        return data

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


class HealthStatus(StrEnum):
    """How a connection's deliveries are going (issue 15)."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"  # the last deliveries failed with Transient errors
    FAILING = "Failing"  # the last deliveries failed with Configuration errors
    SUSPENDED = "Suspended"  # failing for SUSPEND_AFTER_SECONDS: events are kept, not sent


class ConnectionHealth(ApiModel):
    """A connection's health, derived from its delivery outcomes (read-only; eventually
    consistent within a minute)."""

    status: HealthStatus = HealthStatus.HEALTHY
    since: Timestamp = Field(description="When Status last changed.")
    last_success_at: Timestamp | None = None
    last_failure_at: Timestamp | None = None
    consecutive_failures: int = Field(0, description="Failed deliveries since the last success.")
    last_error: DeliveryError | None = None


class Connection(ConnectionInput):
    """A stored connection, as the API returns it (secrets shown as ***)."""

    uid: UUID
    health: ConnectionHealth | None = Field(
        None, description="Read-only: ignored when sent, so a client can PUT back what it got."
    )
    confirmed: bool = Field(
        True,
        description="Read-only. False for an Authentication EntraId connection until its owner "
        "posts back the one-time code its verification message carried (POST .../confirm): "
        "until then nothing is delivered (events are kept). Always true for connection strings.",
    )

    @model_validator(mode="after")
    def _entra_id_starts_unconfirmed(self) -> Connection:
        if "confirmed" not in self.model_fields_set:
            self.confirmed = self.authentication != "EntraId"
        return self


class ConfirmRequest(ApiModel):
    """The one-time code of an Entra ID connection's verification message."""

    code: str = Field(min_length=1, max_length=32, examples=["K7WQ2-MZ4PA"])


class ConsentQuery(ApiModel):
    """Query string of the admin-consent link (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    tenant_id: UUID = Field(description="The Entra ID tenant whose administrator will consent.")


class ConsentLink(ApiModel):
    consent_url: str = Field(description="Entra ID's admin-consent page, with a signed state.")
    expires_at: Timestamp = Field(description="The link's state is refused after this.")


class ConsentCallbackQuery(ApiModel):
    """What Entra ID adds to the redirect after an administrator's consent (or refusal)."""

    model_config = ConfigDict(extra="ignore", alias_generator=None)

    tenant: str | None = Field(None, max_length=100)
    state: str | None = Field(None, max_length=1000)
    admin_consent: str | None = Field(None, max_length=10)
    error: str | None = Field(None, max_length=200)


class TenantConsented(ApiModel):
    tenant_id: UUID
    account: str


# ------------------------------------------------------------------ messages


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
    page: int = Field(
        1, ge=1, le=MAX_LISTED, description=f"Page * PageSize is at most {MAX_LISTED}."
    )
    page_size: int = Field(100, ge=1, le=500)
    include_body: bool = Field(
        True, description="False: each message's MessageBody is null (no body is read)."
    )

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


# -------------------------------------------------------------------- replays

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


class PortalSignIn(ApiModel):
    """The one-time code of a sign-in link (an API key goes in the Authorization header)."""

    code: str = Field(min_length=1, max_length=100)


class PortalSessionInfo(ApiModel):
    """A portal session as its page sees it; CsrfToken goes in X-CSRF-Token on changes."""

    account: str
    expires_at: Timestamp | None
    csrf_token: str | None


class Problem(BaseModel):
    """RFC 9457 problem details (lowercase names, as the RFC spells them)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: dict[str, list[str]] | None = None
