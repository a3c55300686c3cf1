"""Service Bus-native delivery options (issue 16), received with the official SDK from the
local emulator: sessions, time to live, application properties, CloudEvents."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from azure.core.messaging import CloudEvent
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import ContainerClient
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from local.azurite import ACCOUNT as AZURITE_ACCOUNT
from local.azurite import start_azurite
from local.servicebus.emulator import Emulator
from shared.dispatch.dispatcher import Dispatcher
from shared.endpoints import EndpointRule
from shared.events import new_event
from shared.models.base import error_map
from shared.models.connectioninput import ConnectionInput
from shared.models.deliveryoptions import (
    CLOUDEVENTS_PREFIX,
    OPTIONS_BY_FIELD,
    RETRY_SCHEDULES,
    RetryPolicyName,
)
from shared.models.events import SystemEvent
from shared.models.records import MessageStatus, RequestMetadata
from shared.services import Services
from shared.settings import DEFAULT_CLOUDEVENTS_SOURCE, IsolationSettings
from tests.entra import MintingCredential
from tests.factories import NOW, PATH, UNVERIFIED, a_connection, an_event, body, connect
from tests.network import write_self_signed
from tests.plugins.app import Api
from tests.servicebus_helpers import body_of, receive, run_javascript

SUBJECTS = 50
EVENTS = 1_000


@pytest.fixture
async def dispatcher(services: Services) -> AsyncIterator[Dispatcher]:
    # A thousand deliveries at once, more than a host runs: bulkheads as wide as that, or
    # they would put most back on the retry queue (tests/test_delivery_isolation.py).
    wide = IsolationSettings(max_in_flight_per_connection=EVENTS, max_in_flight_per_account=EVENTS)
    d = await services.new_dispatcher(retry_delays=(30,), isolation=wide)
    yield d
    await d.close()


@dataclass
class Bus:
    """What a delivery test needs: the session's emulator, a dispatcher and an account."""

    services: Services
    dispatcher: Dispatcher
    emulator: Emulator
    account: str

    @property
    def cs(self) -> str:
        return self.emulator.connection_string

    async def connect(self, queue: str, **changes: Any) -> None:
        await connect(self.services, self.account, self.cs, queue, **changes)


@pytest.fixture
def bus(
    services: Services, dispatcher: Dispatcher, servicebus_emulator: Emulator, account: str
) -> Bus:
    return Bus(services, dispatcher, servicebus_emulator, account)


@pytest.fixture
def session_queue(servicebus_emulator: Emulator) -> str:
    name = f"sq-{uuid.uuid4().hex[:10]}"
    servicebus_emulator.add_queue(name, requires_session=True)
    return name


async def receive_sessions(cs: str, queue: str, sessions: int, each: int) -> dict[str, list[Any]]:
    """Every session's messages, in the order the queue gives them: `sessions` receivers at
    once, each holding the next available session."""

    async def one(client: ServiceBusClient) -> tuple[str, list[Any]]:
        receiver = client.get_queue_receiver(
            queue,
            session_id=NEXT_AVAILABLE_SESSION,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
        )
        async with receiver:
            messages: list[Any] = []
            while len(messages) < each:
                batch = await receiver.receive_messages(each - len(messages), max_wait_time=2)
                if not batch:
                    break
                messages += batch
            assert receiver.session is not None
            return receiver.session.session_id, messages

    async with ServiceBusClient.from_connection_string(cs) as client:
        return dict(await asyncio.gather(*(one(client) for _ in range(sessions))))


