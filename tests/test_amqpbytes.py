"""Our AMQP encoding of a message (shared/dispatch/amqpbytes.py) against the SDK's own: the
same bytes as azure-servicebus makes of `Outgoing.to_servicebus()`, for every delivery option
and every size boundary of the encoding, on the pinned azure-servicebus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.servicebus._pyamqp._encode import encode_payload, encode_unknown
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

from shared.dispatch import amqpbytes
from shared.dispatch.outgoing import DeliveryOptions, Outgoing, build
from shared.events import new_event
from tests.factories import a_connection

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def sdk_bytes(message: Outgoing) -> bytes:
    amqp = PyamqpTransport.to_outgoing_amqp_message(message.to_servicebus().raw_amqp_message)
    return bytes(encode_payload(bytearray(), amqp))


def outgoing(
    settings_type: str = "Full",
    subject: str | None = "orders/1",
    data: Any = None,
    event_key: str = "Order.Shipped",
    is_retry: bool = False,
    **changes: object,
) -> Outgoing:
    event = new_event("acme", event_key, NOW, subject, {"OrderId": 1} if data is None else data)
    options = DeliveryOptions.of(a_connection(**changes))
    return build(event, uuid.uuid4(), settings_type, is_retry, options)


CASES = {
    "defaults": outgoing(),
    "a retry": outgoing(is_retry=True),
    "no subject": outgoing(subject=None),
    "a body of 255 bytes or less (vbin8)": outgoing(settings_type="Reference"),
    "a body over 64 KB (vbin32)": outgoing(data={"Note": "x" * 70_000}),
    "text beyond ASCII": outgoing(subject="commandes/été", data={"Nom": "Zoë 東京"}),
    "a long event key as the session (properties over 255 bytes: list32)": outgoing(
        event_key="E." + "k" * 120, SessionIdSource="EventKey"
    ),
    "session by subject": outgoing(SessionIdSource="Subject"),
    "session by event key": outgoing(SessionIdSource="EventKey"),
    "session by account": outgoing(SessionIdSource="AccountId"),
    "session by a long subject (its digest)": outgoing(
        subject="s/" + "x" * 200, SessionIdSource="Subject"
    ),
    "session without a subject (the EventId)": outgoing(subject=None, SessionIdSource="Subject"),
    "custom properties, one over 255 bytes (str32)": outgoing(
        ApplicationProperties={"Tenant": "t1", "Long": "v" * 300, "Empty": ""}
    ),
    "CloudEvents": outgoing(MessageFormat="CloudEvents"),
    "CloudEvents without data (an empty body)": outgoing(
        settings_type="Reference", MessageFormat="CloudEvents"
    ),
}


@pytest.mark.parametrize("message", CASES.values(), ids=CASES.keys())
def test_a_message_is_written_as_the_sdk_encodes_it(message: Outgoing) -> None:
    assert amqpbytes.encoded(message) == sdk_bytes(message)


def test_a_claim_check_is_written_as_the_sdk_encodes_it() -> None:
    message = outgoing().claim_check("bodies", "acme/e1.json", "orders/1", "https://x/b")
    assert message.offloaded
    assert amqpbytes.encoded(message) == sdk_bytes(message)
    cloud = outgoing(MessageFormat="CloudEvents").claim_check("c", "b", None, "https://x/b")
    assert amqpbytes.encoded(cloud) == sdk_bytes(cloud)


def test_a_time_to_live_is_left_to_the_sdk() -> None:
    """The SDK adds a header and stamps the creation time for a time to live."""
    assert amqpbytes.encoded(outgoing(TimeToLive="PT1H")) is None


@pytest.mark.parametrize(
    "value", [True, False, 0, 1, -1, 127, 128, -128, -129, 2**31 - 1, -(2**31), "", "x" * 256]
)
def test_a_property_value_is_typed_as_the_sdk_infers_it(value: object) -> None:
    theirs = bytearray()
    encode_unknown(theirs, value, with_constructor=True)
    assert amqpbytes._value(value) == bytes(theirs)


@pytest.mark.parametrize("value", [2**31, 1.5, b"x", None, uuid.uuid4()])
def test_other_property_values_are_left_to_the_sdk(value: object) -> None:
    assert amqpbytes._value(value) is None
