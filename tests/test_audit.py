"""The audit log (issue 26): changes to connections and keys, by which key, newest first,
paged, never a secret, per account; purged after 90 days on an injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aiohttp

from shared.services import Services
from shared.storage import clients
from shared.storage.audit import AuditEntry, AuditLog
from tests.factories import PATH, UNVERIFIED, body
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
