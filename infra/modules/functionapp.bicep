// The function app on the Flex Consumption plan (FC1): Python 3.11, the user-assigned
// identity of identity.bicep (made, and granted its roles, before this site) for
// AzureWebJobsStorage, the deployment package, the Key Vault reference ENCRYPTION_KEYS
// and Application Insights ingestion.

param planName string
param appName string
param location string
param tags object

param storageAccountName string
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param deploymentContainerName string
param appInsightsConnectionString string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (AzureWebJobsStorage__clientId, Application Insights).')
param identityClientId string

@description('Versionless URI of the Key Vault secret holding the key ring.')
param encryptionKeysSecretUri string

param messageRetentionDays int

@description('Most instances the app may scale out to (Flex Consumption: 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Spread instances over availability zones (only where the region offers it for Flex Consumption).')
param zoneRedundant bool

@description('The app\'s own settings by name, as text (main.bicep: its defaults, then overrides).')
param appSettings object

@description('Functions to pause (AzureWebJobs.<name>.Disabled): main.bicep, pauseTriggers.')
param disabledFunctions array = []

var disabledSettings = [
  for name in disabledFunctions: {
    name: 'AzureWebJobs.${name}.Disabled'
    value: 'true'
  }
]

// After the fixed settings below; items() orders them by name.
var tuningSettings = [
  for setting in items(appSettings): {
    name: setting.key
    value: setting.value
  }
]

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; it is the zoneRedundant parameter (off by default).
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource app 'Microsoft.Web/sites@2025-03-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_17: callers are SaaS customers authenticated by API key; client certificates do not apply.
    // checkov:skip=CKV_AZURE_222: the app serves a public REST API to customers; it must be reachable from the internet.
    // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand; always-ready instances would cost money around the clock.
    // checkov:skip=CKV_AZURE_78: Flex Consumption does not support siteConfig.ftpsState (ARM rejects it); FTP is off through the ftp basicPublishingCredentialsPolicies below.
    // checkov:skip=CKV_AZURE_213: platform health-check pings would keep an instance running and stop scale to zero; /v1/health is there for an external monitor.
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientAffinityEnabled: false
    // Key Vault references resolve with the identity that already has its role.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: concat([
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          // The service URIs as this cloud names them: the host and the app use them before
          // the account name, which alone would mean the public cloud's core.windows.net.
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storageBlobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storageQueueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storageTableEndpoint
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'ENCRYPTION_KEYS'
          value: '@Microsoft.KeyVault(SecretUri=${encryptionKeysSecretUri})'
        }
        {
          name: 'MESSAGE_RETENTION_DAYS'
          value: string(messageRetentionDays)
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          // Local auth is off on Application Insights: ingest with the app's identity (the
          // host, and the worker's Azure Monitor exporter, read this setting).
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        {
          // The Python worker exports the app's log lines itself, with their fields as
          // customDimensions, through azure-monitor-opentelemetry (requirements.txt); with
          // host.json telemetryMode OpenTelemetry the host no longer relays them (no duplicates).
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        {
          // Only the app's own loggers (shared.*): not the Azure SDKs' line per HTTP request.
          name: 'PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME'
          value: 'shared'
        }
      ], tuningSettings, disabledSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP or Kudu basic-auth credentials: `func azure functionapp publish` deploys with the
// Entra ID token of `az login`. (siteConfig.ftpsState is not a Flex Consumption setting.)
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output url string = 'https://${app.properties.defaultHostName}'
