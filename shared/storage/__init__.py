"""Adapters to the app's own storage account: one small class per table, queue or container."""
