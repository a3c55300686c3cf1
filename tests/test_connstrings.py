"""Connection strings have one reading (issue 23, finding 2): what our strict parser accepts is
what the SDKs would contact, or we refuse it. Differential tests (hypothesis) generate strings
from the parts, spellings and values that parsers disagree on, and compare our parse with the
official SDKs' own parsers; the clients themselves are built from our parts, never from the raw
string (tests/test_egress.py sends through them)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared import connstrings
from shared.api.http import ApiError, parse_json
from shared.settings import Settings, StorageTarget
from tests.factories import body

STRICT = Settings(storage=StorageTarget("UseDevelopmentStorage=true"), encryption_keys="unused")
LOCAL = replace(STRICT, allow_local_endpoints=True)
KEY = "QUNDT1VOVEtFWQ=="
RUNS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def accepted(settings_: Settings, **changes: str) -> bool:
    """Whether the API takes a connection with these properties (its own body parsing)."""
    try:
        parse_json(json.dumps(body(**changes)).encode(), "ConnectionInput", settings_)
    except ApiError as e:
        assert e.status == 400
        return False
    return True


def spellings(name: str) -> st.SearchStrategy[str]:
    """A part name as a careless or hostile client may write it."""
    return st.sampled_from([name, name.lower(), name.upper(), f" {name}", f"{name} ", f"{name}\t"])


NOISE = st.text(alphabet=" .:/?@#=%\\[]abxyz019-", max_size=14)


def connection_strings(values: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """`Name=Value;...` from the given names and values (and noise), with repeats and empties."""
    part = st.sampled_from(sorted(values)).flatmap(
        lambda name: st.tuples(spellings(name), st.one_of(st.sampled_from(values[name]), NOISE))
    )
    return st.tuples(
        st.lists(part, min_size=1, max_size=7), st.sampled_from(["", ";", ";;", " "])
    ).map(lambda t: ";".join(f"{n}={v}" for n, v in t[0]) + t[1])


SERVICE_BUS_VALUES = {
    "Endpoint": [
        "sb://contoso.servicebus.windows.net/",
        "sb://contoso.servicebus.windows.net",
        "sb://CONTOSO.servicebus.windows.net",
        " sb://contoso.servicebus.windows.net",
        "sb://evil.example",
        "sb://contoso.servicebus.windows.net.evil.example",
        "sb://a@evil.example",
        "sb://contoso.servicebus.windows.net:443",
        "sb://contoso.servicebus.windows.net/x?y",
        "sb://127.0.0.1:5672",
    ],
    "HostName": ["evil.example", "sb://evil.example"],
    "SharedAccessKeyName": ["send", " send", ""],
    "SharedAccessKey": [KEY, f"{KEY} "],
    "SharedAccessSignature": ["SharedAccessSignature sr=x&sig=y&se=99999999999&skn=send"],
    "EntityPath": ["platform-events"],
    "UseDevelopmentEmulator": ["true", "True", "false", "yes"],
}
STORAGE_VALUES = {
    "DefaultEndpointsProtocol": ["https", "http", "HTTPS", " https"],
    "AccountName": [
        "contoso",
        "Contoso",
        "devstoreaccount1",
        "evil.example:443/x?",
        "x@evil.example",
        "contoso.evil.example#",
        "ab",
    ],
    "AccountKey": [KEY],
    "SharedAccessSignature": ["sv=1&sig=x"],
    "EndpointSuffix": ["core.windows.net", "evil.example", "core.windows.net/x?", "CORE.net"],
    "BlobEndpoint": [
        "https://contoso.blob.core.windows.net",
        "https://contoso.blob.core.windows.net/",
        "http://169.254.169.254/",
        "https://evil.example\\@contoso.blob.core.windows.net",
        "https://contoso.blob.core.windows.net@evil.example",
        "https://contoso.blob.core.windows.net.evil.example",
        "http://127.0.0.1:10000/devstoreaccount1",
    ],
    "BlobSecondaryEndpoint": ["https://evil.example"],
    "QueueEndpoint": ["https://contoso.queue.core.windows.net"],
    "UseDevelopmentStorage": ["true", "True", "false"],
}


def sdk_service_bus_host(value: str) -> str | None:
    """The host azure-servicebus would connect to for this string; None if it refuses it."""
    from azure.servicebus._base_handler import _parse_conn_str

    try:
        netloc = _parse_conn_str(value)[0]
    except (ValueError, TypeError):
        return None
    return urlsplit(f"sb://{netloc}").hostname


def sdk_blob_host(value: str) -> str | None:
    """The host azure-storage-blob would connect to for this string; None if it refuses it."""
    from azure.storage.blob._shared.base_client import parse_connection_str

    try:
        url = parse_connection_str(value, None, "blob")[0]
        return urlsplit(url if "://" in url else f"https://{url}").hostname
    except (ValueError, TypeError, KeyError):
        return None


NAMESPACE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.servicebus\.windows\.net$")
BLOB_HOST = re.compile(r"^[a-z0-9]{3,24}\.blob\.core\.windows\.net$")


@RUNS
@given(connection_strings(SERVICE_BUS_VALUES))
@example("SharedAccessKeyName=send; Endpoint=sb://contoso.servicebus.windows.net/;"
         f"SharedAccessKey={KEY}")  # fmt: skip
def test_a_service_bus_string_the_production_rule_takes_goes_where_it_was_checked(
    value: str,
) -> None:
    if accepted(STRICT, ServiceBusConnectionString=value, QueueName="platform-events"):
        host = sdk_service_bus_host(value)
        assert host is not None and NAMESPACE.match(host), (value, host)


@RUNS
@given(connection_strings(STORAGE_VALUES))
@example(f"DefaultEndpointsProtocol=https;AccountName=evil.example:443/x?;AccountKey={KEY};"
         "EndpointSuffix=core.windows.net")  # fmt: skip
def test_a_storage_string_the_production_rule_takes_goes_where_it_was_checked(value: str) -> None:
    if accepted(STRICT, BlobContainerConnectionString=value):
        host = sdk_blob_host(value)
        assert host is not None and BLOB_HOST.match(host), (value, host)


@RUNS
@given(connection_strings(SERVICE_BUS_VALUES))
def test_our_service_bus_parse_and_the_sdks_agree_on_the_host_or_we_refuse(value: str) -> None:
    try:
        ours = connstrings.service_bus(value)
    except connstrings.ConnectionStringError:
        return
    assert ours.host == sdk_service_bus_host(value), value
    assert accepted(LOCAL, ServiceBusConnectionString=value, QueueName="platform-events")


@RUNS
@given(connection_strings(STORAGE_VALUES))
def test_our_storage_parse_and_the_sdks_agree_on_the_host_or_we_refuse(value: str) -> None:
    try:
        ours = connstrings.storage(value)
    except connstrings.ConnectionStringError:
        return
    assert urlsplit(ours.blob_url).hostname == sdk_blob_host(value), value
    assert accepted(LOCAL, BlobContainerConnectionString=value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f" AccountName=contoso;AccountKey={KEY}", "part 1"),
        (f"AccountName=contoso ;AccountKey={KEY}", "space"),
        (f"AccountName =contoso;AccountKey={KEY}", "part 1"),
        (f"AccountName=contoso;;AccountKey={KEY}", "part 2"),
        (f"AccountName=contoso;AccountKey={KEY};accountname=contoso", "twice"),
        (f"AccountName=contoso;AccountKey= {KEY}", "space"),
        (f"AccountName=evil.example:443/x?;AccountKey={KEY}", "AccountName"),
        (f"AccountName=Contoso;AccountKey={KEY}", "AccountName"),
        (f"AccountName=contoso;AccountKey={KEY};EndpointSuffix=core.windows.net/x?", "Suffix"),
        (f"AccountName=contoso;AccountKey={KEY};SharedAccessSignature=sv=1", "not both"),
        (f"UseDevelopmentStorage=true;AccountName=contoso;AccountKey={KEY}", "alone"),
        (f"BlobEndpoint=https://a@evil.example;AccountName=contoso;AccountKey={KEY}", "URL"),
    ],
)
def test_the_storage_parser_refuses_what_another_parser_could_read_otherwise(
    value: str, says: str
) -> None:
    with pytest.raises(connstrings.ConnectionStringError) as refused:
        connstrings.storage(value)
    assert says in str(refused.value)
    assert KEY not in str(refused.value)


def test_the_parts_build_the_client_address_and_credential() -> None:
    sb = connstrings.service_bus(
        f"Endpoint=sb://Contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={KEY}"
    )
    assert (sb.host, sb.port, sb.use_tls) == ("contoso.servicebus.windows.net", 5671, True)
    assert (sb.key_name, sb.key, sb.signature) == ("send", KEY, None)
    local = connstrings.service_bus(
        f"Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=a;SharedAccessKey={KEY};"
        "UseDevelopmentEmulator=true"
    )
    assert (local.host, local.port, local.use_tls, local.namespace) == (
        "127.0.0.1",
        5672,
        False,
        "127.0.0.1:5672",
    )
    blob = connstrings.storage(f"AccountName=contoso;AccountKey={KEY}")
    assert blob.blob_url == "https://contoso.blob.core.windows.net"
    assert blob.credential == {"account_name": "contoso", "account_key": KEY}
    dev = connstrings.storage("UseDevelopmentStorage=true")
    assert dev.blob_url == "http://127.0.0.1:10000/devstoreaccount1"
