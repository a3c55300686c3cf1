"""Rules of the contract checked on the plain core (no storage, no HTTP)."""

import json
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import ValidationError

from shared import catalog, connstrings
from shared.clock import uuid7, uuid7_millis
from shared.crypto import KeyRing
from shared.models.base import error_map
from shared.models.connectioninput import ConnectionInput
from shared.models.records import MessageQuery
from shared.storage.logrecords import row_key, row_key_bound

SB = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc="
STORAGE = (
    "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=a2V5;"
    "EndpointSuffix=core.windows.net"
)


def connection(**changes: object) -> dict[str, object]:
    return {"ServiceBusConnectionString": SB, "QueueName": "platform-events", **changes}


def errors_of(body: object) -> dict[str, list[str]]:
    try:
        ConnectionInput.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as e:
        return error_map(e)
    return {}


@pytest.mark.parametrize(
    "value",
    [
        SB,
        SB + ";EntityPath=platform-events",
        "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
        "Endpoint=sb://x.servicebus.windows.net;"
        "SharedAccessSignature=SharedAccessSignature sr=a&sig=b",
        "endpoint=sb://x.servicebus.windows.net/;sharedaccesskeyname=a;sharedaccesskey=b",
    ],
)
def test_service_bus_connection_strings_that_parse(value: str) -> None:
    assert errors_of(connection(ServiceBusConnectionString=value)) == {}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nonsense",
        "Endpoint=https://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b",
        "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a",
        "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey=b",
        "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b;Color=blue",
        "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=maybe",
        "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=",
    ],
)
def test_service_bus_connection_strings_refused(value: str) -> None:
    assert "ServiceBusConnectionString" in errors_of(connection(ServiceBusConnectionString=value))


def test_entity_path_must_equal_queue_name() -> None:
    body = connection(ServiceBusConnectionString=SB + ";EntityPath=other")
    assert "QueueName" in errors_of(body)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("q", True),
        ("a" * 260, True),
        ("a" * 261, False),
        ("orders/incoming", True),
        ("/orders", False),
        ("orders/", False),
        ("has space", False),
        ("dots.dash-under_", True),
        ("", False),
    ],
)
def test_queue_names(name: str, ok: bool) -> None:
    assert ("QueueName" not in errors_of(connection(QueueName=name))) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("large-events", True),
        ("abc", True),
        ("ab", False),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Large", False),
        ("-abc", False),
        ("abc-", False),
        ("a--b", False),
    ],
)
def test_container_names(name: str, ok: bool) -> None:
    body = connection(BlobContainerConnectionString=STORAGE, BlobContainerName=name)
    assert ("BlobContainerName" not in errors_of(body)) is ok


def test_blob_settings_come_together() -> None:
    assert "BlobContainerName" in errors_of(connection(BlobContainerConnectionString=STORAGE))
    assert "BlobContainerName" in errors_of(connection(BlobContainerName="large-events"))
    dev = connection(
        BlobContainerConnectionString="UseDevelopmentStorage=true", BlobContainerName="large-events"
    )
    assert errors_of(dev) == {}
    bad = connection(BlobContainerConnectionString="AccountName=x", BlobContainerName="abc")
    assert "BlobContainerConnectionString" in errors_of(bad)


def test_property_names_ignore_case_and_unknown_ones_are_refused() -> None:
    body = {"servicebusconnectionstring": SB, "QUEUENAME": "q", "uid": None}
    assert errors_of(body) == {}
    assert "Colour" in errors_of(connection(Colour="blue"))
    assert errors_of({**connection(), "queuename": "other"})  # given twice


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (connection(Active="yes"), "Active"),
        (connection(EnabledEvents="Order.Shipped"), "EnabledEvents"),
        (connection(Uid="not-a-uuid"), "Uid"),
        (connection(QueueName=5), "QueueName"),
    ],
)
def test_wrong_types_are_refused(body: dict[str, object], field: str) -> None:
    assert field in errors_of(body)


def test_event_keys_and_patterns() -> None:
    model = ConnectionInput.model_validate(
        connection(EnabledEvents=["order.*", "Employee.Created", "*", "Employee.Created"])
    )
    assert model.enabled_events == ["Order.*", "Employee.Created", "*"]
    unknown = str(errors_of(connection(EnabledEvents=["*", "Nope.Thing"])))
    assert "[1]" in unknown and "Nope.Thing" not in unknown  # by position, never echoed
    assert "EnabledEvents" in errors_of(connection(EnabledEvents=["Nope.*"]))


