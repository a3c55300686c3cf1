"""The emulator's queues: messages, locks, dead letters; they outlive a stop() and start()."""

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

    def enqueue(self, messages: Iterable[StoredMessage]) -> None:
        now_ms = int(time.time() * 1000)
        for msg in messages:
            msg.seq, msg.enqueued_ms = self.next_seq, now_ms
            self.next_seq += 1
            self.put_back(msg)

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
                return msg  # (an expired one is dropped, as Service Bus does by default)
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

    def count(self) -> int:
        return len(self.waiting()) + len(self.locked) + len(self.deferred)


class Store:
    """All entities. It outlives stop() and start(), so an outage loses nothing."""

    def __init__(
        self, strict: bool, queues: Iterable[str], session_queues: Iterable[str] = ()
    ) -> None:
        self.strict = strict
        self._lock = threading.Lock()  # add_queue() may come from another thread
        self._entities: dict[str, Entity] = {}
        for name in queues:
            self.add(name)
        for name in session_queues:
            self.add(name, requires_session=True)

    def add(self, name: str, requires_session: bool = False) -> Entity:
        key = name.strip("/").lower()  # entity names are case-insensitive
        with self._lock:
            if key not in self._entities:
                dead_letters = Entity(key + DLQ_SUFFIX)
                self._entities[key] = Entity(
                    key, dead_letters=dead_letters, requires_session=requires_session
                )
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
