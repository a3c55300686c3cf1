"""Proof of ownership for Entra ID connections (issue 23, finding 3: a confused deputy).

With Entra ID the app's own identity holds the right to send. An account may only name a
tenant whose administrator consented through that account's link (a signed state), and an
Entra ID connection delivers nothing (its events are kept) until its owner posts back the
one-time code its verification message carried. Entra ID cannot run here: a credential
minting tokens the emulator trusts stands in for it (tests/entra.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from local.servicebus.emulator import Emulator
from shared.api.connections import create_connection, replace_connection
from shared.api.messages import retry_message
from shared.dispatch.dispatcher import Dispatcher
from shared.models.records import MessageStatus
from shared.service.ownership import CODE_LIFETIME, CODE_TRIES, ConsentStates, InvalidState
from shared.services import Services
from tests.entra import MintingCredential, app_dispatcher, consent, in_process
from tests.factories import PATH, UNVERIFIED, an_event, body
from tests.plugins.app import Api
from tests.servicebus_helpers import body_of, nothing_arrives, receive

APP_ID = "11111111-2222-3333-4444-555555555555"


@dataclass
class Namespace:
    """A customer's namespace (a strict emulator trusting the token issuer) and tenant."""

    emulator: Emulator
    tenant: str
    dispatcher: Dispatcher

    def connection(self, queue: str) -> dict[str, Any]:
        return {
            "Authentication": "EntraId",
            "FullyQualifiedNamespace": f"127.0.0.1:{self.emulator.port}",
            "TenantId": self.tenant,
            "QueueName": queue,
            "EnabledEvents": ["*"],
        }

    async def verification(self, queue: str) -> dict[str, Any]:
        [message] = await receive(self.emulator.connection_string, queue, 1)
        sent = json.loads(body_of(message))
        assert sent["EventKey"] == "System.ConnectionVerified"
        return dict(sent["Data"])


@pytest.fixture
async def namespace(
    services: Services,
    servicebus_emulator_factory: Callable[..., Emulator],
    issuer_key: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Namespace]:
    monkeypatch.setenv("ENTRA_APP_CLIENT_ID", APP_ID)
    emulator = servicebus_emulator_factory(
        strict=True, queues=["a-queue", "b-queue"], jwt_issuer_key=issuer_key.public_key()
    )
    credential = MintingCredential(issuer_key)
    dispatcher = await services.new_dispatcher(credentials=credential.for_tenant)
    async with app_dispatcher(services, dispatcher):
        yield Namespace(emulator, str(uuid.uuid4()), dispatcher)
    await dispatcher.close()


async def test_another_account_learns_nothing_and_sends_nothing_to_a_namespace_it_does_not_own(
    services: Services, namespace: Namespace
) -> None:
    intruder, _ = await services.api_keys.create(f"other-{uuid.uuid4().hex[:8]}", services.clock())
    answers = [
        await in_process(create_connection, intruder, namespace.connection(queue))
        for queue in ("a-queue", "missing")  # a queue that exists, and one that does not
    ]
    assert answers[0] == answers[1], answers
    status, problem = answers[0]
    assert status == 400 and list(problem["errors"]) == ["TenantId"], problem
    assert namespace.emulator.message_count("a-queue") == 0


