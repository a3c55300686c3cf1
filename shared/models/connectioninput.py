"""A connection as a client sends it (POST and PUT), with every rule it must pass."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import (
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from shared import catalog, connstrings
from shared.models.base import ApiModel
from shared.models.deliveryoptions import (
    MAX_APPLICATION_PROPERTIES,
    OPTIONS_BY_FIELD,
    RetryPolicyName,
)

if TYPE_CHECKING:
    from shared.endpoints import EndpointRule


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
    title: str | None = Field(
        None, max_length=200, description="A name for people; the service does not use it."
    )
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
        description="For claim checks: the storage account holding BlobContainerName. "
        "Secrets come back as ***; send *** to keep the stored one.",
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
    active: bool = Field(
        True, description="Not active: the connection gets no events (a test delivery still goes)."
    )
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
    retry_policy: RetryPolicyName = Field(
        "Default",
        description="When a failed delivery is tried again: Default (30 s, 2 min, 10 min, 1 h, "
        "6 h), Aggressive (5 s to 10 min, 7 tries), Patient (1 min to 48 h, 7 tries) or None.",
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

    @field_validator(*OPTIONS_BY_FIELD, mode="wrap")
    @classmethod
    def _delivery_option(
        cls, value: Any, parse: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """Each delivery option's own rule (shared/models/deliveryoptions.py)."""
        return OPTIONS_BY_FIELD[info.field_name or ""].check(value, parse)

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
        return self.active and any(catalog.delivers(p, event_key) for p in self.enabled_events)
