"""Messages of a connection: the test event. (Listing, delivery, retry and re-send are next.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.catalog import TEST_EVENT_KEY

if TYPE_CHECKING:
    from shared.models.records import Message
    from shared.services import Services
    from shared.storage.connections import StoredConnection


async def send_test(services: Services, stored: StoredConnection) -> Message:
    """Deliver a System.Test event to the connection now: its record, whatever its Status
    (a failed test is not retried)."""
    from shared.deliveries import Origin
    from shared.dispatch.recorder import Attempt
    from shared.events import new_event

    event = new_event(
        stored.account,
        TEST_EVENT_KEY,
        services.clock(),
        subject=f"connections/{stored.uid}/test",
        data={"Message": "A test event from the event delivery service."},
    )
    dispatcher = await services.dispatcher()
    return (await dispatcher.deliver(event, stored, Attempt(Origin.TEST))).message
