"""The event delivery app's own package: contract models, storage, dispatch and API."""
