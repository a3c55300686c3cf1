"""The command line (CONTRACT section 6), run as a user runs it: a separate process."""

import base64
import json
import uuid
from pathlib import Path

from azure.storage.blob.aio import ContainerClient

from local.servicebus.emulator import Emulator
from shared.events import encode_queue_message, new_event
from shared.services import Services
from shared.storage.clients import POISON_SUFFIX, SYSTEM_EVENTS_QUEUE
from tests.factories import a_connection, cli, uncached_api_keys
from tests.servicebus_helpers import body_of, receive


async def subscribe(
    services: Services, account: str, cs: str, queue: str, **changes: object
) -> None:
    """A connection of `account` to `queue`, wanting every event."""
    connection = a_connection(ServiceBusConnectionString=cs, QueueName=queue, **changes)
    await services.connections.add(account, connection, services.clock())


async def test_apikey_create_list_revoke(
    app_environment: dict[str, str], services: Services, account: str
) -> None:
    created = cli(app_environment, "apikey", "create", "--account", account)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert await services.api_keys.account_of(key) == account

    listed = cli(app_environment, "apikey", "list", "--account", account)
    assert listed.returncode == 0 and account in listed.stdout
    assert key not in listed.stdout  # only ids, never keys
    [info] = await services.api_keys.for_account(account)
    assert info.key_id in listed.stdout

    revoked = cli(app_environment, "apikey", "revoke", info.key_id)
    assert revoked.returncode == 0
    assert await (await uncached_api_keys(services)).account_of(key) is None
    assert cli(app_environment, "apikey", "revoke", info.key_id).returncode == 1


def test_apikey_create_refuses_a_bad_account(app_environment: dict[str, str]) -> None:
    result = cli(app_environment, "apikey", "create", "--account", "has space")
    assert result.returncode == 2 and "account" in result.stderr


async def test_event_publish_reaches_the_subscriber_with_data_inline_or_from_stdin(
    app_environment: dict[str, str],
    api_host: str,
    services: Services,
    account: str,
    servicebus_emulator: Emulator,
    unique_queue: str,
) -> None:
    cs = servicebus_emulator.connection_string
    await subscribe(services, account, cs, unique_queue, EnabledEvents=["Order.*"])
    result = cli(
        app_environment,
        "event",
        "publish",
        "--account",
        account,
        "--key",
        "Order.Shipped",
        "--subject",
        "orders/1",
        "--data",
        '{"OrderId": 1}',
    )
    assert result.returncode == 0, result.stderr
    event_id = result.stdout.strip().splitlines()[-1]
    [got] = await receive(cs, unique_queue, 1)
    assert got.correlation_id == event_id
    body = json.loads(body_of(got))
    assert body["Subject"] == "orders/1" and body["Data"] == {"OrderId": 1}

    publish = ("event", "publish", "--account", account, "--key", "Order.Shipped", "--data", "-")
    result = cli(app_environment, *publish, stdin='{"OrderId": 7}')
    assert result.returncode == 0, result.stderr
    [got] = await receive(cs, unique_queue, 1)
    assert json.loads(body_of(got))["Data"] == {"OrderId": 7}


def test_event_publish_refuses_bad_input(app_environment: dict[str, str], account: str) -> None:
    bad_json = cli(
        app_environment,
        "event",
        "publish",
        "--account",
        account,
        "--key",
        "Order.Shipped",
        "--data",
        "{oops",
    )
    assert bad_json.returncode == 2 and "--data" in bad_json.stderr
    bad_key = cli(app_environment, "event", "publish", "--account", account, "--key", "no spaces")
    assert bad_key.returncode == 2 and "event_key" in bad_key.stderr.lower().replace(
        "eventkey", "event_key"
    )


async def test_event_publish_reads_a_400_kb_event_from_a_file(
    app_environment: dict[str, str],
    api_host: str,
    services: Services,
    account: str,
    servicebus_emulator: Emulator,
    unique_queue: str,
    storage_connection_string: str,
    tmp_path: Path,
) -> None:
    """Too large for a command-line argument (128 KB on Linux): it goes by file, then on to
    the subscriber's container through the claim check."""
    cs = servicebus_emulator.connection_string
    container = f"large-{uuid.uuid4().hex[:10]}"
    await subscribe(
        services,
        account,
        cs,
        unique_queue,
        BlobContainerName=container,
        BlobContainerConnectionString=storage_connection_string,
    )
    data = {"Content": "x" * 400_000}
    (tmp_path / "event.json").write_text(json.dumps(data))

    result = cli(
        app_environment,
        *("event", "publish", "--account", account, "--key", "Document.Uploaded"),
        *("--data", f"@{tmp_path / 'event.json'}"),
    )

    assert result.returncode == 0, result.stderr
    [got] = await receive(cs, unique_queue, 1)
    assert got.correlation_id == result.stdout.strip().splitlines()[-1]
    reference = json.loads(body_of(got))
    async with ContainerClient.from_connection_string(storage_connection_string, container) as c:
        blob = await (await c.download_blob(reference["BlobName"])).readall()
    assert json.loads(blob)["Data"] == data


def test_event_publish_names_a_missing_or_invalid_data_file(
    app_environment: dict[str, str], account: str, tmp_path: Path
) -> None:
    publish = ("event", "publish", "--account", account, "--key", "Order.Shipped", "--data")
    missing = tmp_path / "missing.json"
    result = cli(app_environment, *publish, f"@{missing}")
    assert result.returncode == 2
    assert str(missing) in result.stderr and "No such file" in result.stderr

    invalid = tmp_path / "invalid.json"
    invalid.write_text("{oops")
    result = cli(app_environment, *publish, f"@{invalid}")
    assert result.returncode == 2
    assert str(invalid) in result.stderr and "not JSON" in result.stderr

    result = cli(app_environment, *publish, "-", stdin="not json")
    assert result.returncode == 2 and "stdin is not JSON" in result.stderr


async def test_poison_replay_sends_well_formed_events_back_and_keeps_malformed_ones(
    app_environment: dict[str, str],
    api_host: str,
    services: Services,
    account: str,
    servicebus_emulator: Emulator,
    unique_queue: str,
) -> None:
    cs = servicebus_emulator.connection_string
    await subscribe(services, account, cs, unique_queue)
    # As the host leaves them: an event that failed five times, and a malformed one.
    event = new_event(account, "Order.Shipped", services.clock(), "orders/2")
    malformed = json.dumps({"EventId": uuid.uuid4().hex, "AccountId": account}).encode()
    poison = await services.storage.queue(SYSTEM_EVENTS_QUEUE + POISON_SUFFIX)
    for payload in (json.dumps(event.to_json()).encode(), malformed):
        await poison.send_message(encode_queue_message(payload))

    result = cli(app_environment, "poison", "replay", "--queue", SYSTEM_EVENTS_QUEUE)

    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) >= 1
    [got] = await receive(cs, unique_queue, 1)
    assert got.correlation_id == event.event_id
    left = [base64.b64decode(m.content) for m in await poison.peek_messages(max_messages=32)]
    assert malformed in left  # visible again, where it was
    assert not [body for body in left if event.event_id.encode() in body]
