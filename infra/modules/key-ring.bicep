// Writes the secrets-encryption key ring into the Key Vault. main.bicep deploys this
// module only when a key ring is passed, so later deployments without one leave the
// secret (and every key that encrypted stored data) untouched.

param keyVaultName string
param secretName string

@description('Key ring "keyid:base64-32-byte-key[,keyid:key...]"; the first key encrypts.')
@secure()
param encryptionKeys string

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' existing = {
  name: keyVaultName
}

resource keyRing 'Microsoft.KeyVault/vaults/secrets@2025-05-01' = {
  parent: vault
  name: secretName
  properties: {
    // checkov:skip=CKV_AZURE_41: an expiry would stop the app from decrypting stored secrets on that date; the ring is rotated by hand (docs/DEPLOYMENT.md).
    value: encryptionKeys
    contentType: 'text/plain; format=keyid:base64key[,keyid:base64key...]'
    attributes: {
      enabled: true
    }
  }
}
