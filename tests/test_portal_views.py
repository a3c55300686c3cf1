"""The portal's views of issue 26 in a real browser (Playwright driving Chromium) against the
app over real HTTP, with Azurite and the Service Bus emulator: times in the viewer's zone,
the chart, the health card and health notices, one view per delivery, confirmations before
sending, and a sign-in link pasted into an open tab. Fixtures: tests/test_portal_browser.py.

Health rows are written as the tracker writes them (services.health.put): the tracker itself,
and its System.ConnectionHealthChanged events, are tested in tests/test_connection_health.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from shared.api.http import SESSION_COOKIE
from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.models.records import DeliveryError, ErrorCategory, MessageStatus
from shared.portal import sign_in_link
from shared.services import Services
from tests import test_portal_browser as browser_tests
from tests.factories import PATH, a_record
from tests.plugins.app import Api
from tests.test_portal_browser import CHROMIUM, Portal, make_connection

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (see test_portal_browser)")
# Chromium and a signed-in tab: the fixtures of tests/test_portal_browser.py.
browser = browser_tests.browser
portal = browser_tests.portal

AUTH_FAILED = DeliveryError(
    category=ErrorCategory.CONFIGURATION,
    type="ServiceBusAuthenticationError",
    message="authentication failed: check the key or signature",
)


@asynccontextmanager
async def tab_in_zone(
    browser: Any, api_host: str, services: Services, account: str, zone: str
) -> AsyncIterator[Portal]:
    """A signed-in tab whose browser is in time zone `zone`."""
    context = await browser.new_context(
        viewport={"width": 1100, "height": 800}, timezone_id=zone, locale="en-GB"
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    tab = Portal(page, api_host)
    await page.goto(await sign_in_link(services, account, 5, api_host))
    await tab.heading("Connections").wait_for()
    yield tab
    assert tab.csp_errors == []
    await context.close()


@pytest.fixture
async def tokyo(
    browser: Any, api_host: str, services: Services, account: str
) -> AsyncIterator[Portal]:
    """A tab signed in from Tokyo (UTC+9, no daylight saving time)."""
    async with tab_in_zone(browser, api_host, services, account, "Asia/Tokyo") as tab:
        yield tab


async def test_times_are_in_the_viewers_zone_with_utc_on_hover(
    tokyo: Portal, api: Api, services: Services, account: str, servicebus_connection_string: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, "q1")
    stored = await services.connections.get(account, uuid.UUID(uid))
    sent = services.clock().replace(hour=1, minute=2, second=3, microsecond=0) - timedelta(days=1)
    record = a_record(stored.uid, sent, account=account)
    await services.messages.add(stored.log_partition, [record])
    await tokyo.open(f"/connections/{uid}/log")
    time = tokyo.page.get_by_role("table", name="Delivery log").locator("time").first
    await time.wait_for()
    assert await time.get_attribute("title") == sent.strftime("%Y-%m-%d 01:02:03 UTC")
    assert (await time.get_attribute("datetime") or "").startswith(sent.strftime("%Y-%m-%dT01:02"))
    assert "10:02:03" in await time.inner_text()  # 01:02 UTC is 10:02 in Tokyo
    await tokyo.page.get_by_text("Times are in your time zone (Asia/Tokyo)").wait_for()


async def test_the_chart_has_axes_latency_and_its_figures_as_a_table(
    portal: Portal, api: Api, services: Services, account: str, servicebus_connection_string: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, "q1")
    stored = await services.connections.get(account, uuid.UUID(uid))
    hour_ago = services.clock().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    records = [a_record(stored.uid, hour_ago, account=account, latency_ms=40) for _ in range(3)]
    records.append(a_record(stored.uid, hour_ago, MessageStatus.FAILED, account=account))
    await services.messages.add(stored.log_partition, records)
    await portal.open(f"/connections/{uid}")
    page = portal.page
    counts = page.get_by_role("img", name=re.compile("Deliveries per hour"))
    await counts.wait_for()
    label = await counts.get_attribute("aria-label") or ""
    assert "4 in all, 1 failed, at most 4 in an hour" in label
    assert await counts.locator("rect.bar-ok").count() == 1
    assert await counts.locator("rect.bar-failed").count() == 1
    assert await counts.locator("line.axis").count() >= 2 + 13  # x and y axes, a tick a day
    assert "5" in await counts.locator("text").all_text_contents()  # the y axis: 4 up to 5
    latency = page.get_by_role("img", name=re.compile("Latency per hour"))
    assert await latency.locator("path.line-p95").count() == 1
    await page.get_by_text("The figures of the 1 hours with deliveries").click()
    figures = page.get_by_role("table", name="Deliveries per hour")
    cells = await figures.locator("tbody td").all_inner_texts()
    assert cells[1:3] == ["3", "1"]  # delivered, failed
    await portal.check("connection-chart")


async def test_the_chart_marks_each_local_day_in_a_half_hour_zone(
    browser: Any,
    api: Api,
    api_host: str,
    services: Services,
    account: str,
    servicebus_connection_string: str,
) -> None:
    """In Kolkata (UTC+5:30) the UTC hours start at :30 local time: each day still gets its
    tick and its label."""
    uid = await make_connection(api, servicebus_connection_string, "q1")
    async with tab_in_zone(browser, api_host, services, account, "Asia/Kolkata") as tab:
        await tab.open(f"/connections/{uid}")
        counts = tab.page.get_by_role("img", name=re.compile("Deliveries per hour"))
        await counts.wait_for()
        days = [t for t in await counts.locator("text").all_text_contents() if t[:1].isdigit()]
        assert len([d for d in days if " " in d]) in (13, 14)  # "21 Nov": a label per day


async def test_the_health_card_says_what_happened_when_and_what_to_do(
    portal: Portal, api: Api, services: Services, account: str, servicebus_connection_string: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, "q1")
    failed_at = services.clock() - timedelta(minutes=5)
    failing = HealthState(
        HealthStatus.FAILING,
        failed_at - timedelta(minutes=1),
        last_failure_at=failed_at,
        consecutive_failures=12,
        last_error=AUTH_FAILED,
        failing_since=failed_at,
    )
    await services.health.put(account, uuid.UUID(uid), failing)
    await portal.open(f"/connections/{uid}")
    card = portal.page.get_by_role("region", name="Health: Failing")
    await card.wait_for()
    error = card.locator(".last-error")
    assert "Configuration · ServiceBusAuthenticationError" in await error.inner_text()
    when = error.locator("time")
    assert (await when.get_attribute("datetime") or "")[:19] == failed_at.isoformat()[:19]
    assert "Authentication: the namespace refused the key" in await error.inner_text()
    assert await portal.button("Resume").count() == 0  # only where suspended
    assert "null" not in await portal.page.locator("main").inner_text()  # no absent part shown
    await portal.check("connection-health")

    # Healthy again: the old error is history, shown with its time, and nothing to do.
    await services.health.put(account, uuid.UUID(uid), failing.resumed(services.clock()))
    await portal.page.reload()
    card = portal.page.get_by_role("region", name="Health: Healthy")
    await card.get_by_text("Earlier error (resolved)").wait_for()
    assert await card.locator(".last-error time").count() == 1

    suspended = HealthState(HealthStatus.SUSPENDED, failed_at, last_error=AUTH_FAILED)
    await services.health.put(account, uuid.UUID(uid), suspended)
    await portal.page.reload()
    card = portal.page.get_by_role("region", name="Health: Suspended")
    await card.get_by_role("button", name="Resume").wait_for()  # the action, in the card
    assert "events are kept, not sent" in await card.inner_text()


async def test_the_list_shows_recent_health_changes(
    portal: Portal, api: Api, services: Services, account: str, servicebus_connection_string: str
) -> None:
    broken = await make_connection(api, servicebus_connection_string, "q-broken")
    await make_connection(api, servicebus_connection_string, "q-quiet")  # never failed
    changed_at = services.clock() - timedelta(minutes=10)
    failing = HealthState(
        HealthStatus.FAILING, changed_at, last_failure_at=changed_at, last_error=AUTH_FAILED
    )
    await services.health.put(account, uuid.UUID(broken), failing)
    await portal.page.reload()
    notices = portal.page.get_by_role("region", name="Health changes in the last 24 hours")
    await notices.wait_for()
    items = notices.get_by_role("listitem")
    assert await items.count() == 1  # the quiet one is not news
    text = await items.inner_text()
    assert "became Failing: authentication failed" in text and "10 minutes ago" in text
    assert await items.locator("time").get_attribute("datetime") is not None
    await items.get_by_role("link", name="ERP").click()
    await portal.page.wait_for_url(re.compile(f"#/connections/{broken}$"))
    await portal.open("/")
    await notices.wait_for()
    await portal.check("connections-notices")


async def test_one_view_per_event_with_all_its_attempts_and_a_confirmed_resend(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = portal.page
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    status, first = await api.call("POST", f"{PATH}/{uid}/test")
    assert status == 200
    await portal.open(f"/connections/{uid}/messages/{first['Uid']}")
    await portal.button("Re-send").click()
    dialog = page.get_by_role("dialog", name="Re-send this message?")
    assert unique_queue in await dialog.inner_text()  # says where it goes
    await dialog.get_by_role("button", name="Cancel").click()
    await page.get_by_text("Nothing was sent.").wait_for()
    _, log = await api.call("GET", f"{PATH}/{uid}/messages")
    assert log["TotalHits"] == 1

    await portal.button("Re-send").click()
    await dialog.get_by_role("button", name="Yes, re-send").click()
    await page.wait_for_url(lambda url: not url.endswith(str(first["Uid"])))
    await portal.open(f"/connections/{uid}/log")
    table = page.get_by_role("table", name="Delivery log")
    await table.get_by_role("link", name="All attempts").first.click()
    await page.get_by_role("heading", name="Delivery of System.Test").wait_for()
    attempts = page.get_by_role("table", name="Attempts, oldest first").locator("tbody tr")
    assert await attempts.count() == 2
    after = await attempts.locator("td:nth-child(3)").all_inner_texts()
    assert after == ["—", "Attempt 1"]  # the re-send names the attempt it followed
    assert await page.locator("dd", has_text="Delivered").count() >= 1
    await portal.check("delivery")


async def test_replay_asks_first_with_the_window_and_cancel_sends_nothing(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    uid = await make_connection(api, servicebus_connection_string, unique_queue)
    await portal.open(f"/connections/{uid}")
    page = portal.page
    replays: list[str] = []
    page.on("request", lambda r: replays.append(r.url) if "/replay" in r.url else None)
    await portal.button("Replay failed messages").click()
    dialog = page.get_by_role("dialog", name="Replay failed messages?")
    text = await dialog.inner_text()
    assert "until now" in text and "UTC" in text  # the window, in both zones
    assert "0 deliveries of this window are not delivered now" in text
    await portal.check("connection-replay-confirm")
    await dialog.get_by_role("button", name="Cancel").click()
    await page.get_by_text("Nothing was replayed.").wait_for()
    assert replays == []


async def test_a_link_pasted_into_an_open_tab_signs_out_then_in(
    portal: Portal, services: Services, api_host: str
) -> None:
    page = portal.page
    cookies = await page.context.cookies()
    old = next(c for c in cookies if c["name"] == SESSION_COOKIE)["value"]
    other = f"acct-{uuid.uuid4().hex[:12]}"
    link = await sign_in_link(services, other, 5, api_host)
    await page.goto(link)  # the same page: only the fragment changes (a hashchange)
    await expect(page.locator("#account")).to_have_text(f"Account {other}")
    assert "signin=" not in page.url
    await portal.heading("Connections").wait_for()
    headers = {"Cookie": f"{SESSION_COOKIE}={old}"}
    async with aiohttp.ClientSession(api_host) as http, http.get(PATH, headers=headers) as r:
        assert r.status == 401  # the first account's session ended on the server


def test_the_health_card_has_advice_for_every_error_category_and_known_type() -> None:
    """What to do comes from health.js's tables: a category or error type the API gains
    fails here until the page says what to do about it."""
    from shared.endpoints import _TEXTS
    from shared.portal import STATIC

    script = (STATIC / "health.js").read_text(encoding="utf-8")

    def keys(table: str) -> set[str]:
        body = re.search(rf"^const {table} = \{{(.*?)^\}};", script, re.M | re.S)
        assert body, table
        added = re.findall(rf"^{table}\.(\w+) = ", script, re.M)
        return set(re.findall(r"^ {2}(\w+): ", body.group(1), re.M)) | set(added)

    assert {str(c) for c in ErrorCategory} <= keys("BY_CATEGORY")
    assert set(_TEXTS) <= keys("BY_TYPE")
