"""What a subscriber receives: the Service Bus message of CONTRACT section 4, as plain data,
shaped by the connection's delivery options (shared/models/deliveryoptions.py)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.models.base import iso_utc
from shared.models.connectioninput import ConnectionInput
from shared.models.deliveryoptions import (
    CLOUDEVENTS_PREFIX,
    DELIVERY_OPTIONS,
    DeliveryOption,
    MessageFormat,
    SessionIdSource,
)
from shared.models.events import SystemEvent
from shared.settings import cloudevents_source

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
# message_id is derived, not stored, so every attempt for an event and connection carries it.
_MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c0a52-3a9e-4d55-9a53-2f1b4f6f3c11")


def message_id(account: str, event_id: str, connection_uid: uuid.UUID) -> str:
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{account}/{event_id}/{connection_uid}"))


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


MAX_SESSION_ID = 128  # Service Bus's limit on a SessionId


@dataclass(frozen=True)
class DeliveryOptions:
    """A connection's delivery options as sending needs them: each option's value by its
    field (an option not given: its default, today's messages)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, connection: ConnectionInput) -> DeliveryOptions:
        return cls({option.field: getattr(connection, option.field) for option in DELIVERY_OPTIONS})

    def value(self, option: type[DeliveryOption]) -> Any:
        if option.field in self.values:
            return self.values[option.field]
        return ConnectionInput.model_fields[option.field].get_default(call_default_factory=True)

    @property
    def cloud_events(self) -> bool:
        return self.value(MessageFormat) == "CloudEvents"


DEFAULT_OPTIONS = DeliveryOptions()


def session_id(source: str, outgoing: Outgoing) -> str | None:
    """The SessionId `source` names; an event without a Subject gets its EventId (each such
    event a session of its own: nothing is ordered that has no subject to order by)."""
    if source == "None":
        return None
    value = {"Subject": outgoing.subject, "EventKey": outgoing.event_key}.get(
        source, outgoing.account
    )
    value = value or outgoing.event_id
    if len(value) > MAX_SESSION_ID:  # a long Subject: its digest, the same for every event
        return "sha256-" + hashlib.sha256(value.encode()).hexdigest()
    return value


@dataclass(frozen=True)
class Outgoing:
    """A message to send: body bytes and the properties around it."""

    body: bytes
    message_id: str
    event_key: str
    event_id: str
    event_timestamp: str
    account: str
    is_retry: bool
    blob_name: str | None = None
    subject: str | None = None
    options: DeliveryOptions = field(default=DEFAULT_OPTIONS)
    blob_url: str | None = None  # a claim check's blob, for CloudEvents' dataref

    @property
    def offloaded(self) -> bool:
        return self.blob_name is not None

    @property
    def session_id(self) -> str | None:
        return session_id(self.options.value(SessionIdSource), self)

    def application_properties(self) -> dict[str, str | bool | int]:
        props: dict[str, str | bool | int] = {
            "EventKey": self.event_key,
            "EventId": self.event_id,
            "EventTimestamp": self.event_timestamp,
            "AccountId": self.account,
            "IsRetry": self.is_retry,
            "Offloaded": self.offloaded,
            "SchemaVersion": SCHEMA_VERSION,
        }
        if self.blob_name:
            props["BlobName"] = self.blob_name
        for option in DELIVERY_OPTIONS:
            props.update(option.properties(self.options.value(option), self))
        return props

    def cloud_event_attributes(self) -> dict[str, str]:
        """The CloudEvents 1.0 attributes as the AMQP binding's application properties
        (binary content mode); a claim check adds `dataref` (the Claim Check extension)."""
        attributes = {
            "specversion": "1.0",
            "id": self.event_id,
            "type": self.event_key,
            "source": cloudevents_source(),
            "time": self.event_timestamp,
        }
        if self.subject:
            attributes["subject"] = self.subject
        if self.body:
            attributes["datacontenttype"] = CONTENT_TYPE
        if self.blob_url:
            attributes["dataref"] = self.blob_url
        return {CLOUDEVENTS_PREFIX + k: v for k, v in attributes.items()}

    def to_servicebus(self) -> Any:
        from azure.servicebus import ServiceBusMessage

        fields: dict[str, Any] = {}
        for option in DELIVERY_OPTIONS:
            fields.update(option.message_fields(self.options.value(option), self))
        return ServiceBusMessage(
            self.body,
            message_id=self.message_id,
            subject=self.event_key,
            content_type=CONTENT_TYPE if self.body else None,
            correlation_id=self.event_id,
            application_properties=self.application_properties(),  # type: ignore[arg-type]
            **fields,
        )

    def claim_check(
        self, container: str, blob_name: str, subject: str | None, blob_url: str | None = None
    ) -> Outgoing:
        """The small message that points at the full body stored in the subscriber's blob
        (in CloudEvents form: this JSON as data, and `dataref` the blob's URL)."""
        reference = {
            "EventId": self.event_id,
            "EventKey": self.event_key,
            "EventTimestamp": self.event_timestamp,
            "Subject": subject,
            "BlobContainerName": container,
            "BlobName": blob_name,
            "ContentLength": len(self.body),
            "ContentSha256": hashlib.sha256(self.body).hexdigest(),
        }
        return replace(self, body=encode(reference), blob_name=blob_name, blob_url=blob_url)


def build(
    event: SystemEvent,
    connection_uid: uuid.UUID,
    settings_type: str,
    is_retry: bool,
    options: DeliveryOptions = DEFAULT_OPTIONS,
) -> Outgoing:
    timestamp = iso_utc(event.event_timestamp)
    body: dict[str, Any] = {
        "EventId": event.event_id,
        "EventKey": event.event_key,
        "EventTimestamp": timestamp,
        "Subject": event.subject,
    }
    if settings_type != "Reference":
        body["Data"] = event.data
    if options.cloud_events:  # the attributes carry the rest; Reference has no data
        encoded = encode(event.data) if settings_type != "Reference" else b""
    else:
        encoded = encode(body)
    return Outgoing(
        body=encoded,
        message_id=message_id(event.account_id, event.event_id, connection_uid),
        event_key=event.event_key,
        event_id=event.event_id,
        event_timestamp=timestamp,
        account=event.account_id,
        is_retry=is_retry,
        subject=event.subject,
        options=options,
    )


def claim_check_blob_name(outgoing: Outgoing, connection_uid: uuid.UUID) -> str:
    """Stable per event and connection, so a retry overwrites rather than adds a blob."""
    return f"{outgoing.account}/{outgoing.event_id}/{connection_uid}.json"
