"""The Bicep in infra/: every file parses, checkov passes, and what the app relies on holds.

No Bicep compiler and no Azure are available here, so the facts are read from
pycep-parser's tree. `Template` follows parameters (their defaults unless given),
variables and module outputs far enough to see, for example, that the lifecycle rule
deletes message bodies 15 days after they were written when the deployment keeps
messages for 14. Values only Azure knows (a resource's endpoint, a uniqueString) stay
`Unresolved`, shown as `<what>`.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra import check

INFRA = check.INFRA

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

# App settings a Flex Consumption app must not carry (the platform owns them).
FLEX_DEPRECATED_SETTINGS = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Unresolved:
    """A value known only at deployment time (a resource property, a function result)."""

    text: str

    def __str__(self) -> str:
        return f"<{self.text}>"


@dataclass(frozen=True)
class ResourceRef:
    template: Template
    symbol: str


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, inside any `if (...)` or `[for ...]` wrapper."""
    config: dict[str, Any] = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


class Template:
    """One Bicep file with parameter values: those given, else the file's defaults."""

    def __init__(self, path: Path, params: dict[str, Any] | None = None) -> None:
        self.path = path
        self.tree = check.parse(path)
        self.given = params or {}
        self._modules: dict[str, Template] = {}

    def __repr__(self) -> str:
        return f"Template({self.path.name})"

    def section(self, name: str) -> dict[str, Any]:
        return self.tree.get(name) or {}

    def param(self, name: str) -> Any:
        if name in self.given:
            return self.given[name]
        default = self.section("parameters")[name].get("default")
        return Unresolved(name) if default is None else self.eval(default)

    def lookup(self, name: str) -> Any:
        if name in self.section("parameters"):
            return self.param(name)
        if name in self.section("variables"):
            return self.eval(self.section("variables")[name]["value"])
        if name in self.section("modules"):
            return self.module(name)
        if name in self.section("resources"):
            return ResourceRef(self, name)
        raise KeyError(f"{name} is not declared in {self.path.name}")

    def module(self, symbol: str) -> Template:
        if symbol not in self._modules:
            declaration = self.section("modules")[symbol]
            params = {k: self.eval(v) for k, v in body(declaration).get("params", {}).items()}
            path = self.path.parent / declaration["detail"]["path"]
            self._modules[symbol] = Template(path, params)
        return self._modules[symbol]

    def output(self, name: str) -> Any:
        return self.eval(self.section("outputs")[name]["value"])

    def resource(self, symbol: str) -> dict[str, Any]:
        value = self.eval(body(self.section("resources")[symbol]))
        assert isinstance(value, dict)
        return value

    def loop_items(self, symbol: str) -> Any:
        loop = self.section("resources")[symbol]["config"]["loop_type"]["detail"]
        return self.lookup(loop["array_name"])

    def path_value(self, parts: list[str]) -> Any:
        value = self.lookup(parts[0])
        rest = parts[1:]
        while rest:
            if isinstance(value, Template) and rest[0] == "outputs" and len(rest) > 1:
                value, rest = value.output(rest[1]), rest[2:]
            elif isinstance(value, ResourceRef) and rest == ["name"]:
                return value.template.resource(value.symbol)["name"]
            elif isinstance(value, dict) and rest[0] in value:
                value, rest = value[rest[0]], rest[1:]
            else:
                return Unresolved(".".join(parts))
        return value

    def eval(self, expr: Any) -> Any:
        if isinstance(expr, str):
            return self._string(expr)
        if isinstance(expr, list):
            return [self.eval(item) for item in expr]
        if not isinstance(expr, dict):
            return expr  # int, bool, None
        if "operator" in expr:
            return self._operator(expr["operator"])
        if "function" in expr:
            return self._function(expr["function"]["type"], expr["function"]["parameters"])
        return {key: self.eval(value) for key, value in expr.items()}

    def _string(self, text: str) -> Any:
        # pycep gives identifiers and string literals alike as str: an identifier is a
        # name this file declares; a literal is anything else.
        if IDENTIFIER.fullmatch(text):
            try:
                return self.path_value(text.split("."))
            except KeyError:
                return text
        pieces = INTERPOLATION.split(text)
        if len(pieces) == 1:
            return text
        out = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                out.append(piece)
            else:
                value = self.path_value(piece.split(".")) if IDENTIFIER.fullmatch(piece) else None
                out.append(str(value) if value is not None else str(Unresolved(piece)))
        return "".join(out)

    def _function(self, name: str, parameters: dict[str, Any]) -> Any:
        args = [self.eval(value) for value in parameters.values() if value is not None]
        if name == "string" and not isinstance(args[0], Unresolved):
            return str(args[0]).lower() if isinstance(args[0], bool) else str(args[0])
        # Unknown here (uniqueString, resourceGroup(), ...): keep the call, arguments
        # evaluated, so two values are equal only when they come from the same call.
        return Unresolved(f"{name}({', '.join(str(arg) for arg in args)})")

    def _operator(self, operator: dict[str, Any]) -> Any:
        kind, operands = operator["type"], operator["operands"]
        if kind == "property_accessor":
            parts: list[str] = []
            while True:
                head, tail = operands["operand_1"], operands["operand_2"]
                if not isinstance(head, str):
                    return Unresolved("property of a function result")
                parts.append(head)
                if isinstance(tail, dict) and tail.get("operator", {}).get("type") == kind:
                    operands = tail["operator"]["operands"]
                    continue
                parts.append(str(tail))
                return self.path_value(parts)
        if kind == "add":
            left, right = self.eval(operands["operand_1"]), self.eval(operands["operand_2"])
            if type(left) is type(right) and isinstance(left, (int, str)):
                return left + right
        if kind == "minus":
            value = self.eval(operands["integer_value"])
            if isinstance(value, int):
                return -value
        return Unresolved(kind)


