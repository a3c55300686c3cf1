"""Sending without the customer's secrets: Entra ID tokens for the customer's tenant.

The app is a multi-tenant Entra ID application whose only credential is a federated identity
credential trusting the app's managed identity: a token of the managed identity (audience
`api://AzureADTokenExchange`) is the client assertion with which the application gets tokens
in the customer's tenant, where the customer has granted it "Azure Service Bus Data Sender".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APP_CLIENT_ID_SETTING = "ENTRA_APP_CLIENT_ID"  # the multi-tenant application's client id
IDENTITY_CLIENT_ID_SETTING = "ENTRA_IDENTITY_CLIENT_ID"  # a user-assigned identity, if any
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"

# A tenant id to an async TokenCredential for it (tests inject one that mints tokens).
CredentialFactory = Callable[[str], Any]


@dataclass(frozen=True)
class EntraTarget:
    """Where an EntraId connection sends: the namespace, and the tenant to get tokens in."""

    namespace: str
    tenant_id: str

    @property
    def use_tls(self) -> bool:
        # A port is allowed only with ALLOW_LOCAL_ENDPOINTS (the production rule forbids it):
        # a local emulator, spoken to in plain AMQP as with UseDevelopmentEmulator=true.
        return ":" not in self.namespace

    @property
    def host(self) -> str:
        return self.namespace.rpartition(":")[0] if ":" in self.namespace else self.namespace

    @property
    def port(self) -> int:
        return int(self.namespace.rpartition(":")[2]) if ":" in self.namespace else 5671


class TenantCredentials:
    """One credential per customer tenant, all fed by the app's managed identity."""

    def __init__(self, app_client_id: str | None, identity_client_id: str | None) -> None:
        self._app_client_id = app_client_id
        self._identity_client_id = identity_client_id
        self._by_tenant: dict[str, Any] = {}
        self._identity: Any = None

    @classmethod
    def from_environment(cls) -> TenantCredentials:
        env = os.environ
        return cls(env.get(APP_CLIENT_ID_SETTING), env.get(IDENTITY_CLIENT_ID_SETTING))

    def __call__(self, tenant_id: str) -> Any:
        if not self._app_client_id:
            raise RuntimeError(f"app setting {APP_CLIENT_ID_SETTING} is required for EntraId")
        credential = self._by_tenant.get(tenant_id)
        if credential is None:
            from azure.identity import ManagedIdentityCredential
            from azure.identity.aio import ClientAssertionCredential

            if self._identity is None:  # the identity's token is cached by the credential
                self._identity = ManagedIdentityCredential(client_id=self._identity_client_id)
            identity = self._identity
            credential = self._by_tenant[tenant_id] = ClientAssertionCredential(
                tenant_id,
                self._app_client_id,
                lambda: identity.get_token(TOKEN_EXCHANGE_SCOPE).token,
            )
        return credential
