"""The local Functions host for tests: in a background thread, or as a process a test can kill.

    def test_x(local_host_factory):
        host = local_host_factory(app, host_json={...})      # ThreadedHost
        ... host.url ...

    def test_y(local_host_process_factory):
        proc = local_host_process_factory("tests.apps.sample_app:app", env={...})
        ... proc.url ... proc.kill() ...

Both stop what they started at the end of the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from local.host.config import load_host_json
from local.host.server import LocalHost
from local.process import HostProcess, start_host_process

ROOT = Path(__file__).resolve().parents[2]
# The project's own host.json (as `python -m local.host` reads it), else no `api/` prefix.
DEFAULT_HOST_JSON: dict[str, Any] = load_host_json(ROOT / "host.json") or {
    "extensions": {"http": {"routePrefix": ""}}
}


class ThreadedHost:
    """A LocalHost running on its own event loop in a daemon thread."""

    def __init__(self, host: LocalHost, start_timeout: float = 30.0) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="local-host", daemon=True
        )
        self._thread.start()
        try:
            self._call(host.start(), start_timeout)
        except BaseException:
            self._close_loop()
            raise
        self.url = host.url
        self._stopped = False

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._call(self.host.stop(), timeout)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def start_threaded_host(
    app: func.FunctionApp,
    storage_connection_string: str,
    *,
    host_json: Mapping[str, Any] | None = None,
    **options: Any,
) -> ThreadedHost:
    """Start `app` on a free port; options as for LocalHost (triggers, environ, stop_timeout...).

    `host_json` defaults to the project's host.json.
    """
    host = LocalHost(
        app,
        storage_connection_string=storage_connection_string,
        host_json=DEFAULT_HOST_JSON if host_json is None else host_json,
        port=0,
        **options,
    )
    return ThreadedHost(host)


@pytest.fixture
def local_host_factory(
    storage_connection_string: str,
) -> Iterator[Callable[..., ThreadedHost]]:
    """Start a function app in this process: `factory(app, host_json=..., **LocalHost options)`."""
    started: list[ThreadedHost] = []

    def start(app: func.FunctionApp, **options: Any) -> ThreadedHost:
        host = start_threaded_host(app, storage_connection_string, **options)
        started.append(host)
        return host

    yield start
    for host in reversed(started):
        host.stop()


@pytest.fixture
def local_host_process_factory(
    storage_connection_string: str,
) -> Iterator[Callable[..., HostProcess]]:
    """Start `python -m local.host` against the test Azurite: `factory("module:app", env=...)`."""
    started: list[HostProcess] = []

    def start(
        app_reference: str, *, env: Mapping[str, str] | None = None, **options: Any
    ) -> HostProcess:
        environment = {"AzureWebJobsStorage": storage_connection_string, **(env or {})}
        process = start_host_process(app_reference, env=environment, **options)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.kill()
        process.log_path.unlink(missing_ok=True)