@pytest.fixture(scope="module")
def main() -> Template:
    return Template(INFRA / "main.bicep")


@pytest.fixture(scope="module")
def app(main: Template) -> Template:
    return main.module("functionApp")


@pytest.fixture(scope="module")
def site(app: Template) -> dict[str, Any]:
    return app.resource("app")


@pytest.fixture(scope="module")
def settings(site: dict[str, Any]) -> dict[str, Any]:
    pairs = site["properties"]["siteConfig"]["appSettings"]
    return {pair["name"]: pair["value"] for pair in pairs}


@pytest.fixture(scope="module")
def storage(main: Template) -> Template:
    return main.module("storage")


# --- syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", check.bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    tree = check.parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{path} declares nothing"


def test_every_module_reference_names_a_file() -> None:
    for path in check.bicep_files():
        for symbol, module in (check.parse(path).get("modules") or {}).items():
            target = path.parent / module["detail"]["path"]
            assert target.is_file(), f"{path.name}: module {symbol} -> {target} is missing"


# --- checkov --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> check.CheckovReport:
    try:
        check.ensure_tools(log=False)
    except check.ToolsUnavailable as e:
        message = f"CHECKOV DID NOT RUN: its venv {check.TOOLS_VENV} could not be made: {e}"
        print(f"\n{'!' * 20}\n{message}\n{'!' * 20}", file=sys.stderr)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    return check.run_checkov()


def test_checkov_reports_no_failed_check(checkov: check.CheckovReport) -> None:
    assert not checkov.failed, "checkov failed checks:\n" + checkov.describe(checkov.failed)
    assert checkov.summary["passed"] > 0


def test_checkov_parsed_every_bicep_file(checkov: check.CheckovReport) -> None:
    # checkov bundles an older pycep-parser; a file it cannot parse is silently unchecked.
    assert not checkov.parsing_errors, f"checkov could not parse {checkov.parsing_errors}"
    assert checkov.summary["resource_count"] >= len(check.bicep_files())


def test_every_checkov_skip_is_used_and_explained(checkov: check.CheckovReport) -> None:
    comments = check.skip_comments()
    skipped = {result["check_id"] for result in checkov.skipped}
    assert set(comments) == skipped, "a skip comment suppresses nothing, or checkov missed one"
    for check_id, places in comments.items():
        for path, reason in places:
            assert len(reason) >= 20, f"{path.name}: skip of {check_id} needs a one-line reason"


# --- the function app -----------------------------------------------------------------


def test_function_app_is_on_flex_consumption_fc1(app: Template, site: dict[str, Any]) -> None:
    plan = app.resource("plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    assert site["properties"]["serverFarmId"] == Unresolved("plan.id")
    assert site["kind"] == "functionapp,linux"


def test_function_app_runs_python_3_11(site: dict[str, Any]) -> None:
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}


def test_function_app_is_https_only_with_identity_and_no_basic_auth(
    app: Template, site: dict[str, Any]
) -> None:
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    assert site["identity"] == {"type": "SystemAssigned"}
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    assert properties["siteConfig"]["ftpsState"] == "Disabled"
    for symbol in ("ftpBasicAuth", "scmBasicAuth"):
        assert app.resource(symbol)["properties"] == {"allow": False}


def test_deployment_package_is_read_with_the_app_identity(
    site: dict[str, Any], storage: Template
) -> None:
    deployment = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {"type": "SystemAssignedIdentity"}
    assert deployment["value"] == "<account.properties.primaryEndpoints.blob>app-package"
    assert "app-package" in storage.lookup("containerNames")


def test_app_settings_use_identity_and_key_vault(
    main: Template, settings: dict[str, Any], storage: Template
) -> None:
    assert "AzureWebJobsStorage" not in settings, "no connection string: shared keys are off"
    assert settings["AzureWebJobsStorage__accountName"] == storage.output("name")
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["MESSAGE_RETENTION_DAYS"] == "14"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert not FLEX_DEPRECATED_SETTINGS & set(settings)

    # ENCRYPTION_KEYS names the very secret that key-ring.bicep writes.
    secret = "encryption-keys"
    expected = f"@Microsoft.KeyVault(SecretUri=<vault.properties.vaultUri>secrets/{secret})"
    assert settings["ENCRYPTION_KEYS"] == expected
    key_ring = main.module("keyRing")
    assert key_ring.given["secretName"] == secret
    assert key_ring.given["keyVaultName"] == main.module("keyVault").output("name")


