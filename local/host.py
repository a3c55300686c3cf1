"""Local Functions host: runs a v2-model FunctionApp's HTTP routes, queue triggers and timers.

Azure Functions Core Tools cannot be installed everywhere we work, so this host runs the same
functions from their own decorators (`app.get_functions()`), with the Functions host's
semantics where our code relies on them: ASP.NET-style routes and precedence, base64 queue
messages, `maxDequeueCount` then `<queue>-poison`, NCRONTAB timers. It never lists a route,
queue or schedule itself.

    python -m local.host [--app function_app:app] [--host 127.0.0.1] [--port 7071] [--no-triggers]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient
from multidict import CIMultiDict

from local.ncrontab import CronSchedule, IntervalSchedule, parse_schedule, parse_timespan
from shared.settings import load_local_settings

log = logging.getLogger("local.host")

T = TypeVar("T")

DEFAULT_STORAGE_SETTING = "AzureWebJobsStorage"
# The Functions host accepts request bodies up to 100 MB; aiohttp's default is 1 MiB.
MAX_REQUEST_BODY = 100 * 1024 * 1024
MIN_POLLING_INTERVAL = 0.1
# How long a received message stays invisible while its function runs (the WebJobs SDK's
# 10 minutes); renewed while the function is still running.
DEFAULT_MESSAGE_LEASE = 600.0
# A timer invocation this late is reported with `past_due`.
PAST_DUE_AFTER = timedelta(seconds=1)


# ---------------------------------------------------------------- settings


_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def resolve_setting_references(value: str, environ: Mapping[str, str]) -> str:
    """Replace each `%NAME%` with app setting NAME, as the Functions host does in bindings."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise LookupError(f"app setting {name!r} (used as %{name}%) is not set")
        return environ[name]

    return _SETTING_REFERENCE.sub(setting, value)


