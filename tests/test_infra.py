"""The Bicep in infra/: every file parses, checkov passes, and what the app relies on holds.

No Bicep compiler and no Azure are available here, so the facts are read from
pycep-parser's tree, evaluated by `tests.bicep.Template` as far as can be known before
deployment. The app settings are checked against the code in tests/test_infra_settings.py.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from infra import check
from tests.bicep import ResourceRef, Template, Unresolved, app_settings, body

INFRA = check.INFRA

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
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
def settings(main: Template) -> dict[str, Any]:
    return app_settings(main)


@pytest.fixture(scope="module")
def storage(main: Template) -> Template:
    return main.module("storage")


@pytest.fixture(scope="module")
def identity(main: Template) -> Template:
    return main.module("identity")


@pytest.fixture(scope="module")
def alerts(main: Template) -> Template:
    return main.module("alerts")


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


def test_function_app_is_https_only_with_no_basic_auth_and_no_ftps_state(
    app: Template, site: dict[str, Any]
) -> None:
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    # Not a Flex Consumption setting: ARM rejects the site with it.
    assert "ftpsState" not in properties["siteConfig"]
    assert "ftpsState" not in json.dumps(app.tree)
    for symbol in ("ftpBasicAuth", "scmBasicAuth"):
        assert app.resource(symbol)["properties"] == {"allow": False}


IDENTITY_ID = Unresolved("identity.id")
CLIENT_ID = Unresolved("identity.properties.clientId")


def test_a_user_assigned_identity_is_made_in_its_own_module(main: Template) -> None:
    identity = main.module("identity")
    resource = identity.section("resources")["identity"]
    assert resource["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert str(identity.resource("identity")["name"]).startswith("id-sbevents-")
    assert identity.output("id") == IDENTITY_ID
    assert identity.output("clientId") == CLIENT_ID


def test_the_site_runs_as_the_user_assigned_identity_only(site: dict[str, Any]) -> None:
    assert site["identity"]["type"] == "UserAssigned"
    # The key is the Bicep expression '${identityId}', which resolves to the identity's id.
    (key,) = site["identity"]["userAssignedIdentities"]
    assert key == "'${identityId}'"
    assert site["properties"]["keyVaultReferenceIdentity"] == IDENTITY_ID


def test_deployment_package_is_read_with_the_app_identity(
    site: dict[str, Any], storage: Template
) -> None:
    deployment = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": IDENTITY_ID,
    }
    assert deployment["value"] == "<account.properties.primaryEndpoints.blob>app-package"
    assert "app-package" in storage.lookup("containerNames")


def test_app_settings_use_identity_and_key_vault(
    main: Template, settings: dict[str, Any], storage: Template
) -> None:
    assert "AzureWebJobsStorage" not in settings, "no connection string: shared keys are off"
    assert settings["AzureWebJobsStorage__accountName"] == storage.output("name")
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == CLIENT_ID
    # The service URIs as this cloud names them (the account name alone means core.windows.net).
    for service in ("blob", "queue", "table"):
        endpoint = f"<account.properties.primaryEndpoints.{service}>"
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == Unresolved(endpoint[1:-1])
    assert settings["MESSAGE_RETENTION_DAYS"] == "14"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        f"ClientId={CLIENT_ID};Authorization=AAD"
    )
    assert not FLEX_DEPRECATED_SETTINGS & set(settings)
    # The worker exports the app's log lines (shared.*) with their fields: see test_telemetry.
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert settings["PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME"] == "shared"

    # ENCRYPTION_KEYS names the very secret that key-ring.bicep writes.
    secret = "encryption-keys"
    expected = f"@Microsoft.KeyVault(SecretUri=<vault.properties.vaultUri>secrets/{secret})"
    assert settings["ENCRYPTION_KEYS"] == expected
    key_ring = main.module("keyRing")
    assert key_ring.given["secretName"] == secret
    assert key_ring.given["keyVaultName"] == main.module("keyVault").output("name")


def test_the_bicep_never_allows_local_endpoints() -> None:
    # ALLOW_LOCAL_ENDPOINTS lets a tenant's connection point at loopback: local runs only.
    for path in [*check.bicep_files(), INFRA / "main.parameters.json"]:
        assert "ALLOW_LOCAL_ENDPOINTS" not in path.read_text(), path


KEY_RING_COMMAND = "import base64,os; print('k1:'+base64.b64encode(os.urandom(32)).decode())"


def test_key_ring_is_a_required_secure_parameter_always_written(main: Template) -> None:
    """No default and a minimum length: ARM rejects a deployment without a ring before it
    creates anything. The minimum is the length of one key made the documented way."""
    import subprocess

    from shared.crypto import KeyRing

    parameter = main.section("parameters")["encryptionKeys"]
    assert {"type": "secure"} in parameter["decorators"]
    assert parameter["default"] is None
    (minimum,) = [d["argument"] for d in parameter["decorators"] if d["type"] == "min_length"]
    assert "condition" not in main.section("modules")["keyRing"]["config"]
    description = next(d["argument"] for d in parameter["decorators"] if d["type"] == "description")
    assert KEY_RING_COMMAND.replace("'", "\\'") in description

    # The command works with the system Python, isolated from the venv and this repo.
    made = subprocess.run(
        ["python3", "-I", "-c", KEY_RING_COMMAND], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(made) == minimum
    KeyRing(made)  # the app accepts it


def test_every_document_makes_the_key_ring_with_that_command() -> None:
    """The one command, in the script and the docs; none that needs the venv."""
    root = INFRA.parent
    for path in (INFRA / "deploy.sh", root / "README.md", root / "docs" / "DEPLOYMENT.md"):
        text = path.read_text()
        assert f'python3 -c \\"{KEY_RING_COMMAND}\\"' in text or (
            f'python3 -c "{KEY_RING_COMMAND}"' in text
        ), path
        assert "KeyRing.new_key_spec" not in text, path


def test_the_site_is_created_after_its_roles_and_the_key_ring(main: Template) -> None:
    modules = main.section("modules")
    assert set(modules["functionApp"]["config"]["dependsOn"]) == {"appAccess", "keyRing"}
    # ...and those do not wait for the site: nothing they take comes from it.
    for symbol in ("identity", "appAccess", "keyRing"):
        assert "functionApp" not in json.dumps(modules[symbol]["config"]), symbol


def test_outputs_name_and_url_of_the_app(main: Template) -> None:
    assert str(main.output("functionAppName")).startswith("func-sbevents-")
    assert main.output("functionAppUrl") == "https://<app.properties.defaultHostName>"


# --- storage --------------------------------------------------------------------------


def test_storage_sku_defaults_to_lrs_with_zrs_allowed(main: Template, storage: Template) -> None:
    assert storage.resource("account")["sku"] == {"name": "Standard_LRS"}
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["storageSku"]["value"] == "Standard_LRS"
    allowed = next(
        d["argument"]
        for d in main.section("parameters")["storageSku"]["decorators"]
        if d["type"] == "allowed"
    )
    assert "Standard_ZRS" in allowed


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
        "replays",
        "replays-poison",
    ]
    assert storage.loop_items("tables") == [
        "connections",
        "apikeys",
        "messages",
        "portalsessions",
        "replays",
        "ownership",
        "audit",
    ]
    assert storage.loop_items("containers") == ["message-bodies", "app-package"]


def test_storage_and_the_guide_hold_every_table_and_queue_the_code_names(
    storage: Template,
) -> None:
    from shared.storage import clients

    names = vars(clients).items()
    tables = {value for name, value in names if name.endswith("_TABLE")}
    queues = {value for name, value in names if name.endswith("_QUEUE")}
    poison = {queue + clients.POISON_SUFFIX for queue in queues}
    assert set(storage.loop_items("tables")) == tables
    assert set(storage.loop_items("queues")) == queues | poison
    guide = (INFRA.parent / "docs" / "DEPLOYMENT.md").read_text()
    for name in sorted(tables | queues | poison | {clients.BODIES_CONTAINER}):
        assert f"`{name}`" in guide, f"docs/DEPLOYMENT.md does not list {name}"


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
    given = module.given.get(param, [])
    return {names.get(guid, guid) for guid in ([given] if isinstance(given, str) else given)}


def test_app_identity_gets_exactly_the_roles_it_needs(main: Template) -> None:
    access = main.module("appAccess")
    assert access.given["principalId"] == main.module("identity").output("principalId")
    assert access.given["principalId"] == Unresolved("identity.properties.principalId")
    assert access.given["principalType"] == "ServicePrincipal"
    assert granted(access, "storageRoleIds") == {
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    }
    assert granted(access, "keyVaultRoleIds") == {"Key Vault Secrets User"}
    assert granted(access, "appInsightsRoleIds") == {"Monitoring Metrics Publisher"}


def test_operator_access_is_optional_and_covers_the_cli(main: Template) -> None:
    assert "condition" in main.section("modules")["operatorAccess"]["config"]
    access = main.module("operatorAccess")
    assert granted(access, "storageRoleIds") == {
        "Storage Blob Data Contributor",  # an event over 48 KB is published through a blob
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


def role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    return [
        (path, symbol, resource)
        for path in check.bicep_files()
        for symbol, resource in (check.parse(path).get("resources") or {}).items()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    ]


def test_role_assignment_names_come_from_scope_principal_and_role() -> None:
    """The same name on every deployment: a deployment updates its assignments, never adds
    a second. RoleAssignmentExists then only means one made outside the template
    (docs/DEPLOYMENT.md, Troubleshooting)."""
    assert len(role_assignments()) == 4
    for path, symbol, resource in role_assignments():
        config = body(resource)
        name = config["name"]["function"]
        assert name["type"] == "guid", (path.name, symbol)
        scope_id, *rest = name["parameters"].values()
        accessor = {"operator": {"type": "property_accessor", "operands": {}}}
        accessor["operator"]["operands"] = {"operand_1": config["scope"], "operand_2": "id"}
        assert scope_id == accessor, (path.name, symbol)
        assert rest == ["principalId", "roleId"], (path.name, symbol)
    for path in check.bicep_files():
        assert "newGuid" not in path.read_text(), path


@pytest.mark.parametrize("count", [1, 3])
def test_the_publisher_may_send_to_the_system_events_queues_and_nothing_else(
    main: Template, count: int
) -> None:
    from shared.eventqueues import system_event_queues

    assert "condition" in main.section("modules")["publisherAccess"]["config"]
    deployed = Template(
        INFRA / "main.bicep", {"publisherPrincipalId": "platform", "systemEventQueueCount": count}
    )
    access = deployed.module("publisherAccess")
    assert access.given["principalId"] == "platform"
    assert access.given["principalType"] == "ServicePrincipal"
    assert granted(access, "roleId") == {"Storage Queue Data Message Sender"}
    # Each queue the code publishes to, as the storage module makes them; scoped to it.
    queues = deployed.module("storage").output("systemEventQueues")
    assert access.given["queueNames"] == queues == list(system_event_queues(count))
    assert access.loop_items("senders") == queues
    existing = access.section("resources")["queues"]
    assert existing["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"
    assert existing["existing"] is True
    scope = body(access.section("resources")["senders"])["scope"]
    assert scope == {
        "operator": {
            "type": "index_accessor",
            "operands": {"operand_1": "queues", "operand_2": "i"},
        }
    }
    # No other module names the publisher: it holds no other role.
    for symbol, module in main.section("modules").items():
        if symbol != "publisherAccess":
            assert "publisherPrincipal" not in json.dumps(module), symbol


def test_each_system_events_queue_is_made_with_its_poison_queue_and_the_app_told_how_many() -> None:
    from shared.eventqueues import system_event_queues

    deployed = Template(INFRA / "main.bicep", {"systemEventQueueCount": 3})
    made = deployed.module("storage").loop_items("queues")
    queues = list(system_event_queues(3))
    assert queues == ["system-events", "system-events-1", "system-events-2"]
    assert set(queues) | {f"{q}-poison" for q in queues} <= set(made)
    assert {"delivery-retries", "delivery-retries-poison", "replays-poison"} <= set(made)
    assert app_settings(deployed)["SYSTEM_EVENT_QUEUE_COUNT"] == "3"
    # The app's identity reads and deletes messages on every queue: its role is account-wide.
    app_access = deployed.module("appAccess")
    assert "Storage Queue Data Contributor" in granted(app_access, "storageRoleIds")


def test_pausing_disables_every_dispatch_function_of_n_queues() -> None:
    import azure.functions as func

    from shared.triggers import add_system_event_triggers

    blueprint = func.Blueprint()
    add_system_event_triggers(blueprint, 3)
    app = func.FunctionApp()
    app.register_functions(blueprint)
    dispatchers = {f.get_function_name() for f in app.get_functions()}
    assert len(dispatchers) == 3
    paused = app_settings(
        Template(INFRA / "main.bicep", {"pauseTriggers": True, "systemEventQueueCount": 3})
    )
    disabled = {n.split(".")[1] for n, v in paused.items() if n.endswith(".Disabled")}
    assert dispatchers <= disabled
    assert disabled - dispatchers == {"retry_delivery", "replay_records", "purge_old_messages"}


def test_pausing_disables_every_queue_and_timer_function_of_the_app() -> None:
    import function_app
    from local.host.config import indexed_functions

    functions = indexed_functions(function_app.app)
    triggers = {f.get_function_name(): f.get_trigger() for f in functions}
    triggered = {n for n, t in triggers.items() if t and t.get_dict_repr()["type"] != "httpTrigger"}
    assert triggered  # the dispatcher, retries, replays and the purge
    paused = app_settings(Template(INFRA / "main.bicep", {"pauseTriggers": True}))
    disabled = {
        n.split(".")[1] for n, v in paused.items() if n.endswith(".Disabled") and v == "true"
    }
    assert disabled == triggered
    running = app_settings(Template(INFRA / "main.bicep"))
    assert not [name for name in running if name.endswith(".Disabled")]


def test_flex_consumption_scales_to_at_least_40_instances(main: Template, app: Template) -> None:
    for template, name in ((main, "maximumInstanceCount"), (app, "maximumInstanceCount")):
        decorators = template.section("parameters")[name]["decorators"]
        assert {"type": "min_value", "argument": 40} in decorators, template
    assert main.param("maximumInstanceCount") == 40


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


# --- alerts and the workbook ----------------------------------------------------------


def test_log_alerts_cover_poison_failed_deliveries_and_function_failures(
    alerts: Template,
) -> None:
    rules = {rule["key"]: rule for rule in alerts.lookup("logAlerts")}
    queries = alerts.lookup("queries")
    assert set(rules) == set(queries) == {"poison", "failedDeliveries", "functionFailures"}
    assert alerts.loop_items("logAlertRules") == list(rules.values())
    declared = alerts.section("resources")["logAlertRules"]
    assert declared["type"] == "Microsoft.Insights/scheduledQueryRules"

    # Poison: the app's own line and the host's line after maxDequeueCount.
    assert "-poison" in queries["poison"]
    assert "moved to" in queries["poison"] and "Moving message to queue" in queries["poison"]
    assert rules["poison"]["threshold"] == 0
    # Failed deliveries that are our fault: structured fields on traces.
    failed = queries["failedDeliveries"]
    assert failed.startswith("traces")
    assert "customDimensions.ConnectionUid" in failed
    assert "customDimensions.ErrorCategory" in failed  # not Category: the host's name
    assert 'ErrorCategory != "Configuration"' in failed
    assert rules["failedDeliveries"]["threshold"] == 20
    assert queries["functionFailures"].startswith("requests | where success == false")
    for query in queries.values():  # sampling-corrected counts in the measured column
        assert query.endswith("summarize Count = sum(itemCount)")


def test_log_alerts_query_application_insights(main: Template, alerts: Template) -> None:
    assert alerts.given["appInsightsId"] == main.module("monitoring").output("appInsightsId")
    body_ = json.dumps(alerts.section("resources")["logAlertRules"])
    assert "appInsightsId" in body_ and "metricMeasureColumn" in body_


def test_health_is_checked_from_outside_with_an_alert(main: Template, alerts: Template) -> None:
    test = alerts.resource("healthTest")
    assert test["kind"] == "standard"
    assert test["properties"]["Request"]["RequestUrl"] == (
        "https://<app.properties.defaultHostName>/v1/health"
    )
    assert test["properties"]["ValidationRules"]["ExpectedHttpStatusCode"] == 200
    assert test["properties"]["Frequency"] == Unresolved("multiply")  # minutes * 60
    alert = alerts.resource("healthAlert")
    criteria = alert["properties"]["criteria"]
    assert criteria["odata.type"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert criteria["webTestId"] == Unresolved("healthTest.id")


def test_alerts_notify_only_when_an_email_is_given(main: Template, alerts: Template) -> None:
    assert main.param("alertEmail") == ""
    assert alerts.given["alertEmail"] == ""
    condition = alerts.section("resources")["actionGroup"]["config"]["condition"]
    assert condition == "notify"
    assert "notify" in json.dumps(alerts.section("resources")["healthAlert"]["config"])


def test_workbook_shows_deliveries_failures_by_category_and_p95() -> None:
    workbook = Template(INFRA / "modules" / "workbook.bicep")
    data = workbook.section("resources")["workbook"]["config"]["properties"]["serializedData"]
    assert data["function"]["type"] == "load_text_content"
    path = (INFRA / "modules" / data["function"]["parameters"]["file_path"]).resolve()
    assert path == INFRA / "workbook.json"
    document = json.loads(path.read_text())
    assert document["version"] == "Notebook/1.0"
    queries = {
        item["content"]["title"]: item["content"]["query"]
        for item in document["items"]
        if item["type"] == 3
    }
    assert set(queries) == {
        "Deliveries per hour",
        "Failures by category",
        "Delivery latency (ElapsedMilliseconds), p50 and p95",
    }
    delivery_lines = "traces | where isnotempty(tostring(customDimensions.ConnectionUid))"
    summary_lines = f"{delivery_lines} and isnotempty(tostring(customDimensions.Deliveries))"
    for query in queries.values():
        assert query.startswith(delivery_lines)
        assert "bin(timestamp, 1h)" in query
    # Deliveries and latency from the summary line each minute (successes have no line).
    deliveries = queries["Deliveries per hour"]
    assert deliveries.startswith(summary_lines)
    assert "sum(toint(customDimensions.Succeeded) * itemCount)" in deliveries
    assert "sum(toint(customDimensions.Failed) * itemCount)" in deliveries
    latency = queries["Delivery latency (ElapsedMilliseconds), p50 and p95"]
    assert latency.startswith(summary_lines)
    assert "customDimensions.ElapsedMillisecondsP95" in latency
    # Failures by category from the warning line of each failure.
    failures = queries["Failures by category"]
    assert "severityLevel >= 2" in failures
    assert "customDimensions.ErrorCategory" in failures
