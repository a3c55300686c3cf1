"""infra/deploy.sh (`make deploy`) run against fake `az`, `func` and `curl`.

A fake because nothing real can run here: no Azure subscription, and neither the Azure CLI
nor Core Tools can be installed. The fakes record every call, in order, with the parameters
each `az deployment` call received from its parameter files, and keep just enough state (the
resource group, the vault's stored key ring) for a second run to see what the first one made.
What they cannot show is whether Azure accepts the template; docs/DEPLOYMENT.md says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.crypto import KeyRing

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "infra" / "deploy.sh"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # no venv, no pyenv shims
APP_URL = "https://func-sbevents-abc.azurewebsites.net"

FAKE = r'''
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]


def parameters():
    """Parameters of an `az deployment` call, read from its @files while they exist."""
    values = {}
    for i, arg in enumerate(args):
        if args[i - 1] == "--parameters" and arg.startswith("@"):
            document = json.loads(Path(arg[1:]).read_text())
            values.update({k: v["value"] for k, v in document["parameters"].items()})
    return values


call = {"tool": tool, "args": args}
if args[:2] == ["deployment", "group"]:
    call["parameters"] = parameters()
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps(call) + "\n")


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


def value_of(flag):
    return args[args.index(flag) + 1]


if tool == "func":
    print("4.0.7030" if args == ["--version"] else "Deployment completed successfully.")
elif tool == "curl":
    failures = state / "curl-failures"
    left = int(failures.read_text()) if failures.exists() else 0
    if left:
        failures.write_text(str(left - 1))
        fail("curl: (22) The requested URL returned error: 503", 22)
    print('{"Status": "Healthy"}')
elif args[:2] == ["account", "show"]:
    if (state / "logged-out").exists():
        fail("ERROR: Please run 'az login' to setup account.")
    print("Pay-As-You-Go\t0000-sub")
elif args[:2] == ["group", "show"]:
    group = state / "group"
    if not group.exists():
        fail("(ResourceGroupNotFound) Resource group could not be found.", 3)
    print(group.read_text())
elif args[:2] == ["group", "create"]:
    (state / "group").write_text(value_of("--location"))
elif args[:2] == ["functionapp", "list-flexconsumption-locations"]:
    print("eastus\nswedencentral\nnortheurope")
elif args[:2] == ["keyvault", "list"]:
    if (state / "vault").exists():
        print("kv-sbevents-abc")
elif args[:3] == ["keyvault", "secret", "show"]:
    secret = state / "secret"
    if not secret.exists():
        fail("(SecretNotFound) A secret with (name/id) encryption-keys was not found.")
    print(secret.read_text())
elif args[:3] == ["ad", "signed-in-user", "show"]:
    print("11111111-operator")
elif args[:3] == ["deployment", "group", "what-if"]:
    print("Resource changes: 30 to create.")
elif args[:3] == ["deployment", "group", "create"]:
    (state / "vault").touch()
    (state / "secret").write_text(call["parameters"]["encryptionKeys"])
    outputs = {
        "functionAppName": "func-sbevents-abc",
        "functionAppUrl": os.environ["FAKE_APP_URL"],
        "storageAccountName": "stsbeventsabc",
        "keyVaultName": "kv-sbevents-abc",
        "resourceGroupName": "rg-test",
    }
    print(json.dumps({k: {"type": "String", "value": v} for k, v in outputs.items()}))
else:
    fail(f"fake {tool}: unexpected call {args}", 2)
'''


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def steps(self) -> list[str]:
        """Each call as a short name: `az deployment group create`, `func publish`, `curl`."""
        names = []
        for call in self.calls:
            args = call["args"]
            if call["tool"] == "az":
                words = [a for a in args[:3] if not a.startswith("-")]
                names.append(" ".join(["az", *words]))
            elif call["tool"] == "func":
                names.append("func --version" if args == ["--version"] else "func publish")
            else:
                names.append(call["tool"])
        return names

    def only(self, step: str) -> dict[str, Any]:
        (call,) = [c for c, s in zip(self.calls, self.steps(), strict=True) if s == step]
        return call


# What creates or changes something in Azure (what-if changes nothing, but it comes after
# the checks too).
CREATING = {
    "az group create",
    "az deployment group what-if",
    "az deployment group create",
    "func publish",
}


class Deployer:
    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "fake.py"
        fake.write_text(f"#!{sys.executable}\n{FAKE}")
        fake.chmod(0o755)
        for tool in ("az", "func", "curl"):
            (bin_dir / tool).symlink_to(fake)
        self.path = f"{bin_dir}:{SYSTEM_PATH}"

    def run(self, **settings: str) -> Run:
        calls_file = self.state / "calls.jsonl"
        calls_file.write_text("")
        env = {
            "PATH": self.path,
            "HOME": str(self.state),
            "FAKE_STATE": str(self.state),
            "FAKE_APP_URL": APP_URL,
            "RESOURCE_GROUP": "rg-test",
            "LOCATION": "swedencentral",
            "HEALTH_DELAY_SECONDS": "0",
            **settings,
        }
        proc = subprocess.run(
            ["bash", str(DEPLOY)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)


@pytest.fixture
def deployer(tmp_path: Path) -> Deployer:
    return Deployer(tmp_path)


def make_key_ring_command(stderr: str) -> str:
    """The command the script prints for making a key ring."""
    match = re.search(r'export ENCRYPTION_KEYS="\$\((.+)\)"', stderr)
    assert match, stderr
    return match.group(1)


def new_ring() -> str:
    return KeyRing.new_key_spec("k1")


def test_first_deployment_checks_then_what_if_create_publish_and_waits_for_health(
    deployer: Deployer,
) -> None:
    (deployer.state / "curl-failures").write_text("2")
    ring = new_ring()
    run = deployer.run(ENCRYPTION_KEYS=ring)
    assert run.code == 0, run.stderr

    steps = run.steps()
    assert steps == [
        "func --version",
        "az account show",
        "az group show",
        "az functionapp list-flexconsumption-locations",
        "az ad signed-in-user show",
        "az group create",
        "az deployment group what-if",
        "az deployment group create",
        "func publish",
        "curl",
        "curl",
        "curl",
    ]
    assert run.only("az group create")["args"][-4:-2] == ["--location", "swedencentral"]
    what_if, create = (
        run.only("az deployment group what-if"),
        run.only("az deployment group create"),
    )
    assert what_if["args"][3:] == create["args"][3 : len(what_if["args"])]  # the same deployment
    assert create["parameters"]["encryptionKeys"] == ring
    assert create["parameters"]["operatorPrincipalId"] == "11111111-operator"
    assert create["parameters"]["publisherPrincipalId"] == ""  # none unless given
    assert create["parameters"]["storageSku"] == "Standard_LRS"  # from main.parameters.json
    assert what_if["parameters"] == create["parameters"]
    assert run.only("func publish")["args"] == [
        *("azure", "functionapp", "publish", "func-sbevents-abc", "--python")
    ]
    for call in run.calls:  # the ring travels in a parameter file, never on a command line
        assert ring not in " ".join(call["args"])
        if call["tool"] == "curl":
            assert f"{APP_URL}/v1/health" in call["args"]
    assert f"API: {APP_URL}" in run.stdout
    assert "python -m shared.cli apikey create --account" in run.stdout
    assert "not healthy yet (try 2 of 30)" in run.stdout


def test_without_a_key_ring_nothing_is_created_and_the_printed_command_makes_one(
    deployer: Deployer,
) -> None:
    run = deployer.run()
    assert run.code != 0
    assert "no key ring" in run.stderr and "Nothing was created" in run.stderr
    assert not CREATING & set(run.steps()), run.steps()

    # The printed command works with the system Python, without the venv...
    command = make_key_ring_command(run.stderr)
    made = subprocess.run(
        ["bash", "-c", command],
        env={"PATH": SYSTEM_PATH},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    KeyRing(made)  # ...makes a ring the app accepts...
    assert deployer.run(ENCRYPTION_KEYS=made).code == 0  # ...and the script takes it.


def test_a_malformed_key_ring_is_refused_before_anything_is_created(deployer: Deployer) -> None:
    for ring in ("k1:c2hvcnQ=", "no-colon", "k.1:" + new_ring()[3:], f"{new_ring()},{new_ring()}"):
        run = deployer.run(ENCRYPTION_KEYS=ring)
        assert run.code != 0, ring
        assert "ENCRYPTION_KEYS is not a key ring" in run.stderr
        assert not CREATING & set(run.steps())
        assert ring not in run.stderr


def test_a_second_run_passes_the_stored_ring_back_and_updates_in_place(
    deployer: Deployer,
) -> None:
    ring = new_ring()
    assert deployer.run(ENCRYPTION_KEYS=ring).code == 0
    again = deployer.run()
    assert again.code == 0, again.stderr
    steps = again.steps()
    assert "az group create" not in steps
    assert steps.index("az keyvault secret show") < steps.index("az deployment group what-if")
    assert steps[-4:] == [
        "az deployment group what-if",
        "az deployment group create",
        "func publish",
        "curl",
    ]
    assert again.only("az deployment group create")["parameters"]["encryptionKeys"] == ring
    assert "the one stored in kv-sbevents-abc (unchanged)" in again.stdout


def test_the_publishing_principal_is_passed_to_the_template(deployer: Deployer) -> None:
    run = deployer.run(ENCRYPTION_KEYS=new_ring(), PUBLISHER_PRINCIPAL_ID="22222222-platform")
    assert run.code == 0, run.stderr
    parameters = run.only("az deployment group create")["parameters"]
    assert parameters["publisherPrincipalId"] == "22222222-platform"
    assert parameters["publisherPrincipalType"] == "ServicePrincipal"
    assert parameters["pauseTriggers"] is False


def test_triggers_are_paused_for_an_upgrade_on_request(deployer: Deployer) -> None:
    run = deployer.run(ENCRYPTION_KEYS=new_ring(), PAUSE_TRIGGERS="1")
    assert run.code == 0, run.stderr
    assert run.only("az deployment group create")["parameters"]["pauseTriggers"] is True


def test_a_ring_that_drops_a_stored_key_is_refused(deployer: Deployer) -> None:
    old = new_ring()
    assert deployer.run(ENCRYPTION_KEYS=old).code == 0
    dropped = deployer.run(ENCRYPTION_KEYS=new_ring().replace("k1:", "k2:"))
    assert dropped.code != 0
    assert "drops a key" in dropped.stderr
    assert not CREATING & set(dropped.steps())
    # Rotation that keeps the old key goes through.
    rotated = f"{new_ring().replace('k1:', 'k2:')},{old}"
    assert deployer.run(ENCRYPTION_KEYS=rotated).code == 0


@pytest.mark.parametrize(
    ("setup", "settings", "message"),
    [
        ("logged-out", {}, "az login"),
        ("", {"LOCATION": "westcentralus"}, "does not offer Flex Consumption"),
        ("", {"LOCATION": ""}, "set LOCATION"),
    ],
    ids=["not-signed-in", "region-without-flex", "no-location"],
)
def test_prerequisites_fail_before_anything_is_created(
    deployer: Deployer, setup: str, settings: dict[str, str], message: str
) -> None:
    if setup:
        (deployer.state / setup).touch()
    run = deployer.run(ENCRYPTION_KEYS=new_ring(), **settings)
    assert run.code != 0
    assert message in run.stderr
    assert not CREATING & set(run.steps())


def test_missing_core_tools_are_named(deployer: Deployer) -> None:
    (Path(deployer.path.split(":")[0]) / "func").unlink()
    run = deployer.run(ENCRYPTION_KEYS=new_ring())
    assert run.code != 0
    assert "Core Tools (func) are not installed" in run.stderr
    assert run.calls == []


def test_health_is_waited_for_a_bounded_number_of_tries(deployer: Deployer) -> None:
    (deployer.state / "curl-failures").write_text("100")
    run = deployer.run(ENCRYPTION_KEYS=new_ring(), HEALTH_TRIES="3")
    assert run.code != 0
    assert run.steps()[-4:] == ["func publish", "curl", "curl", "curl"]
    assert "did not answer 200 after 3 tries" in run.stderr
    assert "API:" not in run.stdout


def test_make_deploy_runs_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndeploy:\n\tinfra/deploy.sh\n" in makefile
    assert os.access(DEPLOY, os.X_OK)


def test_the_deployment_guide_lists_the_steps_in_the_order_the_script_runs_them(
    deployer: Deployer,
) -> None:
    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    start, end = guide.index("## What `make deploy` does"), guide.index("## What gets deployed")
    section = guide[start:end]
    run = deployer.run(ENCRYPTION_KEYS=new_ring())
    assert run.code == 0, run.stderr
    documented = {
        "az account show": "`az account show`",
        "az functionapp list-flexconsumption-locations": "list-flexconsumption-locations",
        "az ad signed-in-user show": "`az ad signed-in-user show`",
        "az group create": "**Creates the resource group**",
        "az deployment group what-if": "`az deployment group what-if`",
        "az deployment group create": "`az deployment group create`",
        "func publish": "`func azure functionapp publish",
        "curl": "/v1/health`",
    }
    ran = [step for step in dict.fromkeys(run.steps()) if step in documented]
    assert ran == list(documented)  # the script's order...
    places = [section.index(documented[step]) for step in ran]
    assert places == sorted(places)  # ...is the guide's order
