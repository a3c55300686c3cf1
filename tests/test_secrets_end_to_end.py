"""No secret of a run in any response body, record or log line (issue 13).

The run creates connections whose deliveries fail (a wrong key, a host that does not
resolve, a queue that does not exist), sends malformed connection strings and inputs whose
validation errors could echo them, re-sends and lists; then every SharedAccessKey,
SharedAccessSignature and AccountKey value it used is looked for in everything it saw.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest

from local.servicebus.emulator import Emulator
from tests.factories import PATH, UNVERIFIED, body
from tests.plugins.app import Api


def secret(name: str) -> str:
    return f"{name}{secrets.token_urlsafe(12)}="


async def test_no_secret_of_the_run_appears_in_any_output(
    api: Api,
    servicebus_emulator: Emulator,
    storage_connection_string: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    used: list[str] = []
    seen: list[Any] = []

    async def call(method: str, path: str, sent: Any = None, **kwargs: Any) -> Any:
        status, answer = await api.call(method, path, sent, **kwargs)
        seen.append(answer)
        return status, answer

    def key(name: str) -> str:
        used.append(value := secret(name))
        return value

    emulator = f"sb://{servicebus_emulator.host}:{servicebus_emulator.port}"
    blob_key = key("AccountKey")
    blob = storage_connection_string.split("AccountKey=")[0] + f"AccountKey={blob_key};"
    failing = {
        "wrong key": f"Endpoint={emulator};SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key('WrongKey')};UseDevelopmentEmulator=true",
        "unknown host": "Endpoint=sb://nothing-here.invalid;SharedAccessKeyName=k;"
        f"SharedAccessKey={key('UnknownHost')};UseDevelopmentEmulator=true",
        "signature": f"Endpoint={emulator};SharedAccessSignature=SharedAccessSignature "
        f"sr=x&sig={key('Signature')}&se=1&skn=k;UseDevelopmentEmulator=true",
    }
    created = []
    for name, sb in failing.items():
        sent = body(Title=name, ServiceBusConnectionString=sb, BlobContainerConnectionString=blob)
        status, verified = await call("POST", PATH, sent)  # the verification's answer too
        assert status in (200, 400), verified
        status, connection = await call("POST", UNVERIFIED, sent)
        assert status == 200, connection
        created.append(connection["Uid"])
        status, record = await call("POST", f"{PATH}/{connection['Uid']}/test")
        assert status == 200 and record["Status"] == 2
        assert (await call("POST", f"{PATH}/{connection['Uid']}/messages/{record['Uid']}/retry"))[
            0
        ] == 200

    malformed: list[dict[str, Any]] = [
        {"ServiceBusConnectionString": f"Endpoint={emulator};SharedAccessKey:{key('Colon')}"},
        {"ServiceBusConnectionString": f"Endpoint=ftp://x;SharedAccessKey={key('Scheme')}"},
        {"ServiceBusConnectionString": f"SharedAccessKey={key('NoEndpoint')}"},
        {"ServiceBusConnectionString": f"Endpoint={emulator};SharedAccessKey={key('Long')}" * 60},
        {"BlobContainerConnectionString": f"AccountKey={key('NoAccount')}"},
        {
            "BlobContainerConnectionString": "BlobEndpoint=http://127.0.0.1:1/a?sv=1&sig="
            + key("Query")
        },
        {"BlobContainerConnectionString": f"BlobEndpoint=http://u:{key('User')}@127.0.0.1:1/a"},
        {"EnabledEvents": [f"SharedAccessKey={key('EventKey')}"]},
        {"ServiceBusConnectionString": 7, "Title": f"AccountKey={key('Typed')}" * 30},
    ]
    for changes in malformed:
        status, problem = await call("POST", PATH, body(**changes))
        assert status == 400, problem
    status, _ = await call(
        "POST",
        PATH,
        data=f'{{"ServiceBusConnectionString": "SharedAccessKey={key("Json")}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400

    seen.append(await api.call("GET", PATH))
    for uid in created:
        status, page = await call("GET", f"{PATH}/{uid}/messages")
        for message in page["Messages"]:
            await call("GET", f"{PATH}/{uid}/messages/{message['Uid']}")

    everything = repr(seen) + caplog.text
    leaked = [s for s in used if s.rstrip("=") in everything]
    assert not leaked, leaked
    assert "nothing-here.invalid" not in repr([p for p in seen if "Messages" in str(p)])
