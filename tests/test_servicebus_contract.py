"""What the app and its subscribers rely on from Service Bus, checked the same way against
the local emulator and, when a connection string is given, against a real namespace.

Every check runs twice: on `emulator` (a strict emulator of this module's own), and on
`azure` when SERVICEBUS_CONTRACT_CONNECTION_STRING names a namespace (skipped otherwise,
saying so). That namespace needs a queue `contract` and a session-enabled queue
`contract-sessions` (other names: SERVICEBUS_CONTRACT_QUEUE, SERVICEBUS_CONTRACT_SESSION_QUEUE)
and a key that may send and listen; docs/DESIGN.md (How it is tested) shows the `az`
commands. The checks tag their messages (unique ids and session ids) and drain what earlier
runs left, so the queues can be reused.

Both official SDKs are used where they differ: azure-servicebus (Python, aio) and
@azure/service-bus (JavaScript, tests/js/contract.mjs).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusAuthenticationError,
    ServiceBusError,
)

from local.servicebus.emulator import Emulator
from tests.servicebus_helpers import run_javascript

ROOT = Path(__file__).resolve().parent.parent
CONNECTION_STRING_VARIABLE = "SERVICEBUS_CONTRACT_CONNECTION_STRING"
QUEUE = os.environ.get("SERVICEBUS_CONTRACT_QUEUE", "contract")
SESSION_QUEUE = os.environ.get("SERVICEBUS_CONTRACT_SESSION_QUEUE", "contract-sessions")
RECEIVE_AND_DELETE = ServiceBusReceiveMode.RECEIVE_AND_DELETE
# What the Python SDK logs when our attach reply lacks what it reads (the session filter).
ATTACH_CALLBACK_ERROR = "Callback for link attach raised error"


@dataclass
class Target:
    name: str
    connection_string: str
    emulator: Emulator | None = None

    def client(self, **options: Any) -> ServiceBusClient:
        return ServiceBusClient.from_connection_string(self.connection_string, **options)

    def with_wrong_key(self) -> str:
        wrong = base64.b64encode(os.urandom(32)).decode()
        return re.sub(r"SharedAccessKey=[^;]*", f"SharedAccessKey={wrong}", self.connection_string)

    async def until_waiting(self, queue: str) -> None:
        """Until a receiver's attach waits for a session. The emulator says so; a real
        namespace does not, so there it is a pause that the receiver's attach is sent in."""
        if self.emulator is None:
            await asyncio.sleep(3)
            return
        deadline = time.monotonic() + 30
        while not self.emulator.waiting_for_session(queue):
            assert time.monotonic() < deadline, "the receiver never asked for a session"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module", params=["emulator", "azure"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "azure":
        configured = os.environ.get(CONNECTION_STRING_VARIABLE)
        if not configured:
            pytest.skip(
                f"no real namespace: set {CONNECTION_STRING_VARIABLE} (a namespace with the "
                f"queue {QUEUE!r} and the session-enabled queue {SESSION_QUEUE!r}) to run "
                "these checks against Azure"
            )
        yield Target("azure", configured)
        return
    with Emulator(strict=True, queues=[QUEUE], session_queues=[SESSION_QUEUE]) as emulator:
        yield Target("emulator", emulator.connection_string, emulator)


@pytest.fixture
async def sb(target: Target) -> AsyncIterator[ServiceBusClient]:
    async with target.client(retry_total=1, retry_backoff_factor=0.2) as client:
        yield client


def tag() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


async def take(receiver: ServiceBusReceiver, *message_ids: str, wait: float = 10) -> Any:
    """Receive until the messages `message_ids` (the one, or a dict of them by id). Others,
    left by earlier runs, are taken too (and completed, in PEEK_LOCK)."""
    wanted, found = set(message_ids), dict[str, Any]()
    deadline = time.monotonic() + wait
    while wanted - set(found) and time.monotonic() < deadline:
        for message in await receiver.receive_messages(max_message_count=20, max_wait_time=1):
            if message.message_id in wanted:
                found[message.message_id] = message
            elif message.lock_token is not None:  # PEEK_LOCK
                await receiver.complete_message(message)
    assert set(found) == wanted, f"{sorted(wanted - set(found))} never arrived"
    return found[message_ids[0]] if len(message_ids) == 1 else found


def next_session(sb: ServiceBusClient, wait: float) -> ServiceBusReceiver:
    """A receiver of the next available session, waiting for one at most `wait` seconds."""
    return sb.get_queue_receiver(
        SESSION_QUEUE,
        session_id=NEXT_AVAILABLE_SESSION,
        receive_mode=RECEIVE_AND_DELETE,
        max_wait_time=wait,
    )


