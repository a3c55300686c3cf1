// Key Vault for the app's secrets-encryption key ring (app setting ENCRYPTION_KEYS, a
// Key Vault reference to the secret that key-ring.bicep writes). RBAC authorization,
// soft delete and purge protection on; its audit log goes to Log Analytics.

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@description('Name of the secret that holds the key ring (written by key-ring.bicep or by hand).')
param secretName string

@description('Log Analytics workspace that receives the vault audit log.')
param workspaceId string

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109: Key Vault references are resolved by App Service from addresses a firewall cannot list without VNet integration; access is RBAC only.
    // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: the public endpoint stays on, every request needs an Entra ID token and a role.
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
// Versionless: the app follows the newest version of the secret.
output secretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
