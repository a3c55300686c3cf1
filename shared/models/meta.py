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
