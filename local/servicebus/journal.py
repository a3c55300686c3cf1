"""The emulator's journal: what it accepted outlives a restart or a kill, as in Service Bus.

One append-only file, `<data dir>/journal`. Each change to a queue's contents is a record,
written before the client hears of it:
- `put`: a message stored (before its send is Accepted), or copied to a dead-letter queue;
- `gone`: a message completed, received in RECEIVE_AND_DELETE mode, expired, or moved to
  its dead-letter queue (after the `put` there);
- `defer`: a message deferred;
- `queue`: a queue made (on first use, or by a command), with its next sequence number.
Locks are not journalled: after a restart a locked message is available again, as when its
lock expires, and its delivery count is the one it was stored with.

Each record is one `write()` to the OS before the disposition goes out, so a killed
emulator (SIGKILL: the kernel still writes the page cache back) loses nothing it
acknowledged. `fsync=True` also syncs each write to the disk, against a machine that dies
(docs/DESIGN.md has what that costs). A record is `length, crc32, body`: one torn by a kill
in the middle of a write fails its check and is dropped on load; it was never acknowledged.

At start the journal is read back, and rewritten with only what is live (a temporary file,
synced, then renamed over it); the same compaction runs whenever the records written since
outnumber the live messages by COMPACT_FACTOR (and at least COMPACT_MIN records were
written), so the file stays within a few times the size of what the queues hold.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from local.servicebus.codec import StoredMessage

log = logging.getLogger("servicebus_emulator")

JOURNAL_NAME = "journal"
COMPACT_MIN = 10_000  # records written since the last rewrite, at least
COMPACT_FACTOR = 4  # ... and this many times the messages still held

QUEUE, PUT, GONE, DEFER = b"Q", b"P", b"G", b"D"
_FRAME = struct.Struct(">II")  # body length, crc32 of the body
_LEN = struct.Struct(">I")
# seq, enqueued ms, ttl ms (-1: none), delivery count, app count, annotation count,
# priority, durable
_NUMBERS = struct.Struct(">qqqiiiBB")
_SEQ = struct.Struct(">q")


def _strings(*values: bytes) -> bytes:
    return b"".join(_LEN.pack(len(v)) + v for v in values)


def _read_strings(body: bytes, pos: int, n: int) -> tuple[list[bytes], int]:
    values = []
    for _ in range(n):
        (size,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if pos + size > len(body):
            raise ValueError("truncated field")
        values.append(body[pos : pos + size])
        pos += size
    return values, pos


def _frame(op: bytes, payload: bytes) -> bytes:
    body = op + payload
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def queue_record(name: str, requires_session: bool, next_seq: int) -> bytes:
    return _frame(QUEUE, _SEQ.pack(next_seq) + bytes((requires_session,)) + name.encode())


def put_record(name: str, m: StoredMessage) -> bytes:
    ttl = -1 if m.ttl_ms is None else m.ttl_ms
    numbers = _NUMBERS.pack(
        m.seq, m.enqueued_ms, ttl, m.delivery_count, m.app_count, m.annotation_count,
        m.priority, m.durable,
    )  # fmt: skip
    session = b"\x00" if m.session_id is None else b"\x01" + m.session_id.encode()
    fields = (name.encode(), m.properties, m.body, m.app_entries, m.annotation_entries, session)
    return _frame(PUT, numbers + _strings(*fields))


def seq_record(op: bytes, name: str, seq: int) -> bytes:
    """A `gone` or `defer` record: the message is known by its queue and sequence number."""
    return _frame(op, _SEQ.pack(seq) + name.encode())


def _message(body: bytes) -> tuple[str, StoredMessage]:
    seq, enqueued, ttl, count, app_count, annotation_count, priority, durable = (
        _NUMBERS.unpack_from(body, 1)
    )
    fields, _ = _read_strings(body, 1 + _NUMBERS.size, 6)
    name, properties, payload, app_entries, annotation_entries, session = fields
    message = StoredMessage(
        properties=properties,
        body=payload,
        app_count=app_count,
        app_entries=app_entries,
        annotation_count=annotation_count,
        annotation_entries=annotation_entries,
        durable=bool(durable),
        priority=priority,
        ttl_ms=None if ttl < 0 else ttl,
        session_id=session[1:].decode() if session[:1] == b"\x01" else None,
        seq=seq,
        enqueued_ms=enqueued,
        delivery_count=count,
    )
    return name.decode(), message


@dataclass
class QueueState:
    """One queue as the journal left it: its messages by sequence number, which of them are
    deferred, and the next sequence number."""

    requires_session: bool = False
    next_seq: int = 1
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    deferred: set[int] = field(default_factory=set)


def replay(records: Iterable[bytes]) -> dict[str, QueueState]:
    """The queues (dead-letter queues included, by their own names) the records leave."""
    queues: dict[str, QueueState] = {}
    for body in records:
        op = body[:1]
        if op == PUT:
            name, message = _message(body)
            state = queues.setdefault(name, QueueState())
            state.messages[message.seq] = message
            state.next_seq = max(state.next_seq, message.seq + 1)
        elif op == QUEUE:
            (next_seq,) = _SEQ.unpack_from(body, 1)
            state = queues.setdefault(body[10:].decode(), QueueState())
            state.requires_session = bool(body[9])
            state.next_seq = max(state.next_seq, next_seq)
        elif op in (GONE, DEFER):
            (seq,) = _SEQ.unpack_from(body, 1)
            state = queues.setdefault(body[9:].decode(), QueueState())
            if op == GONE:
                state.messages.pop(seq, None)
                state.deferred.discard(seq)
            elif seq in state.messages:
                state.deferred.add(seq)
        else:
            raise ValueError(f"unknown journal record {op!r}")
    return queues


def read_records(data: bytes) -> Iterator[bytes]:
    """The bodies of the whole records in `data`; stops at a torn or damaged one."""
    pos = 0
    while pos + _FRAME.size <= len(data):
        size, crc = _FRAME.unpack_from(data, pos)
        body = data[pos + _FRAME.size : pos + _FRAME.size + size]
        if len(body) < size or zlib.crc32(body) != crc:
            break
        yield body
        pos += _FRAME.size + size
    if pos < len(data):
        log.warning("journal: dropped %d bytes of a torn record at its end", len(data) - pos)


class Journal:
    """The journal file of a data directory, held by one emulator at a time (a lock file)."""

    def __init__(
        self, directory: Path, fsync: bool = False, compact_min: int = COMPACT_MIN
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JOURNAL_NAME
        self.fsync, self.compact_min = fsync, compact_min
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"another emulator uses {self.directory}") from None
        self._fd = -1
        self.written = 0  # records since the last rewrite
        self.live = 0  # messages held, as far as the records since then say

    def load(self) -> dict[str, QueueState]:
        data = self.path.read_bytes() if self.path.exists() else b""
        return replay(read_records(data))

    def append(self, records: bytes, count: int, live_change: int) -> None:
        """Write `count` records at once (one write, so one torn record at most)."""
        written = os.write(self._fd, records)
        if written != len(records):  # a short write to a regular file: the disk is full
            raise OSError(f"journal: wrote {written} of {len(records)} bytes")
        if self.fsync:
            os.fsync(self._fd)
        self.written += count
        self.live += live_change

    def due(self) -> bool:
        return self.written >= self.compact_min and self.written > COMPACT_FACTOR * max(
            self.live, 1
        )

    def rewrite(self, records: Iterable[bytes], live: int) -> None:
        """Replace the journal with `records` (what is live now): whole or not at all."""
        temporary = self.path.with_suffix(".new")
        with temporary.open("wb") as out:
            for record in records:
                out.write(record)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself is durable
        finally:
            os.close(directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.written, self.live = 0, live

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1
