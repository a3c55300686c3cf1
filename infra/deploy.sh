#!/usr/bin/env bash
# One command from a signed-in Azure CLI to a running, healthy app: `make deploy`.
#
#   RESOURCE_GROUP=rg-sbevents LOCATION=swedencentral ENCRYPTION_KEYS=... infra/deploy.sh
#
# 1. checks the tools (az, func, curl, python3), the sign-in and subscription, and that the
#    region offers Flex Consumption;
# 2. finds the key ring: ENCRYPTION_KEYS, or the one already stored in the group's Key Vault;
#    with neither it stops, before anything is created, and prints the command that makes one;
# 3. creates the resource group if it is missing;
# 4. `az deployment group what-if`, then `az deployment group create` of infra/main.bicep;
# 5. `func azure functionapp publish`;
# 6. waits for GET /v1/health to answer 200 (bounded retries);
# 7. prints the API URL and the command that makes the first API key.
# Running it again updates the same resources (names are a hash of subscription, group and
# BASE_NAME) and passes the stored key ring back unchanged. docs/DEPLOYMENT.md explains each step.
#
# Settings (environment): RESOURCE_GROUP (rg-sbevents), LOCATION (the group's, required when
# the group does not exist yet), BASE_NAME (sbevents), ENCRYPTION_KEYS, ALERT_EMAIL,
# OPERATOR_PRINCIPAL_ID / OPERATOR_PRINCIPAL_TYPE (default: you, from `az ad signed-in-user`),
# PUBLISHER_PRINCIPAL_ID / PUBLISHER_PRINCIPAL_TYPE (the platform that publishes events: may
# send to the system-events queue(s) only; default: none, ServicePrincipal), PAUSE_TRIGGERS=1
# (queue and timer functions paused, to drain before an upgrade), HEALTH_TRIES (30), HEALTH_DELAY_SECONDS (10), DEPLOY_YES=1 (no question after what-if).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RG="${RESOURCE_GROUP:-rg-sbevents}"
BASE_NAME="${BASE_NAME:-sbevents}"
DEPLOYMENT=main
SECRET=encryption-keys
HEALTH_TRIES="${HEALTH_TRIES:-30}"
HEALTH_DELAY_SECONDS="${HEALTH_DELAY_SECONDS:-10}"
# Works with any Python 3, no virtual environment needed.
MAKE_KEY_RING="python3 -c \"import base64,os; print('k1:'+base64.b64encode(os.urandom(32)).decode())\""

# Scratch files only this user can read: the secure parameter never goes on a command line.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
chmod 700 "$scratch"

step() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'deploy: %s\n' "$*" >&2
  exit 1
}

# --- 1. prerequisites --------------------------------------------------------------------
step "Checking prerequisites"
command -v az >/dev/null || die "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v func >/dev/null || die "Azure Functions Core Tools (func) are not installed: https://learn.microsoft.com/azure/azure-functions/functions-run-local"
command -v curl >/dev/null || die "curl is not installed"
command -v python3 >/dev/null || die "python3 is not installed"
func_version="$(func --version)"
[[ "${func_version%%.*}" -ge 4 ]] 2>/dev/null || die "Core Tools $func_version found; Flex Consumption needs v4"

subscription="$(az account show --query '[name, id]' -o tsv 2>/dev/null | paste -sd ' ')" ||
  die "not signed in to Azure: run az login (then az account set --subscription <name or id>)"
[[ -n "$subscription" ]] || die "no subscription selected: run az account set --subscription <name or id>"
echo "subscription: $subscription"

group_location="$(az group show --name "$RG" --query location -o tsv 2>/dev/null || true)"
LOCATION="${LOCATION:-$group_location}"
[[ -n "$LOCATION" ]] || die "resource group $RG does not exist yet: set LOCATION to a Flex Consumption region (az functionapp list-flexconsumption-locations -o table)"
[[ -z "$group_location" || "$group_location" == "$LOCATION" ]] ||
  die "resource group $RG is in $group_location, not LOCATION=$LOCATION"
