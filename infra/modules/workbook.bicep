// A shared Azure Monitor workbook over Application Insights: deliveries per hour, failures
// by category, delivery latency p50/p95. Its content is infra/workbook.json (edit it in
// the portal's Advanced editor and paste it back there).

param location string
param tags object

@description('Resource id of Application Insights, the workbook data source.')
param appInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; this one is stable, so a redeployment updates it.
  name: guid(resourceGroup().id, appInsightsId, 'deliveries-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Service Bus deliveries'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('../workbook.json')
  }
}

output id string = workbook.id
