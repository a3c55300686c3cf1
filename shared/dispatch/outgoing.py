"""What a subscriber receives: the Service Bus message of CONTRACT section 4, as plain data."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from shared.models import SystemEvent, iso_utc

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
# message_id is derived, not stored, so every attempt for an event and connection carries it.
_MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c0a52-3a9e-4d55-9a53-2f1b4f6f3c11")


def message_id(account: str, event_id: str, connection_uid: uuid.UUID) -> str:
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{account}/{event_id}/{connection_uid}"))


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


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

    @property
    def offloaded(self) -> bool:
        return self.blob_name is not None

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
        return props

    def to_servicebus(self) -> Any:
        from azure.servicebus import ServiceBusMessage

        return ServiceBusMessage(
            self.body,
            message_id=self.message_id,
            subject=self.event_key,
            content_type=CONTENT_TYPE,
            correlation_id=self.event_id,
            application_properties=self.application_properties(),  # type: ignore[arg-type]
        )

    def claim_check(self, container: str, blob_name: str, subject: str | None) -> Outgoing:
        """The small message that points at the full body stored in the subscriber's blob."""
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
        return replace(self, body=encode(reference), blob_name=blob_name)


def build(
    event: SystemEvent, connection_uid: uuid.UUID, settings_type: str, is_retry: bool
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
    return Outgoing(
        body=encode(body),
        message_id=message_id(event.account_id, event.event_id, connection_uid),
        event_key=event.event_key,
        event_id=event.event_id,
        event_timestamp=timestamp,
        account=event.account_id,
        is_retry=is_retry,
    )


def claim_check_blob_name(outgoing: Outgoing, connection_uid: uuid.UUID) -> str:
    """Stable per event and connection, so a retry overwrites rather than adds a blob."""
    return f"{outgoing.account}/{outgoing.event_id}/{connection_uid}.json"