async def drain_sessions(target: Target) -> None:
    """Take every session that holds messages until none is left: asking for the next one
    then times out (after a second: without retries, which would wait again)."""
    async with target.client(retry_total=0) as sb:
        with pytest.raises(OperationTimeoutError):  # the loop ends by raising it
            for _ in range(100):
                async with next_session(sb, wait=1) as receiver:
                    while await receiver.receive_messages(max_message_count=100, max_wait_time=1):
                        pass


def attach_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ATTACH_CALLBACK_ERROR in r.getMessage()]


async def javascript(target: Target, queue: str, action: str, wait_ms: int = 10_000) -> Any:
    cs = target.connection_string
    return await run_javascript("contract.mjs", cs, queue, action, str(wait_ms))


# --- sending and receiving ---------------------------------------------------------------


async def test_a_message_comes_back_as_sent(sb: ServiceBusClient) -> None:
    message_id = tag()
    sent = ServiceBusMessage(
        '{"EventId": "e1", "Data": {"ü": 1}}',
        message_id=message_id,
        subject="Order.Shipped",
        content_type="application/json",
        correlation_id="event-1",
        application_properties={"EventKey": "Order.Shipped", "IsRetry": False, "Version": 1},
    )
    async with sb.get_queue_sender(QUEUE) as sender:
        await sender.send_messages(sent)
    async with sb.get_queue_receiver(QUEUE, receive_mode=RECEIVE_AND_DELETE) as receiver:
        got = await take(receiver, message_id)
    assert str(got) == '{"EventId": "e1", "Data": {"ü": 1}}'
    assert (got.subject, got.content_type, got.correlation_id) == (
        "Order.Shipped",
        "application/json",
        "event-1",
    )
    assert got.application_properties == {
        b"EventKey": b"Order.Shipped",
        b"IsRetry": False,
        b"Version": 1,
    }
    assert got.enqueued_time_utc is not None and got.enqueued_time_utc <= datetime.now(UTC)


async def test_a_message_over_the_links_limit_is_refused(sb: ServiceBusClient) -> None:
    async with sb.get_queue_sender(QUEUE) as sender:
        limit = (await sender.create_message_batch()).max_size_in_bytes
        assert limit >= 256 * 1024  # Standard: 256 KB; Premium: more
        with pytest.raises(MessageSizeExceededError):
            await sender.send_messages(ServiceBusMessage(b"x" * (limit + 1024)))
        message_id = tag()
        await sender.send_messages(ServiceBusMessage("small", message_id=message_id))
    async with sb.get_queue_receiver(QUEUE, receive_mode=RECEIVE_AND_DELETE) as receiver:
        assert str(await take(receiver, message_id)) == "small"  # the sender stayed usable


async def test_peek_lock_completes_abandons_and_dead_letters(sb: ServiceBusClient) -> None:
    done, again, poison = tag(), tag(), tag()
    async with sb.get_queue_sender(QUEUE) as sender:
        await sender.send_messages([ServiceBusMessage(i, message_id=i) for i in (done, again)])
        await sender.send_messages(ServiceBusMessage(poison, message_id=poison))
    async with sb.get_queue_receiver(QUEUE) as receiver:
        received = await take(receiver, done, again, poison)
        await receiver.complete_message(received[done])
        first = received[again]
        assert first.delivery_count == 0 and first.locked_until_utc is not None
        await receiver.abandon_message(first)
        redelivered = await take(receiver, again)
        assert redelivered.delivery_count == 1
        assert redelivered.sequence_number == first.sequence_number
        await receiver.renew_message_lock(redelivered)
        await receiver.complete_message(redelivered)
        await receiver.dead_letter_message(
            received[poison], reason="BadInput", error_description="no Id"
        )
    dead_letters = sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    async with dead_letters:
        dead = await take(dead_letters, poison)
        assert (dead.dead_letter_reason, dead.dead_letter_error_description) == (
            "BadInput",
            "no Id",
        )
        await dead_letters.complete_message(dead)


async def test_a_wrong_key_is_refused(target: Target) -> None:
    wrong = ServiceBusClient.from_connection_string(target.with_wrong_key(), retry_total=0)
    async with wrong:
        with pytest.raises(ServiceBusAuthenticationError):  # on open, or at the latest on send
            async with wrong.get_queue_sender(QUEUE) as sender:
                await sender.send_messages(ServiceBusMessage("x"))