async def test_an_entra_id_connection_delivers_nothing_until_its_owner_confirms(
    api: Api, api_key: str, services: Services, account: str, namespace: Namespace
) -> None:
    consented = await consent(api, namespace.tenant)
    assert consented == {"TenantId": namespace.tenant, "Account": account}
    status, created = await in_process(create_connection, api_key, namespace.connection("a-queue"))
    assert status == 200 and created["Confirmed"] is False, created
    code = (await namespace.verification("a-queue"))["ConfirmationCode"]
    uid = uuid.UUID(created["Uid"])

    [kept] = await namespace.dispatcher.dispatch(an_event(account))  # kept, not sent
    error = json.loads(kept.message.request_metadata)["Error"]
    assert (error["Category"], error["Type"]) == ("Suspended", "ConnectionUnconfirmed")
    assert json.loads(kept.message.message_body or "")["Data"] == an_event(account).data  # whole
    route = {"connectionUid": str(uid), "messageUid": str(kept.message.uid)}
    status, resent = await in_process(retry_message, api_key, route=route)
    assert status == 200 and resent["Status"] == MessageStatus.FAILED  # a re-send is kept too
    assert await nothing_arrives(namespace.emulator.connection_string, "a-queue")

    status, saved = await api.call("PUT", UNVERIFIED, created)  # ?verify=false confirms nothing
    assert status == 200 and saved["Confirmed"] is False
    status, problem = await api.call("POST", f"{PATH}/{uid}/confirm", {"Code": "WRONG-CODE2"})
    assert status == 400 and list(problem["errors"]) == ["Code"]
    typed = code.lower().replace("-", " ")  # as a person types it
    status, confirmed = await api.call("POST", f"{PATH}/{uid}/confirm", {"Code": typed})
    assert status == 200 and confirmed["Confirmed"] is True, confirmed

    stored = await services.connections.get(account, uid)
    delivered = await namespace.dispatcher.deliver(an_event(account), stored)
    assert delivered.message.status == MessageStatus.SUCCEEDED
    status, replayed = await in_process(retry_message, api_key, route=route)
    assert status == 200 and replayed["Status"] == MessageStatus.SUCCEEDED
    assert len(await receive(namespace.emulator.connection_string, "a-queue", 2)) == 2

    status, same = await in_process(replace_connection, api_key, confirmed)  # same destination
    assert status == 200 and same["Confirmed"] is True
    assert "ConfirmationCode" not in await namespace.verification("a-queue")
    moved = {**confirmed, "QueueName": "b-queue"}
    status, moved = await in_process(replace_connection, api_key, moved)
    assert status == 200 and moved["Confirmed"] is False  # a new destination, a new proof
    assert (await namespace.verification("b-queue"))["ConfirmationCode"] != code


async def test_a_code_works_once_within_its_tries_its_day_and_its_destination(
    services: Services, account: str
) -> None:
    ownership, uid, now = services.ownership, uuid.uuid4(), datetime(2026, 12, 1, tzinfo=UTC)
    await ownership.keep_code(account, uid, "here", "ABCDE-FGHJK", now)
    for _ in range(CODE_TRIES):
        assert not await ownership.redeem(account, uid, "here", "WRONG-WRONG", now)
    assert not await ownership.redeem(account, uid, "here", "ABCDE-FGHJK", now)  # tries spent
    await ownership.keep_code(account, uid, "here", "ABCDE-FGHJK", now)  # a new code
    assert not await ownership.redeem(account, uid, "elsewhere", "ABCDE-FGHJK", now)
    late = now + CODE_LIFETIME
    assert not await ownership.redeem(account, uid, "here", "ABCDE-FGHJK", late)
    assert not await ownership.redeem(f"{account}x", uid, "here", "ABCDE-FGHJK", now)
    assert await ownership.redeem(account, uid, "here", "abcde fghjk", now)
    assert not await ownership.redeem(account, uid, "here", "ABCDE-FGHJK", now)  # used up


def test_a_consent_state_is_signed_names_its_tenant_and_expires() -> None:
    states, now, tenant = ConsentStates(b"k" * 32), datetime(2026, 12, 1, tzinfo=UTC), "t-1"
    state = states.sign("acme", tenant, now)
    assert states.read(state, "T-1", now + timedelta(minutes=59)) == "acme"
    forged = ConsentStates(b"x" * 32).sign("evil", tenant, now)
    body_, _, mac = state.partition(".")
    for bad in (forged, f"{body_}.{mac[:-2]}AA", "", "a.b", f"{forged.partition('.')[0]}.{mac}"):
        with pytest.raises(InvalidState):
            states.read(bad, tenant, now)
    with pytest.raises(InvalidState, match="another tenant"):
        states.read(state, "t-2", now)
    with pytest.raises(InvalidState, match="expired"):
        states.read(state, tenant, now + timedelta(hours=1, seconds=1))


