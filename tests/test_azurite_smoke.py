import socket

import pytest
from azure.data.tables import TableServiceClient

from local import azurite


def test_azurite_answers_table_calls(storage_connection_string: str) -> None:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    table = service.create_table_if_not_exists("smoke")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": 1})
    assert table.get_entity("p", "r")["Value"] == 1


def test_a_port_taken_before_azurite_binds_it_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A free port may be taken (an outgoing connection's local port) before Azurite binds it:
    Azurite exits at once, and start_azurite notices and starts it on other ports, instead of
    waiting 90 s for a port nothing will listen on (a CI run failed so)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: what an outgoing connection holds
    with taken:
        ports = iter([taken.getsockname()[1]])
        picked = azurite.free_port
        monkeypatch.setattr(azurite, "free_port", lambda host: next(ports, None) or picked(host))
        running = azurite.start_azurite()
        try:
            assert taken.getsockname()[1] != running.blob_port
            TableServiceClient.from_connection_string(running.connection_string).create_table(
                "again"
            )
        finally:
            running.stop()
        with pytest.raises(ChildProcessError):  # ports given: no other ports to pick
            azurite.start_azurite(ports=(taken.getsockname()[1], picked(), picked()))
