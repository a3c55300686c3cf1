"""The product's operations, by room, knowing nothing of HTTP: each takes its dependencies
and raises the domain errors of shared/errors.py; the API, the portal and the CLI call them."""
