"""Named fail points: where a process can die between two durable steps of a delivery.

    failpoint("after-send")

is one line at such a place. Disarmed, as always in production, it costs a look at an empty
dict. The crash tests (tests/test_crash_points.py) arm one in a host process and check that
after a restart nothing is lost: the invariant of docs/API.md, "Delivery guarantees".

The setting FAILPOINTS arms points, read once when this module is first imported:
`after-send=crash` ends the process at once with `os._exit(CRASH_EXIT_CODE)` (no cleanup, no
flush of anything but this module's log line: as SIGKILL would), `after-record=raise`
raises FailPointError there; `@N` acts at the Nth pass only (`after-send=crash@5`), points
separated by commas. They are armed only where ALLOW_LOCAL_ENDPOINTS=true (local development
and tests; Azure never sets it, and a test checks that infra/ sets neither): elsewhere
FAILPOINTS is refused with an error line and nothing is armed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass

from shared.settings import allow_local_endpoints

log = logging.getLogger("shared.failpoints")

SETTING = "FAILPOINTS"
CRASH_EXIT_CODE = 86  # what a test expects of a process that died at a point
# Every point and where it is (the test per point is in tests/test_crash_points.py).
POINTS = {
    "after-send": "Dispatcher._send_and_log: sent, not yet recorded",
    "after-record": "Dispatcher._send_and_log: recorded, a failure's retry not yet queued",
    "after-retry": "Dispatcher._send_and_log: a failure's retry queued, message not completed",
    "after-defer": "Dispatcher._deliver_or_defer: put back by a full bulkhead, not completed",
    "after-claim-upload": "Dispatcher._send: body in the claim-check blob, reference not sent",
    "after-poison": "triggers.to_poison: copied to <queue>-poison, message not completed",
    "replay-chunk-sent": "replay.chunk: a chunk re-sent, its counts not yet written",
    "before-complete": "local host QueueListener._handle: function done, message not deleted",
}
ACTIONS = ("crash", "raise")


class FailPointError(RuntimeError):
    """Raised at a point armed with `raise`."""


@dataclass
class _Armed:
    action: str
    at: int = 1
    passes: int = 0


_armed: dict[str, _Armed] = {}
_passes = threading.Lock()


def failpoint(name: str) -> None:
    """Act here if the point `name` is armed; nothing otherwise."""
    if _armed:
        _reach(name)


def _reach(name: str) -> None:
    armed = _armed.get(name)
    if armed is None:
        return
    with _passes:
        armed.passes += 1
        if armed.passes != armed.at:
            return
    log.critical("fail point %s: %s (pass %d)", name, armed.action, armed.passes)
    if armed.action == "crash":
        for handler in logging.root.handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
    raise FailPointError(f"fail point {name}")


def parse(spec: str) -> dict[str, _Armed]:
    """`name=action[@N],...` as armed points; ValueError naming what is wrong."""
    armed: dict[str, _Armed] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, how = part.partition("=")
        action, _, at = how.partition("@")
        if name not in POINTS:
            raise ValueError(f"{SETTING}: unknown fail point {name!r}; known: {', '.join(POINTS)}")
        if action not in ACTIONS:
            raise ValueError(f"{SETTING}: {name} needs =crash or =raise, not {how!r}")
        if at and not (at.isdigit() and int(at) >= 1):
            raise ValueError(f"{SETTING}: {name}: @N needs a whole number from 1, not {at!r}")
        armed[name] = _Armed(action, int(at or 1))
    return armed


def arm(spec: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Arm the points of `spec` (replacing any armed); refused (PermissionError) unless
    ALLOW_LOCAL_ENDPOINTS=true."""
    if not allow_local_endpoints(environ):
        raise PermissionError(f"{SETTING} is for local runs and tests only (ALLOW_LOCAL_ENDPOINTS)")
    points = parse(spec)
    _armed.clear()
    _armed.update(points)
    if points:
        log.warning("fail points armed: %s", spec)


def disarm() -> None:
    _armed.clear()


def arm_from_environment(environ: MutableMapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    spec = environ.get(SETTING, "")
    if not spec:
        return
    try:
        arm(spec, environ)
    except PermissionError as refused:
        log.error("%s is set and ignored: %s", SETTING, refused)


arm_from_environment()