async def test_per_subject_order_holds_across_a_thousand_concurrent_events_in_sessions(
    bus: Bus, session_queue: str
) -> None:
    cs, account = bus.cs, bus.account
    await bus.connect(session_queue, SessionIdSource="Subject")
    events = [
        new_event(account, "Order.Shipped", NOW, subject=f"orders/{i % SUBJECTS}", data={"N": i})
        for i in range(EVENTS)
    ]
    records = [r for rs in await asyncio.gather(*map(bus.dispatcher.dispatch, events)) for r in rs]
    assert {r.message.status for r in records} == {MessageStatus.SUCCEEDED}
    metadata = [RequestMetadata.from_text(r.message.request_metadata) for r in records]
    assert {m.session_id for m in metadata if m} == {f"orders/{s}" for s in range(SUBJECTS)}

    sessions = await receive_sessions(cs, session_queue, SUBJECTS, EVENTS // SUBJECTS)
    assert set(sessions) == {f"orders/{s}" for s in range(SUBJECTS)}
    for session, messages in sessions.items():
        numbers = [json.loads(body_of(m))["Data"]["N"] for m in messages]
        expected = [n for n in range(EVENTS) if f"orders/{n % SUBJECTS}" == session]
        assert numbers == expected, session
        assert {m.session_id for m in messages} == {session}


async def test_an_event_without_a_subject_gets_its_event_id_as_session(
    bus: Bus, session_queue: str
) -> None:
    cs, account = bus.cs, bus.account
    await bus.connect(session_queue, SessionIdSource="Subject")
    event = new_event(account, "Order.Shipped", NOW, subject=None, data={})
    [record] = await bus.dispatcher.dispatch(event)
    assert json.loads(record.message.request_metadata)["SessionId"] == event.event_id
    [[received]] = (await receive_sessions(cs, session_queue, 1, 1)).values()
    assert received.session_id == event.event_id


async def test_a_sessionless_connection_to_a_session_queue_is_a_configuration_failure(
    bus: Bus, session_queue: str
) -> None:
    account = bus.account
    await bus.connect(session_queue)
    [record] = await bus.dispatcher.dispatch(an_event(account))
    error = json.loads(record.message.request_metadata)["Error"]
    assert record.message.status == MessageStatus.FAILED
    assert error["Category"] == "Configuration"
    assert error["Type"] == "SessionRequired"
    assert "SessionIdSource" in error["Message"]
    assert bus.emulator.message_count(session_queue) == 0


async def test_time_to_live_and_application_properties_arrive(
    bus: Bus,
) -> None:
    cs, account, queue = bus.cs, bus.account, f"q-{uuid.uuid4().hex[:10]}"
    properties = {"Tenant": "contoso", "Route": "hr"}
    await bus.connect(queue, TimeToLive="PT5M", ApplicationProperties=properties)
    [record] = await bus.dispatcher.dispatch(an_event(account))
    [got] = await receive(cs, queue, 1)
    assert got.time_to_live == timedelta(minutes=5)
    assert {b"Tenant": b"contoso", b"Route": b"hr"}.items() <= got.application_properties.items()
    assert got.application_properties[b"EventKey"] == b"Employee.Created"  # ours stay
    assert got.session_id is None
    # A connection without a session keeps the metadata of old, key for key.
    keys = list(json.loads(record.message.request_metadata))
    assert keys == ["QueueName", "MessageId", "Attempt", "SizeBytes", "Offloaded"]


def cloud_event_of(message: Any) -> CloudEvent[Any]:
    """A CloudEvents reader of the AMQP binding, binary mode: the `cloudEvents:` application
    properties are the attributes, the body is the data (Azure's own CloudEvent type)."""
    attributes = {
        key.decode().removeprefix(CLOUDEVENTS_PREFIX): value.decode()
        for key, value in message.application_properties.items()
        if key.decode().startswith(CLOUDEVENTS_PREFIX)
    }
    assert message.content_type == attributes["datacontenttype"]
    return CloudEvent.from_dict({**attributes, "data": json.loads(body_of(message))})


async def test_a_cloud_events_message_is_read_by_a_cloud_events_reader(
    bus: Bus,
) -> None:
    cs, account, queue = bus.cs, bus.account, f"q-{uuid.uuid4().hex[:10]}"
    await bus.connect(queue, MessageFormat="CloudEvents")
    event = an_event(account)
    await bus.dispatcher.dispatch(event)
    [got] = await receive(cs, queue, 1)
    ce = cloud_event_of(got)
    assert ce.specversion == "1.0"
    assert ce.id == event.event_id
    assert ce.type == "Employee.Created"
    assert ce.source == DEFAULT_CLOUDEVENTS_SOURCE
    assert ce.subject == "employees/1234"
    assert ce.time == event.event_timestamp
    assert ce.datacontenttype == "application/json"
    assert ce.data == {"EmployeeId": 1234, "Name": "Ada"}


async def test_a_cloud_events_claim_check_points_at_its_blob_with_dataref(
    bus: Bus, storage_connection_string: str
) -> None:
    cs, account, queue = bus.cs, bus.account, f"q-{uuid.uuid4().hex[:10]}"
    container = f"large-{uuid.uuid4().hex[:10]}"
    await bus.connect(
        queue,
        MessageFormat="CloudEvents",
        BlobContainerName=container,
        BlobContainerConnectionString=storage_connection_string,
    )
    event = an_event(account, "Document.Uploaded", data={"Content": "x" * 400_000})
    await bus.dispatcher.dispatch(event)
    [got] = await receive(cs, queue, 1)
    ce = cloud_event_of(got)
    assert ce.id == event.event_id and ce.type == "Document.Uploaded"
    reference: dict[str, Any] = dict(ce.data or {})
    assert reference["BlobName"] == got.application_properties[b"BlobName"].decode()
    assert (ce.extensions or {})["dataref"].endswith(f"/{container}/{reference['BlobName']}")


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"ApplicationProperties": {"eventkey": "x"}}, "ApplicationProperties", "EventKey"),
        ({"ApplicationProperties": {"cloudEvents:id": "x"}}, "ApplicationProperties", "prefix"),
        (
            {"ApplicationProperties": {f"P{i}": "v" for i in range(21)}},
            "ApplicationProperties",
            "20",
        ),
        ({"ApplicationProperties": {"P": "v" * 1025}}, "ApplicationProperties", "1024"),
        ({"TimeToLive": "PT30S"}, "TimeToLive", "PT1M"),
        ({"TimeToLive": "P15D"}, "TimeToLive", "P14D"),
        ({"TimeToLive": "soon"}, "TimeToLive", "duration"),
        ({"SessionIdSource": "Random"}, "SessionIdSource", "Subject"),
        ({"MessageFormat": "Xml"}, "MessageFormat", "CloudEvents"),
        ({"RetryPolicy": "Fast"}, "RetryPolicy", "Aggressive"),
    ],
)
async def test_bad_options_are_a_400_naming_the_field(
    api: Api, changes: dict[str, Any], field: str, words: str
) -> None:
    status, problem = await api.call("POST", UNVERIFIED, body(**changes))
    assert status == 400, problem
    assert words in " ".join(problem["errors"][field])


