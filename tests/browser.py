"""Where the browser tests find Chromium, and the accessibility check they run on each page.

PORTAL_CHROMIUM names the browser's executable; else `chromium` or `chromium-browser` on the
PATH (Debian's `chromium` package; `make test` installs it where apt-get can). Without one
the browser tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.async_api import Page

ROOT = Path(__file__).resolve().parents[1]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
BROWSER_VARIABLE = "PORTAL_CHROMIUM"


def find_chromium() -> str | None:
    if configured := os.environ.get(BROWSER_VARIABLE):
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it stands.

    axe is evaluated through the DevTools protocol, which the page's CSP does not govern, so
    the page is checked under the policy it really has.
    """
    await page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = await page.evaluate(
        "async () => (await axe.run(document)).violations"
        ".filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}))"
    )
    return found