async def test_the_consent_link_and_redirect_bind_a_tenant_only_with_a_valid_state(
    api: Api, services: Services, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = str(uuid.uuid4())
    status, _ = await api.call("GET", "/v1/entra/consent", params={"tenantId": tenant})
    assert status == 404  # no Entra ID application configured
    monkeypatch.setenv("ENTRA_APP_CLIENT_ID", APP_ID)
    status, link = await api.call("GET", "/v1/entra/consent", params={"tenantId": tenant})
    assert status == 200, link
    url = urlsplit(link["ConsentUrl"])
    asked = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (url.netloc, url.path) == ("login.microsoftonline.com", f"/{tenant}/adminconsent")
    assert asked["client_id"] == APP_ID and asked["redirect_uri"].endswith("/v1/entra/consented")
    other = str(uuid.uuid4())
    refused = [
        {"error": "access_denied", "tenant": tenant, "state": asked["state"]},
        {"admin_consent": "True", "tenant": tenant, "state": asked["state"][:-3] + "AAA"},
        {"admin_consent": "True", "tenant": other, "state": asked["state"]},
        {"admin_consent": "True", "tenant": "not-a-tenant", "state": asked["state"]},
    ]
    for query in refused:
        async with api.session.get("/v1/entra/consented", params=query) as answer:
            assert answer.status == 400, query
    # The longest state the schema allows, 12 bytes a character encoded: answered by the app.
    query = {"admin_consent": "True", "tenant": tenant, "state": "\U0010ffff" * 1000}
    async with api.session.get("/v1/entra/consented", params=query) as answer:
        assert answer.status == 400 and answer.content_type == "application/problem+json"
    assert not await services.ownership.tenant_bound(account, tenant)
    assert not await services.ownership.tenant_bound(account, other)
    query = {"admin_consent": "True", "tenant": tenant, "state": asked["state"]}
    async with api.session.get("/v1/entra/consented", params=query) as answer:
        assert answer.status == 200
    assert await services.ownership.tenant_bound(account, tenant)


async def test_a_connection_string_connection_needs_no_code(api: Api) -> None:
    status, created = await api.call("POST", UNVERIFIED, body())
    assert status == 200 and created["Confirmed"] is True
    status, same = await api.call("POST", f"{PATH}/{created['Uid']}/confirm", {"Code": "ANY"})
    assert status == 200 and same["Confirmed"] is True


async def test_consent_is_granted_only_with_a_valid_state_without_http(
    services: Services, account: str
) -> None:
    """The redirect's rule (shared/service/ownership.py), called as the route calls it."""
    from shared.errors import ConsentNotGranted, Invalid
    from shared.models.connection import ConsentCallbackQuery
    from shared.service.ownership import grant_consent

    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    state = services.consent_states.sign(account, tenant, services.clock())

    def sent(**fields: str) -> ConsentCallbackQuery:
        return ConsentCallbackQuery(**{"admin_consent": "True", "state": state, **fields})

    with pytest.raises(ConsentNotGranted) as refused:
        await grant_consent(services, sent(tenant=tenant, error="access_denied"))
    assert refused.value.field == "admin_consent"
    with pytest.raises(ConsentNotGranted):
        await grant_consent(services, sent())  # no tenant named
    for bad in (sent(tenant=other), sent(tenant="not-a-tenant"), sent(tenant=tenant, state="x")):
        with pytest.raises(Invalid) as invalid:
            await grant_consent(services, bad)
        assert list(invalid.value.errors) == ["state"]
    assert not await services.ownership.tenant_bound(account, tenant)

    granted = await grant_consent(services, sent(tenant=tenant))
    assert (str(granted.tenant_id), granted.account) == (tenant, account)
    assert await services.ownership.tenant_bound(account, tenant)
