"""The README's quick start, run as written: its marked shell block (bash) and its receiver
(saved as receiver.py, as the README says) against the stack the tests start.

Only what `make run` fixes and a test session cannot are swapped: the API's address
(127.0.0.1:7071), the emulator's port (5672), `UseDevelopmentStorage=true` (Azurite on its
standard ports) for the session's Azurite, and the account and queue names for fresh ones,
so that no other test in this worker shares them. Everything else runs as printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

from local.servicebus.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"<!-- quickstart:(\S+) -->\n```\w+\n(.*?)\n```", re.S)


def quickstart_blocks(readme: str) -> dict[str, str]:
    """The README's blocks marked `<!-- quickstart:NAME -->`, by NAME."""
    return dict(MARKED.findall(readme))


def as_in_this_session(blocks: dict[str, str], swaps: dict[str, str]) -> dict[str, str]:
    for written in swaps:
        assert any(written in b for b in blocks.values()), f"no longer in the README: {written}"
    for written, here in swaps.items():
        blocks = {name: b.replace(written, here) for name, b in blocks.items()}
    return blocks


def test_the_readme_marks_a_shell_block_and_a_receiver() -> None:
    blocks = quickstart_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert set(blocks) == {"shell", "receiver.py"}
    assert "receiver.py" in blocks["shell"]  # the shell block runs the receiver it shows


def test_the_quick_start_delivers_a_400_kb_event_through_a_local_container(
    app_environment: dict[str, str],
    api_host: str,
    servicebus_emulator: Emulator,
    storage_connection_string: str,
    tmp_path: Path,
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    port = servicebus_emulator.connection_string.split("sb://127.0.0.1:")[1].split(";")[0]
    swaps = {
        "http://127.0.0.1:7071": api_host.rstrip("/"),
        "sb://127.0.0.1:5672": f"sb://127.0.0.1:{port}",
        "UseDevelopmentStorage=true": storage_connection_string,
        "--account acme": f"--account qs-{uuid.uuid4().hex[:10]}",
        "demo-events": f"qs-{uuid.uuid4().hex[:10]}",
    }
    blocks = as_in_this_session(quickstart_blocks(readme), swaps)
    (tmp_path / "receiver.py").write_text(blocks["receiver.py"])
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")  # the README runs at the repository root

    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks["shell"]],
        cwd=tmp_path,
        env={**os.environ, **app_environment, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.strip().splitlines()
    event_id = next(line for line in lines if re.fullmatch(r"[0-9a-f-]{36}", line))
    assert f"received Document.Uploaded {event_id}" in lines
    [fetched] = [line for line in lines if line.startswith("fetched ")]
    assert fetched.startswith("fetched 400015 bytes of Data from ")  # {"Content": "x..."}
    created = json.loads(lines[0])
    assert created["BlobContainerName"] == "large-events"
