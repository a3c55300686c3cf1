"""The AMQP peer: proton's events for one run of the container, as the SDK drives them."""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from proton import (
    Connection,
    Delivery,
    Endpoint,
    Handler,
    Link,
    Message,
    Terminus,
    symbol,
)
from proton.reactor import Container

from local.servicebus.codec import StoredMessage, split_transfer
from local.servicebus.nodes import (
    LOCK_LOST,
    MGMT_SUFFIX,
    NOT_ALLOWED,
    NOT_FOUND,
    check_jwt_token,
    check_sas_token,
    management_reply,
    not_found_text,
)
from local.servicebus.reactor import (
    LinkState,
    TimerCall,
    amqp_error,
    conn_state,
    guarded,
    link_state,
)
from local.servicebus.sessions import (
    NO_SESSION_ID,
    SESSION_FILTER,
    SESSIONFUL_RECEIVER_REFUSED,
    SESSIONFUL_RECEIVER_REQUIRED,
    SessionWaiters,
    attach_to_session,
    read_filters,
    session_wait_seconds,
)
from local.servicebus.store import Entity, Lock

if TYPE_CHECKING:
    from local.servicebus.emulator import Emulator

log = logging.getLogger("servicebus_emulator")

CREDIT = 1000  # kept granted to each link the client sends on

# proton logs a client that hangs up while we write to it as an error; it is not one.
logging.getLogger("proton").addFilter(
    lambda record: not record.getMessage().startswith(("Couldn't send", "Couldn't recv"))
)


