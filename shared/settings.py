"""App settings, read from the environment (Functions app settings or local.settings.json)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
STORAGE_SETTING = "AzureWebJobsStorage"
SAMPLE_SETTINGS = "local.settings.sample.json"
# What App Service leaves as a setting's value when it cannot resolve the reference.
UNRESOLVED_REFERENCES = ("@Microsoft.KeyVault(", "@Microsoft.AppConfiguration(")


class SettingsError(RuntimeError):
    """An app setting the app cannot start with; the message names it, never its value."""


def load_local_settings(
    path: Path | None = None, environ: MutableMapping[str, str] | None = None
) -> dict[str, Any]:
    """Put the `Values` of local.settings.json (else the sample) into the environment: the
    local runner's settings (`make run`, the local host).

    What the environment already sets wins, as with Core Tools. Returns the whole file
    (empty when there is none).
    """
    environ = os.environ if environ is None else environ
    candidates = [path] if path else [ROOT / "local.settings.json", ROOT / SAMPLE_SETTINGS]
    for candidate in candidates:
        if candidate.is_file():
            settings: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
            for name, value in settings.get("Values", {}).items():
                environ.setdefault(name, value if isinstance(value, str) else json.dumps(value))
            logging.getLogger(__name__).info("Settings from %s", candidate)
            return settings
    if path:
        raise FileNotFoundError(path)
    return {}


def load_command_line_settings(environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """The command line's settings: the local runner's (`load_local_settings`), so that it
    reaches what `make run` started, unless the environment names the app's storage itself
    (an operator's shell pointed at Azure). Then nothing comes from those files: their
    values (ALLOW_LOCAL_ENDPOINTS=true, the development key ring, Azurite) are the local
    stack's. Returns what was applied (empty when nothing was)."""
    environ = os.environ if environ is None else environ
    if names_own_storage(environ):
        logging.getLogger(__name__).info("Settings from the environment only")
        return {}
    return load_local_settings(environ=environ)


def names_own_storage(environ: Mapping[str, str]) -> bool:
    """The environment says where the app's storage is: `AzureWebJobsStorage` or any of
    its identity settings (`AzureWebJobsStorage__accountName`, ...)."""
    prefix = f"{STORAGE_SETTING}__"
    return any(v for n, v in environ.items() if n == STORAGE_SETTING or n.startswith(prefix))


def refuse_unresolved_references(environ: Mapping[str, str] | None = None) -> None:
    """Stop, naming the setting, when App Service could not resolve a Key Vault (or App
    Configuration) reference and left its text as the value: the app's identity cannot read
    the secret (yet). Without this the app would fail later on a value that is not one."""
    environ = os.environ if environ is None else environ
    names = sorted(n for n, v in environ.items() if v.lstrip().startswith(UNRESOLVED_REFERENCES))
    if names:
        raise SettingsError(
            f"app setting {', '.join(names)} holds an unresolved reference: the app's identity "
            "could not read the secret. See the reference's status on the app's Environment "
            "variables page, grant the role, then refresh the references "
            "(docs/DEPLOYMENT.md, Troubleshooting)"
        )


@dataclass(frozen=True)
class StorageTarget:
    """Where the app's own storage account is: a connection string, or an account by identity."""

    connection_string: str | None = None
    account_name: str | None = None
    client_id: str | None = None
    blob_url: str | None = None
    queue_url: str | None = None
    table_url: str | None = None

    def endpoint(self, service: str) -> str:
        explicit = {"blob": self.blob_url, "queue": self.queue_url, "table": self.table_url}
        return explicit[service] or f"https://{self.account_name}.{service}.core.windows.net"

    @classmethod
    def from_environment(cls, setting: str = STORAGE_SETTING) -> StorageTarget:
        """`AzureWebJobsStorage` as a connection string, or the identity form
        (`AzureWebJobsStorage__accountName` / `__blobServiceUri` ... `__clientId`)."""
        env = os.environ
        if env.get(setting):
            return cls(connection_string=env[setting])
        prefix = f"{setting}__"
        target = cls(
            account_name=env.get(prefix + "accountName"),
            client_id=env.get(prefix + "clientId"),
            blob_url=env.get(prefix + "blobServiceUri"),
            queue_url=env.get(prefix + "queueServiceUri"),
            table_url=env.get(prefix + "tableServiceUri"),
        )
        if not (target.account_name or (target.blob_url and target.queue_url and target.table_url)):
            raise SettingsError(
                f"app setting {setting} (connection string) or {prefix}accountName is required"
            )
        return target


ALLOW_LOCAL_SETTING = "ALLOW_LOCAL_ENDPOINTS"


def _true(text: str) -> bool:
    return text.strip().lower() == "true"


def allow_local_endpoints(environ: MutableMapping[str, str] | None = None) -> bool:
    """`ALLOW_LOCAL_ENDPOINTS=true`: local development and tests only; Azure never sets it."""
    environ = os.environ if environ is None else environ
    return environ.get(ALLOW_LOCAL_SETTING, "").strip().lower() == "true"


CLOUDEVENTS_SOURCE_SETTING = "CLOUDEVENTS_SOURCE"
DEFAULT_CLOUDEVENTS_SOURCE = "/servicebus-event-delivery"


def cloudevents_source(environ: MutableMapping[str, str] | None = None) -> str:
    """The CloudEvents `source` of every event (a URI-reference naming the platform)."""
    environ = os.environ if environ is None else environ
    return environ.get(CLOUDEVENTS_SOURCE_SETTING) or DEFAULT_CLOUDEVENTS_SOURCE


QUEUE_COUNT_SETTING = "SYSTEM_EVENT_QUEUE_COUNT"
# Each queue is one more trigger polling on every instance; 64 queues take ~128,000 events/s,
# far past what one storage account's 20,000 requests/s serve (docs/DESIGN.md).
MAX_SYSTEM_EVENT_QUEUES = 64


def system_event_queue_count(environ: Mapping[str, str] | None = None) -> int:
    """How many system-events queues events are spread over (shared/eventqueues.py)."""
    environ = os.environ if environ is None else environ
    text = environ.get(QUEUE_COUNT_SETTING, "").strip() or "1"
    count = int(text) if text.isdigit() else 0
    if not 1 <= count <= MAX_SYSTEM_EVENT_QUEUES:
        raise SettingsError(f"app setting {QUEUE_COUNT_SETTING}: 1 to {MAX_SYSTEM_EVENT_QUEUES}")
    return count


T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What one tenant can make the app store or do; each is an app setting `LIMIT_<NAME>`."""

    body_bytes: int = 64 * 1024
    connections_per_account: int = 100
    # Requests per API key: a bucket of `burst` refilled at `per_second`.
    requests_per_second: float = 20.0
    request_burst: int = 100
    # POST .../test and .../retry each send a message: stricter.
    sends_per_second: float = 1.0
    send_burst: int = 10
    # Unknown keys per client address before it must wait (no table read while it waits).
    failed_keys_per_minute: int = 10
    failed_key_clients: int = 10_000  # LRU of client addresses seen with a bad key
    # Saves that verify (each sends a message somewhere), per account: enough to fix a
    # connection by trial, too few to scan with (issue 23).
    verifications_per_minute: int = 10
    # An event's JSON on system-events / `event publish`: large enough for claim checks (a
    # Standard queue takes 256 KB), small enough that fan-out to 100 connections stays bounded.
    event_bytes: int = 1024 * 1024
    # A `POST /v1/events` body: a batch holding events of up to `event_bytes` (the general
    # `body_bytes` would refuse one first), bounded at 4 of them so one request holds at
    # most 4 MiB in memory, not 100 x 1 MiB (a bigger batch is split by the publisher).
    publish_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Limits:
        names = {name: f"LIMIT_{name.upper()}" for name in vars(cls())}
        return _from_settings(cls, names, os.environ if environ is None else environ)


def _from_settings(cls: type[T], names: Mapping[str, str], environ: Mapping[str, str]) -> T:
    """`cls()` with each field in `names` read from that app setting where it is set, typed
    as the field's default."""
    default = cls()
    values = {
        field: type(getattr(default, field))(environ[name])
        for field, name in names.items()
        if name in environ
    }
    return cls(**values)


# The Service Bus and Storage clouds (public, US Gov, China); an operator adds a sovereign or
# private-link suffix with SERVICEBUS_SUFFIXES / STORAGE_SUFFIXES (comma separated).
SERVICEBUS_SUFFIXES = (
    "servicebus.windows.net",
    "servicebus.usgovcloudapi.net",
    "servicebus.chinacloudapi.cn",
)
STORAGE_SUFFIXES = ("core.windows.net", "core.usgovcloudapi.net", "core.chinacloudapi.cn")


def _listed(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _networks(text: str, setting: str) -> tuple[str, ...]:
    """Addresses or CIDR ranges, checked at start-up (a typo must not pass for a proxy)."""
    import ipaddress

    listed = _listed(text)
    for entry in listed:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise RuntimeError(f"app setting {setting}: {entry!r} is not an address") from None
    return listed


def _suffixes(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = os.environ.get(name)
    if not text:
        return default
    return tuple(s.strip().lower().strip(".") for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class IsolationSettings:
    """How one tenant's slow or dead endpoint is kept from stalling the others (docs/API.md,
    "Delivery isolation")."""

    attempt_timeout_seconds: float = 30.0  # one budget for open, CBS, attach, upload and send
    # Attempts per connection: what one flush (one batch at a time) takes. Also what a
    # destination that answered and then turns into a black hole holds until the deadline:
    # 64 of a trigger's 96 host slots (host.json) at most.
    max_in_flight_per_connection: int = 64
    # Queue-triggered attempts per account to destinations that have not answered on their
    # current link (new, or failed): below the 64 above which the host stops fetching.
    max_in_flight_per_account: int = 32
    # A delivery finding no room waits its turn while the attempts in its way move: one
    # finishes, or their destination answers, at least every bulkhead_wait_seconds while the
    # destination has not answered at all on its link (a black hole), every
    # bulkhead_slow_seconds once it has (a live one; our own busy process reads its answers
    # late). Behind stuck ones it goes back to the retry queue. Each waiter holds a host slot:
    # waiting 1 s behind a black hole gave another tenant 3.9x its p99 latency, 0.3 s 1.4x
    # (bench/bench_isolation.py).
    bulkhead_wait_seconds: float = 0.3
    bulkhead_slow_seconds: float = 2.0
    busy_defer_seconds: int = 1
    breaker_failures: int = 5  # consecutive timeouts or connection failures that open it
    breaker_cool_down_seconds: float = 30.0  # open this long before one probe may try

    @classmethod
    def from_environment(cls) -> IsolationSettings:
        names = {
            "attempt_timeout_seconds": "DELIVERY_ATTEMPT_TIMEOUT_SECONDS",
            "max_in_flight_per_connection": "DELIVERY_MAX_IN_FLIGHT_PER_CONNECTION",
            "max_in_flight_per_account": "DELIVERY_MAX_IN_FLIGHT_PER_ACCOUNT",
            "bulkhead_wait_seconds": "DELIVERY_BULKHEAD_WAIT_SECONDS",
            "bulkhead_slow_seconds": "DELIVERY_BULKHEAD_SLOW_SECONDS",
            "busy_defer_seconds": "DELIVERY_BUSY_DEFER_SECONDS",
            "breaker_failures": "CIRCUIT_BREAKER_FAILURES",
            "breaker_cool_down_seconds": "CIRCUIT_BREAKER_COOL_DOWN_SECONDS",
        }
        return _from_settings(cls, names, os.environ)


@dataclass(frozen=True)
class Settings:
    storage: StorageTarget
    encryption_keys: str
    retention_days: int = 14
    connection_cache_seconds: float = 5.0
    # CONTRACT section 5: retries after about 30 s, 2 min, 10 min, 1 h, 6 h (6 attempts in all).
    retry_delays_seconds: tuple[float, ...] = (30, 120, 600, 3600, 6 * 3600)
    allow_local_endpoints: bool = False
    servicebus_suffixes: tuple[str, ...] = SERVICEBUS_SUFFIXES
    storage_suffixes: tuple[str, ...] = STORAGE_SUFFIXES
    limits: Limits = field(default_factory=Limits)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    # Issue 15: the time budget of the verification send on save; how often a process writes
    # a connection's health at most; how long every delivery must fail with Configuration
    # before the connection is suspended.
    verify_seconds: float = 10.0
    health_flush_seconds: float = 15.0
    suspend_after_seconds: float = 3 * 24 * 3600.0
    # A replay sends at most this many records a second (REPLAY_RECORDS_PER_SECOND; 0: no
    # pacing), so live deliveries keep the senders and the log most of the time.
    replay_records_per_second: float = 50.0
    # Deliveries an account's replays may match per hour (REPLAY_DELIVERIES_PER_HOUR): enough
    # for a day of an outage at the rates we see, and a bound on what repeated replays send.
    replay_deliveries_per_hour: int = 50_000
    # An event whose EventTimestamp is further than this from now goes to poison (issue 23):
    # what the log's dates and the stats' latencies can hold, with room for backlogs.
    event_window_hours: float = 14 * 24.0
    # Addresses or CIDR ranges of proxies in front of the app whose X-Forwarded-For entries
    # are believed (TRUSTED_PROXIES, comma separated; none by default).
    trusted_proxies: tuple[str, ...] = ()
    # System-events queues events are spread over by account (SYSTEM_EVENT_QUEUE_COUNT).
    system_event_queue_count: int = 1
    # Whether the purge deletes stored bodies and event payloads itself (PURGE_DELETES_BODIES):
    # Azurite has no lifecycle management; in Azure the Bicep's lifecycle rule deletes them and
    # the purge only counts what is overdue (docs/DESIGN.md, "A purge that does not scan").
    purge_deletes_bodies: bool = False

    @classmethod
    def from_environment(cls) -> Settings:
        refuse_unresolved_references()
        keys = os.environ.get("ENCRYPTION_KEYS", "")
        if not keys:
            raise SettingsError("app setting ENCRYPTION_KEYS is required (see README)")
        settings = cls(
            storage=StorageTarget.from_environment(),
            encryption_keys=keys,
            retention_days=int(os.environ.get("MESSAGE_RETENTION_DAYS", "14")),
            allow_local_endpoints=allow_local_endpoints(),
            servicebus_suffixes=_suffixes("SERVICEBUS_SUFFIXES", SERVICEBUS_SUFFIXES),
            storage_suffixes=_suffixes("STORAGE_SUFFIXES", STORAGE_SUFFIXES),
            limits=Limits.from_environment(),
            isolation=IsolationSettings.from_environment(),
            verify_seconds=float(os.environ.get("CONNECTION_VERIFY_SECONDS", "10")),
            health_flush_seconds=float(os.environ.get("HEALTH_FLUSH_SECONDS", "15")),
            suspend_after_seconds=float(os.environ.get("SUSPEND_AFTER_SECONDS", str(3 * 86400))),
            replay_records_per_second=float(os.environ.get("REPLAY_RECORDS_PER_SECOND", "50")),
            replay_deliveries_per_hour=int(
                os.environ.get("REPLAY_DELIVERIES_PER_HOUR", str(cls.replay_deliveries_per_hour))
            ),
            event_window_hours=float(os.environ.get("EVENT_TIME_WINDOW_HOURS", str(14 * 24))),
            trusted_proxies=_networks(os.environ.get("TRUSTED_PROXIES", ""), "TRUSTED_PROXIES"),
            system_event_queue_count=system_event_queue_count(),
            purge_deletes_bodies=_true(os.environ.get("PURGE_DELETES_BODIES", "false")),
        )
        if delays := os.environ.get("DELIVERY_RETRY_DELAYS"):  # for demos and tests: "1,1,1,1,1"
            settings = replace(settings, retry_delays_seconds=tuple(map(float, delays.split(","))))
        return settings
