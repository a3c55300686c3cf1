"""The portal's connection form (issue 26) in Chromium against the app over real HTTP, with
Azurite and the Service Bus emulator: every setting round-trips through the API and shows the
API's 400 message next to its field, the event picker, and delete with its confirmation. The
browser, the signed-in tab and axe come from tests/test_portal_browser.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.services import Services
from tests import test_portal_browser as shared
from tests.factories import PATH
from tests.plugins.app import Api

expect = shared.expect
pytestmark = shared.pytestmark
browser = shared.browser  # the fixtures, under their names in this module
portal = shared.portal
Portal = shared.Portal


@pytest.fixture(autouse=True)
async def no_script_errors(portal: Portal) -> AsyncIterator[None]:
    """An exception the page's script throws fails the test (the form would be half drawn)."""
    errors: list[str] = []
    portal.page.on("pageerror", lambda error: errors.append(str(error)))
    yield
    assert errors == []


async def open_new_form(portal: Portal) -> Any:
    await portal.open("/new")
    page = portal.page
    await page.get_by_role("checkbox", name="Order.Shipped").wait_for()  # the catalogue is read
    return page


async def test_every_setting_round_trips_through_the_form(
    portal: Portal,
    api: Api,
    servicebus_connection_string: str,
    storage_connection_string: str,
    unique_queue: str,
) -> None:
    page = await open_new_form(portal)
    await page.get_by_label("Title").fill("Warehouse")
    await page.get_by_label("Service Bus connection string").fill(servicebus_connection_string)
    await page.get_by_label("Queue name").fill(unique_queue)
    await page.get_by_label("Blob container connection string").fill(storage_connection_string)
    await page.get_by_label("Blob container name").fill("large-events")
    await page.get_by_role("checkbox", name="*", exact=True).uncheck()
    await page.get_by_role("checkbox", name="Order.*").check()
    await page.get_by_role("checkbox", name="Employee.Created").check()
    await page.get_by_label("Message content of Employee.Created").select_option("Reference")
    await page.get_by_label("Session ID source").select_option("Subject")
    await page.get_by_label("Time to live").fill("PT2H")
    await portal.button("Add a property").click()
    await page.get_by_label("Name 1").fill("Tenant")
    await page.get_by_label("Value 1").fill("contoso")
    await page.get_by_label("Message format").select_option("CloudEvents")
    await page.get_by_label("Retry policy").select_option("Patient")
    await page.get_by_label("Active").uncheck()
    await portal.check("connection-new")
    await portal.button("Create connection").click()
    await page.wait_for_url(re.compile(r"#/connections/[0-9a-f-]{36}$"))
    await page.get_by_text("Connection created.").wait_for()
    uid = page.url.rsplit("/", 1)[1]

    _, stored = await api.call("GET", f"{PATH}/{uid}")
    expected = {
        "Title": "Warehouse",
        "QueueName": unique_queue,
        "BlobContainerName": "large-events",
        "EnabledEvents": ["Employee.Created", "Order.*"],
        "AdvancedSettings": {"Employee.Created": {"EventSettingsType": "Reference"}},
        "SessionIdSource": "Subject",
        "TimeToLive": "PT2H",
        "ApplicationProperties": {"Tenant": "contoso"},
        "MessageFormat": "CloudEvents",
        "RetryPolicy": "Patient",
        "Active": False,
        "Authentication": "ConnectionString",
    }
    assert {k: stored[k] for k in expected} == expected
    masked = {k: stored[k] for k in ("ServiceBusConnectionString", "BlobContainerConnectionString")}
    assert all("***" in v for v in masked.values())

    # Shown back as stored, secrets never: their fields are empty ("leave empty to keep").
    await page.reload()
    await portal.button("Save changes").wait_for()
    assert await page.get_by_label("Service Bus connection string").input_value() == ""
    assert await page.get_by_label("Blob container connection string").input_value() == ""
    assert "SAS_KEY_VALUE" not in await page.content()
    assert await page.get_by_label("Time to live").input_value() == "PT2H"
    assert await page.get_by_label("Retry policy").input_value() == "Patient"
    assert await page.get_by_label("Value 1").input_value() == "contoso"
    assert await page.get_by_role("checkbox", name="Order.*").is_checked()
    content = page.get_by_label("Message content of Employee.Created")
    assert await content.input_value() == "Reference"
    await portal.check("connection-settings")

    # An edit with the secrets left empty keeps them; a removed property is gone.
    await page.get_by_label("Time to live").fill("P1D")
    await page.get_by_role("button", name="Remove property 1").click()
    assert await page.evaluate("document.activeElement.textContent") == "Add a property"
    await content.select_option("Full")
    await portal.button("Save changes").click()
    await page.get_by_text("Saved.", exact=True).wait_for()
    _, edited = await api.call("GET", f"{PATH}/{uid}")
    assert edited["TimeToLive"] == "P1D" and edited["ApplicationProperties"] == {}
    assert edited["AdvancedSettings"] == {}
    assert {k: edited[k] for k in masked} == masked  # the stored secrets, kept

    # Claim-check storage removed on purpose: the container goes with its connection string.
    await page.get_by_label("Remove the stored connection string").check()
    await page.get_by_label("Blob container name").fill("")
    await portal.button("Save changes").click()
    await page.get_by_text("Saved.", exact=True).wait_for()
    _, removed = await api.call("GET", f"{PATH}/{uid}")
    assert removed["BlobContainerConnectionString"] is None
    assert removed["ServiceBusConnectionString"] == masked["ServiceBusConnectionString"]


