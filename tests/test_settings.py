"""Where settings come from: the sample's local values reach the local runner and a command
line aimed at the local stack, never a command line aimed at Azure; an unresolved Key Vault
reference stops the app at start, naming the setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import (
    ALLOW_LOCAL_SETTING,
    ROOT,
    SAMPLE_SETTINGS,
    Settings,
    SettingsError,
    allow_local_endpoints,
    load_command_line_settings,
    load_local_settings,
)

REFERENCE = (
    "@Microsoft.KeyVault(SecretUri=https://kv-sbevents.vault.azure.net/secrets/encryption-keys)"
)


def test_the_local_runner_takes_the_samples_values() -> None:
    environ = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    load_local_settings(ROOT / SAMPLE_SETTINGS, environ)
    assert allow_local_endpoints(environ)
    assert environ["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_a_command_line_aimed_at_the_local_stack_takes_the_samples_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A checkout without local.settings.json: the sample's values reach what `make run` started.
    shutil.copy(ROOT / SAMPLE_SETTINGS, tmp_path / SAMPLE_SETTINGS)
    monkeypatch.setattr("shared.settings.ROOT", tmp_path)
    environ: dict[str, str] = {}
    load_command_line_settings(environ)
    assert environ["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert allow_local_endpoints(environ)


@pytest.mark.parametrize(
    "aimed_at",
    [
        {"AzureWebJobsStorage__accountName": "stsbevents123"},
        {"AzureWebJobsStorage": "", "AzureWebJobsStorage__accountName": "stsbevents123"},
        {"AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net/"},
        {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=a2V5"},
    ],
    ids=["account", "account, empty connection string", "service URI", "connection string"],
)
def test_a_command_line_aimed_at_azure_takes_nothing_from_the_sample(
    aimed_at: dict[str, str],
) -> None:
    environ = dict(aimed_at)
    assert load_command_line_settings(environ) == {}
    assert environ == aimed_at
    assert ALLOW_LOCAL_SETTING not in environ


def test_the_command_line_aimed_at_a_storage_account_does_not_borrow_the_samples_key(
    storage_connection_string: str,
) -> None:
    """As a process: aimed at an account without ENCRYPTION_KEYS, it stops and says so, where
    it once took the sample's development key ring (and ALLOW_LOCAL_ENDPOINTS) instead."""
    ours = ("AzureWebJobsStorage", "ENCRYPTION_KEYS", ALLOW_LOCAL_SETTING)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "apikey", "list"],
        cwd=ROOT,
        env={**env, "AzureWebJobsStorage": storage_connection_string},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "ENCRYPTION_KEYS is required" in result.stderr


def test_an_unresolved_key_vault_reference_stops_settings_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("ENCRYPTION_KEYS", REFERENCE)
    with pytest.raises(SettingsError, match="app setting ENCRYPTION_KEYS holds an unresolved") as e:
        Settings.from_environment()
    assert "vault.azure.net" not in str(e.value)  # the setting's name, not its value


def test_an_unresolved_key_vault_reference_stops_the_app_at_start() -> None:
    """Importing the app (what the Functions worker does to index it) fails: no function
    runs, so no event is tried and poisoned while the reference is unresolved."""
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "ENCRYPTION_KEYS": REFERENCE}
    started = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0
    assert "SettingsError: app setting ENCRYPTION_KEYS holds an unresolved" in started.stderr
    assert "vault.azure.net" not in started.stderr
