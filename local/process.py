"""`python -m local.host` and `python -m local.servicebus` as child processes, for tests and
benchmarks that need a real process: one they can kill, or one that does not share their
interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from local.azurite import ROOT, free_port, picked_again, wait_for_port
from local.servicebus.emulator import DEFAULT_KEY, KEY_NAME


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


def start_host_process(
    app_reference: str,
    *,
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    cwd: Path = ROOT,
    timeout: float = 30.0,
) -> HostProcess:
    """Run `python -m local.host --app <app_reference>` on `port` (a free one if None) and
    wait until its HTTP port answers.

    The host starts its triggers before HTTP, so a listening port means they run too. `env`
    adds to (and overrides) this process's environment.
    """

    def start() -> HostProcess:
        on = port or free_port()
        command = [sys.executable, "-m", "local.host", "--app", app_reference, "--port", str(on)]
        with tempfile.NamedTemporaryFile(prefix="local-host-", suffix=".log", delete=False) as log:
            process = subprocess.Popen(
                [*command, *args],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = HostProcess(process, f"http://127.0.0.1:{on}", Path(log.name))
        try:
            wait_for_port("127.0.0.1", on, timeout, process)
        except BaseException as error:
            started.kill()
            output = started.output()
            started.log_path.unlink(missing_ok=True)  # said in the error
            kind = ChildProcessError if isinstance(error, ChildProcessError) else RuntimeError
            raise kind(f"{error}\n--- host output ---\n{output}") from error
        return started

    return picked_again(start, port is None)


@dataclass
class EmulatorProcess:
    """`python -m local.servicebus` as a child process, driven by its standard input."""

    process: subprocess.Popen[str]
    port: int
    data_dir: Path | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName={KEY_NAME};"
            f"SharedAccessKey={DEFAULT_KEY};UseDevelopmentEmulator=true"
        )

    def count(self, queue: str) -> int:
        """How many messages a queue holds (the emulator's `count` command)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"count {queue}\n")
        self.process.stdin.flush()
        value = int(self.process.stdout.readline())
        self.process.stdout.readline()  # "ok count"
        return value

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no goodbye, as when a machine dies."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_emulator_process(
    port: int | None = None, data_dir: Path | None = None, args: Sequence[str] = ()
) -> EmulatorProcess:
    """Run the emulator on `port` (a free one if None), its queues journalled in `data_dir`
    when given, and wait until it listens."""

    def start() -> EmulatorProcess:
        on = port or free_port()
        command = [sys.executable, "-m", "local.servicebus", "--port", str(on), *args]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started = EmulatorProcess(process, on, data_dir)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on"):  # it ended (e.g. its port was taken)
            started.kill()
            raise ChildProcessError(f"the Service Bus emulator did not start: {line!r}")
        return started

    return picked_again(start, port is None)
