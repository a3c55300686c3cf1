"""The command line's small manners (issue 26): Ctrl-C and an unknown event key. The storage
here is a silent socket (it accepts and never answers): what is tested happens before any
answer, so no Azurite is needed."""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.crypto import KeyRing
from tests.factories import ROOT, cli


@pytest.fixture
def silent_storage() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A listener that accepts connections and never answers, and the settings naming it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{account};"
        f"QueueEndpoint=http://127.0.0.1:{port}/{account};"
        f"TableEndpoint=http://127.0.0.1:{port}/{account};"
    )
    env = {"AzureWebJobsStorage": connection_string, "ENCRYPTION_KEYS": KeyRing.new_key_spec("t")}
    with listener:
        yield listener, env


def as_from_a_terminal() -> None:
    """Ctrl-C as a shell delivers it: SIGINT neither ignored nor blocked, whatever the test
    worker that starts the CLI inherited or set (a child keeps both across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_closes_the_clients_quietly(
    silent_storage: tuple[socket.socket, dict[str, str]],
) -> None:
    listener, env = silent_storage
    command = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "apikey", "list", "--account", "a"],
        cwd=ROOT,
        # PYTHONFAULTHANDLER: should it hang, SIGABRT prints where each thread waits.
        env={**os.environ, **env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    listener.settimeout(60)
    connection, _ = listener.accept()  # the CLI is now waiting on storage: interrupt it
    with connection:
        command.send_signal(signal.SIGINT)
        try:
            _, stderr = command.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            command.send_signal(signal.SIGABRT)
            _, stderr = command.communicate()
            pytest.fail(f"the CLI ignored Ctrl-C; where it waited:\n{stderr[-4000:]}")
    assert command.returncode == 130
    assert "Unclosed" not in stderr and "Traceback" not in stderr
    assert "interrupted" in stderr


@pytest.mark.parametrize("key", ["Order.Nonexistent", "Order.*", "*"])
def test_event_publish_refuses_a_key_outside_the_catalog_as_the_api_does(
    silent_storage: tuple[socket.socket, dict[str, str]], key: str
) -> None:
    _, env = silent_storage
    result = cli(env, "event", "publish", "--account", "a", "--key", key)
    assert result.returncode == 2
    assert "EventKey: not an event key or pattern of the catalog" in result.stderr