def test_key_ring_is_a_secure_parameter_written_only_when_given(main: Template) -> None:
    parameter = main.section("parameters")["encryptionKeys"]
    assert {"type": "secure"} in parameter["decorators"]
    assert parameter["default"] == ""
    condition = main.section("modules")["keyRing"]["config"]["condition"]
    assert condition["operator"]["type"] == "not"
    assert "empty" in json.dumps(condition)


def test_outputs_name_and_url_of_the_app(main: Template) -> None:
    assert str(main.output("functionAppName")).startswith("func-sbevents-")
    assert main.output("functionAppUrl") == "https://<app.properties.defaultHostName>"


# --- storage --------------------------------------------------------------------------


def test_storage_account_is_identity_only_and_hardened(storage: Template) -> None:
    properties = storage.resource("account")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["allowBlobPublicAccess"] is False
    assert properties["encryption"]["requireInfrastructureEncryption"] is True


def test_storage_holds_the_queues_tables_and_containers_the_app_uses(storage: Template) -> None:
    assert storage.loop_items("queues") == [
        "system-events",
        "system-events-poison",
        "delivery-retries",
        "delivery-retries-poison",
    ]
    assert storage.loop_items("tables") == ["connections", "apikeys", "messages"]
    assert storage.loop_items("containers") == ["message-bodies", "app-package"]


def lifecycle_rule(storage: Template) -> dict[str, Any]:
    (rule,) = storage.resource("lifecycle")["properties"]["policy"]["rules"]
    assert isinstance(rule, dict)
    return rule


def test_message_bodies_are_deleted_a_day_after_their_records(storage: Template) -> None:
    rule = lifecycle_rule(storage)
    assert rule["enabled"] is True
    assert rule["definition"]["filters"]["prefixMatch"] == ["message-bodies/"]
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert delete == {"daysAfterModificationGreaterThan": 15}


def test_retention_follows_the_parameter() -> None:
    main = Template(INFRA / "main.bicep", {"messageRetentionDays": 30})
    rule = lifecycle_rule(main.module("storage"))
    assert rule["definition"]["actions"]["baseBlob"]["delete"] == {
        "daysAfterModificationGreaterThan": 31
    }
    site = main.module("functionApp").resource("app")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    assert settings["MESSAGE_RETENTION_DAYS"] == "30"


# --- Key Vault and roles --------------------------------------------------------------


def test_key_vault_uses_rbac_soft_delete_and_purge_protection(main: Template) -> None:
    properties = main.module("keyVault").resource("vault")["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True


def granted(module: Template, param: str) -> set[str]:
    names = {guid: name for name, guid in ROLE_IDS.items()}
    return {names.get(guid, guid) for guid in module.given.get(param, [])}


def test_app_identity_gets_exactly_the_roles_it_needs(main: Template) -> None:
    access = main.module("appAccess")
    assert access.given["principalId"] == Unresolved("app.identity.principalId")
    assert access.given["principalType"] == "ServicePrincipal"
    assert granted(access, "storageRoleIds") == {
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    }
    assert granted(access, "keyVaultRoleIds") == {"Key Vault Secrets User"}
    assert granted(access, "appInsightsRoleIds") == {"Monitoring Metrics Publisher"}


def test_operator_access_is_optional_and_has_no_blob_data_role(main: Template) -> None:
    assert "condition" in main.section("modules")["operatorAccess"]["config"]
    access = main.module("operatorAccess")
    assert granted(access, "storageRoleIds") == {
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    }
    assert granted(access, "keyVaultRoleIds") == {"Key Vault Secrets Officer"}


def test_role_assignments_are_scoped_to_the_resources() -> None:
    roles = Template(INFRA / "modules" / "role-assignments.bicep")
    for symbol, scope in [
        ("storageRoles", "storage"),
        ("keyVaultRoles", "vault"),
        ("appInsightsRoles", "appInsights"),
    ]:
        assert roles.resource(symbol)["scope"] == ResourceRef(roles, scope)


# --- parameters and API versions ------------------------------------------------------


def test_parameters_file_names_only_main_parameters_and_no_secret(main: Template) -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = main.section("parameters")
    assert set(values) <= set(declared), set(values) - set(declared)
    for name in values:
        assert {"type": "secure"} not in declared[name]["decorators"], f"{name} is secret"
    assert values["messageRetentionDays"]["value"] == 14


def test_each_resource_type_uses_one_current_api_version() -> None:
    versions: dict[str, set[str]] = {}
    for path in check.bicep_files():
        for resource in (check.parse(path).get("resources") or {}).values():
            versions.setdefault(resource["type"], set()).add(resource["api_version"])
    for resource_type, seen in versions.items():
        assert len(seen) == 1, f"{resource_type} is declared with {sorted(seen)}"
        (version,) = seen
        # Diagnostic settings have no GA version newer than 2021-05-01-preview.
        if resource_type != "Microsoft.Insights/diagnosticSettings":
            assert "preview" not in version, f"{resource_type}@{version}"