def _duration(value: Any) -> float:
    """A host.json duration in seconds: a TimeSpan string, or milliseconds (the v1 style)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000
    return parse_timespan(str(value)).total_seconds()


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the Functions defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def max_in_flight(self) -> int:
        """Invocations of one queue trigger running at most: a new batch is fetched while no
        more than `newBatchThreshold` run."""
        return self.batch_size + self.new_batch_threshold

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueOptions:
        queues = host_json.get("extensions", {}).get("queues", {})
        batch_size = int(queues.get("batchSize", cls.batch_size))
        if not 1 <= batch_size <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be between 1 and 32")
        encoding = str(queues.get("messageEncoding", cls.message_encoding)).lower()
        if encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        polling = cls.max_polling_interval
        if "maxPollingInterval" in queues:
            polling = max(MIN_POLLING_INTERVAL, _duration(queues["maxPollingInterval"]))
        visibility = cls.visibility_timeout
        if "visibilityTimeout" in queues:
            visibility = _duration(queues["visibilityTimeout"])
        return cls(
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch_size // 2)),
            max_polling_interval=polling,
            visibility_timeout=visibility,
            max_dequeue_count=int(queues.get("maxDequeueCount", cls.max_dequeue_count)),
            message_encoding=encoding,
        )


def route_prefix(host_json: Mapping[str, Any]) -> str:
    """host.json `extensions.http.routePrefix`; `api` when unset, as in Azure."""
    return str(host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api"))


def load_host_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_app(reference: str) -> func.FunctionApp:
    """Import `module:attribute` (default attribute `app`)."""
    module_name, _, attribute = reference.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{reference} is not a FunctionApp")
    return app


def indexed_functions(app: func.FunctionApp) -> list[Any]:
    """`app.get_functions()`, callable more than once for the same app.

    The SDK remembers every name it has indexed and refuses a second call on the same app
    object; it is meant to catch duplicates within one indexing, which it still does here.
    """
    app.functions_bindings = {}
    return list(app.get_functions())


# ---------------------------------------------------------------- invoking functions


@dataclass(frozen=True)
class InvocationContext:
    """What a function that takes `context` receives: the parts of func.Context we can give."""

    invocation_id: str
    function_name: str
    function_directory: str
    thread_local_storage: threading.local = field(default_factory=threading.local)
    trace_context: None = None
    retry_context: None = None


class FunctionInvoker:
    """Calls one user function: keyword = trigger binding name, plus `context` if it asks.

    Coroutine functions run on the loop; plain functions in the thread pool, as the Python
    worker does.
    """

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        argument_name: str,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.name = name
        self._function = function
        self._argument_name = argument_name
        self._executor = executor
        self._is_async = inspect.iscoroutinefunction(function)
        self._wants_context = "context" in inspect.signature(function).parameters
        self._directory = ""
        if self._wants_context:
            with contextlib.suppress(TypeError):
                self._directory = str(Path(inspect.getfile(function)).parent)

    async def __call__(self, argument: Any) -> Any:
        kwargs = {self._argument_name: argument}
        if self._wants_context:
            kwargs["context"] = InvocationContext(str(uuid.uuid4()), self.name, self._directory)
        if self._is_async:
            return await self._function(**kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor, functools.partial(self._function, **kwargs)
        )
        if inspect.isawaitable(result):  # a plain function wrapping a coroutine function
            result = await result
        return result


# ---------------------------------------------------------------- HTTP routes


def _int_between(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return bool(re.fullmatch(r"-?\d+", value)) and low <= int(value) <= high

    return check


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": _int_between(-(2**31), 2**31 - 1),
    "long": _int_between(-(2**63), 2**63 - 1),
    "bool": lambda value: value.lower() in ("true", "false"),
    "guid": _is_guid,
    "alpha": lambda value: bool(re.fullmatch(r"[A-Za-z]+", value)),
    "datetime": _is_datetime,
    "decimal": _is_number,
    "double": _is_number,
    "float": _is_number,
    "required": lambda value: value != "",
}


def route_constraint(spec: str) -> Callable[[str], bool]:
    """One ASP.NET inline route constraint (`int`, `guid`, `min(1)`, `regex(...)`, ...)."""
    name, paren, argument = spec.partition("(")
    name = name.strip().lower()
    if not paren:
        if name not in _SIMPLE_CONSTRAINTS:
            raise ValueError(f"unknown route constraint {spec!r}")
        return _SIMPLE_CONSTRAINTS[name]
    if not argument.endswith(")"):
        raise ValueError(f"route constraint {spec!r} lacks its closing parenthesis")
    argument = argument[:-1]
    if name == "regex":
        # ASP.NET matches regex constraints case-insensitively and unanchored.
        pattern = re.compile(argument, re.IGNORECASE)
        return lambda value: pattern.search(value) is not None
    numbers = [int(part) for part in argument.split(",")]
    if name == "min" and len(numbers) == 1:
        return _int_between(numbers[0], 2**63 - 1)
    if name == "max" and len(numbers) == 1:
        return _int_between(-(2**63), numbers[0])
    if name == "range" and len(numbers) == 2:
        return _int_between(numbers[0], numbers[1])
    if name == "minlength" and len(numbers) == 1:
        return lambda value: len(value) >= numbers[0]
    if name == "maxlength" and len(numbers) == 1:
        return lambda value: len(value) <= numbers[0]
    if name == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda value: low <= len(value) <= high
    raise ValueError(f"unknown route constraint {spec!r}")


@dataclass(frozen=True)
class RouteParameter:
    name: str
    constraints: tuple[Callable[[str], bool], ...]
    optional: bool
    catch_all: bool
    default: str | None


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside parentheses (a regex constraint may contain it)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_parameter(token: str) -> RouteParameter:
    text = token
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    if optional:
        text = text[:-1]
    text, *default = _split_top_level(text, "=")
    name, *constraints = _split_top_level(text, ":")
    if not name:
        raise ValueError(f"route parameter {{{token}}} has no name")
    return RouteParameter(
        name=name,
        constraints=tuple(route_constraint(spec) for spec in constraints),
        optional=optional,
        catch_all=catch_all,
        default="=".join(default) if default else None,
    )


def _parse_segment(segment: str) -> list[str | RouteParameter]:
    """A template segment as literal text and parameters; `{{` and `}}` are literal braces."""
    parts: list[str | RouteParameter] = []
    literal, index = "", 0
    while index < len(segment):
        char = segment[index]
        if segment.startswith(("{{", "}}"), index):
            literal += char
            index += 2
        elif char == "{":
            depth, end = 0, index + 1
            while end < len(segment) and not (segment[end] == "}" and depth == 0):
                depth += {"(": 1, ")": -1}.get(segment[end], 0)
                end += 1
            if end == len(segment):
                raise ValueError(f"unclosed {{ in route segment {segment!r}")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(_parse_parameter(segment[index + 1 : end]))
            index = end + 1
        else:
            literal += char
            index += 1
    if literal:
        parts.append(literal)
    return parts


class RouteTemplate:
    """An ASP.NET Core route template compiled once to a regular expression.

    Literals match case-insensitively; `{name}`, `{name:constraint}`, `{name?}`,
    `{name=default}` and `{*rest}` as in ASP.NET. A trailing slash is ignored.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        text = template.removeprefix("~").strip("/")
        self.segments = [_parse_segment(segment) for segment in text.split("/")] if text else []
        self.parameters: list[RouteParameter] = []
        pattern = ""
        for parts in self.segments:
            if len(parts) == 1 and isinstance(parts[0], RouteParameter):
                parameter = parts[0]
                group = f"(?P<p{len(self.parameters)}>{'.*' if parameter.catch_all else '[^/]+'})"
                self.parameters.append(parameter)
                skippable = (
                    parameter.optional or parameter.catch_all or parameter.default is not None
                )
                pattern += f"(?:/{group})?" if skippable else f"/{group}"
                continue
            pattern += "/"
            for part in parts:
                if isinstance(part, str):
                    pattern += re.escape(part)
                else:
                    pattern += f"(?P<p{len(self.parameters)}>[^/]+?)"
                    self.parameters.append(part)
        self._regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a percent-encoded path, or None when it does not match."""
        found = self._regex.match(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for parameter, raw in zip(self.parameters, found.groups(), strict=True):
            if raw is None or (raw == "" and parameter.catch_all):
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                continue
            value = unquote(raw)
            for check in parameter.constraints:
                if not check(value):
                    return None
            values[parameter.name] = value
        return values


def compare_routes(left: RouteTemplate, right: RouteTemplate) -> int:
    """The Functions host's route order (WebJobsRouteBuilder.RouteComparison).

    Segment by segment: a literal before a parameter, a parameter with more constraints
    before one with fewer, literals alphabetically (ignoring case); then longer first.
    """
    for index, left_parts in enumerate(left.segments):
        if index >= len(right.segments):
            return -1
        mine, theirs = left_parts[0], right.segments[index][0]
        if isinstance(mine, str) != isinstance(theirs, str):
            return -1 if isinstance(mine, str) else 1
        if isinstance(mine, RouteParameter) and isinstance(theirs, RouteParameter):
            if len(mine.constraints) != len(theirs.constraints):
                return -1 if len(mine.constraints) > len(theirs.constraints) else 1
        elif isinstance(mine, str) and isinstance(theirs, str):
            mine_key, theirs_key = mine.upper(), theirs.upper()
            if mine_key != theirs_key:
                return -1 if mine_key < theirs_key else 1
    return 1 if len(right.segments) > len(left.segments) else 0


@dataclass(frozen=True)
class Route(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: T


class Router(Generic[T]):
    """Finds the target for a method and path; routes are ordered and filtered once, here."""

    def __init__(self, routes: Iterable[Route[T]]) -> None:
        def order(left: Route[T], right: Route[T]) -> int:
            return compare_routes(left.template, right.template)

        ordered = sorted(routes, key=functools.cmp_to_key(order))
        self.routes = ordered
        named = {method for route in ordered for method in route.methods or ()}
        self._by_method = {
            method: [r for r in ordered if r.methods is None or method in r.methods]
            for method in named
        }
        self._any_method = [route for route in ordered if route.methods is None]

    def match(self, method: str, path: str) -> tuple[T, dict[str, str]] | None:
        # A method that no route lists can still reach routes that take every method.
        for route in self._by_method.get(method, self._any_method):
            values = route.template.match(path)
            if values is not None:
                return route.target, values
        return None


def _join_repeated(pairs: Iterable[tuple[str, str]], lower: bool = False) -> dict[str, str]:
    """Repeated names joined with a comma, as the Functions host hands them to the worker."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        if lower:
            name = name.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


