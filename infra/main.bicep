// Azure resources of the Service Bus event delivery app, for one resource group.
// `make deploy` (infra/deploy.sh) runs what-if, deploys this template, publishes the code
// and waits for /v1/health; docs/DEPLOYMENT.md walks through it, including the key ring,
// rotation, the alerts and what it costs when idle.
//
// Order that matters on the first deployment: the user-assigned identity, then its role
// assignments and the key ring secret, then the site (dependsOn below), so the app's first
// start already reads storage and its Key Vault reference with the roles in place.
targetScope = 'resourceGroup'

@description('Short prefix of every resource name: 3-10 lowercase letters, digits or hyphens.')
@minLength(3)
@maxLength(10)
param baseName string = 'sbevents'

@description('Region of every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

// Required, with no default: a deployment without it is rejected before anything is
// created. "k1:" + base64 of 32 bytes is 47 characters.
@description('Secrets-encryption key ring "keyid:base64-32-byte-key[,keyid:key...]"; the first key encrypts. Make one: python3 -c "import base64,os; print(\'k1:\'+base64.b64encode(os.urandom(32)).decode())". infra/deploy.sh passes the stored ring back on later deployments.')
@secure()
@minLength(47)
param encryptionKeys string

@description('Days the delivery log is kept (app setting MESSAGE_RETENTION_DAYS); stored message bodies are deleted one day later.')
@minValue(1)
@maxValue(365)
param messageRetentionDays int = 14

@description('Redundancy of the storage account. LRS works in every Flex Consumption region; Standard_ZRS survives a zone outage where the region has availability zones.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSku string = 'Standard_LRS'

@description('Most instances the function app may scale out to; Flex Consumption takes 40 to 1000.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Spread function app instances over availability zones; only where the region offers it for Flex Consumption. The platform then keeps at least 2 always-ready instances per scale group (5 groups here: 10 instances of instanceMemoryMB), billed around the clock (docs/DEPLOYMENT.md, Cost).')
param zoneRedundant bool = false

@description('Days Log Analytics keeps logs and telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Daily Log Analytics ingestion cap in GB (-1: no cap).')
param logDailyCapGb int = -1

@description('Optional object id of a person or group who operates the app from a shell (shared.cli): gets table, queue and Key Vault secret access. Empty: none.')
param operatorPrincipalId string = ''

@description('Kind of principal operatorPrincipalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Optional object id of the principal of the platform that raises system events (shared/publisher.py): gets Storage Queue Data Message Sender on the system-events queue(s) only. Empty: none.')
param publisherPrincipalId string = ''

@description('Kind of principal publisherPrincipalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param publisherPrincipalType string = 'ServicePrincipal'

@description('System-events queues events are spread over by a hash of the account (each takes about 2,000 events/s): the app setting SYSTEM_EVENT_QUEUE_COUNT follows it. Queue 0 is system-events, queue k system-events-k. Raise it while the app is paused (pauseTriggers) to keep each account\'s order across the change (docs/DESIGN.md, "Ingestion over N queues").')
@minValue(1)
@maxValue(64)
param systemEventQueueCount int = 1

@description('Pause the queue and timer functions, to drain before an upgrade (docs/DEPLOYMENT.md, "Upgrading without losing events"): the API still answers; events wait in their queues until a deployment without it.')
param pauseTriggers bool = false

@description('App settings of the app, by name, as text (README, Settings): a name left out keeps the app\'s default (appSettingDefaults below). Set them here or in main.parameters.json, never by hand in the portal: every deployment replaces all app settings.')
param appSettings object = {}

@description('Email address that receives the alerts. Empty: the alerts fire (visible in the portal) but notify no one.')
param alertEmail string = ''

@description('Failed deliveries (Category other than Configuration) in 15 minutes that raise an alert.')
@minValue(1)
param failedDeliveriesThreshold int = 20

@description('Minutes between two /v1/health availability checks from each test location.')
@allowed([
  5
  10
  15
])
param healthCheckMinutes int = 15

param tags object = {
  application: 'servicebus-event-delivery'
}

var token = toLower(uniqueString(subscription().id, resourceGroup().id, baseName))
var compactBase = toLower(replace(baseName, '-', ''))
var names = {
  storage: take('st${compactBase}${token}', 24)
  keyVault: 'kv-${take(compactBase, 10)}-${take(token, 9)}'
  workspace: 'log-${baseName}-${token}'
  appInsights: 'appi-${baseName}-${token}'
  plan: 'plan-${baseName}-${token}'
  functionApp: 'func-${baseName}-${token}'
  identity: 'id-${baseName}-${token}'
}
var deploymentContainerName = 'app-package'

// The app's queue and timer functions (shared/triggers.py) by the names the Functions host
// gives them (tests/test_infra.py compares them with the app): one dispatch function per
// system-events queue (shared/eventqueues.py names them), retries, replays, the purge.
var dispatchFunctions = [
  for i in range(0, systemEventQueueCount): (i == 0) ? 'dispatch_system_event' : 'dispatch_system_event_${i}'
]
var pausedTriggers = concat(dispatchFunctions, [
  'retry_delivery'
  'replay_records'
  'purge_old_messages'
])

// This cloud's host suffixes (public, US Gov, China, ...), for the endpoint rule; Azure names
// Service Bus after Storage: core.windows.net, servicebus.windows.net.
var storageSuffix = environment().suffixes.storage
var serviceBusSuffix = replace(storageSuffix, 'core.', 'servicebus.')

// Every setting the app reads, with the app's own default (tests/test_infra_settings.py
// compares them with the code): a deployment keeps them, and appSettings overrides any.
// MESSAGE_RETENTION_DAYS (messageRetentionDays), ENCRYPTION_KEYS (Key Vault) and the
// storage identity settings are set in functionapp.bicep.
var appSettingDefaults = {
  DELIVERY_RETRY_DELAYS: '30,120,600,3600,21600'
  DELIVERY_ATTEMPT_TIMEOUT_SECONDS: '30'
  DELIVERY_MAX_IN_FLIGHT_PER_CONNECTION: '64'
  DELIVERY_MAX_IN_FLIGHT_PER_ACCOUNT: '32'
  DELIVERY_BULKHEAD_WAIT_SECONDS: '0.3'
  DELIVERY_BULKHEAD_SLOW_SECONDS: '2'
  DELIVERY_BUSY_DEFER_SECONDS: '1'
  CIRCUIT_BREAKER_FAILURES: '5'
  CIRCUIT_BREAKER_COOL_DOWN_SECONDS: '30'
  CONNECTION_VERIFY_SECONDS: '10'
  HEALTH_FLUSH_SECONDS: '15'
  SUSPEND_AFTER_SECONDS: '259200'
  REPLAY_RECORDS_PER_SECOND: '50'
  REPLAY_DELIVERIES_PER_HOUR: '50000'
  EVENT_TIME_WINDOW_HOURS: '336'
  // Empty: no proxy in front of the app is trusted to name the client (docs/API.md, "Security").
  TRUSTED_PROXIES: ''
  LIMIT_BODY_BYTES: '65536'
  LIMIT_CONNECTIONS_PER_ACCOUNT: '100'
  LIMIT_REQUESTS_PER_SECOND: '20'
  LIMIT_REQUEST_BURST: '100'
  LIMIT_SENDS_PER_SECOND: '1'
  LIMIT_SEND_BURST: '10'
  LIMIT_FAILED_KEYS_PER_MINUTE: '10'
  LIMIT_FAILED_KEY_CLIENTS: '10000'
  LIMIT_EVENT_BYTES: '1048576'
  LIMIT_PUBLISH_BYTES: '4194304'
  LIMIT_VERIFICATIONS_PER_MINUTE: '10'
  CLOUDEVENTS_SOURCE: '/servicebus-event-delivery'
  SYSTEM_EVENT_QUEUE_COUNT: string(systemEventQueueCount)
  // The lifecycle rule (modules/storage.bicep) deletes bodies; the purge only counts overdue ones.
  PURGE_DELETES_BODIES: 'false'
  // Empty: https://<the app's host name> (WEBSITE_HOSTNAME).
  PORTAL_BASE_URL: ''
  // Empty: no connection may use Authentication EntraId (docs/API.md, "Entra ID instead of keys").
  ENTRA_APP_CLIENT_ID: ''
  // The app's own identity; unset, the app would ask for a system-assigned one it does not have.
  ENTRA_IDENTITY_CLIENT_ID: identity.outputs.clientId
  SERVICEBUS_SUFFIXES: serviceBusSuffix
  STORAGE_SUFFIXES: storageSuffix
}
var encryptionKeysSecretName = 'encryption-keys'

// Built-in role definition ids.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    location: location
    tags: tags
    retentionInDays: logRetentionDays
    dailyQuotaGb: logDailyCapGb
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSku
    messageRetentionDays: messageRetentionDays
    deploymentContainerName: deploymentContainerName
    systemEventQueueCount: systemEventQueueCount
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    secretName: encryptionKeysSecretName
    workspaceId: monitoring.outputs.workspaceId
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

// Written on every deployment; infra/deploy.sh passes the stored ring back unchanged.
module keyRing 'modules/key-ring.bicep' = {
  name: 'key-ring'
  params: {
    keyVaultName: keyVault.outputs.name
    secretName: encryptionKeysSecretName
    encryptionKeys: encryptionKeys
  }
}

// The app's identity: blob owner because the Functions host takes blob leases and
// reads its deployment package; queue and table data contributor for the app's
// queues and tables; read-only secrets; telemetry publishing.
module appAccess 'modules/role-assignments.bicep' = {
  name: 'app-access'
  params: {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    storageRoleIds: [
      roles.storageBlobDataOwner
      roles.storageQueueDataContributor
      roles.storageTableDataContributor
    ]
    keyVaultRoleIds: [
      roles.keyVaultSecretsUser
    ]
    appInsightsRoleIds: [
      roles.monitoringMetricsPublisher
    ]
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    planName: names.plan
    appName: names.functionApp
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    encryptionKeysSecretUri: keyVault.outputs.secretUri
    messageRetentionDays: messageRetentionDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    appSettings: union(appSettingDefaults, appSettings)
    disabledFunctions: pauseTriggers ? pausedTriggers : []
  }
  // The site starts (and its Key Vault reference resolves) only after the identity holds
  // its roles and the key ring exists.
  dependsOn: [
    appAccess
    keyRing
  ]
}

// The operator's shell: make API keys (tables), publish events (queues; an event over
// 48 KB goes to a blob first), read and rotate the key ring (secrets; infra/deploy.sh
// reads it back on later deployments). No role management.
module operatorAccess 'modules/role-assignments.bicep' = if (!empty(operatorPrincipalId)) {
  name: 'operator-access'
  params: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    storageRoleIds: [
      roles.storageBlobDataContributor
      roles.storageQueueDataContributor
      roles.storageTableDataContributor
    ]
    keyVaultRoleIds: [
      roles.keyVaultSecretsOfficer
    ]
  }
}

// The platform that raises events: it may send to the system-events queue(s), nothing else.
module publisherAccess 'modules/publisher-access.bicep' = if (!empty(publisherPrincipalId)) {
  name: 'publisher-access'
  params: {
    principalId: publisherPrincipalId
    principalType: publisherPrincipalType
    storageAccountName: storage.outputs.name
    queueNames: storage.outputs.systemEventQueues
    roleId: roles.storageQueueDataMessageSender
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: '${baseName}-${token}'
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    appUrl: functionApp.outputs.url
    alertEmail: alertEmail
    failedDeliveriesThreshold: failedDeliveriesThreshold
    healthCheckMinutes: healthCheckMinutes
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppUrl string = functionApp.outputs.url
output storageAccountName string = storage.outputs.name
output keyVaultName string = keyVault.outputs.name
output resourceGroupName string = resourceGroup().name
