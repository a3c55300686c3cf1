"""The audit log as the API shows it (`GET /v1/audit`)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from shared.models.base import ApiModel, Timestamp


class AuditQuery(ApiModel):
    """Query string of the audit log (lax types: query values arrive as text)."""

    model_config = ConfigDict(extra="ignore")

    page_size: int = Field(50, ge=1, le=100, description="Entries per page.")
    cursor: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[0-9]{8}:[A-Za-z0-9._-]{1,64}\|[0-9]{15}\|[0-9a-f]{8}$",
        description="NextCursor of the previous page.",
    )


class AuditEntryView(ApiModel):
    at: Timestamp
    key_id: str = Field(
        description="The key that made the change; empty for the portal, cli for the command line."
    )
    action: str = Field(description="e.g. connection.create, apikey.rotate")
    target: str = Field(description="The connection's uid or the key's id.")
    outcome: str = Field(
        description="done; refused (nothing changed); attempted (written before the change, "
        "never completed: the change may have been made)."
    )


class AuditPage(ApiModel):
    entries: list[AuditEntryView]
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page.")
