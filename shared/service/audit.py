"""The audit log (issue 26): each change to connections and keys, by which key; read back
newest first with `GET /v1/audit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import InvalidField
from shared.storage.audit import AuditEntry

if TYPE_CHECKING:
    from shared.models.audit import AuditPage, AuditQuery
    from shared.services import Services
    from shared.storage.apikeys import Grant


async def record(services: Services, grant: Grant, action: str, target: object) -> None:
    """Write that the caller's key did `action` on `target` (a uid or key id, never a secret)."""
    entry = AuditEntry(services.clock(), grant.key_id, action, str(target))
    await services.audit.record(grant.account, entry)


async def page(services: Services, account: str, query: AuditQuery) -> AuditPage:
    from shared.models.audit import AuditEntryView, AuditPage  # pydantic on first use

    try:
        entries, cursor = await services.audit.page(
            account, services.clock(), query.page_size, query.cursor
        )
    except ValueError:
        raise InvalidField("cursor", "not a NextCursor of this account's audit log") from None
    views = [
        AuditEntryView(at=e.at, key_id=e.key_id, action=e.action, target=e.target) for e in entries
    ]
    return AuditPage(entries=views, next_cursor=cursor)
