"""The host itself: indexes a FunctionApp's functions and serves them (HTTP, queues, timers)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.storage.queue.aio import QueueClient

from local.host.config import (
    DEFAULT_STORAGE_SETTING,
    QueueOptions,
    indexed_functions,
    resolve_setting_references,
    route_prefix,
)
from local.host.http import to_function_request, to_web_response
from local.host.invoke import FunctionInvoker
from local.host.queues import DEFAULT_MESSAGE_LEASE, QueueListener
from local.host.routes import Route, Router, RouteTemplate
from local.host.timers import TimerTrigger, utc_now
from local.ncrontab import CronSchedule, IntervalSchedule, parse_schedule

log = logging.getLogger("local.host")

# The Functions host accepts request bodies up to 100 MB; aiohttp's default is 1 MiB.
MAX_REQUEST_BODY = 100 * 1024 * 1024
# A request line or header this long is still parsed (aiohttp's default is 8190 bytes): the
# API's longest valid URL, the consent callback's bounded parameters percent-encoded at 12
# bytes a character, is about 16 KB, and must reach the app to be answered by its rules.
MAX_LINE_BYTES = 64 * 1024


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
        clock: Callable[[], datetime] = utc_now,
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

        server = web.Server(
            self._handle,
            request_factory=make_request,
            access_log=None,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
        )
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
        http_request = await to_function_request(request, route_params)
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
