"""The emulator keeps what it acknowledged across a restart or a kill, as Service Bus keeps
what it accepted: the journal of a data directory (local/servicebus/journal.py).

The end-to-end tests drive `python -m local.servicebus --data-dir` through the official SDK
and kill it with SIGKILL; the others check the store and its journal directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import ServiceBusError

from local.process import EmulatorProcess, start_emulator_process
from local.servicebus.codec import StoredMessage
from local.servicebus.journal import JOURNAL_NAME, Journal, put_record
from local.servicebus.store import Store

RECEIVE_AND_DELETE = ServiceBusReceiveMode.RECEIVE_AND_DELETE


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[EmulatorProcess]]:
    """Emulator processes a test starts (on `tmp_path / "data"`); killed at the end."""
    started: list[EmulatorProcess] = []
    yield started
    for emulator in started:
        emulator.kill()


def restart(emulators: list[EmulatorProcess], data: Path, port: int | None = None) -> str:
    emulators.append(start_emulator_process(port, data))
    return emulators[-1].connection_string


def message(n: int) -> ServiceBusMessage:
    return ServiceBusMessage(
        f'{{"N": {n}}}',
        message_id=f"m-{n}",
        subject="Order.Created",
        application_properties={"N": n, "Kind": "test"},
    )


def drain(cs: str, queue: str, sub_queue: ServiceBusSubQueue | None = None) -> list[Any]:
    """Everything a queue holds now (received and deleted)."""
    got: list[Any] = []
    with (
        ServiceBusClient.from_connection_string(cs) as sb,
        sb.get_queue_receiver(
            queue, sub_queue=sub_queue, receive_mode=RECEIVE_AND_DELETE, keep_alive=0
        ) as receiver,
    ):
        while batch := receiver.receive_messages(max_message_count=100, max_wait_time=1):
            got += batch
    return got


def test_acknowledged_messages_survive_a_kill_and_settled_ones_stay_gone(
    tmp_path: Path, emulators: list[EmulatorProcess]
) -> None:
    data = tmp_path / "data"
    cs = restart(emulators, data)
    with ServiceBusClient.from_connection_string(cs) as sb:
        with sb.get_queue_sender("kept", keep_alive=0) as sender:
            for n in range(20):  # one at a time
                sender.send_messages(message(n))
            for first in (20, 120):  # SDK batches: each message is stored on its own
                batch = sender.create_message_batch()
                for n in range(first, first + 100):
                    batch.add_message(message(n))
                sender.send_messages(batch)
        with sb.get_queue_sender("settled", keep_alive=0) as sender:
            sender.send_messages([message(n) for n in range(10)])
        with sb.get_queue_receiver("settled", keep_alive=0, prefetch_count=0) as peek_lock:
            locked = peek_lock.receive_messages(max_message_count=6, max_wait_time=5)
            assert len(locked) == 6
            for m in locked[:3]:
                peek_lock.complete_message(m)  # gone for good
            peek_lock.dead_letter_message(locked[3], reason="Unreadable")
            peek_lock.abandon_message(locked[4])  # back in the queue
            # locked[5] stays locked when the emulator dies: available again after
            taken = drain(cs, "settled")  # received and deleted: gone for good
            assert {m.message_id for m in taken} == {f"m-{n}" for n in (4, *range(6, 10))}

        emulators[-1].kill()
        cs = restart(emulators, data, emulators[-1].port)

    kept = drain(cs, "kept")
    assert sorted(m.message_id for m in kept) == sorted(f"m-{n}" for n in range(220))
    first = next(m for m in kept if m.message_id == "m-7")
    assert (str(first), first.subject, first.application_properties) == (
        '{"N": 7}',
        "Order.Created",
        {b"N": 7, b"Kind": b"test"},
    )
    assert [m.message_id for m in drain(cs, "settled")] == ["m-5"]
    dead = drain(cs, "settled", ServiceBusSubQueue.DEAD_LETTER)
    assert [(m.message_id, m.dead_letter_reason) for m in dead] == [("m-3", "Unreadable")]

    emulators[-1].kill()  # what was received since is gone after the next kill, too
    cs = restart(emulators, data, emulators[-1].port)
    assert drain(cs, "kept") == drain(cs, "settled") == []


def test_every_send_acknowledged_before_a_kill_is_kept(
    tmp_path: Path, emulators: list[EmulatorProcess]
) -> None:
    data = tmp_path / "data"
    cs = restart(emulators, data)
    acknowledged: list[str] = []
    stopped = threading.Event()

    def send() -> None:
        with (
            ServiceBusClient.from_connection_string(cs, retry_total=0) as sb,
            sb.get_queue_sender("busy", keep_alive=0) as sender,
        ):
            for n in range(100_000):
                try:
                    sender.send_messages(message(n))
                except ServiceBusError:
                    break
                acknowledged.append(f"m-{n}")
        stopped.set()

    sending = threading.Thread(target=send, daemon=True)
    sending.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    emulators[-1].kill()  # mid-stream: one send may be on its way
    assert stopped.wait(60)
    cs = restart(emulators, data, emulators[-1].port)

    kept = [m.message_id for m in drain(cs, "busy")]
    assert len(acknowledged) >= 200
    assert set(acknowledged) <= set(kept)
    assert len(kept) <= len(acknowledged) + 1  # at most the one it stored but never answered


def stored(n: int, session: str | None = None) -> StoredMessage:
    return StoredMessage(body=f"body {n}".encode(), session_id=session, ttl_ms=60_000)


def test_the_journal_keeps_dead_letters_deferrals_sessions_and_sequence_numbers(
    tmp_path: Path,
) -> None:
    store = Store(False, ["plain"], ["ordered"], Journal(tmp_path))
    plain, ordered = store.find("plain", False), store.find("ordered", False)
    assert plain is not None and ordered is not None
    plain.enqueue([stored(n) for n in range(5)])
    ordered.enqueue([stored(5, "s1"), stored(6, "s2")])
    taken = [plain.next_message(time.time() * 1000) for _ in range(3)]
    assert all(taken)
    plain.forget(taken[0])  # type: ignore[arg-type]  # completed
    plain.defer(taken[1])  # type: ignore[arg-type]
    plain.dead_letter(taken[2])  # type: ignore[arg-type]
    store.close()

    again = Store(False, [], journal=Journal(tmp_path))
    plain, ordered = again.find("plain", False), again.find("ordered", False)
    assert plain is not None and ordered is not None and plain.dead_letters is not None
    assert [m.body for m in plain.waiting()] == [b"body 3", b"body 4"]
    assert [m.body for m in plain.deferred] == [b"body 1"]
    assert [m.body for m in plain.dead_letters.waiting()] == [b"body 2"]
    assert ordered.requires_session and set(ordered.sessions) == {"s1", "s2"}
    assert plain.waiting()[0].ttl_ms == 60_000
    plain.enqueue([stored(7)])
    assert plain.waiting()[-1].seq == 6  # numbers go on, never reused
    again.close()


def test_compaction_keeps_the_journal_as_small_as_what_is_held(tmp_path: Path) -> None:
    store = Store(False, ["held", "busy"], journal=Journal(tmp_path, compact_min=100))
    held, busy = store.find("held", False), store.find("busy", False)
    assert held is not None and busy is not None
    held.enqueue([stored(n) for n in range(10)])
    record = len(put_record("busy", stored(0)))
    for n in range(2_000):  # sent and completed, 2,000 times
        busy.enqueue([stored(n)])
        taken = busy.next_message(time.time() * 1000)
        assert taken is not None
        busy.forget(taken)
        store.compact_if_due()  # (the emulator does it once a second)
        assert (tmp_path / JOURNAL_NAME).stat().st_size < 100 * record
    store.close()

    again = Store(False, [], journal=Journal(tmp_path))
    held, busy = again.find("held", False), again.find("busy", False)
    assert held is not None and busy is not None
    assert [m.body for m in held.waiting()] == [f"body {n}".encode() for n in range(10)]
    assert busy.waiting() == [] and busy.next_seq == 2_001
    again.close()


def test_a_torn_last_record_is_dropped_and_a_data_dir_has_one_emulator(tmp_path: Path) -> None:
    store = Store(False, ["q"], journal=Journal(tmp_path))
    queue = store.find("q", False)
    assert queue is not None
    queue.enqueue([stored(1), stored(2)])
    with pytest.raises(RuntimeError, match="another emulator"):
        Journal(tmp_path)
    store.close()
    whole = put_record("q", stored(3))
    with (tmp_path / JOURNAL_NAME).open("ab") as journal:
        journal.write(whole[: len(whole) // 2])  # a kill in the middle of a write

    again = Store(False, [], journal=Journal(tmp_path))
    queue = again.find("q", False)
    assert queue is not None
    assert [m.body for m in queue.waiting()] == [b"body 1", b"body 2"]
    again.close()
