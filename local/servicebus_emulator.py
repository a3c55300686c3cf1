"""A small local Azure Service Bus emulator: an AMQP 1.0 peer on python-qpid-proton.

The official SDK (`azure-servicebus`, sync and `aio`) reaches it with the connection string
`Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;
SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true` (one line), with which the SDK
speaks plain AMQP and SASL ANONYMOUS to that port.

    python -m local.servicebus_emulator --host 127.0.0.1 --port 5672 [--strict]
        [--queue NAME ...] [--max-message-size BYTES] [--key KEY]
        [--lock-duration SECONDS] [--refuse-sends SECONDS] [--delay-sends MS]

listens on that address only and prints `listening on amqp://HOST:PORT` once ready.
Faults are injected by lines on its standard input, each answered `ok COMMAND` (EOF is fine):
`drop` (close every client connection now, as a network failure would), `refuse SECONDS`
(reject sends with com.microsoft:server-busy; 0 ends it), `delay MS` (settle each send
that late; 0 ends it), `outage SECONDS` (stop listening, drop everything, come back on
the same port), `queue NAME` (create a queue, for --strict), `count NAME` (print how many
messages a queue holds). In process, `Emulator` offers the same as methods.

The AMQP flow, as the SDK drives it:
1. SASL ANONYMOUS, open, begin: accepted as they come.
2. CBS: the client attaches a sender to `$cbs` and a receiver from `$cbs`, then sends a
   put-token request (no reply-to, a uuid message-id). The SAS token must be signed with
   our key (HMAC-SHA256 of `sr` newline `se`) and unexpired. The answer goes out on the
   client's `$cbs` receiving link: correlation-id = the request's message-id, application
   properties `status-code` (202, or 401 which the SDK raises as
   ServiceBusAuthenticationError) and `status-description`. Entity links on a
   connection without an accepted token are refused (amqp:unauthorized-access).
3. Sending: the client attaches a sender to an entity (a topic name behaves as a queue;
   in strict mode an unknown one is refused with amqp:not-found). Our attach carries
   `max-message-size`, which `create_message_batch()` reads. A transfer is Accepted
   once stored, or Rejected with an error that carries an info map (without one the SDK
   hangs): amqp:link:message-size-exceeded, com.microsoft:server-busy. An SDK batch
   (message format 0x80013700) holds one encoded message per data section; each one
   is stored as a message of its own.
4. Receiving from `<queue>` or `<queue>/$deadletterqueue`, as far as the link's credit
   goes. RECEIVE_AND_DELETE (snd-settle-mode settled): sent pre-settled and forgotten.
   PEEK_LOCK: sent unsettled with a 16-byte delivery tag, the SDK's lock token, and
   locked for `lock_duration`. The client's outcome decides: accepted = complete,
   modified = abandon (defer if undeliverable-here), rejected = dead-letter, released =
   give back; we settle echoing that outcome, which the SDK waits for. Abandons and
   expired locks count as deliveries; after `max_delivery_count` the message is
   dead-lettered (MaxDeliveryCountExceeded).
5. `$management` (request/response as for CBS, with `statusCode`): renew-lock,
   update-disposition (settling by lock token, e.g. after a reconnect), peek-message.

Left out: sessions, subscriptions and filters, scheduled messages, receiving deferred
messages, transactions, duplicate detection, entity management.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import hmac
import logging
import os
import queue
import signal
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import unquote_plus

from proton import (
    UNDESCRIBED,
    Array,
    Condition,
    Connection,
    Data,
    Delivery,
    Endpoint,
    Handler,
    Link,
    Message,
    Terminus,
    symbol,
    timestamp,
)
from proton.reactor import ApplicationEvent, Container, EventInjector

log = logging.getLogger("servicebus_emulator")

DEFAULT_KEY = "SAS_KEY_VALUE"
KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024  # Service Bus Standard tier
CREDIT = 1000  # kept granted to each link the client sends on
DLQ_SUFFIX = "/$deadletterqueue"
MGMT_SUFFIX = "/$management"
NOT_FOUND = "amqp:not-found"
LOCK_LOST = "com.microsoft:message-lock-lost"


# proton logs a client that hangs up while we write to it as an error; it is not one.
logging.getLogger("proton").addFilter(
    lambda record: not record.getMessage().startswith(("Couldn't send", "Couldn't recv"))
)

# ---------------------------------------------------------------------------------------
# The few AMQP encoding rules we need by hand. A message is stored as the encoded sections
# the client sent, so delivering it costs a few byte joins, not a decode and an encode.
# ---------------------------------------------------------------------------------------

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES, APP_PROPERTIES = range(0x70, 0x75)
DATA, AMQP_SEQUENCE, AMQP_VALUE = range(0x75, 0x78)
BODY_SECTIONS = (DATA, AMQP_SEQUENCE, AMQP_VALUE)
Section = tuple[int, int, int]  # (section code, start, end) within a buffer


def _value_end(buf: bytes, pos: int) -> int:
    """Where the AMQP value at `pos` ends. The constructor's high nibble says how its width
    is written (AMQP 1.0 part 1, 1.6)."""
    code, pos = buf[pos], pos + 1
    if code == 0x00:  # described: a descriptor, then the value
        return _value_end(buf, _value_end(buf, pos))
    kind = code >> 4
    if 0x4 <= kind <= 0x9:  # fixed widths 0, 1, 2, 4, 8, 16
        end = pos + (0, 1, 2, 4, 8, 16)[kind - 4]
    elif kind in (0xA, 0xC, 0xE):  # size in 1 byte
        end = pos + 1 + buf[pos]
    elif kind in (0xB, 0xD, 0xF):  # size in 4 bytes
        end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
    else:
        raise ValueError(f"not an AMQP constructor: 0x{code:02x}")
    if end > len(buf):
        raise ValueError("truncated AMQP value")
    return end


def _sections(buf: bytes) -> list[Section]:
    """An encoded message's sections; ValueError if `buf` is not a message."""
    out: list[Section] = []
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 2] != b"\x00\x53":  # a section is described by a smallulong code
            raise ValueError("not a message section")
        end = _value_end(buf, pos)
        out.append((buf[pos + 2], pos, end))
        pos = end
    return out