flex_regions="$(az functionapp list-flexconsumption-locations --query '[].name' -o tsv | tr -d ' ' | tr '[:upper:]' '[:lower:]')"
grep -qx "$(tr -d ' ' <<<"$LOCATION" | tr '[:upper:]' '[:lower:]')" <<<"$flex_regions" ||
  die "region $LOCATION does not offer Flex Consumption; pick one of: $(paste -sd ' ' <<<"$flex_regions")"
echo "resource group: $RG in $LOCATION"

# --- 2. the key ring ---------------------------------------------------------------------
step "Finding the key ring"
valid_ring() { # id:base64 of 32 bytes[,id:key...], as shared/crypto.py KeyRing reads it
  RING="$1" python3 -I -c '
import base64, binascii, os, sys
ids = []
for part in filter(None, (p.strip() for p in os.environ["RING"].split(","))):
    key_id, sep, encoded = part.partition(":")
    try:
        key = base64.b64decode(encoded, validate=True) if sep else b""
    except binascii.Error:
        key = b""
    if not key_id or "." in key_id or key_id in ids or len(key) != 32:
        sys.exit(1)
    ids.append(key_id)
sys.exit(0 if ids else 1)'
}
keeps_every_key() { # every entry of the stored ring is still in the new one
  OLD="$1" NEW="$2" python3 -I -c '
import os, sys
entries = lambda ring: {p.strip() for p in ring.split(",") if p.strip()}
sys.exit(0 if entries(os.environ["OLD"]) <= entries(os.environ["NEW"]) else 1)'
}

stored_ring=""
if [[ -n "$group_location" ]]; then
  vault="$(az keyvault list --resource-group "$RG" --query '[].name' -o tsv)"
  [[ "$(wc -w <<<"$vault")" -le 1 ]] || die "resource group $RG holds several Key Vaults ($vault); use a group of its own"
  if [[ -n "$vault" ]]; then
    if ! stored_ring="$(az keyvault secret show --vault-name "$vault" --name "$SECRET" --query value -o tsv 2>"$scratch/kv-error")"; then
      grep -q "SecretNotFound" "$scratch/kv-error" ||
        die "cannot read the key ring from $vault (you need Key Vault Secrets Officer on it, which the first run granted you; roles can take minutes): $(cat "$scratch/kv-error")"
      stored_ring=""
    fi
  fi
fi

if [[ -n "${ENCRYPTION_KEYS:-}" ]]; then
  valid_ring "$ENCRYPTION_KEYS" || die "ENCRYPTION_KEYS is not a key ring (keyid:base64 of 32 bytes[,keyid:key...]). Make one with: $MAKE_KEY_RING"
  if [[ -n "$stored_ring" ]] && ! keeps_every_key "$stored_ring" "$ENCRYPTION_KEYS"; then
    die "ENCRYPTION_KEYS drops a key of the ring stored in $vault; stored secrets encrypted with it could not be read any more. Keep every stored key (see Rotating ENCRYPTION_KEYS in docs/DEPLOYMENT.md), or unset ENCRYPTION_KEYS to keep the stored ring"
  fi
  ring="$ENCRYPTION_KEYS"
  echo "key ring: from ENCRYPTION_KEYS"
elif [[ -n "$stored_ring" ]]; then
  ring="$stored_ring"
  echo "key ring: the one stored in $vault (unchanged)"
else
  die "no key ring: this first deployment needs ENCRYPTION_KEYS, the key ring that encrypts stored connection strings. Nothing was created. Make one and deploy again:
  export ENCRYPTION_KEYS=\"\$($MAKE_KEY_RING)\"
  make deploy
Keep it secret; the deployment stores it in Key Vault, which then holds the only copy."
fi

operator_id="${OPERATOR_PRINCIPAL_ID:-}"
operator_type="${OPERATOR_PRINCIPAL_TYPE:-User}"
if [[ -z "$operator_id" ]]; then
  operator_id="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
  [[ -n "$operator_id" ]] || echo "warning: signed in as a service principal: set OPERATOR_PRINCIPAL_ID (and OPERATOR_PRINCIPAL_TYPE=ServicePrincipal) to get the operator roles" >&2
