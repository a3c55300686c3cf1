"""Service Bus and Storage connection strings: one strict parser per kind, and masking.

The parse is the one reading of a string: it checks it when a connection is saved, and the
SDK clients are built from its parts (`ServiceBusString`, `StorageString`), never from the raw
string, so the host that was checked is the host contacted. Strict where parsers differ
(tests/test_connstrings.py compares ours with the SDKs'): `Name=Value` parts separated by `;`
(trailing `;` allowed), names from the kind's list ignoring case, no name twice, no empty
part, no space or control character around a name or value; a storage `AccountName` is 3 to
24 lowercase letters and digits, an `EndpointSuffix` a host name, an endpoint a plain URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
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
)
ENDPOINTS = ("BlobEndpoint", "QueueEndpoint", "TableEndpoint", "FileEndpoint")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
_SB_ENDPOINT = re.compile(rf"^sb://(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}))?/?$")
_HTTP_ENDPOINT = re.compile(
    rf"^(?P<scheme>https?)://(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}))?(?P<path>(?:/[A-Za-z0-9._~-]+)*/?)$"
)
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_SUFFIX = re.compile(rf"^{_HOST}$")
_PADDED = re.compile(r"^\s|\s$|[\x00-\x1f\x7f]")
AMQPS_PORT = 5671
# Where UseDevelopmentStorage=true points (Azurite's blob service), and its well-known key.
DEVELOPMENT_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_BLOB = f"http://127.0.0.1:10000/{DEVELOPMENT_ACCOUNT}"
DEVELOPMENT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class ConnectionStringError(ValueError):
    pass


def parse(value: str, known: dict[str, str]) -> dict[str, str]:
    """`Name=Value;...` into a dict with canonical names; values may hold `=`. Errors name a
    part by its position, never by its text (a mistyped part may hold a secret)."""
    parts: dict[str, str] = {}
    for number, segment in enumerate(value.removesuffix(";").split(";"), 1):
        name, sep, part = segment.partition("=")
        canonical = known.get(name.lower())
        if not sep or not canonical or _PADDED.search(name):
            raise ConnectionStringError(
                f"part {number} is not Name=Value with a known Name ({', '.join(known.values())})"
            )
        if canonical in parts:
            raise ConnectionStringError(f"{canonical} appears twice")
        if not part or _PADDED.search(part):
            raise ConnectionStringError(f"{canonical} needs a value without space around it")
        parts[canonical] = part
    return parts


def parse_any(value: str) -> dict[str, str]:
    """Parse a connection string of either kind (for masking and restoring secrets)."""
    return parse(value, {**_SERVICE_BUS_KEYS, **_STORAGE_KEYS})


def render(parts: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in parts.items())


def is_true(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _flag(parts: dict[str, str], name: str) -> bool:
    value = parts.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ConnectionStringError(f"{name} must be true or false")
    return value == "true"


@dataclass(frozen=True)
class ServiceBusString:
    """A Service Bus connection string as its parts: where to connect and with what."""

    parts: dict[str, str]
    host: str  # lowercase
    port: int
    use_tls: bool  # False: UseDevelopmentEmulator=true (plain AMQP, local only)
    key_name: str | None
    key: str | None
    signature: str | None

    @property
    def namespace(self) -> str:
        """As the SDK's client takes it: the host, with the port for plain AMQP."""
        return self.host if self.use_tls else f"{self.host}:{self.port}"

    def credential(self) -> Any:
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        if self.signature is not None:
            return AzureSasCredential(self.signature)
        return AzureNamedKeyCredential(self.key_name or "", self.key or "")


def service_bus(value: str) -> ServiceBusString:
    parts = parse(value, _SERVICE_BUS_KEYS)
    endpoint = _SB_ENDPOINT.match(parts.get("Endpoint", ""))
    if not endpoint:
        raise ConnectionStringError("Endpoint must be sb://host[:port][/]")
    has_key = "SharedAccessKeyName" in parts and "SharedAccessKey" in parts
    if has_key == ("SharedAccessSignature" in parts):
        raise ConnectionStringError(
            "needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature (not both)"
        )
    if ("SharedAccessKeyName" in parts) != ("SharedAccessKey" in parts):
        raise ConnectionStringError("SharedAccessKeyName and SharedAccessKey come together")
    emulator = _flag(parts, "UseDevelopmentEmulator")
    port = int(endpoint["port"] or AMQPS_PORT)
    if not 0 < port < 65536:
        raise ConnectionStringError("Endpoint's port must be 1 to 65535")
    return ServiceBusString(
        parts,
        endpoint["host"].lower(),
        port,
        not emulator,
        parts.get("SharedAccessKeyName"),
        parts.get("SharedAccessKey"),
        parts.get("SharedAccessSignature"),
    )


