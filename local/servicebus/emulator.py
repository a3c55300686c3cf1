"""The emulator: the container in a thread, faults on demand, and its command line."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from proton.reactor import ApplicationEvent, Container, EventInjector

from local.servicebus.broker import Broker
from local.servicebus.journal import Journal
from local.servicebus.store import Store

DEFAULT_KEY = "SAS_KEY_VALUE"
KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024  # Service Bus Standard tier


class Emulator:
    """A local Service Bus. `start()` listens (port 0 picks a free port, kept for later
    starts); `stop()` drops every connection; `start()` again resumes on the same port
    with the messages kept. With a `data_dir`, the queues are journalled there and a new
    emulator on it (after a restart, or a kill) starts with what was acknowledged
    (local/servicebus/journal.py; `fsync` syncs each record to the disk). Every method may
    be called from any thread."""

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
        session_queues: Iterable[str] = (),
        jwt_issuer_key: Any = None,
        data_dir: Path | None = None,
        fsync: bool = False,
    ) -> None:
        self.host, self._port, self.key = host, port, key
        self.max_message_size = max_message_size
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        journal = Journal(data_dir, fsync) if data_dir is not None else None
        self.store = Store(strict, queues, session_queues, journal)
        # The public key (PEM or a key object) that signs the jwt tokens it accepts.
        self.jwt_issuer_key = jwt_issuer_key
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # for the two faults below
        self._refuse_until = self._delay_ms = 0.0
        self.holding_attaches = False
        self.connections_accepted = 0  # AMQP connections clients opened, since it was made
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
        self.close()

    def close(self) -> None:
        """Stop for good: its journal is closed (another emulator may open the data dir)."""
        self.stop()
        self.store.close()

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

    def add_queue(self, name: str, requires_session: bool = False) -> None:
        self.store.add(name, requires_session)

    def message_count(self, queue: str) -> int:
        """Messages held by a queue: available, locked or deferred (`q/$deadletterqueue`
        for its dead letters)."""
        entity = self.store.find(queue, create=False)
        return entity.count() if entity else 0

    def waiting_for_session(self, queue: str) -> int:
        """Receivers of a session-enabled queue whose attach waits for a session to free."""
        entity, counted = self.store.find(queue, create=False), [0]
        if entity is not None and self._broker is not None:
            broker = self._broker
            self._in_reactor(lambda: counted.__setitem__(0, broker.session_waiters.count(entity)))
        return counted[0]


def _control(emulator: Emulator, lines: Iterator[str]) -> None:
    """The standard input commands of the module docstring."""
    commands: dict[str, Callable[[str], object]] = {
        "drop": lambda _: emulator.drop_connections(),
        "refuse": lambda arg: emulator.refuse_sends(float(arg)),
        "delay": lambda arg: emulator.delay_sends(float(arg)),
        "outage": lambda arg: emulator.outage(float(arg)),
        "queue": emulator.add_queue,
        "session-queue": lambda arg: emulator.add_queue(arg, requires_session=True),
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
    parser = argparse.ArgumentParser(
        prog="python -m local.servicebus", description="A local Azure Service Bus emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--strict", action="store_true", help="refuse unknown entities")
    parser.add_argument("--queue", action="extend", nargs="+", default=[], metavar="NAME")
    parser.add_argument(
        "--session-queue",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="a session-enabled queue (refuses messages without a SessionId)",
    )
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    parser.add_argument("--key", default=DEFAULT_KEY, help="the shared access key")
    parser.add_argument(
        "--jwt-issuer-key", metavar="PEM_FILE", help="accept jwt tokens signed by this key"
    )
    parser.add_argument("--lock-duration", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the queues in a journal here, across restarts"
    )
    parser.add_argument("--fsync", action="store_true", help="sync each journal record to the disk")
    parser.add_argument("--refuse-sends", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--delay-sends", type=float, default=0.0, metavar="MS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("proton").setLevel(logging.WARNING)  # not a line per connection
    settings = (args.strict, args.queue, args.max_message_size, args.key, args.lock_duration)
    issuer_key = Path(args.jwt_issuer_key).read_bytes() if args.jwt_issuer_key else None
    emulator = Emulator(
        args.host,
        args.port,
        *settings,
        session_queues=args.session_queue,
        jwt_issuer_key=issuer_key,
        data_dir=args.data_dir,
        fsync=args.fsync,
    )
    emulator.refuse_sends(args.refuse_sends)
    emulator.delay_sends(args.delay_sends)
    emulator.start()
    print(f"listening on amqp://{emulator.host}:{emulator.port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=_control, args=(emulator, iter(sys.stdin)), daemon=True).start()
    done.wait()
    emulator.close()
