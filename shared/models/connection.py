"""A stored connection as the API returns it, its health and its Entra ID consent."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from shared.models.base import ApiModel, Timestamp
from shared.models.connectioninput import ConnectionInput
from shared.models.records import DeliveryError

if TYPE_CHECKING:
    pass


class HealthStatus(StrEnum):
    """How a connection's deliveries are going (issue 15)."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"  # the last deliveries failed with Transient errors
    FAILING = "Failing"  # the last deliveries failed with Configuration errors
    SUSPENDED = "Suspended"  # failing for SUSPEND_AFTER_SECONDS: events are kept, not sent


class ConnectionHealth(ApiModel):
    """A connection's health, derived from its delivery outcomes (read-only; eventually
    consistent within a minute)."""

    status: HealthStatus = HealthStatus.HEALTHY
    since: Timestamp = Field(description="When Status last changed.")
    last_success_at: Timestamp | None = None
    last_failure_at: Timestamp | None = None
    consecutive_failures: int = Field(0, description="Failed deliveries since the last success.")
    last_error: DeliveryError | None = None


class Connection(ConnectionInput):
    """A stored connection, as the API returns it (secrets shown as ***)."""

    uid: UUID
    health: ConnectionHealth | None = Field(
        None, description="Read-only: ignored when sent, so a client can PUT back what it got."
    )
    confirmed: bool = Field(
        True,
        description="Read-only. False for an Authentication EntraId connection until its owner "
        "posts back the one-time code its verification message carried (POST .../confirm): "
        "until then nothing is delivered (events are kept). Always true for connection strings.",
    )

    @model_validator(mode="after")
    def _entra_id_starts_unconfirmed(self) -> Connection:
        if "confirmed" not in self.model_fields_set:
            self.confirmed = self.authentication != "EntraId"
        return self


class ConfirmRequest(ApiModel):
    """The one-time code of an Entra ID connection's verification message."""

    code: str = Field(min_length=1, max_length=32, examples=["K7WQ2-MZ4PA"])


class ConsentQuery(ApiModel):
    """Query string of the admin-consent link (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    tenant_id: UUID = Field(description="The Entra ID tenant whose administrator will consent.")


class ConsentLink(ApiModel):
    consent_url: str = Field(description="Entra ID's admin-consent page, with a signed state.")
    expires_at: Timestamp = Field(description="The link's state is refused after this.")


class ConsentCallbackQuery(ApiModel):
    """What Entra ID adds to the redirect after an administrator's consent (or refusal)."""

    model_config = ConfigDict(extra="ignore", alias_generator=None)

    tenant: str | None = Field(None, max_length=100)
    state: str | None = Field(None, max_length=1000)
    admin_consent: str | None = Field(None, max_length=10)
    error: str | None = Field(None, max_length=200)


class TenantConsented(ApiModel):
    tenant_id: UUID
    account: str