class Broker(Handler):
    """Handles proton's events for one run of the container (one start() to stop())."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__()
        self.emulator, self.store = emulator, emulator.store
        self.container: Container | None = None
        self.acceptor: Any = None
        self.connections: set[Connection] = set()
        self.session_waiters = SessionWaiters()

    @guarded
    def call(self, fn: Callable[[], None]) -> None:
        fn()

    def schedule(self, seconds: float, fn: Callable[[], None]) -> None:
        assert self.container is not None
        self.container.schedule(seconds, TimerCall(self, fn))

    # -- connection and session: accept what the client opens ---------------------------

    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container
        self.schedule(1.0, self._expire_locks)

    @guarded
    def on_connection_bound(self, event: Any) -> None:
        event.transport.sasl().allowed_mechs("ANONYMOUS")  # as with UseDevelopmentEmulator
        self.connections.add(event.connection)
        self.emulator.connections_accepted += 1

    @guarded
    def on_connection_remote_open(self, event: Any) -> None:
        event.connection.container = "servicebus-emulator"
        event.connection.open()

    @guarded
    def on_session_remote_open(self, event: Any) -> None:
        event.session.open()

    @guarded
    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    @guarded
    def on_connection_remote_close(self, event: Any) -> None:
        self._forget(event.connection)
        event.connection.close()

    @guarded
    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def _forget(self, conn: Connection) -> None:
        """The connection ended. Its locks stay until they expire, as in Service Bus: the
        SDK may still settle them through $management once reconnected."""
        self.connections.discard(conn)
        self.session_waiters.forget_connection(conn)
        for entity in self.store.entities():
            entity.consumers = [c for c in entity.consumers if c.connection != conn]
            held = [h for h in entity.session_holders.values() if h.connection == conn]
            for link in held:
                entity.release(link)
            if held:
                self._pump(entity)  # the sessions it held may go to receivers waiting

    # -- links --------------------------------------------------------------------------

    @guarded
    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        address = (link.remote_source if link.is_sender else link.remote_target).address or ""
        node = address.split("://", 1)[1].partition("/")[2] if "://" in address else address
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        conn = conn_state(link.connection)
        if node == "$cbs" or node.lower().endswith(MGMT_SUFFIX):
            # A request/response node: requests come on one link, answers go out on the
            # other link of the same connection attached to the same address.
            link.sb = LinkState(node.lower())
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
            return self._refuse(link, NOT_FOUND, not_found_text(node))
        if link.is_receiver:  # the client sends to us
            if entity.dead_letters is None:
                return self._refuse(link, "amqp:not-allowed", "Cannot send to a dead-letter queue.")
            link.sb = LinkState(entity.name, entity)
            size = self.emulator.max_message_size
            link.max_message_size = size  # the SDK's limit for a message...
            # ...and for a batch: Service Bus caps those at 1 MB where messages may be larger.
            link.properties = {symbol("com.microsoft:max-message-batch-size"): min(size, 1 << 20)}
            link.open()
            link.flow(CREDIT)
        else:  # the client receives from us
            self._open_receiver(link, entity)

    def _open_receiver(self, link: Link, entity: Entity) -> None:
        """A receiving link, held back or refused as Service Bus would: a session-enabled
        queue only takes session receivers, and only those; a receiver asking for the next
        available session while none is free waits for one."""
        link.sb = LinkState(entity.name, entity, link.remote_snd_settle_mode != Link.SND_SETTLED)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        filters = read_filters(link.remote_source.filter)
        if SESSION_FILTER in filters and not entity.requires_session:
            return self._refuse(link, NOT_ALLOWED, SESSIONFUL_RECEIVER_REFUSED)
        if not entity.requires_session:
            link.open()
            return entity.consumers.append(link)
        if SESSION_FILTER not in filters:
            return self._refuse(link, NOT_ALLOWED, SESSIONFUL_RECEIVER_REQUIRED)
        wanted = filters[SESSION_FILTER]
        if wanted is None:
            session = entity.free_session(link)
            if session is None:
                return self._wait_for_session(link, entity)
        elif entity.session_holders.setdefault(str(wanted), link) is not link:
            text = f"The requested session '{wanted}' cannot be locked."
            return self._refuse(link, "com.microsoft:session-cannot-be-locked", text)
        else:
            session = str(wanted)
        self._attach_session(link, entity, session)

    def _attach_session(self, link: Link, entity: Entity, session: str) -> None:
        cast(LinkState, link.sb).session = session
        attach_to_session(link, session, self.emulator.lock_duration)
        link.open()
        entity.consumers.append(link)

    def _wait_for_session(self, link: Link, entity: Entity) -> None:
        self.session_waiters.add(link, entity)

        def give_up() -> None:
            if self.session_waiters.waiting(link):
                self.session_waiters.forget(link)
                self._refuse(link, "com.microsoft:timeout", "No session is available.")

        self.schedule(session_wait_seconds(link), give_up)

    def _refuse(self, link: Link, name: str, description: str) -> None:
        # As Service Bus does: attach without the terminus asked for, then detach with the
        # error. The SDK never sees the link attached and raises the error's exception.
        (link.target if link.is_receiver else link.source).type = Terminus.UNSPECIFIED
        link.open()
        link.condition = amqp_error(name, description)
        link.close()

    @guarded
    def on_link_remote_close(self, event: Any) -> None:
        state = link_state(event.link)
        self.session_waiters.forget(event.link)  # it stopped waiting
        if state and state.entity and event.link in state.entity.consumers:
            state.entity.consumers.remove(event.link)
        if state and state.entity:
            state.entity.release(event.link)
            self._pump(state.entity)  # its session may go to a receiver waiting
        event.link.close()

    @guarded
    def on_link_flow(self, event: Any) -> None:
        state = link_state(event.link)
        if event.link.is_sender and state and state.entity:
            self._pump(state.entity)
            if event.link.drain_mode:
                event.link.drained()  # nothing more to send: give the credit back

    @guarded
    def on_delivery(self, event: Any) -> None:
        link: Link = event.link
        dlv: Delivery = event.delivery
        state = link_state(link)
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
        if entity.requires_session and any(m.session_id is None for m in messages):
            return self._reject(dlv, "amqp:not-allowed", NO_SESSION_ID)  # as Service Bus does
        if delay_ms > 0:
            self.schedule(delay_ms / 1000, lambda: self._store(link, entity, dlv, messages))
        else:
            self._store(link, entity, dlv, messages)

    def _store(self, link: Link, entity: Entity, dlv: Delivery, msgs: list[StoredMessage]) -> None:
        if link.connection not in self.connections or link.state & Endpoint.LOCAL_CLOSED:
            return  # never acknowledged, so not stored: the client sends it again
        try:
            entity.enqueue(msgs)  # journalled before it is acknowledged
        except OSError:
            log.exception("could not journal a send to %s", entity.name)
            return self._reject(dlv, "com.microsoft:server-busy", "The server is busy.")
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        self._pump(entity)

    def _reject(self, dlv: Delivery, name: str, description: str) -> None:
        dlv.local.condition = amqp_error(name, description)
        dlv.update(Delivery.REJECTED)
        dlv.settle()

    # -- the client receives ------------------------------------------------------------

    def _pump(self, entity: Entity) -> None:
        """Give available messages to the entity's receivers, as far as their credit goes
        (and free sessions to receivers waiting for one)."""
        for waiter, held in self.session_waiters.grant(entity):
            self._attach_session(waiter, entity, held)
        now = time.time()
        for link in entity.consumers:
            session = cast(LinkState, link.sb).session
            if entity.requires_session and session is None:
                continue
            while entity.has_available(session) and link.credit > 0:
                msg = entity.next_message(now * 1000, session)
                if msg is not None:
                    self._deliver(link, entity, msg, now)
        if len(entity.consumers) > 1:  # next time, another receiver goes first
            entity.consumers.append(entity.consumers.pop(0))

    def _deliver(self, link: Link, entity: Entity, msg: StoredMessage, now: float) -> None:
        msg.delivery_count += 1
        state = link_state(link)
        if state is not None and state.peek_lock:
            token = uuid.uuid4().bytes  # the SDK reads the tag as the lock token
            until = now + self.emulator.lock_duration
            entity.locked[token] = Lock(msg, until)
            dlv = link.delivery(token)  # type: ignore[arg-type]  # proton takes bytes too
            dlv.sb = token
            link.send(msg.encode(until))
            link.advance()
        else:
            entity.forget(msg)  # receive-and-delete: gone once sent, at most once
            dlv = link.delivery(struct.pack(">Q", msg.seq))  # type: ignore[arg-type]
            link.send(msg.encode())
            link.advance()
            dlv.settle()

    def _on_outcome(self, state: LinkState, dlv: Delivery) -> None:
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
        if outcome == Delivery.ACCEPTED:
            entity.forget(lock.message)  # completed: journalled before the client hears so
        elif outcome == Delivery.REJECTED:
            self._dead_letter(entity, lock.message, *reason)
        elif outcome == Delivery.MODIFIED and defer:
            entity.defer(lock.message)
        else:  # abandoned or released
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
            return entity.forget(msg)  # dead-lettered from the dead-letter queue: gone
        msg.add(
            {"DeadLetterReason": reason, "DeadLetterErrorDescription": text},
            {"x-opt-deadletter-source": entity.name},
        )
        msg.delivery_count = 0
        entity.dead_letter(msg)
        self._pump(entity.dead_letters)

    def _expire_locks(self) -> None:
        self.schedule(1.0, self._expire_locks)
        now = time.time()
        for entity in self.store.entities():
            for token in [t for t, lock in entity.locked.items() if lock.until <= now]:
                self._return(entity, entity.locked.pop(token).message)
        self.store.compact_if_due()  # (here: once a second at most, between events)

    # -- request/response nodes: $cbs and $management -----------------------------------

    def _on_request(self, link: Link, node: str, dlv: Delivery, payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        conn = conn_state(link.connection)
        if node == "$cbs":  # put-token
            # The SDK says type `jwt` for both kinds; a shared access signature says so itself.
            token, now = str(request.body or ""), time.time()
            if token.startswith("SharedAccessSignature "):
                expiry, why = check_sas_token(token, self.emulator.key, now)
            else:  # an Entra ID token
                expiry, why = check_jwt_token(token, self.emulator.jwt_issuer_key, now)
            conn.authorized_until = max(conn.authorized_until, float(expiry))
            fields = {"status-code": 401 if why else 202, "status-description": why or "Accepted"}
            reply = Message(properties=fields)
        else:
            name = node.removesuffix(MGMT_SUFFIX)
            entity = self.store.find(name, create=not self.store.strict)
            body = request.body if isinstance(request.body, dict) else {}
            properties: dict[Any, Any] = request.properties or {}
            operation = str(properties.get("operation"))
            duration = self.emulator.lock_duration
            reply = management_reply(name, entity, operation, body, duration, self._settle)
        reply.correlation_id = request.id
        out = conn.reply_links.get(node)
        if out is None:
            return log.warning("no link to answer on for %s", node)
        reply_delivery = out.delivery(str(uuid.uuid4()))
        out.send(reply.encode())
        out.advance()
        reply_delivery.settle()

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