def check_service_bus(value: str) -> dict[str, str]:
    return service_bus(value).parts


def entity_path(value: str | None) -> str | None:
    """The EntityPath of a Service Bus connection string that parses, else None."""
    try:
        return service_bus(value or "").parts.get("EntityPath")
    except ConnectionStringError:
        return None


@dataclass(frozen=True)
class StorageString:
    """A storage connection string as its parts: the blob service URL and the credential."""

    parts: dict[str, str]
    blob_url: str
    credential: Any  # {"account_name", "account_key"} or a SAS string

    @property
    def development(self) -> bool:
        return self.blob_url == DEVELOPMENT_BLOB and "BlobEndpoint" not in self.parts


def storage(value: str) -> StorageString:
    parts = parse(value, _STORAGE_KEYS)
    if _flag(parts, "UseDevelopmentStorage"):
        if len(parts) > 1:  # the SDK ignores every other part then: so must the string
            raise ConnectionStringError("UseDevelopmentStorage=true stands alone")
        key = {"account_name": DEVELOPMENT_ACCOUNT, "account_key": DEVELOPMENT_KEY}
        return StorageString(parts, DEVELOPMENT_BLOB, key)
    _check_storage_parts(parts)
    if "AccountKey" not in parts:
        return StorageString(parts, blob_url(parts), parts["SharedAccessSignature"])
    key = {"account_name": parts["AccountName"], "account_key": parts["AccountKey"]}
    return StorageString(parts, blob_url(parts), key)


def _check_storage_parts(parts: dict[str, str]) -> None:
    for name in ENDPOINTS:
        if name in parts and not _HTTP_ENDPOINT.match(parts[name]):
            raise ConnectionStringError(
                f"{name} must be an http(s) URL with no query string, fragment or user info "
                "(put a signature in SharedAccessSignature)"
            )
    if parts.get("DefaultEndpointsProtocol", "https") not in ("http", "https"):
        raise ConnectionStringError("DefaultEndpointsProtocol must be http or https")
    if "AccountName" in parts and not _ACCOUNT.match(parts["AccountName"]):
        raise ConnectionStringError("AccountName must be 3 to 24 lowercase letters and digits")
    if "EndpointSuffix" in parts and not _SUFFIX.match(parts["EndpointSuffix"]):
        raise ConnectionStringError("EndpointSuffix must be a host name such as core.windows.net")
    if "BlobEndpoint" not in parts and "AccountName" not in parts:
        raise ConnectionStringError("needs AccountName or BlobEndpoint")
    if ("AccountKey" in parts) == ("SharedAccessSignature" in parts):
        raise ConnectionStringError("needs AccountKey or SharedAccessSignature (not both)")
    if "AccountKey" in parts and "AccountName" not in parts:
        raise ConnectionStringError("AccountKey needs AccountName")


def check_storage(value: str) -> dict[str, str]:
    return storage(value).parts


def blob_url(parts: dict[str, str]) -> str:
    """The blob service URL of checked storage parts (as the SDK builds it from them)."""
    if "BlobEndpoint" in parts:
        return parts["BlobEndpoint"]
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{protocol}://{parts['AccountName']}.blob.{suffix}"


def url_host(url: str) -> tuple[str, int]:
    """Host (lowercase) and port of a checked endpoint URL."""
    split = urlsplit(url)
    return (split.hostname or ""), split.port or (443 if split.scheme == "https" else 80)


def mask(parts: dict[str, str]) -> str:
    return render({k: MASK if k in SECRET_PARTS else v for k, v in parts.items()})


def masked(value: str) -> str:
    """A stored connection string as the API shows it; one the parser no longer takes (saved
    before it was strict) is all mask: it cannot be delivered to until it is sent again."""
    try:
        return mask(parse_any(value))
    except ConnectionStringError:
        return MASK


def restore_masked(parts: dict[str, str], stored: dict[str, str] | None) -> dict[str, str]:
    """Put the stored secret back where a client sent the mask (`***`) it was shown."""
    restored = dict(parts)
    masked_parts = [name for name, value in parts.items() if value == MASK]
    if masked_parts and stored is not None:
        moved = [n for n in DESTINATION_PARTS if _destination(parts, n) != _destination(stored, n)]
        if moved:
            raise ConnectionStringError(
                f"{', '.join(moved)} changed, so the stored {', '.join(masked_parts)} is not "
                f"sent there: send the secret itself instead of {MASK}"
            )
    for name, value in parts.items():
        if value == MASK:
            if not stored or not stored.get(name):
                raise ConnectionStringError(f"{name} is {MASK} but no secret is stored for it")
            restored[name] = stored[name]
    return restored


def _destination(parts: dict[str, str], name: str) -> str:
    return parts.get(name, "").strip().lower().rstrip("/")
