// The platform that raises system events may put messages on the app's system-events
// queue(s), and do nothing else: one role, scoped to each queue, not to the account.
// shared/publisher.py is what it runs (docs/DEPLOYMENT.md, "How events get in").

param principalId string

@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string

param storageAccountName string

@description('The queues events are published to (storage.bicep, systemEventQueues).')
param queueNames array

@description('Role definition id (GUID) granted on each queue: Storage Queue Data Message Sender.')
param roleId string

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-06-01' existing = [
  for queueName in queueNames: {
    name: '${storageAccountName}/default/${queueName}'
  }
]

// Named from scope, principal and role: the same assignment on every deployment.
resource senders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (queueName, i) in queueNames: {
    name: guid(queues[i].id, principalId, roleId)
    scope: queues[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: principalType
    }
  }
]
