"""Outbound endpoints (issue 13): the production rule when a connection is saved, the address
check when a client opens, `***` bound to where the secret goes, and error texts that say
nothing about what listens on a host."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from shared.api.http import ApiError, parse_json
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.errors import classify
from shared.dispatch.isolation import Deadline
from shared.dispatch.servicebus import QueueSender, SenderPool
from shared.endpoints import ConnectGuard, EndpointRefused, is_public, public_message
from shared.models.records import MessageStatus
from shared.services import Services
from shared.settings import Settings, StorageTarget
from tests.factories import PATH, SB, STORAGE, UNVERIFIED, an_event, body, connect
from tests.network import Listener, Resolver, listening
from tests.plugins.app import Api

KEY = "SharedAccessKeyName=send;SharedAccessKey=S3CRETKEY="
STRICT = Settings(storage=StorageTarget("UseDevelopmentStorage=true"), encryption_keys="unused")
LOCAL = replace(STRICT, allow_local_endpoints=True)
BLOB_KEY = "AccountName=contoso;AccountKey=QUNDT1VOVEtFWQ=="


def validate(settings: Settings, **changes: Any) -> dict[str, list[str]]:
    """The API's own body parsing of a connection; the problem's errors (empty if valid)."""
    try:
        parse_json(json.dumps(body(**changes)).encode(), "ConnectionInput", settings)
    except ApiError as e:
        assert e.status == 400
        assert "S3CRETKEY" not in str(e.errors) and "QUNDT1VOVEtFWQ" not in str(e.errors)
        return e.errors or {}
    return {}


REFUSED_SERVICE_BUS = [
    "sb://localhost",
    "sb://127.0.0.1",
    "sb://10.1.2.3",
    "sb://169.254.169.254",
    "sb://[::1]",
    "sb://example.com",
    "sb://x.servicebus.windows.net:5671",
    "sb://2130706433",
    "sb://0x7f000001",
    "sb://127.1",
    "sb://0.0.0.0",
    "sb://a.b.servicebus.windows.net",
    "sb://servicebus.windows.net",
    "sb://contoso.servicebus.windows.net.evil.com",
]


@pytest.mark.parametrize("endpoint", REFUSED_SERVICE_BUS)
def test_the_production_rule_refuses_service_bus_endpoints(endpoint: str) -> None:
    sb = f"Endpoint={endpoint}/;{KEY}"
    errors = validate(STRICT, ServiceBusConnectionString=sb)
    assert list(errors) == ["ServiceBusConnectionString"]
    assert "Endpoint" in errors["ServiceBusConnectionString"][0]


def test_the_production_rule_refuses_the_emulator_flag_and_accepts_azure() -> None:
    emulator = f"Endpoint=sb://contoso.servicebus.windows.net/;{KEY};UseDevelopmentEmulator=true"
    errors = validate(STRICT, ServiceBusConnectionString=emulator)
    assert "UseDevelopmentEmulator" in errors["ServiceBusConnectionString"][0]
    assert validate(STRICT, ServiceBusConnectionString=SB) == {}
    gov = f"Endpoint=sb://contoso.servicebus.usgovcloudapi.net;{KEY}"
    assert validate(STRICT, ServiceBusConnectionString=gov) == {}
    assert validate(LOCAL, ServiceBusConnectionString=emulator) == {}


def test_an_operator_can_add_a_service_bus_suffix() -> None:
    private = f"Endpoint=sb://contoso.sb.example.internal/;{KEY}"
    assert validate(STRICT, ServiceBusConnectionString=private)
    more = replace(STRICT, servicebus_suffixes=(*STRICT.servicebus_suffixes, "sb.example.internal"))
    assert validate(more, ServiceBusConnectionString=private) == {}


REFUSED_STORAGE = {
    "UseDevelopmentStorage=true": "UseDevelopmentStorage",
    f"DefaultEndpointsProtocol=http;{BLOB_KEY};EndpointSuffix=core.windows.net": "https",
    f"{BLOB_KEY};EndpointSuffix=evil.example.com": "EndpointSuffix",
    f"BlobEndpoint=http://contoso.blob.core.windows.net;{BLOB_KEY}": "BlobEndpoint",
    f"BlobEndpoint=https://10.0.0.1/;{BLOB_KEY}": "BlobEndpoint",
    f"BlobEndpoint=https://10.0.0.1:443/devstoreaccount1;{BLOB_KEY}": "BlobEndpoint",
    f"BlobEndpoint=https://contoso.blob.core.windows.net:8443;{BLOB_KEY}": "BlobEndpoint",
    f"BlobEndpoint=https://contoso.blob.core.windows.net/x;{BLOB_KEY}": "BlobEndpoint",
    f"BlobEndpoint=https://contoso.blob.evil.com;{BLOB_KEY}": "BlobEndpoint",
    "BlobEndpoint=https://contoso.blob.core.windows.net/?sv=1&sig=S3CRETKEY=": "query",
    f"BlobEndpoint=https://u:S3CRETKEY=@contoso.blob.core.windows.net;{BLOB_KEY}": "user info",
}


@pytest.mark.parametrize("storage", list(REFUSED_STORAGE))
def test_the_production_rule_refuses_storage_endpoints(storage: str) -> None:
    errors = validate(STRICT, BlobContainerConnectionString=storage)
    assert list(errors) == ["BlobContainerConnectionString"]
    assert REFUSED_STORAGE[storage] in errors["BlobContainerConnectionString"][0]


def test_storage_on_azure_is_accepted() -> None:
    assert validate(STRICT, BlobContainerConnectionString=STORAGE) == {}
    sas = "BlobEndpoint=https://contoso.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x"
    assert validate(STRICT, BlobContainerConnectionString=sas) == {}


@pytest.mark.parametrize("hidden", ["?sv=1&sig=S3CRETKEY=", "#S3CRETKEY="])
def test_a_blob_endpoint_never_carries_a_query_even_locally(hidden: str) -> None:
    storage = f"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1{hidden};{BLOB_KEY}"
    assert list(validate(LOCAL, BlobContainerConnectionString=storage)) == [
        "BlobContainerConnectionString"
    ]


def test_a_mistyped_part_is_named_by_position_not_echoed() -> None:
    sb = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
    errors = validate(LOCAL, ServiceBusConnectionString=sb + "SharedAccessKey:S3CRETKEY=")
    assert "part 3" in errors["ServiceBusConnectionString"][0]


# ------------------------------------------------------------------ connect time


INWARD = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "0.0.0.0",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1%eth0",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("address", INWARD)
async def test_a_name_resolving_inward_is_refused_at_connect_time(address: str) -> None:
    guard = ConnectGuard(allow_local=False, resolve=Resolver(["20.50.1.1", address]))
    with pytest.raises(EndpointRefused):
        await guard.addresses("contoso.servicebus.windows.net", 5671)
    with pytest.raises(EndpointRefused):
        guard.check_literal(address)


async def test_a_public_address_passes_and_local_development_skips_the_check() -> None:
    resolver = Resolver(["20.50.1.1", "2603:1030::1"])
    guard = ConnectGuard(allow_local=False, resolve=resolver)
    assert await guard.addresses("contoso.servicebus.windows.net", 5671) == [
        "20.50.1.1",
        "2603:1030::1",
    ]
    assert await guard.addresses("20.50.1.2", 443) == ["20.50.1.2"]  # a literal: no lookup
    assert resolver.asked == ["contoso.servicebus.windows.net"]
    inward = Resolver("127.0.0.1")
    assert await ConnectGuard(allow_local=True, resolve=inward).addresses("x.test", 1) == [
        "127.0.0.1"
    ]  # resolved once and connected to, not checked
    assert is_public("20.50.1.1") and not is_public("::ffff:192.168.0.1")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with listening() as found:
        yield found


async def test_a_delivery_to_a_name_resolving_inward_fails_as_configuration_with_no_byte_sent(
    services: Services, account: str, listener: Listener
) -> None:
    port = listener.port
    cs = f"Endpoint=sb://127.0.0.1:{port}/;{KEY};UseDevelopmentEmulator=true"
    blob = f"BlobEndpoint=http://127.0.0.1:{port}/acct;{BLOB_KEY}"
    stored = await connect(
        services, account, cs, "q", BlobContainerConnectionString=blob, BlobContainerName="ccc"
    )
    strict = ConnectGuard(allow_local=False, resolve=Resolver("10.0.0.5"))
    dispatcher = await services.new_dispatcher()
    publisher = dispatcher.publisher
    publisher.senders, publisher.claims = SenderPool(guard=strict), ClaimCheckStore(strict)
    try:
        record = await dispatcher.deliver(an_event(account), stored)
        with pytest.raises(EndpointRefused):
            await publisher.claims.upload(blob, "ccc", "name", b"body")
    finally:
        await dispatcher.close()
    error = json.loads(record.message.request_metadata)["Error"]
    assert record.message.status == MessageStatus.FAILED
    assert (error["Category"], error["Type"]) == ("Configuration", "EndpointRefused")
    assert "private" in error["Message"] and str(port) not in error["Message"]
    assert listener.received == []


async def test_error_texts_do_not_say_what_listens_on_a_host(listener: Listener) -> None:
    """Refused, closed, not AMQP: one text for all, and never the remote's own words."""
    port = listener.port
    texts = set()
    for target in (f"127.0.0.1:{port}", "127.0.0.1:9", "nothing.invalid"):
        cs = f"Endpoint=sb://{target}/;{KEY};UseDevelopmentEmulator=true"
        sender = QueueSender(cs, "q", ConnectGuard(allow_local=True))
        with pytest.raises(Exception) as raised:
            await sender.send(_message(), Deadline(10))
        await sender.close()
        texts.add(classify(raised.value).message)
    assert all(str(port) not in t and "127.0.0.1" not in t for t in texts)
    assert len(texts) <= 2  # "does not resolve" may differ from "did not accept"


