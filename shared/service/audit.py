"""The audit log (issue 26): each change to connections and keys, by which key; read back
newest first with `GET /v1/audit`.

Every change is audited in one place, `audited`: the route decorator wraps a route that
names an `audit` action in it (shared/api/http.py), and the command line wraps its changes
in it with the key id `cli`. The entry is written `attempted` before the change, so a change
is never made unrecorded: if that write fails the change is not made (a 503). After the
change the entry is completed: `done`, or `refused` when the change was refused with a
domain error (a 4xx: nothing changed). If the completion fails the change stands and the
entry stays `attempted` (with the target known before the change); the caller gets its
answer, and the failure is logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import REFUSALS, InvalidField, Unavailable
from shared.storage.audit import ATTEMPTED, DONE, REFUSED, AuditEntry

if TYPE_CHECKING:
    from shared.models.audit import AuditPage, AuditQuery
    from shared.services import Services
    from shared.storage.audit import EntryRef

log = logging.getLogger("shared.audit")

CLI_KEY_ID = "cli"  # the key id of changes made on the command line (an operator)


@dataclass
class Change:
    """The change being audited; the code making it sets `target` once it is known."""

    target: str


@asynccontextmanager
async def audited(
    services: Services,
    account: str,
    key_id: str,
    action: str,
    target: object = "",
    refusals: tuple[type[Exception], ...] = REFUSALS,
) -> AsyncIterator[Change]:
    """Audit the change made in the `async with` body (see the module's docstring);
    `refusals` are the exceptions that mean nothing was changed."""
    change = Change(str(target or ""))
    entry = AuditEntry(services.clock(), key_id, action, change.target, ATTEMPTED)
    try:
        ref = await services.audit.record(account, entry)
    except Exception:
        log.exception("the audit entry of %s could not be written; nothing changed", action)
        raise Unavailable("the audit log could not be written; nothing was changed") from None
    try:
        yield change
    except refusals:
        await _complete(services, ref, REFUSED, change, action)
        raise
    await _complete(services, ref, DONE, change, action)


async def _complete(
    services: Services, ref: EntryRef, outcome: str, change: Change, action: str
) -> None:
    try:
        await services.audit.complete(ref, outcome, change.target)
    except Exception:  # the change stands; its entry stays `attempted`
        log.exception("the audit entry of %s stays attempted (outcome %s)", action, outcome)


async def page(services: Services, account: str, query: AuditQuery) -> AuditPage:
    from shared.models.audit import AuditEntryView, AuditPage  # pydantic on first use

    try:
        entries, cursor = await services.audit.page(
            account, services.clock(), query.page_size, query.cursor
        )
    except ValueError:
        raise InvalidField("cursor", "not a NextCursor of this account's audit log") from None
    views = [
        AuditEntryView(
            at=e.at, key_id=e.key_id, action=e.action, target=e.target, outcome=e.outcome
        )
        for e in entries
    ]
    return AuditPage(entries=views, next_cursor=cursor)
