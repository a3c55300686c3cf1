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
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from local.azurite import free_port
from local.host import LocalHost, load_host_json

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


@dataclass
class HostProcess:
    """`python -m local.host` as a child process; its output goes to `log_path`."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no graceful stop, as when a machine dies mid-delivery."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the host process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"the host process did not listen on {port} within {timeout}s")


def start_host_process(
    app_reference: str,
    *,
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    cwd: Path = ROOT,
    timeout: float = 30.0,
) -> HostProcess:
    """Run `python -m local.host --app <app_reference>` and wait until its HTTP port answers.

    The host starts its triggers before HTTP, so a listening port means they run too. `env`
    adds to (and overrides) this process's environment.
    """
    port = port or free_port()
    command = [sys.executable, "-m", "local.host", "--app", app_reference, "--port", str(port)]
    with tempfile.NamedTemporaryFile(prefix="local-host-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = HostProcess(process, f"http://127.0.0.1:{port}", Path(log.name))
    try:
        _wait_until_listening(process, port, timeout)
    except BaseException as error:
        started.kill()
        raise RuntimeError(f"{error}\n--- host output ---\n{started.output()}") from error
    return started


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
