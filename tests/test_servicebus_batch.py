"""Our batch filling (shared/dispatch/servicebus.py, `_added`) against the SDK's own
`add_message`: the same bytes, size and refusal, on the pinned azure-servicebus."""

from __future__ import annotations

from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.exceptions import MessageSizeExceededError

from shared.dispatch.servicebus import _added


def messages() -> list[ServiceBusMessage]:
    """Small and large (the SDK's overhead differs at 256 bytes), with and without a session
    and properties."""
    return [
        ServiceBusMessage(
            b"x" * size,
            message_id=f"m{i}",
            subject="a.b",
            correlation_id=f"e{i}",
            session_id="s" if i % 2 else None,
            application_properties={"EventId": f"e{i}", "IsRetry": False, "SchemaVersion": 1},
        )
        for i, size in enumerate((10, 300, 0, 2_000, 40))
    ]


def filled(limit: int, add: Any) -> ServiceBusMessageBatch:
    batch = ServiceBusMessageBatch(max_size_in_bytes=limit)
    for message in messages() * 3:
        if not add(batch, message):
            break
    return batch


def sdk_add(batch: ServiceBusMessageBatch, message: ServiceBusMessage) -> bool:
    try:
        batch.add_message(message)
    except MessageSizeExceededError:
        return False
    return True


@pytest.mark.parametrize(("limit", "count"), [(100_000, 15), (5_000, 8), (300, 1)])
def test_a_batch_filled_by_us_is_the_sdks_byte_for_byte(limit: int, count: int) -> None:
    ours, theirs = filled(limit, _added), filled(limit, sdk_add)
    assert len(ours) == len(theirs) == count
    assert ours.size_in_bytes == theirs.size_in_bytes
    assert ours._message == theirs._message  # the envelope and each message's encoding