fi

params="$scratch/parameters.json"
RING="$ring" OPERATOR="$operator_id" OPERATOR_TYPE="$operator_type" BASE="$BASE_NAME" \
  EMAIL="${ALERT_EMAIL:-}" PUBLISHER="${PUBLISHER_PRINCIPAL_ID:-}" \
  PUBLISHER_TYPE="${PUBLISHER_PRINCIPAL_TYPE:-ServicePrincipal}" \
  PAUSE="${PAUSE_TRIGGERS:-}" python3 -I -c '
import json, os
values = {
    "baseName": os.environ["BASE"],
    "encryptionKeys": os.environ["RING"],
    "operatorPrincipalId": os.environ["OPERATOR"],
    "operatorPrincipalType": os.environ["OPERATOR_TYPE"],
    "publisherPrincipalId": os.environ["PUBLISHER"],
    "publisherPrincipalType": os.environ["PUBLISHER_TYPE"],
    "alertEmail": os.environ["EMAIL"],
    "pauseTriggers": os.environ["PAUSE"] == "1",
}
print(json.dumps({"parameters": {k: {"value": v} for k, v in values.items()}}))' >"$params"
template=(--resource-group "$RG" --name "$DEPLOYMENT" --template-file "$ROOT/infra/main.bicep"
  --parameters "@$ROOT/infra/main.parameters.json" --parameters "@$params")

# --- 3. resource group -------------------------------------------------------------------
if [[ -z "$group_location" ]]; then
  step "Creating resource group $RG in $LOCATION"
  az group create --name "$RG" --location "$LOCATION" --output none
fi

# --- 4. what-if, then deploy -------------------------------------------------------------
step "What the deployment would change (az deployment group what-if)"
az deployment group what-if "${template[@]}"
if [[ -t 0 && "${DEPLOY_YES:-}" != 1 ]]; then
  read -r -p "Deploy these changes? [y/N] " answer
  [[ "$answer" == [yY]* ]] || die "stopped before deploying; nothing changed after the resource group"
fi

step "Deploying infra/main.bicep (az deployment group create)"
outputs="$(az deployment group create "${template[@]}" --query properties.outputs -o json)"
output() { OUTPUTS="$outputs" python3 -I -c 'import json, os, sys; print(json.loads(os.environ["OUTPUTS"])[sys.argv[1]]["value"])' "$1"; }
app="$(output functionAppName)"
url="$(output functionAppUrl)"
storage="$(output storageAccountName)"
kv="$(output keyVaultName)"

# --- 5. publish --------------------------------------------------------------------------
step "Publishing the code to $app (func azure functionapp publish)"
(cd "$ROOT" && func azure functionapp publish "$app" --python)

# --- 6. health ---------------------------------------------------------------------------
step "Waiting for $url/v1/health"
for ((try = 1; try <= HEALTH_TRIES; try++)); do
  if curl --fail --silent --show-error --max-time 10 "$url/v1/health" >/dev/null; then
    break
  fi
  ((try < HEALTH_TRIES)) || die "$url/v1/health did not answer 200 after $HEALTH_TRIES tries. Look at the app's log stream and docs/DEPLOYMENT.md, Troubleshooting; running make deploy again is safe"
  echo "not healthy yet (try $try of $HEALTH_TRIES); again in ${HEALTH_DELAY_SECONDS}s"
  sleep "$HEALTH_DELAY_SECONDS"
done

# --- 7. what next ------------------------------------------------------------------------
cat <<EOF

Deployed and healthy.
API: $url

Next, make the first API key (as the operator; needs make install once):
  export AzureWebJobsStorage__accountName="$storage"   # the command line then reads no local file
  export ENCRYPTION_KEYS="\$(az keyvault secret show --vault-name "$kv" --name $SECRET --query value -o tsv)"
  .venv/bin/python -m shared.cli apikey create --account <account>
EOF