async def test_options_round_trip_and_default_to_todays_behaviour(api: Api) -> None:
    status, plain = await api.call("POST", UNVERIFIED, body())
    assert status == 200
    assert (plain["SessionIdSource"], plain["TimeToLive"], plain["MessageFormat"]) == (
        "None",
        None,
        "Default",
    )
    assert plain["RetryPolicy"] == "Default"
    options = {
        "RetryPolicy": "Patient",
        "SessionIdSource": "EventKey",
        "TimeToLive": "PT1H",
        "ApplicationProperties": {"Tenant": "contoso"},
        "MessageFormat": "CloudEvents",
    }
    status, created = await api.call("POST", UNVERIFIED, body(**options))
    assert status == 200 and {k: created[k] for k in options} == options
    assert (await api.call("GET", f"{PATH}/{created['Uid']}"))[1] == created


# The `DeliveryOptions` column as the code before issue 24 wrote it (before RetryPolicy too).
ROW_WRITTEN_BEFORE = {
    "session_id_source": "EventKey",
    "time_to_live": "PT1H",
    "application_properties": {"Tenant": "contoso"},
    "message_format": "CloudEvents",
    "authentication": "ConnectionString",
    "fully_qualified_namespace": None,
    "tenant_id": None,
    "blob_service_uri": None,
}


async def test_rows_written_before_read_back_unchanged(services: Services, account: str) -> None:
    stored = await services.connections.add(account, a_connection(), NOW)
    table = services.storage.tables.get_table_client("connections")
    row = dict(await table.get_entity(account, str(stored.uid)))
    await table.upsert_entity({**row, "DeliveryOptions": json.dumps(ROW_WRITTEN_BEFORE)})
    read = (await services.connections.get(account, stored.uid)).connection
    assert (read.session_id_source, read.time_to_live, read.message_format) == (
        "EventKey",
        timedelta(hours=1),
        "CloudEvents",
    )
    assert read.application_properties == {"Tenant": "contoso"}
    assert read.retry_policy == "Default"  # written before RetryPolicy existed
    del row["DeliveryOptions"]  # a row from before delivery options: every default
    await table.upsert_entity(row, mode="replace")
    read = (await services.connections.get(account, stored.uid)).connection
    assert read.model_dump(include=set(OPTIONS_BY_FIELD)) == a_connection().model_dump(
        include=set(OPTIONS_BY_FIELD)
    )


def test_every_retry_policy_name_has_a_schedule() -> None:
    assert set(get_args(RetryPolicyName)) == set(RETRY_SCHEDULES)


