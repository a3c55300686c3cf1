"""Where a tenant's connection may send: the production rule, the connect-time address
check, and the error text a failed delivery may show.

Tenants write hosts into their connection strings and the app connects there from inside
Azure, so every outbound endpoint is checked twice: by name when a connection is saved
(Azure Service Bus and Storage suffixes only, https, no port, no IP literal), and by address
when a client is opened (no loopback, private, link-local, multicast, reserved or
unspecified address). The address checked is the address connected to: the host is resolved
once and the clients are handed that address (the name kept for TLS), so a name that
resolves inward on a second lookup gets nowhere. Both checks are skipped only with
`ALLOW_LOCAL_ENDPOINTS=true` (local development and tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared import connstrings
from shared.connstrings import ConnectionStringError
from shared.settings import (
    SERVICEBUS_SUFFIXES,
    STORAGE_SUFFIXES,
    Settings,
    allow_local_endpoints,
)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(rf"^{_LABEL}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


class EndpointRefused(Exception):
    """An endpoint resolved to an address the app never connects to (a Configuration failure)."""


@dataclass(frozen=True)
class EndpointRule:
    """The production rule for connection strings; `allow_local` lifts it (development)."""

    allow_local: bool = False
    servicebus_suffixes: tuple[str, ...] = SERVICEBUS_SUFFIXES
    storage_suffixes: tuple[str, ...] = STORAGE_SUFFIXES

    @classmethod
    def of(cls, settings: Settings) -> EndpointRule:
        return cls(
            settings.allow_local_endpoints, settings.servicebus_suffixes, settings.storage_suffixes
        )

    def check_service_bus(self, parts: dict[str, str]) -> None:
        """ConnectionStringError naming the rule that `parts` (already well-formed) break."""
        if self.allow_local:
            return
        if connstrings.is_true(parts.get("UseDevelopmentEmulator")):
            raise ConnectionStringError(
                "UseDevelopmentEmulator=true is for local development only (plain AMQP)"
            )
        host = urlsplit(parts["Endpoint"]).netloc.lower()
        if not _under(host, self.servicebus_suffixes, _NAMESPACE):
            raise ConnectionStringError(
                "Endpoint must be sb://<namespace>.<suffix> with no port, the suffix one of "
                + ", ".join(self.servicebus_suffixes)
            )

    def check_storage(self, parts: dict[str, str]) -> None:
        if self.allow_local:
            return
        if connstrings.is_true(parts.get("UseDevelopmentStorage")):
            raise ConnectionStringError("UseDevelopmentStorage=true is for local development only")
        if parts.get("DefaultEndpointsProtocol", "https").lower() != "https":
            raise ConnectionStringError("DefaultEndpointsProtocol must be https")
        if "EndpointSuffix" in parts and parts["EndpointSuffix"].lower() not in (
            self.storage_suffixes
        ):
            raise ConnectionStringError(
                "EndpointSuffix must be one of " + ", ".join(self.storage_suffixes)
            )
        for name in connstrings.ENDPOINTS:
            if name in parts and not self._storage_url(name, parts[name]):
                service = name.removesuffix("Endpoint").lower()
                raise ConnectionStringError(
                    f"{name} must be https://<account>.{service}.<suffix> with no port or "
                    "path, the suffix one of " + ", ".join(self.storage_suffixes)
                )

    def _storage_url(self, name: str, url: str) -> bool:
        split = urlsplit(url)
        service = name.removesuffix("Endpoint").lower()
        suffixes = tuple(f"{service}.{s}" for s in self.storage_suffixes)
        return (
            split.scheme.lower() == "https"
            and split.path in ("", "/")
            and _under(split.netloc.lower(), suffixes, _ACCOUNT)
        )


def _under(host: str, suffixes: Sequence[str], first_label: re.Pattern[str]) -> bool:
    """`host` is `<first label>.<one of suffixes>`: no port, no deeper names, no IP."""
    for suffix in suffixes:
        label = host.removesuffix("." + suffix)
        if label != host and first_label.match(label):
            return True
    return False


# ------------------------------------------------------------------ connect time

Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnresolvedHost(ConnectionError):
    """The endpoint's host name does not resolve (a Transient failure: DNS may recover)."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    inward = (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )
    return ip.is_global and not inward


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class ConnectGuard:
    """Where an outbound connection goes: the host is resolved once, every address checked
    (none loopback, private, link-local, multicast, reserved or unspecified), and the client
    connects to a checked address, the name kept for TLS (SNI and the certificate check) and
    for the AMQP and HTTP host. No second lookup decides where bytes go (DNS rebinding).

    `permitted` and `ca_file` are knobs for tests (which address counts as public; a CA for
    a TLS listener of their own). With `allow_local` nothing is refused (local development);
    the address resolved is still the one connected to."""

    def __init__(
        self,
        allow_local: bool | None = None,
        resolve: Resolver | None = None,
        permitted: Callable[[str], bool] = is_public,
        ca_file: str | None = None,
    ) -> None:
        self._allow_local = allow_local
        self._resolve = resolve or system_resolver
        self._permitted = permitted
        self._ca_file = ca_file

    @property
    def allow_local(self) -> bool:
        # Read at each use when not given, so the process's settings decide (tests set them).
        return allow_local_endpoints() if self._allow_local is None else self._allow_local

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for `host`, from one lookup; EndpointRefused if any
        of them is inward, UnresolvedHost if there is none."""
        literal = _literal(host)
        try:
            found = [literal] if literal else await self._resolve(host, port)
        except (OSError, UnicodeError):  # socket.gaierror, an IDNA error: no address
            found = []
        if not found:
            raise UnresolvedHost("the host name does not resolve")
        if not self.allow_local and not all(map(self._permitted, found)):
            raise EndpointRefused(
                "the endpoint's host resolves to a loopback, private, link-local, multicast "
                "or reserved address; the app does not connect there"
            )
        return found

    def check_literal(self, host: str) -> None:
        """An IP literal is connected to without a lookup (aiohttp skips its resolver then)."""
        literal = _literal(host)
        if literal and not self.allow_local and not self._permitted(literal):
            raise EndpointRefused("the endpoint is an address the app does not connect to")

    def tls_context(self, server_name: str) -> ssl.SSLContext:
        """TLS that checks `server_name` (SNI and certificate) whatever address is connected
        to; the roots are the SDK's own (certifi) unless a test gives a CA."""
        import certifi

        context = _NamedTls(ssl.PROTOCOL_TLS_CLIENT)  # hostname check and CERT_REQUIRED
        context.load_verify_locations(self._ca_file or certifi.where())
        context.server_name = server_name
        return context

    def http_resolver(self) -> Any:
        """An aiohttp resolver answering only with checked addresses (aiohttp connects to
        them and keeps the URL's host for TLS and the Host header)."""
        from aiohttp.abc import AbstractResolver

        guard = self

        class CheckedResolver(AbstractResolver):
            async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[Any]:
                return [
                    {
                        "hostname": host,
                        "host": address,
                        "port": port,
                        "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                    for address in await guard.addresses(host, port)
                ]

            async def close(self) -> None:
                return None

        return CheckedResolver()


class _NamedTls(ssl.SSLContext):
    """TLS whose server name is fixed: the Service Bus SDK passes the address it connects to
    as the server name, so the name checked is put back here."""

    server_name = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def blob_endpoint(parts: dict[str, str]) -> str:
    """The blob service URL a (checked) storage connection string points at."""
    if connstrings.is_true(parts.get("UseDevelopmentStorage")):
        return connstrings.DEVELOPMENT_BLOB
    return connstrings.blob_url(parts)


DEFAULT_GUARD = ConnectGuard()


# ------------------------------------------------------------------ error text

# Fixed texts by error type: a remote server's own words (an HTTP reply body, an AMQP
# description, a TLS or socket error) would tell a tenant what listens on a host.
_TEXTS = {
    "ServiceBusAuthenticationError": "authentication failed: check the key or signature",
    "ServiceBusAuthorizationError": "not authorized to send to this queue",
    "ClientAuthenticationError": "authentication failed: check the key or signature",
    "MessagingEntityNotFoundError": "the queue or topic does not exist",
    "MessagingEntityDisabledError": "the queue or topic is disabled",
    "ResourceNotFoundError": "the blob container or account does not exist",
    "MessageSizeExceededError": "the message is larger than the queue allows",
    "TooLarge": "the message is larger than the queue allows",
    "ServiceBusQuotaExceededError": "the queue's quota is exceeded",
    "ServiceBusServerBusyError": "the namespace is busy",
    "OperationTimeoutError": "the operation timed out",
    "TimeoutError": "the operation timed out",
    "gaierror": "the host name does not resolve",
    "UnresolvedHost": "the host name does not resolve",
    "ConnectionStringError": "the connection string is not valid",
}


def public_message(error: BaseException) -> str:
    """What a record or log line may say of a failed delivery: a fixed text by error type,
    plus an HTTP status and error code when there is one; never the remote reply."""
    if isinstance(error, EndpointRefused):
        return str(error)
    names = [cls.__name__ for cls in type(error).__mro__]
    text = next((_TEXTS[n] for n in names if n in _TEXTS), None)
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None)
    if isinstance(status, int):
        code_text = f" {code}" if isinstance(code, str) and re.fullmatch(r"\w{1,64}", code) else ""
        return f"{text or 'the storage service refused the request'} (HTTP {status}{code_text})"
    return text or f"could not deliver ({type(error).__name__}); the host did not accept it"