def test_public_message_shows_a_status_and_code_never_a_reply_body() -> None:
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(message="<html>internal admin console: secret stuff</html>")
    error.status_code = 403
    error.error_code = "AuthorizationFailure"  # type: ignore[attr-defined]  # as Storage sets it
    assert public_message(error) == (
        "the storage service refused the request (HTTP 403 AuthorizationFailure)"
    )
    assert "admin" not in public_message(ValueError("Endpoint=sb://admin:1"))


def _message() -> Any:
    from datetime import UTC, datetime

    from shared.dispatch import outgoing

    e = an_event("acct", "Employee.Created")
    e = e.model_copy(update={"event_timestamp": datetime.now(UTC)})
    return outgoing.build(e, uuid.uuid4(), "Full", is_retry=False)


# ------------------------------------------------------- *** and where it goes


@pytest.mark.parametrize(
    ("field", "moved"),
    [
        ("ServiceBusConnectionString", "Endpoint=sb://127.0.0.1:{port}/;" + KEY),
        ("ServiceBusConnectionString", "Endpoint=sb://{emulator}/;" + KEY),  # the flag dropped
        ("BlobContainerConnectionString", "BlobEndpoint=http://127.0.0.1:{port}/acct;" + BLOB_KEY),
        (
            "BlobContainerConnectionString",
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=S3CRETKEY=;"
            "BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
        ),
    ],
)
async def test_a_masked_secret_does_not_follow_a_moved_endpoint(
    api: Api,
    services: Services,
    account: str,
    listener: Listener,
    servicebus_connection_string: str,
    storage_connection_string: str,
    unique_queue: str,
    field: str,
    moved: str,
) -> None:
    status, created = await api.call(
        "POST",
        UNVERIFIED,
        body(
            ServiceBusConnectionString=servicebus_connection_string,
            QueueName=unique_queue,
            BlobContainerConnectionString=storage_connection_string,
        ),
    )
    assert status == 200
    emulator = servicebus_connection_string.split("sb://")[1].split(";")[0]
    sent = moved.format(port=listener.port, emulator=emulator)
    sent = sent.replace("S3CRETKEY=", "***").replace("QUNDT1VOVEtFWQ==", "***")
    status, problem = await api.call("PUT", UNVERIFIED, {**created, field: sent})
    assert status == 400 and list(problem["errors"]) == [field]
    assert "send the secret itself" in problem["errors"][field][0]
    stored = await services.connections.get(account, uuid.UUID(created["Uid"]))
    assert stored.connection.service_bus_connection_string == servicebus_connection_string
    assert stored.connection.blob_container_connection_string == storage_connection_string
    status, tested = await api.call("POST", f"{PATH}/{created['Uid']}/test")
    assert status == 200 and tested["Status"] == 1  # still to the emulator
    assert listener.received == []


# ------------------------------------------------------------ where the setting lives


def test_local_settings_allow_local_endpoints_and_infra_never_does() -> None:
    from shared.settings import ROOT, SAMPLE_SETTINGS, allow_local_endpoints, load_local_settings

    environ: dict[str, str] = {}
    load_local_settings(ROOT / SAMPLE_SETTINGS, environ)
    assert allow_local_endpoints(environ)
    assert not allow_local_endpoints({}) and not allow_local_endpoints({"X": "true"})
    infra = [p for p in (ROOT / "infra").rglob("*") if p.suffix in (".bicep", ".json", ".sh")]
    assert infra
    for path in infra:
        assert "ALLOW_LOCAL_ENDPOINTS" not in path.read_text(encoding="utf-8"), path
