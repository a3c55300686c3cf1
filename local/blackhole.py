"""A black hole: a TCP listener on loopback that accepts connections and never answers.

It stands for a customer's endpoint behind a broken (or hostile) firewall: connections
open, then nothing. Tests (tests/plugins/blackhole.py) and bench/bench_isolation.py use it.
"""

from __future__ import annotations

import socket
import threading

from local.azurite import ACCOUNT, ACCOUNT_KEY
from local.servicebus.emulator import DEFAULT_KEY, KEY_NAME


class BlackHole:
    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._accepted: list[socket.socket] = []  # kept open, never read nor written
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    @property
    def connection_string(self) -> str:
        """A Service Bus connection string to the black hole."""
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName={KEY_NAME};"
            f"SharedAccessKey={DEFAULT_KEY};UseDevelopmentEmulator=true"
        )

    @property
    def blob_connection_string(self) -> str:
        """A Storage connection string whose blob endpoint is the black hole."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            self._accepted.append(conn)

    def close(self) -> None:
        self._server.close()
        for conn in self._accepted:
            conn.close()
