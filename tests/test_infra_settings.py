"""Every app setting the app reads is deployed by the Bicep with the app's own default, so a
redeploy (which replaces all app settings) loses nothing an operator set through the
template, and a setting added to the code without a parameter fails here.

The settings the app reads are found two ways: by reading the source (`ast`: the setting
names in every module of the app that touches the environment) and by running the settings
reader with an environment that records what it is asked for (names made at run time, such
as `LIMIT_<FIELD>`).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import check
from shared.dispatch.entra import TenantCredentials
from shared.portal import base_url
from shared.settings import STORAGE_SETTING, Settings, cloudevents_source
from tests.bicep import Template, Unresolved, app_settings

ROOT = check.ROOT
APP_SOURCES = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Read by the app, deliberately not deployed.
NOT_DEPLOYED = {
    "ALLOW_LOCAL_ENDPOINTS": "local development and tests only (docs/API.md, Outbound endpoints)",
    "WEBSITE_HOSTNAME": "set by the platform",
}
# Deployed for the Functions host and the Python worker, not read by the app's code.
FOR_THE_HOST = re.compile(r"(PYTHON_)?APPLICATIONINSIGHTS_\w+|AzureWebJobsStorage__\w+")
# Deployed with values only Azure knows, or by design not the code's default.
FROM_AZURE = {"ENTRA_IDENTITY_CLIENT_ID", "SERVICEBUS_SUFFIXES", "STORAGE_SUFFIXES"}


class Recording(dict[str, str]):
    """An environment that remembers every name the app's own code asks for. What the SDKs
    ask for (azure-core reads AZURE_* on every request, from any thread still running a
    client an earlier test in this worker opened) is theirs, not a setting of the app."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def _ask(self, key: object) -> None:
        frame = sys._getframe(2)
        while frame.f_code.co_filename in (os.__file__, __file__):  # os.getenv, this class
            frame = frame.f_back  # type: ignore[assignment]
        if Path(frame.f_code.co_filename) in APP_SOURCES:
            self.asked.add(str(key))

    def get(self, key: str, default: Any = None) -> Any:
        self._ask(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self._ask(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._ask(key)
        return super().__contains__(key)


def named_in_source() -> set[str]:
    """Setting-like string constants in the modules of the app that read the environment."""
    names: set[str] = set()
    for path in APP_SOURCES:
        source = path.read_text()
        if "environ" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and SETTING_NAME.fullmatch(text):
                names.add(text)
    return names


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    """os.environ as a Recording, holding only what the app needs to start."""
    environ = Recording({STORAGE_SETTING: "UseDevelopmentStorage=true", "ENCRYPTION_KEYS": "k"})
    monkeypatch.setattr(os, "environ", environ)
    yield environ


def read_by_the_app(recorded: Recording) -> set[str]:
    Settings.from_environment()
    TenantCredentials.from_environment()
    base_url()
    cloudevents_source()
    names = named_in_source() | recorded.asked
    return {n for n in names if n != STORAGE_SETTING and not n.startswith(f"{STORAGE_SETTING}__")}


@pytest.fixture(scope="module")
def main() -> Template:
    return Template(check.INFRA / "main.bicep")


@pytest.fixture(scope="module")
def deployed(main: Template) -> dict[str, Any]:
    return app_settings(main)


def test_the_source_scan_finds_the_settings_read_by_name(recorded: Recording) -> None:
    read = read_by_the_app(recorded)
    assert {"ENCRYPTION_KEYS", "DELIVERY_RETRY_DELAYS", "PORTAL_BASE_URL"} <= named_in_source()
    assert {"LIMIT_BODY_BYTES", "LIMIT_EVENT_BYTES"} <= recorded.asked  # made at run time
    assert {"ENTRA_APP_CLIENT_ID", "CIRCUIT_BREAKER_FAILURES"} <= read
    os.environ.get("AZURE_HTTP_USER_AGENT")  # as azure-core asks, from outside the app
    assert "AZURE_HTTP_USER_AGENT" not in recorded.asked


def test_the_bicep_deploys_every_setting_the_app_reads(
    recorded: Recording, deployed: dict[str, Any]
) -> None:
    missing = read_by_the_app(recorded) - set(NOT_DEPLOYED) - set(deployed)
    assert not missing, (
        f"the app reads {sorted(missing)} but infra/main.bicep does not deploy them: add each "
        "to appSettingDefaults with the app's default, and a row to README's settings table"
    )


def test_the_bicep_deploys_no_setting_the_app_does_not_read(
    recorded: Recording, deployed: dict[str, Any]
) -> None:
    read = read_by_the_app(recorded)
    stale = {n for n in deployed if n not in read and not FOR_THE_HOST.fullmatch(n)}
    assert not stale, f"infra deploys {sorted(stale)}, which nothing reads"
    assert not set(NOT_DEPLOYED) & set(deployed)


def test_the_deployed_defaults_are_the_apps_own(
    monkeypatch: pytest.MonkeyPatch, deployed: dict[str, Any]
) -> None:
    """The app with every deployed default set behaves as with none set."""
    needed = {STORAGE_SETTING: "UseDevelopmentStorage=true", "ENCRYPTION_KEYS": "k"}
    host = {"WEBSITE_HOSTNAME": "func-sbevents.azurewebsites.net"}
    defaults = {
        name: value
        for name, value in deployed.items()
        if name not in FROM_AZURE | set(needed) and not FOR_THE_HOST.fullmatch(name)
    }
    assert all(isinstance(value, str) for value in defaults.values()), defaults

    def app_as_configured(environ: dict[str, str]) -> tuple[Any, ...]:
        monkeypatch.setattr(os, "environ", environ)
        settings = Settings.from_environment()
        entra_error = _entra_error()
        return settings, base_url(), cloudevents_source(), entra_error

    bare = app_as_configured({**needed, **host})
    assert app_as_configured({**needed, **host, **defaults}) == bare
    assert "ENTRA_APP_CLIENT_ID" in defaults and "LIMIT_BODY_BYTES" in defaults


def _entra_error() -> str:
    """What an EntraId connection meets: with no application configured, an error naming it."""
    try:
        TenantCredentials.from_environment()("a-tenant")
    except RuntimeError as e:
        return str(e)
    return "none"


def test_the_app_uses_its_own_identity_for_entra_id(deployed: dict[str, Any]) -> None:
    # Unset, ManagedIdentityCredential would ask for a system-assigned identity the app lacks.
    assert deployed["ENTRA_IDENTITY_CLIENT_ID"] == Unresolved("identity.properties.clientId")
    assert deployed["ENTRA_IDENTITY_CLIENT_ID"] == deployed["AzureWebJobsStorage__clientId"]


def test_host_suffixes_are_this_clouds(deployed: dict[str, Any]) -> None:
    """Sovereign clouds: the endpoint rule allows the deployment's own cloud, named by ARM."""
    storage = "environment().suffixes.storage"
    assert deployed["STORAGE_SUFFIXES"] == Unresolved(storage)
    assert deployed["SERVICEBUS_SUFFIXES"] == Unresolved(
        f"replace(<{storage}>, core., servicebus.)"
    )
    # What replace() makes of each cloud's storage suffix is the code's list of clouds.
    from shared.settings import SERVICEBUS_SUFFIXES, STORAGE_SUFFIXES

    made = [s.replace("core.", "servicebus.") for s in STORAGE_SUFFIXES]
    assert made == list(SERVICEBUS_SUFFIXES)


def test_an_operator_overrides_one_setting_and_keeps_the_others() -> None:
    main = Template(check.INFRA / "main.bicep", {"appSettings": {"LIMIT_BODY_BYTES": "131072"}})
    deployed = app_settings(main)
    assert deployed["LIMIT_BODY_BYTES"] == "131072"
    assert deployed["LIMIT_EVENT_BYTES"] == "1048576"
    assert app_settings(Template(check.INFRA / "main.bicep"))["LIMIT_BODY_BYTES"] == "65536"
    assert len([n for n in deployed if n == "LIMIT_BODY_BYTES"]) == 1


def test_the_readme_documents_every_setting(recorded: Recording) -> None:
    readme = (ROOT / "README.md").read_text()
    undocumented = {n for n in read_by_the_app(recorded) if f"`{n}`" not in readme}
    undocumented -= {"WEBSITE_HOSTNAME"}  # the platform's, mentioned under PORTAL_BASE_URL
    assert not undocumented, f"README's settings table lacks {sorted(undocumented)}"
