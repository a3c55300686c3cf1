"""Things tests make, shared by several test modules."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from shared.clock import uuid7
from shared.models import Connection, Message, MessageStatus
from shared.storage.messages import LoggedMessage

SB = (
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=S3CRET="
)


def a_connection(**changes: object) -> Connection:
    return Connection.model_validate(
        {
            "Uid": str(uuid.uuid4()),
            "ServiceBusConnectionString": SB,
            "QueueName": "q",
            "EnabledEvents": ["*"],
            **changes,
        }
    )


def log_record(
    connection_uid: uuid.UUID, at: datetime, failed: bool = False, latency_ms: int = 3
) -> LoggedMessage:
    """A delivery record logged at `at` (its Uid's time), the send ending `latency_ms` after
    its event's time."""
    elapsed = min(latency_ms, 3)
    return LoggedMessage(
        Message(
            uid=uuid7(at),
            connection_uid=connection_uid,
            event_key="Order.Shipped",
            event_timestamp=at - timedelta(milliseconds=latency_ms - elapsed),
            request_timestamp=at,
            message_body="{}",
            elapsed_milliseconds=elapsed,
            request_metadata="{}",
            status=MessageStatus.FAILED if failed else MessageStatus.SUCCEEDED,
        ),
        account="acme",
        event_id=str(uuid.uuid4()),
    )
