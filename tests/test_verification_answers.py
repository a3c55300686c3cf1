"""Verification is not a port scanner (issue 23, finding 4): every reason a namespace or
container cannot be reached gets one answer (one status, one text naming the property, no
address, resolver or socket detail) no sooner than the verification's budget; verifications
are limited per account; no response of any route carries a traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from local.blackhole import BlackHole
from local.servicebus.emulator import Emulator
from shared.api import http
from shared.api.http import DOMAIN_ERRORS, problem_of
from shared.api.ratelimit import RateLimiter
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.servicebus import SenderPool
from shared.endpoints import ConnectGuard
from shared.service.verification import health_after_save, no_sooner_than
from shared.services import Services
from shared.settings import IsolationSettings, Limits
from tests.factories import PATH, UNVERIFIED, a_connection, body, stored
from tests.network import Names, closed_port
from tests.plugins.app import Api

KEY = "SharedAccessKeyName=send;SharedAccessKey=S3CRETKEY=;UseDevelopmentEmulator=true"
BLOB_KEY = "AccountName=acct;AccountKey=QUNDT1VOVEtFWQ=="
BUDGET = 1.0  # CONNECTION_VERIFY_SECONDS for these tests


def loopback(address: str) -> bool:
    """The test's rule: its listeners (loopback) stand for public hosts; 10.x stays private."""
    return address.startswith("127.")


@pytest.fixture
async def strict(services: Services, black_hole: BlackHole) -> AsyncIterator[Services]:
    """The app's services with a verification budget of 1 s and a dispatcher connecting
    under the production rule, through a DNS that knows four namespaces: one silent (a black
    hole), one closed, one private, one that does not resolve."""
    dns = Names(
        {"silent.test": ["127.0.0.1"], "closed.test": ["127.0.0.1"], "private.test": ["10.0.0.1"]}
    )
    guard = ConnectGuard(allow_local=False, resolve=dns, permitted=loopback)
    dispatcher = await services.new_dispatcher(
        isolation=IsolationSettings(attempt_timeout_seconds=5)
    )
    publisher = dispatcher.publisher
    publisher.senders, publisher.claims = SenderPool(guard=guard), ClaimCheckStore(guard)
    settings = replace(services.settings, verify_seconds=BUDGET)
    yield replace(services, settings=settings, _dispatcher=dispatcher)
    await dispatcher.close()


def targets(black_hole: BlackHole) -> list[str]:
    return [
        f"silent.test:{black_hole.port}",
        f"closed.test:{closed_port()}",
        "private.test:5671",
        "nowhere.test:5671",
    ]


async def answer_to(services: Services, account: str, **changes: Any) -> Any:
    """What saving this connection answers: the problem, or the health it was saved with."""
    connection = a_connection(**changes)
    try:
        health = await health_after_save(services, stored(connection, account), True, None)
    except DOMAIN_ERRORS as e:  # what the HTTP layer answers for it
        problem = problem_of(e)
        return (problem.status, problem.title, problem.detail, problem.errors)
    assert health is not None
    return ("saved", health.status, health.last_error and health.last_error.type)


async def test_every_unreachable_namespace_gets_the_same_answer(
    strict: Services, account: str, black_hole: BlackHole
) -> None:
    answers = [
        await answer_to(strict, account, ServiceBusConnectionString=f"Endpoint=sb://{t}/;{KEY}")
        for t in targets(black_hole)
    ]
    assert len(set(map(json.dumps, answers))) == 1, answers
    status, title, _, errors = answers[0]
    assert (status, title) == (400, "Verification failed")
    assert list(errors) == ["ServiceBusConnectionString"]
    for secret in ("127.0.0.1", "10.0.0.1", str(black_hole.port), "resolve", "ocket", "ime"):
        assert secret not in json.dumps(answers[0])


async def test_every_unreachable_container_gets_the_same_answer(
    strict: Services, account: str, black_hole: BlackHole, servicebus_emulator: Emulator
) -> None:
    answers = [
        await answer_to(
            strict,
            account,
            ServiceBusConnectionString=servicebus_emulator.connection_string,
            QueueName=f"q-{account}",
            BlobContainerConnectionString=f"BlobEndpoint=http://{t}/acct;{BLOB_KEY}",
            BlobContainerName="large",
        )
        for t in targets(black_hole)
    ]
    assert len(set(map(json.dumps, answers))) == 1, answers
    status, _, _, errors = answers[0]
    assert (status, list(errors)) == (400, ["BlobContainerConnectionString"])


async def test_an_unreachable_answer_waits_out_the_budget_whatever_came_first() -> None:
    asked: list[float] = []

    async def pause(seconds: float) -> None:
        asked.append(seconds)

    await no_sooner_than(100.0, 10.0, timer=lambda: 100.25, pause=pause)  # closed: at once
    await no_sooner_than(100.0, 10.0, timer=lambda: 110.5, pause=pause)  # silent: the budget
    assert asked == [9.75, 0.0]


@pytest.fixture
def two_a_minute() -> Iterator[None]:
    """The API's rate limiter allowing two verifications a minute, time standing still."""
    saved = http.rate_limiter
    http.rate_limiter = RateLimiter(Limits(verifications_per_minute=2), lambda: 1000.0)
    yield
    http.rate_limiter = saved


async def test_verifications_are_limited_per_account(
    api: Api, two_a_minute: None, servicebus_emulator: Emulator, unique_queue: str
) -> None:
    sent = body(ServiceBusConnectionString=servicebus_emulator.connection_string,
                QueueName=unique_queue, BlobContainerConnectionString=None,
                BlobContainerName=None)  # fmt: skip
    assert [(await api.call("POST", PATH, sent))[0] for _ in range(2)] == [200, 200]
    async with api.session.post(PATH, json=sent) as refused:
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert (await api.call("POST", UNVERIFIED, sent))[0] == 200  # no message: not limited
    status, listed = await api.call("GET", PATH)
    assert status == 200 and len(listed) == 3  # the refused one was not saved