async def test_the_help_is_the_apis_and_a_setting_the_page_does_not_know_is_shown(
    portal: Portal, api: Api
) -> None:
    """The page takes its fields from /v1/openapi.json. A later API's setting is simulated by
    adding one to the document on its way to the page (the one thing changed: the app itself
    answers every call, and refuses the unknown property as any client's)."""
    _, document = await api.call("GET", "/v1/openapi.json")
    properties = document["components"]["schemas"]["ConnectionInput"]["properties"]
    page = await open_new_form(portal)
    for name in ("QueueName", "TimeToLive", "RetryPolicy", "MessageFormat", "SessionIdSource"):
        await expect(page.locator(f"#h-{name}")).to_have_text(properties[name]["description"])
    retry = page.get_by_label("Retry policy").locator("option")
    assert await retry.all_inner_texts() == properties["RetryPolicy"]["enum"]

    later = {"type": "string", "description": "A setting of a later version."}
    properties["LaterSetting"] = later

    async def with_later_setting(route: Any) -> None:
        await route.fulfill(json=document)

    await page.route("**/v1/openapi.json", with_later_setting)
    await page.reload()
    await page.get_by_role("group", name="Other settings").wait_for()
    await expect(page.locator("#h-LaterSetting")).to_have_text(later["description"])
    await page.get_by_label("Later Setting").fill("x")
    await page.get_by_label("Queue name").fill("orders")
    await page.get_by_label("Active").uncheck()  # nothing sent: the API refuses first anyway
    await portal.button("Create connection").click()
    await expect(page.locator("#e-LaterSetting")).to_contain_text("Extra inputs")


