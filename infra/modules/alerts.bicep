// Alerts on the signals that need a person: messages moved to a poison queue, a rise in
// failed deliveries that are our fault (ErrorCategory other than Configuration), failed
// function executions, and /v1/health failing from outside. Log-search alerts query the
// Application Insights `traces` and `requests` tables; the delivery fields (ConnectionUid,
// EventId, ErrorCategory, ElapsedMilliseconds) are the app's structured log fields, in
// customDimensions (not `Category`: the host's logger category has that name).
//
// Why a log search for the poison queues: Azure Storage queue metrics count messages per
// account, not per queue, so no metric tells that `*-poison` holds something. Every move to
// a poison queue writes a log line instead: the app's own ("... moved to system-events-poison")
// for a malformed message, the Functions host's ("Moving message to queue '...-poison'")
// after maxDequeueCount failed tries.

param location string
param tags object

@description('Resource id of Application Insights, the scope of every alert.')
param appInsightsId string

@description('Location of Application Insights, where the availability test lives.')
param appInsightsLocation string = location

@description('Base URL of the app, https://<host>.')
param appUrl string

@description('Email address that receives the alerts; empty: no notification.')
param alertEmail string

@description('Failed deliveries (not Configuration) in 15 minutes that raise an alert.')
param failedDeliveriesThreshold int

@description('Minutes between two health checks from each location.')
param healthCheckMinutes int

param namePrefix string

var notify = !empty(alertEmail)
var window = 'PT15M'

// Each query returns one number in the column `Count`; sum(itemCount) undoes sampling.
var queries = {
  poison: 'traces | where message has "-poison" and (message has "moved to" or message has "Moving message to queue") | summarize Count = sum(itemCount)'
  failedDeliveries: 'traces | where isnotempty(tostring(customDimensions.ConnectionUid)) and severityLevel >= 2 | extend ErrorCategory = tostring(customDimensions.ErrorCategory) | where isnotempty(ErrorCategory) and ErrorCategory != "Configuration" | summarize Count = sum(itemCount)'
  functionFailures: 'requests | where success == false and not(resultCode startswith "4") | summarize Count = sum(itemCount)'
}

var logAlerts = [
  {
    key: 'poison'
    title: 'Messages moved to a poison queue'
    description: 'A message went to system-events-poison, delivery-retries-poison or replays-poison. Find the cause in the traces, then: python -m shared.cli poison replay (docs/DEPLOYMENT.md).'
    severity: 1
    threshold: 0
  }
  {
    key: 'failedDeliveries'
    title: 'Failed deliveries that are not the customer configuration'
    description: 'Deliveries failed with an ErrorCategory other than Configuration (our side or Service Bus), more than the threshold in 15 minutes.'
    severity: 2
    threshold: failedDeliveriesThreshold
  }
  {
    key: 'functionFailures'
    title: 'Function executions failed'
    description: 'A queue, timer or HTTP function failed (HTTP 4xx answers to bad input excluded).'
    severity: 2
    threshold: 0
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take(replace(namePrefix, '-', ''), 12)
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in logAlerts: {
    name: '${namePrefix}-${rule.key}'
    location: location
    tags: tags
    properties: {
      displayName: rule.title
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: window
      windowSize: window
      criteria: {
        allOf: [
          {
            query: queries[rule.key]
            timeAggregation: 'Total'
            metricMeasureColumn: 'Count'
            operator: 'GreaterThan'
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: notify ? [actionGroup.id] : []
      }
    }
  }
]

// A standard availability test: GET /v1/health from three regions. Every check is a
// request, so it wakes an instance: the interval trades detection time for cost.
resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: '${namePrefix}-health'
  location: appInsightsLocation
  tags: union(tags, {
    'hidden-link:${appInsightsId}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: '${namePrefix}-health'
    Name: '${namePrefix} /v1/health'
    Kind: 'standard'
    Enabled: true
    Frequency: healthCheckMinutes * 60
    Timeout: 30
    RetryEnabled: true
    Locations: [
      {
        Id: 'emea-nl-ams-azr'
      }
      {
        Id: 'us-va-ash-azr'
      }
      {
        Id: 'apac-sg-sin-azr'
      }
    ]
    Request: {
      RequestUrl: '${appUrl}/v1/health'
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource healthAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-health'
  location: 'global'
  tags: tags
  properties: {
    description: '/v1/health failed from at least 2 of 3 locations: the app is down or its storage does not answer.'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: appInsightsId
      failedLocationCount: 2
    }
    autoMitigate: true
    actions: notify ? [
      {
        actionGroupId: actionGroup.id
      }
    ] : []
  }
}
