"""Glue for proton's reactor: guarded handlers, state kept on connections and links, timer
tasks, and the error conditions the SDK expects."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from proton import (
    Condition,
    Connection,
    Handler,
    Link,
    symbol,
)

from local.servicebus.store import Entity

if TYPE_CHECKING:
    from local.servicebus.broker import Broker

log = logging.getLogger("servicebus_emulator")


def amqp_error(name: str, description: str) -> Condition:
    # The SDK needs an info map on a rejected transfer; Service Bus sends a tracking id.
    info: Any = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
    return Condition(name, description, info)


F = TypeVar("F", bound=Callable[..., None])


def guarded(method: F) -> F:
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
class ConnState:
    authorized_until: float = 0.0
    reply_links: dict[str, Link] = field(default_factory=dict)  # by node: $cbs, q/$management


@dataclass
class LinkState:
    node: str  # "$cbs", "<queue>/$management" or the entity's name
    entity: Entity | None = None
    peek_lock: bool = False
    session: str | None = None  # the session a receiver holds, on a session-enabled queue


# proton keeps attributes set on its objects with the C objects, so they outlive a wrapper.
def link_state(link: Link) -> LinkState | None:
    return getattr(link, "sb", None)


def conn_state(conn: Connection) -> ConnState:
    if getattr(conn, "sb", None) is None:
        conn.sb = ConnState()
    return cast(ConnState, conn.sb)


class TimerCall(Handler):
    """A timer's task (Container.schedule): run a function, guarded, on the reactor."""

    def __init__(self, broker: Broker, fn: Callable[[], None]) -> None:
        super().__init__()
        self.broker, self.fn = broker, fn

    def on_timer_task(self, event: Any) -> None:
        self.broker.call(self.fn)
