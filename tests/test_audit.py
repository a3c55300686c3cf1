"""The audit log (issue 26): changes to connections and keys, by which key, newest first,
paged, never a secret, per account; purged after 90 days on an injected clock."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ServiceRequestError

from shared.services import Services
from shared.storage import clients
from shared.storage.audit import AuditEntry, AuditLog
from tests.factories import PATH, UNVERIFIED, body, cli
from tests.plugins.app import Api

AUDIT = "/v1/audit"


async def test_changes_to_connections_and_keys_are_audited_newest_first(
    api: Api, api_key: str, api_host: str, services: Services
) -> None:
    status, made = await api.call("POST", UNVERIFIED, body())
    assert status == 200, made
    uid = made["Uid"]
    assert (await api.call("PUT", UNVERIFIED, body(Uid=uid)))[0] == 200
    assert (await api.call("POST", f"{PATH}/{uid}/resume"))[0] == 200
    assert (await api.call("DELETE", f"{PATH}/{uid}"))[0] == 200
    key = (await api.call("POST", "/v1/apikeys", {"Name": "k", "Scopes": ["keys:manage"]}))[1]
    rotated = (await api.call("POST", f"/v1/apikeys/{key['KeyId']}/rotate", {}))[1]
    assert (await api.call("DELETE", f"/v1/apikeys/{key['KeyId']}"))[0] == 204

    status, page = await api.call("GET", AUDIT)
    assert status == 200, page
    seen = [(e["Action"], e["Target"]) for e in page["Entries"]]
    assert seen == [
        ("apikey.delete", key["KeyId"]),
        ("apikey.rotate", key["KeyId"]),
        ("apikey.create", key["KeyId"]),
        ("connection.delete", uid),
        ("connection.resume", uid),
        ("connection.replace", uid),
        ("connection.create", uid),
    ]
    assert {e["KeyId"] for e in page["Entries"]} == {api_key[4:12]}  # the caller's key id
    assert {e["Outcome"] for e in page["Entries"]} == {"done"}
    assert page["NextCursor"] is None
    text = str(page)
    assert key["Key"] not in text and rotated["Key"] not in text and api_key not in text

    other, _ = await services.api_keys.create(f"acct-{uuid.uuid4().hex[:12]}", services.clock())
    async with aiohttp.ClientSession(api_host, headers={"Authorization": other}) as session:
        status, theirs = await Api(session).call("GET", AUDIT)
    assert status == 200 and theirs["Entries"] == []  # another account sees none of it


async def test_the_audit_log_is_paged_without_gaps_or_repeats(api: Api) -> None:
    made = [(await api.call("POST", UNVERIFIED, body()))[1]["Uid"] for _ in range(5)]
    targets, cursor, pages = [], None, 0
    while True:
        query = f"?pageSize=2&cursor={cursor}" if cursor else "?pageSize=2"
        status, page = await api.call("GET", AUDIT + query)
        assert status == 200, page
        targets += [e["Target"] for e in page["Entries"]]
        pages += 1
        cursor = page["NextCursor"]
        if cursor is None:
            break
    assert targets == made[::-1] and pages == 3


async def test_a_bad_audit_query_is_a_400_naming_it(api: Api) -> None:
    other_account = "20260101:acct-other|000000000000000|00000000"  # another account's rows
    for query, name in (
        ("?pageSize=0", "pageSize"),
        ("?cursor=x", "cursor"),
        ("?cursor=00000000:a|000000000000000|00000000", "cursor"),  # no such day
        (f"?cursor={other_account}", "cursor"),
    ):
        status, problem = await api.call("GET", AUDIT + query)
        assert status == 400 and any(name.lower() in k.lower() for k in problem["errors"])


async def test_entries_are_kept_90_days_then_purged(services: Services) -> None:
    audit = AuditLog(await services.storage.table(clients.AUDIT_TABLE))
    account = f"acct-{uuid.uuid4().hex[:12]}"
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    for days in (100, 91, 89, 1):
        at = now - timedelta(days=days)
        await audit.record(account, AuditEntry(at, "k", "connection.create", str(days)))
    entries, _ = await audit.page(account, now, 10)
    assert [e.target for e in entries] == ["1", "89"]  # older than 90 days: not shown

    assert await audit.purge(now) >= 2
    assert await audit.purge(now) == 0
    assert [e.target for e in (await audit.page(account, now, 10))[0]] == ["1", "89"]
    later = now + timedelta(days=60)
    await audit.purge(later)
    assert [e.target for e in (await audit.page(account, later, 10))[0]] == ["1"]


def failing_for(account: str, real: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """A write of the audit log that fails for `account` as a storage outage would. A stand-in:
    Azurite cannot fail one table alone, and the app host (its own thread and loop) has its
    own AuditLog, so the class's method is replaced for this test."""

    async def write(self: AuditLog, *args: Any) -> Any:
        ref = args[0]
        named = ref if isinstance(ref, str) else getattr(ref, "row", "")
        if named == account or str(named).startswith(f"{account}|"):
            raise ServiceRequestError("the audit table does not answer")
        return await real(self, *args)

    return write


