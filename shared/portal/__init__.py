"""The tenant portal: sign-in links (here) and the static pages it serves (static/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from shared.services import Services
    from shared.storage.apikeys import Grant

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
    """A one-time link that signs its opener in to `account`'s portal with every right of
    the account (the command line's, for an operator), valid `minutes`."""
    from shared.storage.apikeys import Grant

    return (await issue_link(services, Grant(account), minutes, base))[0]


async def issue_link(
    services: Services, grant: Grant, minutes: int = 60, base: str | None = None
) -> tuple[str, datetime]:
    """A one-time sign-in link to `grant`'s account and when it expires; the session it
    opens holds `grant`'s rights and no more (scopes, connections, the key's expiry). The one
    way links are made: `POST /v1/portal/links` and `portal link` on the command line.

    The code travels in the URL's fragment, which browsers never send to a server (no access
    log or Referer holds it); the page posts it once and forgets it.
    """
    code, expires = await services.portal_sessions.new_link_code(
        grant.account, minutes, services.clock(), grant
    )
    return f"{base or base_url()}/portal/#signin={code}", expires