def test_matching() -> None:
    assert catalog.matches("*", "Order.Shipped")
    assert catalog.matches("Order.*", "Order.Shipped")
    assert not catalog.matches("Order.*", "OrderX.Shipped")
    assert not catalog.matches("Order.Created", "Order.Shipped")
    conn = ConnectionInput.model_validate(connection(EnabledEvents=["Order.*"]))
    assert conn.wants("Order.Shipped") and not conn.wants("Employee.Created")
    assert not ConnectionInput.model_validate(connection(EnabledEvents=[])).wants("Order.Shipped")
    inactive = ConnectionInput.model_validate(connection(EnabledEvents=["*"], Active=False))
    assert not inactive.wants("Order.Shipped")


def test_advanced_settings() -> None:
    conn = ConnectionInput.model_validate(
        connection(
            EnabledEvents=["Order.*", "Employee.Created"],
            AdvancedSettings={
                "Order.*": {"EventSettingsType": "Reference"},
                "Order.Shipped": {"eventsettingstype": "Full"},
            },
        )
    )
    assert conn.event_settings_type("Order.Created") == "Reference"
    assert conn.event_settings_type("Order.Shipped") == "Full"
    assert conn.event_settings_type("Employee.Created") == "Full"
    not_enabled = connection(EnabledEvents=["Order.*"], AdvancedSettings={"Employee.Created": {}})
    assert "AdvancedSettings" in errors_of(not_enabled)
    thin = {"Order.Shipped": {"EventSettingsType": "Thin"}}
    wrong_type = connection(EnabledEvents=["Order.*"], AdvancedSettings=thin)
    assert "AdvancedSettings.Order.Shipped.EventSettingsType" in errors_of(wrong_type)


def test_masking_hides_every_secret_and_restoring_puts_them_back() -> None:
    sas = "Endpoint=sb://x/;SharedAccessSignature=SharedAccessSignature sr=a&sig=SECRET"
    for value in (SB, STORAGE, sas):
        masked = connstrings.mask(connstrings.parse_any(value))
        assert "abc=" not in masked and "a2V5" not in masked and "SECRET" not in masked
        assert connstrings.MASK in masked
        restored = connstrings.restore_masked(
            connstrings.parse_any(masked), connstrings.parse_any(value)
        )
        assert connstrings.render(restored) == value
    with pytest.raises(connstrings.ConnectionStringError):
        connstrings.restore_masked(connstrings.parse_any(SB.replace("abc=", "***")), None)


def test_key_ring_seals_opens_and_rotates() -> None:
    old = KeyRing.new_key_spec("old")
    sealed = KeyRing(old).seal("secret", "acme/1")
    assert "secret" not in sealed and sealed.startswith("v1.old.")
    rotated = KeyRing(KeyRing.new_key_spec("new") + "," + old)
    assert rotated.open(sealed, "acme/1") == "secret"
    assert rotated.seal("secret", "acme/1").startswith("v1.new.")
    with pytest.raises(InvalidTag):  # bound to its owner: another connection cannot open it
        rotated.open(sealed, "acme/2")
    with pytest.raises(ValueError):
        KeyRing(KeyRing.new_key_spec("new")).open(sealed, "acme/1")
    with pytest.raises(ValueError):
        KeyRing("k1:dG9vc2hvcnQ=")


def test_message_row_keys_sort_newest_first_and_derive_from_the_uid() -> None:
    earlier = uuid7(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC))
    later = uuid7(datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC))
    assert uuid7_millis(later) - uuid7_millis(earlier) == 1000
    assert later.version == 7
    assert row_key(later) < row_key(earlier)
    assert row_key(later) < row_key_bound(datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC))
    assert row_key(earlier) > row_key_bound(datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC))


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"pageSize": "501"},
        {"pageSize": "x"},
        {"since": "yesterday"},
        {"onlyFailed": "perhaps"},
    ],
)
def test_message_query_refuses_bad_values(params: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        MessageQuery.model_validate(params)


def test_message_query_defaults_and_names_ignore_case() -> None:
    q = MessageQuery.model_validate(
        {"onlyfailed": "true", "PAGESIZE": "500", "since": "2026-01-01T00:00:00"}
    )
    assert q.only_failed and q.page == 1 and q.page_size == 500 and q.since is not None
    assert MessageQuery.model_validate({}).page_size == 100
