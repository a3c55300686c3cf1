"""The portal in a real browser (Playwright driving Chromium) against the app over real HTTP,
with Azurite and the Service Bus emulator: the flows of issue 18 and an axe-core check of
each page. Screenshots of each page go to $PORTAL_SCREENSHOTS when it is set (README).

Parts that need routes of a later issue (replay, stats, health) skip until the app's OpenAPI
document lists the route, and then run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.api.http import SESSION_COOKIE
from shared.events import new_event
from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.portal import sign_in_link
from shared.services import Services
from tests.browser import find_chromium, serious_violations
from tests.factories import PATH, UNVERIFIED, log_records
from tests.plugins.app import Api

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: apt-get install chromium, or set PORTAL_CHROMIUM to its executable",
)
SCREENSHOTS = os.environ.get("PORTAL_SCREENSHOTS")
if SCREENSHOTS:
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)


def app_lists(path: str) -> bool:
    """Whether the app's OpenAPI document (the one /v1/openapi.json serves) has `path`."""
    import function_app  # noqa: F401  (registers every route)
    from shared.api.openapi import document

    def shape(route: str) -> str:  # parameter names may differ: {uid}, {connectionUid}
        return re.sub(r"\{[^}]*\}", "{}", route)

    return shape(path) in {shape(p) for p in document()["paths"]}


def connections_have_health() -> bool:
    from shared.api.openapi import document

    connection = document()["components"]["schemas"].get("Connection", {})
    return "Health" in connection.get("properties", {})


def needs_route(path: str, issue: int) -> Any:
    return pytest.mark.skipif(not app_lists(path), reason=f"{path} arrives with issue {issue}")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


