"""Our batch filling (shared/dispatch/servicebus.py, `_encoded` and `_added`) against the
SDK's own `add_message` of `Outgoing.to_servicebus()`: the same bytes, size, refusal and
envelope, on the pinned azure-servicebus; with Azure SDK tracing on, the SDK's encoding."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from azure.servicebus import ServiceBusMessageBatch
from azure.servicebus.exceptions import MessageSizeExceededError

from shared.dispatch import servicebus
from shared.dispatch.outgoing import DeliveryOptions, Outgoing, build
from shared.events import new_event
from tests.factories import a_connection

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def messages() -> list[Outgoing]:
    """Bodies of several sizes, with and without a session. (The SDK's overhead a message
    changes at 256 bytes; our messages' properties alone pass that.)"""
    sessions = DeliveryOptions.of(a_connection(SessionIdSource="Subject"))
    plain = DeliveryOptions.of(a_connection())
    return [
        build(
            new_event("acme", "a.b", NOW, f"s/{i}", {"Note": "x" * size}),
            uuid.uuid4(),
            "Full",
            False,
            sessions if i % 2 else plain,
        )
        for i, size in enumerate((10, 300, 0, 2_000, 40))
    ]


MESSAGES = messages()  # once: each has its own ids


def filled(
    limit: int, add: Callable[[ServiceBusMessageBatch, Outgoing], bool]
) -> ServiceBusMessageBatch:
    batch = ServiceBusMessageBatch(max_size_in_bytes=limit)
    for message in MESSAGES * 3:
        if not add(batch, message):
            break
    return batch


def ours(batch: ServiceBusMessageBatch, message: Outgoing) -> bool:
    encoded = servicebus._encoded(batch, message, direct=not servicebus.traced())
    return servicebus._added(batch, message, encoded)


def sdk_add(batch: ServiceBusMessageBatch, message: Outgoing) -> bool:
    try:
        batch.add_message(message.to_servicebus())
    except MessageSizeExceededError:
        return False
    return True


@pytest.mark.parametrize(("limit", "count"), [(100_000, 15), (5_000, 5), (500, 1)])
def test_a_batch_filled_by_us_is_the_sdks_byte_for_byte(limit: int, count: int) -> None:
    mine, theirs = filled(limit, ours), filled(limit, sdk_add)
    assert len(mine) == len(theirs) == count
    assert mine.size_in_bytes == theirs.size_in_bytes
    assert mine._message == theirs._message  # the envelope and each message's encoding


def test_with_sdk_tracing_on_the_sdk_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing adds properties to a message: our direct encoding steps aside."""

    def not_called(message: Outgoing) -> bytes:
        raise AssertionError("encoded directly while tracing is on")

    monkeypatch.setattr(servicebus.amqpbytes, "encoded", not_called)
    monkeypatch.setattr(servicebus, "traced", lambda: True)
    mine, theirs = filled(100_000, ours), filled(100_000, sdk_add)
    assert mine._message == theirs._message