# aiohttp sets these from the body it sends.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})


def to_web_response(result: Any) -> web.Response:
    """An HTTP function's return value as an aiohttp response (the worker's conversion)."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str):
        return web.Response(
            status=200,
            body=result.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    if "Content-Type" not in headers:
        mimetype = result.mimetype
        headers["Content-Type"] = (
            f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        )
    return web.Response(status=result.status_code, body=result.get_body(), headers=headers)


# ---------------------------------------------------------------- queue triggers


@dataclass(eq=False)  # identity: the same message can be received again after its lease
class _Lease:
    """A received message's pop receipt, renewed while its function runs."""

    message_id: str
    pop_receipt: str
    leased_at: float
    settling: bool = False
    renewal: asyncio.Task[None] | None = None


class QueueListener:
    """One queue trigger, with the WebJobs queue listener's semantics.

    Receives up to `batchSize` messages when no more than `newBatchThreshold` are in
    flight; polls again at once while there is work and backs off exponentially (100 ms up
    to `maxPollingInterval`) while the queue is empty. A success deletes the message; a
    failure makes it visible again after `visibilityTimeout`, or moves it to
    `<queue>-poison` once it has been dequeued `maxDequeueCount` times.
    """

    def __init__(
        self,
        invoker: FunctionInvoker,
        queue: QueueClient,
        poison: QueueClient,
        options: QueueOptions,
        lease: float = DEFAULT_MESSAGE_LEASE,
    ) -> None:
        self.invoker = invoker
        self.queue = queue
        self.poison = poison
        self.options = options
        self._lease = max(1, math.ceil(lease))
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: set[_Lease] = set()
        self._capacity = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._poison_exists = False
        self._poller: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.queue.create_queue()
        self._poller = asyncio.create_task(self._poll(), name=f"poll {self.queue.queue_name}")
        self._keeper = asyncio.create_task(self._keep_leases())

    def stop_polling(self) -> None:
        self._stopping = True
        if self._poller is not None:
            # A receive in progress is safe to abandon: its messages reappear after the lease.
            self._poller.cancel()

    async def drain(self, grace: float) -> None:
        """Wait (bounded) for invocations in flight, then close the clients."""
        self.stop_polling()
        if self._poller is not None:
            await asyncio.wait([self._poller])
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                log.warning("%s: abandoning a running invocation at stop", self.invoker.name)
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait([self._keeper])
        await self.queue.close()
        await self.poison.close()

    async def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL
        while not self._stopping:
            if len(self._tasks) > self.options.new_batch_threshold:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            # Cleared before receiving, so a release during the receive still wakes us.
            self._wake.clear()
            try:
                messages = await self._receive()
            except Exception:
                log.warning("%s: receive failed; retrying", self.invoker.name, exc_info=True)
                messages = []
            if messages:
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    task = asyncio.create_task(self._process(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                delay = MIN_POLLING_INTERVAL  # a released message is visible again
            except TimeoutError:
                delay = min(delay * 2, self.options.max_polling_interval)

    async def _receive(self) -> list[StorageQueueMessage]:
        pages = self.queue.receive_messages(
            messages_per_page=self.options.batch_size, visibility_timeout=self._lease
        ).by_page()
        async for page in pages:
            return [message async for message in page]
        return []

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) <= self.options.new_batch_threshold:
            self._capacity.set()

    async def _process(self, message: StorageQueueMessage) -> None:
        lease = _Lease(message.id, message.pop_receipt or "", time.monotonic())
        self._leases.add(lease)
        try:
            await self._handle(message, lease)
        except Exception:
            # Settling failed (storage down, lease lost): the message comes back by itself.
            log.warning(
                "%s: could not settle message %s", self.invoker.name, message.id, exc_info=True
            )
        finally:
            self._leases.discard(lease)

    def _decode(self, content: Any) -> bytes:
        text = "" if content is None else str(content)
        if self.options.message_encoding == "base64":
            return base64.b64decode(text, validate=True)
        return text.encode("utf-8")

    async def _handle(self, message: StorageQueueMessage, lease: _Lease) -> None:
        limit = self.options.max_dequeue_count
        if message.dequeue_count is not None and message.dequeue_count > limit:
            # Left over from a host that stopped before it could move it.
            await self._move_to_poison(
                message, lease, f"it was dequeued {message.dequeue_count} times"
            )
            return
        try:
            body = self._decode(message.content)
        except ValueError:
            await self._move_to_poison(message, lease, "its content is not valid base64")
            return
        argument = QueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        try:
            await self.invoker(argument)
        except Exception:
            log.exception(
                "%s failed on message %s (dequeue count %s)",
                self.invoker.name,
                message.id,
                message.dequeue_count,
            )
            if (message.dequeue_count or 0) >= limit:
                await self._move_to_poison(message, lease, f"it failed {limit} times")
            else:
                await self._release(lease)
            return
        await self._settle(lease)
        await self.queue.delete_message(lease.message_id, lease.pop_receipt)

    async def _settle(self, lease: _Lease) -> None:
        """Stop renewing the lease; wait for a renewal in progress so its receipt is current."""
        lease.settling = True
        if lease.renewal is not None:
            await asyncio.wait([lease.renewal])

    async def _release(self, lease: _Lease) -> None:
        await self._settle(lease)
        delay = math.ceil(self.options.visibility_timeout)
        await self.queue.update_message(
            lease.message_id, pop_receipt=lease.pop_receipt, visibility_timeout=delay
        )
        # Poll again when it is visible, rather than after the empty-queue back-off.
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _move_to_poison(self, message: StorageQueueMessage, lease: _Lease, why: str) -> None:
        if not self._poison_exists:
            with contextlib.suppress(ResourceExistsError):
                await self.poison.create_queue()
            self._poison_exists = True
        await self.poison.send_message(message.content)
        await self._settle(lease)
        await self.queue.delete_message(lease.message_id, lease.pop_receipt)
        log.error(
            "%s: message %s moved to queue %r because %s",
            self.invoker.name,
            message.id,
            self.poison.queue_name,
            why,
        )

    async def _keep_leases(self) -> None:
        # Each lease is renewed between a quarter and half of its length after it was taken.
        period = self._lease / 4
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for lease in list(self._leases):
                due = now - lease.leased_at >= period
                if due and not lease.settling and lease.renewal is None:
                    lease.renewal = asyncio.create_task(self._renew(lease))

    async def _renew(self, lease: _Lease) -> None:
        try:
            receipt = await self.queue.update_message(
                lease.message_id, pop_receipt=lease.pop_receipt, visibility_timeout=self._lease
            )
            lease.pop_receipt = receipt.pop_receipt or lease.pop_receipt
            lease.leased_at = time.monotonic()
        except Exception:
            log.warning("could not renew message %s", lease.message_id, exc_info=True)
        finally:
            lease.renewal = None


# ---------------------------------------------------------------- timers


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TimerTrigger:
    """One timer trigger: runs its function at each occurrence, never two at once.

    As in the WebJobs timer listener, the next occurrence is computed after an invocation
    ends, so a run longer than the period skips occurrences rather than piling them up.
    """

    def __init__(
        self,
        invoker: FunctionInvoker,
        schedule: CronSchedule | IntervalSchedule,
        run_on_startup: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.invoker = invoker
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._invoking = False
        self._stopping = False
        self._last: datetime | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timer {self.invoker.name}")

    async def stop(self, grace: float) -> None:
        if self._task is None:
            return
        self._stopping = True
        if self._invoking:
            await asyncio.wait([self._task], timeout=grace)
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        if self.run_on_startup:
            await self._invoke(scheduled=self._clock())
        while not self._stopping:
            due = self.schedule.next_after(self._clock())
            # The loop's clock and the wall clock can disagree a little: never fire early.
            while (remaining := (due - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(remaining)
            await self._invoke(scheduled=due)

    async def _invoke(self, scheduled: datetime) -> None:
        now = self._clock()
        status = {
            "Last": (self._last or now).isoformat(),
            "Next": self.schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = TimerRequest(
            past_due=now - scheduled > PAST_DUE_AFTER,
            schedule_status=status,
            schedule={"AdjustForDST": True},
        )
        self._invoking = True
        try:
            await self.invoker(request)
        except Exception:
            log.exception("%s failed; the timer goes on", self.invoker.name)
        finally:
            self._invoking = False
            self._last = now


# ---------------------------------------------------------------- the host


def _plain(value: Any) -> Any:
    """Binding values with enums as their strings (the decorators keep some as enums)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class _QueueBinding:
    invoker: FunctionInvoker
    queue_name: str
    connection: str


@dataclass(frozen=True)
class _TimerBinding:
    invoker: FunctionInvoker
    schedule: CronSchedule | IntervalSchedule
    run_on_startup: bool


class LocalHost:
    """Serves one FunctionApp: HTTP on `host:port`, and (unless `triggers=False`) its queue
    triggers and timers.

    Functions are indexed in the constructor, so a bad route, schedule or missing
    `%SETTING%` fails at once, as indexing does in the Functions host. `port=0` binds a
    free port; `url` tells which.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        storage_connection_string: str | None = None,
        host_json: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 7071,
        triggers: bool = True,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        message_lease: float = DEFAULT_MESSAGE_LEASE,
        stop_timeout: float = 30.0,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._storage = storage_connection_string
        self._host_json = dict(host_json or {})
        self._host = host
        self._port = port
        self._triggers = triggers
        self._clock = clock
        self._message_lease = message_lease
        self._stop_timeout = stop_timeout
        self._queue_options = QueueOptions.from_host_json(self._host_json)
        threads = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=int(threads) if threads else None, thread_name_prefix="function"
        )
        routes: list[Route[FunctionInvoker]] = []
        self._queue_bindings: list[_QueueBinding] = []
        self._timer_bindings: list[_TimerBinding] = []
        prefix = route_prefix(self._host_json).strip("/")
        for function in indexed_functions(app):
            self._index(function, prefix, routes)
        self.router = Router(routes)
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerTrigger] = []
        self._runner: web.ServerRunner | None = None
        self._bound_port: int | None = None
        self._started = False

    def _index(self, function: Any, prefix: str, routes: list[Route[FunctionInvoker]]) -> None:
        name = function.get_function_name()
        trigger = {
            key: _plain(value) for key, value in function.get_trigger().get_dict_repr().items()
        }
        kind = trigger["type"]
        invoker = FunctionInvoker(
            name, function.get_user_function(), trigger["name"], self._executor
        )
        for binding in function.get_bindings():
            extra = binding.get_dict_repr()
            if extra["name"] not in (trigger["name"], "$return"):
                log.warning(
                    "%s: binding %s (%s) is not supported here", name, extra["name"], extra["type"]
                )
        if kind == "httpTrigger":
            route = trigger.get("route") or name
            template = RouteTemplate(f"{prefix}/{route}" if prefix else route)
            methods = trigger.get("methods")
            allowed = frozenset(str(method).upper() for method in methods) if methods else None
            routes.append(Route(template, allowed, invoker))
        elif not self._triggers:
            return
        elif kind == "queueTrigger":
            queue_name = resolve_setting_references(trigger["queueName"], self._environ)
            connection = trigger.get("connection") or DEFAULT_STORAGE_SETTING
            self._queue_bindings.append(_QueueBinding(invoker, queue_name, connection))
        elif kind == "timerTrigger":
            schedule = parse_schedule(
                resolve_setting_references(trigger["schedule"], self._environ)
            )
            schedule.next_after(self._clock())  # a schedule that never occurs fails here
            run_on_startup = bool(trigger.get("runOnStartup"))
            self._timer_bindings.append(_TimerBinding(invoker, schedule, run_on_startup))
        else:
            log.warning("%s: %s triggers are not supported here; skipped", name, kind)

    def _connection_string(self, setting: str) -> str:
        if setting == DEFAULT_STORAGE_SETTING and self._storage:
            return self._storage
        for name in (setting, f"AzureWebJobs{setting}"):
            value = self._environ.get(name)
            if value:
                return value
        raise LookupError(f"storage connection setting {setting!r} is not set")

    def _queue_client(self, connection: str, queue_name: str) -> QueueClient:
        return QueueClient.from_connection_string(
            self._connection_string(connection),
            queue_name,
            # Our poll loop retries on its own: keep the SDK's retries short (default: 15 s+).
            initial_backoff=1,
            increment_base=2,
            retry_total=3,
            # Proxy and .netrc lookups cost two thread hops per request in aiohttp.
            use_env_settings=False,
        )

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._bound_port or self._port}"

    async def start(self) -> None:
        """Start triggers, then HTTP: once the port answers, the triggers are running."""
        if self._started:
            raise RuntimeError("this LocalHost has already been started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        for queue in self._queue_bindings:
            listener = QueueListener(
                queue.invoker,
                self._queue_client(queue.connection, queue.queue_name),
                self._queue_client(queue.connection, f"{queue.queue_name}-poison"),
                self._queue_options,
                self._message_lease,
            )
            self.listeners.append(listener)
            await listener.start()
        for timer in self._timer_bindings:
            trigger = TimerTrigger(timer.invoker, timer.schedule, timer.run_on_startup, self._clock)
            self.timers.append(trigger)
            trigger.start()
        loop = asyncio.get_running_loop()

        def make_request(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> web.BaseRequest:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=MAX_REQUEST_BODY
            )

        server = web.Server(self._handle, request_factory=make_request, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=self._stop_timeout)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._bound_port = int(self._runner.addresses[0][1])
        self._log_functions()

    def _log_functions(self) -> None:
        lines = [f"Local Functions host on {self.url}"]
        for route in self.router.routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            lines.append(f"  {route.target.name}: [{methods}] {self.url}/{route.template.template}")
        for listener in self.listeners:
            lines.append(f"  {listener.invoker.name}: queueTrigger {listener.queue.queue_name}")
        for timer in self.timers:
            lines.append(f"  {timer.invoker.name}: timerTrigger {timer.schedule}")
        log.info("\n".join(lines))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        found = self.router.match(request.method, request.raw_path.partition("?")[0])
        if found is None:
            return web.Response(status=404)
        invoker, route_params = found
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_join_repeated(request.headers.items(), lower=True),
            params=_join_repeated(request.query.items()),
            route_params=route_params,
            body=await request.read(),
        )
        try:
            return to_web_response(await invoker(http_request))
        except Exception:
            # As in Azure: a bare 500; the trace goes to the log, never to the client.
            log.exception("%s failed: %s %s", invoker.name, request.method, request.path)
            return web.Response(status=500)

    async def stop(self) -> None:
        """Stop taking work, let what runs finish (bounded by stop_timeout), close clients."""
        for listener in self.listeners:
            listener.stop_polling()
        closing = [listener.drain(self._stop_timeout) for listener in self.listeners]
        closing += [timer.stop(self._stop_timeout) for timer in self.timers]
        if self._runner is not None:
            closing.append(self._runner.cleanup())
        results = await asyncio.gather(*closing, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("error while stopping", exc_info=result)
        self.listeners.clear()
        self.timers.clear()
        self._runner = None
        # A plain function still running in a thread cannot be interrupted; do not wait for it.
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> LocalHost:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(
    app: func.FunctionApp, *, host: str, port: int, stop_event: asyncio.Event, **options: Any
) -> None:
    """Run `app` until `stop_event` is set, then stop gracefully. Options as for LocalHost."""
    async with LocalHost(app, host=host, port=port, **options):
        await stop_event.wait()


# ---------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.host", description="Run the function app without Core Tools."
    )
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: Host.LocalHttpPort, else 7071")
    parser.add_argument("--no-triggers", action="store_true", help="serve HTTP functions only")
    parser.add_argument(
        "--settings",
        type=Path,
        help="settings file (default: local.settings.json, else local.settings.sample.json)",
    )
    parser.add_argument("--host-json", type=Path, default=Path("host.json"))
    parser.add_argument(
        "--message-lease",
        type=float,
        default=DEFAULT_MESSAGE_LEASE,
        help="seconds a received queue message stays hidden while its function runs",
    )
    parser.add_argument("--stop-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(app: func.FunctionApp, args: argparse.Namespace, port: int) -> None:
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting without waiting")
            os._exit(1)
        log.info("stopping (waiting up to %ss for running functions)", args.stop_timeout)
        stop_event.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    await serve(
        app,
        host=args.host,
        port=port,
        stop_event=stop_event,
        storage_connection_string=os.environ.get(DEFAULT_STORAGE_SETTING),
        host_json=load_host_json(args.host_json),
        triggers=not args.no_triggers,
        message_lease=args.message_lease,
        stop_timeout=args.stop_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The storage SDK logs every request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = load_local_settings(args.settings)
    port = args.port or int(settings.get("Host", {}).get("LocalHttpPort", 7071))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = load_app(args.app)
    asyncio.run(_run(app, args, port))
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
