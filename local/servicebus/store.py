"""The emulator's queues: messages, locks, dead letters; they outlive a stop() and start(),
and with a journal (local/servicebus/journal.py) a restart or a kill of the process."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from proton import (
    Link,
)

from local.servicebus.codec import StoredMessage
from local.servicebus.journal import (
    DEFER,
    GONE,
    Journal,
    QueueState,
    put_record,
    queue_record,
    seq_record,
)

DLQ_SUFFIX = "/$deadletterqueue"


@dataclass(slots=True, eq=False)
class Lock:
    message: StoredMessage
    until: float


@dataclass(eq=False)
class Entity:
    """A queue (or a topic used as one), or a queue's dead-letter subqueue."""

    name: str
    available: list[tuple[int, StoredMessage]] = field(default_factory=list)  # heap by seq
    locked: dict[bytes, Lock] = field(default_factory=dict)  # by lock token
    deferred: list[StoredMessage] = field(default_factory=list)
    consumers: list[Link] = field(default_factory=list)  # our links to the client's receivers
    dead_letters: Entity | None = None
    next_seq: int = 1
    requires_session: bool = False
    # A session-enabled queue keeps each session's messages apart, and each session is
    # held by at most one receiving link at a time.
    sessions: dict[str, list[tuple[int, StoredMessage]]] = field(default_factory=dict)
    session_holders: dict[str, Link] = field(default_factory=dict)
    journal: Journal | None = field(default=None, repr=False)

    def enqueue(self, messages: list[StoredMessage]) -> None:
        """Store sent messages: journalled before they are held, so before the send is
        acknowledged (OSError if the journal cannot be written: the send is refused)."""
        now_ms = int(time.time() * 1000)
        for msg in messages:
            msg.seq, msg.enqueued_ms = self.next_seq, now_ms
            self.next_seq += 1
        if self.journal is not None:
            records = b"".join(put_record(self.name, m) for m in messages)
            self.journal.append(records, len(messages), len(messages))
        for msg in messages:
            self.put_back(msg)

    def forget(self, msg: StoredMessage) -> None:
        """A message is gone for good: completed, received and deleted, or expired."""
        if self.journal is not None:
            self.journal.append(seq_record(GONE, self.name, msg.seq), 1, -1)

    def defer(self, msg: StoredMessage) -> None:
        if self.journal is not None:
            self.journal.append(seq_record(DEFER, self.name, msg.seq), 1, 0)
        self.deferred.append(msg)

    def dead_letter(self, msg: StoredMessage) -> None:
        """Move a message to the dead-letter queue (from one: it is gone)."""
        target = self.dead_letters
        if target is None:
            return self.forget(msg)
        if self.journal is not None:  # the copy first: a torn pair keeps it twice, not never
            records = put_record(target.name, msg) + seq_record(GONE, self.name, msg.seq)
            self.journal.append(records, 2, 0)
        target.put_back(msg)
        return None

    def put_back(self, msg: StoredMessage) -> None:
        heap = self._heap(msg.session_id)
        heapq.heappush(heap, (msg.seq, msg))

    def _heap(self, session: str | None) -> list[tuple[int, StoredMessage]]:
        if not self.requires_session or session is None:
            return self.available
        return self.sessions.setdefault(session, [])

    def has_available(self, session: str | None = None) -> bool:
        return bool(self._heap(session))

    def next_message(self, now_ms: float, session: str | None = None) -> StoredMessage | None:
        heap = self._heap(session)
        while heap:
            _, msg = heapq.heappop(heap)
            if not msg.ttl_ms or msg.enqueued_ms + msg.ttl_ms > now_ms:
                return msg
            self.forget(msg)  # an expired one is dropped, as Service Bus does by default
        return None

    def free_session(self, link: Link) -> str | None:
        """A session with messages that no link holds, now held by `link` (oldest first)."""
        waiting = [(h[0][0], name) for name, h in self.sessions.items() if h]
        for _, name in sorted(waiting):
            if name not in self.session_holders:
                self.session_holders[name] = link
                return name
        return None

    def release(self, link: Link) -> None:
        for name in [n for n, held in self.session_holders.items() if held == link]:
            del self.session_holders[name]

    def waiting(self) -> list[StoredMessage]:
        """Every available message, of every session."""
        heaps = [self.available, *self.sessions.values()]
        return [m for heap in heaps for _, m in heap]

    def held(self) -> list[StoredMessage]:
        """Every message it holds: available, locked or deferred."""
        return self.waiting() + [lock.message for lock in self.locked.values()] + self.deferred

    def count(self) -> int:
        return len(self.waiting()) + len(self.locked) + len(self.deferred)


class Store:
    """All entities. It outlives stop() and start(), so an outage loses nothing; with a
    journal, it starts with what the journal holds."""

    def __init__(
        self,
        strict: bool,
        queues: Iterable[str],
        session_queues: Iterable[str] = (),
        journal: Journal | None = None,
    ) -> None:
        self.strict = strict
        self._lock = threading.Lock()  # add_queue() may come from another thread
        self._entities: dict[str, Entity] = {}
        self.journal = journal
        if journal is not None:
            self._restore(journal.load())
            self.compact()
        for name in queues:
            self.add(name)
        for name in session_queues:
            self.add(name, requires_session=True)

    def add(self, name: str, requires_session: bool = False) -> Entity:
        key = name.strip("/").lower()  # entity names are case-insensitive
        with self._lock:
            if key not in self._entities:
                self._entities[key] = self._new(key, requires_session)
                if self.journal is not None:
                    self.journal.append(queue_record(key, requires_session, 1), 1, 0)
            return self._entities[key]

    def _new(self, key: str, requires_session: bool) -> Entity:
        dead_letters = Entity(key + DLQ_SUFFIX, journal=self.journal)
        return Entity(
            key, dead_letters=dead_letters, requires_session=requires_session, journal=self.journal
        )

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

    # -- the journal --------------------------------------------------------------------

    def _restore(self, queues: dict[str, QueueState]) -> None:
        for name in sorted(queues, key=lambda n: n.endswith(DLQ_SUFFIX)):  # queues first
            state, base = queues[name], name.removesuffix(DLQ_SUFFIX)
            entity = self._entities.get(base)
            if entity is None:
                entity = self._entities[base] = self._new(base, state.requires_session)
            target = entity.dead_letters if name != base and entity.dead_letters else entity
            target.next_seq = state.next_seq
            for seq in sorted(state.messages):
                message = state.messages[seq]
                if seq in state.deferred:
                    target.deferred.append(message)
                else:
                    target.put_back(message)

    def compact(self) -> None:
        """Rewrite the journal with what the queues hold now."""
        if self.journal is None:
            return
        with self._lock:
            records, live = [], 0
            for queue in self._entities.values():
                records.append(queue_record(queue.name, queue.requires_session, queue.next_seq))
                for entity in filter(None, (queue, queue.dead_letters)):
                    held = entity.held()
                    live += len(held)
                    records += [put_record(entity.name, m) for m in held]
                    records += [seq_record(DEFER, entity.name, m.seq) for m in entity.deferred]
            self.journal.rewrite(records, live)

    def compact_if_due(self) -> None:
        if self.journal is not None and self.journal.due():
            self.compact()

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
