"""`make run`: Azurite, the Service Bus emulator and the function app, on 127.0.0.1 only.

Azurite keeps its data in `.azurite/` on the standard ports (so `UseDevelopmentStorage=true`
reaches it), the emulator listens on 5672, creates queues on first use and keeps them in
`.servicebus/`, and the app is served on http://127.0.0.1:7071. Ctrl-C stops all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from local.azurite import start_azurite, wait_for_port
from local.host.runner import main as serve_app
from shared.settings import ROOT, load_local_settings

AZURITE_PORTS = (10000, 10001, 10002)  # blob, queue, table: what UseDevelopmentStorage means


def main() -> int:
    load_local_settings()
    servicebus_port = int(os.environ.get("LOCAL_SERVICEBUS_PORT", "5672"))
    azurite = start_azurite(ports=AZURITE_PORTS, in_memory=False, location=ROOT / ".azurite")
    emulator = subprocess.Popen(
        [sys.executable, "-m", "local.servicebus", "--host", "127.0.0.1",
         "--port", str(servicebus_port), "--data-dir", str(ROOT / ".servicebus")],
        cwd=ROOT, stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", servicebus_port)
        print(
            "Azurite on 127.0.0.1:10000-10002 (data in .azurite/)\n"
            "Service Bus emulator (queues kept in .servicebus/): "
            f"Endpoint=sb://127.0.0.1:{servicebus_port};"
            "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
            "UseDevelopmentEmulator=true\n"
            "API on http://127.0.0.1:7071 (make a key: "
            ".venv/bin/python -m shared.cli apikey create --account ACCOUNT)",
            flush=True,
        )
        return serve_app(["--host", "127.0.0.1", "--port", "7071"])
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        azurite.stop()


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    sys.exit(main())
