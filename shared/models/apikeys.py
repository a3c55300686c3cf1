"""API keys managed through the API (`/v1/apikeys`): what a key is made with, and what is
shown of it (the secret only once, in the answer that made or rotated it)."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from shared.models.access import Scope
from shared.models.base import ApiModel, Timestamp
from shared.models.replays import BodyTime

MOST_CONNECTIONS_PER_KEY = 100
# How long a rotated key's old secret keeps working: long enough to roll a deployment,
# short enough that a leaked secret is not kept alive by rotating it.
MOST_OVERLAP_SECONDS = 7 * 24 * 3600
DEFAULT_OVERLAP_SECONDS = 3600


class ApiKeyToCreate(ApiModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    # Only these connections, when given (routes naming another answer 403).
    connection_uids: list[UUID] | None = Field(
        None, min_length=1, max_length=MOST_CONNECTIONS_PER_KEY
    )
    expires_at: BodyTime | None = None


class RotateApiKey(ApiModel):
    overlap_seconds: int = Field(DEFAULT_OVERLAP_SECONDS, ge=0, le=MOST_OVERLAP_SECONDS)


class ApiKey(ApiModel):
    key_id: str
    name: str
    scopes: list[Scope]
    connection_uids: list[UUID] | None = None
    expires_at: Timestamp | None = None
    created_at: Timestamp


class ApiKeyWithSecret(ApiKey):
    """A key with its secret: shown once, when made or rotated; store it now."""

    key: str
    # When the secret it replaces stops working (rotation only).
    previous_key_expires_at: Timestamp | None = None
