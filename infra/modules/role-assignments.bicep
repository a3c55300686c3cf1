// Grants one principal built-in roles on the app's storage account, Key Vault and
// Application Insights. Used for the function app's identity and, optionally, for
// the operator who runs `python -m shared.cli` against Azure.

param principalId string

@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string

param storageAccountName string
param keyVaultName string
param appInsightsName string

@description('Role definition ids (GUIDs) to grant on the storage account.')
param storageRoleIds array = []

@description('Role definition ids (GUIDs) to grant on the Key Vault.')
param keyVaultRoleIds array = []

@description('Role definition ids (GUIDs) to grant on Application Insights.')
param appInsightsRoleIds array = []

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoleIds: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource keyVaultRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in keyVaultRoleIds: {
    name: guid(vault.id, principalId, roleId)
    scope: vault
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource appInsightsRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in appInsightsRoleIds: {
    name: guid(appInsights.id, principalId, roleId)
    scope: appInsights
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]
