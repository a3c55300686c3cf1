"""The tenant portal: sign-in links (here) and the static pages it serves (static/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.services import Services

STATIC = Path(__file__).parent / "static"
LOCAL_BASE_URL = "http://127.0.0.1:7071"


def base_url() -> str:
    """Where the app is reached: PORTAL_BASE_URL, else Azure's WEBSITE_HOSTNAME, else local."""
    if explicit := os.environ.get("PORTAL_BASE_URL"):
        return explicit.rstrip("/")
    if host := os.environ.get("WEBSITE_HOSTNAME"):
        return f"https://{host}"
    return LOCAL_BASE_URL


async def sign_in_link(
    services: Services, account: str, minutes: int = 60, base: str | None = None
) -> str:
    """A one-time link that signs its opener in to `account`'s portal, valid `minutes`.

    The code travels in the URL's fragment, which browsers never send to a server (no access
    log or Referer holds it); the page posts it once and forgets it.
    """
    code = await services.portal_sessions.new_code(account, minutes, services.clock())
    return f"{base or base_url()}/portal/#signin={code}"
