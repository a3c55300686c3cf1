"""Backup and restore as an operator runs them (`python -m shared.cli backup ...`, a process):
connections and API keys exported from one storage account come back whole into another,
readable with the same key ring, and restoring twice leaves one copy."""

from __future__ import annotations

import json
from pathlib import Path

from shared.services import Services
from tests.factories import a_connection, cli, uncached_api_keys

SECRET = "c2VjcmV0LWtleS1vZi10aGUtbmFtZXNwYWNl"


async def test_connections_and_api_keys_come_back_into_another_account(
    app_environment: dict[str, str],
    services: Services,
    own_storage: tuple[str, Services],
    account: str,
    tmp_path: Path,
) -> None:
    cs = f"Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={SECRET}"
    stored = await services.connections.add(
        account, a_connection(ServiceBusConnectionString=cs, QueueName="orders"), services.clock()
    )
    key, _ = await services.api_keys.create(account, services.clock())

    exported = cli(app_environment, "backup", "export", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    assert int(exported.stdout.splitlines()[-1]) >= 2
    lines = (tmp_path / "connections.jsonl").read_text().splitlines()
    ours = [json.loads(line) for line in lines if account in line]
    assert ours and SECRET not in "".join(lines)  # secrets stay sealed in the backup
    assert key not in (tmp_path / "apikeys.jsonl").read_text()  # only its hash

    other_storage, restored = own_storage
    into_other = {**app_environment, "AzureWebJobsStorage": other_storage}
    for _ in range(2):  # idempotent
        result = cli(into_other, "backup", "restore", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == exported.stdout.splitlines()[-1]

    (back,) = await restored.connections.for_account(account)
    assert back.connection.uid == stored.connection.uid
    assert back.connection.service_bus_connection_string == cs  # unsealed with the same ring
    assert back.log_partition == stored.log_partition
    assert back.updated_at == stored.updated_at
    assert await (await uncached_api_keys(restored)).account_of(key) == account
