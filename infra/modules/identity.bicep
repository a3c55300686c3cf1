// The function app's user-assigned identity. It exists, and holds every role the app
// needs, before the site is created: the first start then reads storage, the key ring
// and Application Insights with roles already granted (a system-assigned identity only
// exists once the site does, so its roles would always come after the first start).

param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
