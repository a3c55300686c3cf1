"""Start Azurite (tables, queues, blobs) from the project's npm install, on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Until something listens on the port; ChildProcessError as soon as `process`, the one
    meant to listen there, has ended (e.g. its port was taken meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise ChildProcessError(
                    f"the process for {host}:{port} exited with {process.returncode}"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    base = f"http://{host}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint={base}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint={base}:{table_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running Azurite process; `stop()` ends it and removes its temporary folder."""

    process: subprocess.Popen[bytes]
    host: str
    blob_port: int
    queue_port: int
    table_port: int
    workdir: Path
    owns_workdir: bool

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_azurite(
    host: str = "127.0.0.1",
    ports: tuple[int, int, int] | None = None,
    in_memory: bool = True,
    location: Path | None = None,
    quiet: bool = True,
    extra_args: Sequence[str] = (),
) -> Azurite:
    """Start Azurite; ports are (blob, queue, table), free ones when not given; `extra_args`
    e.g. `--oauth basic --cert ... --key ...` (HTTPS and bearer tokens)."""
    if not AZURITE_BIN.exists():
        raise FileNotFoundError(f"{AZURITE_BIN} is missing: run `npm ci` first")

    def start() -> Azurite:
        chosen = ports or (free_port(host), free_port(host), free_port(host))
        blob_port, queue_port, table_port = chosen
        owns = location is None
        workdir = location or Path(tempfile.mkdtemp(prefix="azurite-"))
        workdir.mkdir(parents=True, exist_ok=True)  # also holds the debug log when not in memory
        args = [
            str(AZURITE_BIN),
            "--blobHost",
            host,
            "--blobPort",
            str(blob_port),
            "--queueHost",
            host,
            "--queuePort",
            str(queue_port),
            "--tableHost",
            host,
            "--tablePort",
            str(table_port),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]
        # Azurite refuses --location together with --inMemoryPersistence.
        args += ["--inMemoryPersistence"] if in_memory else ["--location", str(workdir)]
        if quiet:
            args.append("--silent")
        args += extra_args
        process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            cwd=workdir,
        )
        azurite = Azurite(process, host, blob_port, queue_port, table_port, workdir, owns)
        try:
            for port in (blob_port, queue_port, table_port):
                # Loading saved state on a loaded 2-core machine took over 30 s once (CI).
                wait_for_port(host, port, timeout=90.0, process=process)
        except BaseException:
            azurite.stop()
            raise
        return azurite

    return picked_again(start, ports is None)


def picked_again(start: Callable[[], T], picked: bool) -> T:
    """`start()`; when it picks its free ports itself (`picked`), again, twice at most, if the
    process meant to listen there ended first (ChildProcessError): a free port can be taken
    before the process binds it (any outgoing connection may get it as its local port)."""
    for _ in range(2 if picked else 0):
        with contextlib.suppress(ChildProcessError):
            return start()
    return start()