def _map_entries(buf: bytes, section: Section) -> tuple[int, bytes]:
    """(element count, encoded elements) of a map section, to extend without decoding."""
    _, start, end = section
    value = start + 3
    if buf[value] == 0xC1:  # map8: size, count
        return buf[value + 2], buf[value + 3 : end]
    if buf[value] == 0xD1:  # map32
        return int.from_bytes(buf[value + 5 : value + 9], "big"), buf[value + 9 : end]
    return 0, b""  # null


def _map_section(code: int, count: int, entries: bytes) -> bytes:
    return bytes((0x00, 0x53, code, 0xD1)) + struct.pack(">II", len(entries) + 4, count) + entries


def _sym(name: str) -> bytes:
    return bytes((0xA3, len(name))) + name.encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return (bytes((0xA1, len(raw))) if len(raw) < 256 else struct.pack(">BI", 0xB1, len(raw))) + raw


def _header_fields(buf: bytes, section: Section) -> tuple[bool, int, int | None]:
    """(durable, priority, ttl in ms) of a header section; we write the other fields."""
    _, start, end = section
    pos = start + 3 + {0x45: 1, 0xC0: 3, 0xD0: 9}.get(buf[start + 3], end)  # list0/8/32
    values: list[Any] = []
    while pos < end and len(values) < 3:
        code, nxt = buf[pos], _value_end(buf, pos)
        simple = {0x40: None, 0x41: True, 0x42: False, 0x43: 0}
        values.append(simple[code] if code in simple else int.from_bytes(buf[pos + 1 : nxt], "big"))
        pos = nxt
    durable, priority, ttl = [*values, None, None, None][:3]
    return bool(durable), 4 if priority is None else priority, ttl


_SEQUENCE, _ENQUEUED, _LOCKED_UNTIL = (
    _sym(f"x-opt-{name}") for name in ("sequence-number", "enqueued-time", "locked-until")
)