# --- an entity that does not exist -------------------------------------------------------


async def test_an_unknown_queue_is_not_found_in_python(sb: ServiceBusClient) -> None:
    missing = tag()
    with pytest.raises(MessagingEntityNotFoundError):
        async with sb.get_queue_sender(missing) as sender:
            await sender.send_messages(ServiceBusMessage("x"))
    with pytest.raises(MessagingEntityNotFoundError):
        async with sb.get_queue_receiver(missing) as receiver:
            await receiver.receive_messages(max_wait_time=1)


async def test_an_unknown_queue_is_not_found_in_javascript(target: Target) -> None:
    result = await javascript(target, tag(), "send")
    assert result == {"error": {"name": "ServiceBusError", "code": "MessagingEntityNotFound"}}


# --- sessions ----------------------------------------------------------------------------


async def test_the_next_available_session_is_named_on_attach(
    sb: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    session = tag()
    async with sb.get_queue_sender(SESSION_QUEUE) as sender:
        await sender.send_messages(ServiceBusMessage("one", session_id=session))
    with caplog.at_level(logging.WARNING):
        for _ in range(100):  # sessions left by earlier runs come first
            async with next_session(sb, wait=5) as receiver:
                assert receiver.session.session_id != NEXT_AVAILABLE_SESSION
                assert receiver.session.locked_until_utc is not None
                assert receiver.session.locked_until_utc > datetime.now(UTC)
                messages = await receiver.receive_messages(max_message_count=10, max_wait_time=2)
                if receiver.session.session_id == session:
                    break
        assert [(str(m), m.session_id) for m in messages] == [("one", session)]
        # Service Bus renews a session's lock on request, for the receiver holding it.
        async with sb.get_queue_receiver(SESSION_QUEUE, session_id=session) as holder:
            assert await holder.session.renew_lock() > datetime.now(UTC)
    assert attach_errors(caplog) == []


async def test_the_next_available_session_is_named_on_attach_in_javascript(
    target: Target, sb: ServiceBusClient
) -> None:
    await drain_sessions(target)
    session = tag()
    async with sb.get_queue_sender(SESSION_QUEUE) as sender:
        await sender.send_messages(ServiceBusMessage("one", session_id=session))
    result = await javascript(target, SESSION_QUEUE, "accept-next")
    assert result == {"sessionId": session, "bodies": ["one"]}


async def test_a_receiver_waits_for_the_next_session_to_have_messages(
    target: Target, sb: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    await drain_sessions(target)
    session = tag()
    receiver = next_session(sb, wait=60)
    with caplog.at_level(logging.WARNING):
        opening = asyncio.create_task(receiver.__aenter__())
        await target.until_waiting(SESSION_QUEUE)
        async with sb.get_queue_sender(SESSION_QUEUE) as sender:
            await sender.send_messages(ServiceBusMessage("late", session_id=session))
        await opening
        try:
            assert receiver.session.session_id == session
            messages = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
            assert [str(m) for m in messages] == ["late"]
        finally:
            await receiver.close()
    assert attach_errors(caplog) == []


async def test_with_no_session_to_take_the_wait_times_out(
    target: Target, sb: ServiceBusClient
) -> None:
    await drain_sessions(target)  # ends with OperationTimeoutError from Python
    result = await javascript(target, SESSION_QUEUE, "accept-next", wait_ms=2000)
    assert result["error"]["code"] == "ServiceTimeout"


async def test_a_session_receiver_of_a_plain_queue_is_refused(
    sb: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = sb.get_queue_receiver(QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5)
    with caplog.at_level(logging.WARNING), pytest.raises(ServiceBusError) as refused:
        async with receiver:
            await receiver.receive_messages(max_wait_time=1)
    assert not isinstance(refused.value, OperationTimeoutError)
    assert attach_errors(caplog) == []


async def test_a_plain_receiver_of_a_session_queue_is_refused(sb: ServiceBusClient) -> None:
    with pytest.raises(ServiceBusError):
        async with sb.get_queue_receiver(SESSION_QUEUE) as receiver:
            await receiver.receive_messages(max_wait_time=1)


async def test_a_message_without_a_session_id_is_refused_by_a_session_queue(
    sb: ServiceBusClient,
) -> None:
    async with sb.get_queue_sender(SESSION_QUEUE) as sender:
        with pytest.raises(ServiceBusError):
            await sender.send_messages(ServiceBusMessage("no session"))