async def test_each_settings_400_shows_next_to_its_field(
    portal: Portal, servicebus_connection_string: str
) -> None:
    page = await open_new_form(portal)
    bad = {
        "Service Bus connection string": "Endpoint=nonsense",
        "Queue name": "not a queue!",
        "Blob container connection string": "AccountName=UPPER;AccountKey=a2V5",
        "Blob container name": "Bad_Name",
        "Time to live": "PT5S",
        "Title": "T" * 201,
    }
    for label, value in bad.items():
        await page.get_by_label(label).fill(value)
    await portal.button("Add a property").click()
    await page.get_by_label("Name 1").fill("EventKey")  # a name of ours
    await page.get_by_label("Value 1").fill("x")
    await portal.button("Add a property").click()  # the same name again: said before sending
    await page.get_by_label("Name 2").fill("EventKey")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    await portal.button("Create connection").click()
    await expect(page.locator("#e-ApplicationProperties")).to_contain_text(
        "EventKey is given twice"
    )
    assert posts == []
    await page.get_by_role("button", name="Remove property 2").click()
    await portal.button("Create connection").click()
    slots = {
        "ServiceBusConnectionString": None,
        "QueueName": "1 to 260 letters",
        "BlobContainerConnectionString": None,
        "BlobContainerName": "3-63 lowercase letters",
        "TimeToLive": "from PT1M (1 minute) to P14D",
        "ApplicationProperties": "EventKey is set by the delivery service",
        "Title": "at most 200 characters",
    }
    for name, words in slots.items():
        slot = page.locator(f"#e-{name}")
        await expect(slot).not_to_have_text("")
        if words:
            await expect(slot).to_contain_text(words)
        assert await page.locator(f"#f-{name}").get_attribute("aria-invalid") == "true", name
    summary = page.get_by_role("alert").filter(has_text="Not saved")
    await expect(summary).to_contain_text("Queue name")
    assert await page.evaluate("document.activeElement.id") == "f-Title"  # the first named
    await portal.check("connection-form-errors")

    # Entra ID: its own fields, the connection strings hidden (sent as null), its own rules.
    await page.get_by_label("Authentication").select_option("EntraId")
    assert not await page.get_by_label("Service Bus connection string").is_visible()
    await page.get_by_label("Namespace (fully qualified)").fill("not a host!")
    await page.get_by_label("Blob service URI").fill("ftp://contoso")
    await page.get_by_label("Title").fill("")
    await page.get_by_label("Queue name").fill("orders")
    await page.get_by_label("Time to live").fill("")
    await page.get_by_role("button", name="Remove property 1").click()
    await portal.button("Create connection").click()
    await expect(page.locator("#e-FullyQualifiedNamespace")).to_contain_text("a host name")
    tenant_error = page.locator("#e-TenantId")
    await expect(tenant_error).to_contain_text("required with Authentication EntraId")
    await expect(page.locator("#e-BlobServiceUri")).to_contain_text("the blob endpoint")
    await expect(page.locator("#e-QueueName")).to_have_text("")
    # A tenant never consented through this account's link is refused before anything is sent.
    await page.get_by_label("Namespace (fully qualified)").fill("contoso.servicebus.windows.net")
    await page.get_by_label("Blob service URI").fill("")
    await page.get_by_label("Blob container name").fill("")
    await page.get_by_label("Entra ID tenant ID").fill(str(uuid.uuid4()))
    # This app has no Entra ID application (APP_CLIENT_ID): the link's 404 says so there.
    await portal.button("Get the admin-consent link").click()
    await expect(page.locator("#e-TenantId")).not_to_have_text("")
    await portal.button("Create connection").click()
    await expect(page.locator("#e-TenantId")).to_contain_text("consent")
    await expect(page.locator("#e-FullyQualifiedNamespace")).to_have_text("")
    await portal.check("connection-form-entra")


async def test_an_entra_id_connection_round_trips_through_the_form(
    portal: Portal, api: Api, services: Services, account: str
) -> None:
    """Saved inactive, hence without the verification message (no Entra ID here); the tenant
    bound as the consent redirect binds it (tests/test_ownership.py covers that route)."""
    from shared.models.connection import ConsentCallbackQuery
    from shared.service.ownership import grant_consent

    tenant = str(uuid.uuid4())
    state = services.consent_states.sign(account, tenant, services.clock())
    await grant_consent(
        services, ConsentCallbackQuery(admin_consent="True", tenant=tenant, state=state)
    )
    page = await open_new_form(portal)
    await page.get_by_label("Authentication").select_option("EntraId")
    await page.get_by_label("Namespace (fully qualified)").fill("Contoso.servicebus.windows.net")
    await page.get_by_label("Entra ID tenant ID").fill(tenant)
    await page.get_by_label("Queue name").fill("orders")
    await page.get_by_label("Blob service URI").fill("https://contoso.blob.core.windows.net")
    await page.get_by_label("Blob container name").fill("large-events")
    await page.get_by_label("Active").uncheck()
    await portal.button("Create connection").click()
    await page.wait_for_url(re.compile(r"#/connections/[0-9a-f-]{36}$"))
    await portal.heading("Confirm this connection").wait_for()
    _, stored = await api.call("GET", f"{PATH}/{page.url.rsplit('/', 1)[1]}")
    assert {k: stored[k] for k in ("Authentication", "FullyQualifiedNamespace", "TenantId")} == {
        "Authentication": "EntraId",
        "FullyQualifiedNamespace": "contoso.servicebus.windows.net",
        "TenantId": tenant,
    }
    assert stored["BlobServiceUri"] == "https://contoso.blob.core.windows.net"
    assert stored["ServiceBusConnectionString"] is None and stored["Confirmed"] is False
    assert not await page.get_by_label("Service Bus connection string").is_visible()
    assert await page.get_by_label("Entra ID tenant ID").input_value() == tenant