@dataclass(slots=True, eq=False)
class StoredMessage:
    """A message in a queue: the sections the client encoded, and our bookkeeping."""

    properties: bytes = b""  # the properties section, as sent
    body: bytes = b""  # the body sections and footer, as sent
    app_count: int = 0
    app_entries: bytes = b""
    annotation_count: int = 0
    annotation_entries: bytes = b""
    durable: bool = False
    priority: int = 4
    ttl_ms: int | None = None
    seq: int = 0
    enqueued_ms: int = 0
    delivery_count: int = 0  # deliveries so far; the header carries the earlier ones

    @classmethod
    def parse(cls, raw: bytes, sections: list[Section]) -> StoredMessage:
        msg = cls()
        for section in sections:
            code, start, end = section
            if code == HEADER:
                msg.durable, msg.priority, msg.ttl_ms = _header_fields(raw, section)
            elif code == MESSAGE_ANNOTATIONS:
                msg.annotation_count, msg.annotation_entries = _map_entries(raw, section)
            elif code == PROPERTIES:
                msg.properties = raw[start:end]
            elif code == APP_PROPERTIES:
                msg.app_count, msg.app_entries = _map_entries(raw, section)
            elif code in BODY_SECTIONS:
                msg.body = raw[start:]
                return msg
            # delivery annotations are for one hop only: dropped
        raise ValueError("a message without a body")

    def add(self, application_properties: dict[str, str], annotations: dict[str, str]) -> None:
        self.app_entries += b"".join(_str(k) + _str(v) for k, v in application_properties.items())
        self.app_count += 2 * len(application_properties)
        self.annotation_entries += b"".join(_sym(k) + _str(v) for k, v in annotations.items())
        self.annotation_count += 2 * len(annotations)

    def encode(self, locked_until: float | None = None) -> bytes:
        """The message as a receiver gets it: our header and annotations, the rest as sent."""
        fields = (
            (b"\x41" if self.durable else b"\x42")
            + bytes((0x50, self.priority))
            + (struct.pack(">BI", 0x70, self.ttl_ms) if self.ttl_ms is not None else b"\x40")
            + b"\x40"  # first-acquirer: unset
            + struct.pack(">BI", 0x70, max(self.delivery_count - 1, 0))
        )
        header = bytes((0x00, 0x53, HEADER, 0xC0, len(fields) + 1, 5)) + fields
        ours = _SEQUENCE + struct.pack(">Bq", 0x81, self.seq)  # long
        ours += _ENQUEUED + struct.pack(">Bq", 0x83, self.enqueued_ms)  # timestamp
        count = self.annotation_count + 4
        if locked_until is not None:
            ours += _LOCKED_UNTIL + struct.pack(">Bq", 0x83, int(locked_until * 1000))
            count += 2
        annotations = _map_section(MESSAGE_ANNOTATIONS, count, self.annotation_entries + ours)
        app = (
            _map_section(APP_PROPERTIES, self.app_count, self.app_entries)
            if self.app_count
            else b""
        )
        return b"".join((header, annotations, self.properties, app, self.body))


def split_transfer(payload: bytes) -> list[StoredMessage]:
    """The messages in one transfer. An SDK batch is a message whose data sections each
    hold one encoded message. proton's Python API does not show a transfer's
    message-format (0x80013700 for a batch), so a batch is known by that shape: data
    sections only, each a whole message with a body. A JSON or text body never starts
    with a section descriptor, so an ordinary message is not taken for a batch."""
    sections = _sections(payload)
    bodies = [s for s in sections if s[0] in BODY_SECTIONS]
    if bodies and all(code == DATA for code, _, _ in bodies):
        try:
            return [_embedded_message(payload, body) for body in bodies]
        except (ValueError, IndexError):
            pass  # data that is not an encoded message: an ordinary message
    return [StoredMessage.parse(payload, sections)]


def _embedded_message(payload: bytes, data: Section) -> StoredMessage:
    _, start, end = data
    raw = payload[start + 5 : end] if payload[start + 3] == 0xA0 else payload[start + 8 : end]
    sections = _sections(raw)  # (above: the bytes of a vbin8 or a vbin32)
    if [code for code, _, _ in sections] != sorted(code for code, _, _ in sections):
        raise ValueError("sections out of order")
    return StoredMessage.parse(raw, sections)


# ---- Queues ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Lock:
    message: StoredMessage
    until: float


@dataclass(eq=False)
class Entity:
    """A queue (or a topic used as one), or a queue's dead-letter subqueue."""

    name: str
    available: list[tuple[int, StoredMessage]] = field(default_factory=list)  # heap by seq
    locked: dict[bytes, _Lock] = field(default_factory=dict)  # by lock token
    deferred: list[StoredMessage] = field(default_factory=list)
    consumers: list[Link] = field(default_factory=list)  # our links to the client's receivers
    dead_letters: Entity | None = None
    next_seq: int = 1

    def enqueue(self, messages: Iterable[StoredMessage]) -> None:
        now_ms = int(time.time() * 1000)
        for msg in messages:
            msg.seq, msg.enqueued_ms = self.next_seq, now_ms
            self.next_seq += 1
            self.put_back(msg)

    def put_back(self, msg: StoredMessage) -> None:
        heapq.heappush(self.available, (msg.seq, msg))

    def next_message(self, now_ms: float) -> StoredMessage | None:
        while self.available:
            _, msg = heapq.heappop(self.available)
            if not msg.ttl_ms or msg.enqueued_ms + msg.ttl_ms > now_ms:
                return msg  # (an expired one is dropped, as Service Bus does by default)
        return None

    def count(self) -> int:
        return len(self.available) + len(self.locked) + len(self.deferred)


