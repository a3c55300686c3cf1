"""Parsing, checking and masking of Service Bus and Storage connection strings."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"

_SERVICE_BUS_KEYS = {
    "endpoint": "Endpoint",
    "sharedaccesskeyname": "SharedAccessKeyName",
    "sharedaccesskey": "SharedAccessKey",
    "sharedaccesssignature": "SharedAccessSignature",
    "entitypath": "EntityPath",
    "usedevelopmentemulator": "UseDevelopmentEmulator",
}
_STORAGE_KEYS = {
    "defaultendpointsprotocol": "DefaultEndpointsProtocol",
    "accountname": "AccountName",
    "accountkey": "AccountKey",
    "sharedaccesssignature": "SharedAccessSignature",
    "endpointsuffix": "EndpointSuffix",
    "blobendpoint": "BlobEndpoint",
    "queueendpoint": "QueueEndpoint",
    "tableendpoint": "TableEndpoint",
    "fileendpoint": "FileEndpoint",
    "usedevelopmentstorage": "UseDevelopmentStorage",
    "developmentstorageproxyuri": "DevelopmentStorageProxyUri",
}
SECRET_PARTS = frozenset({"SharedAccessKey", "SharedAccessSignature", "AccountKey"})
# The parts that say where a secret is sent: `***` keeps a stored secret only if all are unchanged.
DESTINATION_PARTS = (
    "Endpoint",
    "UseDevelopmentEmulator",
    "DefaultEndpointsProtocol",
    "AccountName",
    "EndpointSuffix",
    "BlobEndpoint",
    "QueueEndpoint",
    "TableEndpoint",
    "FileEndpoint",
    "UseDevelopmentStorage",
    "DevelopmentStorageProxyUri",
)
_SB_ENDPOINT = re.compile(r"^sb://[A-Za-z0-9.-]+(:\d{1,5})?/?$")
_HTTP_ENDPOINT = re.compile(r"^https?://[^\s;]+$")


class ConnectionStringError(ValueError):
    pass


def parse(value: str, known: dict[str, str]) -> dict[str, str]:
    """`Key=Value;...` into a dict with canonical key names; values may hold `=`."""
    parts: dict[str, str] = {}
    segments = filter(None, (s.strip() for s in value.split(";")))
    for number, segment in enumerate(segments, 1):
        key, sep, part = segment.partition("=")
        canonical = known.get(key.strip().lower())
        if not sep or not canonical:  # never echoed: a mistyped part may hold a secret
            raise ConnectionStringError(
                f"part {number} is not Name=Value with a known Name ({', '.join(known.values())})"
            )
        if canonical in parts:
            raise ConnectionStringError(f"{canonical} appears twice")
        parts[canonical] = part.strip()
    return parts


def parse_any(value: str) -> dict[str, str]:
    """Parse a connection string of either kind (for masking and restoring secrets)."""
    return parse(value, {**_SERVICE_BUS_KEYS, **_STORAGE_KEYS})


def render(parts: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in parts.items())


def is_true(value: str | None) -> bool:
    return (value or "").lower() == "true"


def check_service_bus(value: str) -> dict[str, str]:
    parts = parse(value, _SERVICE_BUS_KEYS)
    if not _SB_ENDPOINT.match(parts.get("Endpoint", "")):
        raise ConnectionStringError("Endpoint must be sb://host[:port][/]")
    has_key = "SharedAccessKeyName" in parts and "SharedAccessKey" in parts
    if not has_key and "SharedAccessSignature" not in parts:
        raise ConnectionStringError(
            "needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature"
        )
    if any(not parts[name] for name in parts if name != "EntityPath"):
        raise ConnectionStringError("every part needs a value")
    emulator = parts.get("UseDevelopmentEmulator")
    if emulator is not None and emulator.lower() not in ("true", "false"):
        raise ConnectionStringError("UseDevelopmentEmulator must be true or false")
    return parts


def entity_path(value: str | None) -> str | None:
    """The EntityPath of a Service Bus connection string that parses, else None."""
    try:
        return parse(value or "", _SERVICE_BUS_KEYS).get("EntityPath")
    except ConnectionStringError:
        return None


def check_storage(value: str) -> dict[str, str]:
    parts = parse(value, _STORAGE_KEYS)
    if is_true(parts.get("UseDevelopmentStorage")):
        return parts
    if any(not v for v in parts.values()):
        raise ConnectionStringError("every part needs a value")
    for name in ("BlobEndpoint", "QueueEndpoint", "TableEndpoint", "FileEndpoint"):
        if name in parts and not _HTTP_ENDPOINT.match(parts[name]):
            raise ConnectionStringError(f"{name} must be an http(s) URL")
        if name in parts and _hides_secrets(parts[name]):
            raise ConnectionStringError(
                f"{name} takes no query string, fragment or user info "
                "(put a signature in SharedAccessSignature)"
            )
    protocol = parts.get("DefaultEndpointsProtocol", "https").lower()
    if protocol not in ("http", "https"):
        raise ConnectionStringError("DefaultEndpointsProtocol must be http or https")
    if "BlobEndpoint" not in parts and "AccountName" not in parts:
        raise ConnectionStringError("needs AccountName or BlobEndpoint")
    if "AccountKey" in parts and "AccountName" not in parts:
        raise ConnectionStringError("AccountKey needs AccountName")
    if "AccountKey" not in parts and "SharedAccessSignature" not in parts:
        raise ConnectionStringError("needs AccountKey or SharedAccessSignature")
    return parts


def _hides_secrets(url: str) -> bool:
    split = urlsplit(url)
    return bool(split.query or split.fragment or "@" in split.netloc or "?" in url or "#" in url)


def mask(parts: dict[str, str]) -> str:
    return render({k: MASK if k in SECRET_PARTS else v for k, v in parts.items()})


def restore_masked(parts: dict[str, str], stored: dict[str, str] | None) -> dict[str, str]:
    """Put the stored secret back where a client sent the mask (`***`) it was shown."""
    restored = dict(parts)
    masked = [name for name, value in parts.items() if value == MASK]
    if masked and stored is not None:
        moved = [n for n in DESTINATION_PARTS if _destination(parts, n) != _destination(stored, n)]
        if moved:
            raise ConnectionStringError(
                f"{', '.join(moved)} changed, so the stored {', '.join(masked)} is not sent "
                f"there: send the secret itself instead of {MASK}"
            )
    for name, value in parts.items():
        if value == MASK:
            if not stored or not stored.get(name):
                raise ConnectionStringError(f"{name} is {MASK} but no secret is stored for it")
            restored[name] = stored[name]
    return restored


def _destination(parts: dict[str, str], name: str) -> str:
    return parts.get(name, "").strip().lower().rstrip("/")
