"""Verification on save: a `System.ConnectionVerified` message sent through the delivery path
(same body, properties and sender), and a probe blob uploaded and deleted when the connection
has a claim check container, within a time budget. A failure is classified as deliveries
are, and names the property the customer has to fix.

Only an answer of the service itself is told apart (a refused key, a missing queue): every
reason a namespace or container could not be reached (silent, closed, an address we never
connect to, a name that does not resolve, a timeout) is one verdict, `unreachable`, so that
verification tells nothing of what lies behind a host (issue 23)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from shared.dispatch import outgoing
from shared.dispatch.errors import classify
from shared.events import new_event
from shared.models.connection import Connection
from shared.models.records import DeliveryError, ErrorCategory

if TYPE_CHECKING:
    from shared.dispatch.dispatcher import Dispatcher
    from shared.storage.connections import StoredConnection

VERIFIED_EVENT_KEY = "System.ConnectionVerified"
_QUEUE_ERRORS = frozenset({"MessagingEntityNotFoundError", "MessagingEntityDisabledError"})
UNREACHABLE = {
    "ServiceBus": "the namespace could not be reached",
    "Blob": "the blob service could not be reached",
}


@dataclass(frozen=True)
class Verdict:
    """None when the message was sent; else why not, and the property to look at."""

    error: DeliveryError | None = None
    names: str = ""  # the property to look at
    part: str = "ServiceBus"  # or "Blob": what failed

    @property
    def unreachable(self) -> bool:
        """The service gave no answer of its own (or the address is one we never connect to)."""
        error = self.error
        return error is not None and (
            error.category != ErrorCategory.CONFIGURATION or error.type == "EndpointRefused"
        )

    @property
    def reason(self) -> str:
        """The text to show: the one for unreachable, else the error's fixed text."""
        if self.unreachable or self.error is None:
            return UNREACHABLE[self.part]
        return self.error.message


async def verify(
    dispatcher: Dispatcher,
    stored: StoredConnection,
    now: datetime,
    budget_seconds: float,
    code: str | None = None,
) -> Verdict:
    """Send the verification message (carrying `code`, an Entra ID connection's one-time
    confirmation code, when given) and probe the claim check container."""
    from shared.dispatch.publisher import secrets_of

    c = stored.connection
    data = {"Message": "The connection was saved and can receive events."}
    if code is not None:
        data = {
            "Message": "The connection was saved. To start deliveries, post this code to "
            f'POST /v1/azureservicebusconnections/{c.uid}/confirm as {{"Code": "..."}}.',
            "ConfirmationCode": code,
        }
    event = new_event(
        stored.account, VERIFIED_EVENT_KEY, now, subject=f"connections/{c.uid}/verify", data=data
    )
    message = outgoing.build(
        event,
        c.uid,
        c.event_settings_type(VERIFIED_EVENT_KEY),
        is_retry=False,
        options=outgoing.DeliveryOptions.of(c),
    )
    part = "ServiceBus"
    try:
        async with asyncio.timeout(budget_seconds):
            await dispatcher.send_unrecorded(stored, message)
            part = "Blob"
            await dispatcher.probe_claim_check(stored)
    except Exception as e:  # classified as a delivery's failure would be; never raised
        error = classify(e, secrets_of(stored))
        return Verdict(error, _property(part, error, c), part)
    return Verdict()


def _property(part: str, error: DeliveryError, c: Connection) -> str:
    """The property a failure points at."""
    entra = c.authentication == "EntraId"
    if part == "Blob":
        if error.type == "ResourceNotFoundError":
            return "BlobContainerName"
        return "BlobServiceUri" if entra else "BlobContainerConnectionString"
    if error.type in _QUEUE_ERRORS:
        return "QueueName"
    if error.type == "SessionRequired":
        return "SessionIdSource"
    return "FullyQualifiedNamespace" if entra else "ServiceBusConnectionString"
