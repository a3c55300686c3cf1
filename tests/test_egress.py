"""Connect to what was checked (issue 23, finding 1: DNS rebinding).

A DNS we control answers a permitted address on the first lookup and a refused one (loopback,
where a listener waits) on the next. The Service Bus and blob clients must connect to the
address of the one lookup that was checked, never look the name up again, and still check
the name (not the address) in TLS. Certificates here are our own (a listener's, trusted by
the guard's `ca_file` knob): Azure's cannot be tested here, but the same context, with the
SDK's own roots (certifi), is what production connects with (last test)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.dispatch import outgoing
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.isolation import Deadline
from shared.dispatch.servicebus import QueueSender
from shared.endpoints import ConnectGuard, EndpointRefused
from shared.events import new_event
from tests.network import Resolver, listening, server_tls, write_self_signed

KEY = "SharedAccessKeyName=send;SharedAccessKey=S3CRETKEY="
BLOB_KEY = "AccountName=acct;AccountKey=QUNDT1VOVEtFWQ=="
CHECKED, REBOUND = "127.0.0.2", "127.0.0.1"  # "localhost" resolves to the second by itself


def not_rebound(address: str) -> bool:
    """The test's rule: the first answer is fine, the rebound one (loopback) is not."""
    return address != REBOUND


def a_message() -> outgoing.Outgoing:
    event = new_event("acct", "Employee.Created", datetime.now(UTC), data={"N": 1})
    return outgoing.build(event, uuid.uuid4(), "Full", is_retry=False)


async def test_service_bus_connects_to_the_address_it_checked_not_a_second_lookup() -> None:
    async with listening(CHECKED) as checked, listening(REBOUND, checked.port) as rebound:
        dns = Resolver(CHECKED, REBOUND)
        guard = ConnectGuard(allow_local=False, resolve=dns, permitted=not_rebound)
        cs = f"Endpoint=sb://localhost:{checked.port}/;{KEY};UseDevelopmentEmulator=true"
        sender = QueueSender(cs, "q", guard)
        with pytest.raises(Exception):  # noqa: B017  # the listener speaks no AMQP
            await sender.send(a_message(), Deadline(5))
        await sender.close()
    assert rebound.received == []
    assert checked.received and checked.received[0].startswith(b"AMQP")
    assert dns.asked == ["localhost"]


async def test_blob_uploads_connect_to_the_address_they_checked_not_a_second_lookup() -> None:
    async with listening(CHECKED) as checked, listening(REBOUND, checked.port) as rebound:
        dns = Resolver(CHECKED, REBOUND)
        guard = ConnectGuard(allow_local=False, resolve=dns, permitted=not_rebound)
        store = ClaimCheckStore(guard, {"retry_total": 0})
        blob = f"BlobEndpoint=http://localhost:{checked.port}/acct;{BLOB_KEY}"
        with pytest.raises(Exception):  # noqa: B017  # the listener speaks no HTTP
            await store.upload(blob, "ccc", "name.json", b"{}")
        await store.close()
    assert rebound.received == []
    assert checked.received and checked.received[0].startswith(b"PUT /acct/ccc/name.json")
    assert f"host: localhost:{checked.port}".encode() in checked.received[0].lower()


async def test_a_name_that_rebinds_inward_gets_no_connection_at_all() -> None:
    async with listening(REBOUND) as rebound:
        guard = ConnectGuard(allow_local=False, resolve=Resolver(REBOUND), permitted=not_rebound)
        cs = f"Endpoint=sb://localhost:{rebound.port}/;{KEY};UseDevelopmentEmulator=true"
        sender = QueueSender(cs, "q", guard)
        with pytest.raises(EndpointRefused):
            await sender.send(a_message(), Deadline(5))
        store = ClaimCheckStore(guard, {"retry_total": 0})
        with pytest.raises(EndpointRefused):
            await store.upload(f"BlobEndpoint=http://localhost:{rebound.port}/acct;{BLOB_KEY}",
                               "ccc", "n", b"{}")  # fmt: skip
        await store.close()
    assert rebound.received == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("egress-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert, key, "good.test")
    yield cert, key


@pytest.mark.parametrize(("name", "handshakes"), [("good.test", True), ("bad.test", False)])
async def test_tls_to_service_bus_checks_the_name_not_the_address(
    certificate: tuple[Path, Path], name: str, handshakes: bool
) -> None:
    cert, key = certificate
    async with listening(CHECKED, tls=server_tls(cert, key)) as tls:
        guard = ConnectGuard(
            allow_local=False, resolve=Resolver(CHECKED), permitted=not_rebound, ca_file=str(cert)
        )
        sender = QueueSender(f"Endpoint=sb://{name}:{tls.port}/;{KEY}", "q", guard)
        with pytest.raises(Exception) as failed:  # no AMQP peer behind TLS
            await sender.send(a_message(), Deadline(5))
        await sender.close()
    # the listener hears only connections whose handshake passed: then the AMQP header
    assert bool(tls.received) == handshakes, failed.value
    assert all(r.startswith(b"AMQP") for r in tls.received)


@pytest.mark.parametrize(("name", "handshakes"), [("good.test", True), ("bad.test", False)])
async def test_tls_to_blob_storage_checks_the_name_not_the_address(
    certificate: tuple[Path, Path], name: str, handshakes: bool
) -> None:
    cert, key = certificate
    async with listening(CHECKED, tls=server_tls(cert, key)) as tls:
        guard = ConnectGuard(allow_local=False, resolve=Resolver(CHECKED), permitted=not_rebound)
        store = ClaimCheckStore(guard, {"retry_total": 0, "connection_verify": str(cert)})
        with pytest.raises(Exception) as failed:  # no HTTP server behind TLS
            await store.upload(f"BlobEndpoint=https://{name}:{tls.port}/acct;{BLOB_KEY}",
                               "ccc", "n", b"{}")  # fmt: skip
        await store.close()
    assert bool(tls.received) == handshakes, failed.value
    assert all(r.startswith(b"PUT ") for r in tls.received)


def test_production_tls_verifies_the_name_against_the_sdks_roots() -> None:
    context: Any = ConnectGuard().tls_context("contoso.servicebus.windows.net")
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 50  # certifi's roots, as the SDK loads
    assert context.server_name == "contoso.servicebus.windows.net"
