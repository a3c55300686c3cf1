"""The service itself: health, portal sign-in and session, problem details (RFC 9457)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    Field,
)

from shared.models.base import ApiModel, Timestamp

if TYPE_CHECKING:
    pass


class Health(ApiModel):
    status: Literal["Healthy"]
    storage: str
    version: str


class PortalSignIn(ApiModel):
    """The one-time code of a sign-in link (an API key goes in the Authorization header)."""

    code: str = Field(min_length=1, max_length=100)


class PortalLinkRequest(ApiModel):
    """What `POST /v1/portal/links` is asked for."""

    minutes: int = Field(
        60, ge=1, le=1440, description="How long the link works, 1 to 1440 (a day)."
    )


class PortalLink(ApiModel):
    """A one-time portal sign-in link: the session it opens holds at most the issuing key's
    scopes, connections and lifetime."""

    url: str = Field(description="Open once: signs its opener in to the account's portal.")
    expires_at: Timestamp = Field(description="The link works until then (unused).")


class PortalSessionInfo(ApiModel):
    """A portal session as its page sees it; CsrfToken goes in X-CSRF-Token on changes."""

    account: str
    expires_at: Timestamp | None
    csrf_token: str | None


class Problem(BaseModel):
    """RFC 9457 problem details (lowercase names, as the RFC spells them)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: dict[str, list[str]] | None = None
