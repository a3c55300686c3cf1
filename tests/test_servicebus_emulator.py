"""The local Service Bus emulator, driven only through the official SDK (sync and aio).

Fault-injection tests start their own emulator (`servicebus_emulator_factory`); the
others share the session's emulator and use their own queue names.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusServerBusyError,
)

from local.servicebus.emulator import DEFAULT_MAX_MESSAGE_SIZE, Emulator

Factory = Callable[..., Emulator]
RECEIVE_AND_DELETE = ServiceBusReceiveMode.RECEIVE_AND_DELETE


def client(emulator: Emulator, **kwargs: Any) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(emulator.connection_string, **kwargs)


def sender_for(sb: ServiceBusClient, queue: str) -> ServiceBusSender:
    # keep_alive=0: no keep-alive thread, whose join makes each close take up to a second.
    return sb.get_queue_sender(queue, keep_alive=0)


def receive_all(sb: ServiceBusClient, queue: str, expected: int) -> list[str]:
    """Bodies of `expected` messages taken in RECEIVE_AND_DELETE mode, then a check that
    nothing more comes. (With a prefetch, keep_alive=0 spares the receiver its keep-alive
    thread; without one the SDK starts it anyway.)"""
    bodies: list[str] = []
    receiver = sb.get_queue_receiver(
        queue, receive_mode=RECEIVE_AND_DELETE, prefetch_count=500, keep_alive=0
    )
    with receiver as r:
        while len(bodies) < expected:
            batch = r.receive_messages(
                max_message_count=min(expected - len(bodies), 500), max_wait_time=5
            )
            assert batch, f"only {len(bodies)} of {expected} messages arrived"
            bodies += [str(m) for m in batch]
        assert r.receive_messages(max_message_count=1, max_wait_time=0.3) == []
    return bodies


def test_properties_come_back_exactly_as_sent(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    sent = ServiceBusMessage(
        '{"EventId": "e1", "Data": {"ü": 1}}',
        message_id="message-1",
        subject="order.created",
        content_type="application/json",
        correlation_id="event-1",
        application_properties={
            "EventKey": "order.created",
            "IsRetry": False,
            "Offloaded": True,
            "SchemaVersion": 1,
            "EventTimestamp": "2024-01-01T00:00:00+00:00",
        },
    )
    before = datetime.now(UTC) - timedelta(seconds=1)
    with client(servicebus_emulator) as sb:
        with sender_for(sb, unique_queue) as sender:
            sender.send_messages(sent)
            sender.send_messages(ServiceBusMessage(b"\x00\x01binary"))
        with sb.get_queue_receiver(unique_queue, receive_mode=RECEIVE_AND_DELETE) as receiver:
            first, second = receiver.receive_messages(max_message_count=2, max_wait_time=5)
    assert str(first) == '{"EventId": "e1", "Data": {"ü": 1}}'
    assert first.message_id == "message-1"
    assert first.subject == "order.created"
    assert first.content_type == "application/json"
    assert first.correlation_id == "event-1"
    assert first.application_properties == {
        b"EventKey": b"order.created",
        b"IsRetry": False,
        b"Offloaded": True,
        b"SchemaVersion": 1,
        b"EventTimestamp": b"2024-01-01T00:00:00+00:00",
    }
    assert b"".join(second.body) == b"\x00\x01binary"
    assert first.sequence_number is not None and second.sequence_number is not None
    assert second.sequence_number > first.sequence_number
    assert first.enqueued_time_utc is not None and first.enqueued_time_utc >= before
    assert first.delivery_count == 0


async def test_async_client_sends_batches_and_receives(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    async with AsyncServiceBusClient.from_connection_string(
        servicebus_emulator.connection_string
    ) as sb:
        async with sb.get_queue_sender(unique_queue) as sender:
            batch = await sender.create_message_batch()
            assert batch.max_size_in_bytes == DEFAULT_MAX_MESSAGE_SIZE  # from our attach
            for i in range(50):
                batch.add_message(ServiceBusMessage(f"m{i}", message_id=f"id-{i}"))
            await sender.send_messages(batch)
            await sender.send_messages([ServiceBusMessage("list-1"), ServiceBusMessage("list-2")])
        async with sb.get_queue_receiver(unique_queue) as receiver:  # peek-lock
            received: list[ServiceBusReceivedMessage] = []
            while len(received) < 52:
                more = await receiver.receive_messages(max_message_count=52, max_wait_time=5)
                for message in more:
                    await receiver.complete_message(message)
                received += more
    assert servicebus_emulator.message_count(unique_queue) == 0
    # A batch is split into its messages, in order, each with its own properties.
    assert [str(m) for m in received] == [f"m{i}" for i in range(50)] + ["list-1", "list-2"]
    assert [m.message_id for m in received[:50]] == [f"id-{i}" for i in range(50)]
    sequence_numbers = [m.sequence_number or 0 for m in received]
    assert sequence_numbers == sorted(set(sequence_numbers))


def test_wrong_key_is_refused(servicebus_emulator: Emulator, unique_queue: str) -> None:
    wrong = servicebus_emulator.connection_string_with_key("not-the-key")
    with (
        ServiceBusClient.from_connection_string(wrong, retry_total=0) as sb,
        pytest.raises(ServiceBusAuthenticationError),
        sender_for(sb, unique_queue) as sender,
    ):
        sender.send_messages(ServiceBusMessage("x"))


def test_strict_mode_refuses_unknown_queues(servicebus_emulator_factory: Factory) -> None:
    emulator = servicebus_emulator_factory(strict=True, queues=["known"])
    with client(emulator, retry_total=0) as sb:
        with pytest.raises(MessagingEntityNotFoundError), sender_for(sb, "unknown") as s:
            s.send_messages(ServiceBusMessage("x"))
        with (
            pytest.raises(MessagingEntityNotFoundError),
            sb.get_queue_receiver("unknown") as r,
        ):
            r.receive_messages(max_wait_time=1)
        with sender_for(sb, "KNOWN") as s:  # entity names are case-insensitive
            s.send_messages(ServiceBusMessage("x"))
        emulator.add_queue("added")
        with sender_for(sb, "added") as s:
            s.send_messages(ServiceBusMessage("y"))
    assert emulator.message_count("known") == emulator.message_count("added") == 1


def test_oversize_message_is_refused_and_the_sender_stays_usable(
    servicebus_emulator_factory: Factory,
) -> None:
    emulator = servicebus_emulator_factory(max_message_size=4096)
    with client(emulator) as sb, sender_for(sb, "q") as sender:
        assert sender.create_message_batch().max_size_in_bytes == 4096
        started = time.monotonic()
        with pytest.raises(MessageSizeExceededError):
            sender.send_messages(ServiceBusMessage("x" * 5000))
        assert time.monotonic() - started < 5  # refused, not retried nor timed out
        sender.send_messages(ServiceBusMessage("small"))
        assert receive_all(sb, "q", 1) == ["small"]


def test_peek_lock_complete_abandon_dead_letter(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    with client(servicebus_emulator) as sb:
        with sender_for(sb, unique_queue) as sender:
            sender.send_messages([ServiceBusMessage(b) for b in ("done", "again", "poison")])
        with sb.get_queue_receiver(unique_queue) as receiver:
            done, again, poison = receiver.receive_messages(max_message_count=3, max_wait_time=5)
            assert all(isinstance(m.lock_token, uuid.UUID) for m in (done, again, poison))
            assert done.locked_until_utc is not None
            assert done.locked_until_utc > datetime.now(UTC)
            receiver.complete_message(done)
            receiver.abandon_message(again)
            receiver.dead_letter_message(poison, reason="BadInput", error_description="no EventId")
            (redelivered,) = receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(redelivered) == "again"
            assert redelivered.delivery_count == 1
            assert redelivered.sequence_number == again.sequence_number
            receiver.renew_message_lock(redelivered)
            receiver.complete_message(redelivered)
        dead_letter = ServiceBusSubQueue.DEAD_LETTER
        with sb.get_queue_receiver(unique_queue, sub_queue=dead_letter) as dlq:
            (dead,) = dlq.receive_messages(max_message_count=1, max_wait_time=5)
            assert str(dead) == "poison"
            assert dead.dead_letter_reason == "BadInput"
            assert dead.dead_letter_error_description == "no EventId"
            assert dead.dead_letter_source == unique_queue
            dlq.complete_message(dead)
    assert servicebus_emulator.message_count(unique_queue) == 0
    assert servicebus_emulator.message_count(unique_queue + "/$deadletterqueue") == 0


def test_an_expired_lock_makes_the_message_available_again(
    servicebus_emulator_factory: Factory,
) -> None:
    emulator = servicebus_emulator_factory(lock_duration=1.0)
    with client(emulator) as sb:
        with sender_for(sb, "q") as sender:
            sender.send_messages(ServiceBusMessage("slow"))
        with sb.get_queue_receiver("q") as receiver:
            (first,) = receiver.receive_messages(max_wait_time=5)
            time.sleep(1.0)  # the lock lapses (the emulator looks at locks every second)
            (second,) = receiver.receive_messages(max_wait_time=5)
            assert (str(second), second.delivery_count) == ("slow", 1)
            with pytest.raises(MessageLockLostError):
                receiver.complete_message(first)
            receiver.complete_message(second)
    assert emulator.message_count("q") == 0


def test_peek_shows_messages_without_taking_them(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    with client(servicebus_emulator) as sb:
        with sender_for(sb, unique_queue) as sender:
            sender.send_messages([ServiceBusMessage(f"p{i}") for i in range(3)])
        with sb.get_queue_receiver(unique_queue) as receiver:
            assert [str(m) for m in receiver.peek_messages(max_message_count=10)] == [
                "p0",
                "p1",
                "p2",
            ]
    assert servicebus_emulator.message_count(unique_queue) == 3


def test_a_topic_name_behaves_as_a_queue(servicebus_emulator: Emulator, unique_queue: str) -> None:
    with client(servicebus_emulator) as sb:
        with sb.get_topic_sender(unique_queue) as sender:
            sender.send_messages(ServiceBusMessage("to a topic"))
        assert receive_all(sb, unique_queue, 1) == ["to a topic"]


def test_sdk_recovers_after_connections_are_dropped(servicebus_emulator_factory: Factory) -> None:
    emulator = servicebus_emulator_factory()
    with (
        client(emulator, retry_backoff_factor=0.1) as sb,
        sender_for(sb, "q") as sender,
        sb.get_queue_receiver("q") as receiver,
    ):
        sender.send_messages(ServiceBusMessage("before"))
        (locked,) = receiver.receive_messages(max_wait_time=5)
        emulator.drop_connections()
        sender.send_messages(ServiceBusMessage("after"))  # the SDK reconnects
        # The receiving link is gone; the SDK settles through $management by lock token.
        receiver.complete_message(locked)
        (after,) = receiver.receive_messages(max_wait_time=5)
        assert str(after) == "after"
        receiver.complete_message(after)
    assert emulator.message_count("q") == 0


def test_refused_sends_raise_server_busy_then_succeed(servicebus_emulator_factory: Factory) -> None:
    emulator = servicebus_emulator_factory()
    with client(emulator, retry_total=0) as sb, sender_for(sb, "q") as sender:
        sender.send_messages(ServiceBusMessage("first"))
        emulator.refuse_sends(30)
        with pytest.raises(ServiceBusServerBusyError):
            sender.send_messages(ServiceBusMessage("refused"))
        emulator.refuse_sends(0)
        sender.send_messages(ServiceBusMessage("second"))
        assert receive_all(sb, "q", 2) == ["first", "second"]


def test_delayed_sends_are_settled_late(servicebus_emulator_factory: Factory) -> None:
    emulator = servicebus_emulator_factory()
    with client(emulator) as sb, sender_for(sb, "q") as sender:
        sender.send_messages(ServiceBusMessage("warm-up"))
        emulator.delay_sends(400)
        started = time.monotonic()
        sender.send_messages(ServiceBusMessage("slow"))
        assert time.monotonic() - started >= 0.4
        emulator.delay_sends(0)
        assert receive_all(sb, "q", 2) == ["warm-up", "slow"]


def test_an_outage_keeps_the_port_and_the_messages(servicebus_emulator_factory: Factory) -> None:
    emulator = servicebus_emulator_factory()
    port = emulator.port
    with (
        client(emulator, retry_total=8, retry_backoff_factor=0.2) as sb,
        sender_for(sb, "q") as sender,
    ):
        sender.send_messages(ServiceBusMessage("before"))
        emulator.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        back = threading.Timer(1.0, emulator.start)  # a one-second outage
        back.start()
        sender.send_messages(ServiceBusMessage("during"))  # the SDK retries until it is back
        back.join()
        assert emulator.port == port
        assert receive_all(sb, "q", 2) == ["before", "during"]


def test_concurrent_senders_on_separate_connections(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            with client(servicebus_emulator) as sb, sender_for(sb, unique_queue) as s:
                for start in range(0, 200, 20):
                    s.send_messages(
                        [ServiceBusMessage(f"{worker}-{i}") for i in range(start, start + 20)]
                    )
                for i in range(200, 210):
                    s.send_messages(ServiceBusMessage(f"{worker}-{i}"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with client(servicebus_emulator) as sb:
        bodies = receive_all(sb, unique_queue, 4 * 210)
    assert sorted(bodies) == sorted(f"{w}-{i}" for w in range(4) for i in range(210))


async def test_ten_thousand_messages_none_lost_or_duplicated(
    servicebus_emulator: Emulator, unique_queue: str
) -> None:
    total = 10_000
    async with AsyncServiceBusClient.from_connection_string(
        servicebus_emulator.connection_string
    ) as sb:
        async with sb.get_queue_sender(unique_queue) as sender:
            for start in range(0, total, 250):
                batch = await sender.create_message_batch()
                for i in range(start, start + 250):
                    batch.add_message(ServiceBusMessage(str(i), message_id=str(i)))
                await sender.send_messages(batch)
        ids: list[str] = []
        async with sb.get_queue_receiver(
            unique_queue, receive_mode=RECEIVE_AND_DELETE, prefetch_count=1000
        ) as receiver:
            while len(ids) < total:
                received = await receiver.receive_messages(max_message_count=1000, max_wait_time=5)
                assert received, f"only {len(ids)} of {total} messages arrived"
                ids += [str(m.message_id) for m in received]
    assert len(ids) == total
    assert set(ids) == {str(i) for i in range(total)}
    assert servicebus_emulator.message_count(unique_queue) == 0


def test_command_line_emulator_with_stdin_control() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "local.servicebus", "--port", str(port)]
    command += ["--strict", "--queue", "orders", "--max-message-size", "8192"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None

    def control(line: str) -> str:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(line + "\n")
        process.stdin.flush()
        return process.stdout.readline().strip()

    try:
        assert process.stdout.readline().strip() == f"listening on amqp://127.0.0.1:{port}"
        emulator = Emulator(port=port)  # not started: only for its connection string
        with client(emulator, retry_backoff_factor=0.1) as sb:
            with pytest.raises(MessagingEntityNotFoundError), sender_for(sb, "other") as s:
                s.send_messages(ServiceBusMessage("x"))
            with sender_for(sb, "orders") as sender:
                assert sender.create_message_batch().max_size_in_bytes == 8192
                sender.send_messages(ServiceBusMessage("one"))
                assert control("drop") == "ok drop"
                sender.send_messages(ServiceBusMessage("two"))  # after reconnecting
        assert control("count orders") == "2"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