class Store:
    """All entities. It outlives stop() and start(), so an outage loses nothing."""

    def __init__(self, strict: bool, queues: Iterable[str]) -> None:
        self.strict = strict
        self._lock = threading.Lock()  # add_queue() may come from another thread
        self._entities: dict[str, Entity] = {}
        for name in queues:
            self.add(name)

    def add(self, name: str) -> Entity:
        key = name.strip("/").lower()  # entity names are case-insensitive
        with self._lock:
            if key not in self._entities:
                self._entities[key] = Entity(key, dead_letters=Entity(key + DLQ_SUFFIX))
            return self._entities[key]

    def find(self, path: str, create: bool) -> Entity | None:
        key = path.strip("/").lower()
        base = key.removesuffix(DLQ_SUFFIX)
        with self._lock:
            entity = self._entities.get(base)
        if entity is None and create and base:
            entity = self.add(base)
        return entity.dead_letters if entity and base != key else entity

    def entities(self) -> list[Entity]:
        with self._lock:
            queues = list(self._entities.values())
        return queues + [q.dead_letters for q in queues if q.dead_letters]


def check_sas_token(token: str, key: str, now: float) -> tuple[int, str]:
    """(expiry, "") if `token` is signed with `key` and unexpired, else (0, why not)."""
    prefix = "SharedAccessSignature "
    fields = dict(p.split("=", 1) for p in token[len(prefix) :].split("&") if "=" in p)
    try:
        resource, signature, expiry = fields["sr"], unquote_plus(fields["sig"]), int(fields["se"])
    except (KeyError, ValueError):
        return 0, "InvalidToken: not a shared access signature"
    # The signature covers the url-encoded resource as it appears in the token.
    expected = hmac.new(key.encode(), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.b64encode(expected).decode(), signature):
        return 0, "InvalidSignature: the token has an invalid signature"
    if expiry <= now:
        return 0, "ExpiredToken: the token has expired"
    return expiry, ""


# ---- The AMQP peer ---------------------------------------------------------------------


def _error(name: str, description: str) -> Condition:
    # The SDK needs an info map on a rejected transfer; Service Bus sends a tracking id.
    info: Any = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
    return Condition(name, description, info)


F = TypeVar("F", bound=Callable[..., None])


def _guarded(method: F) -> F:
    """An exception would end proton's event loop, and the emulator with it: log it and
    drop the connection it came from instead."""

    @wraps(method)
    def run(self: Broker, event: Any) -> None:
        try:
            method(self, event)
        except Exception:
            log.exception("emulator error in %s", method.__name__)
            transport = getattr(event, "transport", None)
            if transport is not None:
                transport.close_head()
                transport.close_tail()

    return cast(F, run)


@dataclass
class _ConnState:
    authorized_until: float = 0.0
    reply_links: dict[str, Link] = field(default_factory=dict)  # by node: $cbs, q/$management


@dataclass
class _LinkState:
    node: str  # "$cbs", "<queue>/$management" or the entity's name
    entity: Entity | None = None
    peek_lock: bool = False


# proton keeps attributes set on its objects with the C objects, so they outlive a wrapper.
def _link_state(link: Link) -> _LinkState | None:
    return getattr(link, "sb", None)


def _conn_state(conn: Connection) -> _ConnState:
    if getattr(conn, "sb", None) is None:
        conn.sb = _ConnState()
    return cast(_ConnState, conn.sb)


class _Call(Handler):
    """A timer's task (Container.schedule): run a function, guarded, on the reactor."""

    def __init__(self, broker: Broker, fn: Callable[[], None]) -> None:
        super().__init__()
        self.broker, self.fn = broker, fn

    def on_timer_task(self, event: Any) -> None:
        self.broker.call(self.fn)


