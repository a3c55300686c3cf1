// The app's own storage account (AzureWebJobsStorage): the Functions host's leases and
// timers, the app's tables, queues and message bodies, and the Flex Consumption
// deployment package. Reached by identity only: shared keys are off.

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@description('Redundancy. LRS works in every region; ZRS survives a zone outage where the region has zones.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string

@description('Days the app keeps message records; stored bodies live one day longer.')
@minValue(1)
param messageRetentionDays int

@description('System-events queues events are spread over by account (SYSTEM_EVENT_QUEUE_COUNT).')
@minValue(1)
@maxValue(64)
param systemEventQueueCount int = 1

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Days a deleted blob or container can still be restored.')
param softDeleteDays int = 7

// Fixed names the app uses (it also creates them idempotently on first use).
var tableNames = [
  'connections'
  'apikeys'
  'messages'
  'portalsessions'
  'replays'
  'ownership'
  'audit'
]
// Where the platform publishes system events: queue 0 keeps the name `system-events`, queue k
// is `system-events-k` (shared/eventqueues.py); the publisher picks one by account hash.
var extraSystemEventQueues = [for i in range(1, systemEventQueueCount - 1): 'system-events-${i}']
var systemEventQueues = concat(['system-events'], extraSystemEventQueues)
var systemEventPoisonQueues = [for queueName in systemEventQueues: '${queueName}-poison']
var queueNames = concat(systemEventQueues, systemEventPoisonQueues, [
  'delivery-retries'
  'delivery-retries-poison'
  'replays'
  'replays-poison'
])
var messageBodiesContainer = 'message-bodies'
var containerNames = [
  messageBodiesContainer
  deploymentContainerName
]

resource account 'Microsoft.Storage/storageAccounts@2025-06-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration has no fixed outbound addresses to allow; access is Entra ID only (shared keys off).
    // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: the public endpoint stays on, every request needs an Entra ID token.
    // checkov:skip=CKV_AZURE_206: geo-redundancy is a cost and disaster-recovery choice left to skuName (LRS by default, as every Flex region offers it; ZRS or GZRS allowed); the app itself runs in one region.
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    isHnsEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-06-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-06-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-06-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-06-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-06-01' = [
  for tableName in tableNames: {
    parent: tableService
    name: tableName
  }
]

// Stored message bodies outlive their message records by one day, then go. The
// lifecycle engine runs about once a day, so a body may stay up to a day longer.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2025-06-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-message-bodies'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${messageBodiesContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: messageRetentionDays + 1
                }
              }
            }
          }
        }
      ]
    }
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output systemEventQueues array = systemEventQueues
