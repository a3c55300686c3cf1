"""The portal: bytes of a first load, and the time the delivery log shows its first page.

    python -m bench.bench_portal [--quick] [--records N] [--runs N]

Starts Azurite and the app in `python -m local.host --no-triggers` (own process), one account
with one connection whose log holds 10,000 records, and Chromium (Playwright; see README).
Measured in a fresh browser context each run (no cache), signed in with a session cookie:
- first load of `/portal/` up to the connection list shown: bytes transferred (DevTools'
  encodedDataLength: headers and bodies of every response); raw baseline: the portal's three
  static files alone (index.html, its modules, style.css), as bytes on disk;
- `/portal/#/connections/{uid}/log` from navigation to the table's first row shown (page,
  scripts, session, OpenAPI document and the first page of 50 messages with TotalHits);
  raw baseline: the same first page of messages by the API alone (aiohttp, keep-alive).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.bench_api import fill_log
from bench.common import (
    Result,
    app_environment,
    app_settings,
    arguments,
    azurite,
    local_host,
    machine,
    median,
    new_keys,
    report,
    unique,
)
from shared.api.http import SESSION_COOKIE
from shared.portal import STATIC
from shared.services import Services
from tests.browser import find_chromium
from tests.factories import a_connection, log_records

PAGE_SIZE = 50  # what the portal asks for


async def first_load_bytes(browser: Any, url: str, cookie: dict[str, Any]) -> int:
    context = await browser.new_context()
    await context.add_cookies([cookie])
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    sizes: list[int] = []
    cdp.on("Network.loadingFinished", lambda e: sizes.append(int(e["encodedDataLength"])))
    await page.goto(f"{url}/portal/")
    await page.get_by_role("heading", name="Connections").wait_for()
    await page.get_by_role("table", name="Connections").wait_for()
    await page.wait_for_load_state("networkidle")
    await context.close()
    return sum(sizes)


async def log_page_seconds(browser: Any, url: str, cookie: dict[str, Any], uid: str) -> float:
    context = await browser.new_context()
    await context.add_cookies([cookie])
    page = await context.new_page()
    started = time.perf_counter()
    await page.goto(f"{url}/portal/#/connections/{uid}/log")
    await page.get_by_role("table", name="Delivery log").locator("tbody tr").first.wait_for()
    seconds = time.perf_counter() - started
    rows = await page.get_by_role("table", name="Delivery log").locator("tbody tr").count()
    assert rows == PAGE_SIZE, rows
    await context.close()
    return seconds


async def api_page_seconds(url: str, key: str, uid: str) -> float:
    async with aiohttp.ClientSession(url, headers={"Authorization": key}) as http:
        path = f"/v1/azureservicebusconnections/{uid}/messages?page=1&pageSize={PAGE_SIZE}"
        async with http.get(path) as warm:
            await warm.read()
        started = time.perf_counter()
        async with http.get(path) as response:
            await response.read()
        return time.perf_counter() - started


async def measure(n_records: int, runs: int) -> list[Result]:
    from playwright.async_api import async_playwright

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium: apt-get install chromium, or set PORTAL_CHROMIUM")
    keys = new_keys()
    with azurite() as started:
        storage = started.connection_string
        services = await Services.open(app_settings(storage, keys))
        account, now = unique("bench"), datetime.now(UTC)
        key, _ = await services.api_keys.create(account, now)
        stored = await services.connections.add(account, a_connection(), now)
        records = log_records(stored.uid, n_records, now)
        seconds = await fill_log(services, stored, records)
        print(f"  {n_records:,} records written in {seconds:.1f} s", flush=True)
        session = await services.portal_sessions.start(account, now)
        await services.close()
        uid = str(stored.uid)
        with local_host(app_environment(storage, keys), "--no-triggers") as host:
            cookie = {"name": SESSION_COOKIE, "value": session.token, "url": host.url}
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=chromium)
                loaded = await first_load_bytes(browser, host.url, cookie)
                await log_page_seconds(browser, host.url, cookie, uid)  # warm the host
                ours = [await log_page_seconds(browser, host.url, cookie, uid) for _ in range(runs)]
                await browser.close()
            raw = [await api_page_seconds(host.url, key, uid) for _ in range(runs)]
    static = sum(len(p.read_bytes()) for p in STATIC.iterdir())
    return [
        Result("portal", "first load, bytes transferred", loaded / 1000, "KB", raw=static / 1000,
               target="< 200 KB", higher_is_better=False,
               note="raw: the three static files on disk"),
        Result("portal", f"delivery log first page, {n_records:,} records, median of {runs}",
               median(ours) * 1000, "ms", raw=median(raw) * 1000, target="< 1,000 ms",
               higher_is_better=False, note="raw: the API's first page alone"),
    ]  # fmt: skip


def main() -> None:
    args = arguments(
        __doc__,
        records=(int, "records in the connection's log (default 10,000)"),
        runs=(int, "timed loads of the log page (default 5, 3 with --quick)"),
    )
    print(f"portal: {machine()}", flush=True)
    runs = args.runs or (3 if args.quick else 5)
    report(asyncio.run(measure(args.records or 10_000, runs)))


if __name__ == "__main__":
    main()
