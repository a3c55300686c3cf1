"""`python -m local.host` as a child process, for tests and benchmarks that need a real
process: one they can kill, or one that does not share their interpreter."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from local.azurite import ROOT, free_port


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