async def js_receive(cs: str, queue: str, count: int, sessions: int | None = None) -> Any:
    """What the JavaScript SDK (@azure/service-bus, package.json) receives, as JSON."""
    args = [cs, queue, str(count), *([str(sessions)] if sessions else [])]
    return await run_javascript("receive.mjs", *args)


async def test_the_javascript_sdk_reads_sessions_and_cloud_events_the_same_way(
    bus: Bus, session_queue: str
) -> None:
    cs, account, ce_queue = bus.cs, bus.account, f"q-{uuid.uuid4().hex[:10]}"
    await bus.connect(session_queue, SessionIdSource="Subject")
    await bus.connect(ce_queue, MessageFormat="CloudEvents", TimeToLive="PT2H")
    events = [
        new_event(account, "Order.Shipped", NOW, subject=f"orders/{i % 3}", data={"N": i})
        for i in range(30)
    ]
    await asyncio.gather(*map(bus.dispatcher.dispatch, events))

    sessions = await js_receive(cs, session_queue, 10, sessions=3)
    assert set(sessions) == {"orders/0", "orders/1", "orders/2"}
    for session, messages in sessions.items():
        assert [m["body"]["Data"]["N"] for m in messages] == [
            n for n in range(30) if f"orders/{n % 3}" == session
        ]
        assert {m["sessionId"] for m in messages} == {session}

    read = await js_receive(cs, ce_queue, 30)
    assert [m["body"] for m in read] == [{"N": n} for n in range(30)]
    for message, event in zip(read, events, strict=True):
        attributes = message["applicationProperties"]
        assert attributes["cloudEvents:id"] == event.event_id
        assert attributes["cloudEvents:type"] == "Order.Shipped"
        assert attributes["cloudEvents:subject"] == event.subject
        assert attributes["cloudEvents:specversion"] == "1.0"
        assert attributes["cloudEvents:datacontenttype"] == message["contentType"]
        assert message["timeToLive"] == 2 * 3600 * 1000


async def entra_delivery(
    services: Services,
    account: str,
    factory: Callable[..., Emulator],
    credential: MintingCredential,
    event: SystemEvent | None = None,
    **changes: Any,
) -> tuple[Emulator, str, Any]:
    """One event sent by an EntraId connection to a fresh emulator trusting the issuer;
    `changes` (API property names) and `blob_options` for the connection and dispatcher."""
    emulator = factory(jwt_issuer_key=credential.key.public_key())
    queue, tenant = f"q-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    blob_options = changes.pop("blob_options", None)
    connection = a_connection(
        ServiceBusConnectionString=None,
        Authentication="EntraId",
        FullyQualifiedNamespace=f"127.0.0.1:{emulator.port}",
        TenantId=tenant,
        QueueName=queue,
        Confirmed=True,  # its owner posted the code back (tests/test_ownership.py)
        **changes,
    )
    await services.connections.add(account, connection, NOW)
    dispatcher = await services.new_dispatcher(
        (30,), credentials=credential.for_tenant, blob_options=blob_options
    )
    try:
        [record] = await dispatcher.dispatch(event or an_event(account))
    finally:
        await dispatcher.close()
    assert set(credential.tenants) == {tenant}
    return emulator, queue, record


async def test_an_entra_id_connection_delivers_with_a_token_and_no_secret(
    services: Services,
    account: str,
    servicebus_emulator_factory: Callable[..., Emulator],
    issuer_key: rsa.RSAPrivateKey,
) -> None:
    credential = MintingCredential(issuer_key)
    emulator, queue, record = await entra_delivery(
        services, account, servicebus_emulator_factory, credential
    )
    assert record.message.status == MessageStatus.SUCCEEDED, record.message.request_metadata
    [got] = await receive(emulator.connection_string, queue, 1)
    assert got.application_properties[b"AccountId"] == account.encode()


