"""API keys managed through the API: a key makes keys for its own account, and only with
rights it holds itself (scopes, connections, lifetime), so no key can raise itself."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from shared.errors import InvalidField, NotFound
from shared.models.apikeys import ApiKey, ApiKeyToCreate, ApiKeyWithSecret, RotateApiKey
from shared.storage.apikeys import NewKey

if TYPE_CHECKING:
    from datetime import datetime

    from shared.services import Services
    from shared.storage.apikeys import ApiKeyInfo, Grant


def view(info: ApiKeyInfo) -> ApiKey:
    uids = None if info.connections is None else sorted(info.connections, key=str)
    return ApiKey(
        key_id=info.key_id,
        name=info.name,
        scopes=sorted(info.scopes),
        connection_uids=uids,
        expires_at=info.expires_at,
        created_at=info.created_at,
    )


def _with_secret(info: ApiKeyInfo, key: str, old_ends: datetime | None = None) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**view(info).model_dump(), key=key, previous_key_expires_at=old_ends)


def _no_escalation(caller: Grant, request: ApiKeyToCreate, now: datetime) -> NewKey:
    """The key asked for, refused where it would hold a right its maker does not."""
    scopes = frozenset(request.scopes)
    if extra := scopes - caller.scopes:
        held = ", ".join(sorted(extra))
        raise InvalidField("Scopes", f"a key grants only scopes it holds; not: {held}")
    uids = None if request.connection_uids is None else frozenset(request.connection_uids)
    if caller.connections is not None and (uids is None or not uids <= caller.connections):
        raise InvalidField("ConnectionUids", "a key grants only connections it may use")
    if request.expires_at is not None and request.expires_at <= now:
        raise InvalidField("ExpiresAt", "must be in the future")
    if caller.expires_at is not None and (
        request.expires_at is None or request.expires_at > caller.expires_at
    ):
        raise InvalidField("ExpiresAt", "a key grants no longer than it lasts itself")
    return NewKey(scopes, request.name, uids, request.expires_at)


async def create(services: Services, caller: Grant, request: ApiKeyToCreate) -> ApiKeyWithSecret:
    now = services.clock()
    new = _no_escalation(caller, request, now)
    key, info = await services.api_keys.create(caller.account, now, new)
    return _with_secret(info, key)


def _within(caller: Grant, key: ApiKeyInfo) -> bool:
    """Whether the caller may see and manage `key`: a key restricted to connections manages
    only keys restricted to some of them (rotating a wider key would hand it a wider secret)."""
    if caller.connections is None:
        return True
    return key.connections is not None and key.connections <= caller.connections


async def list_keys(services: Services, caller: Grant) -> list[ApiKey]:
    found = await services.api_keys.for_account(caller.account)
    return [view(k) for k in found if _within(caller, k)]


async def _managed(services: Services, caller: Grant, key_id: str) -> ApiKeyInfo:
    info = await services.api_keys.get(key_id, caller.account)
    if not _within(caller, info):
        raise NotFound(f"no API key {key_id!r}")  # as if it did not exist
    return info


async def get(services: Services, caller: Grant, key_id: str) -> ApiKey:
    return view(await _managed(services, caller, key_id))


async def delete(services: Services, caller: Grant, key_id: str) -> None:
    await _managed(services, caller, key_id)
    await services.api_keys.revoke(key_id, caller.account)


async def rotate(
    services: Services, caller: Grant, key_id: str, request: RotateApiKey
) -> ApiKeyWithSecret:
    await _managed(services, caller, key_id)
    overlap = timedelta(seconds=request.overlap_seconds)
    key, info, old_ends = await services.api_keys.rotate(key_id, caller.account, overlap)
    return _with_secret(info, key, old_ends)