class Portal:
    """One signed-in browser tab, and what the page refused under its CSP."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.csp_errors: list[str] = []
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_errors.append(message.text)

    async def open(self, fragment: str) -> None:
        await self.page.goto(f"{self.base}/portal/#{fragment}")

    def heading(self, name: str) -> Any:
        return self.page.get_by_role("heading", name=name, exact=True)

    def button(self, name: str) -> Any:
        return self.page.get_by_role("button", name=name, exact=True)

    async def check(self, name: str) -> None:
        """No serious accessibility finding, and a screenshot when asked for."""
        assert await serious_violations(self.page) == [], name
        if SCREENSHOTS:
            await self.page.screenshot(path=f"{SCREENSHOTS}/{name}.png", full_page=True)


@pytest.fixture
async def portal(
    browser: Any, api_host: str, services: Services, account: str
) -> AsyncIterator[Portal]:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    tab = Portal(page, api_host)
    await page.goto(await sign_in_link(services, account, 5, api_host))
    await tab.heading("Connections").wait_for()
    yield tab
    assert tab.csp_errors == []  # the page never needs what its policy forbids
    await context.close()


async def make_connection(api: Api, connection_string: str, queue: str) -> str:
    """Saved without the verification send: some tests save a wrong key on purpose."""
    body = {"Title": "ERP", "ServiceBusConnectionString": connection_string, "QueueName": queue}
    status, created = await api.call("POST", UNVERIFIED, {**body, "EnabledEvents": ["*"]})
    assert status == 200, created
    return str(created["Uid"])


async def test_a_link_signs_in_and_a_new_connection_shows_errors_next_to_the_field(
    portal: Portal, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = portal.page
    assert "signin=" not in page.url  # the one-time code is gone from the address bar
    await portal.check("connections-empty")
    await page.get_by_role("link", name="New connection").click()
    await page.get_by_label("Service Bus connection string").fill(servicebus_connection_string)
    await page.get_by_label("Queue name").fill("not a queue!")
    await portal.button("Create connection").click()  # every field: tests/test_portal_form.py
    await expect(page.locator("#e-QueueName")).not_to_have_text("")
    assert await page.get_by_label("Queue name").get_attribute("aria-invalid") == "true"
    await portal.check("connection-errors")

    await page.get_by_label("Queue name").fill(unique_queue)
    await portal.button("Create connection").click()
    await page.wait_for_url(re.compile(r"#/connections/[0-9a-f-]{36}$"))
    await portal.button("Send test message").wait_for()
    assert await page.get_by_label("Service Bus connection string").input_value() == ""
    assert "SharedAccessKey=***" in await page.locator("#w-ServiceBusConnectionString").inner_text()
    assert "SAS_KEY_VALUE" not in await page.content()
    await portal.open("/")
    await page.get_by_role("cell", name=unique_queue).wait_for()


async def test_test_message_log_filter_detail_and_resend(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = portal.page
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    await portal.open(f"/connections/{uid}")
    await portal.button("Send test message").click()
    await page.get_by_role("heading", name="Message System.Test").wait_for()

    # The same connection with a wrong key: the next test message fails.
    status, connection = await api.call("GET", f"{PATH}/{uid}")
    wrong = servicebus_connection_string.replace("SAS_KEY_VALUE", "wrong-key")
    changed = {**connection, "ServiceBusConnectionString": wrong}
    status, _ = await api.call("PUT", UNVERIFIED, changed)  # saved as it is, to fail later
    assert status == 200
    await portal.open(f"/connections/{uid}")
    await portal.check("connection")
    await portal.button("Send test message").click()
    await page.get_by_role("heading", name="Message System.Test").wait_for()

    await portal.open(f"/connections/{uid}/log")
    table = page.get_by_role("table", name="Delivery log")
    await table.wait_for()
    rows = table.locator("tbody tr")
    assert await rows.count() == 2
    assert await table.get_by_role("cell", name="Succeeded").count() == 1
    await portal.check("delivery-log")
    await page.get_by_label("Only failed").check()
    await portal.button("Search").click()
    await page.get_by_text("Page 1 of 1 (1 messages)").wait_for()
    assert await rows.count() == 1
    assert await table.get_by_role("cell", name="Failed").count() == 1

    await table.get_by_role("link", name="Details").click()
    await portal.button("Re-send").wait_for()
    body = await page.locator("pre").first.inner_text()
    assert '\n  "' in body  # pretty-printed JSON
    error = page.locator("dd", has_text="ServiceBusAuthenticationError")  # the record's Error
    assert "check the key" in await error.inner_text()
    todo = page.locator("dt:has-text('What to do') + dd")  # by the error's type (health.js)
    assert (await todo.inner_text()).startswith("Authentication: the namespace refused the key")
    failed_url = page.url
    await portal.check("message")
    await portal.button("Re-send").click()
    await page.get_by_role("button", name="Yes, re-send").click()  # after a confirmation
    await page.wait_for_url(lambda url: url != failed_url)
    parent = failed_url.rsplit("/", 1)[1]
    await page.get_by_role("link", name=parent).wait_for()  # "Retry of" the message re-sent


async def test_the_log_pages_and_searches_the_whole_log(
    portal: Portal, api: Api, services: Services, account: str, servicebus_connection_string: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, "q1")
    stored = await services.connections.get(account, uuid.UUID(uid))
    now, hour = services.clock(), timedelta(hours=1)
    newest = log_records(stored.uid, 5, now, span=hour, event_key="Employee.Created")
    older = log_records(
        stored.uid, 55, now - hour, span=hour, event_key="Order.Shipped", account=account
    )
    await services.messages.add(stored.log_partition, newest + older)
    page = portal.page
    await portal.open(f"/connections/{uid}/log")
    rows = page.get_by_role("table", name="Delivery log").locator("tbody tr")
    await page.get_by_text("Page 1 of 2 (60 messages)").wait_for()
    assert await rows.count() == 50
    await portal.button("Next page").click()
    await page.get_by_text("Page 2 of 2 (60 messages)").wait_for()
    assert await rows.count() == 10
    await portal.button("Previous page").click()
    await page.get_by_text("Page 1 of 2").wait_for()
    # the API searches the whole log: the oldest Order.Shipped is on no page shown so far
    await page.get_by_label("Event key (or Prefix.*)").fill("Order.*")
    await portal.button("Search").click()
    await page.get_by_text("Page 1 of 2 (55 messages)").wait_for()
    assert await rows.filter(has_text="Order.Shipped").count() == 50
    await portal.check("delivery-log-search")
    await page.get_by_label("Event key (or Prefix.*)").fill("")
    await page.get_by_label("Event ID").fill(older[-1].event_id)
    await portal.button("Search").click()
    await page.get_by_text("Page 1 of 1 (1 messages)").wait_for()
    assert "eventId=" in page.url  # a search is a link
    await page.get_by_label("Event ID").fill("no/such#id")  # no EventId holds these
    await portal.button("Search").click()
    await expect(page.get_by_role("alert")).to_contain_text("EventId")


async def test_the_keyboard_alone_sends_a_test_message(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = portal.page
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    await page.reload()  # the list, with the new connection
    await page.get_by_role("link", name="ERP").wait_for()
    await page.keyboard.press("Tab")  # from the top of the page
    for _ in range(10):
        if await page.evaluate("document.activeElement.textContent") == "ERP":
            break
        await page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached the connection's link")
    await page.keyboard.press("Enter")  # the connection's link
    await page.wait_for_url(re.compile(f"#/connections/{uid}$"))
    await portal.button("Send test message").wait_for()  # the page moves focus to its main
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Send test message":
            break
    else:
        raise AssertionError("Tab never reached Send test message")
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Message System.Test").wait_for()


async def test_sign_out_ends_the_session_and_the_old_cookie_is_refused(
    portal: Portal, api_host: str
) -> None:
    cookies = await portal.page.context.cookies()
    session = next(c for c in cookies if c["name"] == SESSION_COOKIE)
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    await portal.button("Sign out").click()
    await portal.heading("Sign in").wait_for()
    await portal.check("sign-in")
    headers = {"Cookie": f"{SESSION_COOKIE}={session['value']}"}
    async with aiohttp.ClientSession(api_host) as http, http.get(PATH, headers=headers) as r:
        assert r.status == 401


async def test_an_api_key_pasted_signs_in(browser: Any, api_host: str, api_key: str) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{api_host}/portal/")
    await page.get_by_label("API key").fill("sbd_wrong")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("That API key was not accepted.").wait_for()
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Connections").wait_for()
    await context.close()


@needs_route(PATH + "/{uid}/messages/replay", 15)
async def test_replay_failed_messages_of_a_window(
    portal: Portal,
    api: Api,
    services: Services,
    account: str,
    servicebus_connection_string: str,
    unique_queue: str,
) -> None:
    wrong = servicebus_connection_string.replace("SAS_KEY_VALUE", "wrong-key")
    uid = await make_connection(api, wrong, unique_queue)
    await services.publish(new_event(account, "Order.Shipped", services.clock(), subject="o/1"))
    failed = {"onlyFailed": "true"}
    for _ in range(100):  # its first attempt fails and is logged
        _, page = await api.call("GET", f"{PATH}/{uid}/messages", params=failed)
        if page["TotalHits"]:
            break
        await asyncio.sleep(0.2)
    assert page["TotalHits"] >= 1
    await portal.open(f"/connections/{uid}")
    page = portal.page
    await portal.button("Replay failed messages").click()
    dialog = page.get_by_role("dialog", name="Replay failed messages?")  # says what it sends
    await expect(dialog).to_contain_text(re.compile(r"[1-9]\d* deliver(y|ies) of this window"))
    async with page.expect_request(lambda r: r.url.endswith("/messages/replay")) as sent:
        await dialog.get_by_role("button", name="Yes, replay").click()
    body = json.loads((await sent.value).post_data or "{}")
    assert set(body) == {"Since", "OnlyFailed"} and body["OnlyFailed"] is True
    progress = re.compile(r"Replay: \d+ sent, \d+ failed of [1-9]\d* — done\.")
    await page.get_by_text(progress).wait_for(timeout=30_000)
    await portal.check("connection-replay")


@needs_route(PATH + "/{uid}/stats", 14)
async def test_the_chart_shows_deliveries_per_hour(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    status, _ = await api.call("POST", f"{PATH}/{uid}/test")
    assert status == 200
    await portal.open(f"/connections/{uid}")
    chart = portal.page.get_by_role("img", name=re.compile("Deliveries per hour"))
    await chart.wait_for()
    assert "1 in all" in (await chart.get_attribute("aria-label") or "")
    await portal.check("connection-chart")


@pytest.mark.skipif(not connections_have_health(), reason="Health arrives with issue 15")
async def test_the_list_shows_each_connections_health(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    await portal.open(f"/connections/{uid}")
    await portal.button("Send test message").wait_for()
    assert await portal.button("Resume").count() == 0  # only where suspended
    await portal.open("/")
    row = portal.page.get_by_role("row").filter(has_text=unique_queue)
    await row.get_by_role("cell", name="Healthy").wait_for()


@needs_route(PATH + "/{uid}/resume", 15)
async def test_resume_ends_a_suspension_shown_on_the_page(
    portal: Portal,
    api: Api,
    services: Services,
    account: str,
    servicebus_connection_string: str,
    unique_queue: str,
) -> None:
    """The suspension itself (days of Configuration failures) is tested in
    tests/test_connection_health.py; here its health row is written as the tracker would."""
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    now = services.clock()
    suspended = HealthState(HealthStatus.SUSPENDED, now, last_failure_at=now, failing_since=now)
    await services.health.put(account, uuid.UUID(uid), suspended)
    await portal.open(f"/connections/{uid}")
    await portal.button("Resume").click()
    await portal.page.get_by_text("Resumed.").wait_for()
    assert await portal.button("Resume").count() == 0
    _, connection = await api.call("GET", f"{PATH}/{uid}")
    assert connection["Health"]["Status"] != "Suspended"
    await portal.check("connection-resumed")


async def test_an_unconfirmed_entra_id_connection_is_confirmed_with_its_code(
    portal: Portal, api: Api, services: Services, account: str
) -> None:
    """The code's journey (the verification message carrying it, over the API) is tested in
    tests/test_ownership.py; here the connection and its code are stored as a save leaves
    them (Entra ID cannot run here)."""
    from shared.service.ownership import destination
    from tests.factories import a_connection

    entra = a_connection(
        Title="Entra",
        ServiceBusConnectionString=None,
        Authentication="EntraId",
        FullyQualifiedNamespace="contoso.servicebus.windows.net",
        TenantId=str(uuid.uuid4()),
    )
    now = services.clock()
    stored = await services.connections.add(account, entra, now)
    await services.ownership.keep_code(account, stored.uid, destination(entra), "ABCDE-FGHJK", now)
    await portal.open(f"/connections/{stored.uid}")
    await portal.heading("Confirm this connection").wait_for()
    await portal.open("/")
    await portal.page.get_by_role("row").filter(has_text="Entra (unconfirmed)").wait_for()
    await portal.open(f"/connections/{stored.uid}")
    code = portal.page.get_by_label("Confirmation code")
    await code.fill("WRONG-CODE1")
    await portal.button("Confirm").click()
    await expect(portal.page.locator("#e-Code")).not_to_have_text("")
    assert await code.get_attribute("aria-invalid") == "true"
    await portal.check("connection-unconfirmed")
    await code.fill("abcde-fghjk")
    await portal.button("Confirm").click()
    await portal.page.get_by_text("Confirmed.", exact=True).wait_for()
    assert await portal.button("Confirm").count() == 0
    _, connection = await api.call("GET", f"{PATH}/{stored.uid}")
    assert connection["Confirmed"] is True