async def test_an_entra_id_token_for_another_audience_is_a_configuration_failure(
    services: Services,
    account: str,
    servicebus_emulator_factory: Callable[..., Emulator],
    issuer_key: rsa.RSAPrivateKey,
) -> None:
    credential = MintingCredential(issuer_key, audience="https://storage.azure.com")
    emulator, queue, record = await entra_delivery(
        services, account, servicebus_emulator_factory, credential
    )
    error = json.loads(record.message.request_metadata)["Error"]
    assert (record.message.status, error["Category"]) == (MessageStatus.FAILED, "Configuration")
    assert error["Type"] == "ServiceBusAuthenticationError"
    assert emulator.message_count(queue) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Authentication": "EntraId", "TenantId": str(uuid.uuid4())}, "FullyQualifiedNamespace"),
        (
            {
                "Authentication": "EntraId",
                "FullyQualifiedNamespace": "contoso.servicebus.windows.net",
            },
            "TenantId",
        ),
        ({"FullyQualifiedNamespace": "contoso.servicebus.windows.net"}, "FullyQualifiedNamespace"),
        ({"ServiceBusConnectionString": None}, "Authentication"),
    ],
)
async def test_entra_id_needs_namespace_and_tenant_and_no_connection_string(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    sent = body(**changes)
    if changes.get("Authentication") == "EntraId":
        sent.update(
            ServiceBusConnectionString=None,
            BlobContainerConnectionString=None,
            BlobContainerName=None,
        )
    status, problem = await api.call("POST", UNVERIFIED, sent)
    assert status == 400 and field in problem["errors"], problem


@pytest.fixture(scope="module")
def azurite_with_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Azurite over HTTPS taking bearer tokens (`--oauth basic`: it checks the token's
    audience, issuer and times, not its signature): its blob endpoint, and the certificate
    to trust."""
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert, key)
    azurite = start_azurite(extra_args=["--oauth", "basic", "--cert", str(cert), "--key", str(key)])
    try:
        yield f"https://127.0.0.1:{azurite.blob_port}/{AZURITE_ACCOUNT}", cert
    finally:
        azurite.stop()


async def test_an_entra_id_connection_offloads_a_large_event_with_a_token(
    services: Services,
    account: str,
    servicebus_emulator_factory: Callable[..., Emulator],
    issuer_key: rsa.RSAPrivateKey,
    azurite_with_oauth: tuple[str, Path],
) -> None:
    blob_uri, cert = azurite_with_oauth
    container = f"large-{uuid.uuid4().hex[:10]}"
    event = an_event(account, "Document.Uploaded", data={"Content": "x" * 400_000})
    emulator, queue, record = await entra_delivery(
        services,
        account,
        servicebus_emulator_factory,
        MintingCredential(issuer_key),
        event,
        BlobServiceUri=blob_uri,
        BlobContainerName=container,
        blob_options={"connection_verify": str(cert)},
    )
    assert record.message.status == MessageStatus.SUCCEEDED, record.message.request_metadata
    [got] = await receive(emulator.connection_string, queue, 1)
    reference = json.loads(body_of(got))
    assert reference["BlobContainerName"] == container
    reader = ContainerClient(
        blob_uri,
        container,
        credential=MintingCredential(issuer_key).for_tenant("reader"),
        connection_verify=str(cert),
    )
    async with reader:
        blob = await (await reader.download_blob(reference["BlobName"])).readall()
    assert json.loads(blob)["Data"]["Content"] == "x" * 400_000


def test_the_namespace_follows_the_production_endpoint_rule() -> None:
    entra = {
        "QueueName": "q",
        "Authentication": "EntraId",
        "TenantId": str(uuid.uuid4()),
    }
    rule = {"endpoints": EndpointRule()}
    for refused in ("127.0.0.1:5672", "contoso.example.com", "evil.servicebus.windows.net:444"):
        with pytest.raises(ValidationError) as caught:
            ConnectionInput.model_validate(
                {**entra, "FullyQualifiedNamespace": refused}, context=rule
            )
        assert "FullyQualifiedNamespace" in error_map(caught.value)
    good = {**entra, "FullyQualifiedNamespace": "Contoso.servicebus.windows.net"}
    accepted = ConnectionInput.model_validate(good, context=rule)
    assert accepted.fully_qualified_namespace == "contoso.servicebus.windows.net"
    for refused in ("http://127.0.0.1:10000/devstoreaccount1", "https://contoso.example.com"):
        blob = {**good, "BlobServiceUri": refused, "BlobContainerName": "large"}
        with pytest.raises(ValidationError) as caught:
            ConnectionInput.model_validate(blob, context=rule)
        assert "BlobServiceUri" in error_map(caught.value)
    blob = {**good, "BlobServiceUri": "https://contoso.blob.core.windows.net/"}
    accepted = ConnectionInput.model_validate({**blob, "BlobContainerName": "large"}, context=rule)
    assert accepted.blob_service_uri == "https://contoso.blob.core.windows.net"