class Broker(Handler):
    """Handles proton's events for one run of the container (one start() to stop())."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__()
        self.emulator, self.store = emulator, emulator.store
        self.container: Container | None = None
        self.acceptor: Any = None
        self.connections: set[Connection] = set()

    @_guarded
    def call(self, fn: Callable[[], None]) -> None:
        fn()

    def schedule(self, seconds: float, fn: Callable[[], None]) -> None:
        assert self.container is not None
        self.container.schedule(seconds, _Call(self, fn))

    # -- connection and session: accept what the client opens ---------------------------

    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container
        self.schedule(1.0, self._expire_locks)

    @_guarded
    def on_connection_bound(self, event: Any) -> None:
        event.transport.sasl().allowed_mechs("ANONYMOUS")  # as with UseDevelopmentEmulator
        self.connections.add(event.connection)

    @_guarded
    def on_connection_remote_open(self, event: Any) -> None:
        event.connection.container = "servicebus-emulator"
        event.connection.open()

    @_guarded
    def on_session_remote_open(self, event: Any) -> None:
        event.session.open()

    @_guarded
    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    @_guarded
    def on_connection_remote_close(self, event: Any) -> None:
        self._forget(event.connection)
        event.connection.close()

    @_guarded
    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def _forget(self, conn: Connection) -> None:
        """The connection ended. Its locks stay until they expire, as in Service Bus: the
        SDK may still settle them through $management once reconnected."""
        self.connections.discard(conn)
        for entity in self.store.entities():
            entity.consumers = [c for c in entity.consumers if c.connection != conn]

    # -- links --------------------------------------------------------------------------

    @_guarded
    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        address = (link.remote_source if link.is_sender else link.remote_target).address or ""
        node = address.split("://", 1)[1].partition("/")[2] if "://" in address else address
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        conn = _conn_state(link.connection)
        if node == "$cbs" or node.lower().endswith(MGMT_SUFFIX):
            # A request/response node: requests come on one link, answers go out on the
            # other link of the same connection attached to the same address.
            link.sb = _LinkState(node.lower())
            if link.is_sender:
                conn.reply_links[node.lower()] = link
            link.open()
            if link.is_receiver:
                link.flow(CREDIT)
            return
        if self.emulator.holding_attaches:  # fault: open and CBS answered, the attach never
            return
        if conn.authorized_until <= time.time():
            return self._refuse(link, "amqp:unauthorized-access", "Put a token on $cbs first.")
        entity = self.store.find(node, create=not self.store.strict)
        if entity is None:
            return self._refuse(link, NOT_FOUND, f"The messaging entity '{node}' was not found.")
        if link.is_receiver:  # the client sends to us
            if entity.dead_letters is None:
                return self._refuse(link, "amqp:not-allowed", "Cannot send to a dead-letter queue.")
            link.sb = _LinkState(entity.name, entity)
            size = self.emulator.max_message_size
            link.max_message_size = size  # the SDK's limit for a message...
            # ...and for a batch: Service Bus caps those at 1 MB where messages may be larger.
            link.properties = {symbol("com.microsoft:max-message-batch-size"): min(size, 1 << 20)}
            link.open()
            link.flow(CREDIT)
        else:  # the client receives from us
            peek_lock = link.remote_snd_settle_mode != Link.SND_SETTLED
            link.sb = _LinkState(entity.name, entity, peek_lock)
            link.snd_settle_mode = link.remote_snd_settle_mode
            link.rcv_settle_mode = link.remote_rcv_settle_mode
            link.open()
            entity.consumers.append(link)

    def _refuse(self, link: Link, name: str, description: str) -> None:
        # As Service Bus does: attach without the terminus asked for, then detach with the
        # error. The SDK never sees the link attached and raises the error's exception.
        (link.target if link.is_receiver else link.source).type = Terminus.UNSPECIFIED
        link.open()
        link.condition = _error(name, description)
        link.close()

    @_guarded
    def on_link_remote_close(self, event: Any) -> None:
        state = _link_state(event.link)
        if state and state.entity and event.link in state.entity.consumers:
            state.entity.consumers.remove(event.link)
        event.link.close()

    @_guarded
    def on_link_flow(self, event: Any) -> None:
        state = _link_state(event.link)
        if event.link.is_sender and state and state.entity:
            self._pump(state.entity)
            if event.link.drain_mode:
                event.link.drained()  # nothing more to send: give the credit back

    @_guarded
    def on_delivery(self, event: Any) -> None:
        link: Link = event.link
        dlv: Delivery = event.delivery
        state = _link_state(link)
        if state is None:
            return
        if link.is_sender:
            return self._on_outcome(state, dlv)
        if dlv.partial:
            return  # wait for the rest of the message
        payload = bytes(link.recv(dlv.pending) or b"")
        link.advance()
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)
        if state.entity is None:
            self._on_request(link, state.node, dlv, payload)
        else:
            self._on_transfer(link, state.entity, dlv, payload)

    # -- the client sends ---------------------------------------------------------------

    def _on_transfer(self, link: Link, entity: Entity, dlv: Delivery, payload: bytes) -> None:
        refuse_until, delay_ms = self.emulator.faults()
        limit = self.emulator.max_message_size
        if refuse_until > time.time():
            return self._reject(dlv, "com.microsoft:server-busy", "The server is busy.")
        if len(payload) > limit:
            text = f"The message size {len(payload)} exceeds the limit {limit}."
            return self._reject(dlv, "amqp:link:message-size-exceeded", text)
        try:
            messages = split_transfer(payload)
        except (ValueError, IndexError) as exc:
            return self._reject(dlv, "amqp:decode-error", f"Cannot decode the message: {exc}")
        if delay_ms > 0:
            self.schedule(delay_ms / 1000, lambda: self._store(link, entity, dlv, messages))
        else:
            self._store(link, entity, dlv, messages)

    def _store(self, link: Link, entity: Entity, dlv: Delivery, msgs: list[StoredMessage]) -> None:
        if link.connection not in self.connections or link.state & Endpoint.LOCAL_CLOSED:
            return  # never acknowledged, so not stored: the client sends it again
        entity.enqueue(msgs)
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        self._pump(entity)

    def _reject(self, dlv: Delivery, name: str, description: str) -> None:
        dlv.local.condition = _error(name, description)
        dlv.update(Delivery.REJECTED)
        dlv.settle()

    # -- the client receives ------------------------------------------------------------

    def _pump(self, entity: Entity) -> None:
        """Give available messages to the entity's receivers, as far as their credit goes."""
        now = time.time()
        for link in entity.consumers:
            while entity.available and link.credit > 0:
                msg = entity.next_message(now * 1000)
                if msg is not None:
                    self._deliver(link, entity, msg, now)
        if len(entity.consumers) > 1:  # next time, another receiver goes first
            entity.consumers.append(entity.consumers.pop(0))

    def _deliver(self, link: Link, entity: Entity, msg: StoredMessage, now: float) -> None:
        msg.delivery_count += 1
        state = _link_state(link)
        if state is not None and state.peek_lock:
            token = uuid.uuid4().bytes  # the SDK reads the tag as the lock token
            until = now + self.emulator.lock_duration
            entity.locked[token] = _Lock(msg, until)
            dlv = link.delivery(token)  # type: ignore[arg-type]  # proton takes bytes too
            dlv.sb = token
            link.send(msg.encode(until))
            link.advance()
        else:
            dlv = link.delivery(struct.pack(">Q", msg.seq))  # type: ignore[arg-type]
            link.send(msg.encode())
            link.advance()
            dlv.settle()  # receive-and-delete: gone once sent

    def _on_outcome(self, state: _LinkState, dlv: Delivery) -> None:
        """The client settles a peek-locked message on its receiving link."""
        token: bytes | None = getattr(dlv, "sb", None)
        outcome, remote = dlv.remote_state, dlv.remote
        if token is None or state.entity is None or dlv.local_state or not outcome:
            return
        info = remote.condition.info if remote.condition else None
        info = info if isinstance(info, dict) else {}
        reason = (
            str(info.get("DeadLetterReason", "")),
            str(info.get("DeadLetterErrorDescription", "")),
        )
        if self._settle(state.entity, token, outcome, bool(remote.undeliverable), reason):
            dlv.local.failed, dlv.local.undeliverable = remote.failed, remote.undeliverable
            dlv.update(outcome)  # echo the outcome applied: this SDK waits for it
        else:
            self._reject(dlv, LOCK_LOST, "The lock on the message has expired or was lost.")
        dlv.settle()

    def _settle(
        self, entity: Entity, token: bytes, outcome: int, defer: bool, reason: tuple[str, str]
    ) -> bool:
        """Apply a settlement to a locked message; False if its lock is gone."""
        lock = entity.locked.pop(token, None)
        if lock is None:
            return False
        if outcome == Delivery.REJECTED:
            self._dead_letter(entity, lock.message, *reason)
        elif outcome == Delivery.MODIFIED and defer:
            entity.deferred.append(lock.message)
        elif outcome != Delivery.ACCEPTED:  # abandoned or released
            if outcome == Delivery.RELEASED:
                lock.message.delivery_count -= 1  # handed back unseen: not an attempt
            self._return(entity, lock.message)
        return True

    def _return(self, entity: Entity, msg: StoredMessage) -> None:
        limit = self.emulator.max_delivery_count
        if msg.delivery_count >= limit:
            text = f"Message could not be consumed after {limit} delivery attempts."
            self._dead_letter(entity, msg, "MaxDeliveryCountExceeded", text)
        else:
            entity.put_back(msg)
            self._pump(entity)

    def _dead_letter(self, entity: Entity, msg: StoredMessage, reason: str, text: str) -> None:
        if entity.dead_letters is None:
            return  # dead-lettered from the dead-letter queue: gone
        msg.add(
            {"DeadLetterReason": reason, "DeadLetterErrorDescription": text},
            {"x-opt-deadletter-source": entity.name},
        )
        msg.delivery_count = 0
        entity.dead_letters.put_back(msg)
        self._pump(entity.dead_letters)

    def _expire_locks(self) -> None:
        self.schedule(1.0, self._expire_locks)
        now = time.time()
        for entity in self.store.entities():
            for token in [t for t, lock in entity.locked.items() if lock.until <= now]:
                self._return(entity, entity.locked.pop(token).message)

    # -- request/response nodes: $cbs and $management -----------------------------------

    def _on_request(self, link: Link, node: str, dlv: Delivery, payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        conn = _conn_state(link.connection)
        if node == "$cbs":  # put-token
            expiry, why = check_sas_token(str(request.body or ""), self.emulator.key, time.time())
            conn.authorized_until = max(conn.authorized_until, float(expiry))
            fields = {"status-code": 401 if why else 202, "status-description": why or "Accepted"}
            reply = Message(properties=fields)
        else:
            entity = self.store.find(node.removesuffix(MGMT_SUFFIX), create=not self.store.strict)
            body = request.body if isinstance(request.body, dict) else {}
            properties: dict[Any, Any] = request.properties or {}
            operation = str(properties.get("operation"))
            reply = self._management(entity, operation, body)
        reply.correlation_id = request.id
        out = conn.reply_links.get(node)
        if out is None:
            return log.warning("no link to answer on for %s", node)
        reply_delivery = out.delivery(str(uuid.uuid4()))
        out.send(reply.encode())
        out.advance()
        reply_delivery.settle()

    def _management(self, entity: Entity | None, operation: str, body: dict[Any, Any]) -> Message:
        def answer(code: int, text: str, value: Any = None, condition: str = "") -> Message:
            fields: dict[str, Any] = {"statusCode": code, "statusDescription": text}
            if condition:
                fields["errorCondition"] = symbol(condition)
            return Message(properties=fields, body=value)

        if entity is None:
            return answer(404, "The messaging entity was not found.", None, NOT_FOUND)
        tokens = body.get("lock-tokens")
        tokens = [t.bytes_le for t in (tokens.elements if isinstance(tokens, Array) else [])]
        lost = answer(410, "The lock on the message was lost.", None, LOCK_LOST)
        if operation == "com.microsoft:renew-lock":
            if any(t not in entity.locked for t in tokens):
                return lost
            until = time.time() + self.emulator.lock_duration
            for t in tokens:
                entity.locked[t].until = until
            times = [timestamp(until * 1000)] * len(tokens)
            return answer(
                200, "OK", {"expirations": Array(cast(Any, UNDESCRIBED), Data.TIMESTAMP, *times)}
            )
        if operation == "com.microsoft:update-disposition":
            status = str(body.get("disposition-status"))
            outcome = {"abandoned": Delivery.MODIFIED, "defered": Delivery.MODIFIED}.get(
                status, Delivery.REJECTED if status == "suspended" else Delivery.ACCEPTED
            )
            reason = (
                str(body.get("deadletter-reason", "")),
                str(body.get("deadletter-description", "")),
            )
            settled = [
                self._settle(entity, t, outcome, status == "defered", reason) for t in tokens
            ]
            return answer(200, "OK", {}) if all(settled) else lost
        if operation == "com.microsoft:peek-message":
            start = int(body.get("from-sequence-number") or 0)
            every = [m for _, m in entity.available] + [lk.message for lk in entity.locked.values()]
            chosen = sorted((m for m in every if m.seq >= start), key=lambda m: m.seq)
            chosen = chosen[: int(body.get("message-count") or 1)]
            if not chosen:
                return answer(204, "No messages to peek.")
            return answer(200, "OK", {"messages": [{"message": m.encode()} for m in chosen]})
        return answer(501, f"The emulator does not do {operation}.", None, "amqp:not-implemented")

    # -- asked for by other threads (Emulator._in_reactor) ------------------------------

    def on_emulator_call(self, event: Any) -> None:
        while not self.emulator.calls.empty():
            self.call(self.emulator.calls.get_nowait())

    def drop_connections(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:  # no AMQP close: as a network failure would
                conn.transport.close_head()
                conn.transport.close_tail()
            self._forget(conn)

    def shut_down(self) -> None:
        self.acceptor.close()
        self.drop_connections()
        assert self.container is not None
        self.container.stop()


# ---- The emulator: the container in a thread, and faults on demand ---------------------


class Emulator:
    """A local Service Bus. `start()` listens (port 0 picks a free port, kept for later
    starts); `stop()` drops every connection; `start()` again resumes on the same port
    with the messages kept. Every method may be called from any thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = False,
        queues: Iterable[str] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        key: str = DEFAULT_KEY,
        lock_duration: float = 60.0,
        max_delivery_count: int = 10,
    ) -> None:
        self.host, self._port, self.key = host, port, key
        self.max_message_size = max_message_size
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.store = Store(strict, queues)
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # for the two faults below
        self._refuse_until = self._delay_ms = 0.0
        self.holding_attaches = False
        self._thread: threading.Thread | None = None
        self._injector: EventInjector | None = None
        self._broker: Broker | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def connection_string(self) -> str:
        return self.connection_string_with_key(self.key)

    def connection_string_with_key(self, key: str) -> str:
        return (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={KEY_NAME};"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true"
        )

    def start(self) -> Emulator:
        if self._thread is not None:
            return self
        broker = Broker(self)
        container = Container(broker)
        # Listen now, in the caller's thread, so that a port in use fails start() itself.
        broker.acceptor = container.acceptor(self.host, str(self._port))
        self._port = broker.acceptor._selectable._delegate.getsockname()[1]
        self._injector = EventInjector()
        container.selectable(self._injector)
        self._broker = broker
        self._thread = threading.Thread(
            target=container.run, name="servicebus-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection; the messages stay."""
        if self._thread is None or self._injector is None or self._broker is None:
            return
        self._in_reactor(self._broker.shut_down)
        self._thread.join(timeout=10)
        os.close(self._injector.pipe[0])
        os.close(self._injector.pipe[1])
        self._thread = self._injector = self._broker = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _in_reactor(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the reactor's thread, where proton's objects live, and wait for it."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        if self._injector is not None:
            self.calls.put(run)
            self._injector.trigger(ApplicationEvent("emulator_call"))
            done.wait(timeout=10)

    # -- faults -------------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Close every client connection at once, with no AMQP close, as a network failure
        would. Returns once they are closed."""
        if self._broker is not None:
            self._in_reactor(self._broker.drop_connections)

    def refuse_sends(self, seconds: float) -> None:
        """Reject sends with com.microsoft:server-busy for `seconds` (0 ends it)."""
        with self._lock:
            self._refuse_until = time.time() + seconds if seconds > 0 else 0.0

    def delay_sends(self, ms: float) -> None:
        """Settle each send `ms` milliseconds late (0 ends it)."""
        with self._lock:
            self._delay_ms = max(ms, 0.0)

    def hold_attaches(self, hold: bool = True) -> None:
        """Answer connection open and CBS but never a queue's link attach (False ends it for
        links attached later), as a half-dead or hostile endpoint would."""
        self.holding_attaches = hold

    def faults(self) -> tuple[float, float]:
        with self._lock:
            return self._refuse_until, self._delay_ms

    def outage(self, seconds: float) -> None:
        """Be away for `seconds` (this call blocks), then listen on the same port again."""
        self.stop()
        time.sleep(seconds)
        self.start()

    # -- entities -----------------------------------------------------------------------

    def add_queue(self, name: str) -> None:
        self.store.add(name)

    def message_count(self, queue: str) -> int:
        """Messages held by a queue: available, locked or deferred (`q/$deadletterqueue`
        for its dead letters)."""
        entity = self.store.find(queue, create=False)
        return entity.count() if entity else 0


def _control(emulator: Emulator, lines: Iterator[str]) -> None:
    """The standard input commands of the module docstring."""
    commands: dict[str, Callable[[str], object]] = {
        "drop": lambda _: emulator.drop_connections(),
        "refuse": lambda arg: emulator.refuse_sends(float(arg)),
        "delay": lambda arg: emulator.delay_sends(float(arg)),
        "outage": lambda arg: emulator.outage(float(arg)),
        "queue": emulator.add_queue,
        "count": lambda arg: print(emulator.message_count(arg), flush=True),
    }
    for line in lines:
        command, _, arg = line.strip().partition(" ")
        try:
            commands[command](arg.strip())
            print("ok", command, flush=True)
        except (KeyError, ValueError) as exc:
            print(f"cannot do {line.strip()!r}: {exc!r}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--strict", action="store_true", help="refuse unknown entities")
    parser.add_argument("--queue", action="extend", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    parser.add_argument("--key", default=DEFAULT_KEY, help="the shared access key")
    parser.add_argument("--lock-duration", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--refuse-sends", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--delay-sends", type=float, default=0.0, metavar="MS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("proton").setLevel(logging.WARNING)  # not a line per connection
    settings = (args.strict, args.queue, args.max_message_size, args.key, args.lock_duration)
    emulator = Emulator(args.host, args.port, *settings)
    emulator.refuse_sends(args.refuse_sends)
    emulator.delay_sends(args.delay_sends)
    emulator.start()
    print(f"listening on amqp://{emulator.host}:{emulator.port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=_control, args=(emulator, iter(sys.stdin)), daemon=True).start()
    done.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
