"""Sending to customers' Service Bus queues: one sender per connection string and queue,
concurrent deliveries gathered into SDK batches.

A sender is never used by two sends at once: concurrent `send_messages` on one async sender
writes transfers out of order and breaks the link. The Coalescer gives each sender one flush at
a time, and what arrives meanwhile goes out as one batch (several times faster than singles).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from shared import connstrings
from shared.dispatch import amqpbytes
from shared.dispatch.cachecounts import CacheCounts
from shared.dispatch.coalesce import Coalescer
from shared.dispatch.entra import CredentialFactory, EntraTarget, TenantCredentials
from shared.dispatch.errors import TooLarge
from shared.dispatch.isolation import Deadline, close_in_background
from shared.dispatch.outgoing import Outgoing
from shared.endpoints import DEFAULT_GUARD, ConnectGuard
from shared.sdktracing import traced

log = logging.getLogger("shared.dispatch")

SEND_TIMEOUT_SECONDS = 20.0  # our own retry schedule takes over after this
MAX_CACHED_SENDERS = 500
IDLE_SECONDS = 600.0
CLOSE_SECONDS = 10.0  # a close that takes longer is abandoned
BATCH_ENVELOPE_BYTES = 1024


class QueueSender:
    """The one sender of a connection string and queue, sending what it is given in batches.

    Each message comes with its attempt's Deadline; a flush runs under the earliest deadline
    of its messages (the oldest, since a flush takes all that waited). When it expires the
    whole flush fails with DeliveryTimeout and the client is thrown away (closed in the
    background): a link cut off mid-transfer is never used again, and messages still waiting
    go out on a fresh connection in the next flush.
    """

    stuck_after = 5.0  # a flush this far past its deadline ignored the cancellation

    def __init__(
        self,
        connection_string: str,
        queue: str,
        guard: ConnectGuard = DEFAULT_GUARD,
        entra: tuple[EntraTarget, CredentialFactory] | None = None,
    ) -> None:
        self._connection_string = connection_string
        self._queue = queue
        self._guard = guard
        self._entra = entra
        self._client: Any = None
        self._sender: Any = None
        self.namespace = ""  # the AMQP host of the current client, once it is built
        # A flush takes all that waits (the bulkhead bounds it), in SDK batches as large as
        # the link allows.
        self._coalescer: Coalescer[tuple[Outgoing, Deadline]] = Coalescer(self._flush)
        self._flushing_until: float | None = None  # the running flush's deadline
        self.last_used = time.monotonic()
        self.ready = False  # the current client has delivered: its link is open
        self._opening_since = 0.0  # when a flush began without an open link

    # What the bulkheads read (shared/dispatch/bulkhead.py, Progress), to tell a link being
    # opened from a black hole: a live peer answers every few milliseconds meanwhile.

    @property
    def answered(self) -> bool:
        return self._last_answer() > 0

    def heard(self) -> float:
        """When (time.monotonic) this destination last moved: its peer sent a frame, or we
        began opening its link (our own process may take a while to get to the first frame
        of many links opened at once; the destination's patience runs from there)."""
        return max(self._opening_since, self._last_answer())

    def _last_answer(self) -> float:
        """When the peer last sent a frame on the current connection, 0 if never. The SDK's
        own record (pyamqp's `_last_frame_received_time`, wall clock), a private attribute of
        the pinned azure-servicebus; tests/test_isolation.py checks it is there."""
        connection = getattr(getattr(self._sender, "_handler", None), "_connection", None)
        at = getattr(connection, "_last_frame_received_time", None)
        return time.monotonic() - (time.time() - at) if at else 0.0

    async def send(self, message: Outgoing, deadline: Deadline) -> None:
        """Send one message (gathered with concurrent ones); TooLarge if it cannot fit."""
        self.last_used = time.monotonic()
        await self._coalescer.submit((message, deadline))

    @property
    def idle(self) -> bool:
        return self._coalescer.idle

    @property
    def connected(self) -> bool:
        """Holds a client (an AMQP connection, open or being opened)."""
        return self._client is not None

    @property
    def stuck(self) -> bool:
        """A flush outlived its deadline by seconds: the SDK ignored the cancellation."""
        until = self._flushing_until
        return until is not None and asyncio.get_running_loop().time() > until + self.stuck_after

    async def _open(self) -> Any:
        if self._sender is None:
            self._client = await self._new_client()
            self._sender = self._client.get_queue_sender(self._queue)
        return self._sender

    async def _new_client(self) -> Any:
        """A client built from checked parts (our parser's, never the SDK's reading of the
        raw string), connected to the address the guard checked; the name stays the AMQP
        host name, the token's audience and the TLS server name."""
        from azure.servicebus import TransportType
        from azure.servicebus.aio import ServiceBusClient

        if self._entra is not None:
            target, credentials = self._entra
            host, port, use_tls = target.host, target.port, target.use_tls
            namespace, credential = target.namespace, credentials(target.tenant_id)
        else:  # a string our parser refuses is the customer's to fix (ConnectionStringError)
            parsed = connstrings.service_bus(self._connection_string)
            host, port, use_tls = parsed.host, parsed.port, parsed.use_tls
            namespace, credential = parsed.namespace, parsed.credential()
        self.namespace = host
        address = (await self._guard.addresses(host, port))[0]
        pinned = f"[{address}]" if ":" in address else address  # IPv6 in a URL
        return ServiceBusClient(
            namespace,
            credential,
            retry_total=1,
            retry_backoff_factor=0.5,
            use_tls=use_tls,
            custom_endpoint_address=f"sb://{pinned}:{port}",
            transport_type=TransportType.Amqp,
            ssl_context=self._guard.tls_context(host) if use_tls else None,
        )

    async def close(self) -> None:
        client, self._client, self._sender = self._client, None, None
        self.ready = False
        if client is not None:
            try:
                async with asyncio.timeout(CLOSE_SECONDS):  # a dead peer never answers a close
                    await client.close()
            except Exception:  # closing a broken connection may fail too; it is dropped anyway
                log.debug("closing a Service Bus client failed", exc_info=True)

    def _discard(self) -> None:
        """Drop the client now; its close runs in the background and is never awaited."""
        client, self._client, self._sender = self._client, None, None
        self.ready = False
        if client is not None:
            close_in_background(client.close, CLOSE_SECONDS)

    async def _flush(
        self, items: Sequence[tuple[Outgoing, Deadline]]
    ) -> list[BaseException | None]:
        deadline = min((d for _, d in items), key=lambda d: d.at)
        self._flushing_until = deadline.at
        if self._sender is None:
            self._opening_since = time.monotonic()
        try:
            outcomes = await self._send_all([m for m, _ in items], deadline)
        finally:
            self._flushing_until = None
        self.ready = self._sender is not None and any(o is None for o in outcomes)
        return outcomes

    async def _send_all(
        self, messages: Sequence[Outgoing], deadline: Deadline
    ) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = [None] * len(messages)
        done: set[int] = set()  # settled by the service, whatever happens after
        try:
            async with deadline.scope():
                sender = await self._open()
                batch = await _new_batch(sender)
                members: list[int] = []
                direct = not traced()  # asked once a flush: azure-core's settings cost
                for index, message in enumerate(messages):
                    encoded = _encoded(batch, message, direct)
                    added = _added(batch, message, encoded)
                    if not added and members:  # the batch is full: send it, start another
                        await _send_batch(sender, batch)
                        done.update(members)
                        batch, members = await _new_batch(sender), []
                        added = _added(batch, message, encoded)
                    if added:
                        members.append(index)
                    else:  # larger than a batch may be: only the link's own limit decides
                        outcomes[index] = await self._send_alone(sender, message.to_servicebus())
                        done.add(index)
                if members:
                    await _send_batch(sender, batch)
        except Exception as e:
            self._discard()  # a failed connection is not reused: the next send reconnects
            return [outcomes[i] if i in done else e for i in range(len(messages))]
        return outcomes

    async def _send_alone(self, sender: Any, message: Any) -> BaseException | None:
        from azure.servicebus.exceptions import MessageSizeExceededError

        try:
            await sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
        except MessageSizeExceededError as e:
            return TooLarge(str(e))
        return None


async def _new_batch(sender: Any) -> Any:
    """A batch that stops BATCH_ENVELOPE_BYTES short of the link's limit: the SDK counts the
    messages, and the batch's own envelope comes on top (a full batch of 527 of our messages
    measured 65 bytes over the limit at the emulator)."""
    limit = (await sender.create_message_batch()).max_size_in_bytes
    return await sender.create_message_batch(max_size_in_bytes=limit - BATCH_ENVELOPE_BYTES)


async def _send_batch(sender: Any, batch: Any) -> None:
    """A batch refused as too large is our sizing's fault, not one message's: an internal
    error (retried), never TooLarge (final) for every delivery in it."""
    from azure.servicebus.exceptions import MessageSizeExceededError

    try:
        await sender.send_messages(batch, timeout=SEND_TIMEOUT_SECONDS)
    except MessageSizeExceededError as e:
        raise RuntimeError(f"a batch of {len(batch)} messages was refused: {e}") from None


def _encoded(batch: Any, message: Outgoing, direct: bool) -> bytes:
    """The message's AMQP encoding: written directly (shared/dispatch/amqpbytes.py) when
    `direct` (False: Azure SDK tracing is on, and adds properties) and the message has a
    shape it writes; else the SDK's conversion and encoder, encoding once where its `add_message`
    encodes twice (once to measure, once to add)."""
    from azure.servicebus._common.tracing import trace_message
    from azure.servicebus._pyamqp._encode import encode_payload

    written = amqpbytes.encoded(message) if direct else None
    if written is not None:
        return written
    transport = batch._amqp_transport
    amqp = transport.to_outgoing_amqp_message(message.to_servicebus().raw_amqp_message)
    amqp = trace_message(amqp, transport, batch._tracing_attributes)
    return bytes(encode_payload(bytearray(), amqp))


def _added(batch: Any, message: Outgoing, encoded: bytes) -> bool:
    """`batch.add_message` of the message `encoded`, on the batch's private parts: the same
    size, refusal and envelope as the SDK's (azure-servicebus stays pinned;
    tests/test_servicebus_batch.py holds the batch equal to one the SDK fills)."""
    from azure.servicebus._common.constants import _BATCH_MESSAGE_OVERHEAD_COST

    size = batch._size + len(encoded) + _BATCH_MESSAGE_OVERHEAD_COST[len(encoded) >= 256]
    if size > batch.max_size_in_bytes:
        return False
    batch._message[5].append(encoded)  # the batch's data sections, as the SDK's add_batch
    batch._size, batch._count = size, batch._count + 1
    if batch._count == 1:  # the envelope takes the first message's ids
        batch._amqp_transport.set_batch_envelope_properties(
            batch._message, message.message_id, message.session_id, None
        )
    return True


class SenderPool:
    """QueueSenders by connection string and queue; a changed connection string makes a new
    one, and the least recently used are closed beyond the cap."""

    def __init__(
        self,
        max_senders: int = MAX_CACHED_SENDERS,
        guard: ConnectGuard = DEFAULT_GUARD,
        credentials: CredentialFactory | None = None,
        make: type[QueueSender] = QueueSender,
    ) -> None:
        self._senders: OrderedDict[tuple[str, str], QueueSender] = OrderedDict()
        self._guard = guard
        self.credentials = credentials or TenantCredentials.from_environment()
        self._make = make  # tests give a sender that misbehaves
        self.counts = CacheCounts(max_senders)  # the summary line logs them
        # The SDK loads now (about 0.3 s), not inside the first delivery's attempt, where the
        # loop standing still would look to the bulkheads like a destination that never answers.
        import azure.servicebus.aio  # noqa: F401

    def get(
        self, connection_string: str, queue: str, entra: EntraTarget | None = None
    ) -> QueueSender:
        """The sender of a connection string (or, with `entra`, of a namespace and tenant)."""
        key = (f"entra:{entra.tenant_id}:{entra.namespace}" if entra else connection_string, queue)
        sender = self._senders.get(key)
        if sender is not None and sender.stuck:  # thrown away; its flush ends on its own
            close_in_background(sender.close, CLOSE_SECONDS)
            sender = None
        if sender is None:
            self.counts.miss()
            self._evict()
            with_token = (entra, self.credentials) if entra else None
            sender = self._make(connection_string, queue, self._guard, with_token)
            self._senders[key] = sender
        else:
            self.counts.hit()
        self._senders.move_to_end(key)
        return sender

    def _evict(self) -> None:
        """Close idle senders: beyond the cap, or unused for a while (e.g. the connection
        string changed and the old one is no longer asked for)."""
        stale = time.monotonic() - IDLE_SECONDS
        for key, sender in list(self._senders.items()):  # least recently used first
            if len(self._senders) < self.counts.capacity and sender.last_used > stale:
                break
            if sender.idle:
                del self._senders[key]
                asyncio.get_running_loop().create_task(sender.close())

    def __len__(self) -> int:
        return len(self._senders)

    def stats(self) -> dict[str, int]:
        """Size, bound and counts since the last call, for the summary's stats line; with the
        AMQP connections open and the most to one namespace. The pinned SDK opens one AMQP
        connection per sender, whatever the client (its connection sharing is switched off
        and fails when forced on: docs/CAPACITY.md), so this is what a customer's namespace
        quota sees from this instance."""
        namespaces = Counter(s.namespace for s in self._senders.values() if s.connected)
        return {
            **self.counts.take(len(self._senders)),
            "amqpConnections": sum(namespaces.values()),
            "busiestNamespace": max(namespaces.values(), default=0),
        }

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), OrderedDict()
        await asyncio.gather(*(s.close() for s in senders))
