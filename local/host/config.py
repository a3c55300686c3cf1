"""Host configuration: app settings (`%NAME%`), host.json options and loading the app."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from local.ncrontab import parse_timespan

DEFAULT_STORAGE_SETTING = "AzureWebJobsStorage"
MIN_POLLING_INTERVAL = 0.1


_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def resolve_setting_references(value: str, environ: Mapping[str, str]) -> str:
    """Replace each `%NAME%` with app setting NAME, as the Functions host does in bindings."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise LookupError(f"app setting {name!r} (used as %{name}%) is not set")
        return environ[name]

    return _SETTING_REFERENCE.sub(setting, value)


def _duration(value: Any) -> float:
    """A host.json duration in seconds: a TimeSpan string, or milliseconds (the v1 style)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000
    return parse_timespan(str(value)).total_seconds()


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the Functions defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def max_in_flight(self) -> int:
        """Invocations of one queue trigger running at most: a new batch is fetched while no
        more than `newBatchThreshold` run."""
        return self.batch_size + self.new_batch_threshold

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueOptions:
        queues = host_json.get("extensions", {}).get("queues", {})
        batch_size = int(queues.get("batchSize", cls.batch_size))
        if not 1 <= batch_size <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be between 1 and 32")
        encoding = str(queues.get("messageEncoding", cls.message_encoding)).lower()
        if encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        polling = cls.max_polling_interval
        if "maxPollingInterval" in queues:
            polling = max(MIN_POLLING_INTERVAL, _duration(queues["maxPollingInterval"]))
        visibility = cls.visibility_timeout
        if "visibilityTimeout" in queues:
            visibility = _duration(queues["visibilityTimeout"])
        return cls(
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch_size // 2)),
            max_polling_interval=polling,
            visibility_timeout=visibility,
            max_dequeue_count=int(queues.get("maxDequeueCount", cls.max_dequeue_count)),
            message_encoding=encoding,
        )


def route_prefix(host_json: Mapping[str, Any]) -> str:
    """host.json `extensions.http.routePrefix`; `api` when unset, as in Azure."""
    return str(host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api"))


def load_host_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_app(reference: str) -> func.FunctionApp:
    """Import `module:attribute` (default attribute `app`)."""
    module_name, _, attribute = reference.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{reference} is not a FunctionApp")
    return app


def indexed_functions(app: func.FunctionApp) -> list[Any]:
    """`app.get_functions()`, callable more than once for the same app.

    The SDK remembers every name it has indexed and refuses a second call on the same app
    object; it is meant to catch duplicates within one indexing, which it still does here.
    """
    app.functions_bindings = {}
    return list(app.get_functions())