async def entries(api: Api) -> list[tuple[str, str, str]]:
    status, page = await api.call("GET", AUDIT)
    assert status == 200, page
    return [(e["Action"], e["Target"], e["Outcome"]) for e in page["Entries"]]


async def test_a_failed_audit_write_is_a_503_and_nothing_changes(
    api: Api, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuditLog, "record", failing_for(account, AuditLog.record))
    status, problem = await api.call("POST", UNVERIFIED, body())
    assert status == 503 and "audit" in problem["detail"], problem
    status, problem = await api.call(
        "POST", "/v1/apikeys", {"Name": "k", "Scopes": ["keys:manage"]}
    )
    assert status == 503, problem
    monkeypatch.undo()
    assert await api.call("GET", PATH) == (200, [])  # no connection was made
    assert [k["Name"] for k in (await api.call("GET", "/v1/apikeys"))[1]] == [""]  # nor a key
    assert await entries(api) == []


async def test_a_change_whose_entry_cannot_be_completed_stays_recorded_as_attempted(
    api: Api, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, made = await api.call("POST", UNVERIFIED, body())
    assert status == 200, made
    uid = made["Uid"]
    monkeypatch.setattr(AuditLog, "complete", failing_for(account, AuditLog.complete))
    assert (await api.call("DELETE", f"{PATH}/{uid}"))[0] == 200  # the change stands
    monkeypatch.undo()
    assert await entries(api) == [
        ("connection.delete", uid, "attempted"),  # recorded before the change: never lost
        ("connection.create", uid, "done"),
    ]


async def test_a_refused_change_is_recorded_as_refused_with_nothing_changed(api: Api) -> None:
    missing = str(uuid.uuid4())
    assert (await api.call("DELETE", f"{PATH}/{missing}"))[0] == 404
    status, _ = await api.call("DELETE", "/v1/apikeys/0000000z")  # not a key id: refused too
    assert status == 404
    assert await entries(api) == [
        ("apikey.delete", "0000000z", "refused"),
        ("connection.delete", missing, "refused"),
    ]


async def test_the_command_lines_changes_are_audited_as_cli(
    api: Api, app_environment: dict[str, str], account: str
) -> None:
    made = cli(app_environment, "apikey", "create", "--account", account, "--scope", "keys:manage")
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.splitlines()[-1][4:12]
    assert cli(app_environment, "apikey", "revoke", key_id).returncode == 0
    assert cli(app_environment, "portal", "link", "--account", account).returncode == 0
    status, page = await api.call("GET", AUDIT)
    assert status == 200, page
    seen = [(e["KeyId"], e["Action"], e["Target"], e["Outcome"]) for e in page["Entries"]]
    assert seen == [
        ("cli", "portal.link", "", "done"),
        ("cli", "apikey.delete", key_id, "done"),
        ("cli", "apikey.create", key_id, "done"),
    ]
