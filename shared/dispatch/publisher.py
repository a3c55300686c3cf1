"""Sending one message to a connection's queue: claim check included, within the isolation
rules (shared/dispatch/isolation.py: a deadline per attempt, the connection's bulkhead, its
breaker). An attempt's failure comes back as a DeliveryError, never as an exception.

The Service Bus senders and the claim-check store are given (the composition root,
shared/services.py, makes them), so a test can hand it senders that misbehave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from shared import connstrings
from shared.clock import Clock
from shared.dispatch import outgoing
from shared.dispatch.claimcheck import BlobIdentity, ClaimCheckStore
from shared.dispatch.entra import EntraTarget
from shared.dispatch.errors import TooLarge, classify
from shared.dispatch.isolation import Deadline, Isolation, Slot
from shared.dispatch.servicebus import QueueSender, SenderPool
from shared.endpoints import blob_endpoint
from shared.failpoints import failpoint
from shared.models.connection import Connection
from shared.models.records import DeliveryError

if TYPE_CHECKING:
    from shared.storage.connections import StoredConnection


def secrets_of(stored: StoredConnection) -> list[str]:
    """The secret parts of a connection's strings, to be scrubbed from error texts."""
    c = stored.connection
    found = []
    for value in (c.service_bus_connection_string, c.blob_container_connection_string):
        if value:
            try:
                parts = connstrings.parse_any(value)
            except connstrings.ConnectionStringError:  # scrub() still masks the usual shapes
                continue
            found += [v for k, v in parts.items() if k in connstrings.SECRET_PARTS]
    return found


@dataclass(frozen=True)
class Sent:
    """What one send ended with: the message as sent (maybe a claim check), and how."""

    message: outgoing.Outgoing
    started: datetime
    elapsed_milliseconds: int
    error: DeliveryError | None


class Publisher:
    def __init__(
        self, senders: SenderPool, claims: ClaimCheckStore, isolation: Isolation, clock: Clock
    ) -> None:
        self.senders = senders
        self.claims = claims
        self.isolation = isolation
        self.clock = clock

    async def publish(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None = None,
    ) -> Sent:
        """Send, and say how it went. Without a bulkhead `slot` in hand, wait for one within
        the deadline."""
        started = self.clock()
        clock_start = time.perf_counter()
        error: DeliveryError | None = None
        try:
            message = await self._isolated_send(stored, message, subject, slot)
        except Exception as e:
            error = classify(e, secrets_of(stored))
        elapsed = round((time.perf_counter() - clock_start) * 1000)
        return Sent(message, started, elapsed, error)

    async def send_unrecorded(self, stored: StoredConnection, message: outgoing.Outgoing) -> None:
        """Send under one deadline and past the breaker (the verification on save: a
        connection being fixed is tried whatever its past); raises what the send raised."""
        deadline = self.isolation.deadline()
        async with deadline.scope():
            await self._send(stored, message, None, deadline)

    async def probe_claim_check(self, stored: StoredConnection) -> None:
        """Upload and delete a small blob in the connection's container, if it has one."""
        c = stored.connection
        if c.blob_container_name:
            cs = c.blob_container_connection_string
            await self.claims.probe(cs, c.blob_container_name, self._blob_identity(c))

    async def _isolated_send(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        slot: Slot | None,
    ) -> outgoing.Outgoing:
        """One send within the isolation rules: CircuitOpen at once while the connection's
        breaker is open, else everything (a wait for a slot included) under one deadline."""
        breaker = self.isolation.breakers.get(stored.uid)
        if not breaker.admit():
            raise breaker.open_error()
        deadline = self.isolation.deadline()
        try:
            async with deadline.scope():
                held = slot or await self.isolation.connections.enter(stored.uid)
                with held:
                    sent = await self._send(stored, message, subject, deadline)
        except BaseException as e:
            breaker.record(e)
            raise
        breaker.record(None)
        return sent

    async def _send(
        self,
        stored: StoredConnection,
        message: outgoing.Outgoing,
        subject: str | None,
        deadline: Deadline,
    ) -> outgoing.Outgoing:
        """Send; a message too large for the link goes by claim check when there is a container."""
        c = stored.connection
        sender = self.sender(c)
        try:
            await sender.send(message, deadline)
            return message
        except TooLarge:
            if message.offloaded or not c.blob_container_name:
                raise
        name = outgoing.claim_check_blob_name(message, c.uid)
        container = c.blob_container_name  # the model makes it come with a blob store
        identity = self._blob_identity(c)
        cs = c.blob_container_connection_string
        await self.claims.upload(cs, container, name, message.body, identity)
        failpoint("after-claim-upload")
        url = identity.account_url if identity else blob_endpoint(connstrings.parse_any(cs or ""))
        link = f"{url.rstrip('/')}/{container}/{name}"
        reference = message.claim_check(container, name, subject, link)
        await sender.send(reference, deadline)
        return reference

    def sender(self, c: Connection) -> QueueSender:
        entra = None
        if c.authentication == "EntraId":
            entra = EntraTarget(c.fully_qualified_namespace or "", str(c.tenant_id))
        return self.senders.get(c.service_bus_connection_string or "", c.queue_name, entra)

    def _blob_identity(self, c: Connection) -> BlobIdentity | None:
        """With Authentication EntraId, the blob endpoint and a token of the customer's tenant."""
        if c.authentication != "EntraId" or not c.blob_service_uri:
            return None
        tenant = str(c.tenant_id)
        return BlobIdentity(c.blob_service_uri, tenant, self.senders.credentials(tenant))

    async def close(self) -> None:
        await self.senders.close()
        await self.claims.close()