async def test_a_failed_verification_shows_next_to_the_field_it_names(
    portal: Portal, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = await open_new_form(portal)
    wrong = servicebus_connection_string.replace("SAS_KEY_VALUE", "wrong-key")
    await page.get_by_label("Service Bus connection string").fill(wrong)
    await page.get_by_label("Queue name").fill(unique_queue)
    await portal.button("Create connection").click()
    await expect(page.locator("#e-ServiceBusConnectionString")).not_to_have_text("")
    await expect(page.get_by_role("alert").filter(has_text="Not saved")).to_contain_text(
        "Service Bus connection string"
    )
    assert "#/new" in page.url  # nothing saved


async def test_the_event_picker_filters_the_catalogue_and_works_by_keyboard(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    page = await open_new_form(portal)
    _, catalogue = await api.call("GET", "/v1/events")
    options = page.locator("#event-options li")
    prefixes = {e["EventKey"].split(".")[0] for e in catalogue}
    assert await options.count() == 1 + len(prefixes) + len(catalogue)  # `*`, `Prefix.*`, keys
    shipped = page.locator("li", has=page.get_by_role("checkbox", name="Order.Shipped"))
    await expect(shipped).to_contain_text("An order left the warehouse.")  # its description
    await page.get_by_label("Service Bus connection string").fill(servicebus_connection_string)
    await page.get_by_label("Queue name").fill(unique_queue)

    # The keyboard alone: type a filter (Enter filters, never submits), Tab to a key, Space.
    await page.get_by_label("Filter the catalogue").focus()
    await page.keyboard.type("warehouse")
    await page.keyboard.press("Enter")
    assert "#/new" in page.url
    await expect(options.filter(visible=True)).to_have_count(1)
    await expect(page.locator("#event-count")).to_contain_text("1 of")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.value") == "Order.Shipped"
    await page.keyboard.press("Space")
    # What is enabled but filtered out (`*` here) is still said.
    await expect(page.locator("#event-chosen")).to_have_text("Enabled: *, Order.Shipped")
    assert not await page.get_by_role("checkbox", name="*", exact=True).is_visible()
    # Descriptions match too: the platform's events, which `*` leaves out.
    await page.get_by_label("Filter the catalogue").fill("platform")
    await expect(options.filter(visible=True)).to_contain_text(["*", "System.*"])
    await page.get_by_role("checkbox", name="System.*").check()
    await expect(page.locator("#event-chosen")).to_have_text("Enabled: *, Order.Shipped, System.*")
    await portal.check("connection-event-picker")
    await portal.button("Create connection").click()
    await page.wait_for_url(re.compile(r"#/connections/[0-9a-f-]{36}$"))
    _, stored = await api.call("GET", f"{PATH}/{page.url.rsplit('/', 1)[1]}")
    assert stored["EnabledEvents"] == ["*", "Order.Shipped", "System.*"]


async def test_delete_asks_for_the_name_and_cancel_keeps_the_connection(
    portal: Portal, api: Api, servicebus_connection_string: str, unique_queue: str
) -> None:
    uid = await shared.make_connection(api, servicebus_connection_string, unique_queue)
    page = portal.page
    await portal.open(f"/connections/{uid}")
    dialog = page.get_by_role("dialog", name="Delete ERP?")
    await portal.button("Delete connection…").click()
    await dialog.wait_for()
    await portal.check("connection-delete")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await page.get_by_text("Not deleted.").wait_for()
    assert (await api.call("GET", f"{PATH}/{uid}"))[0] == 200

    await portal.button("Delete connection…").click()
    await page.keyboard.press("Escape")  # cancels too
    await expect(dialog).to_be_hidden()

    await portal.button("Delete connection…").click()
    await dialog.get_by_label("Name of the connection").fill("ER")  # not its name
    await dialog.get_by_role("button", name="Delete connection").click()
    await expect(dialog.locator("#delete-error")).to_contain_text("Type ERP exactly")
    assert (await api.call("GET", f"{PATH}/{uid}"))[0] == 200
    await dialog.get_by_label("Name of the connection").fill("ERP")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"#/$"))
    await page.get_by_text("Connection ERP deleted.").wait_for()
    await portal.heading("Connections").wait_for()
    assert await page.get_by_role("cell", name=unique_queue).count() == 0  # the list updated
    assert (await api.call("GET", f"{PATH}/{uid}"))[0] == 404
